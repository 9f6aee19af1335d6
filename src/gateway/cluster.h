/* SPDX-License-Identifier: MIT */
/*
 * Several gateways, one fleet (docs/multi-gateway.md): what each gateway
 * tells the others through the shared PostgreSQL store, so that every
 * gateway's REST API, event stream and dashboard show the whole fleet.
 *
 *  - the gateway registry: a row of "gateways" per gateway (id, the URL of
 *    its REST API, start, last seen) written every round (ttl/3); a gateway
 *    is alive while it was seen within ttl. Another gateway forwards
 *    requests for the watches this one holds to that URL.
 *  - events: every local event of the bus (events.h) is written to
 *    "cluster_events" (in order: one transaction at a time under an
 *    advisory lock, so ids are assigned in commit order) and announced
 *    with NOTIFY; every gateway LISTENs (store.h: its own connection, on
 *    the loop) and re-reads the rows newer than the last id it saw, so a
 *    notification lost while the server restarted costs only latency (the
 *    rounds catch up too). The others' events are re-emitted into the local
 *    bus as remote events (gw_events_emit_remote: never published again,
 *    never acted upon by the engine or rollouts). Rows older than 10
 *    minutes are pruned.
 *  - device views: each gateway publishes the JSON view of the devices it
 *    manages to "device_views" when it changes (at most once a second per
 *    device; RSSI and last-seen alone refresh it every ttl), so any
 *    gateway can list a watch held elsewhere with its holder's last view
 *    and its age.
 *
 * Only with [gateway] id on a PostgreSQL store; NULL otherwise.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct gw;
struct gw_cluster;

struct gw_cluster_params {
	const char *gateway_id;   /* [gateway] id */
	uint32_t ttl_ms;          /* [gateway] lease_ttl: rounds every ttl/3 */
};

/* NULL when gw has no PostgreSQL store or p has no gateway id. Registers
 * itself with gw (gw_cluster()). */
struct gw_cluster *gw_cluster_new(struct gw *gw, const struct gw_cluster_params *p);
/* Marks this gateway gone in the registry (no more forwarding to it). */
struct gw_cluster *gw_cluster_free(struct gw_cluster *c);
/* The URL of this gateway's REST API for the others (NULL: none; they
 * then answer 421 for its watches instead of forwarding). */
void gw_cluster_set_url(struct gw_cluster *c, const char *url);
const char *gw_cluster_id(const struct gw_cluster *c);
/* Runs one round now (registry, catch-up, prune): tests and start-up. */
void gw_cluster_tick(struct gw_cluster *c);

struct gw_cluster_gateway {
	const char *id;
	const char *url;          /* NULL: not reachable by the others */
	uint64_t started_ms, last_seen_ms;
	bool alive;               /* seen within ttl */
	bool self;
};
typedef void (*gw_cluster_gateway_cb)(const struct gw_cluster_gateway *g,
				      void *user_data);
/* The registry (id NULL: every gateway, by id), or one gateway: -ENOENT
 * when it has no row. These queries answer -ENOTCONN at once while the
 * store is known to be away (a write or query failed; the next round,
 * every ttl/3, tries again), so REST calls do not wait for it. */
int gw_cluster_gateways(struct gw_cluster *c, const char *id,
			gw_cluster_gateway_cb cb, void *user_data);

/* One watch of the shared store, as any gateway sees it. */
struct gw_cluster_watch {
	const char *id, *name, *transport;
	uint64_t last_seen_ms;    /* 0: unknown */
	int rssi;                 /* 127: unknown */
	const char *held_by;      /* the live lease's holder; NULL: none */
	const char *view_json;    /* the last published view, or NULL */
	const char *view_by;      /* the gateway that published it */
	uint64_t view_ms;         /* when */
};
typedef void (*gw_cluster_watch_cb)(const struct gw_cluster_watch *w, void *user_data);
/* Every watch the store knows (id NULL), by id, or the ones whose id
 * (any case) or name is id (the id first): -ENOENT when none. */
int gw_cluster_watches(struct gw_cluster *c, const char *id,
		       gw_cluster_watch_cb cb, void *user_data);
