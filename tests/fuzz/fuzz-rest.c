/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for REST request bodies and query strings: the real
 * REST server (src/http/, libmicrohttpd on the libevent loop) with the
 * store, the upload engine and the rollouts behind it, one watch "w0" on a
 * fake link, all set up once; each input is one HTTP request over
 * loopback. What the route's handler parses comes from the input: JSON
 * bodies (update, rollouts, echo, smp passthrough, datetime, test/confirm),
 * raw and multipart image uploads, query strings of the lists.
 *
 * Input: [route][query] 0x00 [body] 0x00 [what the watch answers]. The
 * query is %-escaped where HTTP needs it (libmicrohttpd unescapes it). The
 * answer's bytes are the CBOR payload of every reply of the fake watch.
 * Checks: a whole HTTP response arrives, and it is never a 500.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ftw.h>

#include <event2/event.h>

#include "codec/smp.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/jobs.h"
#include "gateway/log.h"
#include "gateway/registry/registry.h"
#include "gateway/rollouts.h"
#include "gateway/store.h"
#include "http/server.h"
#include "links/link.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
	const char *method, *path, *ctype;
} routes[] = {
	{ "GET", "/api/v1/devices", NULL },
	{ "GET", "/api/v1/jobs", NULL },
	{ "GET", "/api/v1/rollouts", NULL },
	{ "GET", "/api/v1/images", NULL },
	{ "GET", "/metrics", NULL },
	{ "GET", "/api/v1/devices/w0", NULL },
	{ "GET", "/api/v1/devices/w0/image-state", NULL },
	{ "GET", "/api/v1/devices/w0/stats/smp_svr_stats", NULL },
	{ "POST", "/api/v1/devices/w0/echo", "application/json" },
	{ "POST", "/api/v1/devices/w0/smp", "application/json" },
	{ "POST", "/api/v1/devices/w0/datetime", "application/json" },
	{ "POST", "/api/v1/devices/w0/image-state/test", "application/json" },
	{ "POST", "/api/v1/devices/w0/image-state/confirm", "application/json" },
	{ "POST", "/api/v1/devices/w0/update", "application/json" },
	{ "POST", "/api/v1/rollouts", "application/json" },
	{ "POST", "/api/v1/rollouts/1/pause", "application/json" },
	{ "POST", "/api/v1/images", "application/octet-stream" },
	{ "POST", "/api/v1/images", "multipart/form-data; boundary=XyZ" },
	{ "GET", "/api/v1/rollouts/1/report", NULL },
	{ "DELETE", "/api/v1/jobs/1", NULL },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static struct {
	struct event_base *base;
	struct gw *gw;
	struct http_server *http;
	struct link *link;
	uint16_t port;
	uint8_t answer[2048];
	size_t answer_len;
} s;

struct reply {
	uint8_t hdr[SMP_HDR_LEN];
};

static void reply_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reply *r = arg;
	uint8_t frame[SMP_HDR_LEN + sizeof(s.answer)];

	memcpy(frame, r->hdr, SMP_HDR_LEN);
	frame[0] |= 1; /* read -> read rsp, write -> write rsp */
	put_be16(frame + 2, (uint16_t)s.answer_len);
	memcpy(frame + SMP_HDR_LEN, s.answer, s.answer_len);
	if (link_state(s.link) == LINK_STATE_UP)
		link_deliver_frame(s.link, frame, SMP_HDR_LEN + s.answer_len);
	free(r);
}

static void up_cb(evutil_socket_t fd, short what, void *arg)
{
	link_set_state(s.link, LINK_STATE_UP, 0);
}

static int fake_connect(struct link *link)
{
	link_set_state(link, LINK_STATE_CONNECTING, 0);
	event_base_once(s.base, -1, EV_TIMEOUT, up_cb, NULL, NULL);
	return 0;
}

static void fake_disconnect(struct link *link)
{
	link_set_state(link, LINK_STATE_DOWN, 0);
}

static int fake_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct reply *r;

	if (link_state(link) != LINK_STATE_UP)
		return -ENOTCONN;
	r = xnew(struct reply);
	memcpy(r->hdr, frame, SMP_HDR_LEN);
	event_base_once(s.base, -1, EV_TIMEOUT, reply_cb, r, NULL);
	return 0;
}

static size_t fake_mtu(const struct link *link)
{
	return 2048;
}

static const struct link_ops fake_ops = {
	.name = "fake", .connect = fake_connect, .disconnect = fake_disconnect,
	.send = fake_send, .mtu = fake_mtu,
};

