/* SPDX-License-Identifier: MIT */
/*
 * GET /metrics (and /api/v1/metrics): the metrics registry in Prometheus
 * text format. Point-in-time gauges (devices by link state, images stored)
 * are refreshed here, just before rendering; the counters come from the
 * registry, which counts at the link.
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
	gw_device_foreach(gw, zero_series, m);
	text = gw_metrics_render(m);
	http_reply_buf(req, 200, "text/plain; version=0.0.4; charset=utf-8", text,
		       strlen(text));
	return 0;
}
