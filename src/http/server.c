/* SPDX-License-Identifier: MIT */
/*
 * The HTTP server: libmicrohttpd in "external select" mode on its epoll fd,
 * which is one libevent read event in the daemon's loop; MHD_get_timeout()
 * arms one libevent timer. No thread, no second loop.
 *
 * Owns: listening (plain or TLS), the bearer token check, request bodies
 * (JSON buffered up to HTTP_MAX_JSON; uploads streamed to a temp file in
 * state_dir/tmp and hashed as they arrive, raw or multipart/form-data),
 * dispatch through the route table, asynchronous replies (a connection is
 * suspended while its device request runs), and request metrics.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store.h"
#include "http/errors.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

struct http_server {
	struct gw *gw;
	struct event_base *base;
	struct MHD_Daemon *mhd;
	struct event *ev_io, *ev_timer;
	char *token;            /* NULL: none configured */
	bool loopback;
	size_t max_body;
	char *tmp_dir;
	uint16_t port;
	bool stopping;
	bool resumed;           /* a connection was resumed since the last run */
	struct gw_metrics *own_metrics; /* created here when gw had none */
	struct gw_images *images;
	void *sse;
	void (*sse_stop)(void *);
	void (*sse_free)(void *);
	struct http_req *pending; /* suspended requests waiting for a reply */
	char *tls_key, *tls_cert;
	char *url;              /* NULL: bound to a wildcard address */
	struct evdns_base *dns; /* forwarding's resolver, made when first needed */
	struct http_forwarder *fwd; /* forward.c's state, made when first needed */
};

enum req_stage {
	REQ_BODY = 0,   /* receiving the body */
	REQ_HANDLED,    /* handler ran, reply queued or pending */
	REQ_PENDING,    /* suspended, waiting for the async reply */
};

struct http_req {
	struct http_server *srv;
	struct MHD_Connection *conn;
	char *path;
	unsigned method;
	struct http_match match;
	enum req_stage stage;
	int body_err;           /* first error while receiving the body */
	char *body_err_detail;
	/* JSON body */
	char *buf;
	size_t len, cap;
	json_t *json;
	/* file body */
	int fd;
	char *file_path;
	char *filename;
	size_t file_size;
	EVP_MD_CTX *sha;
	uint8_t sha256[32];
	struct MHD_PostProcessor *pp;
	bool multipart_file_seen;
	/* reply */
	bool in_handler, replied;
	uint64_t store_failures; /* the store's failure count at dispatch */
	struct MHD_Response *rsp; /* waiting to be queued after resume */
	unsigned status;
	http_abort_cb abort_cb;
	void *abort_data;
	uint64_t start_us;
	struct http_req *next_pending, **prev_pending;
};

/* ---- libevent glue ---- */

/*
 * libmicrohttpd (0.9.7x, epoll, external loop) moves a resumed connection
 * to its ready list at the end of a run without signalling anything, so a
 * run that starts with a resume pending is followed by a second one, which
 * processes it. Bounded: at most 4 passes per wakeup.
 */
static void run_mhd(struct http_server *srv)
{
	MHD_UNSIGNED_LONG_LONG to = 0;
	struct timeval tv;

	for (int pass = 0; pass < 4; pass++) {
		bool resumed = srv->resumed;

		srv->resumed = false;
		MHD_run(srv->mhd);
		if (!resumed && !srv->resumed)
			break;
	}
	if (MHD_get_timeout(srv->mhd, &to) == MHD_YES) {
		tv.tv_sec = (time_t)(to / 1000);
		tv.tv_usec = (suseconds_t)(to % 1000) * 1000;
		event_add(srv->ev_timer, &tv);
	} else {
		event_del(srv->ev_timer);
	}
}

static void on_mhd_event(evutil_socket_t fd, short what, void *arg)
{
	run_mhd(arg);
}

void http_server_kick(struct http_server *srv)
{
	srv->resumed = true;
	event_active(srv->ev_timer, EV_TIMEOUT, 0);
}

/* ---- request accessors ---- */

struct gw *http_req_gw(struct http_req *req) { return req->srv->gw; }
struct http_server *http_req_server(struct http_req *req) { return req->srv; }
const char *http_req_path(struct http_req *req) { return req->path; }
unsigned http_req_method(struct http_req *req) { return req->method; }
json_t *http_req_json(struct http_req *req) { return req->json; }
const struct route *http_req_route(struct http_req *req) { return req->match.route; }

