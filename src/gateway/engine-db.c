/* SPDX-License-Identifier: MIT */
/*
 * The upload engine's records (engine-int.h): job, mode, state and phase
 * names, the jobs table in the store (one row per job, written before
 * every step acts on a watch), loading it at start, and the cache of
 * images read from the image store (state_dir/images/<id>.bin, checked
 * against their id).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <openssl/evp.h>

#include "codec/mcuboot.h"
#include "gateway/config.h"
#include "gateway/engine-int.h"
#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/lease.h"
#include "gateway/log.h"
#include "util/util.h"

#define IMAGE_MAX (1u << 20)       /* larger than any PineTime slot */

const char *const engine_phase_names[] = {
	"queued", "state", "upload", "verify", "test", "reset", "wait",
	"confirm", "done",
};

/* ---- names ---- */

const char *gw_job_mode_str(enum gw_job_mode mode)
{
	switch (mode) {
	case GW_JOB_MODE_UPLOAD: return "upload";
	case GW_JOB_MODE_TEST: return "test";
	case GW_JOB_MODE_TEST_CONFIRM: return "test-confirm";
	case GW_JOB_MODE_CONFIRM: return "confirm";
	}
	return "?";
}

int gw_job_mode_parse(const char *s, enum gw_job_mode *ret)
{
	for (int m = GW_JOB_MODE_UPLOAD; m <= GW_JOB_MODE_CONFIRM; m++)
		if (s && !strcmp(s, gw_job_mode_str(m))) {
			*ret = m;
			return 0;
		}
	return -EINVAL;
}

const char *gw_job_state_str(enum gw_job_state state)
{
	switch (state) {
	case GW_JOB_STATE_QUEUED: return "queued";
	case GW_JOB_STATE_RUNNING: return "running";
	case GW_JOB_STATE_DONE: return "done";
	case GW_JOB_STATE_FAILED: return "failed";
	case GW_JOB_STATE_ROLLED_BACK: return "rolled_back";
	case GW_JOB_STATE_LOST: return "lost";
	case GW_JOB_STATE_CANCELED: return "canceled";
	}
	return "?";
}

int engine_state_parse(const char *s, enum gw_job_state *ret)
{
	for (int st = GW_JOB_STATE_QUEUED; st <= GW_JOB_STATE_CANCELED; st++)
		if (s && !strcmp(s, gw_job_state_str(st))) {
			*ret = st;
			return 0;
		}
	return -EINVAL;
}

enum phase engine_phase_parse(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(engine_phase_names); i++)
		if (s && !strcmp(s, engine_phase_names[i]))
			return (enum phase)i;
	return PHASE_QUEUED;
}

/* ---- the store ---- */

static int db_exec_job(struct gw_engine *eng, const char *sql, struct job *job)
{
	struct gw_stmt *st;
	int r;

	if (!eng->store)
		return 0;
	st = gw_store_prepare(eng->store, sql);
	if (!st) {
		log_err("jobs: %s", gw_store_errmsg(eng->store));
		return -EIO;
	}
	gw_stmt_bind_text(st, 1, gw_job_state_str(job->state));
	gw_stmt_bind_text(st, 2, engine_phase_names[job->phase]);
	gw_stmt_bind_text(st, 3, job->error);
	gw_stmt_bind_int64(st, 4, (int64_t)job->size);
	gw_stmt_bind_int64(st, 5, (int64_t)job->offset);
	gw_stmt_bind_int64(st, 6, (int64_t)job->started_ms);
	gw_stmt_bind_int64(st, 7, (int64_t)job->finished_ms);
	gw_stmt_bind_int64(st, 8, (int64_t)job->updated_ms);
	gw_stmt_bind_int64(st, 9, (job->up_to_date ? 1 : 0) | (job->skipped_upload ? 2 : 0) |
			   (job->did_reset ? 4 : 0));
	gw_stmt_bind_int64(st, 10, (int64_t)job->bytes_sent);
	gw_stmt_bind_int64(st, 11, job->id);
	if (eng->me)
		gw_stmt_bind_text(st, 12, eng->me);
	r = gw_stmt_step(st);
	gw_stmt_finalize(st);
	if (r < 0) {
		log_err("jobs: cannot record job %lld: %s", (long long)job->id,
			gw_store_errmsg(eng->store));
		return r;
	}
	if (eng->me && r == 0 && !job->claim_lost) {
		/* Another gateway claimed the row: its writes win. */
		log_warn("job %lld (%s): claimed by another gateway; stopped here",
			 (long long)job->id, job->device_id);
		job->claim_lost = true;
	}
	return 0;
}

