/* SPDX-License-Identifier: MIT */
/*
 * The rollouts' tables in the durable store (schema: the "rollouts" step
 * of store.c's migrations). Every write is its own transaction unless the
 * caller groups several with ro_db_begin()/ro_db_commit(); the store runs
 * with synchronous=FULL, so a returned write survives kill -9.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "gateway/log.h"
#include "gateway/rollouts-int.h"
#include "gateway/store.h"
#include "util/util.h"

static int rc_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	default:
		return -EIO;
	}
}

static int exec(struct gw_store *st, const char *sql)
{
	return rc_errno(sqlite3_exec(gw_store_db(st), sql, NULL, NULL, NULL));
}

int ro_db_begin(struct gw_store *st)
{
	return exec(st, "BEGIN IMMEDIATE");
}

int ro_db_commit(struct gw_store *st)
{
	int r = exec(st, "COMMIT");

	if (r < 0)
		ro_db_rollback(st);
	return r;
}

void ro_db_rollback(struct gw_store *st)
{
	exec(st, "ROLLBACK");
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(s, i);
}

static int step_done(sqlite3_stmt *s)
{
	int r = rc_errno(sqlite3_step(s));

	sqlite3_finalize(s);
	return r;
}

static sqlite3_stmt *prepare(struct gw_store *st, const char *sql)
{
	sqlite3_stmt *s = NULL;

	if (sqlite3_prepare_v2(gw_store_db(st), sql, -1, &s, NULL) != SQLITE_OK)
		return NULL;
	return s;
}

int ro_db_save(struct gw_store *st, const struct rollout *r)
{
	sqlite3_stmt *s = prepare(st,
		"UPDATE rollouts SET state = ?2, reason = ?3, started_ms = ?4,"
		" finished_ms = ?5, windows_done = ?6 WHERE id = ?1");

	if (!s)
		return -EIO;
	bind_text(s, 1, r->id);
	bind_text(s, 2, rollout_state_str(r->state));
	bind_text(s, 3, r->reason);
	sqlite3_bind_int64(s, 4, r->started_ms);
	sqlite3_bind_int64(s, 5, r->finished_ms);
	sqlite3_bind_int64(s, 6, r->windows_done);
	return step_done(s);
}

static int dev_write(struct gw_store *st, const struct ro_dev *d, bool insert)
{
	sqlite3_stmt *s = prepare(st, insert ?
		"INSERT INTO rollout_devices (rollout_id, device_id, position,"
		" wave, state, job_id, attempts, acked, error, from_version,"
		" started_ms, finished_ms, last_try_ms)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)" :
		"UPDATE rollout_devices SET position = ?3, wave = ?4, state = ?5,"
		" job_id = ?6, attempts = ?7, acked = ?8, error = ?9,"
		" from_version = ?10, started_ms = ?11, finished_ms = ?12,"
		" last_try_ms = ?13"
		" WHERE rollout_id = ?1 AND device_id = ?2");

	if (!s)
		return -EIO;
	bind_text(s, 1, d->ro->id);
	bind_text(s, 2, d->id);
	sqlite3_bind_int64(s, 3, d->position);
	sqlite3_bind_int64(s, 4, d->wave);
	bind_text(s, 5, rollout_dev_state_str(d->state));
	sqlite3_bind_int64(s, 6, d->job_id);
	sqlite3_bind_int64(s, 7, d->attempts);
	sqlite3_bind_int(s, 8, d->acked);
	bind_text(s, 9, d->error);
	bind_text(s, 10, d->from_version);
	sqlite3_bind_int64(s, 11, d->started_ms);
	sqlite3_bind_int64(s, 12, d->finished_ms);
	sqlite3_bind_int64(s, 13, d->last_try_ms);
	return step_done(s);
}

int ro_db_save_dev(struct gw_store *st, const struct ro_dev *d)
{
	return dev_write(st, d, false);
}

static int insert_row(struct gw_store *st, const struct rollout *r)
{
	sqlite3_stmt *s = prepare(st,
		"INSERT INTO rollouts (id, image_id, image_version, spec, state,"
		" reason, created_ms, started_ms, finished_ms, windows_done)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
	char *spec;
	int ret;

	if (!s)
		return -EIO;
	spec = json_dumps(r->spec_json, JSON_COMPACT | JSON_SORT_KEYS);
	bind_text(s, 1, r->id);
	bind_text(s, 2, r->image_id);
	bind_text(s, 3, r->image_version);
	bind_text(s, 4, spec);
	bind_text(s, 5, rollout_state_str(r->state));
	bind_text(s, 6, r->reason);
	sqlite3_bind_int64(s, 7, r->created_ms);
	sqlite3_bind_int64(s, 8, r->started_ms);
	sqlite3_bind_int64(s, 9, r->finished_ms);
	sqlite3_bind_int64(s, 10, r->windows_done);
	ret = step_done(s);
	free(spec);
	return ret;
}

int ro_db_insert(struct gw_store *st, const struct rollout *r)
{
	int ret = ro_db_begin(st);

	if (ret < 0)
		return ret;
	ret = insert_row(st, r);
	for (size_t i = 0; ret == 0 && i < r->n; i++)
		ret = dev_write(st, &r->devs[i], true);
	if (ret < 0) {
		ro_db_rollback(st);
		return ret;
	}
	return ro_db_commit(st);
}

static char *col_dup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	return t ? xstrdup((const char *)t) : NULL;
}

static int load_devices(struct gw_store *st, struct rollout *r)
{
	sqlite3_stmt *s = prepare(st,
		"SELECT device_id, position, wave, state, job_id, attempts, acked,"
		" error, from_version, started_ms, finished_ms, last_try_ms"
		" FROM rollout_devices"
		" WHERE rollout_id = ?1 ORDER BY position");
	int rc;

	if (!s)
		return -EIO;
	bind_text(s, 1, r->id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct ro_dev *d;

		r->devs = xrealloc(r->devs, (r->n + 1) * sizeof(*r->devs));
		d = &r->devs[r->n++];
		*d = (struct ro_dev){
			.ro = r, .id = col_dup(s, 0),
			.position = (uint32_t)sqlite3_column_int64(s, 1),
			.wave = (uint32_t)sqlite3_column_int64(s, 2),
			.job_id = sqlite3_column_int64(s, 4),
			.attempts = (uint32_t)sqlite3_column_int64(s, 5),
			.acked = sqlite3_column_int(s, 6) != 0,
			.error = col_dup(s, 7), .from_version = col_dup(s, 8),
			.started_ms = sqlite3_column_int64(s, 9),
			.finished_ms = sqlite3_column_int64(s, 10),
			.last_try_ms = sqlite3_column_int64(s, 11),
		};
		if (rollout_dev_state_parse((const char *)sqlite3_column_text(s, 3),
					    &d->state) < 0)
			d->state = ROLLOUT_DEV_PENDING;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Builds one rollout from a row; NULL when its spec no longer parses. */
