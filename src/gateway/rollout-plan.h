/* SPDX-License-Identifier: MIT */
/*
 * The pure side of rollouts: waves (a canary, then waves of M), the success
 * threshold that opens the next wave, the stop rules that pause a rollout,
 * which pending devices to try next, nightly windows in a time zone, and
 * the vocabulary (state names) shared by the store, the REST API and the
 * report. No I/O, no clock, no logging: everything here is a function of
 * its arguments, so tests/unit/test-rollout-plan.c covers it alone.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A rollout as a whole. */
enum rollout_state {
	ROLLOUT_STATE_WAITING = 0, /* outside its window: waits for the next one */
	ROLLOUT_STATE_RUNNING,     /* inside its window, starting devices */
	ROLLOUT_STATE_PAUSED,      /* by a person or a stop rule: waits for a person */
	ROLLOUT_STATE_COMPLETED,   /* every device has an outcome */
	ROLLOUT_STATE_CANCELED,
};

/* One device within a rollout. The first three are "open"; the rest are
 * outcomes (final until retry-failed puts failures back to pending). */
enum rollout_dev_state {
	ROLLOUT_DEV_PENDING = 0,   /* not tried yet, or not seen yet */
	ROLLOUT_DEV_SUBMITTING,    /* a job is being handed to the engine */
	ROLLOUT_DEV_RUNNING,       /* the engine runs its job */
	ROLLOUT_DEV_UPDATED,       /* job done: image booted (and confirmed) */
	ROLLOUT_DEV_UP_TO_DATE,    /* already ran the image: no upload */
	ROLLOUT_DEV_FAILED,        /* job failed; see error */
	ROLLOUT_DEV_ROLLED_BACK,   /* came back on its old image */
	ROLLOUT_DEV_LOST,          /* never came back after the reset */
	ROLLOUT_DEV_CANCELED,      /* rollout canceled before it finished */
	ROLLOUT_DEV_EXCLUDED,      /* its version did not match the target */
	ROLLOUT_DEV_NOT_SEEN,      /* never in range before the rollout expired */
};
#define ROLLOUT_DEV_STATE_COUNT (ROLLOUT_DEV_NOT_SEEN + 1)

const char *rollout_state_str(enum rollout_state s);
int rollout_state_parse(const char *s, enum rollout_state *ret);
const char *rollout_dev_state_str(enum rollout_dev_state s);
int rollout_dev_state_parse(const char *s, enum rollout_dev_state *ret);
bool rollout_dev_state_final(enum rollout_dev_state s);
/* FAILED, ROLLED_BACK, LOST: what the stop rules count. */
bool rollout_dev_state_failure(enum rollout_dev_state s);
/* UPDATED, UP_TO_DATE: what the success threshold counts. */
bool rollout_dev_state_success(enum rollout_dev_state s);

/* ---- waves and stop rules ---- */

#define ROLLOUT_NO_LIMIT UINT32_MAX

struct rollout_policy {
	uint32_t canary;          /* devices in wave 0; 0: no canary wave */
	uint32_t wave_size;       /* devices per later wave; 0: all the rest */
	uint32_t success_pct;     /* 0..100: wave k+1 opens when this share of
				   * wave k succeeded (acknowledged failures
				   * left out) */
	uint32_t max_failures;    /* pause when unacknowledged failures exceed
				   * this; ROLLOUT_NO_LIMIT: never */
	uint32_t max_failure_pct; /* pause when a wave's unacknowledged failures
				   * exceed this share of it; > 100: never */
	uint32_t max_concurrent;  /* devices tried at once (>= 1) */
};

/* Fills the defaults: no canary, one wave, 100 %, no limits, 4 at once. */
void rollout_policy_default(struct rollout_policy *ret);
/* -EINVAL (with *why) when a field is out of range. */
int rollout_policy_check(const struct rollout_policy *p, const char **why);
/* The wave of the device at position index (0-based, in rollout order). */
uint32_t rollout_wave_of(const struct rollout_policy *p, size_t index);
/* How many waves n devices make. */
uint32_t rollout_wave_count(const struct rollout_policy *p, size_t n);

