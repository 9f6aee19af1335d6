/* SPDX-License-Identifier: MIT */
/*
 * Reachability of the configured UDP and serial devices ([device]
 * sections), for their leases (docs/multi-gateway.md, "Leases for UDP and
 * serial devices"). A radio gives BLE watches an RSSI; a wired or IP
 * device is either reachable from this gateway or not, so every gateway
 * that reaches one reports the same fixed hearing (GW_REACH_RSSI) and the
 * lease's hysteresis keeps the current holder.
 *
 * Reachable means: UDP, the device answers an SMP echo (any SMP answer);
 * serial, the port opens (a gateway that does not hold the device sends
 * nothing on it: a second reader would steal the holder's bytes) and, on
 * the holder, the device answers an echo. One probe per round (every
 * `every_ms`, the first at once); a device that did not answer for
 * `misses` rounds in a row is unreachable. The holder probes through its
 * own request queue (gw_device_request), so the echo waits its turn
 * behind a running upload; the others through a link of their own.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct gw;
struct gw_reach;

/* The hearing a reachable configured device is reported at (dBm). */
#define GW_REACH_RSSI 0

/* Called when a device becomes reachable or not, and again for every
 * answer while it is (name: the [device] section's name). */
typedef void (*gw_reach_cb)(const char *name, bool reachable, void *user_data);

/* Probes every UDP/serial [device] of gw's config. */
struct gw_reach *gw_reach_new(struct gw *gw, uint32_t every_ms, unsigned misses,
			      gw_reach_cb cb, void *user_data);
struct gw_reach *gw_reach_free(struct gw_reach *r);
/* The config's device list changed (SIGHUP): probes follow it; devices
 * that are gone are reported unreachable. Accepts NULL. */
void gw_reach_reload(struct gw_reach *r);
