/* SPDX-License-Identifier: MIT */
/*
 * The rollout scheduler (see rollouts.h). One timer per rollout drives it:
 * each tick places the rollout in its window, asks the planner which
 * devices to try, probes them (an img state read: is the watch in range,
 * what does it run?), and hands the ones that need the image to the
 * upload engine. Job results come back as "job.result" events; device
 * events make unseen devices eligible again at once.
 *
 * Durability: the intent to submit ("submitting") is committed before the
 * job is handed over and the job id right after, so a restart finds either
 * the job (adopted from the engine's records by its rollout id) or nothing
 * (the device is pending again). A device with a job recorded as running
 * or done never gets another one.
 */
#include "gateway/rollouts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "codec/cbor-util.h"
#include "codec/mcuboot.h"
#include "codec/smp.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/events.h"
#include "gateway/gateway.h"
#include "gateway/lease.h"
#include "gateway/log.h"
#include "gateway/rollouts-int.h"
#include "gateway/store.h"
#include "util/util.h"

#define POLL_JOBS_MS 5000      /* safety net beside job.result events */
#define MAX_SLEEP_MS 60000     /* re-check the window at least this often */
#define UNHELD_RETRY_MS 5000   /* several gateways: a watch nobody holds, again */

static void tick(struct rollout *r);

static struct gw *gw_of(const struct rollout *r)
{
	return r->owner->gw;
}

static struct gw_store *store_of(const struct rollout *r)
{
	return gw_store(gw_of(r));
}

static int64_t now_of(const struct rollout *r)
{
	return (int64_t)gw_now_ms(gw_of(r));
}

static void set_str(char **dst, const char *s)
{
	char *old = *dst;

	*dst = s ? xstrdup(s) : NULL; /* s may be *dst itself */
	free(old);
}

void ro_free(struct rollout *r)
{
	if (!r)
		return;
	if (r->timer)
		event_free(r->timer);
	for (size_t i = 0; i < r->n; i++) {
		free(r->devs[i].id);
		free(r->devs[i].error);
		free(r->devs[i].from_version);
	}
	free(r->devs);
	ro_spec_clear(&r->spec);
	json_decref(r->spec_json);
	free(r->id);
	free(r->image_id);
	free(r->image_version);
	free(r->reason);
	free(r->scheduler);
	free(r->command);
	free(r);
}

static struct rollout *find(struct gw_rollouts *ro, const char *id)
{
	for (struct rollout *r = ro->list; r && id; r = r->next)
		if (!strcmp(r->id, id))
			return r;
	return NULL;
}

/* ---- events ---- */

static void emit(struct rollout *r, const char *type, json_t *data)
{
	gw_events_emit(gw_events(gw_of(r)), type, data);
}

static void emit_progress(struct rollout *r)
{
	emit(r, "rollout.progress",
	     json_pack("{s:s, s:s, s:o}", "rollout", r->id,
		       "state", rollout_state_str(r->state),
		       "totals", ro_totals_json(r)));
}

static void emit_dev(struct ro_dev *d)
{
	emit(d->ro, "rollout.device", ro_dev_json(d));
	emit_progress(d->ro);
}

/* ---- state changes (committed, then announced) ---- */

static void kick(struct rollout *r)
{
	if (r->timer)
		event_active(r->timer, EV_TIMEOUT, 0);
}

static int save_dev(struct ro_dev *d)
{
	int err = store_of(d->ro) ? ro_db_save_dev(store_of(d->ro), d) : 0;

	if (err < 0)
		log_err("rollout %s: cannot record %s: %s", d->ro->id, d->id,
			strerror(-err));
	return err;
}

static void dev_outcome(struct ro_dev *d, enum rollout_dev_state st,
			const char *error)
{
	d->state = st;
	set_str(&d->error, error);
	d->finished_ms = rollout_dev_state_final(st) ? now_of(d->ro) : 0;
	save_dev(d);
	log_info("rollout %s: %s %s%s%s", d->ro->id, d->id,
		 rollout_dev_state_str(st), error ? ": " : "", error ? error : "");
	emit_dev(d);
	kick(d->ro);
}

/* Changes r's state in memory and in the store (inside the caller's
 * transaction, if any). *ret_err gets the store's verdict. */
static enum rollout_state apply_state(struct rollout *r, enum rollout_state st,
				      const char *reason, int *ret_err)
{
	enum rollout_state prev = r->state;
	int64_t now = now_of(r);
	int err;

	r->state = st;
	set_str(&r->reason, reason); /* reason may be r->reason */
	if (st == ROLLOUT_STATE_RUNNING && !r->started_ms)
		r->started_ms = now;
	if (st == ROLLOUT_STATE_COMPLETED || st == ROLLOUT_STATE_CANCELED)
		r->finished_ms = now;
	else
		r->finished_ms = 0;
	err = store_of(r) ? ro_db_save(store_of(r), r) : 0;
	if (err < 0)
		log_err("rollout %s: cannot record its state: %s", r->id, strerror(-err));
	*ret_err = err;
	return prev;
}

static void announce_state(struct rollout *r, enum rollout_state prev)
{
	const char *reason = r->reason;

	log_notice("rollout %s: %s -> %s%s%s", r->id, rollout_state_str(prev),
		   rollout_state_str(r->state), reason ? ": " : "", reason ? reason : "");
	emit(r, "rollout.state",
	     json_pack("{s:s, s:s, s:s, s:s?}", "rollout", r->id,
		       "state", rollout_state_str(r->state),
		       "previous", rollout_state_str(prev), "reason", reason));
	emit_progress(r);
	kick(r);
}

static int set_state(struct rollout *r, enum rollout_state st,
		     const char *reason)
{
	int err;
	enum rollout_state prev = apply_state(r, st, reason, &err);

	announce_state(r, prev);
	return err;
}

/* ---- job results ---- */

static enum rollout_dev_state job_outcome(const struct rollout *r,
					  enum gw_job_state st, bool up_to_date)
{
	switch (st) {
	case GW_JOB_STATE_DONE:
		return up_to_date ? ROLLOUT_DEV_UP_TO_DATE : ROLLOUT_DEV_UPDATED;
	case GW_JOB_STATE_FAILED:
		return ROLLOUT_DEV_FAILED;
	case GW_JOB_STATE_ROLLED_BACK:
		return ROLLOUT_DEV_ROLLED_BACK;
	case GW_JOB_STATE_LOST:
		return ROLLOUT_DEV_LOST;
	case GW_JOB_STATE_CANCELED:
		return r->state == ROLLOUT_STATE_CANCELED ? ROLLOUT_DEV_CANCELED :
		       ROLLOUT_DEV_FAILED;
	case GW_JOB_STATE_QUEUED:
	case GW_JOB_STATE_RUNNING:
		break;
	}
	return ROLLOUT_DEV_RUNNING;
}

