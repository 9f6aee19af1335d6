/* SPDX-License-Identifier: MIT */
/*
 * GET /metrics (and /api/v1/metrics): the metrics registry in Prometheus
 * text format. Point-in-time gauges (devices by link state, images stored,
 * the per-watch fleet state, jobs by state, rollout devices by outcome)
 * are refreshed here, just before rendering; the counters come from the
 * registry, which counts at the link.
 *
 * Cardinality: per watch one info series, battery, RSSI and last-seen
 * when known, and three link-state series; jobs: one series per state;
 * rollouts: the unfinished ones and the MAX_FINISHED_ROLLOUTS most
 * recently finished, one series per outcome each.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cluster.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/jobs.h"
#include "gateway/metrics.h"
#include "gateway/rollouts.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

static void count_state(struct gw_device *dev, void *user_data)
{
	unsigned *n = user_data;

	switch (gw_device_link_state(dev)) {
	case LINK_STATE_DOWN:
		n[0]++;
		break;
	case LINK_STATE_CONNECTING:
		n[1]++;
		break;
	case LINK_STATE_UP:
		n[2]++;
		break;
	}
}

/* The registry counts frames, bytes, latency and errors as they happen
 * (src/gateway/registry/device.c); here every series of a transport in use
 * is made to exist, at 0 until something happens, so dashboards and alert
 * rules see the series from the start. */
static const char *const error_kinds[] = {
	"timeouts", "link_resets", "not_connected", "malformed_responses",
	"malformed_requests", "too_big", "dropped_responses", "timeout_resets",
};

static void zero_series(struct gw_device *dev, void *user_data)
{
	struct gw_metrics *m = user_data;
	const char *t = gw_device_transport(dev);
	char l[96];

	for (size_t i = 0; i < ARRAY_SIZE(error_kinds); i++) {
		snprintf(l, sizeof(l), "kind=\"%s\",transport=\"%s\"",
			 error_kinds[i], t);
		gw_metrics_add(m, GW_M_ERRORS, l, 0);
	}
	for (int rx = 0; rx < 2; rx++) {
		snprintf(l, sizeof(l), "transport=\"%s\",dir=\"%s\"", t,
			 rx ? "rx" : "tx");
		gw_metrics_add(m, GW_M_FRAMES, l, 0);
		gw_metrics_add(m, GW_M_BYTES, l, 0);
	}
}

/* ---- fleet state ---- */

#define MAX_FINISHED_ROLLOUTS 3

static const char *const fleet_gauges[] = {
	GW_M_DEV_INFO, GW_M_DEV_BATTERY, GW_M_DEV_RSSI, GW_M_DEV_SEEN, GW_M_DEV_LINK,
	GW_M_DEV_IN_RANGE,
	GW_M_JOBS, GW_M_ROLLOUT_DEVS,
};

static void set_dev(struct gw_metrics *m, const char *name, const char *dev_label,
		    const json_t *v, double scale)
{
	if (json_is_number(v))
		gw_metrics_set(m, name, dev_label, json_number_value(v) * scale);
}

/* One watch's series, from its typed JSON (the device model's view). */
static void device_series(struct gw_device *dev, void *user_data)
{
	static const char *const states[] = { "down", "connecting", "up" };
	struct gw_metrics *m = user_data;
	json_t *j = gw_device_to_json(dev);
	const char *ver = json_string_value(json_object_get(json_object_get(j, "firmware"),
							    "version"));
	char *id = gw_metrics_label_escape(gw_device_id(dev));
	char *name = gw_metrics_label_escape(gw_device_name(dev));
	/* a version the watch sent that does not parse is kept as sent */
	char *version = gw_metrics_label_escape(ver ? ver : "unknown");
	const char *link = link_state_str(gw_device_link_state(dev));
	char *l = xasprintf("device=\"%s\"", id);
	char *info = xasprintf("device=\"%s\",name=\"%s\",version=\"%s\"", id, name,
			       version);

	gw_metrics_set(m, GW_M_DEV_INFO, info, 1);
	set_dev(m, GW_M_DEV_BATTERY, l, json_object_get(j, "battery"), 1);
	set_dev(m, GW_M_DEV_RSSI, l, json_object_get(j, "rssi"), 1);
	set_dev(m, GW_M_DEV_SEEN, l, json_object_get(j, "last_seen"), 1e-3);
	gw_metrics_set(m, GW_M_DEV_IN_RANGE, l, json_is_true(json_object_get(j, "present")));
	for (size_t i = 0; i < ARRAY_SIZE(states); i++) {
		char *ls = xasprintf("device=\"%s\",state=\"%s\"", id, states[i]);

		gw_metrics_set(m, GW_M_DEV_LINK, ls, !strcmp(link, states[i]));
		free(ls);
	}
	free(info);
	free(l);
	free(version);
	free(name);
	free(id);
	json_decref(j);
}

/* Several gateways ([gateway] id): the jobs this gateway runs or ran (its
 * claim is on their rows); the store lists the whole fleet's. */
static void job_series(struct gw_metrics *m, struct gw_engine *eng, const char *me)
{
	json_t *jobs = gw_jobs_to_json(eng, NULL), *job;
	size_t i;
	char l[64];

	for (int st = GW_JOB_STATE_QUEUED; st <= GW_JOB_STATE_CANCELED; st++) {
		snprintf(l, sizeof(l), "state=\"%s\"", gw_job_state_str(st));
		gw_metrics_set(m, GW_M_JOBS, l, 0);
	}
	json_array_foreach(jobs, i, job) {
		const char *st = json_string_value(json_object_get(job, "state"));

		const char *runner = json_string_value(json_object_get(job, "runner"));

		if (!st || (me && (!runner || strcmp(runner, me))))
			continue;
		snprintf(l, sizeof(l), "state=\"%s\"", st);
		gw_metrics_set(m, GW_M_JOBS, l, gw_metrics_get(m, GW_M_JOBS, l) + 1);
	}
	json_decref(jobs);
}

