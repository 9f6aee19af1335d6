/* SPDX-License-Identifier: MIT */
/*
 * Forwarding (docs/multi-gateway.md): a request for a watch another live
 * gateway holds ("/api/v1/devices/{id}..." routes) is passed to that
 * gateway's REST API (its URL in the registry, cluster.h) with libevent's
 * HTTP client on the daemon's loop, while the client's connection is
 * suspended (HTTP_PENDING). Method, path, query, body, Content-Type and
 * Authorization go there; status, Content-Type, WWW-Authenticate and body
 * come back, with X-Smpgw-Served-By naming the holder.
 *
 * Never twice: the forwarded request carries X-Smpgw-Forwarded-By and a
 * gateway receiving it answers itself (a watch it no longer holds: 421).
 * A client that wants the 421 instead sends ?forward=0 or
 * X-Smpgw-Forward: 0. A holder without a URL, not seen within its lease
 * ttl, or over https (the client has no TLS) is not forwarded to: the
 * route answers as without forwarding (421, or the last view for the
 * device itself). A holder that cannot be reached or answers garbage:
 * 502 holder-unreachable; no answer within [gateway] forward_timeout: 504
 * holder-timeout; both with "held_by". forward_timeout bounds the whole
 * forward (one deadline from the start, not per read: a holder trickling
 * bytes cannot hold the client longer). The query goes as the client sent
 * it, every parameter (re-encoded), in order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "gateway/cluster.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

#define HOP_HEADER "X-Smpgw-Forwarded-By"
#define MAX_ANSWER (8u << 20)

/* The server's: connections of finished forwards, freed on the next turn
 * of the loop or with the server, whichever comes first. */
struct http_forwarder {
	struct event *reap;
	struct evhttp_connection **dead;
	size_t ndead;
};

struct fwd {
	struct http_req *req;
	struct http_forwarder *fw;
	struct event *deadline; /* [gateway] forward_timeout from the start */
	struct evhttp_connection *conn;
	char *holder;
	enum evhttp_request_error error;
	bool failed;
	bool *gone;     /* set when f is freed while http_forward() runs */
};

struct holder_url {
	char *url;
	bool alive;
};

static void got_gateway(const struct gw_cluster_gateway *g, void *user_data)
{
	struct holder_url *h = user_data;

	h->alive = g->alive;
	h->url = g->url ? xstrdup(g->url) : NULL;
}

static bool wants_no_forward(struct http_req *req)
{
	const char *q = http_req_query(req, "forward");
	const char *h = http_req_header(req, "X-Smpgw-Forward");

	return (q && (!strcmp(q, "0") || !strcasecmp(q, "false") || !strcasecmp(q, "no"))) ||
	       (h && (!strcmp(h, "0") || !strcasecmp(h, "false") || !strcasecmp(h, "no")));
}

/* The holder to forward to and its URL, or false (answer locally). */
static bool forward_target(struct http_req *req, char **holder, char **url)
{
	struct gw *gw = http_req_gw(req);
	struct gw_cluster *c = gw_cluster(gw);
	const struct route *r = http_req_route(req);
	const char *id = http_req_param(req, "id");
	struct holder_url h = { 0 };

	if (!c || !r || strncmp(r->path, "/api/v1/devices/{id}", 20) || !id ||
	    gw_device_find(gw, id) || http_req_header(req, HOP_HEADER) ||
	    wants_no_forward(req))
		return false;
	if (http_fleet_holder(req, id, holder) < 0)
		return false;
	if (!strcmp(*holder, gw_cluster_id(c)) ||
	    gw_cluster_gateways(c, *holder, got_gateway, &h) < 0 || !h.alive || !h.url) {
		log_debug("http: %s: held by %s, %s: not forwarded", http_req_path(req),
			  *holder, !h.url ? "no URL known" : "not alive");
		free(h.url);
		free(*holder);
		return false;
	}
	*url = h.url;
	return true;
}

/* path and query, each segment and value encoded again; every parameter */
static char *target_uri(struct http_req *req, const char *prefix)
{
	size_t n = http_req_query_all(req, NULL, NULL, 0);
	const char **keys = xnew_array(const char *, n + 1);
	const char **values = xnew_array(const char *, n + 1);
	struct evbuffer *b = evbuffer_new();
	const char *p = http_req_path(req);
	char sep = '?', *out;
	size_t len;

	evbuffer_add_printf(b, "%s", prefix);
	while (*p == '/') {
		size_t seg = strcspn(p + 1, "/");
		char *e = evhttp_uriencode(p + 1, (ev_ssize_t)seg, 0);

		evbuffer_add_printf(b, "/%s", e ? e : "");
		free(e);
		p += seg + 1;
	}
	http_req_query_all(req, keys, values, n);
	for (size_t i = 0; i < n; i++) {
		char *k, *v;

		if (!strcmp(keys[i], "forward"))
			continue;
		k = evhttp_uriencode(keys[i], -1, 0);
		v = values[i] ? evhttp_uriencode(values[i], -1, 0) : NULL;
		evbuffer_add_printf(b, "%c%s%s%s", sep, k ? k : "", v ? "=" : "", v ? v : "");
		free(k);
		free(v);
		sep = '&';
	}
	len = evbuffer_get_length(b);
	out = xmalloc(len + 1);
	evbuffer_remove(b, out, len);
	out[len] = '\0';
	evbuffer_free(b);
	free(keys);
	free(values);
	return out;
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_forwarder *fw = arg;

	for (size_t i = 0; i < fw->ndead; i++)
		evhttp_connection_free(fw->dead[i]);
	fw->ndead = 0;
}

