/* SPDX-License-Identifier: MIT */
/*
 * The daemon context: one per smpgwd process, passed explicitly to every
 * module. Owns the event base (borrowed), configuration, event bus, store,
 * metrics and the device registry.
 */
#pragma once

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