const char *http_req_body(struct http_req *req, size_t *len)
{
	*len = req->json ? req->len : 0;
	return req->json ? req->buf : NULL;
}
const char *http_req_filename(struct http_req *req) { return req->filename; }
struct MHD_Connection *http_req_connection(struct http_req *req) { return req->conn; }
void *http_server_sse(struct http_server *srv) { return srv->sse; }
struct gw_images *http_server_images(struct http_server *srv) { return srv->images; }
bool http_server_stopping(struct http_server *srv) { return srv->stopping; }

void http_server_set_sse(struct http_server *srv, void *sse,
			 void (*stop_fn)(void *), void (*free_fn)(void *))
{
	srv->sse = sse;
	srv->sse_stop = stop_fn;
	srv->sse_free = free_fn;
}

static void pending_add(struct http_req *req)
{
	struct http_server *srv = req->srv;

	req->next_pending = srv->pending;
	if (srv->pending)
		srv->pending->prev_pending = &req->next_pending;
	req->prev_pending = &srv->pending;
	srv->pending = req;
}

static void pending_del(struct http_req *req)
{
	if (!req->prev_pending)
		return;
	*req->prev_pending = req->next_pending;
	if (req->next_pending)
		req->next_pending->prev_pending = req->prev_pending;
	req->prev_pending = NULL;
	req->next_pending = NULL;
}

const char *http_req_param(struct http_req *req, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < req->match.nparams; i++)
		if (!strncmp(req->match.names[i], name, n) &&
		    req->match.names[i][n] == '}')
			return req->match.values[i];
	return NULL;
}

const char *http_req_query(struct http_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct query_all {
	const char **keys, **values;
	size_t max, n;
};

static enum MHD_Result query_one(void *cls, enum MHD_ValueKind kind,
				 const char *key, const char *value)
{
	struct query_all *q = cls;

	if (q->n < q->max) {
		q->keys[q->n] = key;
		q->values[q->n] = value;
	}
	q->n++;
	return MHD_YES;
}

size_t http_req_query_all(struct http_req *req, const char **keys,
			  const char **values, size_t max)
{
	struct query_all q = { keys, values, max, 0 };

	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_one, &q);
	return q.n;
}