static int job_state_parse(const char *s, enum gw_job_state *ret)
{
	for (int i = GW_JOB_STATE_QUEUED; i <= GW_JOB_STATE_CANCELED; i++)
		if (s && !strcmp(s, gw_job_state_str((enum gw_job_state)i))) {
			*ret = (enum gw_job_state)i;
			return 0;
		}
	return -EINVAL;
}

/* Applies a job's record (event data or gw_job_to_json) to d when the job
 * is d's current one and final. */
static void apply_job(struct ro_dev *d, const json_t *job)
{
	enum gw_job_state st;
	enum rollout_dev_state out;
	const char *err = json_string_value(json_object_get(job, "error"));

	if (job_state_parse(json_string_value(json_object_get(job, "state")), &st) < 0)
		return;
	out = job_outcome(d->ro, st, json_is_true(json_object_get(job, "up_to_date")));
	if (out == ROLLOUT_DEV_RUNNING)
		return;
	if (st == GW_JOB_STATE_CANCELED && d->ro->state != ROLLOUT_STATE_CANCELED && !err)
		err = "job canceled outside the rollout";
	dev_outcome(d, out, out == ROLLOUT_DEV_UPDATED ||
		    out == ROLLOUT_DEV_UP_TO_DATE ? NULL : err);
}

static bool acting(const struct rollout *r);

static struct ro_dev *dev_by_job(struct gw_rollouts *ro, int64_t job_id)
{
	for (struct rollout *r = ro->list; r; r = r->next)
		for (size_t i = 0; acting(r) && i < r->n; i++)
			if (r->devs[i].job_id == job_id &&
			    (r->devs[i].state == ROLLOUT_DEV_RUNNING ||
			     r->devs[i].state == ROLLOUT_DEV_SUBMITTING))
				return &r->devs[i];
	return NULL;
}

/* ---- probes ---- */

static void not_seen(struct ro_dev *d, const char *why)
{
	int64_t now = now_of(d->ro);

	d->retry_at_ms = now + d->ro->spec.retry_interval_ms;
	d->last_try_ms = now;
	log_debug("rollout %s: %s not seen (%s); next try in %u s", d->ro->id, d->id,
		  why, d->ro->spec.retry_interval_ms / 1000);
	save_dev(d);
}

struct slot_view {
	bool found, active, confirmed;
	char version[32];
	uint8_t hash[32];
};

/* The active slot of image 0 from an img state response payload. */
static int parse_active(const uint8_t *frame, size_t len, struct slot_view *ret)
{
	cbor_item_t *root = NULL;
	const cbor_item_t *images;
	int err = smp_cbor_decode(frame + SMP_HDR_LEN, len - SMP_HDR_LEN, &root);

	if (err < 0)
		return err;
	images = smp_cbor_map_get(root, "images");
	for (size_t i = 0; images && cbor_isa_array(images) &&
	     i < cbor_array_size(images); i++) {
		cbor_item_t *im = cbor_array_get(images, i);
		struct slot_view v = { 0 };
		uint64_t image = 0;
		size_t hl = 0;

		smp_cbor_get_uint(im, "image", &image);
		smp_cbor_get_bool(im, "active", &v.active);
		smp_cbor_get_bool(im, "confirmed", &v.confirmed);
		smp_cbor_get_text(im, "version", v.version, sizeof(v.version), NULL);
		if (image == 0 && v.active &&
		    smp_cbor_get_bytes(im, "hash", v.hash, sizeof(v.hash), &hl) == 0 &&
		    hl == sizeof(v.hash)) {
			v.found = true;
			*ret = v;
		}
		cbor_decref(&im);
	}
	cbor_decref(&root);
	return images ? 0 : -EBADMSG;
}

static bool hash_is(const uint8_t *hash, const char *hex)
{
	char h[65];

	hex_encode(hash, 32, h);
	return hex && !strcasecmp(h, hex);
}

static void submit(struct ro_dev *d);

/* Decides from what the watch runs: already there, not targeted, or a job. */
static void decide(struct ro_dev *d, const struct slot_view *v)
{
	struct rollout *r = d->ro;
	bool confirm = r->spec.mode == GW_JOB_MODE_TEST_CONFIRM;

	char canon[MCUBOOT_VERSION_STR_LEN];

	/* The report speaks the one canonical form ("1.0.0+0"), like
	 * GET /images and the device model; an odd text stays as sent. */
	if (v->found && !d->from_version)
		set_str(&d->from_version, mcuboot_version_canonical(v->version, canon,
								    sizeof(canon)) == 0 ?
			canon : v->version);
	if (v->found && hash_is(v->hash, r->image_id) && (v->confirmed || !confirm)) {
		dev_outcome(d, ROLLOUT_DEV_UP_TO_DATE, NULL);
		return;
	}
	/* The glob may be written in either form ("1.0.*" or "1.0.0+*"). */
	if (r->spec.version_glob && v->found &&
	    !rollout_glob_match(r->spec.version_glob, v->version) &&
	    !(mcuboot_version_canonical(v->version, canon, sizeof(canon)) == 0 &&
	      rollout_glob_match(r->spec.version_glob, canon))) {
		dev_outcome(d, ROLLOUT_DEV_EXCLUDED, NULL);
		return;
	}
	if (r->spec.outdated && v->found && v->confirmed &&
	    rollout_version_equal(v->version, r->image_version)) {
		dev_outcome(d, ROLLOUT_DEV_UP_TO_DATE, NULL);
		return;
	}
	submit(d);
}

static void probe_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct ro_dev *d = user_data;
	struct slot_view v = { 0 };

	d->busy = false;
	d->probe_req = 0;
	d->probe_dev = NULL;
	if (d->ro->state != ROLLOUT_STATE_RUNNING || d->state != ROLLOUT_DEV_PENDING) {
		kick(d->ro);
		return;
	}
	if (err < 0) {
		not_seen(d, strerror(-err));
		kick(d->ro);
		return;
	}
	/* An answer we cannot read still proves the watch is there: the
	 * engine reads the state again and reports what is wrong. */
	if (parse_active(frame, len, &v) < 0)
		v.found = false;
	decide(d, &v);
	kick(d->ro);
}

