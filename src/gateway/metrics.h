/* SPDX-License-Identifier: MIT */
/*
 * Metrics registry: counters, gauges and histograms, each a family with a
 * name, a help line and any number of label sets, rendered in the
 * Prometheus text exposition format (version 0.0.4) by GET /metrics.
 *
 * Any module may increment: families are created on first use with the
 * type and help of the well-known names below (or "untyped" help for
 * others), so callers never need a registration step. Labels are given as
 * one preformatted string of Prometheus label pairs without braces, e.g.
 * "transport=\"ble\",dir=\"tx\"", or NULL/"" for none; label values must
 * already be escaped (use gw_metrics_label_escape() for user data).
 *
 * Collectors registered with gw_metrics_add_collector() run just before
 * rendering so point-in-time gauges (devices by state) are always fresh.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct gw_metrics;

enum gw_metric_type {
	GW_METRIC_COUNTER = 0,
	GW_METRIC_GAUGE,
	GW_METRIC_HISTOGRAM,
};

/* Well-known families (names are part of the API; see docs/rest-api.md). */
#define GW_M_FRAMES        "smpgw_frames_total"          /* transport, dir */
#define GW_M_BYTES         "smpgw_bytes_total"           /* transport, dir */
#define GW_M_REQ_LATENCY   "smpgw_request_duration_seconds" /* histogram; transport */
#define GW_M_UPLOAD_BYTES  "smpgw_upload_bytes_total"    /* bytes of image sent */
#define GW_M_UPLOAD_RATE   "smpgw_upload_throughput_bytes_per_second" /* histogram */
#define GW_M_UPLOAD_LOSSES "smpgw_upload_lost_frames_total" /* transport */
#define GW_M_ERRORS        "smpgw_errors_total"          /* kind */
#define GW_M_DEVICES       "smpgw_devices"               /* gauge; state */
#define GW_M_HTTP_REQS     "smpgw_http_requests_total"   /* method, code */
#define GW_M_HTTP_LATENCY  "smpgw_http_request_duration_seconds" /* histogram */
#define GW_M_SSE_CLIENTS   "smpgw_sse_clients"           /* gauge */
#define GW_M_IMAGES        "smpgw_images"                /* gauge */
/* Fleet state, one series (or one per state) per managed watch: labels
 * device (the id) and, for info, name and version (canonical firmware
 * version, "unknown" when nothing is known). */
#define GW_M_DEV_INFO      "smpgw_device_info"           /* gauge 1; device, name, version */
#define GW_M_DEV_BATTERY   "smpgw_device_battery_percent" /* gauge; device (known only) */
#define GW_M_DEV_RSSI      "smpgw_device_rssi_dbm"       /* gauge; device (known only) */
#define GW_M_DEV_SEEN      "smpgw_device_last_seen_timestamp_seconds" /* gauge; device */
#define GW_M_DEV_LINK      "smpgw_device_link_state"     /* gauge 0/1; device, state */
#define GW_M_DEV_IN_RANGE  "smpgw_device_in_range"       /* gauge 0/1; device */
#define GW_M_JOBS          "smpgw_jobs"                  /* gauge; state */
#define GW_M_ROLLOUT_DEVS  "smpgw_rollout_devices"       /* gauge; rollout, outcome */

struct gw_metrics *gw_metrics_new(void);
struct gw_metrics *gw_metrics_free(struct gw_metrics *m);

/*
 * Declares a family explicitly (optional for the well-known names).
 * buckets: ascending upper bounds for histograms (copied), NULL for the
 * default latency buckets. Returns 0, or -EEXIST if the name exists with
 * another type, -EINVAL on a name Prometheus would reject.
 */
int gw_metrics_define(struct gw_metrics *m, const char *name,
		      enum gw_metric_type type, const char *help,
		      const double *buckets, size_t nbuckets);

/* Counter += v (v >= 0). */
void gw_metrics_add(struct gw_metrics *m, const char *name,
		    const char *labels, double v);
static inline void gw_metrics_inc(struct gw_metrics *m, const char *name,
				  const char *labels)
{
	gw_metrics_add(m, name, labels, 1);
}
/* Counter = v, for collectors that mirror a count kept elsewhere (e.g.
 * per-device counters summed per transport); ignored if v would go down
 * while the source is steady, never checked. */
void gw_metrics_counter_set(struct gw_metrics *m, const char *name,
			    const char *labels, double v);
/* Gauge = v. */
void gw_metrics_set(struct gw_metrics *m, const char *name,
		    const char *labels, double v);
/* Drops every label set of a gauge family (before a collector refills it). */
void gw_metrics_reset(struct gw_metrics *m, const char *name);
/* Histogram observation. */
void gw_metrics_observe(struct gw_metrics *m, const char *name,
			const char *labels, double v);

/* Current value of a counter/gauge (0 if absent); for tests and jobs. */
double gw_metrics_get(const struct gw_metrics *m, const char *name,
		      const char *labels);

typedef void (*gw_metrics_collect_cb)(struct gw_metrics *m, void *user_data);
/* Returns a non-zero id for gw_metrics_remove_collector(). */
unsigned gw_metrics_add_collector(struct gw_metrics *m,
				  gw_metrics_collect_cb cb, void *user_data);
void gw_metrics_remove_collector(struct gw_metrics *m, unsigned id);

/* Prometheus text format; runs the collectors first. New string (free()). */
char *gw_metrics_render(struct gw_metrics *m);

/* Escapes \, " and newline for use inside a label value. New string. */
char *gw_metrics_label_escape(const char *value);