const char *http_req_header(struct http_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_req_file(struct http_req *req, size_t *size,
			  const uint8_t **sha256)
{
	if (size)
		*size = req->file_size;
	if (sha256)
		*sha256 = req->sha256;
	return req->file_path;
}

void http_req_take_file(struct http_req *req)
{
	free(req->file_path);
	req->file_path = NULL;
}

void http_req_on_abort(struct http_req *req, http_abort_cb cb, void *data)
{
	req->abort_cb = cb;
	req->abort_data = data;
}

/* ---- replies ---- */

static void deliver(struct http_req *req, struct MHD_Response *rsp,
		    unsigned status)
{
	if (req->replied) {
		/* A second reply is a bug in a handler; never crash for it. */
		log_err("http: %s %s replied twice", http_method_str(req->method),
			req->path);
		MHD_destroy_response(rsp);
		return;
	}
	req->replied = true;
	req->status = status;
	req->abort_cb = NULL;
	if (req->in_handler || req->stage == REQ_BODY) {
		MHD_queue_response(req->conn, status, rsp);
		MHD_destroy_response(rsp);
		return;
	}
	/* Asynchronous: queued when MHD calls us again after the resume. */
	req->rsp = rsp;
	req->status = status;
	if (req->stage == REQ_PENDING) {
		pending_del(req);
		MHD_resume_connection(req->conn);
		http_server_kick(req->srv);
	}
}

static void add_common_headers(struct MHD_Response *rsp, const char *ctype,
			       const char *cache)
{
	if (ctype)
		MHD_add_response_header(rsp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(rsp, MHD_HTTP_HEADER_CACHE_CONTROL,
				cache ? cache : "no-store");
	MHD_add_response_header(rsp, "X-Content-Type-Options", "nosniff");
	/* The dashboard loads nothing from elsewhere; say so to the browser. */
	if (ctype && !strncmp(ctype, "text/html", 9))
		MHD_add_response_header(rsp, "Content-Security-Policy",
					"default-src 'self'; frame-ancestors 'none'");
}

void http_reply_buf(struct http_req *req, unsigned status, const char *ctype,
		    char *body, size_t len)
{
	struct MHD_Response *rsp = MHD_create_response_from_buffer_with_free_callback(
		len, body, free);

	add_common_headers(rsp, ctype, NULL);
	deliver(req, rsp, status);
}

void http_reply_forwarded(struct http_req *req, unsigned status, const char *ctype,
			  char *body, size_t len, const char *served_by,
			  const char *www_auth)
{
	struct MHD_Response *rsp = MHD_create_response_from_buffer_with_free_callback(
		len, body, free);

	add_common_headers(rsp, ctype, NULL);
	if (served_by)
		MHD_add_response_header(rsp, "X-Smpgw-Served-By", served_by);
	if (www_auth)
		MHD_add_response_header(rsp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, www_auth);
	deliver(req, rsp, status);
}

void http_reply_static(struct http_req *req, unsigned status, const char *ctype,
		       const void *body, size_t len, const char *cache_control)
{
	struct MHD_Response *rsp = MHD_create_response_from_buffer(
		len, (void *)body, MHD_RESPMEM_PERSISTENT);

	add_common_headers(rsp, ctype, cache_control);
	deliver(req, rsp, status);
}

static void reply_json_ctype(struct http_req *req, unsigned status,
			     json_t *json, const char *ctype)
{
	char *text = json_dumps(json, JSON_COMPACT | JSON_ENSURE_ASCII);
	size_t len;

	json_decref(json);
	if (!text)
		text = xstrdup("{}");
	len = strlen(text);
	text = xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	http_reply_buf(req, status, ctype, text, len);
}

void http_reply_json(struct http_req *req, unsigned status, json_t *json)
{
	reply_json_ctype(req, status, json, "application/json");
}

/*
 * The one place where a store failure becomes its problem: when a call on
 * the store failed while the handler ran (synchronously) and the handler
 * answers with an error, that error is the store's, whatever errno it
 * passed on: the store's -ENOTCONN or -ETIMEDOUT must not read as
 * "device-unreachable" or "device-timeout", nor a failed read as a 404.
 * A full store stays 507 no-space; anything else is 503 store-unavailable.
 */
static int store_problem(struct http_req *req, int err, char **detail)
{
	struct gw_store *store = req->srv->gw ? gw_store(req->srv->gw) : NULL;
	int last;
	char *d;

	if (!req->in_handler || !store ||
	    gw_store_failures(store, &last) == req->store_failures)
		return err;
	d = xasprintf("%s%sstore: %s", *detail ? *detail : "", *detail ? "; " : "",
		      gw_store_errmsg(store));
	free(*detail);
	*detail = d;
	return last == -ENOSPC ? -ENOSPC : -EHOSTDOWN;
}

void http_reply_problem_ext(struct http_req *req, int err, json_t *extra,
			    const char *detail_in)
{
	char *detail = detail_in ? xstrdup(detail_in) : NULL;
	json_t *p;
	unsigned status;

	err = store_problem(req, err, &detail);
	p = http_problem_new(err, req->path, detail);
	status = http_error_lookup(err)->status;

	if (extra)
		json_object_update_missing(p, extra);
	json_decref(extra);
	if (status >= 500)
		log_warn("http: %s %s: %d %s", http_method_str(req->method),
			 req->path, status, detail ? detail : "");
	reply_json_ctype(req, status, p, HTTP_PROBLEM_CTYPE);
	free(detail);
}

void http_reply_problem(struct http_req *req, int err, const char *fmt, ...)
{
	char *detail = NULL;
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		if (vasprintf(&detail, fmt, ap) < 0)
			detail = NULL;
		va_end(ap);
	}
	http_reply_problem_ext(req, err, NULL, detail);
	free(detail);
}

struct stream_ctx {
	http_stream_read read;
	void *data;
	void (*free_data)(void *);
};

static ssize_t stream_ctx_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream_ctx *s = cls;

	return s->read(s->data, pos, buf, max);
}

static void stream_ctx_free(void *cls)
{
	struct stream_ctx *s = cls;

	if (s->free_data)
		s->free_data(s->data);
	free(s);
}

void http_reply_stream(struct http_req *req, unsigned status, const char *ctype,
		       http_stream_read read, void *data, void (*free_data)(void *))
{
	struct stream_ctx *s = xnew(struct stream_ctx);
	struct MHD_Response *rsp;

	s->read = read;
	s->data = data;
	s->free_data = free_data;
	rsp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
						stream_ctx_read, s, stream_ctx_free);
	add_common_headers(rsp, ctype, NULL);
	deliver(req, rsp, status);
}

/* ---- auth ---- */

/* Constant time in the token's length: no early exit on the first
 * differing byte, so the comparison leaks nothing but the length. */
static bool token_equal(const char *want, const char *got, size_t got_len)
{
	size_t n = strlen(want);
	unsigned char diff = (unsigned char)(n != got_len);

	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(want[i] ^ (i < got_len ? got[i] : 0));
	return diff == 0;
}