/* The active slot of image 0 from the store's typed slots (devmodel.h). */
static void stored_slots_cb(const struct gw_store_device *sd, uint16_t port,
			    void *user_data)
{
	struct slot_view *v = user_data;
	json_t *slots = sd->slots_json ? json_loads(sd->slots_json, 0, NULL) : NULL, *s;
	size_t i;

	json_array_foreach(slots, i, s) {
		const char *hash = json_string_value(json_object_get(s, "hash"));
		const char *ver = json_string_value(json_object_get(s, "version_text"));

		if (json_integer_value(json_object_get(s, "image")) != 0 ||
		    !json_is_true(json_object_get(s, "active")) || !hash ||
		    hex_decode(hash, v->hash, sizeof(v->hash)) != (int)sizeof(v->hash))
			continue;
		if (!ver)
			ver = json_string_value(json_object_get(s, "version"));
		snprintf(v->version, sizeof(v->version), "%s", ver ? ver : "");
		v->confirmed = json_is_true(json_object_get(s, "confirmed"));
		v->found = true;
	}
	json_decref(slots);
}

/* Several gateways: a watch another gateway holds. Seen when a gateway
 * holds its lease; what it runs is what its holder last read (the store's
 * slots). Unknown slots: the job reads the state itself and finds out
 * (an image already running ends it up to date). */
static void probe_elsewhere(struct ro_dev *d)
{
	struct gw *gw = gw_of(d->ro);
	struct slot_view v = { 0 };
	char *holder = NULL;

	if (gw_lease_holder(gw, d->id, &holder) < 0) {
		not_seen(d, "no gateway holds it");
		/* A lease is how the fleet says it sees the watch (as BLE
		 * advertisements do for a local one): looked for again soon. */
		if (d->retry_at_ms > now_of(d->ro) + UNHELD_RETRY_MS)
			d->retry_at_ms = now_of(d->ro) + UNHELD_RETRY_MS;
		return;
	}
	free(holder);
	gw_store_device_get(gw_store(gw), d->id, stored_slots_cb, &v);
	decide(d, &v);
}

static void probe(struct ro_dev *d)
{
	struct rollout *r = d->ro;
	struct gw_device *dev = gw_device_find(gw_of(r), d->id);
	/* The link gets the configured connect time (a BLE connection takes
	 * seconds); the watch then has probe_timeout_ms to answer. */
	struct gw_req_opts opts = { .timeout_ms = r->spec.probe_timeout_ms };
	struct smp_hdr h = { .op = SMP_OP_READ, .ver = SMP_VER_2,
			     .group = SMP_GROUP_IMG, .id = SMP_IMG_STATE };
	uint8_t *frame = NULL;
	size_t len = 0;
	int64_t id;

	if (!dev && r->owner->me) {
		probe_elsewhere(d);
		return;
	}
	if (!dev) {
		not_seen(d, "not known to the gateway yet");
		return;
	}
	if (smp_frame_build(&h, NULL, &frame, &len) < 0) {
		not_seen(d, "cannot build a request");
		return;
	}
	d->busy = true;
	d->probe_dev = dev;
	id = gw_device_request(dev, frame, len, &opts, probe_cb, d);
	free(frame);
	if (id < 0) {
		d->busy = false;
		d->probe_dev = NULL;
		not_seen(d, strerror((int)-id));
	} else if (d->busy) {
		d->probe_req = id;
	}
}

static void cancel_probe(struct ro_dev *d)
{
	if (d->busy && d->probe_dev && d->probe_req > 0)
		gw_device_cancel(d->probe_dev, d->probe_req);
	d->busy = false;
	d->probe_req = 0;
	d->probe_dev = NULL;
}

/* ---- jobs ---- */

static void submit(struct ro_dev *d)
{
	struct rollout *r = d->ro;
	struct gw_engine *eng = gw_engine(gw_of(r));
	struct gw_job_opts opts = { .rollout_id = r->id };
	json_t *job;
	int64_t id;

	if (!eng) {
		not_seen(d, "no upload engine");
		return;
	}
	/* The intent first: a restart between here and the job id being
	 * recorded adopts the engine's job instead of making a second one. */
	d->state = ROLLOUT_DEV_SUBMITTING;
	d->attempts++;
	if (!d->started_ms)
		d->started_ms = now_of(r);
	if (save_dev(d) < 0) {
		d->state = ROLLOUT_DEV_PENDING;
		d->attempts--;
		not_seen(d, "store unavailable");
		return;
	}
	id = gw_job_submit(eng, d->id, r->image_id, r->spec.mode, &opts);
	if (id < 0) {
		char msg[128];

		snprintf(msg, sizeof(msg), "the upload engine refused the job: %s",
			 strerror((int)-id));
		dev_outcome(d, ROLLOUT_DEV_FAILED, msg);
		return;
	}
	d->job_id = id;
	d->state = ROLLOUT_DEV_RUNNING;
	save_dev(d);
	log_info("rollout %s: %s: job %lld (wave %u)", r->id, d->id, (long long)id,
		 d->wave);
	emit_dev(d);
	job = gw_job_to_json(eng, id);
	if (job)
		apply_job(d, job);
	json_decref(job);
}

/* Finds the engine's job for d made after d's last recorded one. */
static int64_t find_adoptable(struct gw_engine *eng, const struct ro_dev *d)
{
	json_t *jobs = gw_jobs_to_json(eng, d->id), *j;
	int64_t best = 0;
	size_t i;

	json_array_foreach(jobs, i, j) {
		const char *ro = json_string_value(json_object_get(j, "rollout"));
		int64_t id = json_integer_value(json_object_get(j, "id"));

		if (ro && !strcmp(ro, d->ro->id) && id > d->job_id && id > best)
			best = id;
	}
	json_decref(jobs);
	return best;
}

/* Brings d's record in line with the engine's (startup, and a slow poll). */
static void reconcile_dev(struct ro_dev *d, struct gw_engine *eng)
{
	json_t *job;

	if (d->state == ROLLOUT_DEV_SUBMITTING) {
		int64_t id = find_adoptable(eng, d);

		if (!id) {
			/* The submit never became durable: nothing ran. */
			d->state = ROLLOUT_DEV_PENDING;
			if (d->attempts)
				d->attempts--;
			save_dev(d);
			return;
		}
		d->job_id = id;
		d->state = ROLLOUT_DEV_RUNNING;
		save_dev(d);
		log_notice("rollout %s: %s: adopted job %lld", d->ro->id, d->id,
			   (long long)id);
	}
	if (d->state != ROLLOUT_DEV_RUNNING)
		return;
	job = gw_job_to_json(eng, d->job_id);
	if (!job) {
		/* The engine no longer lists it (only old finished jobs drop
		 * out): a probe tells whether the image runs; a pending device
		 * whose image is active and confirmed counts as done. */
		log_warn("rollout %s: %s: job %lld unknown to the engine; checking "
			 "the watch again", d->ro->id, d->id, (long long)d->job_id);
		d->state = ROLLOUT_DEV_PENDING;
		save_dev(d);
		return;
	}
	apply_job(d, job);
	if (d->state == ROLLOUT_DEV_RUNNING && d->ro->state == ROLLOUT_STATE_CANCELED)
		gw_job_cancel(eng, d->job_id);
	json_decref(job);
}