/* Durable before it returns (synchronous=FULL): the phase is recorded
 * before the step it names acts on the watch. With several gateways only
 * while this gateway's claim is on the row. */
void engine_job_persist(struct job *job)
{
	job->updated_ms = gw_now_ms(job->eng->gw);
	db_exec_job(job->eng, job->eng->me ?
		    "UPDATE jobs SET state = ?1, phase = ?2, error = ?3, size = ?4,"
		    " off = ?5, started = ?6, finished = ?7, updated = ?8,"
		    " flags = ?9, bytes_sent = ?10 WHERE id = ?11 AND runner = ?12"
		    " RETURNING id" :
		    "UPDATE jobs SET state = ?1, phase = ?2, error = ?3, size = ?4,"
		    " off = ?5, started = ?6, finished = ?7, updated = ?8,"
		    " flags = ?9, bytes_sent = ?10 WHERE id = ?11", job);
	job->last_persist_ms = job->updated_ms;
}

int64_t engine_db_insert(struct gw_engine *eng, struct job *job)
{
	struct gw_stmt *st;
	int64_t id = -EIO;
	int r;

	if (!eng->store)
		return eng->next_mem_id++; /* no store: ids for this run only */
	st = gw_store_prepare(eng->store,
			"INSERT INTO jobs (device_id, image_id, mode, state, phase,"
			" rollout_id, created, updated, runner, runner_expires, runners)"
			" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9)"
			" RETURNING id");
	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, job->device_id);
	gw_stmt_bind_text(st, 2, job->image_id);
	gw_stmt_bind_text(st, 3, gw_job_mode_str(job->mode));
	gw_stmt_bind_text(st, 4, gw_job_state_str(job->state));
	gw_stmt_bind_text(st, 5, engine_phase_names[job->phase]);
	gw_stmt_bind_text(st, 6, job->rollout_id);
	gw_stmt_bind_int64(st, 7, (int64_t)job->created_ms);
	gw_stmt_bind_int64(st, 8, (int64_t)job->created_ms);
	/* Several gateways: claimed at once when this gateway runs it. */
	gw_stmt_bind_text(st, 9, job->runner);
	gw_stmt_bind_int64(st, 10, (int64_t)job->runner_expires);
	r = gw_stmt_step(st);
	if (r == 1)
		id = gw_stmt_int64(st, 0);
	else if (r == -ENOSPC) /* the store's disk: 507, not 500 */
		id = -ENOSPC;
	gw_stmt_finalize(st);
	return id;
}

/* ---- images ---- */

struct image *engine_image_get(struct gw_engine *eng, const char *id, int *err)
{
	const struct gw_config *cfg = gw_config(eng->gw);
	struct mcuboot_image mi;
	struct image *im;
	char *path, hex[2 * MCUBOOT_HASH_LEN + 1];
	FILE *f;
	long n;

	/* The id may come from a store row (a job another gateway queued):
	 * one that is not an image id is a corrupted row, never a path. */
	if (!gw_images_id_valid(id)) {
		*err = -EINVAL;
		return NULL;
	}
	LIST_FOREACH(im, &eng->images, entry)
		if (!strcmp(im->id, id)) {
			im->refs++;
			return im;
		}
	path = cfg->images.dir ? xasprintf("%s/%s.bin", cfg->images.dir, id) :
				 xasprintf("%s/images/%s.bin", cfg->general.state_dir, id);
	f = fopen(path, "rb");
	free(path);
	if (!f) {
		*err = -ENOENT;
		return NULL;
	}
	im = xnew(struct image);
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && n <= (long)IMAGE_MAX &&
	    fseek(f, 0, SEEK_SET) == 0) {
		im->len = (size_t)n;
		im->buf = xmalloc(im->len);
		if (fread(im->buf, 1, im->len, f) != im->len)
			im->len = 0;
	}
	fclose(f);
	if (!im->len || mcuboot_image_parse(im->buf, im->len, &mi) < 0 ||
	    (mcuboot_hash_hex(&mi, hex), strcmp(hex, id))) {
		free(im->buf);
		free(im);
		*err = -ENOEXEC;
		return NULL;
	}
	memcpy(im->hash, mi.hash, GW_IMG_HASH_LEN);
	EVP_Digest(im->buf, im->len, im->sha, NULL, EVP_sha256(), NULL);
	im->id = xstrdup(id);
	im->refs = 1;
	LIST_INSERT_HEAD(&eng->images, im, entry);
	return im;
}