/* 0, or -EACCES with *detail saying what to do. */
static int check_auth(struct http_req *req, const char **detail)
{
	struct http_server *srv = req->srv;
	const struct route *r = req->match.route;
	const char *h, *tok = NULL;
	bool needs;

	if (r->flags & HTTP_ROUTE_PUBLIC)
		return 0;
	needs = req->method != HTTP_GET || (r->flags & HTTP_ROUTE_WRITE) ||
		!srv->loopback;
	if (!needs || !srv->token)
		return 0; /* no token configured: only possible on loopback */
	h = http_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
	if (h && !strncasecmp(h, "Bearer ", 7))
		tok = h + 7;
	else if (!h)
		tok = http_req_query(req, "access_token"); /* EventSource */
	if (!tok) {
		*detail = h ? "the Authorization header must be 'Bearer <token>'" :
			      "this call needs 'Authorization: Bearer <token>' "
			      "(the token is in the file named by [http] token_file)";
		return -EACCES;
	}
	while (*tok == ' ')
		tok++;
	if (!token_equal(srv->token, tok, strlen(tok))) {
		*detail = "the bearer token does not match the configured token";
		return -EACCES;
	}
	return 0;
}

/* ---- bodies ---- */

static void body_fail(struct http_req *req, int err, const char *detail)
{
	if (req->body_err)
		return;
	req->body_err = err;
	req->body_err_detail = xstrdup(detail);
}

static int file_open(struct http_req *req)
{
	char *tmpl = xasprintf("%s/upload-XXXXXX", req->srv->tmp_dir);

	req->fd = mkstemp(tmpl);
	if (req->fd < 0) {
		int err = -errno;

		log_err("http: cannot create %s: %s", tmpl, strerror(errno));
		free(tmpl);
		return err;
	}
	req->file_path = tmpl;
	req->sha = EVP_MD_CTX_new();
	if (!req->sha || !EVP_DigestInit_ex(req->sha, EVP_sha256(), NULL))
		abort();
	return 0;
}

static void file_write(struct http_req *req, const char *data, size_t len)
{
	if (req->body_err)
		return;
	if (req->file_size + len > req->srv->max_body) {
		char d[128];

		snprintf(d, sizeof(d), "the image is larger than %zu bytes "
			 "([http] max_body)", req->srv->max_body);
		body_fail(req, -EFBIG, d);
		return;
	}
	EVP_DigestUpdate(req->sha, data, len);
	req->file_size += len;
	while (len) {
		ssize_t n = write(req->fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			body_fail(req, errno == ENOSPC ? -ENOSPC : -EIO,
				  "cannot store the upload in the state directory");
			return;
		}
		data += n;
		len -= (size_t)n;
	}
}

static enum MHD_Result on_post_part(void *cls, enum MHD_ValueKind kind,
				    const char *key, const char *filename,
				    const char *ctype, const char *enc,
				    const char *data, uint64_t off, size_t size)
{
	struct http_req *req = cls;

	/* The first part with a file name is the image; other fields ignored. */
	if (!filename)
		return MHD_YES;
	if (!req->filename) {
		req->filename = xstrdup(filename);
		req->multipart_file_seen = true;
	} else if (strcmp(req->filename, filename)) {
		return MHD_YES;
	}
	if (size)
		file_write(req, data, size);
	return MHD_YES;
}

static void body_feed(struct http_req *req, const char *data, size_t len)
{
	switch (req->match.route->body) {
	case HTTP_BODY_NONE:
		body_fail(req, -EFBIG, "this call takes no request body");
		break;
	case HTTP_BODY_JSON:
		if (req->len + len > HTTP_MAX_JSON) {
			body_fail(req, -EFBIG, "JSON bodies are limited to 64 KiB");
			break;
		}
		if (req->len + len + 1 > req->cap) {
			req->cap = MAX(req->cap * 2, req->len + len + 1);
			req->buf = xrealloc(req->buf, req->cap);
		}
		memcpy(req->buf + req->len, data, len);
		req->len += len;
		break;
	case HTTP_BODY_FILE:
		if (req->pp) {
			if (!req->body_err &&
			    MHD_post_process(req->pp, data, len) != MHD_YES)
				body_fail(req, -EBADMSG, "malformed multipart/form-data body");
		} else {
			file_write(req, data, len);
		}
		break;
	}
}

