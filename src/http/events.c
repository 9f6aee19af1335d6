/* SPDX-License-Identifier: MIT */
/*
 * GET /api/v1/events: server-sent events. Every event of the bus goes to
 * every client as
 *     id: <id>
 *     event: <type>
 *     data: {"id":..,"type":"..","time_ms":..,"data":{...}[,"gateway":".."]}
 * A client that reconnects with Last-Event-ID (or ?last_event_id=) gets the
 * events it missed from the bus's bounded history; when they are no longer
 * there it gets one "stream.reset" event telling it to re-read state.
 * Comment lines (": keepalive") every 15 s keep proxies from closing idle
 * streams and notice clients that went away.
 *
 * Each client's connection is suspended while it has nothing to send and
 * resumed when an event arrives; a client that falls more than 1 MiB
 * behind is dropped rather than allowed to grow without bound.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <microhttpd.h>

#include "gateway/events.h"
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

#define SSE_KEEPALIVE_S 15
#define SSE_MAX_BACKLOG (1u << 20)
#define SSE_MAX_CLIENTS 256

struct sse_client {
	struct sse_hub *hub;
	struct MHD_Connection *conn;
	char *buf;
	size_t len, off, cap;
	bool suspended, dropped;
	struct sse_client *next;
};

struct sse_hub {
	struct http_server *srv;
	struct gw *gw;
	unsigned sub;
	struct event *keepalive;
	struct sse_client *clients;
	unsigned n;
};

static void client_append(struct sse_client *c, const char *s, size_t n)
{
	if (c->dropped || !n)
		return;
	if (c->off && c->off == c->len)
		c->off = c->len = 0;
	if (c->len - c->off + n > SSE_MAX_BACKLOG) {
		log_warn("http: event stream client too slow, dropping it");
		c->dropped = true;
		return;
	}
	if (c->len + n > c->cap) {
		/* Compact before growing (nothing to move while off is 0: the
		 * first append has no buffer yet, and memmove(NULL) is UB). */
		if (c->off) {
			memmove(c->buf, c->buf + c->off, c->len - c->off);
			c->len -= c->off;
			c->off = 0;
		}
		if (c->len + n > c->cap) {
			c->cap = MAX(c->cap * 2, c->len + n);
			c->buf = xrealloc(c->buf, c->cap);
		}
	}
	memcpy(c->buf + c->len, s, n);
	c->len += n;
}

static void client_wake(struct sse_client *c)
{
	if (c->suspended) {
		c->suspended = false;
		MHD_resume_connection(c->conn);
		http_server_kick(c->hub->srv);
	}
}

/* One event as the stream and /recent show it; "gateway" is where it
 * happened (several gateways: docs/multi-gateway.md). */
static json_t *event_json(const struct gw_event *ev)
{
	json_t *j = json_pack("{s:I, s:s, s:I, s:O}", "id", (json_int_t)ev->id,
			      "type", ev->type, "time_ms", (json_int_t)ev->time_ms,
			      "data", ev->data ? ev->data : json_null());

	if (j && ev->gateway)
		json_object_set_new(j, "gateway", json_string(ev->gateway));
	return j;
}

static char *format_event(const struct gw_event *ev)
{
	json_t *j = event_json(ev);
	char *data = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	char *out;

	json_decref(j);
	/* JSON_COMPACT output has no newlines, so one data: line suffices. */
	out = xasprintf("id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", ev->id,
			ev->type, data ? data : "{}");
	free(data);
	return out;
}

static void client_send_event(const struct gw_event *ev, void *user_data)
{
	struct sse_client *c = user_data;
	char *s = format_event(ev);

	client_append(c, s, strlen(s));
	free(s);
}