static struct rollout *row_rollout(struct gw_store *st, sqlite3_stmt *s)
{
	struct rollout *r = xnew(struct rollout);
	json_t *spec = json_loads((const char *)sqlite3_column_text(s, 3), 0, NULL);
	char *err = NULL;

	r->id = col_dup(s, 0);
	r->image_id = col_dup(s, 1);
	r->image_version = col_dup(s, 2);
	r->reason = col_dup(s, 5);
	r->created_ms = sqlite3_column_int64(s, 6);
	r->started_ms = sqlite3_column_int64(s, 7);
	r->finished_ms = sqlite3_column_int64(s, 8);
	r->windows_done = (uint32_t)sqlite3_column_int64(s, 9);
	if (rollout_state_parse((const char *)sqlite3_column_text(s, 4), &r->state) < 0)
		r->state = ROLLOUT_STATE_PAUSED;
	if (!spec || ro_spec_parse(spec, &r->spec, &r->spec_json, &err) < 0 ||
	    load_devices(st, r) < 0) {
		log_err("rollout %s: cannot load it: %s", r->id ? r->id : "?",
			err ? err : "unreadable record");
		free(err);
		json_decref(spec);
		ro_free(r);
		return NULL;
	}
	json_decref(spec);
	return r;
}

int ro_db_load(struct gw_store *st, ro_db_load_cb cb, void *user_data)
{
	sqlite3_stmt *s = prepare(st,
		"SELECT id, image_id, image_version, spec, state, reason,"
		" created_ms, started_ms, finished_ms, windows_done FROM rollouts"
		" ORDER BY created_ms, rowid");
	int rc;

	if (!s)
		return -EIO;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct rollout *r = row_rollout(st, s);

		if (r)
			cb(r, user_data);
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

uint64_t ro_db_max_seq(struct gw_store *st)
{
	sqlite3_stmt *s = prepare(st,
		"SELECT coalesce(max(CAST(substr(id, 4) AS INTEGER)), 0)"
		" FROM rollouts WHERE id LIKE 'ro-%'");
	uint64_t v = 0;

	if (!s)
		return 0;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}
