/* SPDX-License-Identifier: MIT */
/*
 * Several gateways, one fleet (see cluster.h): the tables "gateways",
 * "cluster_events" and "device_views" of the store (migration "cluster"),
 * LISTEN/NOTIFY through store.h, timers on the event loop.
 */
#include "gateway/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <jansson.h>

#include "gateway/device.h"
#include "gateway/events.h"
#include "gateway/gateway.h"
#include "gateway/lease.h"
#include "gateway/log.h"
#include "gateway/store.h"
#include "util/util.h"

#define CHANNEL "smpgw_events"
/* An event row no gateway writes: a longer type or gateway id, larger data. */
#define EVENT_NAME_MAX 64
#define EVENT_JSON_MAX (256u * 1024u)
/* Events are kept this long for gateways catching up. */
#define EVENTS_KEEP_MS (10u * 60u * 1000u)
/* Local events waiting for the store (it may be away for a while). */
#define MAX_QUEUE 4096
/* Rows read per batch, batches per wakeup (the rest on the next turn). */
#define FETCH_BATCH 256
#define FETCH_BATCHES 8
/* Events are written in batches: at most this long after they happened. */
#define FLUSH_MS 50
#define RETRY_MS 1000
#define VIEWS_MS 1000
/* The advisory lock that orders event writers (ids in commit order). */
#define EVENTS_LOCK "SELECT pg_advisory_xact_lock(1936944998)"

struct queued {
	char *type, *json;
	uint64_t time_ms;
};

struct view {
	char *id;
	char *key;           /* the view without RSSI and last seen */
	uint64_t published_ms;
	bool seen;           /* still managed here (this tick) */
};

struct gw_cluster {
	struct gw *gw;
	struct gw_store *store;
	char *me, *url;
	uint32_t ttl_ms;
	uint64_t started_ms;
	unsigned sub;
	struct gw_store_listener *listener;
	struct event *round, *flush, *fetch, *views_timer;
	struct queued *q;
	size_t nq;
	uint64_t dropped;
	int64_t last_id;
	bool baseline;       /* last_id is known (else: start at the newest) */
	bool flush_failing;  /* logged once per outage */
	/* A write failed: only the round (every ttl/3) tries the store until
	 * it answers again, so an unreachable server (each try may block up
	 * to libpq's connect_timeout) costs no more than the leases' rounds. */
	bool store_down;
	struct view *views;
	size_t nviews;
};

static void arm(struct event *ev, uint32_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (!evtimer_pending(ev, NULL))
		evtimer_add(ev, &tv);
}

/* The store answered: events kept for it go now. */
static void store_up(struct gw_cluster *c)
{
	c->store_down = false;
	if (c->nq)
		arm(c->flush, 0);
}

/* ---- local events to the store ---- */

static void queued_clear(struct queued *e)
{
	free(e->type);
	free(e->json);
}

static void on_local_event(const struct gw_event *ev, void *user_data)
{
	struct gw_cluster *c = user_data;
	char *json = json_dumps(ev->data, JSON_COMPACT);

	if (!json)
		return;
	if (c->nq == MAX_QUEUE) { /* the store is away: the oldest go */
		queued_clear(&c->q[0]);
		memmove(c->q, c->q + 1, (c->nq - 1) * sizeof(*c->q));
		c->nq--;
		c->dropped++;
	}
	if (!c->q)
		c->q = xnew_array(struct queued, MAX_QUEUE);
	c->q[c->nq++] = (struct queued){ xstrdup(ev->type), json, ev->time_ms };
	arm(c->flush, FLUSH_MS);
}

static int insert_event(struct gw_cluster *c, const struct queued *e, int64_t *id)
{
	struct gw_stmt *st = gw_store_prepare(c->store,
		"INSERT INTO cluster_events (gateway, type, json, time_ms)"
		" VALUES (?1, ?2, ?3, ?4) RETURNING id");
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, c->me);
	gw_stmt_bind_text(st, 2, e->type);
	gw_stmt_bind_text(st, 3, e->json);
	gw_stmt_bind_int64(st, 4, (int64_t)e->time_ms);
	r = gw_stmt_step(st);
	if (r == 1)
		*id = gw_stmt_int64(st, 0);
	gw_stmt_finalize(st);
	return r < 0 ? r : 0;
}

/* One transaction for the whole queue, announced once (payload: the
 * newest id, a hint only). */
