/* SPDX-License-Identifier: MIT */
/*
 * GET /metrics (and /api/v1/metrics): the metrics registry in Prometheus
 * text format. Point-in-time gauges (devices by link state, images stored)
 * are refreshed here, just before rendering, and the per-device request
 * counters the registry keeps are summed per transport into frames and
 * errors by kind.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/metrics.h"
#include "http/handlers.h"
#include "http/http.h"

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

/* Per-transport sums of the devices' counters (gw_device_to_json). */
struct sums {
	char transport[16];
	double v[8];
};

static const char *const sum_keys[] = {
	"requests", "responses", "timeouts", "link_resets", "not_connected",
	"malformed_responses", "too_big", "dropped_responses",
};

struct sum_ctx {
	struct sums t[4];
	size_t n;
};

static void sum_device(struct gw_device *dev, void *user_data)
{
	struct sum_ctx *c = user_data;
	const char *tr = gw_device_transport(dev);
	json_t *j = gw_device_to_json(dev), *cnt = json_object_get(j, "counters");
	size_t i;

	for (i = 0; i < c->n && strcmp(c->t[i].transport, tr); i++)
		;
	if (i == c->n) {
		if (c->n == 4)
			goto out;
		snprintf(c->t[c->n++].transport, sizeof(c->t[0].transport), "%s", tr);
	}
	for (size_t k = 0; k < 8; k++)
		c->t[i].v[k] += (double)json_integer_value(json_object_get(cnt, sum_keys[k]));
out:
	json_decref(j);
}

static void export_sums(struct gw_metrics *m, struct gw *gw)
{
	struct sum_ctx c = { 0 };
	char l[96];

	gw_device_foreach(gw, sum_device, &c);
	for (size_t i = 0; i < c.n; i++) {
		const char *t = c.t[i].transport;

		snprintf(l, sizeof(l), "transport=\"%s\",dir=\"tx\"", t);
		gw_metrics_counter_set(m, GW_M_FRAMES, l, c.t[i].v[0]);
		snprintf(l, sizeof(l), "transport=\"%s\",dir=\"rx\"", t);
		gw_metrics_counter_set(m, GW_M_FRAMES, l, c.t[i].v[1]);
		for (size_t k = 2; k < 8; k++) {
			snprintf(l, sizeof(l), "kind=\"%s\",transport=\"%s\"",
				 sum_keys[k], t);
			gw_metrics_counter_set(m, GW_M_ERRORS, l, c.t[i].v[k]);
		}
	}
}

int metrics_get(struct http_req *req)
{
	struct gw *gw = http_req_gw(req);
	struct gw_metrics *m = gw_metrics(gw);
	struct gw_images *im = http_server_images(http_req_server(req));
	unsigned n[3] = { 0 };
	char *text;

	if (!m)
		return -ENOSYS;
	gw_device_foreach(gw, count_state, n);
	gw_metrics_set(m, GW_M_DEVICES, "state=\"down\"", n[0]);
	gw_metrics_set(m, GW_M_DEVICES, "state=\"connecting\"", n[1]);
	gw_metrics_set(m, GW_M_DEVICES, "state=\"up\"", n[2]);
	if (im)
		gw_metrics_set(m, GW_M_IMAGES, NULL, (double)gw_images_count(im));
	export_sums(m, gw);
	text = gw_metrics_render(m);
	http_reply_buf(req, 200, "text/plain; version=0.0.4; charset=utf-8", text,
		       strlen(text));
	return 0;
}