static int body_finish(struct http_req *req)
{
	json_error_t jerr;

	if (req->body_err)
		return req->body_err;
	if (req->match.route->body == HTTP_BODY_JSON && req->len) {
		req->json = json_loadb(req->buf, req->len, JSON_REJECT_DUPLICATES, &jerr);
		if (!req->json) {
			char *d = xasprintf("the body is not valid JSON: %s (line %d, "
					    "column %d)", jerr.text, jerr.line,
					    jerr.column);
			body_fail(req, -EBADMSG, d);
			free(d);
			return req->body_err;
		}
		if (!json_is_object(req->json)) {
			body_fail(req, -EINVAL, "the body must be a JSON object");
			return req->body_err;
		}
	}
	if (req->match.route->body == HTTP_BODY_FILE) {
		unsigned int n = 0;

		if (req->pp && !req->multipart_file_seen) {
			body_fail(req, -EINVAL, "the multipart body has no file part "
				  "(use curl -F image=@app.signed.bin)");
			return req->body_err;
		}
		EVP_DigestFinal_ex(req->sha, req->sha256, &n);
		if (fsync(req->fd) < 0 || close(req->fd) < 0) {
			req->fd = -1;
			body_fail(req, -EIO, "cannot store the upload");
			return req->body_err;
		}
		req->fd = -1;
	}
	return 0;
}

/* ---- request lifecycle ---- */

static unsigned method_parse(const char *m)
{
	if (!strcmp(m, "GET") || !strcmp(m, "HEAD"))
		return HTTP_GET;
	if (!strcmp(m, "POST"))
		return HTTP_POST;
	if (!strcmp(m, "PUT"))
		return HTTP_PUT;
	if (!strcmp(m, "DELETE"))
		return HTTP_DELETE;
	return 0;
}

static void req_free(struct http_req *req)
{
	pending_del(req);
	if (req->abort_cb)
		req->abort_cb(req, req->abort_data);
	if (req->rsp)
		MHD_destroy_response(req->rsp);
	if (req->pp)
		MHD_destroy_post_processor(req->pp);
	if (req->fd >= 0)
		close(req->fd);
	if (req->file_path)
		unlink(req->file_path);
	EVP_MD_CTX_free(req->sha);
	json_decref(req->json);
	http_match_clear(&req->match);
	free(req->file_path);
	free(req->filename);
	free(req->buf);
	free(req->body_err_detail);
	free(req->path);
	free(req);
}

static void reply_allow(struct http_req *req, unsigned allow)
{
	char hdr[64] = "";
	static const unsigned all[] = { HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_DELETE };

	for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
		if (!(allow & all[i]))
			continue;
		if (hdr[0])
			strcat(hdr, ", ");
		strcat(hdr, http_method_str(all[i]));
	}
	json_t *p = http_problem_new(-EOPNOTSUPP, req->path, NULL);
	char *d = xasprintf("%s is not allowed here; allowed: %s",
			    req->method ? http_method_str(req->method) : "this method",
			    hdr);
	json_object_set_new(p, "detail", json_string(d));
	free(d);
	char *text = json_dumps(p, JSON_COMPACT);
	json_decref(p);
	struct MHD_Response *rsp = MHD_create_response_from_buffer_with_free_callback(
		strlen(text), text, free);
	add_common_headers(rsp, HTTP_PROBLEM_CTYPE, NULL);
	MHD_add_response_header(rsp, MHD_HTTP_HEADER_ALLOW, hdr);
	deliver(req, rsp, 405);
}

static void reply_unauthorized(struct http_req *req, const char *detail)
{
	json_t *p = http_problem_new(-EACCES, req->path, detail);
	char *text = json_dumps(p, JSON_COMPACT);
	struct MHD_Response *rsp;

	json_decref(p);
	rsp = MHD_create_response_from_buffer_with_free_callback(strlen(text),
								 text, free);
	add_common_headers(rsp, HTTP_PROBLEM_CTYPE, NULL);
	MHD_add_response_header(rsp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
				"Bearer realm=\"smpgw\"");
	deliver(req, rsp, 401);
}

static bool is_multipart(const char *ctype)
{
	return ctype && !strncasecmp(ctype, "multipart/form-data", 19);
}

/* First call for a request: route, auth, declared size. Returns false when
 * a reply was already queued. */
static bool req_begin(struct http_req *req)
{
	const char *detail = NULL, *cl, *ctype;
	unsigned allow = 0;
	int r;

	r = http_route_match(req->path, req->method, &req->match, &allow);
	if (r == -EOPNOTSUPP || (r == -ENOENT && !req->method && allow)) {
		reply_allow(req, allow);
		return false;
	}
	if (r < 0) {
		http_reply_problem(req, -ENOENT, "no resource at %s (the API lives "
				   "under /api/v1, see /api/v1/openapi.json)", req->path);
		return false;
	}
	r = check_auth(req, &detail);
	if (r < 0) {
		reply_unauthorized(req, detail);
		return false;
	}
	cl = http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		unsigned long long n = strtoull(cl, NULL, 10);
		size_t lim = req->match.route->body == HTTP_BODY_FILE ? req->srv->max_body :
			     req->match.route->body == HTTP_BODY_JSON ? HTTP_MAX_JSON : 0;

		if (n > lim) {
			if (!lim)
				http_reply_problem(req, -EFBIG, "this call takes no request body");
			else
				http_reply_problem(req, -EFBIG, "the body has %llu bytes; "
						   "this call accepts at most %zu", n, lim);
			return false;
		}
	}
	if (req->match.route->body == HTTP_BODY_FILE) {
		r = file_open(req);
		if (r < 0) {
			http_reply_problem(req, r, "cannot store the upload");
			return false;
		}
		ctype = http_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
		if (is_multipart(ctype)) {
			req->pp = MHD_create_post_processor(req->conn, 64 * 1024,
							    on_post_part, req);
			if (!req->pp) {
				http_reply_problem(req, -EBADMSG, "multipart body without "
						   "a valid boundary");
				return false;
			}
		}
	}
	return true;
}

