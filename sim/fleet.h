/* SPDX-License-Identifier: MIT */
/*
 * The simulated fleet: the fleet file (JSON: "defaults", "devices"
 * overrides, "count" + name pattern to generate many, "adapters"), parsed
 * into a spec, and the running fleet of devices built from it. Owns the
 * devices and the shared initial images (one copy per distinct file).
 * See docs/simulator.md for the file format.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"

struct event_base;
struct sim_fleet_spec;
struct sim_fleet;

#define SIM_FLEET_MAX_DEVICES 10000
#define SIM_FLEET_MAX_ADAPTERS 16
#define SIM_FLEET_MAX_BUSES 16        /* --bus NAME=ADDRESS: one fake org.bluez each */
#define SIM_FLEET_BUS_NAME_MAX 32

/*
 * Parses a fleet file (borrowed buffer). Returns 0 and a new spec, or
 * -EBADMSG with a one-line reason in err ("devices[3].link.phy: must be 1
 * or 2"); *ret untouched on failure.
 */
int sim_fleet_spec_parse(const uint8_t *buf, size_t len, struct sim_fleet_spec **ret,
			 char *err, size_t err_size);
/* A spec of n default devices (what --count N means). NULL if n is 0 or too big. */
struct sim_fleet_spec *sim_fleet_spec_new_count(unsigned n);
struct sim_fleet_spec *sim_fleet_spec_free(struct sim_fleet_spec *spec);
size_t sim_fleet_spec_count(const struct sim_fleet_spec *spec);
/* Overrides for every device (command line): UDP ports from base (0 = off),
 * serial on/off, the seed. */
void sim_fleet_spec_set_udp_base(struct sim_fleet_spec *spec, uint16_t base);
void sim_fleet_spec_set_serial(struct sim_fleet_spec *spec, bool on);
void sim_fleet_spec_set_seed(struct sim_fleet_spec *spec, uint64_t seed);

/*
 * Builds the devices. Relative image paths are looked up in image_dir (may
 * be NULL: current directory), then in the conformance images directory
 * compiled in. NULL with a reason in err when an image cannot be loaded.
 */
struct sim_fleet *sim_fleet_new(struct event_base *base, const struct sim_fleet_spec *spec,
				const char *image_dir, char *err, size_t err_size);
struct sim_fleet *sim_fleet_free(struct sim_fleet *fleet);

size_t sim_fleet_count(const struct sim_fleet *fleet);
struct sim_device *sim_fleet_device(const struct sim_fleet *fleet, size_t i);
/* By address (case-insensitive) or name; NULL if none. */
struct sim_device *sim_fleet_find(const struct sim_fleet *fleet, const char *key);
/* Index of dev in the fleet, or -ENOENT. */
int sim_fleet_index(const struct sim_fleet *fleet, const struct sim_device *dev);

/* Transport settings of device i from the spec: UDP port (0 = none), pty. */
uint16_t sim_fleet_udp_port(const struct sim_fleet *fleet, size_t i);
bool sim_fleet_serial(const struct sim_fleet *fleet, size_t i);

/* Simulated adapters (hci0, hci1, ...): one radio each. */
unsigned sim_fleet_adapter_count(const struct sim_fleet *fleet);
unsigned sim_fleet_adapter_max_connections(const struct sim_fleet *fleet, unsigned i);
/* "00:AA:01:00:00:00"-like controller address of adapter i. */
const char *sim_fleet_adapter_address(const struct sim_fleet *fleet, unsigned i);

/* The bus (gateway) adapter i belongs to (fleet key adapters[i].bus), NULL:
 * every bus has its own copy of it. */
const char *sim_fleet_adapter_bus(const struct sim_fleet *fleet, unsigned i);

/* A bus name: 1..SIM_FLEET_BUS_NAME_MAX of [A-Za-z0-9_.-]. */
bool sim_fleet_bus_name_valid(const char *name);

/*
 * Per-gateway radio visibility (fleet key "heard"): 1 and *rssi when bus
 * hears device i, 0 when it does not (out of that gateway's range), -ENOENT
 * when the watch has no "heard" map (or bus is NULL): every bus hears it at
 * its own advertised RSSI.
 */
int sim_fleet_heard(const struct sim_fleet *fleet, size_t i, const char *bus, int *rssi);
/* Centrals device i accepts at once (fleet key "centrals", default 1, like
 * a PineTime: it stops advertising while connected), and the links it has
 * now over every bus (kept by the BLE faces). */
unsigned sim_fleet_centrals(const struct sim_fleet *fleet, size_t i);
unsigned sim_fleet_links(const struct sim_fleet *fleet, size_t i);
void sim_fleet_link_add(struct sim_fleet *fleet, size_t i, int delta);
/* Every bus named by an adapter or a "heard" map is among names, and every
 * name has an adapter; else -EINVAL with the reason in err. */
int sim_fleet_check_buses(const struct sim_fleet *fleet, const char *const *names, size_t n,
			  char *err, size_t err_size);

/* Memory held privately by all slots (copy-on-write accounting). */
size_t sim_fleet_private_bytes(const struct sim_fleet *fleet);

/* Applies a JSON object of link model fields (a jansson json_t, as in the
 * fleet file's "link") onto m. 0, or -EBADMSG with the reason in err. */
struct json_t;
int sim_fleet_parse_link(const struct json_t *o, struct sim_link_model *m, char *err,
			 size_t err_size);
