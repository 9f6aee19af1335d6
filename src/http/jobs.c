/* SPDX-License-Identifier: MIT */
/*
 * Update jobs over REST: POST /api/v1/devices/{id}/update queues a job
 * (an image from the image store onto one device, in a mode), and
 * /api/v1/jobs lists, describes and cancels them. The upload engine
 * (src/gateway/engine.c, jobs.h) does the work; see docs/updates.md.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/jobs.h"
#include "gateway/log.h"
#include "gateway/store.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

static struct gw_engine *engine(struct http_req *req)
{
	return gw_engine(http_req_gw(req));
}

static int parse_job_id(struct http_req *req, int64_t *ret)
{
	const char *s = http_req_param(req, "id");
	char *end;
	long long v;

	if (!s || !*s)
		return -EDOM;
	v = strtoll(s, &end, 10);
	if (*end || v <= 0)
		return -EDOM;
	*ret = v;
	return 0;
}

int dev_update(struct http_req *req)
{
	const char *dev_id = http_req_param(req, "id");
	json_t *body = http_req_json(req), *desc, *job;
	const char *image, *mode_s;
	enum gw_job_mode mode = GW_JOB_MODE_TEST_CONFIRM;
	struct gw_device *dev;
	int64_t id;

	if (!engine(req))
		return http_reply_problem(req, -ENOSYS, "the upload engine is not running"), 0;
	dev = gw_device_find(http_req_gw(req), dev_id);
	if (!dev && http_reply_held_elsewhere(req, dev_id))
		return 0;
	if (!dev)
		return http_reply_problem(req, -ENODEV, "no device '%s'", dev_id), 0;
	if (!json_is_object(body))
		return http_reply_problem(req, -EINVAL, "expected a JSON object "
					  "{\"image\": \"<sha256 hex>\", \"mode\": "
					  "\"test-confirm\"}"), 0;
	image = json_string_value(json_object_get(body, "image"));
	if (!image)
		return http_reply_problem(req, -EINVAL, "\"image\" (the image id from "
					  "GET /api/v1/images) is required"), 0;
	mode_s = json_string_value(json_object_get(body, "mode"));
	if (json_object_get(body, "mode") && gw_job_mode_parse(mode_s, &mode) < 0)
		return http_reply_problem(req, -EINVAL, "\"mode\" must be one of "
					  "test-confirm, test, upload, confirm"), 0;
	desc = gw_images_get(http_server_images(http_req_server(req)), image);
	if (!desc)
		return http_reply_problem(req, -ENOENT, "no image '%s' (ids are the "
					  "64-hex-digit SHA-256 from GET /api/v1/images)",
					  image), 0;
	json_decref(desc);
	id = gw_job_submit(engine(req), gw_device_id(dev), image, mode, NULL);
	if (id < 0)
		return http_reply_problem(req, (int)id, "cannot queue the job"), 0;
	job = gw_job_to_json(engine(req), id);
	http_reply_json(req, 202, job ? job : json_pack("{s:I}", "id", (json_int_t)id));
	return 0;
}

/* Several gateways: the jobs are read from the shared store; when it is
 * away the answer is 503 store-unavailable (server.c: a store call failed
 * during the request), not a partial list or a 404. */
#define STORE_DOWN "the shared store cannot be reached: the fleet's jobs are read from it"

int jobs_list(struct http_req *req)
{
	const char *dev = http_req_query(req, "device");
	struct gw_device *d = dev ? gw_device_find(http_req_gw(req), dev) : NULL;
	json_t *a;

	if (!engine(req))
		return http_reply_problem(req, -ENOSYS, "the upload engine is not running"), 0;
	/* A name is accepted as well as the device id. */
	a = gw_jobs_to_json(engine(req), d ? gw_device_id(d) : dev);
	if (!a)
		return http_reply_problem(req, -EHOSTDOWN, STORE_DOWN), 0;
	http_reply_json(req, 200, json_pack("{s:o, s:I}", "jobs", a, "count",
					    (json_int_t)json_array_size(a)));
	return 0;
}

int jobs_get(struct http_req *req)
{
	json_t *job;
	int64_t id;

	if (parse_job_id(req, &id) < 0)
		return http_reply_problem(req, -EDOM, "job ids are positive integers"), 0;
	job = gw_job_to_json(engine(req), id);
	if (!job)
		return http_reply_problem(req, -ENOENT, "no job %lld", (long long)id), 0;
	http_reply_json(req, 200, job);
	return 0;
}

int jobs_cancel(struct http_req *req)
{
	int64_t id;
	int r;

	if (parse_job_id(req, &id) < 0)
		return http_reply_problem(req, -EDOM, "job ids are positive integers"), 0;
	r = gw_job_cancel(engine(req), id);
	if (r == -ENOENT)
		return http_reply_problem(req, -ENOENT, "no job %lld", (long long)id), 0;
	if (r == -EALREADY)
		return http_reply_problem(req, -EBUSY, "job %lld has already finished",
					  (long long)id), 0;
	if (r == -EBUSY)
		return http_reply_problem(req, -EBUSY, "job %lld is confirming the image "
					  "on the watch; that cannot be undone",
					  (long long)id), 0;
	if (r < 0)
		return r;
	log_info("http: job %lld canceled", (long long)id);
	http_reply_json(req, 200, gw_job_to_json(engine(req), id));
	return 0;
}
