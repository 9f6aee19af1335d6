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

/*
 * Final result, reported once per job to the submitter's callback (if any)
 * and always as a "job.result" event. The callback lives only as long as
 * the process: it is never called after gw_engine_free(), and a job
 * resumed after a restart reports through the event (and gw_job_to_json)
 * only. Events (data objects):
 *   "job.state"    id, device, image, mode, state, phase, error, rollout
 *                  (queued, every phase change, the end)
 *   "job.progress" id, device, phase, bytes, total, percent, rate (B/s),
 *                  eta_s (null when unknown); at most every 250 ms or 5 %
 *   "job.result"   as job.state plus duration_ms, bytes_sent,
 *                  skipped_upload (the image was already in a slot) and
 *                  up_to_date (the watch already ran it: nothing was done)
 * States as strings: queued running done failed rolled_back lost canceled;
 * phases: queued state upload verify test reset wait confirm done.
 */
typedef void (*gw_job_done_cb)(int64_t job_id, enum gw_job_state state,
			       const char *error, void *user_data);

struct gw_job_opts {
	const char *rollout_id;  /* NULL for ad-hoc jobs */
	gw_job_done_cb done;     /* may be NULL */
	void *user_data;
};

/* Several gateways on PostgreSQL (docs/multi-gateway.md): the store
 * notification channel hinting that a job row may be claimed (queued for a
 * watch held elsewhere, let go, a cancel asked) or finished. The engines
 * run a claim round at once, the rollout schedulers look at their jobs.
 * Only a hint: both poll anyway. */
#define GW_JOBS_CHANNEL "smpgw_job_rows"

struct gw_engine *gw_engine_new(struct gw *gw, int *err);
struct gw_engine *gw_engine_free(struct gw_engine *engine);

/*
 * Leases (lease.h): another gateway now holds device_id's watch. Its
 * unfinished jobs leave memory as the store has them (running ones stay
 * "running" at their phase and offset), nothing is failed. Returns how
 * many.
 */
int gw_engine_hand_over(struct gw_engine *engine, const char *device_id);
/* This gateway now holds device_id's watch: its unfinished jobs are
 * (re)read from the store and resume from the watch's state (as after a
 * restart). Returns how many, or -EIO. */
int gw_engine_adopt(struct gw_engine *engine, const char *device_id);
/* A job of device_id waits for its watch to come back from a reset it
 * asked for (test or confirm reboot: MCUboot's swap and the boot, when the
 * watch neither advertises nor is connected): until when it waits (its
 * [update] boot_timeout deadline, in gw_now_ms() time), 0 when no job
 * waits. The lease of a watch in its swap stays with its holder
 * (lease.c, docs/multi-gateway.md "Only fresh hearings count"). */
uint64_t gw_engine_rebooting_until(struct gw_engine *engine, const char *device_id);

/* Queues a job for device_id with image_id (the image's SHA-256 TLV in
 * hex, as stored by images.c). Returns the job id > 0, or -ENOENT (device
 * or image unknown), -EINVAL. Durable before returning. Several gateways
 * ([gateway] id): a device this gateway does not manage but the store
 * knows gets a queued row that its holder claims (opts->done is then never
 * called; the result is in the row). */
int64_t gw_job_submit(struct gw_engine *engine, const char *device_id,
		      const char *image_id, enum gw_job_mode mode,
		      const struct gw_job_opts *opts);
/* Cancels at any moment without leaving the device half-tested (what the
 * watch is left with in each phase: docs/updates.md). 0, -ENOENT,
 * -EALREADY (finished), -EBUSY (the confirm is on its way). Several
 * gateways: a job another gateway runs is asked of it through its row
 * (0; the JSON says "cancel_requested"). */
int gw_job_cancel(struct gw_engine *engine, int64_t job_id);
/* New references; NULL if unknown. Several gateways: every job of the
 * fleet from the store, with "runner" and "runners". The object is the job.state data plus
 * created, updated, started, finished (ms since the epoch or null),
 * skipped_upload, up_to_date and progress {bytes, total, percent, rate,
 * bytes_sent}; the list is newest first (device_id NULL: every device).
 * Several gateways (read from the store): the list is NULL when the store
 * cannot be reached. */
json_t *gw_job_to_json(struct gw_engine *engine, int64_t job_id);
json_t *gw_jobs_to_json(struct gw_engine *engine, const char *device_id);

const char *gw_job_mode_str(enum gw_job_mode mode);
int gw_job_mode_parse(const char *s, enum gw_job_mode *ret);
const char *gw_job_state_str(enum gw_job_state state);
