/* SPDX-License-Identifier: MIT */
/* Metrics registry: Prometheus text exposition format. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/metrics.h"
#include "tap.h"

static void collect(struct gw_metrics *m, void *user_data)
{
	int *calls = user_data;

	(*calls)++;
	gw_metrics_reset(m, GW_M_DEVICES);
	gw_metrics_set(m, GW_M_DEVICES, "state=\"up\"", 3);
}

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)); p += n)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

int main(void)
{
	struct gw_metrics *m = gw_metrics_new();
	int calls = 0;
	char *text, *esc;
	unsigned id;

	gw_metrics_add(m, GW_M_FRAMES, "transport=\"udp\",dir=\"tx\"", 2);
	gw_metrics_inc(m, GW_M_FRAMES, "transport=\"udp\",dir=\"tx\"");
	gw_metrics_inc(m, GW_M_ERRORS, "kind=\"timeout\"");
	gw_metrics_add(m, GW_M_ERRORS, "kind=\"timeout\"", -5); /* ignored */
	gw_metrics_observe(m, GW_M_REQ_LATENCY, "transport=\"udp\"", 0.003);
	gw_metrics_observe(m, GW_M_REQ_LATENCY, "transport=\"udp\"", 0.2);
	gw_metrics_observe(m, GW_M_REQ_LATENCY, "transport=\"udp\"", 100);
	gw_metrics_set(m, "custom_gauge", NULL, 1.5);
	gw_metrics_inc(m, "custom_gauge", NULL); /* type clash: ignored */
	gw_metrics_inc(m, "bad name", NULL);     /* invalid: ignored */
	id = gw_metrics_add_collector(m, collect, &calls);

	is_int(gw_metrics_get(m, GW_M_FRAMES, "transport=\"udp\",dir=\"tx\""), 3,
	       "counter value");
	is_int(gw_metrics_get(m, GW_M_ERRORS, "kind=\"timeout\""), 1,
	       "negative add ignored");
	is_int(gw_metrics_define(m, "custom_gauge", GW_METRIC_COUNTER, "x", NULL, 0),
	       -EEXIST, "define with another type");
	is_int(gw_metrics_define(m, "9x", GW_METRIC_COUNTER, "x", NULL, 0),
	       -EINVAL, "invalid name");
	double b[] = { 2, 1 };
	is_int(gw_metrics_define(m, "h", GW_METRIC_HISTOGRAM, "x", b, 2), -EINVAL,
	       "buckets must ascend");

	text = gw_metrics_render(m);
	is_int(calls, 1, "collector ran");
	ok(has_line(text, "# TYPE smpgw_frames_total counter"), "TYPE line");
	ok(has_line(text, "# HELP smpgw_frames_total SMP frames per transport and direction."),
	   "HELP line");
	ok(has_line(text, "smpgw_frames_total{transport=\"udp\",dir=\"tx\"} 3"),
	   "counter sample");
	ok(has_line(text, "# TYPE smpgw_request_duration_seconds histogram"),
	   "histogram type");
	ok(has_line(text, "smpgw_request_duration_seconds_bucket{transport=\"udp\",le=\"0.005\"} 1"),
	   "first bucket");
	ok(has_line(text, "smpgw_request_duration_seconds_bucket{transport=\"udp\",le=\"0.25\"} 2"),
	   "buckets are cumulative");
	ok(has_line(text, "smpgw_request_duration_seconds_bucket{transport=\"udp\",le=\"+Inf\"} 3"),
	   "+Inf bucket");
	ok(has_line(text, "smpgw_request_duration_seconds_count{transport=\"udp\"} 3"),
	   "count");
	ok(has_line(text, "smpgw_request_duration_seconds_sum{transport=\"udp\"} 100.203"),
	   "sum");
	ok(has_line(text, "custom_gauge 1.5"), "gauge without labels");
	ok(has_line(text, "smpgw_devices{state=\"up\"} 3"), "collected gauge");
	ok(!strstr(text, "bad name"), "invalid name not rendered");
	free(text);

	gw_metrics_remove_collector(m, id);
	text = gw_metrics_render(m);
	is_int(calls, 1, "removed collector does not run");
	free(text);

	gw_metrics_counter_set(m, GW_M_FRAMES, "transport=\"ble\",dir=\"rx\"", 7);
	is_int(gw_metrics_get(m, GW_M_FRAMES, "transport=\"ble\",dir=\"rx\""), 7,
	       "counter mirrored from elsewhere");
	gw_metrics_counter_set(m, "custom_gauge", NULL, 3); /* type clash: ignored */
	ok(gw_metrics_get(m, "custom_gauge", NULL) == 1.5, "gauge untouched");

	esc = gw_metrics_label_escape("a\"b\\c\nd");
	is_str(esc, "a\\\"b\\\\c\\nd", "label escape");
	free(esc);
	gw_metrics_free(m);
	ok(gw_metrics_free(NULL) == NULL, "free(NULL)");
	return tap_done();
}