static void req_dispatch(struct http_req *req)
{
	int r = body_finish(req);

	if (r < 0) {
		http_reply_problem_ext(req, r, NULL, req->body_err_detail);
		return;
	}
	req->in_handler = true;
	if (req->srv->gw)
		req->store_failures = gw_store_failures(gw_store(req->srv->gw), NULL);
	/* A watch another gateway holds: its holder answers (forward.c). */
	r = http_forward(req);
	if (r != HTTP_PENDING && !req->replied)
		r = req->match.route->handler(req);
	req->in_handler = false;
	if (req->replied)
		return;
	if (r == HTTP_PENDING) {
		req->stage = REQ_PENDING;
		pending_add(req);
		MHD_suspend_connection(req->conn);
		return;
	}
	req->in_handler = true;
	if (r < 0)
		http_reply_problem(req, r, NULL);
	else
		http_reply_problem(req, -EIO, "the handler gave no answer");
	req->in_handler = false;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn,
				 const char *url, const char *method,
				 const char *version, const char *upload_data,
				 size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct http_req *req = *con_cls;

	if (!req) {
		req = xnew(struct http_req);
		req->srv = srv;
		req->conn = conn;
		req->fd = -1;
		req->path = xstrdup(url);
		req->method = method_parse(method);
		req->start_us = now_usec();
		*con_cls = req;
		req->in_handler = true;
		req_begin(req);
		req->in_handler = false;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!req->replied)
			body_feed(req, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->replied && req->rsp) {
		MHD_queue_response(conn, req->status, req->rsp);
		MHD_destroy_response(req->rsp);
		req->rsp = NULL;
		return MHD_YES;
	}
	if (req->replied || req->stage != REQ_BODY)
		return MHD_YES;
	req->stage = REQ_HANDLED;
	req_dispatch(req);
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct http_req *req = *con_cls;
	struct gw_metrics *m = gw_metrics(srv->gw);
	char labels[64];

	if (!req)
		return;
	*con_cls = NULL;
	snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%u\"",
		 req->method ? http_method_str(req->method) : "OTHER", req->status);
	gw_metrics_inc(m, GW_M_HTTP_REQS, labels);
	gw_metrics_observe(m, GW_M_HTTP_LATENCY, NULL,
			   (double)(now_usec() - req->start_us) / 1e6);
	log_debug("http: %s %s -> %u%s", req->method ? http_method_str(req->method) : "?",
		  req->path, req->status,
		  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (aborted)");
	req_free(req);
}

static void __attribute__((format(printf, 2, 0)))
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[256];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("http: libmicrohttpd: %s", line);
}

/* ---- setup ---- */

/* "host:port", "[v6]:port", ":port". */
static int parse_listen(const char *s, struct sockaddr_storage *ss,
			socklen_t *sslen)
{
	char host[128];
	const char *colon, *port;
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM }, *ai = NULL;

	if (s[0] == '[') {
		const char *e = strchr(s, ']');

		if (!e || e[1] != ':' || (size_t)(e - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(e - s - 1));
		host[e - s - 1] = '\0';
		port = e + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		port = colon + 1;
	}
	if (!*port || getaddrinfo(*host ? host : NULL, port, &hints, &ai) || !ai)
		return -EINVAL;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sslen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* "http[s]://<address>:<port>" unless the address is a wildcard. */
static char *bound_url(const struct sockaddr_storage *ss, bool tls, uint16_t port)
{
	char a[INET6_ADDRSTRLEN] = "";
	const void *addr;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;

		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			return NULL;
		addr = &in->sin_addr;
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			return NULL;
		addr = &in6->sin6_addr;
	} else {
		return NULL;
	}
	if (!inet_ntop(ss->ss_family, addr, a, sizeof(a)))
		return NULL;
	return xasprintf(ss->ss_family == AF_INET6 ? "%s://[%s]:%u" : "%s://%s:%u",
			 tls ? "https" : "http", a, port);
}