static char state_dir[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

/* The state directory goes when the fuzzer exits (nothing else is freed:
 * the server lives for the whole run). */
static void cleanup(void)
{
	nftw(state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	char tmpl[] = "/tmp/fuzz-rest-XXXXXX";
	struct gw_config *cfg = gw_config_new_default();
	struct gw_store *store;
	char *dir = mkdtemp(tmpl), *msg = NULL;
	int r = 0;

	if (!dir)
		abort();
	snprintf(state_dir, sizeof(state_dir), "%s", dir);
	atexit(cleanup);
	gw_log_set_level(GW_LOG_ERR);
	free(cfg->general.state_dir);
	cfg->general.state_dir = xstrdup(dir);
	free(cfg->http.listen);
	cfg->http.listen = xstrdup("127.0.0.1:0");
	cfg->udp.base_port = 0;
	cfg->request.timeout_ms = 50;
	cfg->request.connect_timeout_ms = 50;
	cfg->update.retry_timeout_ms = 100;
	cfg->update.boot_timeout_ms = 100;
	s.base = event_base_new();
	store = gw_store_open(dir, &r, &msg);
	if (!store)
		abort();
	s.gw = gw_new(s.base, cfg, store);
	s.link = link_new(&fake_ops, s.base, NULL);
	gw_registry_add(gw_registry_of(s.gw), "w0", "Watch", s.link, true, 0);
	if (!gw_engine_new(s.gw, &r) || !gw_rollouts_new(s.gw, &r))
		abort();
	s.http = http_server_new(s.gw, &r);
	if (!s.http)
		abort();
	s.port = http_server_port(s.http);
}

/* Appends the query, %-escaping what would break the request line. */
static size_t put_query(char *out, const uint8_t *q, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = q[i];

		if (c <= 0x20 || c >= 0x7f || c == '#' || (c == '%' && i + 2 >= len))
			n += (size_t)sprintf(out + n, "%%%02X", c);
		else
			out[n++] = (char)c;
	}
	return n;
}

/* A TCP connection to the server; -1 when loopback has no port left (a
 * fast fuzzer leaves many in TIME_WAIT): the environment, not a bug. */
static int connect_http(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(s.port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	for (int i = 0; i < 100; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			abort();
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
		/* EINTR: libFuzzer's timeout alarm; start over on a new socket. */
		if (errno != EADDRNOTAVAIL && errno != EAGAIN && errno != EINTR) {
			fprintf(stderr, "fuzz-rest: connect: %s\n", strerror(errno));
			abort();
		}
		close(fd);
		usleep(20000);
	}
	return -1;
}

/* Runs the loop until the server closes the connection; the status. */
static int exchange(int fd)
{
	static char buf[1 << 16];
	size_t got = 0;
	uint64_t end = now_usec() + 3000000;
	int status = -1;

	while (now_usec() < end) {
		ssize_t n;

		event_base_loop(s.base, EVLOOP_NONBLOCK);
		n = recv(fd, buf + got, sizeof(buf) - 1 - got, MSG_DONTWAIT);
		if (n == 0)
			break;
		if (n > 0)
			got += (size_t)n;
		if (got == sizeof(buf) - 1)
			break;
	}
	buf[got] = '\0';
	if (sscanf(buf, "HTTP/1.%*c %d", &status) != 1)
		return -1;
	return status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char req[20000];
	const uint8_t *q, *body, *ans, *end = data + size, *z;
	size_t qlen, blen, n;
	unsigned ri;
	int fd, status;

	if (!s.base)
		setup();
	if (size < 1 || size > 4096)
		return 0;
	ri = data[0] % N_ROUTES;
	q = data + 1;
	z = memchr(q, 0, (size_t)(end - q));
	qlen = (size_t)((z ? z : end) - q);
	body = z ? z + 1 : end;
	z = memchr(body, 0, (size_t)(end - body));
	blen = (size_t)((z ? z : end) - body);
	ans = z ? z + 1 : end;
	s.answer_len = MIN((size_t)(end - ans), sizeof(s.answer));
	memcpy(s.answer, ans, s.answer_len);

	n = (size_t)sprintf(req, "%s %s", routes[ri].method, routes[ri].path);
	if (qlen) {
		req[n++] = '?';
		n += put_query(req + n, q, qlen);
	}
	n += (size_t)sprintf(req + n, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
	if (routes[ri].ctype)
		n += (size_t)sprintf(req + n, "Content-Type: %s\r\nContent-Length: %zu\r\n",
				     routes[ri].ctype, blen);
	n += (size_t)sprintf(req + n, "\r\n");
	if (routes[ri].ctype) {
		memcpy(req + n, body, blen);
		n += blen;
	}
	fd = connect_http();
	if (fd < 0)
		return 0;
	/* A short send is fine: the server may answer (413) and close early. */
	(void)!send(fd, req, n, MSG_NOSIGNAL);
	status = exchange(fd);
	close(fd);
	/* Let what the request started (device replies, jobs) settle. */
	for (int i = 0; i < 4; i++)
		event_base_loop(s.base, EVLOOP_NONBLOCK);
	if (status < 100 || status == 500) {
		fprintf(stderr, "fuzz-rest: %s %s: status %d\n", routes[ri].method,
			routes[ri].path, status);
		abort();
	}
	return 0;
}