static int flush_queue(struct gw_cluster *c)
{
	int64_t id = 0;
	char payload[24];
	int r = gw_store_begin(c->store);

	if (r == 0)
		r = gw_store_exec(c->store, EVENTS_LOCK);
	for (size_t i = 0; r == 0 && i < c->nq; i++)
		r = insert_event(c, &c->q[i], &id);
	snprintf(payload, sizeof(payload), "%" PRId64, id);
	if (r == 0)
		r = gw_store_notify(c->store, CHANNEL, payload);
	if (r == 0)
		r = gw_store_commit(c->store);
	else
		gw_store_rollback(c->store);
	return r;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_cluster *c = arg;
	int r;

	if (!c->nq || c->store_down)
		return;
	r = flush_queue(c);
	if (r < 0 && gw_store_exec(c->store, "SELECT 1") == 0) {
		/* The store answers: the batch itself is refused (a corrupt
		 * event?). Dropped, or it would hold back every later one. */
		log_err("cluster: the store refuses %zu events (%s): dropped", c->nq,
			gw_store_errmsg(c->store));
		c->dropped += c->nq;
		r = 0;
	}
	if (r < 0) {
		if (!c->flush_failing)
			log_warn("cluster: cannot write events to the store (%s): "
				 "kept (up to %d) and retried", gw_store_errmsg(c->store),
				 MAX_QUEUE);
		c->flush_failing = true;
		c->store_down = true;
		return;
	}
	if (c->flush_failing || c->dropped)
		log_notice("cluster: events reach the store again (%" PRIu64
			   " lost)", c->dropped);
	c->flush_failing = false;
	c->dropped = 0;
	for (size_t i = 0; i < c->nq; i++)
		queued_clear(&c->q[i]);
	c->nq = 0;
}

/* ---- the others' events from the store ---- */

static void emit_row(struct gw_cluster *c, struct gw_stmt *st)
{
	const char *gw = gw_stmt_text(st, 1), *type = gw_stmt_text(st, 2);
	json_error_t jerr;
	json_t *data;

	const char *json = gw_stmt_text(st, 3);

	if (!gw || !type || !strcasecmp(gw, c->me))
		return; /* our own: already on the local bus */
	/* No gateway writes such a row (a corrupted one): not passed on to
	 * every client's event stream. */
	if (strlen(type) > EVENT_NAME_MAX || strlen(gw) > EVENT_NAME_MAX ||
	    (json && strlen(json) > EVENT_JSON_MAX)) {
		log_warn("cluster: event %" PRId64 " (%.*s... from %.*s) in the store is"
			 " malformed (type or gateway over %d characters, or data over %u"
			 " bytes): skipped", gw_stmt_int64(st, 0), EVENT_NAME_MAX, type,
			 EVENT_NAME_MAX, gw, EVENT_NAME_MAX, EVENT_JSON_MAX);
		return;
	}
	data = json_loads(json ? json : "", 0, &jerr);
	if (!json_is_object(data)) {
		log_warn("cluster: event %" PRId64 " (%s from %s) in the store is not a"
			 " JSON object (%s): skipped", gw_stmt_int64(st, 0), type, gw,
			 data ? "another JSON value" : jerr.text);
		json_decref(data);
		return;
	}
	gw_events_emit_remote(gw_events(c->gw), gw, type, data,
			      (uint64_t)gw_stmt_int64(st, 4));
}

/* Reads one batch after last_id: rows read, or negative errno. */
static int fetch_batch(struct gw_cluster *c)
{
	struct gw_stmt *st = gw_store_prepare(c->store,
		"SELECT id, gateway, type, json, time_ms FROM cluster_events"
		" WHERE id > ?1 ORDER BY id LIMIT ?2");
	int r, n = 0;

	if (!st)
		return -EIO;
	gw_stmt_bind_int64(st, 1, c->last_id);
	gw_stmt_bind_int64(st, 2, FETCH_BATCH);
	while ((r = gw_stmt_step(st)) == 1) {
		n++;
		c->last_id = gw_stmt_int64(st, 0);
		emit_row(c, st);
	}
	gw_stmt_finalize(st);
	if (r >= 0)
		store_up(c);
	return r < 0 ? r : n;
}

/* The newest id: where a gateway that starts begins (it does not replay
 * what happened before it ran). */
static int read_baseline(struct gw_cluster *c)
{
	struct gw_stmt *st = gw_store_prepare(c->store,
		"SELECT max(id) FROM cluster_events");
	int r;

	if (!st)
		return -EIO;
	r = gw_stmt_step(st);
	if (r >= 0) {
		c->last_id = r == 1 ? gw_stmt_int64(st, 0) : 0;
		c->baseline = true;
	}
	gw_stmt_finalize(st);
	return r < 0 ? r : 0;
}

