/* SPDX-License-Identifier: MIT */
/*
 * Leases on watches (see lease.h): the tables "hearings" and "leases" of
 * the store (migration "leases"), one round per ttl/3 on the event loop.
 */
#include "gateway/lease.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "gateway/gateway.h"
#include "gateway/jobs.h"
#include "gateway/log.h"
#include "gateway/store.h"
#include "util/util.h"

/* Bounded: a crowd of watches must not grow the table forever. */
#define MAX_WATCHES 4096

struct watch {
	char *id;
	int rssi;       /* 127: unknown */
	bool heard;     /* in this gateway's radio range */
	bool linked;    /* connected here (or a reachable UDP/serial device) */
	bool recorded;  /* its row in "hearings" exists */
	bool stale;     /* heard, but no fresh RSSI (logged once) */
	bool swapping;  /* held, silent in a reset its job asked for (logged once) */
	uint64_t rssi_ms; /* when rssi was last given (0: never) */
	bool held;
	uint64_t serve_until_ms; /* held: the store unreachable, served until then */
};

struct gw_lease {
	struct gw *gw;
	struct gw_store *store;
	char *me;
	uint32_t ttl_ms;
	int hyst;
	gw_lease_changed_cb cb;
	void *user_data;
	struct event *timer;
	struct event *margin; /* the store unreachable: the next serve_until_ms */
	struct watch *v;
	size_t n;
	/* Index of v by id (case-insensitive; v only grows): every
	 * advertisement looks its watch up, a linear search cost O(n) each
	 * (O(n^2) per second with the whole fleet advertising). Open
	 * addressing, slot = index + 1 (0: empty). */
	uint32_t idx[2 * MAX_WATCHES];
	bool store_down; /* logged once per outage */
};

#define IDX_SIZE (2 * MAX_WATCHES) /* a power of two, at most half full */

static uint32_t id_hash(const char *id)
{
	uint32_t h = 2166136261u; /* FNV-1a of the lower-cased id */

	for (; *id; id++)
		h = (h ^ (uint8_t)(*id >= 'A' && *id <= 'Z' ? *id + 32 : *id)) * 16777619u;
	return h;
}

/* The index slot holding id, or the empty slot where it would go. */
static uint32_t *slot(struct gw_lease *l, const char *id)
{
	uint32_t i = id_hash(id) & (IDX_SIZE - 1);

	while (l->idx[i] && strcasecmp(l->v[l->idx[i] - 1].id, id))
		i = (i + 1) & (IDX_SIZE - 1);
	return &l->idx[i];
}

static struct watch *find(struct gw_lease *l, const char *id)
{
	uint32_t *sl = slot(l, id);

	return *sl ? &l->v[*sl - 1] : NULL;
}

static struct watch *get(struct gw_lease *l, const char *id)
{
	uint32_t *sl = slot(l, id);
	struct watch *w;

	if (*sl || l->n == MAX_WATCHES)
		return *sl ? &l->v[*sl - 1] : NULL;
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	w = &l->v[l->n++];
	*w = (struct watch){ .id = xstrdup(id), .rssi = 127 };
	*sl = (uint32_t)l->n;
	return w;
}

void gw_lease_heard(struct gw_lease *l, const char *device_id, int rssi)
{
	struct watch *w = l ? get(l, device_id) : NULL;

	if (!w)
		return;
	w->heard = true;
	if (rssi != 127) {
		w->rssi = rssi;
		w->rssi_ms = gw_now_ms(l->gw);
	}
}

void gw_lease_linked(struct gw_lease *l, const char *device_id, bool linked)
{
	struct watch *w = l ? (linked ? get(l, device_id) : find(l, device_id)) : NULL;

	if (!w)
		return;
	/* Linked until now: heard until now (the watch advertises again
	 * within a moment, its next RSSI follows). */
	if (w->linked && !linked)
		w->rssi_ms = gw_now_ms(l->gw);
	w->linked = linked;
	if (linked)
		w->heard = true;
}

/* Heard now: linked, or an RSSI from an advertisement of the last
 * GW_LEASE_FRESH_ROUNDS rounds; or, held here, silent because its job
 * reset it (MCUboot's swap and the boot), until the job sees it again or
 * its [update] boot_timeout ends (gw_engine_rebooting_until()). */
