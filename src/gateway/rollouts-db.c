/* SPDX-License-Identifier: MIT */
/*
 * The rollouts' tables in the durable store (schema: the "rollouts" step
 * of store.c's migrations). Every write is its own transaction unless the
 * caller groups several with ro_db_begin()/ro_db_commit(); the store runs
 * with synchronous=FULL, so a returned write survives kill -9.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/lease.h"
#include "gateway/log.h"
#include "gateway/rollouts-int.h"
#include "gateway/store.h"
#include "util/util.h"

int ro_db_begin(struct gw_store *st)
{
	return gw_store_begin(st);
}

int ro_db_commit(struct gw_store *st)
{
	return gw_store_commit(st);
}

void ro_db_rollback(struct gw_store *st)
{
	gw_store_rollback(st);
}

/* Several gateways: a write of the scheduler only while it is the owner
 * (-EPERM otherwise: another gateway took the rollout over). */
static const char *me_of(const struct rollout *r)
{
	return r->owner ? r->owner->me : NULL;
}

static int run_owned(struct gw_stmt *s, const struct rollout *r)
{
	int rc;

	if (!me_of(r))
		return gw_stmt_run(s);
	rc = gw_stmt_step(s);
	gw_stmt_finalize(s);
	return rc < 0 ? rc : rc == 1 ? 0 : -EPERM;
}

int ro_db_save(struct gw_store *st, const struct rollout *r)
{
	struct gw_stmt *s = gw_store_prepare(st, me_of(r) ?
		"UPDATE rollouts SET state = ?2, reason = ?3, started_ms = ?4,"
		" finished_ms = ?5, windows_done = ?6 WHERE id = ?1 AND owner = ?7"
		" RETURNING id" :
		"UPDATE rollouts SET state = ?2, reason = ?3, started_ms = ?4,"
		" finished_ms = ?5, windows_done = ?6 WHERE id = ?1");

	if (!s)
		return -EIO;
	if (me_of(r))
		gw_stmt_bind_text(s, 7, me_of(r));
	gw_stmt_bind_text(s, 1, r->id);
	gw_stmt_bind_text(s, 2, rollout_state_str(r->state));
	gw_stmt_bind_text(s, 3, r->reason);
	gw_stmt_bind_int64(s, 4, r->started_ms);
	gw_stmt_bind_int64(s, 5, r->finished_ms);
	gw_stmt_bind_int64(s, 6, r->windows_done);
	return run_owned(s, r);
}

#define DEV_UPDATE "UPDATE rollout_devices SET position = ?3, wave = ?4, state = ?5," \
	" job_id = ?6, attempts = ?7, acked = ?8, error = ?9," \
	" from_version = ?10, started_ms = ?11, finished_ms = ?12," \
	" last_try_ms = ?13 WHERE rollout_id = ?1 AND device_id = ?2"

static int dev_write(struct gw_store *st, const struct ro_dev *d, bool insert)
{
	bool owned = !insert && me_of(d->ro);
	struct gw_stmt *s = gw_store_prepare(st, insert ?
		"INSERT INTO rollout_devices (rollout_id, device_id, position,"
		" wave, state, job_id, attempts, acked, error, from_version,"
		" started_ms, finished_ms, last_try_ms)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)" :
		owned ? DEV_UPDATE " AND EXISTS (SELECT 1 FROM rollouts WHERE"
		" rollouts.id = ?1 AND rollouts.owner = ?14) RETURNING device_id" :
		DEV_UPDATE);

	if (!s)
		return -EIO;
	if (owned)
		gw_stmt_bind_text(s, 14, me_of(d->ro));
	gw_stmt_bind_text(s, 1, d->ro->id);
	gw_stmt_bind_text(s, 2, d->id);
	gw_stmt_bind_int64(s, 3, d->position);
	gw_stmt_bind_int64(s, 4, d->wave);
	gw_stmt_bind_text(s, 5, rollout_dev_state_str(d->state));
	gw_stmt_bind_int64(s, 6, d->job_id);
	gw_stmt_bind_int64(s, 7, d->attempts);
	gw_stmt_bind_int64(s, 8, d->acked);
	gw_stmt_bind_text(s, 9, d->error);
	gw_stmt_bind_text(s, 10, d->from_version);
	gw_stmt_bind_int64(s, 11, d->started_ms);
	gw_stmt_bind_int64(s, 12, d->finished_ms);
	gw_stmt_bind_int64(s, 13, d->last_try_ms);
	return owned ? run_owned(s, d->ro) : gw_stmt_run(s);
}