struct http_forwarder *http_forwarder_free(struct http_forwarder *fw)
{
	if (!fw)
		return NULL;
	reap_cb(-1, 0, fw);
	event_free(fw->reap);
	free(fw->dead);
	free(fw);
	return NULL;
}

static struct http_forwarder *forwarder(struct http_req *req)
{
	struct http_forwarder **fw = http_server_forwarder(http_req_server(req));

	if (!*fw) {
		*fw = xnew(struct http_forwarder);
		(*fw)->reap = event_new(gw_base(http_req_gw(req)), -1, 0, reap_cb, *fw);
	}
	return *fw;
}

static void fwd_free(struct fwd *f, bool conn_now)
{
	struct http_forwarder *fw = f->fw;

	if (f->deadline)
		event_free(f->deadline);
	/* Inside the client's callback the connection is still in use: it
	 * goes on the next turn of the loop (or with the server). */
	if (f->conn && conn_now) {
		evhttp_connection_free(f->conn);
	} else if (f->conn) {
		fw->dead = xrealloc(fw->dead, (fw->ndead + 1) * sizeof(*fw->dead));
		fw->dead[fw->ndead++] = f->conn;
		event_active(fw->reap, EV_TIMEOUT, 0);
	}
	if (f->gone)
		*f->gone = true;
	free(f->holder);
	free(f);
}

static void fwd_abort(struct http_req *req, void *data)
{
	fwd_free(data, true); /* the request inside goes with it, no callback */
}

static const char *error_str(enum evhttp_request_error e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "no answer within [gateway] forward_timeout";
	case EVREQ_HTTP_EOF:
		return "connection refused or closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "malformed answer";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "read error";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "answer too large";
	default:
		return "request canceled";
	}
}

static void on_error(enum evhttp_request_error e, void *arg)
{
	struct fwd *f = arg;

	f->error = e;
	f->failed = true;
}

static void reply_failed(struct fwd *f, const char *why)
{
	int err = f->error == EVREQ_HTTP_TIMEOUT ? -ETIME : -EHOSTUNREACH;
	char *detail = xasprintf("the watch is held by gateway '%s'; forwarding the request "
				 "to it failed: %s", f->holder, why);

	http_reply_problem_ext(f->req, err, json_pack("{s:s}", "held_by", f->holder),
			       detail);
	free(detail);
}

/* The whole forward took forward_timeout: 504, the connection (and the
 * request inside, no callback) freed now, outside libevent's callbacks. */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fwd *f = arg;

	f->error = EVREQ_HTTP_TIMEOUT;
	reply_failed(f, error_str(f->error));
	fwd_free(f, true);
}

static void on_answer(struct evhttp_request *er, void *arg)
{
	struct fwd *f = arg;
	int code = er ? evhttp_request_get_response_code(er) : 0;
	struct evbuffer *in = er ? evhttp_request_get_input_buffer(er) : NULL;
	const char *ctype, *auth;
	size_t len;
	char *body;

	if (!er || f->failed || code < 100 || code > 599) {
		/* No status at all: the connection was refused or closed
		 * before an answer (libevent gives no error callback then). */
		if (!f->failed && er)
			f->error = code ? EVREQ_HTTP_INVALID_HEADER : EVREQ_HTTP_EOF;
		reply_failed(f, er && !f->failed && code ? "malformed answer" :
			     error_str(f->error));
		fwd_free(f, false);
		return;
	}
	ctype = evhttp_find_header(evhttp_request_get_input_headers(er), "Content-Type");
	/* a 401 without its challenge would break the client's auth */
	auth = evhttp_find_header(evhttp_request_get_input_headers(er), "WWW-Authenticate");
	len = evbuffer_get_length(in);
	body = xmalloc(len + 1);
	evbuffer_remove(in, body, len);
	http_reply_forwarded(f->req, (unsigned)code, ctype, body, len, f->holder, auth);
	fwd_free(f, false);
}

static void add_header(struct evkeyvalq *h, struct http_req *req, const char *name)
{
	const char *v = http_req_header(req, name);

	if (v)
		evhttp_add_header(h, name, v);
}

static const enum evhttp_cmd_type cmd[] = {
	[HTTP_GET] = EVHTTP_REQ_GET, [HTTP_POST] = EVHTTP_REQ_POST,
	[HTTP_PUT] = EVHTTP_REQ_PUT, [HTTP_DELETE] = EVHTTP_REQ_DELETE,
};

static bool is_numeric(const char *host)
{
	unsigned char a[16];

	return evutil_inet_pton(AF_INET, host, a) == 1 || evutil_inet_pton(AF_INET6, host, a) == 1;
}