static bool fresh(const struct gw_lease *l, struct watch *w, uint64_t now)
{
	uint64_t bound = (uint64_t)l->ttl_ms / 3 * GW_LEASE_FRESH_ROUNDS, until;

	if (w->heard && (w->linked || (w->rssi_ms && now <= w->rssi_ms + bound))) {
		w->swapping = false;
		return true;
	}
	until = w->held && w->rssi_ms ? gw_engine_rebooting_until(gw_engine(l->gw), w->id) : 0;
	if (until > now) {
		if (!w->swapping)
			log_info("lease: %s: silent while its job waits for it to reboot: kept"
				 " for up to %llu ms ([update] boot_timeout)", w->id,
				 (unsigned long long)(until - now));
		w->swapping = true;
		return true;
	}
	w->swapping = false;
	return false;
}

void gw_lease_unheard(struct gw_lease *l, const char *device_id)
{
	struct watch *w = l ? find(l, device_id) : NULL;

	if (w)
		w->heard = w->linked = false;
}

bool gw_lease_held(struct gw_lease *l, const char *device_id)
{
	struct watch *w = l ? find(l, device_id) : NULL;

	return w && w->held;
}

static int record_hearing(struct gw_lease *l, const struct watch *w, uint64_t now)
{
	struct gw_stmt *st = gw_store_prepare(l->store,
		"INSERT INTO hearings (gateway_id, device_id, rssi, heard_ms)"
		" VALUES (?1, ?2, ?3, ?4) ON CONFLICT(gateway_id, device_id)"
		" DO UPDATE SET rssi = excluded.rssi, heard_ms = excluded.heard_ms");

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, l->me);
	gw_stmt_bind_text(st, 2, w->id);
	gw_stmt_bind_int64(st, 3, w->rssi == 127 ? -127 : w->rssi);
	/* When it was heard: now over a link, else its advertisement's time
	 * (so the others' "fresh" counts from the hearing, not the round). */
	gw_stmt_bind_int64(st, 4, (int64_t)(w->linked || !w->rssi_ms ? now : w->rssi_ms));
	return gw_stmt_run(st);
}

static int forget_hearing(struct gw_lease *l, const struct watch *w)
{
	struct gw_stmt *st = gw_store_prepare(l->store,
		"DELETE FROM hearings WHERE gateway_id = ?1 AND device_id = ?2");

	if (st) {
		gw_stmt_bind_text(st, 1, l->me);
		gw_stmt_bind_text(st, 2, w->id);
	}
	return gw_stmt_run(st);
}

/* The best fresh hearing of another gateway: its RSSI, or -ENOENT. */
static int best_other(struct gw_lease *l, const char *id, uint64_t now, int *rssi)
{
	struct gw_stmt *st = gw_store_prepare(l->store,
		"SELECT max(rssi) FROM hearings WHERE device_id = ?1"
		" AND gateway_id != ?2 AND heard_ms > ?3 AND heard_ms <= ?4"
		" AND rssi BETWEEN -127 AND 20");
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, id);
	gw_stmt_bind_text(st, 2, l->me);
	gw_stmt_bind_int64(st, 3, (int64_t)(now - l->ttl_ms));
	/* A hearing from the future or at an impossible RSSI (a corrupted
	 * row, a clock far off) is void: it could otherwise keep every
	 * gateway from claiming the watch. */
	gw_stmt_bind_int64(st, 4, (int64_t)(now + GW_LEASE_TTL_MAX_MS));
	r = gw_stmt_step(st);
	if (r == 1 && !gw_stmt_is_null(st, 0))
		*rssi = (int)gw_stmt_int64(st, 0);
	else if (r >= 0)
		r = -ENOENT;
	gw_stmt_finalize(st);
	return r < 0 ? r : 0;
}