static void reconcile(struct rollout *r)
{
	struct gw_engine *eng = gw_engine(gw_of(r));

	for (size_t i = 0; eng && i < r->n; i++)
		reconcile_dev(&r->devs[i], eng);
}

/* ---- the tick ---- */

static size_t build_views(struct rollout *r, int64_t now,
			  struct rollout_dev_view *v)
{
	for (size_t i = 0; i < r->n; i++) {
		const struct ro_dev *d = &r->devs[i];

		v[i] = (struct rollout_dev_view){
			.state = d->state, .wave = d->wave, .acked = d->acked,
			.busy = d->busy,
			.later = d->state == ROLLOUT_DEV_PENDING && d->retry_at_ms > now,
		};
	}
	return r->n;
}

static void drive(struct rollout *r, int64_t now)
{
	struct rollout_dev_view *v = xnew_array(struct rollout_dev_view, r->n + 1);
	size_t *pick = xnew_array(size_t, r->n + 1);
	struct rollout_eval ev;
	size_t k;

	build_views(r, now, v);
	if (rollout_evaluate(&r->spec.policy, v, r->n, &ev, NULL, 0) < 0) {
		set_state(r, ROLLOUT_STATE_PAUSED, "invalid policy");
	} else if (ev.finished) {
		set_state(r, ROLLOUT_STATE_COMPLETED, NULL);
	} else if (ev.stop || ev.stuck) {
		set_state(r, ROLLOUT_STATE_PAUSED, ev.reason);
	} else {
		k = rollout_pick(&r->spec.policy, v, r->n, &ev, pick, r->n);
		for (size_t i = 0; i < k && r->state == ROLLOUT_STATE_RUNNING; i++)
			probe(&r->devs[pick[i]]);
	}
	free(pick);
	free(v);
}

/* Windows that ended: after expire_after_windows of them the devices never
 * seen get their outcome. */
static void window_ended(struct rollout *r)
{
	r->windows_done++;
	if (!r->spec.expire_windows || r->windows_done < r->spec.expire_windows) {
		set_state(r, ROLLOUT_STATE_WAITING, "window ended");
		return;
	}
	for (size_t i = 0; i < r->n; i++) {
		struct ro_dev *d = &r->devs[i];

		cancel_probe(d);
		if (d->state == ROLLOUT_DEV_PENDING)
			dev_outcome(d, ROLLOUT_DEV_NOT_SEEN, "never in range during the window(s)");
	}
	set_state(r, ROLLOUT_STATE_WAITING, "window ended; unseen devices expired");
}

/* Every device has an outcome (jobs that ran past the window included). */
static bool all_final(const struct rollout *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (!rollout_dev_state_final(r->devs[i].state))
			return false;
	return true;
}

static int64_t next_wakeup(struct rollout *r, int64_t now, int64_t boundary)
{
	int64_t at = now + MAX_SLEEP_MS;

	if (boundary < at)
		at = boundary;
	for (size_t i = 0; i < r->n; i++) {
		const struct ro_dev *d = &r->devs[i];

		if (r->state == ROLLOUT_STATE_RUNNING &&
		    d->state == ROLLOUT_DEV_PENDING && d->retry_at_ms > now &&
		    d->retry_at_ms < at)
			at = d->retry_at_ms;
		if (d->state == ROLLOUT_DEV_RUNNING && now + POLL_JOBS_MS < at)
			at = now + POLL_JOBS_MS;
	}
	return at;
}

static void schedule(struct rollout *r, int64_t now, int64_t boundary)
{
	int64_t at = next_wakeup(r, now, boundary);
	int64_t delay = at > now ? at - now : 0;
	struct timeval tv = { .tv_sec = delay / 1000,
			      .tv_usec = (delay % 1000) * 1000 + 1000 };

	evtimer_add(r->timer, &tv);
}

/* Several gateways: only the one scheduler acts, and only while its
 * ownership is renewed (a third of the ttl before it could lapse). */
static bool acting(const struct rollout *r)
{
	return !r->owner->me || (r->active && now_of(r) < r->owned_until);
}

static void tick(struct rollout *r)
{
	int64_t now = now_of(r), boundary = INT64_MAX;
	bool inside = true;

	if (r->state == ROLLOUT_STATE_COMPLETED || r->state == ROLLOUT_STATE_CANCELED ||
	    !acting(r))
		return;
	if (rollout_window_locate(&r->spec.window, now, &inside, &boundary, NULL) < 0)
		inside = true; /* checked at creation; a zone file that vanished */
	if (r->state == ROLLOUT_STATE_WAITING && inside)
		set_state(r, ROLLOUT_STATE_RUNNING, NULL);
	else if (r->state == ROLLOUT_STATE_RUNNING && !inside)
		window_ended(r);
	if (now - r->last_poll_ms >= POLL_JOBS_MS) {
		r->last_poll_ms = now;
		reconcile(r);
	}
	if (r->state == ROLLOUT_STATE_WAITING && all_final(r))
		set_state(r, ROLLOUT_STATE_COMPLETED, r->reason);
	if (r->state == ROLLOUT_STATE_RUNNING)
		drive(r, now);
	if (r->state != ROLLOUT_STATE_COMPLETED && r->state != ROLLOUT_STATE_CANCELED)
		schedule(r, now_of(r), boundary);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	tick(arg);
}

/* ---- bus ---- */

static void on_device_event(struct gw_rollouts *ro, const char *id)
{
	for (struct rollout *r = ro->list; r && id; r = r->next) {
		if (r->state != ROLLOUT_STATE_RUNNING || !acting(r))
			continue;
		for (size_t i = 0; i < r->n; i++) {
			struct ro_dev *d = &r->devs[i];

			if (d->state == ROLLOUT_DEV_PENDING && d->retry_at_ms &&
			    !strcasecmp(d->id, id)) {
				d->retry_at_ms = 0;
				kick(r);
			}
		}
	}
}

static void on_event(const struct gw_event *ev, void *user_data)
{
	struct gw_rollouts *ro = user_data;

	if (!strcmp(ev->type, "job.result")) {
		json_t *id = json_object_get(ev->data, "id");
		struct ro_dev *d = json_is_integer(id) ?
				   dev_by_job(ro, json_integer_value(id)) : NULL;

		if (d)
			apply_job(d, ev->data);
	} else if (!strcmp(ev->type, "device.seen") ||
		   !strcmp(ev->type, "device.connected") ||
		   !strcmp(ev->type, "device.added")) {
		on_device_event(ro, json_string_value(json_object_get(ev->data, "id")));
	}
}