/*
 * Several gateways ([gateway] id): every series says what this gateway
 * holds or does, so that Prometheus' sum over the gateways is the fleet
 * (docs/metrics.md, "Several gateways"). A fleet-wide series, one every
 * gateway could read from the store, is reported by one gateway only: a
 * rollout's by its scheduler, and what has no scheduler (a finished
 * rollout, one between its scheduler's death and a takeover, the shared
 * image directory) by the fleet reporter, the registry's first alive
 * gateway by id. Without the registry (the store away) nobody here is the
 * reporter: the others, still on the store, report.
 */
struct first_alive {
	const char *first;
	bool self;
};

static void first_alive_one(const struct gw_cluster_gateway *g, void *user_data)
{
	struct first_alive *f = user_data;

	if (g->alive && (!f->first || strcmp(g->id, f->first) < 0)) {
		f->first = g->id;
		f->self = g->self;
	}
}

static bool fleet_reporter(struct gw *gw)
{
	struct gw_cluster *c = gw_cluster(gw);
	struct first_alive f = { 0 };

	if (!c)
		return true; /* one gateway: it is the fleet */
	if (gw_cluster_gateways(c, NULL, first_alive_one, &f) < 0)
		return false;
	return f.self;
}

static void rollout_one(struct gw_metrics *m, const json_t *r)
{
	const char *rid = json_string_value(json_object_get(r, "id")), *k;
	char *id;
	json_t *v;

	if (!rid)
		return;
	id = gw_metrics_label_escape(rid);
	json_object_foreach(json_object_get(r, "totals"), k, v) {
		char *l;

		if (!strcmp(k, "total") || !json_is_integer(v))
			continue;
		l = xasprintf("rollout=\"%s\",outcome=\"%s\"", id, k);
		gw_metrics_set(m, GW_M_ROLLOUT_DEVS, l, (double)json_integer_value(v));
		free(l);
	}
	free(id);
}

static json_int_t finished_at(const json_t *r)
{
	return json_integer_value(json_object_get(r, "finished_ms"));
}

/* Several gateways: is this rollout's series this gateway's to report? */
static bool reports_rollout(const json_t *r, const char *me, bool reporter)
{
	const json_t *sched = json_object_get(r, "scheduler");

	if (!me)
		return true;
	return json_is_string(sched) ? !strcmp(json_string_value(sched), me) : reporter;
}

/* Unfinished rollouts, and the few most recently finished. */
static void rollout_series(struct gw_metrics *m, struct gw_rollouts *ro, const char *me,
			   bool reporter)
{
	json_t *list = gw_rollouts_list(ro), *r;
	json_int_t cut = 0, top[MAX_FINISHED_ROLLOUTS] = { 0 };
	size_t i;

	json_array_foreach(list, i, r) {
		json_int_t f = finished_at(r);

		for (size_t k = 0; f && k < MAX_FINISHED_ROLLOUTS; k++)
			if (f > top[k]) {
				json_int_t t = top[k];

				top[k] = f;
				f = t;
			}
	}
	cut = top[MAX_FINISHED_ROLLOUTS - 1];
	json_array_foreach(list, i, r)
		if ((!json_is_integer(json_object_get(r, "finished_ms")) ||
		     (finished_at(r) && finished_at(r) >= cut)) &&
		    reports_rollout(r, me, reporter))
			rollout_one(m, r);
	json_decref(list);
}

static void fleet_series(struct gw *gw, struct gw_metrics *m, bool reporter)
{
	for (size_t i = 0; i < ARRAY_SIZE(fleet_gauges); i++)
		gw_metrics_reset(m, fleet_gauges[i]);
	gw_device_foreach(gw, device_series, m);
	if (gw_engine(gw))
		job_series(m, gw_engine(gw), gw_config(gw)->gateway.id);
	if (gw_rollouts(gw))
		rollout_series(m, gw_rollouts(gw), gw_config(gw)->gateway.id, reporter);
}

int metrics_get(struct http_req *req)
{
	struct gw *gw = http_req_gw(req);
	struct gw_metrics *m = gw_metrics(gw);
	struct gw_images *im = http_server_images(http_req_server(req));
	unsigned n[3] = { 0 };
	bool reporter = fleet_reporter(gw);
	char *text;

	if (!m)
		return -ENOSYS;
	gw_device_foreach(gw, count_state, n);
	gw_metrics_set(m, GW_M_DEVICES, "state=\"down\"", n[0]);
	gw_metrics_set(m, GW_M_DEVICES, "state=\"connecting\"", n[1]);
	gw_metrics_set(m, GW_M_DEVICES, "state=\"up\"", n[2]);
	gw_metrics_reset(m, GW_M_IMAGES);
	if (im && reporter)
		gw_metrics_set(m, GW_M_IMAGES, NULL, (double)gw_images_count(im));
	gw_device_foreach(gw, zero_series, m);
	fleet_series(gw, m, reporter);
	text = gw_metrics_render(m);
	http_reply_buf(req, 200, "text/plain; version=0.0.4; charset=utf-8", text,
		       strlen(text));
	return 0;
}
