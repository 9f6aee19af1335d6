/* SPDX-License-Identifier: MIT */
/*
 * Update jobs: one image onto one device in a mode. Jobs queue per device
 * and run one at a time per device, many devices at once (bounded per
 * adapter). Every job is durable in the store before gw_job_submit()
 * returns; after a restart each unfinished job resumes or is reported.
 *
 * CONTRACT between the upload engine (engine.c), the REST API (http/jobs.c)
 * and the rollout scheduler (rollouts.c).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct gw;
struct gw_engine;

enum gw_job_mode {
	GW_JOB_MODE_UPLOAD = 0,       /* upload only */
	GW_JOB_MODE_TEST,             /* upload, mark test, reset, verify booted */
	GW_JOB_MODE_TEST_CONFIRM,     /* ... then confirm (default) */
	GW_JOB_MODE_CONFIRM,          /* confirm the image already running */
};

enum gw_job_state {
	GW_JOB_STATE_QUEUED = 0,
	GW_JOB_STATE_RUNNING,   /* see "phase" for the step */
	GW_JOB_STATE_DONE,      /* success */
	GW_JOB_STATE_FAILED,    /* see "error" */
	GW_JOB_STATE_ROLLED_BACK, /* watch came back on its old image */
	GW_JOB_STATE_LOST,      /* watch never came back in time */
	GW_JOB_STATE_CANCELED,
};

/* Final result, reported once per job to the submitter's callback (if any)
 * and always as a "job.result" event. */
typedef void (*gw_job_done_cb)(int64_t job_id, enum gw_job_state state,
			       const char *error, void *user_data);

struct gw_job_opts {
	const char *rollout_id;  /* NULL for ad-hoc jobs */
	gw_job_done_cb done;     /* may be NULL */
	void *user_data;
};

struct gw_engine *gw_engine_new(struct gw *gw, int *err);
struct gw_engine *gw_engine_free(struct gw_engine *engine);

/* Queues a job for device_id with image_id (the image's SHA-256 TLV in
 * hex, as stored by images.c). Returns the job id > 0, or -ENOENT (device
 * or image unknown), -EINVAL. Durable before returning. */
int64_t gw_job_submit(struct gw_engine *engine, const char *device_id,
		      const char *image_id, enum gw_job_mode mode,
		      const struct gw_job_opts *opts);
/* Cancels at any moment without leaving the device half-tested. */
int gw_job_cancel(struct gw_engine *engine, int64_t job_id);
/* New references; NULL if unknown. */
json_t *gw_job_to_json(struct gw_engine *engine, int64_t job_id);
json_t *gw_jobs_to_json(struct gw_engine *engine, const char *device_id);

const char *gw_job_mode_str(enum gw_job_mode mode);
int gw_job_mode_parse(const char *s, enum gw_job_mode *ret);
const char *gw_job_state_str(enum gw_job_state state);
