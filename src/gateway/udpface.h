/* SPDX-License-Identifier: MIT */
/*
 * The UDP face: one UDP socket per managed device (bound to [udp] bind,
 * loopback by default, on the device's stable port). A datagram is one
 * SMP request frame; it goes through the device's request queue and the
 * response returns to the sender with its own sequence number. Failures
 * are answered with an SMP error response (v1 or v2 like the request),
 * never with silence; datagrams that are not SMP requests are dropped and
 * counted.
 */
#pragma once

#include <stdint.h>

struct gw;
struct gw_udpface;

/* Creates endpoints for the devices already registered and follows the
 * registry from now on. */
struct gw_udpface *gw_udpface_new(struct gw *gw);
struct gw_udpface *gw_udpface_free(struct gw_udpface *face);

/* SMP rc that answers a gw_device_request() error (e.g. -ETIMEDOUT -> 4). */
int gw_udpface_errno_to_rc(int err);

/* Writes {"devices": {"<id>": port, ...}, "bind": "..."} to path
 * atomically (temporary file + rename). Returns 0 or -errno. */
int gw_udpface_write_ports(struct gw_udpface *face, const char *path);
/* Called after every endpoint change (add/remove); may be NULL. */
void gw_udpface_set_changed_cb(struct gw_udpface *face,
			       void (*cb)(struct gw_udpface *face, void *ud),
			       void *user_data);