static struct timeval forward_timeout(struct http_req *req)
{
	const struct gw_config *cfg = gw_config(http_req_gw(req));
	uint32_t ms = cfg->gateway.forward_timeout_ms ? cfg->gateway.forward_timeout_ms : 30000;

	return (struct timeval){ ms / 1000, (ms % 1000) * 1000 };
}

/* Sends the request; false when it could not even start. */
static bool fwd_start(struct fwd *f, struct evhttp_uri *u, const char *holder_url)
{
	struct http_req *req = f->req;
	struct timeval tv = forward_timeout(req);
	const char *host = evhttp_uri_get_host(u), *path = evhttp_uri_get_path(u);
	int port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
	char *prefix = xstrdup(path ? path : ""), *uri, *hostport, *addr;
	struct evhttp_request *er;
	struct evdns_base *dns;
	struct evkeyvalq *h;
	const char *body;
	size_t len;
	int r;

	while (*prefix && prefix[strlen(prefix) - 1] == '/')
		prefix[strlen(prefix) - 1] = '\0';
	/* libevent keeps an IPv6 literal's brackets: not for connecting. */
	addr = host[0] == '[' ? xstrndup(host + 1, strcspn(host + 1, "]")) : xstrdup(host);
	/* With a resolver a host name is looked up on the loop; without one
	 * libevent would block the whole daemon in getaddrinfo(). */
	dns = http_server_dns(http_req_server(req));
	f->conn = dns || is_numeric(addr) ?
		  evhttp_connection_base_new(gw_base(http_req_gw(req)), dns, addr,
					     (uint16_t)port) : NULL;
	free(addr);
	if (!f->conn) {
		free(prefix);
		return false;
	}
	evhttp_connection_set_timeout_tv(f->conn, &tv);
	evhttp_connection_set_max_body_size(f->conn, MAX_ANSWER);
	evhttp_connection_set_max_headers_size(f->conn, 64 * 1024);
	er = evhttp_request_new(on_answer, f);
	if (!er) {
		free(prefix);
		return false;
	}
	evhttp_request_set_error_cb(er, on_error);
	h = evhttp_request_get_output_headers(er);
	hostport = xasprintf("%s:%d", host, port);
	evhttp_add_header(h, "Host", hostport);
	free(hostport);
	evhttp_add_header(h, HOP_HEADER, gw_cluster_id(gw_cluster(http_req_gw(req))));
	add_header(h, req, "Content-Type");
	add_header(h, req, "Authorization");
	add_header(h, req, "Accept");
	body = http_req_body(req, &len);
	if (body && len)
		evbuffer_add(evhttp_request_get_output_buffer(er), body, len);
	uri = target_uri(req, prefix);
	free(prefix);
	log_info("http: %s %s: forwarded to %s (%s)", http_method_str(http_req_method(req)),
		 http_req_path(req), f->holder, holder_url);
	/* libevent 2.1 (http.h: "On failure, the request object is no longer
	 * valid as it has been freed"): its -1 paths are a failed strdup of
	 * the URI (the request freed there) and a failed bind of a local
	 * address, which this connection never has (evhttp_connection_connect_
	 * returns 0 for a refused connection and fails the request later
	 * through on_answer). Nothing to free here either way; the connection
	 * goes in fwd_free. */
	r = evhttp_make_request(f->conn, er, cmd[http_req_method(req)], uri);
	free(uri);
	return r == 0;
}

int http_forward(struct http_req *req)
{
	char *holder = NULL, *url = NULL;
	struct evhttp_uri *u;
	struct fwd *f;
	bool started, gone = false;

	if (!forward_target(req, &holder, &url))
		return 0;
	u = evhttp_uri_parse(url);
	if (!u || !evhttp_uri_get_host(u) || !evhttp_uri_get_scheme(u) ||
	    strcasecmp(evhttp_uri_get_scheme(u), "http")) {
		log_warn("http: gateway %s's URL %s is not http://host[:port][/path]: "
			 "requests for its watches are answered here", holder, url);
		if (u)
			evhttp_uri_free(u);
		free(holder);
		free(url);
		return 0;
	}
	f = xnew(struct fwd);
	f->req = req;
	f->fw = forwarder(req);
	f->holder = holder;
	/* libevent may answer inside evhttp_make_request() (a connection
	 * refused at once): then f is gone and the request answered. */
	f->gone = &gone;
	started = fwd_start(f, u, url);
	if (gone) {
		started = false;
	} else if (!started) {
		f->error = EVREQ_HTTP_EOF;
		reply_failed(f, "cannot send the request");
		fwd_free(f, true);
	} else {
		struct timeval tv = forward_timeout(req);

		f->gone = NULL;
		f->deadline = evtimer_new(gw_base(http_req_gw(req)), deadline_cb, f);
		evtimer_add(f->deadline, &tv);
		http_req_on_abort(req, fwd_abort, f);
	}
	evhttp_uri_free(u);
	free(url);
	return started ? HTTP_PENDING : 0;
}
