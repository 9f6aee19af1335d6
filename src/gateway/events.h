/* SPDX-License-Identifier: MIT */
/*
 * The event bus: every state change in the daemon (device seen/connected/
 * lost, job progress and result, rollout transitions) is published here
 * once, with a monotonically increasing id, and kept in a bounded history
 * so SSE clients can resume with Last-Event-ID.
 *
 * Several gateways (docs/multi-gateway.md, cluster.h): every event carries
 * the id of the gateway it happened on ("gateway"; NULL with one
 * gateway). Events of other gateways are re-emitted here as "remote"
 * events: they get a local id and go to the history and to subscribers
 * that asked for them (gw_events_subscribe_all: the REST API's stream),
 * never to the plain subscribers (upload engine, rollouts), which act only
 * on what happens on this gateway, and never back to the other gateways.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct gw_events;

struct gw_event {
	uint64_t id;
	const char *type;   /* e.g. "device.connected", "job.progress" */
	json_t *data;       /* borrowed; an object */
	uint64_t time_ms;   /* wall clock, ms since epoch */
	const char *gateway; /* where it happened; NULL: one gateway, no id */
	bool remote;        /* happened on another gateway */
};

typedef void (*gw_event_cb)(const struct gw_event *ev, void *user_data);

struct gw_events *gw_events_new(unsigned history);
struct gw_events *gw_events_free(struct gw_events *bus);

/* Publishes an event; data is consumed (may be NULL for {}). Returns the id. */
uint64_t gw_events_emit(struct gw_events *bus, const char *type, json_t *data);

/* This gateway's id, set on every local event from now on (copied). */
void gw_events_set_gateway(struct gw_events *bus, const char *gateway);
/* Re-emits an event of another gateway (cluster.c): data is consumed. */
uint64_t gw_events_emit_remote(struct gw_events *bus, const char *gateway,
			       const char *type, json_t *data, uint64_t time_ms);

/* Subscribers are called synchronously from gw_events_emit(), for local
 * events only. Returns a non-zero subscription id. */
unsigned gw_events_subscribe(struct gw_events *bus, gw_event_cb cb,
			     void *user_data);
/* The same for local and remote events (check ev->remote). */
unsigned gw_events_subscribe_all(struct gw_events *bus, gw_event_cb cb,
				 void *user_data);
void gw_events_unsubscribe(struct gw_events *bus, unsigned id);

/*
 * Replays history events with id > after_id (oldest first) to cb. Returns
 * 0, or -ERANGE when after_id is older than the history holds (events were
 * lost; the caller should tell its client to re-read state).
 */
int gw_events_replay(struct gw_events *bus, uint64_t after_id, gw_event_cb cb,
		     void *user_data);
uint64_t gw_events_last_id(const struct gw_events *bus);
/* The oldest event the history still holds; 0 when it holds none. */
uint64_t gw_events_first_id(const struct gw_events *bus);