/* ---- construction ---- */

static void attach(struct gw_rollouts *ro, struct rollout *r)
{
	r->owner = ro;
	for (size_t i = 0; i < r->n; i++)
		r->devs[i].ro = r;
	r->timer = evtimer_new(gw_base(ro->gw), on_timer, r);
	r->next = ro->list;
	ro->list = r;
}

static void load_one(struct rollout *r, void *user_data)
{
	attach(user_data, r);
}

/* ---- several gateways: one scheduler per rollout ---- */

#define OWN_ROUND_MS 2000

static void detach(struct gw_rollouts *ro, struct rollout *r)
{
	for (struct rollout **p = &ro->list; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	for (size_t i = 0; i < r->n; i++)
		cancel_probe(&r->devs[i]);
}

/* This gateway schedules r from now on: its records are read again (the
 * last scheduler wrote them) and reconciled with the jobs of the fleet. */
static struct rollout *take_over(struct gw_rollouts *ro, struct rollout *r)
{
	struct rollout *fresh = ro_db_load_one(gw_store(ro->gw), r->id);
	int64_t now = (int64_t)gw_now_ms(ro->gw);

	if (!fresh)
		return NULL;
	/* r is the copy read before the claim: who had it then. */
	if (r->scheduler && strcmp(r->scheduler, ro->me))
		log_notice("rollout %s: scheduled by %s (taken over from %s)", r->id, ro->me,
			   r->scheduler);
	else
		log_notice("rollout %s: scheduled by %s", r->id, ro->me);
	detach(ro, r);
	ro_free(r);
	attach(ro, fresh);
	fresh->active = true;
	fresh->owned_until = now + ro->ttl_ms - ro->ttl_ms / 3;
	reconcile(fresh);
	kick(fresh);
	return fresh;
}

static void go_passive(struct rollout *r, const char *why)
{
	if (!r->active)
		return;
	r->active = false;
	for (size_t i = 0; i < r->n; i++)
		cancel_probe(&r->devs[i]);
	evtimer_del(r->timer);
	log_notice("rollout %s: no longer scheduled by %s (%s)", r->id, r->owner->me, why);
}

static int do_pause(struct rollout *r, char **errmsg);
static int do_resume(struct rollout *r, char **errmsg);
static int do_cancel(struct rollout *r, char **errmsg);
static int do_retry_failed(struct rollout *r, char **errmsg);

static const struct {
	const char *name;
	int (*fn)(struct rollout *r, char **errmsg);
} commands[] = {
	{ "pause", do_pause }, { "resume", do_resume }, { "cancel", do_cancel },
	{ "retry-failed", do_retry_failed },
};

/* A person's action asked on another gateway: taken, then done here. */
static void run_command(struct rollout *r, const char *cmd)
{
	char *msg = NULL;

	if (ro_db_command(store_of(r), r->id, cmd, false) < 0)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(commands[i].name, cmd))
			continue;
		if (commands[i].fn(r, &msg) < 0)
			log_notice("rollout %s: %s asked on another gateway: %s", r->id, cmd,
				   msg ? msg : "refused");
		else
			log_notice("rollout %s: %s asked on another gateway: done", r->id, cmd);
		free(msg);
		return;
	}
	log_warn("rollout %s: unknown command \"%s\" in the store: ignored", r->id, cmd);
}

static void head_cb(const char *id, const char *state, void *user_data)
{
	json_array_append_new(user_data, json_pack("{s:s, s:s}", "id", id ? id : "",
						   "state", state ? state : ""));
}

/* Every OWN_ROUND_MS: new rollouts of other gateways become known; every
 * unfinished rollout is claimed or renewed (one gateway wins), taken over
 * when its scheduler died, let go when another gateway has it. */
#define UNREADABLE_RETRY_MS 60000

static void own_round(struct gw_rollouts *ro)
{
	struct gw_store *st = gw_store(ro->gw);
	int64_t now = (int64_t)gw_now_ms(ro->gw);
	json_t *heads = json_array(), *h;
	size_t i;

	if (ro_db_heads(st, head_cb, heads) < 0) {
		for (struct rollout *r = ro->list; r; r = r->next)
			if (r->active && now >= r->owned_until)
				go_passive(r, "the store is unreachable");
		json_decref(heads);
		return;
	}
	json_array_foreach(heads, i, h) {
		const char *id = json_string_value(json_object_get(h, "id"));
		enum rollout_state state;
		struct rollout *r = find(ro, id);
		char *cmd = NULL;
		int c;

		/* A row that does not load (a corrupted spec) is tried (and
		 * logged) again once a minute, not at every round. */
		if (!r && now - json_integer_value(json_object_get(ro->unreadable, id)) <
		    UNREADABLE_RETRY_MS)
			continue;
		if (!r && (r = ro_db_load_one(st, id)))
			attach(ro, r);
		else if (!r && id)
			json_object_set_new(ro->unreadable, id, json_integer(now));
		if (!r || rollout_state_parse(json_string_value(json_object_get(h, "state")),
					      &state) < 0)
			continue;
		if (state == ROLLOUT_STATE_COMPLETED || state == ROLLOUT_STATE_CANCELED) {
			/* Done: nothing to schedule (retry-failed claims it again). */
			if (r->active) {
				ro_db_release(st, r->id, ro->me);
				r->active = false;
				evtimer_del(r->timer);
			}
			continue;
		}
		c = ro_db_claim(st, r->id, ro->me, now, ro->ttl_ms, &cmd);
		if (c == 1) {
			/* Still ours, but its claim ran past owned_until while
			 * the store was away: tick() stopped acting (and
			 * re-arming its timer) then; it goes on now. */
			bool stalled = r->active && now >= r->owned_until;

			if (!r->active)
				r = take_over(ro, r);
			if (r)
				r->owned_until = now + ro->ttl_ms - ro->ttl_ms / 3;
			if (r && stalled) {
				log_notice("rollout %s: the store is reachable again:"
					   " scheduled by %s again", r->id, ro->me);
				kick(r);
			}
			if (r && cmd)
				run_command(r, cmd);
		} else if (c == 0) {
			go_passive(r, "another gateway schedules it");
		} else if (r->active && now >= r->owned_until) {
			go_passive(r, "the store is unreachable");
		}
		free(cmd);
	}
	json_decref(heads);
}

static void own_cb(evutil_socket_t fd, short what, void *arg)
{
	own_round(arg);
}