static void fetch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_cluster *c = arg;
	int n = FETCH_BATCH;

	if (!c->baseline && read_baseline(c) < 0)
		return;
	for (int i = 0; i < FETCH_BATCHES && n == FETCH_BATCH; i++)
		n = fetch_batch(c);
	if (n == FETCH_BATCH)
		arm(c->fetch, 0); /* more: after the loop's other work */
}

static void on_notify(bool reconnected, void *user_data)
{
	struct gw_cluster *c = user_data;

	if (reconnected)
		log_info("cluster: listening for the other gateways' events");
	fetch_cb(-1, 0, c);
}

/* ---- the registry ---- */

static int register_me(struct gw_cluster *c, uint64_t seen_ms)
{
	struct gw_stmt *st = gw_store_prepare(c->store,
		"INSERT INTO gateways (id, url, started_ms, last_seen_ms)"
		" VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET"
		" url = excluded.url, started_ms = excluded.started_ms,"
		" last_seen_ms = excluded.last_seen_ms");

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, c->me);
	gw_stmt_bind_text(st, 2, c->url);
	gw_stmt_bind_int64(st, 3, (int64_t)c->started_ms);
	gw_stmt_bind_int64(st, 4, (int64_t)seen_ms);
	return gw_stmt_run(st);
}

static void prune(struct gw_cluster *c, uint64_t now)
{
	struct gw_stmt *st = gw_store_prepare(c->store,
		"DELETE FROM cluster_events WHERE time_ms < ?1");

	if (st)
		gw_stmt_bind_int64(st, 1, (int64_t)(now - EVENTS_KEEP_MS));
	gw_stmt_run(st);
}

void gw_cluster_tick(struct gw_cluster *c)
{
	uint64_t now = gw_now_ms(c->gw);

	if (register_me(c, now) < 0) {
		c->store_down = true;
		return; /* the store is away: lease.c says so */
	}
	store_up(c);
	prune(c, now);
	fetch_cb(-1, 0, c); /* catches up on a missed notification */
}

static void round_cb(evutil_socket_t fd, short what, void *arg)
{
	gw_cluster_tick(arg);
}

/* ---- device views ---- */

static struct view *view_get(struct gw_cluster *c, const char *id)
{
	for (size_t i = 0; i < c->nviews; i++)
		if (!strcmp(c->views[i].id, id))
			return &c->views[i];
	c->views = xrealloc(c->views, (c->nviews + 1) * sizeof(*c->views));
	c->views[c->nviews] = (struct view){ .id = xstrdup(id) };
	return &c->views[c->nviews++];
}

static int put_view(struct gw_cluster *c, const char *id, const char *json, uint64_t now)
{
	struct gw_stmt *st = gw_store_prepare(c->store,
		"INSERT INTO device_views (device_id, gateway, json, updated_ms)"
		" VALUES (?1, ?2, ?3, ?4) ON CONFLICT(device_id) DO UPDATE SET"
		" gateway = excluded.gateway, json = excluded.json,"
		" updated_ms = excluded.updated_ms");

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, id);
	gw_stmt_bind_text(st, 2, c->me);
	gw_stmt_bind_text(st, 3, json);
	gw_stmt_bind_int64(st, 4, (int64_t)now);
	return gw_stmt_run(st);
}

struct views_pass {
	struct gw_cluster *c;
	uint64_t now;
	int err;
};

/* Removes k1 (and k2) from j's member obj without touching the object
 * j shares it with (a shallow copy replaces it). */
static void drop_keys(json_t *j, const char *obj, const char *k1, const char *k2)
{
	json_t *o = json_object_get(j, obj);

	if (!json_is_object(o))
		return;
	o = json_copy(o);
	json_object_del(o, k1);
	if (k2)
		json_object_del(o, k2);
	json_object_set_new(j, obj, o);
}

static void view_one(struct gw_device *dev, void *user_data)
{
	struct views_pass *p = user_data;
	struct gw_cluster *c = p->c;
	json_t *j = gw_device_to_json(dev);
	struct view *v = view_get(c, gw_device_id(dev));
	char *json, *key;

	v->seen = true;
	if (!j || p->err)
		goto out;
	json = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	/* RSSI and last seen change with every advertisement: alone they
	 * refresh the view every ttl, not every second. */
	json_object_del(j, "rssi");
	json_object_del(j, "last_seen");
	/* So do the advertisement's time and age, the firmware's age and
	 * the traffic counters (every view was written again every second:
	 * ~1000 upserts/s for 1000 watches, bench/README.md). */
	drop_keys(j, "advertised", "seen_at", "age_s");
	drop_keys(j, "firmware", "age_s", NULL);
	json_object_del(j, "counters");
	key = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	if (json && key && ((!v->key || strcmp(v->key, key)) ||
			    p->now - v->published_ms >= c->ttl_ms)) {
		p->err = put_view(c, v->id, json, p->now);
		if (!p->err) {
			free(v->key);
			v->key = key;
			key = NULL;
			v->published_ms = p->now;
		}
	}
	free(json);
	free(key);
out:
	json_decref(j);
}