int ro_db_save_dev(struct gw_store *st, const struct ro_dev *d)
{
	return dev_write(st, d, false);
}

static int insert_row(struct gw_store *st, const struct rollout *r)
{
	/* Several gateways: the creating gateway schedules it first. */
	struct gw_stmt *s = gw_store_prepare(st,
		"INSERT INTO rollouts (id, image_id, image_version, spec, state,"
		" reason, created_ms, started_ms, finished_ms, windows_done, owner,"
		" owner_expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
	char *spec;
	int ret;

	if (!s)
		return -EIO;
	spec = json_dumps(r->spec_json, JSON_COMPACT | JSON_SORT_KEYS);
	gw_stmt_bind_text(s, 1, r->id);
	gw_stmt_bind_text(s, 2, r->image_id);
	gw_stmt_bind_text(s, 3, r->image_version);
	gw_stmt_bind_text(s, 4, spec);
	gw_stmt_bind_text(s, 5, rollout_state_str(r->state));
	gw_stmt_bind_text(s, 6, r->reason);
	gw_stmt_bind_int64(s, 7, r->created_ms);
	gw_stmt_bind_int64(s, 8, r->started_ms);
	gw_stmt_bind_int64(s, 9, r->finished_ms);
	gw_stmt_bind_int64(s, 10, r->windows_done);
	gw_stmt_bind_text(s, 11, me_of(r));
	gw_stmt_bind_int64(s, 12, r->scheduler_expires);
	ret = gw_stmt_run(s);
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

static char *col_dup(struct gw_stmt *s, int i)
{
	const char *t = gw_stmt_text(s, i);

	return t ? xstrdup(t) : NULL;
}

static int load_devices(struct gw_store *st, struct rollout *r)
{
	struct gw_stmt *s = gw_store_prepare(st,
		"SELECT device_id, position, wave, state, job_id, attempts, acked,"
		" error, from_version, started_ms, finished_ms, last_try_ms"
		" FROM rollout_devices"
		" WHERE rollout_id = ?1 ORDER BY position");
	int rc;

	if (!s)
		return -EIO;
	gw_stmt_bind_text(s, 1, r->id);
	while ((rc = gw_stmt_step(s)) == 1) {
		struct ro_dev *d;

		r->devs = xrealloc(r->devs, (r->n + 1) * sizeof(*r->devs));
		d = &r->devs[r->n++];
		*d = (struct ro_dev){
			.ro = r, .id = col_dup(s, 0),
			.position = (uint32_t)gw_stmt_int64(s, 1),
			.wave = (uint32_t)gw_stmt_int64(s, 2),
			.job_id = gw_stmt_int64(s, 4),
			.attempts = (uint32_t)gw_stmt_int64(s, 5),
			.acked = gw_stmt_int64(s, 6) != 0,
			.error = col_dup(s, 7), .from_version = col_dup(s, 8),
			.started_ms = gw_stmt_int64(s, 9),
			.finished_ms = gw_stmt_int64(s, 10),
			.last_try_ms = gw_stmt_int64(s, 11),
		};
		if (rollout_dev_state_parse(gw_stmt_text(s, 3),
					    &d->state) < 0)
			d->state = ROLLOUT_DEV_PENDING;
	}
	gw_stmt_finalize(s);
	return rc == 0 ? 0 : -EIO;
}

/* Builds one rollout from a row; NULL when its spec no longer parses. */
static struct rollout *row_rollout(struct gw_store *st, struct gw_stmt *s)
{
	struct rollout *r = xnew(struct rollout);
	json_t *spec = json_loads(gw_stmt_text(s, 3), 0, NULL);
	char *err = NULL;

	r->id = col_dup(s, 0);
	r->image_id = col_dup(s, 1);
	r->image_version = col_dup(s, 2);
	r->reason = col_dup(s, 5);
	r->created_ms = gw_stmt_int64(s, 6);
	r->started_ms = gw_stmt_int64(s, 7);
	r->finished_ms = gw_stmt_int64(s, 8);
	r->windows_done = (uint32_t)gw_stmt_int64(s, 9);
	r->scheduler = col_dup(s, 10);
	r->scheduler_expires = gw_stmt_int64(s, 11);
	r->command = col_dup(s, 12);
	if (rollout_state_parse(gw_stmt_text(s, 4), &r->state) < 0)
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

#define RO_COLUMNS "id, image_id, image_version, spec, state, reason," \
	" created_ms, started_ms, finished_ms, windows_done, owner, owner_expires, command"

struct rollout *ro_db_load_one(struct gw_store *st, const char *id)
{
	struct gw_stmt *s = gw_store_prepare(st, "SELECT " RO_COLUMNS
					     " FROM rollouts WHERE id = ?1");
	struct rollout *r = NULL;

	if (!s)
		return NULL;
	gw_stmt_bind_text(s, 1, id);
	if (gw_stmt_step(s) == 1)
		r = row_rollout(st, s);
	gw_stmt_finalize(s);
	return r;
}

int ro_db_claim(struct gw_store *st, const char *id, const char *me, int64_t now,
		uint32_t ttl_ms, char **command)
{
	struct gw_stmt *s = gw_store_prepare(st,
		"UPDATE rollouts SET owner = ?2, owner_expires = ?4 WHERE id = ?1"
		" AND (owner IS NULL OR owner = ?2 OR owner_expires < ?3"
		" OR owner_expires > ?5) RETURNING command");
	int rc;

	if (!s)
		return -EIO;
	gw_stmt_bind_text(s, 1, id);
	gw_stmt_bind_text(s, 2, me);
	gw_stmt_bind_int64(s, 3, now);
	gw_stmt_bind_int64(s, 4, now + ttl_ms);
	/* A claim further ahead than the longest lease is void (corrupt, or
	 * written by a clock far ahead): a ghost cannot pin the rollout. */
	gw_stmt_bind_int64(s, 5, now + GW_LEASE_TTL_MAX_MS);
	rc = gw_stmt_step(s);
	*command = rc == 1 ? col_dup(s, 0) : NULL;
	gw_stmt_finalize(s);
	return rc;
}

void ro_db_release(struct gw_store *st, const char *id, const char *me)
{
	struct gw_stmt *s = gw_store_prepare(st,
		"UPDATE rollouts SET owner_expires = 0 WHERE id = ?1 AND owner = ?2");

	if (s) {
		gw_stmt_bind_text(s, 1, id);
		gw_stmt_bind_text(s, 2, me);
	}
	gw_stmt_run(s);
}

int ro_db_command(struct gw_store *st, const char *id, const char *cmd, bool set)
{
	struct gw_stmt *s = gw_store_prepare(st, set ?
		"UPDATE rollouts SET command = ?2 WHERE id = ?1" :
		"UPDATE rollouts SET command = NULL WHERE id = ?1 AND command = ?2");

	if (!s)
		return -EIO;
	gw_stmt_bind_text(s, 1, id);
	gw_stmt_bind_text(s, 2, cmd);
	return gw_stmt_run(s);
}

int ro_db_heads(struct gw_store *st, ro_db_head_cb cb, void *user_data)
{
	struct gw_stmt *s = gw_store_prepare(st, "SELECT id, state FROM rollouts"
					     " ORDER BY created_ms, length(id), id");
	int rc;

	if (!s)
		return -EIO;
	while ((rc = gw_stmt_step(s)) == 1)
		cb(gw_stmt_text(s, 0), gw_stmt_text(s, 1), user_data);
	gw_stmt_finalize(s);
	return rc < 0 ? rc : 0;
}

int ro_db_load(struct gw_store *st, ro_db_load_cb cb, void *user_data)
{
	struct gw_stmt *s = gw_store_prepare(st,
		"SELECT " RO_COLUMNS " FROM rollouts ORDER BY created_ms, length(id), id");
	int rc;

	if (!s)
		return -EIO;
	while ((rc = gw_stmt_step(s)) == 1) {
		struct rollout *r = row_rollout(st, s);

		if (r)
			cb(r, user_data);
	}
	gw_stmt_finalize(s);
	return rc == 0 ? 0 : -EIO;
}

/* The highest N of the ids "ro-N" (parsed here: the backends disagree on
 * casting text that is not a number). */
uint64_t ro_db_max_seq(struct gw_store *st)
{
	struct gw_stmt *s = gw_store_prepare(st,
		"SELECT id FROM rollouts WHERE id LIKE 'ro-%'");
	uint64_t v = 0;

	if (!s)
		return 0;
	while (gw_stmt_step(s) == 1) {
		const char *id = gw_stmt_text(s, 0);
		char *end;
		unsigned long long n;

		if (!id || !isdigit((unsigned char)id[3]))
			continue;
		n = strtoull(id + 3, &end, 10);
		if (*end == '\0' && n > v)
			v = n;
	}
	gw_stmt_finalize(s);
	return v;
}