/* What the planner needs to know of one device. */
struct rollout_dev_view {
	enum rollout_dev_state state;
	uint32_t wave;
	bool acked;  /* a failure a person already saw (resume) */
	bool busy;   /* being probed right now (not durable) */
	bool later;  /* not seen on the last try: not eligible until retried */
};

struct rollout_wave_stats {
	uint32_t size;      /* devices, excluded ones left out */
	uint32_t succeeded, failed, unacked_failed, open, final;
};

#define ROLLOUT_REASON_MAX 160

struct rollout_eval {
	uint32_t n_waves;
	uint32_t open_waves;      /* waves 0 .. open_waves-1 may start devices */
	uint32_t active;          /* submitting + running + busy */
	uint32_t unacked_failures;
	bool stop;                /* a stop rule fired: pause */
	bool stuck;               /* a finished wave missed its threshold: pause */
	bool finished;            /* every device has an outcome */
	char reason[ROLLOUT_REASON_MAX]; /* why stop/stuck */
};

/*
 * Evaluates a rollout's devices against its policy. stats (optional, n_waves
 * entries as rollout_wave_count() gives, at most max_stats filled) gets the
 * per-wave counts. Returns 0, -EINVAL on a bad policy.
 */
int rollout_evaluate(const struct rollout_policy *p,
		     const struct rollout_dev_view *devs, size_t n,
		     struct rollout_eval *ret,
		     struct rollout_wave_stats *stats, size_t max_stats);

/*
 * The pending devices of open waves, neither busy nor deferred (later), to
 * try now, in rollout order (earlier waves first), as many as
 * max_concurrent leaves room for. Writes at most max indices to out;
 * returns how many.
 */
size_t rollout_pick(const struct rollout_policy *p,
		    const struct rollout_dev_view *devs, size_t n,
		    const struct rollout_eval *ev, size_t *out, size_t max);

/* ---- windows ---- */

struct rollout_window {
	bool always;        /* no window: start now, never close */
	int start_min;      /* minutes after local midnight, 0..1439 */
	int end_min;        /* may be <= start_min: the window ends the next day */
	char tz[64];        /* IANA zone ("Europe/Berlin"); "" = the daemon's */
};

/* "HH:MM" -> minutes after midnight; -EINVAL when malformed. */
int rollout_parse_hhmm(const char *s, int *ret);
/* -EINVAL (with *why) on an unusable window: equal ends, unknown zone. */
int rollout_window_check(const struct rollout_window *w, const char **why);

/*
 * Where now_ms (ms since the epoch) falls: *ret_inside, and *ret_next_ms the
 * next boundary (the end of the current window when inside, else the start
 * of the next one; INT64_MAX for an "always" window), computed in w->tz
 * with its daylight saving rules: a start or end that falls in a skipped
 * hour moves to the first valid local time after it. *ret_window_start_ms
 * (optional) gets the start of the current window when inside, else of the
 * next one. Returns 0 or -EINVAL.
 *
 * Not reentrant: it switches the process's TZ for the computation and puts
 * it back (smpgwd has one thread).
 */
int rollout_window_locate(const struct rollout_window *w, int64_t now_ms,
			  bool *ret_inside, int64_t *ret_next_ms,
			  int64_t *ret_window_start_ms);

/* ---- target ---- */

/* fnmatch(3) glob, NULL pattern matches everything, NULL string nothing. */
bool rollout_glob_match(const char *pattern, const char *s);
/*
 * Whether two MCUboot versions are the same, whichever way they are
 * written: the image store says "1.2.3+4", Zephyr's img state "1.2.3.4",
 * and a zero build is often left out ("1.2.3" == "1.2.3+0"). False when
 * either does not parse.
 */
bool rollout_version_equal(const char *a, const char *b);
