/* SPDX-License-Identifier: MIT */
/*
 * Internals of the rollout scheduler shared by rollouts.c (the runtime:
 * windows, probes, jobs, events), rollouts-db.c (the SQLite tables) and
 * rollouts-json.c (spec parsing, JSON views and reports). Not a public API.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gateway/jobs.h"
#include "gateway/rollout-plan.h"

struct event;
struct gw;
struct gw_device;
struct gw_rollouts;
struct rollout;

struct ro_dev {
	struct rollout *ro;
	char *id;
	uint32_t position, wave;
	enum rollout_dev_state state;
	int64_t job_id;        /* last job handed to the engine; 0: none */
	uint32_t attempts;     /* jobs handed to the engine */
	bool acked;            /* failure acknowledged by a resume */
	char *error;           /* why it failed, or NULL */
	char *from_version;    /* version it ran when first probed */
	int64_t started_ms;    /* first job handed over */
	int64_t finished_ms;   /* outcome recorded */
	int64_t last_try_ms;   /* last probe without an answer (report) */
	/* Not durable: */
	bool busy;             /* probe in flight */
	int64_t probe_req;     /* its request id */
	struct gw_device *probe_dev;
	int64_t retry_at_ms;   /* not seen: try again from then */
};

/* What the spec asked for, parsed. */
struct ro_spec {
	char *name;
	enum gw_job_mode mode;
	struct rollout_policy policy;
	struct rollout_window window;
	char *name_glob, *version_glob;
	bool outdated;
	json_t *devices;          /* explicit list, or NULL */
	uint32_t retry_interval_ms;
	uint32_t probe_timeout_ms;
	uint32_t expire_windows;  /* 0: never */
};

struct rollout {
	struct gw_rollouts *owner;
	char *id;
	char *image_id, *image_version;
	json_t *spec_json;        /* normalized spec, as stored */
	struct ro_spec spec;
	enum rollout_state state;
	char *reason;             /* why paused/completed/canceled */
	int64_t created_ms, started_ms, finished_ms;
	uint32_t windows_done;    /* windows that ended while running */
	int64_t last_poll_ms;     /* last look at the engine's jobs */
	struct ro_dev *devs;
	size_t n;
	struct event *timer;
	struct rollout *next;
	/* Several gateways (docs/multi-gateway.md): one scheduler at a time. */
	char *scheduler;          /* the stored owner, or NULL */
	int64_t scheduler_expires;
	char *command;            /* a person's action asked elsewhere, or NULL */
	bool active;              /* this gateway schedules it */
	int64_t owned_until;      /* ... and may act until then */
};

struct gw_rollouts {
	struct gw *gw;
	struct rollout *list;     /* newest first */
	unsigned sub;             /* event bus subscription */
	uint64_t next_seq;        /* for new ids */
	/* Several gateways ([gateway] id): NULL with one. */
	char *me;
	uint32_t ttl_ms;          /* ownership of a rollout lasts this long */
	struct event *own_ev;     /* the ownership round */
	struct gw_store_listener *listener; /* jobs changed elsewhere (engine) */
	json_t *unreadable;       /* id -> when a row failed to load (ms) */
};

/* ---- rollouts-json.c ---- */

void ro_spec_clear(struct ro_spec *s);
/* Parses and validates spec (borrowed) into *ret and a normalized JSON copy
 * (*ret_json, new reference). -EINVAL with *errmsg on bad input. */
int ro_spec_parse(const json_t *spec, struct ro_spec *ret, json_t **ret_json,
		  char **errmsg);
json_t *ro_summary_json(const struct rollout *r);
json_t *ro_dev_json(const struct ro_dev *d);
json_t *ro_detail_json(const struct rollout *r);
json_t *ro_report_json(const struct rollout *r, int64_t now_ms);
char *ro_report_text(const struct rollout *r, int64_t now_ms);
/* Counts of devices per state. */
void ro_counts(const struct rollout *r, uint32_t counts[ROLLOUT_DEV_STATE_COUNT]);
json_t *ro_totals_json(const struct rollout *r);

/* ---- rollouts-db.c ---- */

struct gw_store;
/* Inserts r and its devices in one transaction. */
int ro_db_insert(struct gw_store *st, const struct rollout *r);
/* Rewrites r's own row (state, reason, times, windows). */
int ro_db_save(struct gw_store *st, const struct rollout *r);
/* Rewrites one device row. */
int ro_db_save_dev(struct gw_store *st, const struct ro_dev *d);
/* Several changes in one transaction. */
int ro_db_begin(struct gw_store *st);
int ro_db_commit(struct gw_store *st);
void ro_db_rollback(struct gw_store *st);
/* Loads every rollout, oldest first, calling cb with a new rollout (the
 * callee takes it). */
typedef void (*ro_db_load_cb)(struct rollout *r, void *user_data);
int ro_db_load(struct gw_store *st, ro_db_load_cb cb, void *user_data);
/* Largest numeric suffix of the ids in the table. */
uint64_t ro_db_max_seq(struct gw_store *st);
/* One rollout (new, owner unset) or NULL. */
struct rollout *ro_db_load_one(struct gw_store *st, const char *id);
/* Several gateways: claims or renews the scheduling of rollout id
 * atomically (free, lapsed or own): 1 with the pending command in
 * *command (new string or NULL), 0 when another gateway schedules it,
 * negative errno. */
int ro_db_claim(struct gw_store *st, const char *id, const char *me, int64_t now,
		uint32_t ttl_ms, char **command);
void ro_db_release(struct gw_store *st, const char *id, const char *me);
/* A person's action for the scheduler (set) or taken (cleared, only when
 * it is still cmd). */
int ro_db_command(struct gw_store *st, const char *id, const char *cmd, bool set);
/* Every rollout's id, state and scheduler, to cb. */
typedef void (*ro_db_head_cb)(const char *id, const char *state, void *user_data);
int ro_db_heads(struct gw_store *st, ro_db_head_cb cb, void *user_data);

/* Frees r (not linked anywhere any more). */
void ro_free(struct rollout *r);
