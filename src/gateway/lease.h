/* SPDX-License-Identifier: MIT */
/*
 * Leases on watches (docs/multi-gateway.md): several gateways sharing one
 * store record what they hear (RSSI per watch per gateway, "hearings")
 * and a watch is held by one gateway at a time through a row of "leases"
 * (holder, expiry). The best-hearing gateway claims a free or expired
 * lease; the holder renews it every ttl/3 while it hears the watch, and
 * gives it up when another gateway hears it better by more than the
 * hysteresis or when it no longer hears it. A dead holder's lease expires
 * after ttl and its hearings go stale after ttl, so another gateway takes
 * over within ttl + ttl/3.
 *
 * Every claim is one atomic statement (INSERT ... ON CONFLICT DO UPDATE
 * ... WHERE holder = me OR expired ... RETURNING), so two gateways
 * claiming at once cannot both win. Times are the gateways' wall clocks
 * (keep them in NTP sync: skew adds to the takeover time).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct gw;
struct gw_lease;

/* The longest lease_ttl ([gateway] lease_ttl is refused above it); a lease
 * row expiring further ahead than this is void (corrupt, or written by a
 * clock far ahead) and may be claimed. */
#define GW_LEASE_TTL_MAX_MS (5u * 60u * 1000u)

struct gw_lease_params {
	const char *gateway_id;   /* [gateway] id */
	uint32_t ttl_ms;          /* [gateway] lease_ttl, default 15 s */
	int hysteresis_db;        /* [gateway] lease_hysteresis, default 8 dB */
};

/* Called when this gateway gains or loses a watch. */
typedef void (*gw_lease_changed_cb)(const char *device_id, bool held, void *user_data);

/* NULL when gw has no store. */
struct gw_lease *gw_lease_new(struct gw *gw, const struct gw_lease_params *p,
			      gw_lease_changed_cb cb, void *user_data);
struct gw_lease *gw_lease_free(struct gw_lease *l);

/* This gateway hears device_id at rssi (127: unknown, kept) / no more.
 * Only fresh hearings count: an RSSI (not 127) given here is a hearing of
 * now; one older than GW_LEASE_FRESH_ROUNDS rounds is no longer reported
 * (the watch counts as unheard here; its row in "hearings" is deleted)
 * unless the watch is linked here. */
void gw_lease_heard(struct gw_lease *l, const char *device_id, int rssi);
void gw_lease_unheard(struct gw_lease *l, const char *device_id);
#define GW_LEASE_FRESH_ROUNDS 2
/* device_id is (or no longer is) connected to this gateway: a link is a
 * hearing of its own (a connected watch does not advertise); its RSSI is
 * the last one heard. */
void gw_lease_linked(struct gw_lease *l, const char *device_id, bool linked);
/* Held by this gateway (as of the last renewal). */
bool gw_lease_held(struct gw_lease *l, const char *device_id);
/* The gateway holding device_id's live lease in gw's store (new string in
 * *holder), -ENOENT when none does, or another negative errno. Needs no
 * struct gw_lease: any part of the gateway may ask (the REST API). */
int gw_lease_holder(struct gw *gw, const char *device_id, char **holder);
/* Runs one round now (tests and start-up; the timer runs it every ttl/3). */
void gw_lease_tick(struct gw_lease *l);
