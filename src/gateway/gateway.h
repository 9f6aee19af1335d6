/* SPDX-License-Identifier: MIT */
/*
 * The daemon context: one per smpgwd process, passed explicitly to every
 * module. Owns the event base (borrowed), configuration, event bus, store,
 * metrics and the device registry.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct gw;
struct gw_config;
struct gw_events;
struct gw_store;
struct gw_metrics;

struct event_base *gw_base(struct gw *gw);
const struct gw_config *gw_config(struct gw *gw);
struct gw_events *gw_events(struct gw *gw);
struct gw_store *gw_store(struct gw *gw);
struct gw_metrics *gw_metrics(struct gw *gw);
/* Wall clock in ms since the epoch; tests may inject an offset. */
uint64_t gw_now_ms(struct gw *gw);

/*
 * Construction (smpgwd's main and the tests). cfg and store are consumed
 * (store may be NULL: no persistence, ports from the configured base
 * without memory across restarts). Creates the event bus and the device
 * registry.
 */
struct gw *gw_new(struct event_base *base, struct gw_config *cfg,
		  struct gw_store *store);
/* Fails every pending request with -ECANCELED, frees devices, store,
 * config and bus. Accepts NULL; returns NULL. */
struct gw *gw_free(struct gw *gw);
/* Removes every device now (their device.removed events), as gw_free
 * would: for a clean stop whose last events must still reach the other
 * gateways before the cluster goes. No device may be looked up after. */
void gw_remove_devices(struct gw *gw);
/* The metrics module (owned by src/http/) registers itself here; NULL
 * until then. Borrowed. */
void gw_set_metrics(struct gw *gw, struct gw_metrics *metrics);
/* The upload engine (src/gateway/engine.c) registers itself here so the
 * REST API and the rollouts find it; NULL until then. Borrowed. */
struct gw_engine;
void gw_set_engine(struct gw *gw, struct gw_engine *engine);
struct gw_engine *gw_engine(struct gw *gw);
/* Several gateways (src/gateway/cluster.c) registers itself the same way;
 * NULL with one gateway. */
struct gw_cluster;
void gw_set_cluster(struct gw *gw, struct gw_cluster *cluster);
struct gw_cluster *gw_cluster(struct gw *gw);
/* The rollout scheduler (src/gateway/rollouts.c) registers itself here so
 * the REST API finds it; NULL until then. Borrowed. */
struct gw_rollouts;
void gw_set_rollouts(struct gw *gw, struct gw_rollouts *rollouts);
struct gw_rollouts *gw_rollouts(struct gw *gw);
/* Tests: shift gw_now_ms() by offset_ms. */
void gw_set_time_offset(struct gw *gw, int64_t offset_ms);
/*
 * SIGHUP: replaces the [device] list by new_cfg's (consumed); devices no
 * longer declared are removed (their requests fail with -ECANCELED), new
 * ones are added, unchanged ones keep their links. Other settings are
 * kept as they were at start.
 */
int gw_reload_devices(struct gw *gw, struct gw_config *new_cfg);
/* Registers the UDP and serial devices of the config's [device]
 * sections (BLE sections only pin ports). */
void gw_add_config_devices(struct gw *gw);
/* Leases (docs/multi-gateway.md): with admit set, a UDP/serial [device] is
 * registered (endpoint, jobs) only while admit(name) says so; call
 * gw_add_config_devices() when one is newly admitted and
 * gw_release_config_device() when one no longer is (why: for the log). */
typedef bool (*gw_admit_fn)(const char *name, void *user_data);
void gw_set_config_admit(struct gw *gw, gw_admit_fn admit, void *user_data);
void gw_release_config_device(struct gw *gw, const char *name, const char *why);