/* Claims or renews atomically (a free, expired, own or void lease): 1 held, 0 held by another, or errno. */
static int claim(struct gw_lease *l, const char *id, uint64_t now)
{
	struct gw_stmt *st = gw_store_prepare(l->store,
		"INSERT INTO leases (device_id, holder, expires_ms, acquired_ms)"
		" VALUES (?1, ?2, ?3, ?4) ON CONFLICT(device_id) DO UPDATE SET"
		" holder = excluded.holder, expires_ms = excluded.expires_ms,"
		" acquired_ms = CASE WHEN leases.holder = excluded.holder"
		"  THEN leases.acquired_ms ELSE excluded.acquired_ms END"
		" WHERE leases.holder = excluded.holder OR leases.expires_ms < ?4"
		" OR leases.expires_ms > ?5"
		" RETURNING holder");
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, id);
	gw_stmt_bind_text(st, 2, l->me);
	gw_stmt_bind_int64(st, 3, (int64_t)(now + l->ttl_ms));
	gw_stmt_bind_int64(st, 4, (int64_t)now);
	/* No lease runs further ahead than the longest ttl: such a row is
	 * corrupt (or its writer's clock is far off) and void. */
	gw_stmt_bind_int64(st, 5, (int64_t)(now + GW_LEASE_TTL_MAX_MS));
	r = gw_stmt_step(st);
	gw_stmt_finalize(st);
	return r;
}

static void give_up(struct gw_lease *l, const char *id)
{
	struct gw_stmt *st = gw_store_prepare(l->store,
		"UPDATE leases SET expires_ms = 0 WHERE device_id = ?1 AND holder = ?2");

	if (st) {
		gw_stmt_bind_text(st, 1, id);
		gw_stmt_bind_text(st, 2, l->me);
	}
	gw_stmt_run(st);
}

/* One watch's round: 1 held, 0 not, or errno (the store is unreachable). */
static int decide(struct gw_lease *l, struct watch *w, uint64_t now)
{
	int other = -128, r;

	if (!fresh(l, w, now)) {
		if (w->heard && !w->stale)
			log_info("lease: %s: no advertisement heard for %u ms: no longer reported",
				 w->id, l->ttl_ms / 3 * GW_LEASE_FRESH_ROUNDS);
		w->stale = w->heard;
		if (w->held)
			give_up(l, w->id);
		if (w->recorded && forget_hearing(l, w) == 0)
			w->recorded = false;
		return 0;
	}
	w->stale = false;
	r = record_hearing(l, w, now);
	if (r == 0)
		w->recorded = true;
	if (r == 0)
		r = best_other(l, w->id, now, &other);
	if (r == -ENOENT)
		r = 0;
	if (r < 0)
		return r;
	if (w->held) {
		if (other > w->rssi + l->hyst) {
			log_info("lease: %s is heard better elsewhere (%d dBm against %d):"
				 " given up", w->id, other, w->rssi);
			give_up(l, w->id);
			return 0;
		}
		return claim(l, w->id, now);
	}
	/* Not held: claim only as the best hearer (a tie claims too; the
	 * atomic claim decides). */
	if (other > w->rssi)
		return 0;
	return claim(l, w->id, now);
}

/* Without the store, a held watch is let go at its serve_until_ms itself,
 * not at the next round: a round later would be when the lease lapses. */
static void arm_margin(struct gw_lease *l, uint64_t now)
{
	uint64_t first = UINT64_MAX;
	struct timeval tv;

	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].held && l->v[i].serve_until_ms < first)
			first = l->v[i].serve_until_ms;
	event_del(l->margin);
	if (first == UINT64_MAX)
		return;
	first = first > now ? first - now : 0;
	tv.tv_sec = (time_t)(first / 1000);
	tv.tv_usec = (suseconds_t)(first % 1000) * 1000;
	event_add(l->margin, &tv);
}

/* The store unreachable: the held watches whose serve_until_ms passed go
 * first, before a store call of this round may wait up to [store] timeout. */
static void let_go_due(struct gw_lease *l, uint64_t now)
{
	for (size_t i = 0; l->store_down && i < l->n; i++) {
		if (!l->v[i].held || now < l->v[i].serve_until_ms)
			continue;
		l->v[i].held = false;
		log_notice("lease: %s no longer held by %s", l->v[i].id, l->me);
		if (l->cb)
			l->cb(l->v[i].id, false, l->user_data);
	}
}