/* A job finished (or was queued) on some gateway: the rollouts this
 * gateway schedules look at their running devices' jobs now rather than
 * at their next poll. */
static void jobs_notified(bool reconnected, void *user_data)
{
	struct gw_rollouts *ro = user_data;

	for (struct rollout *r = ro->list; r; r = r->next)
		if (acting(r) && r->state != ROLLOUT_STATE_COMPLETED &&
		    r->state != ROLLOUT_STATE_CANCELED) {
			r->last_poll_ms = 0;
			kick(r);
		}
}

struct gw_rollouts *gw_rollouts_new(struct gw *gw, int *err)
{
	struct gw_rollouts *ro = xnew(struct gw_rollouts);
	struct gw_store *st = gw_store(gw);
	int r;

	ro->gw = gw;
	if (st) {
		r = ro_db_load(st, load_one, ro);
		if (r < 0) {
			log_err("rollouts: cannot read the store: %s", strerror(-r));
			if (err)
				*err = r;
			return gw_rollouts_free(ro);
		}
		ro->next_seq = ro_db_max_seq(st);
	}
	ro->sub = gw_events_subscribe(gw_events(gw), on_event, ro);
	if (st && gw_config(gw)->gateway.id) {
		/* Several gateways: the ownership round decides which rollouts
		 * this gateway schedules (at once, then every 2 s). */
		struct timeval tv = { OWN_ROUND_MS / 1000, (OWN_ROUND_MS % 1000) * 1000 };

		ro->me = xstrdup(gw_config(gw)->gateway.id);
		ro->ttl_ms = gw_config(gw)->gateway.lease_ttl_ms ?
			     gw_config(gw)->gateway.lease_ttl_ms : 15000;
		ro->own_ev = event_new(gw_base(gw), -1, EV_PERSIST, own_cb, ro);
		ro->unreadable = json_object();
		event_add(ro->own_ev, &tv);
		event_active(ro->own_ev, 0, 0);
		ro->listener = gw_store_listen(st, gw_base(gw), GW_JOBS_CHANNEL, OWN_ROUND_MS,
					       jobs_notified, ro, NULL);
	}
	for (struct rollout *x = ro->list; x && !ro->me; x = x->next) {
		reconcile(x);
		kick(x);
	}
	gw_set_rollouts(gw, ro);
	return ro;
}

struct gw_rollouts *gw_rollouts_free(struct gw_rollouts *ro)
{
	struct rollout *r;

	if (!ro)
		return NULL;
	if (gw_rollouts(ro->gw) == ro)
		gw_set_rollouts(ro->gw, NULL);
	if (ro->sub)
		gw_events_unsubscribe(gw_events(ro->gw), ro->sub);
	gw_store_listener_free(ro->listener);
	if (ro->own_ev)
		event_free(ro->own_ev);
	while ((r = ro->list)) {
		ro->list = r->next;
		for (size_t i = 0; i < r->n; i++)
			cancel_probe(&r->devs[i]);
		/* A clean stop: another gateway takes the rollout over at its
		 * next round. */
		if (r->active)
			ro_db_release(gw_store(ro->gw), r->id, ro->me);
		ro_free(r);
	}
	json_decref(ro->unreadable);
	free(ro->me);
	free(ro);
	return NULL;
}

/* ---- creation ---- */

struct cand {
	char *id, *name;
};

struct cands {
	struct cand *v;
	size_t n;
	const struct ro_spec *spec;
};

static void cand_add(struct cands *c, const char *id, const char *name)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strcasecmp(c->v[i].id, id))
			return;
	if (!rollout_glob_match(c->spec->name_glob, name ? name : id))
		return;
	c->v = xrealloc(c->v, (c->n + 1) * sizeof(*c->v));
	c->v[c->n].id = xstrdup(id);
	c->v[c->n].name = name ? xstrdup(name) : NULL;
	c->n++;
}

static void cand_live(struct gw_device *dev, void *user_data)
{
	cand_add(user_data, gw_device_id(dev), gw_device_name(dev));
}

static void cand_stored(const struct gw_store_device *d, uint16_t port,
			void *user_data)
{
	cand_add(user_data, d->id, d->name);
}

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	return strverscmp(x->name ? x->name : x->id, y->name ? y->name : y->id);
}

static void cands_clear(struct cands *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].id);
		free(c->v[i].name);
	}
	free(c->v);
}

struct stored_find {
	const char *want;
	char *id;
};

static void stored_find_cb(const struct gw_store_device *d, uint16_t port,
			   void *user_data)
{
	struct stored_find *f = user_data;

	if (!f->id && (!strcasecmp(d->id, f->want) ||
		       (d->name && !strcmp(d->name, f->want))))
		f->id = xstrdup(d->id);
}

/* Known devices: those the registry has now and those the store has met
 * (a BLE watch not discovered since the last start). New string or NULL. */
static char *known_device(struct gw *gw, const char *id_or_name)
{
	struct gw_device *dev = gw_device_find(gw, id_or_name);
	struct stored_find f = { .want = id_or_name };

	if (dev)
		return xstrdup(gw_device_id(dev));
	if (gw_store(gw))
		gw_store_device_foreach(gw_store(gw), stored_find_cb, &f);
	return f.id;
}

static int resolve_targets(struct gw_rollouts *ro, const struct ro_spec *spec,
			   struct cands *c, char **errmsg)
{
	size_t i;
	json_t *v;

	c->spec = spec;
	if (spec->devices) {
		json_array_foreach(spec->devices, i, v) {
			char *id = known_device(ro->gw, json_string_value(v));

			if (!id) {
				*errmsg = xasprintf("target.devices: unknown device \"%s\"",
						    json_string_value(v));
				return -ENODEV;
			}
			cand_add(c, id, NULL);
			free(id);
		}
	} else {
		gw_device_foreach(ro->gw, cand_live, c);
		if (gw_store(ro->gw))
			gw_store_device_foreach(gw_store(ro->gw), cand_stored, c);
		if (c->n > 1)
			qsort(c->v, c->n, sizeof(*c->v), cand_cmp);
	}
	if (!c->n) {
		*errmsg = xstrdup("no device matches the target");
		return -ENOENT;
	}
	return 0;
}

static struct rollout *rollout_build(struct gw_rollouts *ro, struct ro_spec *spec,
				     json_t *spec_json, const json_t *image,
				     struct cands *c)
{
	struct rollout *r = xnew(struct rollout);
	int64_t now = (int64_t)gw_now_ms(ro->gw);
	bool inside = true;
	int64_t next;

