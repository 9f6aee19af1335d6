/* SPDX-License-Identifier: MIT */
/*
 * /api/v1/rollouts: create a rollout (an image onto a fleet in waves,
 * inside a nightly window), list and describe them, pause, resume, cancel,
 * retry the failed devices, and read the report (JSON, or text for people
 * with ?format=text or /report.txt). The scheduler (gateway/rollouts.c)
 * commits every change before these handlers answer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/log.h"
#include "gateway/rollouts.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

static struct gw_rollouts *sched(struct http_req *req)
{
	return gw_rollouts(http_req_gw(req));
}

static int no_scheduler(struct http_req *req)
{
	http_reply_problem(req, -ENOSYS, "this smpgwd runs without the rollout scheduler");
	return 0;
}

static int not_found(struct http_req *req, const char *id)
{
	http_reply_problem(req, -ENOENT, "no rollout '%s' (see GET /api/v1/rollouts)", id);
	return 0;
}

int rollouts_create(struct http_req *req)
{
	json_t *body = http_req_json(req), *image, *out = NULL;
	const char *image_id = json_string_value(json_object_get(body, "image"));
	char *msg = NULL;
	int r;

	if (!sched(req))
		return no_scheduler(req);
	if (!body)
		return http_reply_problem(req, -EINVAL, "send the rollout as a JSON "
					  "object: {\"image\": ID, \"target\": \"all\", ...} "
					  "(docs/rollouts.md)"), 0;
	if (!image_id)
		return http_reply_problem(req, -EINVAL, "\"image\" must be the id of a "
					  "stored image (GET /api/v1/images)"), 0;
	image = gw_images_get(http_server_images(http_req_server(req)), image_id);
	if (!image)
		return http_reply_problem(req, -EINVAL, "no image '%s' in the store "
					  "(upload it first: POST /api/v1/images)",
					  image_id), 0;
	r = gw_rollout_create(sched(req), body, image, &out, &msg);
	json_decref(image);
	if (r < 0) {
		/* An unknown device or an empty target is a bad request body. */
		http_reply_problem(req, r == -ENODEV || r == -ENOENT ? -EINVAL : r,
				   "%s", msg ? msg : "cannot create the rollout");
		free(msg);
		return 0;
	}
	log_info("http: rollout %s created", json_string_value(json_object_get(out, "id")));
	http_reply_json(req, 201, out);
	return 0;
}

int rollouts_list(struct http_req *req)
{
	json_t *a;

	if (!sched(req))
		return no_scheduler(req);
	a = gw_rollouts_list(sched(req));
	http_reply_json(req, 200, json_pack("{s:o, s:I}", "rollouts", a, "count",
					    (json_int_t)json_array_size(a)));
	return 0;
}

int rollouts_get(struct http_req *req)
{
	const char *id = http_req_param(req, "id");
	json_t *o;

	if (!sched(req))
		return no_scheduler(req);
	o = gw_rollout_get(sched(req), id);
	if (!o)
		return not_found(req, id);
	http_reply_json(req, 200, o);
	return 0;
}

typedef int (*action_fn)(struct gw_rollouts *ro, const char *id, char **errmsg);

/* Runs a person's action, then answers with the rollout as it now is. */
static int action(struct http_req *req, action_fn fn)
{
	const char *id = http_req_param(req, "id");
	char *msg = NULL;
	int r;

	if (!sched(req))
		return no_scheduler(req);
	r = fn(sched(req), id, &msg);
	if (r == -ENOENT)
		return not_found(req, id);
	if (r < 0) {
		http_reply_problem(req, r, "%s", msg ? msg : strerror(-r));
		free(msg);
		return 0;
	}
	/* 1: asked of the gateway that schedules it (several gateways). */
	http_reply_json(req, r > 0 ? 202 : 200, gw_rollout_get(sched(req), id));
	return 0;
}

int rollouts_pause(struct http_req *req)
{
	return action(req, gw_rollout_pause);
}

int rollouts_resume(struct http_req *req)
{
	return action(req, gw_rollout_resume);
}

int rollouts_cancel(struct http_req *req)
{
	return action(req, gw_rollout_cancel);
}

int rollouts_retry_failed(struct http_req *req)
{
	return action(req, gw_rollout_retry_failed);
}

static int report_text(struct http_req *req, const char *id)
{
	char *text = gw_rollout_report_text(sched(req), id);

	if (!text)
		return not_found(req, id);
	http_reply_buf(req, 200, "text/plain; charset=utf-8", text, strlen(text));
	return 0;
}

int rollouts_report(struct http_req *req)
{
	const char *id = http_req_param(req, "id");
	const char *fmt = http_req_query(req, "format");
	json_t *o;

	if (!sched(req))
		return no_scheduler(req);
	if (fmt && !strcmp(fmt, "text"))
		return report_text(req, id);
	if (fmt && strcmp(fmt, "json"))
		return http_reply_problem(req, -EDOM, "format must be json or text"), 0;
	o = gw_rollout_report(sched(req), id);
	if (!o)
		return not_found(req, id);
	http_reply_json(req, 200, o);
	return 0;
}

int rollouts_report_txt(struct http_req *req)
{
	if (!sched(req))
		return no_scheduler(req);
	return report_text(req, http_req_param(req, "id"));
}