static void views_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_cluster *c = arg;
	struct views_pass p = { c, gw_now_ms(c->gw), 0 };
	size_t k = 0;

	if (c->store_down)
		return;
	if (gw_store_begin(c->store) < 0) {
		c->store_down = true;
		return;
	}
	gw_device_foreach(c->gw, view_one, &p);
	if (p.err || gw_store_commit(c->store) < 0) {
		if (!p.err)
			p.err = -EIO;
		gw_store_rollback(c->store);
		c->store_down = true;
	}
	/* Forget devices no longer managed here (a new holder publishes). */
	for (size_t i = 0; i < c->nviews; i++) {
		struct view *v = &c->views[i];

		if (p.err && v->published_ms == p.now)
			v->published_ms = 0; /* rolled back: again next time */
		if (!v->seen) {
			free(v->id);
			free(v->key);
			continue;
		}
		v->seen = false;
		c->views[k++] = *v;
	}
	c->nviews = k;
}

/* ---- queries for the REST API ---- */

/* A query's result: a server that is gone or silent marks the store down
 * (until the next round reaches it), so the REST API does not wait out
 * the store's timeout on every request meanwhile. */
static int query_done(struct gw_cluster *c, int r)
{
	if (r == -ENOTCONN || r == -ETIMEDOUT)
		c->store_down = true;
	else if (r >= 0)
		store_up(c);
	return r;
}

int gw_cluster_gateways(struct gw_cluster *c, const char *id,
			gw_cluster_gateway_cb cb, void *user_data)
{
	struct gw_stmt *st = c->store_down ? NULL : gw_store_prepare(c->store, id ?
		"SELECT id, url, started_ms, last_seen_ms FROM gateways WHERE id = ?1" :
		"SELECT id, url, started_ms, last_seen_ms FROM gateways ORDER BY id");
	uint64_t now = gw_now_ms(c->gw);
	int r, n = 0;

	if (!st)
		return c->store_down ? -ENOTCONN : -EIO;
	if (id)
		gw_stmt_bind_text(st, 1, id);
	while ((r = gw_stmt_step(st)) == 1) {
		struct gw_cluster_gateway g = {
			.id = gw_stmt_text(st, 0),
			.url = gw_stmt_text(st, 1),
			.started_ms = (uint64_t)gw_stmt_int64(st, 2),
			.last_seen_ms = (uint64_t)gw_stmt_int64(st, 3),
		};

		if (!g.id)
			continue;
		/* Seen in the future (a corrupted row, a clock far off): not
		 * alive, so not forwarded to. */
		g.alive = g.last_seen_ms && g.last_seen_ms + c->ttl_ms > now &&
			  g.last_seen_ms <= now + GW_LEASE_TTL_MAX_MS;
		g.self = !strcmp(g.id, c->me);
		if (g.url && !*g.url)
			g.url = NULL;
		cb(&g, user_data);
		n++;
	}
	gw_stmt_finalize(st);
	r = query_done(c, r);
	return r < 0 ? r : id && !n ? -ENOENT : 0;
}