static void on_bus_event(const struct gw_event *ev, void *user_data)
{
	struct sse_hub *hub = user_data;
	char *s = format_event(ev);
	size_t n = strlen(s);

	for (struct sse_client *c = hub->clients; c; c = c->next) {
		client_append(c, s, n);
		client_wake(c);
	}
	free(s);
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
	struct sse_hub *hub = arg;
	static const char ka[] = ": keepalive\n\n";

	for (struct sse_client *c = hub->clients; c; c = c->next) {
		client_append(c, ka, sizeof(ka) - 1);
		client_wake(c);
	}
}

/* Shutdown: every client wakes up and ends its stream. */
static void hub_stop(void *data)
{
	struct sse_hub *hub = data;

	for (struct sse_client *c = hub ? hub->clients : NULL; c; c = c->next)
		client_wake(c);
}

static void hub_free(void *data)
{
	struct sse_hub *hub = data;

	if (!hub)
		return;
	gw_events_unsubscribe(gw_events(hub->gw), hub->sub);
	event_free(hub->keepalive);
	free(hub);
}

static struct sse_hub *hub_get(struct http_req *req)
{
	struct http_server *srv = http_req_server(req);
	struct sse_hub *hub = http_server_sse(srv);
	struct timeval tv = { SSE_KEEPALIVE_S, 0 };
	const char *ka = getenv("SMPGW_SSE_KEEPALIVE_MS"); /* tests only */

	if (hub)
		return hub;
	if (ka && atoi(ka) > 0) {
		tv.tv_sec = atoi(ka) / 1000;
		tv.tv_usec = (atoi(ka) % 1000) * 1000;
	}
	hub = xnew(struct sse_hub);
	hub->srv = srv;
	hub->gw = http_req_gw(req);
	/* Every gateway's events (the others' re-emitted by cluster.c). */
	hub->sub = gw_events_subscribe_all(gw_events(hub->gw), on_bus_event, hub);
	hub->keepalive = event_new(gw_base(hub->gw), -1, EV_PERSIST, on_keepalive, hub);
	event_add(hub->keepalive, &tv);
	http_server_set_sse(srv, hub, hub_stop, hub_free);
	return hub;
}

static ssize_t client_read(void *data, uint64_t pos, char *buf, size_t max)
{
	struct sse_client *c = data;
	size_t n;

	if (c->dropped)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (http_server_stopping(c->hub->srv))
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (c->off == c->len) {
		/* Nothing to send: sleep until an event or keepalive wakes us. */
		c->suspended = true;
		MHD_suspend_connection(c->conn);
		return 0;
	}
	n = MIN(max, c->len - c->off);
	memcpy(buf, c->buf + c->off, n);
	c->off += n;
	return (ssize_t)n;
}