static bool addr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;

		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

/* Reads a small text file, trimming trailing whitespace. */
static int read_text(const char *path, size_t max, char **ret)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (!f)
		return -errno;
	buf = xmalloc(max + 1);
	n = fread(buf, 1, max, f);
	if (ferror(f) || !feof(f)) {
		int r = ferror(f) ? -EIO : -EFBIG;

		fclose(f);
		free(buf);
		return r;
	}
	fclose(f);
	buf[n] = '\0';
	*ret = buf;
	return 0;
}

static int load_token(struct http_server *srv, const char *path)
{
	char *t;
	size_t n;
	int r = read_text(path, 4096, &t);

	if (r < 0) {
		log_err("http: cannot read token file %s: %s", path, strerror(-r));
		return r;
	}
	n = strlen(t);
	while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ' ||
		     t[n - 1] == '\t'))
		t[--n] = '\0';
	if (n < 8) {
		log_err("http: token in %s is shorter than 8 characters", path);
		free(t);
		return -EINVAL;
	}
	srv->token = t;
	return 0;
}

static int make_dir(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int setup_dirs(struct http_server *srv, const char *state_dir)
{
	DIR *d;
	int r = make_dir(state_dir);

	srv->tmp_dir = xasprintf("%s/tmp", state_dir);
	if (r >= 0)
		r = make_dir(srv->tmp_dir);
	if (r < 0) {
		log_err("http: cannot create %s: %s", srv->tmp_dir, strerror(-r));
		return r;
	}
	/* Uploads a crash left behind are garbage. */
	d = opendir(srv->tmp_dir);
	for (struct dirent *de; d && (de = readdir(d));) {
		if (!strncmp(de->d_name, "upload-", 7)) {
			char *p = xasprintf("%s/%s", srv->tmp_dir, de->d_name);

			unlink(p);
			free(p);
		}
	}
	if (d)
		closedir(d);
	return 0;
}

static int setup_images(struct http_server *srv, const struct gw_config *cfg)
{
	struct gw_images_policy pol = {
		.require_signature = cfg->images.require_signature,
		.key_files = (const char *const *)cfg->images.keys,
		.n_key_files = cfg->images.n_keys,
		.dir = cfg->images.dir,
	};
	char *msg = NULL;
	int err = 0;

	srv->images = gw_images_new(cfg->general.state_dir, gw_store(srv->gw), &pol,
				    &err, &msg);
	if (!srv->images) {
		log_err("http: image store: %s", msg ? msg : strerror(-err));
		free(msg);
		return err;
	}
	return 0;
}

static int setup_tls(struct http_server *srv, const struct gw_config *cfg)
{
	int r;

	if (!cfg->http.tls_cert && !cfg->http.tls_key)
		return 0;
	if (!cfg->http.tls_cert || !cfg->http.tls_key) {
		log_err("http: tls_cert and tls_key go together");
		return -EINVAL;
	}
	r = read_text(cfg->http.tls_cert, 1 << 20, &srv->tls_cert);
	if (r >= 0)
		r = read_text(cfg->http.tls_key, 1 << 20, &srv->tls_key);
	if (r < 0)
		log_err("http: cannot read TLS certificate or key: %s", strerror(-r));
	return r;
}

static int start_mhd(struct http_server *srv, const struct gw_config *cfg,
		     struct sockaddr_storage *ss)
{
	unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	const union MHD_DaemonInfo *info;
	unsigned maxc = cfg->http.max_connections ? cfg->http.max_connections : 64;
	struct MHD_OptionItem tls[] = {
		{ MHD_OPTION_HTTPS_MEM_CERT, 0, srv->tls_cert },
		{ MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key },
		{ MHD_OPTION_END, 0, NULL },
	};

	if (ss->ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (srv->tls_cert)
		flags |= MHD_USE_TLS;
	srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_access, srv,
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)ss,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
		MHD_OPTION_CONNECTION_LIMIT, maxc,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
		MHD_OPTION_ARRAY, srv->tls_cert ? tls : tls + 2,
		MHD_OPTION_END);
	if (!srv->mhd) {
		log_err("http: cannot listen on %s", cfg->http.listen);
		return -EADDRNOTAVAIL;
	}
	info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
	srv->port = info ? info->port : 0;
	info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info)
		return -EIO;
	srv->ev_io = event_new(srv->base, info->epoll_fd, EV_READ | EV_PERSIST,
			       on_mhd_event, srv);
	srv->ev_timer = evtimer_new(srv->base, on_mhd_event, srv);
	event_add(srv->ev_io, NULL);
	run_mhd(srv);
	return 0;
}