int gw_cluster_watches(struct gw_cluster *c, const char *id,
		       gw_cluster_watch_cb cb, void *user_data)
{
	struct gw_stmt *st = c->store_down ? NULL : gw_store_prepare(c->store, id ?
		"SELECT d.id, d.name, d.transport, d.last_seen, d.rssi, l.holder,"
		" v.json, v.gateway, v.updated_ms FROM devices d"
		" LEFT JOIN leases l ON upper(l.device_id) = upper(d.id) AND l.expires_ms > ?1"
		" AND l.expires_ms <= ?3" /* void beyond now + GW_LEASE_TTL_MAX_MS */
		" LEFT JOIN device_views v ON v.device_id = d.id"
		" WHERE upper(d.id) = upper(?2) OR d.name = ?2"
		" ORDER BY CASE WHEN upper(d.id) = upper(?2) THEN 0 ELSE 1 END, d.id" :
		"SELECT d.id, d.name, d.transport, d.last_seen, d.rssi, l.holder,"
		" v.json, v.gateway, v.updated_ms FROM devices d"
		" LEFT JOIN leases l ON upper(l.device_id) = upper(d.id) AND l.expires_ms > ?1"
		" AND l.expires_ms <= ?2" /* void beyond now + GW_LEASE_TTL_MAX_MS */
		" LEFT JOIN device_views v ON v.device_id = d.id ORDER BY d.id");
	uint64_t now;
	int r, n = 0;

	if (!st)
		return c->store_down ? -ENOTCONN : -EIO;
	now = gw_now_ms(c->gw);
	gw_stmt_bind_int64(st, 1, (int64_t)now);
	if (id)
		gw_stmt_bind_text(st, 2, id);
	gw_stmt_bind_int64(st, id ? 3 : 2, (int64_t)(now + GW_LEASE_TTL_MAX_MS));
	while ((r = gw_stmt_step(st)) == 1) {
		struct gw_cluster_watch w = {
			.id = gw_stmt_text(st, 0),
			.name = gw_stmt_text(st, 1),
			.transport = gw_stmt_text(st, 2),
			.last_seen_ms = (uint64_t)gw_stmt_int64(st, 3),
			.rssi = gw_stmt_is_null(st, 4) ? 127 : (int)gw_stmt_int64(st, 4),
			.held_by = gw_stmt_text(st, 5),
			.view_json = gw_stmt_text(st, 6),
			.view_by = gw_stmt_text(st, 7),
			.view_ms = (uint64_t)gw_stmt_int64(st, 8),
		};

		if (!w.id)
			continue;
		cb(&w, user_data);
		n++;
	}
	gw_stmt_finalize(st);
	r = query_done(c, r);
	return r < 0 ? r : id && !n ? -ENOENT : 0;
}

/* ---- lifecycle ---- */

struct gw_cluster *gw_cluster_new(struct gw *gw, const struct gw_cluster_params *p)
{
	struct gw_store *store = gw_store(gw);
	struct event_base *base = gw_base(gw);
	struct gw_cluster *c;
	int err = 0;

	if (!store || !p->gateway_id || gw_store_backend(store) != GW_STORE_POSTGRESQL)
		return NULL;
	c = xnew(struct gw_cluster);
	c->gw = gw;
	c->store = store;
	c->me = xstrdup(p->gateway_id);
	c->ttl_ms = p->ttl_ms ? p->ttl_ms : 15000;
	c->started_ms = gw_now_ms(gw);
	c->round = event_new(base, -1, EV_PERSIST, round_cb, c);
	c->flush = evtimer_new(base, flush_cb, c);
	c->fetch = evtimer_new(base, fetch_cb, c);
	c->views_timer = event_new(base, -1, EV_PERSIST, views_cb, c);
	read_baseline(c);
	gw_events_set_gateway(gw_events(gw), c->me);
	c->sub = gw_events_subscribe(gw_events(gw), on_local_event, c);
	c->listener = gw_store_listen(store, base, CHANNEL, RETRY_MS, on_notify, c, &err);
	if (!c->listener)
		log_warn("cluster: cannot listen for the other gateways' events: %s",
			 strerror(-err));
	arm(c->round, c->ttl_ms / 3 ? c->ttl_ms / 3 : 1);
	arm(c->views_timer, VIEWS_MS);
	gw_set_cluster(gw, c);
	return c;
}

void gw_cluster_set_url(struct gw_cluster *c, const char *url)
{
	if (!c)
		return;
	free(c->url);
	c->url = url ? xstrdup(url) : NULL;
	gw_cluster_tick(c);
}

const char *gw_cluster_id(const struct gw_cluster *c)
{
	return c ? c->me : NULL;
}

struct gw_cluster *gw_cluster_free(struct gw_cluster *c)
{
	if (!c)
		return NULL;
	gw_set_cluster(c->gw, NULL);
	gw_events_unsubscribe(gw_events(c->gw), c->sub);
	flush_cb(-1, 0, c); /* the last events (device.removed, ...) */
	register_me(c, 0);  /* gone: the others stop forwarding at once */
	gw_store_listener_free(c->listener);
	event_free(c->round);
	event_free(c->flush);
	event_free(c->fetch);
	event_free(c->views_timer);
	for (size_t i = 0; i < c->nq; i++)
		queued_clear(&c->q[i]);
	free(c->q);
	for (size_t i = 0; i < c->nviews; i++) {
		free(c->views[i].id);
		free(c->views[i].key);
	}
	free(c->views);
	free(c->me);
	free(c->url);
	free(c);
	return NULL;
}