void engine_image_put(struct image *im)
{
	if (!im || --im->refs)
		return;
	LIST_REMOVE(im, entry);
	free(im->id);
	free(im->buf);
	free(im);
}

/* ---- construction: load what the store knows ---- */

#define JOB_COLUMNS "id, device_id, image_id, mode, state, phase, rollout_id," \
	" error, size, off, created, started, finished, updated, flags, bytes_sent," \
	" runner, runner_expires, runners, cancel_req"
#define JOB_UNFINISHED "state IN ('queued', 'running')"
/* A row this gateway may claim: free, its claim lapsed, its own, or void
 * (a claim further ahead than the longest lease: corrupt, or written by a
 * clock far ahead; ?4 is now + GW_LEASE_TTL_MAX_MS). */
#define JOB_CLAIMABLE "(runner IS NULL OR runner = ?2 OR runner_expires < ?3" \
	" OR runner_expires > ?4)"

static char *col_dup(struct gw_stmt *st, int i)
{
	const char *s = gw_stmt_text(st, i);

	return s ? xstrdup(s) : NULL;
}

static struct job *row_job(struct gw_engine *eng, struct gw_stmt *st)
{
	struct job *job = engine_job_new(eng);
	const char *s;
	int flags;

	job->id = gw_stmt_int64(st, 0);
	job->device_id = xstrdup(gw_stmt_text(st, 1));
	job->image_id = xstrdup(gw_stmt_text(st, 2));
	if (gw_job_mode_parse(gw_stmt_text(st, 3), &job->mode) < 0)
		job->mode = GW_JOB_MODE_TEST_CONFIRM;
	if (engine_state_parse(gw_stmt_text(st, 4), &job->state) < 0)
		job->state = GW_JOB_STATE_FAILED;
	job->phase = engine_phase_parse(gw_stmt_text(st, 5));
	s = gw_stmt_text(st, 6);
	job->rollout_id = s ? xstrdup(s) : NULL;
	s = gw_stmt_text(st, 7);
	job->error = s ? xstrdup(s) : NULL;
	job->size = (size_t)gw_stmt_int64(st, 8);
	job->offset = (size_t)gw_stmt_int64(st, 9);
	job->created_ms = (uint64_t)gw_stmt_int64(st, 10);
	job->started_ms = (uint64_t)gw_stmt_int64(st, 11);
	job->finished_ms = (uint64_t)gw_stmt_int64(st, 12);
	job->updated_ms = (uint64_t)gw_stmt_int64(st, 13);
	flags = (int)gw_stmt_int64(st, 14);
	job->up_to_date = flags & 1;
	job->skipped_upload = flags & 2;
	job->did_reset = flags & 4;
	job->bytes_sent = (uint64_t)gw_stmt_int64(st, 15);
	if (job->phase >= PHASE_RESET && job->phase <= PHASE_WAIT)
		job->did_reset = true;
	job->runner = col_dup(st, 16);
	job->runner_expires = (uint64_t)gw_stmt_int64(st, 17);
	job->runners = col_dup(st, 18);
	job->cancel_req = gw_stmt_int64(st, 19) != 0;
	return job;
}

static void load_row(struct gw_engine *eng, struct gw_stmt *st)
{
	struct job *job = row_job(eng, st);

	/* A job that was running is queued again; it resumes from a state
	 * read with its phase kept (job_decide). */
	if (job->state == GW_JOB_STATE_RUNNING)
		job->state = GW_JOB_STATE_QUEUED;
	TAILQ_INSERT_TAIL(&eng->jobs, job, entry);
	eng->n_jobs++;
}

int engine_load_jobs(struct gw_engine *eng)
{
	/* Several gateways: unfinished jobs are claimed, not loaded. */
	struct gw_stmt *st = gw_store_prepare(eng->store, eng->me ?
			"SELECT " JOB_COLUMNS " FROM jobs WHERE state NOT IN ('queued', 'running')"
			" AND runner = ?2 AND id > (SELECT coalesce(max(id), 0) FROM jobs) - ?1"
			" ORDER BY id" :
			"SELECT " JOB_COLUMNS " FROM jobs WHERE state IN ('queued', 'running')"
			" OR id > (SELECT coalesce(max(id), 0) FROM jobs) - ?1"
			" ORDER BY id");
	int r, n = 0;

	if (!st) {
		log_err("jobs: %s", gw_store_errmsg(eng->store));
		return -EIO;
	}
	gw_stmt_bind_int64(st, 1, ENGINE_FINISHED_KEPT);
	if (eng->me)
		gw_stmt_bind_text(st, 2, eng->me);
	while ((r = gw_stmt_step(st)) == 1) {
		load_row(eng, st);
		if (!engine_job_final(TAILQ_LAST(&eng->jobs, job_list)))
			n++;
	}
	if (r < 0)
		log_err("jobs: %s", gw_store_errmsg(eng->store));
	gw_stmt_finalize(st);
	if (n)
		log_notice("jobs: %d unfinished job(s) from the last run resume", n);
	return r < 0 ? -EIO : 0;
}