	r->owner = ro;
	r->id = xasprintf("ro-%llu", (unsigned long long)++ro->next_seq);
	r->image_id = xstrdup(json_string_value(json_object_get(image, "id")));
	set_str(&r->image_version, json_string_value(json_object_get(image, "version")));
	r->spec = *spec;
	r->spec_json = spec_json;
	r->created_ms = now;
	rollout_window_locate(&spec->window, now, &inside, &next, NULL);
	r->state = inside ? ROLLOUT_STATE_RUNNING : ROLLOUT_STATE_WAITING;
	r->started_ms = inside ? now : 0;
	r->devs = xnew_array(struct ro_dev, c->n);
	r->n = c->n;
	for (size_t i = 0; i < c->n; i++)
		r->devs[i] = (struct ro_dev){
			.ro = r, .id = xstrdup(c->v[i].id), .position = (uint32_t)i,
			.wave = rollout_wave_of(&spec->policy, i),
		};
	return r;
}

static json_t *with_scheduler(const struct rollout *r, json_t *o);

int gw_rollout_create(struct gw_rollouts *ro, const json_t *spec,
		      const json_t *image, json_t **ret, char **errmsg)
{
	struct ro_spec s;
	struct cands c = { 0 };
	json_t *norm = NULL;
	struct rollout *r;
	int err;

	if (!json_is_string(json_object_get(image, "id"))) {
		*errmsg = xstrdup("\"image\" must name a stored image");
		return -EINVAL;
	}
	err = ro_spec_parse(spec, &s, &norm, errmsg);
	if (err < 0)
		return err;
	err = resolve_targets(ro, &s, &c, errmsg);
	if (err < 0) {
		cands_clear(&c);
		ro_spec_clear(&s);
		json_decref(norm);
		return err;
	}
	if (ro->me) /* several gateways: ids are numbered across the fleet */
		ro->next_seq = MAX(ro->next_seq, ro_db_max_seq(gw_store(ro->gw)));
	r = rollout_build(ro, &s, norm, image, &c);
	cands_clear(&c);
	if (ro->me) {
		r->active = true;
		r->scheduler_expires = (int64_t)gw_now_ms(ro->gw) + ro->ttl_ms;
		r->owned_until = r->scheduler_expires - ro->ttl_ms / 3;
		r->scheduler = xstrdup(ro->me);
	}
	err = gw_store(ro->gw) ? ro_db_insert(gw_store(ro->gw), r) : 0;
	for (int tries = 0; ro->me && err == -EEXIST && tries < 5; tries++) {
		/* Another gateway made a rollout with this id meanwhile. */
		free(r->id);
		ro->next_seq = MAX(ro->next_seq, ro_db_max_seq(gw_store(ro->gw)));
		r->id = xasprintf("ro-%llu", (unsigned long long)++ro->next_seq);
		err = ro_db_insert(gw_store(ro->gw), r);
	}
	if (err < 0) {
		*errmsg = xasprintf("cannot record the rollout: %s", strerror(-err));
		ro_free(r);
		return err;
	}
	attach(ro, r);
	log_notice("rollout %s created: image %s onto %zu device(s), %s", r->id,
		   r->image_id, r->n, rollout_state_str(r->state));
	emit(r, "rollout.state", json_pack("{s:s, s:s, s:n, s:s?}", "rollout", r->id,
					   "state", rollout_state_str(r->state),
					   "previous", "reason", "created"));
	emit_progress(r);
	kick(r);
	*ret = with_scheduler(r, ro_detail_json(r));
	return 0;
}

/* ---- views ---- */

/* Several gateways: who schedules it and a person's action on its way. */
static json_t *with_scheduler(const struct rollout *r, json_t *o)
{
	bool live = r->scheduler && r->scheduler_expires > now_of(r);

	if (!r->owner->me || !o)
		return o;
	json_object_set_new(o, "scheduler", live ? json_string(r->scheduler) : json_null());
	json_object_set_new(o, "command", r->command ? json_string(r->command) : json_null());
	return o;
}

struct listing {
	struct gw_rollouts *ro;
	json_t *a;
};

static void list_one(struct rollout *r, void *user_data)
{
	struct listing *l = user_data;

	r->owner = l->ro;
	json_array_insert_new(l->a, 0, with_scheduler(r, ro_summary_json(r)));
	ro_free(r);
}

/* Several gateways: every view is read from the store (the scheduler
 * writes every change before it announces it); NULL: unknown. */
static struct rollout *stored(struct gw_rollouts *ro, const char *id)
{
	struct rollout *r = id ? ro_db_load_one(gw_store(ro->gw), id) : NULL;

	if (r)
		r->owner = ro;
	return r;
}

json_t *gw_rollouts_list(struct gw_rollouts *ro)
{
	json_t *a = json_array();
	struct listing l = { ro, a };

	if (ro->me) {
		ro_db_load(gw_store(ro->gw), list_one, &l);
		return a;
	}
	for (struct rollout *r = ro->list; r; r = r->next)
		json_array_append_new(a, ro_summary_json(r));
	return a;
}

enum view { VIEW_DETAIL, VIEW_REPORT };

static json_t *view(struct gw_rollouts *ro, const char *id, enum view v)
{
	struct rollout *r = ro->me ? stored(ro, id) : find(ro, id);
	json_t *o;

	if (!r)
		return NULL;
	o = v == VIEW_DETAIL ? with_scheduler(r, ro_detail_json(r)) :
	    ro_report_json(r, now_of(r));
	if (ro->me)
		ro_free(r);
	return o;
}

json_t *gw_rollout_get(struct gw_rollouts *ro, const char *id)
{
	return view(ro, id, VIEW_DETAIL);
}

json_t *gw_rollout_report(struct gw_rollouts *ro, const char *id)
{
	return view(ro, id, VIEW_REPORT);
}

char *gw_rollout_report_text(struct gw_rollouts *ro, const char *id)
{
	struct rollout *r = ro->me ? stored(ro, id) : find(ro, id);
	char *t;

	if (!r)
		return NULL;
	t = ro_report_text(r, now_of(r));
	if (ro->me)
		ro_free(r);
	return t;
}

/* ---- a person's actions ---- */

static int refuse(struct rollout *r, char **errmsg, const char *what)
{
	if (errmsg)
		*errmsg = xasprintf("rollout %s is %s: cannot %s it", r->id,
				    rollout_state_str(r->state), what);
	return -EBUSY;
}

/* Where a rollout goes when it may run again: its window decides. */
static enum rollout_state runnable_state(struct rollout *r)
{
	bool inside = true;
	int64_t next;

	rollout_window_locate(&r->spec.window, now_of(r), &inside, &next, NULL);
	return inside ? ROLLOUT_STATE_RUNNING : ROLLOUT_STATE_WAITING;
}