void gw_lease_tick(struct gw_lease *l)
{
	uint64_t now = gw_now_ms(l->gw);
	bool failed = false;

	let_go_due(l, now);
	for (size_t i = 0; i < l->n; i++) {
		struct watch *w = &l->v[i];
		int r = decide(l, w, now);
		bool held = r == 1;

		if (held)
			/* The lease runs until now + ttl on the others' clocks;
			 * without the store this gateway keeps serving the watch
			 * until a third of ttl before that (clock skew margin). */
			w->serve_until_ms = now + l->ttl_ms - l->ttl_ms / 3;
		if (r < 0) {
			/* The clock again: a store call may have waited up to
			 * [store] timeout. */
			now = gw_now_ms(l->gw);
			held = w->held && fresh(l, w, now) && now < w->serve_until_ms;
			if (!failed && !l->store_down)
				log_warn("lease: the store is unreachable (%s): held watches"
					 " are served until their lease lapses",
					 gw_store_errmsg(l->store));
			failed = true;
		}
		if (held != w->held) {
			w->held = held;
			log_notice("lease: %s %s by %s", w->id,
				   held ? "now held" : "no longer held", l->me);
			/* The callback may add watches (l->v moves): w is not
			 * used after it. */
			if (l->cb)
				l->cb(l->v[i].id, held, l->user_data);
		}
	}
	if (l->store_down && !failed)
		log_notice("lease: the store is reachable again");
	l->store_down = failed;
	if (failed)
		arm_margin(l, now);
	else
		event_del(l->margin);
}

int gw_lease_holder(struct gw *gw, const char *device_id, char **holder)
{
	struct gw_store *store = gw_store(gw);
	struct gw_stmt *st;
	int r;

	if (!store || !device_id)
		return -ENOENT;
	/* A lease further ahead than the longest ttl is void (claim()). */
	st = gw_store_prepare(store, "SELECT holder FROM leases WHERE"
			      " upper(device_id) = upper(?1) AND expires_ms > ?2"
			      " AND expires_ms <= ?3");
	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, device_id);
	gw_stmt_bind_int64(st, 2, (int64_t)gw_now_ms(gw));
	gw_stmt_bind_int64(st, 3, (int64_t)(gw_now_ms(gw) + GW_LEASE_TTL_MAX_MS));
	r = gw_stmt_step(st);
	if (r == 1 && gw_stmt_text(st, 0))
		*holder = xstrdup(gw_stmt_text(st, 0));
	gw_stmt_finalize(st);
	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	gw_lease_tick(arg);
}

struct gw_lease *gw_lease_new(struct gw *gw, const struct gw_lease_params *p,
			      gw_lease_changed_cb cb, void *user_data)
{
	struct gw_lease *l;
	uint32_t every;
	struct timeval tv;

	if (!gw_store(gw) || !p->gateway_id)
		return NULL;
	l = xnew(struct gw_lease);
	l->gw = gw;
	l->store = gw_store(gw);
	l->me = xstrdup(p->gateway_id);
	l->ttl_ms = p->ttl_ms ? p->ttl_ms : 15000;
	l->hyst = p->hysteresis_db;
	l->cb = cb;
	l->user_data = user_data;
	every = l->ttl_ms / 3 ? l->ttl_ms / 3 : 1;
	tv.tv_sec = every / 1000;
	tv.tv_usec = (every % 1000) * 1000;
	l->timer = event_new(gw_base(gw), -1, EV_PERSIST, timer_cb, l);
	event_add(l->timer, &tv);
	l->margin = event_new(gw_base(gw), -1, 0, timer_cb, l);
	return l;
}

struct gw_lease *gw_lease_free(struct gw_lease *l)
{
	struct gw_stmt *st;

	if (!l)
		return NULL;
	if (l->timer)
		event_free(l->timer);
	if (l->margin)
		event_free(l->margin);
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i].held)
			give_up(l, l->v[i].id); /* a clean stop hands over at once */
		free(l->v[i].id);
	}
	/* ... and its hearings go: the next best need not wait for them to
	 * go stale. */
	st = gw_store_prepare(l->store, "DELETE FROM hearings WHERE gateway_id = ?1");
	if (st)
		gw_stmt_bind_text(st, 1, l->me);
	gw_stmt_run(st);
	free(l->v);
	free(l->me);
	free(l);
	return NULL;
}