static bool in_memory(struct gw_engine *eng, int64_t id)
{
	struct job *j;

	TAILQ_FOREACH(j, &eng->jobs, entry)
		if (j->id == id)
			return true;
	return false;
}

/* Into memory in id order among the rest. */
static void insert_ordered(struct gw_engine *eng, struct job *job)
{
	struct job *j;

	TAILQ_FOREACH(j, &eng->jobs, entry)
		if (j->id > job->id) {
			TAILQ_INSERT_BEFORE(j, job, entry);
			eng->n_jobs++;
			return;
		}
	TAILQ_INSERT_TAIL(&eng->jobs, job, entry);
	eng->n_jobs++;
}

/* The unfinished jobs of device_id in the store that memory does not have
 * (another gateway held the watch: lease.h), in id order among the rest. */
int engine_db_adopt(struct gw_engine *eng, const char *device_id)
{
	struct gw_stmt *st;
	int r, n = 0;

	if (!eng->store)
		return 0;
	st = gw_store_prepare(eng->store, "SELECT " JOB_COLUMNS " FROM jobs"
			      " WHERE device_id = ?1 AND state IN ('queued', 'running')"
			      " ORDER BY id");
	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, device_id);
	while ((r = gw_stmt_step(st)) == 1) {
		struct job *job;

		if (in_memory(eng, gw_stmt_int64(st, 0)))
			continue;
		job = row_job(eng, st);
		if (job->state == GW_JOB_STATE_RUNNING)
			job->state = GW_JOB_STATE_QUEUED;
		insert_ordered(eng, job);
		n++;
	}
	gw_stmt_finalize(st);
	if (r < 0)
		log_err("jobs: cannot adopt the jobs of %s: %s", device_id,
			gw_store_errmsg(eng->store));
	return r < 0 ? -EIO : n;
}

/* ---- several gateways: claims (docs/multi-gateway.md) ---- */

json_t *engine_db_claimable(struct gw_engine *eng)
{
	struct gw_stmt *st = gw_store_prepare(eng->store,
			"SELECT device_id, id FROM jobs WHERE " JOB_UNFINISHED
			" AND (runner IS NULL OR runner = ?1 OR runner_expires < ?2"
			" OR runner_expires > ?3) ORDER BY device_id");
	json_t *a = json_array();
	const char *last = NULL;

	if (!st)
		return a;
	gw_stmt_bind_text(st, 1, eng->me);
	gw_stmt_bind_int64(st, 2, (int64_t)gw_now_ms(eng->gw));
	gw_stmt_bind_int64(st, 3, (int64_t)(gw_now_ms(eng->gw) + GW_LEASE_TTL_MAX_MS));
	while (gw_stmt_step(st) == 1) {
		const char *dev = gw_stmt_text(st, 0);

		/* Rows this gateway runs already need no claim (a big rollout
		 * would otherwise lock them all every round). */
		if (!dev || in_memory(eng, gw_stmt_int64(st, 1)) || (last && !strcmp(last, dev)))
			continue;
		json_array_append_new(a, json_string(dev));
		last = json_string_value(json_array_get(a, json_array_size(a) - 1));
	}
	gw_stmt_finalize(st);
	return a;
}

/* In one transaction: the rows locked (PostgreSQL: FOR UPDATE SKIP LOCKED,
 * so two gateways claiming at once never both get a row, and neither waits
 * on the other), then marked ours. */