static void client_free(void *data)
{
	struct sse_client *c = data;
	struct sse_hub *hub = c->hub;

	for (struct sse_client **p = &hub->clients; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	hub->n--;
	gw_metrics_set(gw_metrics(hub->gw), GW_M_SSE_CLIENTS, NULL, hub->n);
	free(c->buf);
	free(c);
}

/* Last-Event-ID header, or ?last_event_id= for clients that cannot set
 * headers. Returns false when absent; -EDOM-worthy garbage is ignored as
 * absent would hide a client bug, so it is reported. */
static int last_event_id(struct http_req *req, bool *has, uint64_t *ret)
{
	const char *s = http_req_header(req, "Last-Event-ID");
	char *end;

	if (!s)
		s = http_req_query(req, "last_event_id");
	*has = s && *s;
	if (!*has)
		return 0;
	errno = 0;
	*ret = strtoull(s, &end, 10);
	if (errno || *end || *s == '-')
		return -EDOM;
	return 0;
}

int events_stream(struct http_req *req)
{
	struct sse_hub *hub = hub_get(req);
	struct sse_client *c;
	uint64_t after = 0;
	bool has = false;
	static const char hello[] = "retry: 3000\n: smpgw event stream\n\n";

	if (last_event_id(req, &has, &after) < 0)
		return http_reply_problem(req, -EDOM, "Last-Event-ID must be the "
					  "decimal id of an event"), 0;
	if (hub->n >= SSE_MAX_CLIENTS)
		return http_reply_problem(req, -EAGAIN, "too many event stream "
					  "clients (%d)", SSE_MAX_CLIENTS), 0;
	c = xnew(struct sse_client);
	c->hub = hub;
	c->conn = http_req_connection(req);
	client_append(c, hello, sizeof(hello) - 1);
	if (has && gw_events_replay(gw_events(hub->gw), after, client_send_event,
				    c) == -ERANGE) {
		char *s = xasprintf("event: stream.reset\ndata: {\"type\":\"stream.reset\","
				    "\"data\":{\"reason\":\"events after %" PRIu64
				    " are no longer in the history; re-read state\"}}\n\n",
				    after);

		client_append(c, s, strlen(s));
		free(s);
	}
	c->next = hub->clients;
	hub->clients = c;
	hub->n++;
	gw_metrics_set(gw_metrics(hub->gw), GW_M_SSE_CLIENTS, NULL, hub->n);
	http_reply_stream(req, 200, "text/event-stream", client_read, c, client_free);
	return 0;
}

/*
 * GET /api/v1/events/recent: the newest events of the bounded history as
 * one JSON answer, for pages that show what happened before they opened
 * (the stream only carries what comes next). Filters: limit (1..1000,
 * default 100), device (an event about that device: its data's id, device
 * or name), type (a prefix: "job." or "device.connected") and gateway
 * (where it happened, with several gateways). last_id is
 * the newest event on the bus, matching or not: open the stream with
 * ?last_event_id=<last_id> and nothing falls between the two.
 */
#define RECENT_DEFAULT 100
#define RECENT_MAX 1000

struct recent {
	const char *device, *type, *gateway;
	json_t *events; /* matching, oldest first */
};

static bool about_device(const json_t *data, const char *dev)
{
	static const char *const keys[] = { "id", "device", "name" };

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const char *v = json_string_value(json_object_get(data, keys[i]));

		if (v && !strcmp(v, dev))
			return true;
	}
	return false;
}

static void recent_collect(const struct gw_event *ev, void *user_data)
{
	struct recent *r = user_data;

	if (r->type && strncmp(ev->type, r->type, strlen(r->type)))
		return;
	if (r->device && !about_device(ev->data, r->device))
		return;
	if (r->gateway && (!ev->gateway || strcmp(ev->gateway, r->gateway)))
		return;
	json_array_append_new(r->events, event_json(ev));
}

static int recent_limit(struct http_req *req, size_t *ret)
{
	const char *s = http_req_query(req, "limit");
	char *end;
	long v;

	*ret = RECENT_DEFAULT;
	if (!s)
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > RECENT_MAX)
		return -EDOM;
	*ret = (size_t)v;
	return 0;
}

int events_recent(struct http_req *req)
{
	struct gw_events *bus = gw_events(http_req_gw(req));
	struct recent r = { .device = http_req_query(req, "device"),
			    .type = http_req_query(req, "type"),
			    .gateway = http_req_query(req, "gateway") };
	uint64_t first = gw_events_first_id(bus);
	size_t limit, n;
	json_t *out;

	if (recent_limit(req, &limit) < 0)
		return http_reply_problem(req, -EDOM, "limit must be an integer "
					  "from 1 to %d", RECENT_MAX), 0;
	r.events = json_array();
	if (first)
		gw_events_replay(bus, first - 1, recent_collect, &r);
	n = json_array_size(r.events);
	out = json_array();
	for (size_t i = n > limit ? n - limit : 0; i < n; i++)
		json_array_append(out, json_array_get(r.events, i));
	json_decref(r.events);
	http_reply_json(req, 200, json_pack("{s:o, s:I, s:I}", "events", out, "count",
					    (json_int_t)json_array_size(out), "last_id",
					    (json_int_t)gw_events_last_id(bus)));
	return 0;
}