static int do_pause(struct rollout *r, char **errmsg)
{
	if (r->state != ROLLOUT_STATE_RUNNING && r->state != ROLLOUT_STATE_WAITING)
		return refuse(r, errmsg, "pause");
	return set_state(r, ROLLOUT_STATE_PAUSED, "paused by request");
}

/* In one transaction: the failures acknowledged and the new state. */
static int ack_and_set(struct rollout *r, enum rollout_state st, bool reopen)
{
	struct gw_store *s = store_of(r);
	enum rollout_state prev = r->state;
	bool changed = false;
	int err = s ? ro_db_begin(s) : 0;

	if (err < 0)
		return err;
	for (size_t i = 0; i < r->n; i++) {
		struct ro_dev *d = &r->devs[i];

		if (reopen && rollout_dev_state_failure(d->state)) {
			d->state = ROLLOUT_DEV_PENDING;
			d->acked = false;
			d->finished_ms = 0;
			d->retry_at_ms = 0;
			d->last_try_ms = 0;
		} else if (!reopen && rollout_dev_state_failure(d->state) && !d->acked) {
			d->acked = true;
		} else {
			continue;
		}
		if (s && (err = ro_db_save_dev(s, d)) < 0) {
			ro_db_rollback(s);
			return err;
		}
	}
	if (st != r->state) {
		prev = apply_state(r, st, NULL, &err);
		changed = true;
	}
	if (err == 0 && s)
		err = ro_db_commit(s);
	else if (s)
		ro_db_rollback(s);
	if (changed)
		announce_state(r, prev);
	return err;
}

static int do_resume(struct rollout *r, char **errmsg)
{
	if (r->state != ROLLOUT_STATE_PAUSED)
		return refuse(r, errmsg, "resume");
	return ack_and_set(r, runnable_state(r), false);
}

static int do_retry_failed(struct rollout *r, char **errmsg)
{
	enum rollout_state st;
	int err;

	if (r->state == ROLLOUT_STATE_CANCELED)
		return refuse(r, errmsg, "retry");
	st = r->state == ROLLOUT_STATE_COMPLETED ? runnable_state(r) : r->state;
	err = ack_and_set(r, st, true);
	for (size_t i = 0; err == 0 && i < r->n; i++)
		if (r->devs[i].state == ROLLOUT_DEV_PENDING)
			emit_dev(&r->devs[i]);
	kick(r);
	return err;
}

static int do_cancel(struct rollout *r, char **errmsg)
{
	enum rollout_state prev;
	struct gw_store *s;
	struct gw_engine *eng;
	int err = 0;

	if (r->state == ROLLOUT_STATE_COMPLETED || r->state == ROLLOUT_STATE_CANCELED)
		return refuse(r, errmsg, "cancel");
	s = store_of(r);
	if (s && (err = ro_db_begin(s)) < 0)
		return err;
	for (size_t i = 0; i < r->n; i++) {
		struct ro_dev *d = &r->devs[i];

		cancel_probe(d);
		if (d->state != ROLLOUT_DEV_PENDING)
			continue;
		d->state = ROLLOUT_DEV_CANCELED;
		d->finished_ms = now_of(r);
		if (s && (err = ro_db_save_dev(s, d)) < 0) {
			ro_db_rollback(s);
			return err;
		}
	}
	prev = apply_state(r, ROLLOUT_STATE_CANCELED, "canceled by request", &err);
	if (s && err == 0)
		err = ro_db_commit(s);
	else if (s)
		ro_db_rollback(s);
	announce_state(r, prev);
	/* Running jobs stop safely: the engine never leaves a watch half
	 * tested; their results arrive as job.result. */
	eng = gw_engine(gw_of(r));
	for (size_t i = 0; eng && i < r->n; i++)
		if (r->devs[i].state == ROLLOUT_DEV_RUNNING)
			gw_job_cancel(eng, r->devs[i].job_id);
	return err;
}

/* Several gateways: an action is done here when this gateway schedules the
 * rollout or can (nobody else does: it claims it); otherwise it is checked
 * against the stored state and written for the scheduler, which does it
 * at its next round (1: asked). */
static int act(struct gw_rollouts *ro, const char *id, const char *cmd, char **errmsg)
{
	struct rollout *r = find(ro, id), *cur;
	int (*fn)(struct rollout *r, char **errmsg) = NULL;
	char *pending = NULL;
	int c;

	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, cmd))
			fn = commands[i].fn;
	if (!ro->me)
		return r ? fn(r, errmsg) : -ENOENT;
	if (!r && id && (r = ro_db_load_one(gw_store(ro->gw), id)))
		attach(ro, r);
	if (!r)
		return -ENOENT;
	if (acting(r))
		return fn(r, errmsg);
	c = ro_db_claim(gw_store(ro->gw), id, ro->me, now_of(r), ro->ttl_ms, &pending);
	free(pending);
	if (c < 0)
		return c;
	if (c == 1) {
		r = take_over(ro, r);
		return r ? fn(r, errmsg) : -EIO;
	}
	/* Refused as the scheduler would refuse it, from the stored state. */
	cur = stored(ro, id);
	if (!cur)
		return -ENOENT;
	if ((!strcmp(cmd, "pause") && cur->state != ROLLOUT_STATE_RUNNING &&
	     cur->state != ROLLOUT_STATE_WAITING) ||
	    (!strcmp(cmd, "resume") && cur->state != ROLLOUT_STATE_PAUSED) ||
	    (!strcmp(cmd, "cancel") && (cur->state == ROLLOUT_STATE_COMPLETED ||
					cur->state == ROLLOUT_STATE_CANCELED)) ||
	    (!strcmp(cmd, "retry-failed") && cur->state == ROLLOUT_STATE_CANCELED)) {
		c = refuse(cur, errmsg, !strcmp(cmd, "retry-failed") ? "retry" : cmd);
		ro_free(cur);
		return c;
	}
	ro_free(cur);
	c = ro_db_command(gw_store(ro->gw), id, cmd, true);
	if (c < 0)
		return c;
	log_notice("rollout %s: %s asked of its scheduler", id, cmd);
	return 1;
}

int gw_rollout_pause(struct gw_rollouts *ro, const char *id, char **errmsg)
{
	return act(ro, id, "pause", errmsg);
}

int gw_rollout_resume(struct gw_rollouts *ro, const char *id, char **errmsg)
{
	return act(ro, id, "resume", errmsg);
}

int gw_rollout_cancel(struct gw_rollouts *ro, const char *id, char **errmsg)
{
	return act(ro, id, "cancel", errmsg);
}

int gw_rollout_retry_failed(struct gw_rollouts *ro, const char *id, char **errmsg)
{
	return act(ro, id, "retry-failed", errmsg);
}