int engine_db_claim(struct gw_engine *eng, const char *device_id)
{
	bool pg = gw_store_backend(eng->store) == GW_STORE_POSTGRESQL;
	uint64_t now = gw_now_ms(eng->gw);
	struct job_list got = TAILQ_HEAD_INITIALIZER(got);
	struct gw_stmt *st;
	struct job *job;
	int r, n = 0;

	r = gw_store_begin(eng->store);
	if (r < 0)
		return r;
	st = gw_store_prepare(eng->store, pg ?
			"SELECT " JOB_COLUMNS " FROM jobs WHERE device_id = ?1 AND "
			JOB_UNFINISHED " AND " JOB_CLAIMABLE " ORDER BY id"
			" FOR UPDATE SKIP LOCKED" :
			"SELECT " JOB_COLUMNS " FROM jobs WHERE device_id = ?1 AND "
			JOB_UNFINISHED " AND " JOB_CLAIMABLE " ORDER BY id");
	if (!st) {
		gw_store_rollback(eng->store);
		return -EIO;
	}
	gw_stmt_bind_text(st, 1, device_id);
	gw_stmt_bind_text(st, 2, eng->me);
	gw_stmt_bind_int64(st, 3, (int64_t)now);
	gw_stmt_bind_int64(st, 4, (int64_t)(now + GW_LEASE_TTL_MAX_MS));
	while ((r = gw_stmt_step(st)) == 1) {
		if (in_memory(eng, gw_stmt_int64(st, 0)))
			continue;
		job = row_job(eng, st);
		TAILQ_INSERT_TAIL(&got, job, entry);
	}
	gw_stmt_finalize(st);
	TAILQ_FOREACH(job, &got, entry) {
		if (r < 0)
			break;
		st = gw_store_prepare(eng->store,
			"UPDATE jobs SET runner = ?2, runner_expires = ?3,"
			" runners = CASE WHEN runner = ?2 AND runners IS NOT NULL THEN runners"
			"  WHEN runners IS NULL THEN ?2 ELSE runners || ',' || ?2 END"
			" WHERE id = ?1 RETURNING runners");
		if (!st) {
			r = -EIO;
			break;
		}
		gw_stmt_bind_int64(st, 1, job->id);
		gw_stmt_bind_text(st, 2, eng->me);
		gw_stmt_bind_int64(st, 3, (int64_t)(now + eng->claim_ttl_ms));
		r = gw_stmt_step(st);
		if (r == 1) {
			free(job->runners);
			job->runners = col_dup(st, 0);
			free(job->runner);
			job->runner = xstrdup(eng->me);
			job->runner_expires = now + eng->claim_ttl_ms;
		}
		gw_stmt_finalize(st);
		r = r == 1 ? 0 : r < 0 ? r : -EIO;
	}
	if (r == 0)
		r = gw_store_commit(eng->store);
	else
		gw_store_rollback(eng->store);
	while ((job = TAILQ_FIRST(&got))) {
		TAILQ_REMOVE(&got, job, entry);
		if (r < 0) {
			engine_job_free(job);
			continue;
		}
		log_notice("job %lld (%s): claimed by %s%s", (long long)job->id, job->device_id,
			   eng->me, job->state == GW_JOB_STATE_RUNNING ?
			   " (it was running: resumed from the watch's state)" : "");
		if (job->state == GW_JOB_STATE_RUNNING)
			job->state = GW_JOB_STATE_QUEUED;
		insert_ordered(eng, job);
		n++;
	}
	if (r < 0)
		log_warn("jobs: cannot claim the jobs of %s: %s", device_id,
			 gw_store_errmsg(eng->store));
	return r < 0 ? r : n;
}

int engine_db_renew(struct gw_engine *eng, void (*cb)(struct gw_engine *eng, int64_t id,
						      bool cancel_req))
{
	uint64_t now = gw_now_ms(eng->gw);
	struct gw_stmt *st = gw_store_prepare(eng->store,
			"UPDATE jobs SET runner_expires = ?2 WHERE runner = ?1 AND "
			JOB_UNFINISHED " AND runner_expires >= ?3 RETURNING id, cancel_req");
	int64_t *ids = NULL;
	bool *cancel = NULL;
	size_t n = 0;
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, eng->me);
	gw_stmt_bind_int64(st, 2, (int64_t)(now + eng->claim_ttl_ms));
	gw_stmt_bind_int64(st, 3, (int64_t)now);
	while ((r = gw_stmt_step(st)) == 1) {
		ids = xrealloc(ids, (n + 1) * sizeof(*ids));
		cancel = xrealloc(cancel, (n + 1) * sizeof(*cancel));
		ids[n] = gw_stmt_int64(st, 0);
		cancel[n++] = gw_stmt_int64(st, 1) != 0;
	}
	gw_stmt_finalize(st);
	/* Called after the statement: a cancel writes the row. */
	for (size_t i = 0; r == 0 && i < n; i++)
		cb(eng, ids[i], cancel[i]);
	free(ids);
	free(cancel);
	return r;
}