struct http_server *http_server_new(struct gw *gw, int *err)
{
	const struct gw_config *cfg = gw_config(gw);
	struct http_server *srv = xnew(struct http_server);
	struct sockaddr_storage ss;
	socklen_t sslen;
	int r;

	srv->gw = gw;
	srv->base = gw_base(gw);
	srv->max_body = cfg->http.max_body ? cfg->http.max_body : 16u << 20;
	if (!gw_metrics(gw)) {
		srv->own_metrics = gw_metrics_new();
		gw_set_metrics(gw, srv->own_metrics);
	}
	r = parse_listen(cfg->http.listen ? cfg->http.listen : "127.0.0.1:8080",
			 &ss, &sslen);
	if (r < 0) {
		log_err("http: bad listen address '%s' (want host:port)",
			cfg->http.listen);
		goto fail;
	}
	/* Tests bind loopback but check the public-address policy with
	 * SMPGW_HTTP_ASSUME_PUBLIC=1. */
	srv->loopback = addr_is_loopback(&ss) && !getenv("SMPGW_HTTP_ASSUME_PUBLIC");
	if (cfg->http.token_file && (r = load_token(srv, cfg->http.token_file)) < 0)
		goto fail;
	if (!srv->loopback && !srv->token) {
		log_err("http: %s is not a loopback address: set [http] token_file",
			cfg->http.listen);
		r = -EPERM;
		goto fail;
	}
	if ((r = setup_tls(srv, cfg)) < 0 ||
	    (r = setup_dirs(srv, cfg->general.state_dir)) < 0 ||
	    (r = setup_images(srv, cfg)) < 0 || (r = start_mhd(srv, cfg, &ss)) < 0)
		goto fail;
	srv->url = bound_url(&ss, srv->tls_cert, srv->port);
	log_info("http: listening on %s%s port %u%s", srv->tls_cert ? "https " : "",
		 cfg->http.listen, srv->port, srv->token ? " (token required)" : "");
	return srv;
fail:
	*err = r;
	http_server_free(srv);
	return NULL;
}

/* libmicrohttpd refuses to stop with suspended connections: cancel the
 * device requests of pending ones (503), end event streams, and let MHD
 * process the resumes. */
static void resume_all(struct http_server *srv)
{
	while (srv->pending) {
		struct http_req *req = srv->pending;
		http_abort_cb cb = req->abort_cb;

		req->abort_cb = NULL;
		if (cb)
			cb(req, req->abort_data);
		http_reply_problem(req, -ECANCELED, "the daemon is shutting down");
		pending_del(req); /* in case the reply failed */
	}
	if (srv->sse_stop)
		srv->sse_stop(srv->sse);
	srv->resumed = true;
	run_mhd(srv);
}

struct http_server *http_server_free(struct http_server *srv)
{
	if (!srv)
		return NULL;
	srv->stopping = true;
	if (srv->mhd)
		resume_all(srv);
	if (srv->mhd)
		MHD_stop_daemon(srv->mhd); /* completes every request */
	srv->fwd = http_forwarder_free(srv->fwd); /* after: no forward in flight */
	if (srv->sse_free)
		srv->sse_free(srv->sse);
	/* after MHD_stop_daemon(): no forward is waiting for a name */
	if (srv->dns)
		evdns_base_free(srv->dns, 0);
	if (srv->ev_io)
		event_free(srv->ev_io);
	if (srv->ev_timer)
		event_free(srv->ev_timer);
	gw_images_free(srv->images);
	if (srv->own_metrics) {
		gw_set_metrics(srv->gw, NULL);
		gw_metrics_free(srv->own_metrics);
	}
	free(srv->token);
	free(srv->tmp_dir);
	free(srv->tls_cert);
	free(srv->tls_key);
	free(srv->url);
	free(srv);
	return NULL;
}

uint16_t http_server_port(const struct http_server *srv)
{
	return srv->port;
}

const char *http_server_url(const struct http_server *srv)
{
	return srv->url;
}

struct http_forwarder **http_server_forwarder(struct http_server *srv)
{
	return &srv->fwd;
}

struct evdns_base *http_server_dns(struct http_server *srv)
{
	/* Reads /etc/resolv.conf and /etc/hosts once; the lookups themselves
	 * run on the loop. Without a resolver (NULL), libevent would call
	 * getaddrinfo() on the loop. */
	if (!srv->dns)
		srv->dns = evdns_base_new(srv->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
							     EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (!srv->dns && (srv->dns = evdns_base_new(srv->base,
						    EVDNS_BASE_DISABLE_WHEN_INACTIVE)))
		evdns_base_load_hosts(srv->dns, NULL);
	return srv->dns;
}
