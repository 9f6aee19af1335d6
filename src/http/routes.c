/* SPDX-License-Identifier: MIT */
/*
 * The route table and its matcher.
 *
 * HOW TO ADD A RESOURCE (e.g. jobs):
 *   1. Write src/http/jobs.c with handlers `int jobs_list(struct http_req *)`
 *      following http.h (reply with http_reply_*(), or return a negative
 *      errno, or HTTP_PENDING for asynchronous work with an abort hook).
 *   2. Declare the handlers in a new block of handlers.h.
 *   3. Add one row per method+path below (paths use {name} for a segment,
 *      read with http_req_param(req, "name")); mark routes that change state
 *      HTTP_ROUTE_WRITE if they are GETs (POST/PUT/DELETE always need the
 *      token), and pick the body kind (HTTP_BODY_JSON for JSON requests).
 *   4. Add jobs.c to http_sources in src/http/meson.build.
 *   5. Describe every new path+method in docs/openapi.json: the unit test
 *      test-http-openapi checks the table and the document match exactly.
 * Errors: return/reply a negative errno; errors.c maps it to a status.
 */
#include "http/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http/handlers.h"
#include "util/util.h"

#define GET HTTP_GET
#define POST HTTP_POST
#define PUT HTTP_PUT
#define DELETE HTTP_DELETE
#define NONE HTTP_BODY_NONE
#define JSON HTTP_BODY_JSON
#define FILE_ HTTP_BODY_FILE
#define DEV "/api/v1/devices/{id}"
#define RO "/api/v1/rollouts/{id}"

const struct route http_routes[] = {
	/* devices.c */
	{ GET, "/api/v1/devices", devices_list, NONE, 0, "List devices" },
	{ GET, DEV, devices_get, NONE, 0, "Describe one device" },
	{ POST, DEV "/echo", dev_echo, JSON, 0, "Echo a string" },
	{ POST, DEV "/reset", dev_reset, JSON, 0, "Reset the device" },
	{ GET, DEV "/image-state", dev_image_state, NONE, 0, "Read image slots" },
	{ POST, DEV "/image-state/test", dev_image_test, JSON, 0,
	  "Mark an image for test on next boot" },
	{ POST, DEV "/image-state/confirm", dev_image_confirm, JSON, 0,
	  "Confirm an image (default: the running one)" },
	{ POST, DEV "/erase", dev_erase, JSON, 0, "Erase the secondary slot" },
	{ GET, DEV "/params", dev_params, NONE, 0, "Read SMP buffer parameters" },
	{ GET, DEV "/info", dev_info, NONE, 0, "Read OS/application info" },
	{ GET, DEV "/datetime", dev_datetime_get, NONE, 0, "Read the clock" },
	{ POST, DEV "/datetime", dev_datetime_set, JSON, 0, "Set the clock" },
	{ GET, DEV "/stats", dev_stats_list, NONE, 0, "List statistics groups" },
	{ GET, DEV "/stats/{name}", dev_stats_get, NONE, 0,
	  "Read one statistics group" },
	/* smp.c */
	{ POST, DEV "/smp", dev_smp, JSON, 0, "Send any SMP request" },
	/* images.c */
	{ GET, "/api/v1/images", images_list, NONE, 0, "List stored images" },
	{ POST | PUT, "/api/v1/images", images_upload, FILE_, 0,
	  "Upload an MCUboot image (raw body or multipart/form-data)" },
	{ GET, "/api/v1/images/{id}", images_get, NONE, 0, "Describe one image" },
	/* {id} is the file name here: one template per path (OpenAPI). */
	{ PUT, "/api/v1/images/{id}", images_put, FILE_, 0,
	  "Upload an MCUboot image under its file name (curl -T f .../images/)" },
	{ DELETE, "/api/v1/images/{id}", images_delete, NONE, 0,
	  "Delete an image" },
	/* jobs.c */
	{ POST, DEV "/update", dev_update, JSON, 0,
	  "Queue an update job (image, mode)" },
	{ GET, "/api/v1/jobs", jobs_list, NONE, 0, "List update jobs" },
	{ GET, "/api/v1/jobs/{id}", jobs_get, NONE, 0, "Describe one job" },
	{ DELETE, "/api/v1/jobs/{id}", jobs_cancel, NONE, 0, "Cancel a job" },
	/* rollouts.c */
	{ POST, "/api/v1/rollouts", rollouts_create, JSON, 0,
	  "Create a rollout (image, target, waves, window, stop rules)" },
	{ GET, "/api/v1/rollouts", rollouts_list, NONE, 0, "List rollouts" },
	{ GET, RO, rollouts_get, NONE, 0, "Describe one rollout and its devices" },
	{ POST, RO "/pause", rollouts_pause, JSON, 0, "Pause a rollout" },
	{ POST, RO "/resume", rollouts_resume, JSON, 0,
	  "Resume a paused rollout (acknowledges its failures)" },
	{ POST, RO "/cancel", rollouts_cancel, JSON, 0, "Cancel a rollout" },
	{ POST, RO "/retry-failed", rollouts_retry_failed, JSON, 0,
	  "Try the failed devices of a rollout again" },
	{ GET, RO "/report", rollouts_report, NONE, 0,
	  "Rollout report (JSON; ?format=text for people)" },
	{ GET, RO "/report.txt", rollouts_report_txt, NONE, 0,
	  "Rollout report as text" },
	/* events.c */
	{ GET, "/api/v1/events", events_stream, NONE, 0,
	  "Server-sent events (Last-Event-ID resume)" },
	{ GET, "/api/v1/events/recent", events_recent, NONE, 0,
	  "Recent events from the history" },
	/* cluster.c */
	{ GET, "/api/v1/gateways", gateways_list, NONE, 0,
	  "The gateways sharing this store (several gateways)" },
	/* metrics.c */
	{ GET, "/api/v1/metrics", metrics_get, NONE, 0, "Prometheus metrics" },
	{ GET, "/metrics", metrics_get, NONE, 0, "Prometheus metrics" },
	/* openapi.c */
	{ GET, "/api/v1/openapi.json", openapi_get, NONE, 0,
	  "This API as OpenAPI 3" },
	/* static.c */
	{ GET, "/", static_index, NONE, HTTP_ROUTE_PUBLIC, "Dashboard" },
	{ GET, "/static/{file}", static_file, NONE, HTTP_ROUTE_PUBLIC,
	  "Dashboard assets" },
};
const size_t http_routes_len = ARRAY_SIZE(http_routes);

