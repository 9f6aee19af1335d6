/* SPDX-License-Identifier: MIT */
/*
 * Rollouts: one image onto a fleet, unattended. A rollout resolves its
 * target to a fixed, ordered device list when it is created, splits it in
 * waves (a canary, then waves of M), and inside its time window hands one
 * job per device to the upload engine (jobs.h), a bounded number at once.
 * The next wave opens when the previous one met its success threshold; a
 * stop rule pauses the rollout until a person resumes or cancels it.
 * Devices not in range are tried again when seen (device events) or every
 * retry interval, within the window, and carried to the next window.
 *
 * Owns the rollouts and rollout_devices tables (migration in store.c).
 * Every change is committed before the call that caused it returns, and a
 * restarted daemon reconciles its records with the engine's jobs, so a
 * device never gets a second job while one is recorded as running or done.
 * Every transition is published on the event bus: "rollout.state",
 * "rollout.progress", "rollout.device".
 */
#pragma once

#include <jansson.h>

struct gw;
struct gw_rollouts;

/*
 * Loads the rollouts from the store, reconciles them with the engine's
 * jobs (gw_engine(gw)) and resumes the unfinished ones. Registers itself
 * with gw_set_rollouts(). NULL with *err when the store cannot be read.
 */
struct gw_rollouts *gw_rollouts_new(struct gw *gw, int *err);
/* Stops timers and probes; jobs keep running in the engine. Accepts NULL,
 * returns NULL. */
struct gw_rollouts *gw_rollouts_free(struct gw_rollouts *ro);

/*
 * Creates a rollout from spec (borrowed; the REST body, described in
 * docs/rollouts.md) for image (borrowed: the image store's description,
 * with "id" and "version"). Durable before returning. Returns 0 and *ret
 * (new reference: the rollout as gw_rollout_get() shows it), or -EINVAL /
 * -ENODEV (unknown device in a list) / -ENOENT (no device matches) with
 * *errmsg (new string) saying what was wrong.
 */
int gw_rollout_create(struct gw_rollouts *ro, const json_t *spec,
		      const json_t *image, json_t **ret, char **errmsg);

/* New references; NULL when id is unknown. */
json_t *gw_rollouts_list(struct gw_rollouts *ro);
json_t *gw_rollout_get(struct gw_rollouts *ro, const char *id);
json_t *gw_rollout_report(struct gw_rollouts *ro, const char *id);
/* The report as text for people (new string), NULL when id is unknown. */
char *gw_rollout_report_text(struct gw_rollouts *ro, const char *id);

/*
 * Person's actions. 0 (durable, event emitted), -ENOENT unknown rollout,
 * -EBUSY when the rollout's state does not allow it (*errmsg says why).
 * Several gateways ([gateway] id): one gateway schedules a rollout at a
 * time (the store's owner claim); on another gateway an action is checked
 * against the stored state and written for the scheduler, which does it
 * within about 2 s: 1 (asked). Views are read from the store there.
 *   pause:        waiting/running -> paused (running jobs finish);
 *   resume:       paused -> running/waiting; failures so far are
 *                 acknowledged (the stop rules count new ones);
 *   cancel:       anything but completed/canceled -> canceled; pending
 *                 devices are canceled, running jobs are canceled;
 *   retry_failed: failed, rolled back and lost devices go back to pending;
 *                 a completed rollout runs again (not a canceled one).
 */
int gw_rollout_pause(struct gw_rollouts *ro, const char *id, char **errmsg);
int gw_rollout_resume(struct gw_rollouts *ro, const char *id, char **errmsg);
int gw_rollout_cancel(struct gw_rollouts *ro, const char *id, char **errmsg);
int gw_rollout_retry_failed(struct gw_rollouts *ro, const char *id,
			    char **errmsg);
