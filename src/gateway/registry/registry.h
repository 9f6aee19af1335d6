/* SPDX-License-Identifier: MIT */
/*
 * The registry side of device.h that only the daemon core uses: adding and
 * removing devices, feeding BLE discovery facts in, and observing the
 * device set (the UDP face creates one endpoint per device).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "gateway/device.h"

struct gw_registry;

struct gw_registry_observer {
	void (*added)(struct gw_device *dev, void *user_data);
	void (*removed)(struct gw_device *dev, void *user_data);
};

struct gw_registry *gw_registry_new(struct gw *gw);
/* The registry of a daemon context (gateway.c). */
struct gw_registry *gw_registry_of(struct gw *gw);
/* Removes every device (pending requests fail with -ECANCELED). */
struct gw_registry *gw_registry_free(struct gw_registry *reg);
void gw_registry_set_observer(struct gw_registry *reg,
			      const struct gw_registry_observer *obs,
			      void *user_data);

/*
 * Adds a device with its link (owned when owns_link, else borrowed, e.g.
 * from the BLE manager). id must be unique. The UDP port is taken from
 * pinned_port, else the store's port map, else 0 (the UDP face binds an
 * OS-chosen port and reports it with gw_device_set_udp_port()).
 */
struct gw_device *gw_registry_add(struct gw_registry *reg, const char *id,
				  const char *name, struct link *link,
				  bool owns_link, uint16_t pinned_port);
void gw_registry_remove(struct gw_registry *reg, struct gw_device *dev);

void gw_device_set_udp_port(struct gw_device *dev, uint16_t port);
/* BLE discovery: advertising seen (adv: the raw advertising JSON, new
 * reference or NULL, consumed; rec: the decoded smpgw record or NULL,
 * borrowed). Called per advertisement: last_seen, RSSI and the record move
 * in memory every time; the store is written (and device.seen emitted) at
 * most once a minute per watch, or when the record changed. */
void gw_device_seen(struct gw_device *dev, const char *name, int rssi,
		    json_t *adv, const struct smpgw_adv *rec);
/* BLE discovery: the device went away; emits device.lost. */
void gw_device_lost(struct gw_device *dev);
/* Restored from the store at start, not seen yet: no event. */
void gw_device_set_absent(struct gw_device *dev);
/* Counted by the UDP face: malformed datagrams it dropped. */
void gw_device_count_malformed(struct gw_device *dev);
struct link *gw_device_link(const struct gw_device *dev);