const char *http_method_str(unsigned method)
{
	switch (method) {
	case HTTP_GET:
		return "GET";
	case HTTP_POST:
		return "POST";
	case HTTP_PUT:
		return "PUT";
	case HTTP_DELETE:
		return "DELETE";
	default:
		return "?";
	}
}

void http_match_clear(struct http_match *m)
{
	for (size_t i = 0; i < m->nparams; i++)
		free(m->values[i]);
	memset(m, 0, sizeof(*m));
}

/* Matches path against one pattern segment by segment; fills m. */
static bool match_one(const char *pat, const char *path, struct http_match *m)
{
	struct http_match tmp = { 0 };

	while (*pat && *path) {
		if (*pat != '/' || *path != '/')
			goto fail;
		pat++, path++;
		const char *pe = strchrnul(pat, '/'), *se = strchrnul(path, '/');

		if (*pat == '{') {
			if (se == path || tmp.nparams == HTTP_MAX_PARAMS)
				goto fail;
			tmp.names[tmp.nparams] = pat + 1;
			tmp.values[tmp.nparams++] = xstrndup(path, (size_t)(se - path));
		} else if (pe - pat != se - path || memcmp(pat, path, (size_t)(pe - pat))) {
			goto fail;
		}
		pat = pe, path = se;
	}
	if (*pat || *path)
		goto fail;
	*m = tmp;
	return true;
fail:
	http_match_clear(&tmp);
	return false;
}

int http_route_match(const char *path, unsigned method, struct http_match *ret,
		     unsigned *allow)
{
	unsigned allowed = 0;

	for (size_t i = 0; i < http_routes_len; i++) {
		const struct route *r = &http_routes[i];
		struct http_match m;

		if (!match_one(r->path, path, &m))
			continue;
		if (r->methods & method) {
			m.route = r;
			*ret = m;
			return 0;
		}
		allowed |= r->methods;
		http_match_clear(&m);
	}
	if (allow)
		*allow = allowed;
	return allowed ? -EOPNOTSUPP : -ENOENT;
}
