/* SPDX-License-Identifier: MIT */
/*
 * What a resource file (devices.c, images.c, ...) sees of the HTTP
 * server: the request it handles and the ways to answer it. The server
 * (server.c) owns libmicrohttpd, auth, body limits and buffering; a
 * handler only reads the parsed request and replies.
 *
 * A handler returns:
 *   0             a reply was queued with one of the http_reply_*() calls;
 *   HTTP_PENDING  it started asynchronous work (a device request) and will
 *                 reply later, exactly once, with http_reply_*(); it must
 *                 set an abort hook (http_req_on_abort) that cancels that
 *                 work, which the server calls if the request dies first;
 *   < 0           a negative errno: the server answers with the problem
 *                 document errors.c maps it to (no detail).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

struct gw;
struct http_req;
struct http_server;
struct MHD_Connection;
struct evdns_base;

#define HTTP_PENDING 1

enum http_method {
	HTTP_GET = 1 << 0,
	HTTP_POST = 1 << 1,
	HTTP_PUT = 1 << 2,
	HTTP_DELETE = 1 << 3,
};

/* What the route accepts as a request body. */
enum http_body {
	HTTP_BODY_NONE = 0,  /* any body is refused (413) */
	HTTP_BODY_JSON,      /* optional JSON object, buffered (<= HTTP_MAX_JSON) */
	HTTP_BODY_FILE,      /* streamed to a temp file, hashed as it arrives;
			      * raw body or multipart/form-data (first file part) */
};

/* Largest JSON request body; bigger ones get 413 before being read. */
#define HTTP_MAX_JSON (64 * 1024)

enum http_route_flags {
	HTTP_ROUTE_PUBLIC = 1 << 0, /* no token even on a non-loopback bind
				     * (dashboard shell: holds no data) */
	HTTP_ROUTE_WRITE = 1 << 1,  /* changes state: token required when one is
				     * configured (POST/PUT/DELETE imply it) */
};

typedef int (*http_handler)(struct http_req *req);

struct route {
	unsigned methods;       /* enum http_method bits */
	const char *path;       /* "/api/v1/devices/{id}/echo"; {x} = one segment */
	http_handler handler;
	enum http_body body;
	unsigned flags;         /* enum http_route_flags */
	const char *summary;    /* one line, shown in logs and checked vs OpenAPI */
};

/* The route table (routes.c) and the matcher, exposed for tests. */
extern const struct route http_routes[];
extern const size_t http_routes_len;
#define HTTP_MAX_PARAMS 4
struct http_match {
	const struct route *route;
	size_t nparams;
	const char *names[HTTP_MAX_PARAMS]; /* borrowed from the route */
	char *values[HTTP_MAX_PARAMS];      /* new strings; http_match_clear() */
};
/* Returns 0 and fills *ret; -ENOENT when no path matches; -EOPNOTSUPP when
 * the path matches but not the method (*allow gets the allowed bits). */
int http_route_match(const char *path, unsigned method, struct http_match *ret,
		     unsigned *allow);
void http_match_clear(struct http_match *m);
const char *http_method_str(unsigned method);

/* Request accessors. Strings are borrowed for the request's lifetime. */
struct gw *http_req_gw(struct http_req *req);
struct http_server *http_req_server(struct http_req *req);
const char *http_req_path(struct http_req *req);
unsigned http_req_method(struct http_req *req);
const char *http_req_param(struct http_req *req, const char *name);
const char *http_req_query(struct http_req *req, const char *name);
/* Every query parameter, in order, up to max (values NULL for "?k"
 * without "="); returns how many there are (may exceed max). */
size_t http_req_query_all(struct http_req *req, const char **keys,
			  const char **values, size_t max);
const char *http_req_header(struct http_req *req, const char *name);
/* Parsed JSON body (HTTP_BODY_JSON): NULL when the body was empty. */
json_t *http_req_json(struct http_req *req);
/* The JSON body as received (HTTP_BODY_JSON; NULL/0 when empty). */
const char *http_req_body(struct http_req *req, size_t *len);
/* The route the request matched. */
const struct route *http_req_route(struct http_req *req);
/* HTTP_BODY_FILE: the temp file (the handler may rename() it away and then
 * calls http_req_take_file()), its size and SHA-256. */
const char *http_req_file(struct http_req *req, size_t *size,
			  const uint8_t **sha256);
void http_req_take_file(struct http_req *req);
/* The file name a multipart part or Content-Disposition gave, or NULL. */
const char *http_req_filename(struct http_req *req);
struct MHD_Connection *http_req_connection(struct http_req *req);

typedef void (*http_abort_cb)(struct http_req *req, void *data);
void http_req_on_abort(struct http_req *req, http_abort_cb cb, void *data);

/* Replies; each may be called once per request. json is consumed. */
void http_reply_json(struct http_req *req, unsigned status, json_t *json);
/* Problem from the errno table; detail is printf-formatted (may be NULL). */
void http_reply_problem(struct http_req *req, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Problem with extra members merged in (extra consumed, may be NULL). */
void http_reply_problem_ext(struct http_req *req, int err, json_t *extra,
			    const char *detail);
/* Body consumed (free()d by the server). */
void http_reply_buf(struct http_req *req, unsigned status, const char *ctype,
		    char *body, size_t len);
/* An answer of the gateway holding the watch, passed through (forward.c):
 * body consumed; served_by names that gateway in X-Smpgw-Served-By;
 * www_auth: its WWW-Authenticate (a 401's challenge), NULL when none. */
void http_reply_forwarded(struct http_req *req, unsigned status, const char *ctype,
			  char *body, size_t len, const char *served_by,
			  const char *www_auth);
/* Body borrowed and static (embedded files). */
void http_reply_static(struct http_req *req, unsigned status,
		       const char *ctype, const void *body, size_t len,
		       const char *cache_control);
/* Streams: read(data, pos, buf, max) as libmicrohttpd's content reader
 * (MHD_ContentReaderCallback semantics); free(data) when the response ends. */
typedef ssize_t (*http_stream_read)(void *data, uint64_t pos, char *buf,
				    size_t max);
void http_reply_stream(struct http_req *req, unsigned status, const char *ctype,
		       http_stream_read read, void *data, void (*free_data)(void *));

/* After MHD_resume_connection() from outside an MHD callback: make the
 * server run libmicrohttpd again soon. */
void http_server_kick(struct http_server *srv);
/* Per-server slots for resource files that keep state (SSE clients). */
void *http_server_sse(struct http_server *srv);
void http_server_set_sse(struct http_server *srv, void *sse,
			 void (*stop_fn)(void *), void (*free_fn)(void *));
/* The image store (created by the server). */
struct gw_images *http_server_images(struct http_server *srv);
/* Whether the server is shutting down (streams end). */
bool http_server_stopping(struct http_server *srv);
/* The server's asynchronous resolver for outgoing connections (forward.c),
 * or NULL when none could be made. */
struct evdns_base *http_server_dns(struct http_server *srv);
/* forward.c's state, NULL until it makes it; freed with the server by
 * http_forwarder_free (handlers.h). */
struct http_forwarder **http_server_forwarder(struct http_server *srv);