void engine_db_notify(struct gw_engine *eng)
{
	if (eng->me && gw_store_backend(eng->store) == GW_STORE_POSTGRESQL)
		gw_store_notify(eng->store, GW_JOBS_CHANNEL, "");
}

void engine_db_release(struct gw_engine *eng, int64_t id)
{
	struct gw_stmt *st = gw_store_prepare(eng->store,
			"UPDATE jobs SET runner_expires = 0 WHERE id = ?1 AND runner = ?2");

	if (st) {
		gw_stmt_bind_int64(st, 1, id);
		gw_stmt_bind_text(st, 2, eng->me);
	}
	gw_stmt_run(st);
	engine_db_notify(eng); /* the next holder claims it now */
}

struct job *engine_db_job(struct gw_engine *eng, int64_t id)
{
	struct gw_stmt *st = gw_store_prepare(eng->store,
			"SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1");
	struct job *job = NULL;

	if (!st)
		return NULL;
	gw_stmt_bind_int64(st, 1, id);
	if (gw_stmt_step(st) == 1)
		job = row_job(eng, st);
	gw_stmt_finalize(st);
	return job;
}

json_t *engine_db_jobs_json(struct gw_engine *eng, const char *device_id,
			    json_t *(*to_json)(const struct job *job))
{
	/* As one gateway lists them: the unfinished and the newest finished,
	 * newest first. */
	struct gw_stmt *st = gw_store_prepare(eng->store, device_id ?
			"SELECT " JOB_COLUMNS " FROM jobs WHERE upper(device_id) = upper(?2)"
			" AND (" JOB_UNFINISHED " OR id > (SELECT coalesce(max(id), 0)"
			" FROM jobs) - ?1) ORDER BY id DESC" :
			"SELECT " JOB_COLUMNS " FROM jobs WHERE " JOB_UNFINISHED
			" OR id > (SELECT coalesce(max(id), 0) FROM jobs) - ?1 ORDER BY id DESC");
	json_t *a = json_array();
	int r;

	if (!st) {
		json_decref(a);
		return NULL;
	}
	gw_stmt_bind_int64(st, 1, ENGINE_FINISHED_KEPT);
	if (device_id)
		gw_stmt_bind_text(st, 2, device_id);
	while ((r = gw_stmt_step(st)) == 1) {
		struct job *job = row_job(eng, st);

		json_array_append_new(a, to_json(job));
		engine_job_free(job);
	}
	gw_stmt_finalize(st);
	if (r < 0) { /* the store cannot be reached: no list rather than part of one */
		json_decref(a);
		return NULL;
	}
	return a;
}

int engine_db_cancel_unclaimed(struct gw_engine *eng, struct job *job)
{
	uint64_t now = gw_now_ms(eng->gw);
	struct gw_stmt *st = gw_store_prepare(eng->store,
			"UPDATE jobs SET state = 'canceled', error = ?5, finished = ?3,"
			" updated = ?3 WHERE id = ?1 AND " JOB_UNFINISHED " AND "
			JOB_CLAIMABLE " RETURNING id");
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_int64(st, 1, job->id);
	gw_stmt_bind_text(st, 2, eng->me);
	gw_stmt_bind_int64(st, 3, (int64_t)now);
	gw_stmt_bind_int64(st, 4, (int64_t)(now + GW_LEASE_TTL_MAX_MS));
	gw_stmt_bind_text(st, 5, job->error);
	r = gw_stmt_step(st);
	gw_stmt_finalize(st);
	if (r == 1) {
		job->state = GW_JOB_STATE_CANCELED;
		job->finished_ms = job->updated_ms = now;
	}
	return r;
}

int engine_db_cancel_request(struct gw_engine *eng, int64_t id)
{
	struct gw_stmt *st = gw_store_prepare(eng->store,
			"UPDATE jobs SET cancel_req = 1 WHERE id = ?1");
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_int64(st, 1, id);
	r = gw_stmt_run(st);
	engine_db_notify(eng); /* its runner acts at its next round: now */
	return r;
}

static void device_id_cb(const struct gw_store_device *d, uint16_t port, void *user_data)
{
	char **ret = user_data;

	if (!*ret)
		*ret = xstrdup(d->id);
}

char *engine_db_device(struct gw_engine *eng, const char *id)
{
	char *ret = NULL;

	if (eng->store)
		gw_store_device_get(eng->store, id, device_id_cb, &ret);
	return ret;
}
