/* SPDX-License-Identifier: MIT */
/*
 * The upload engine (jobs.h): owns every job, the per-device job queues
 * (one job runs per device at a time), the radio tokens that bound
 * concurrent uploads per BLE adapter, the job table in the store, and the
 * update flow of a running job:
 *
 *   state -> [upload -> verify] -> [test -> reset -> wait] -> [confirm] -> done
 *
 * Every step begins with its phase written to the store, so a daemon
 * killed at any point restarts the job from a fresh image state read and
 * decides from what the watch says (docs/updates.md): it never confirms an
 * image it has not seen active in this process, and it confirms "the
 * running image" (no hash), so a watch that reverted in between can never
 * have the new image made permanent without booting it.
 *
 * engine-db.c keeps the records (names, the jobs table, the image cache),
 * upload.c one pipelined upload, update-smp.c the frames.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/engine-int.h"
#include "gateway/events.h"
#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/jobs.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store.h"
#include "smpgw/usergroup.h"
#include "util/util.h"

#define PROGRESS_MIN_MS 250        /* job.progress at most this often ... */
#define PROGRESS_STEP_PCT 5        /* ... unless it moved this much */
#define PERSIST_OFFSET_MS 2000     /* offset written to the store this often */
#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS 10000
#define WAIT_FIRST_POLL_MS 1000    /* after the reset answer */
#define WAIT_POLL_MS 1000
#define RESET_SETTLE_MS 3000       /* a pending image after this: no reset */
#define MAX_RESETS 3
#define PROBE_TIMEOUT_MS 3000      /* the reassembly probe's echo */
#define SELF_CHECK_POLL_MS 1000    /* a confirm refused for the self-check: again */

static void job_step_state(struct job *job);
static void job_finish(struct job *job, enum gw_job_state state, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void dispatch_soon(struct gw_engine *eng);

/* ---- events and metrics ---- */

static json_t *job_event_data(const struct job *job)
{
	json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s?}",
			      "id", (json_int_t)job->id, "device", job->device_id,
			      "image", job->image_id, "mode", gw_job_mode_str(job->mode),
			      "state", gw_job_state_str(job->state),
			      "phase", engine_phase_names[job->phase], "error", job->error);

	json_object_set_new(o, "rollout", job->rollout_id ? json_string(job->rollout_id) :
			    json_null());
	return o;
}

static void emit(struct job *job, const char *type, json_t *data)
{
	gw_events_emit(gw_events(job->eng->gw), type, data);
}

static void set_phase(struct job *job, enum phase phase)
{
	if (phase != job->phase)
		job->advanced_ms = gw_now_ms(job->eng->gw);
	job->phase = phase;
	if (phase == PHASE_RESET || phase == PHASE_WAIT)
		job->did_reset = true;
	engine_job_persist(job);
	log_debug("job %lld (%s): %s", (long long)job->id, job->device_id,
		  engine_phase_names[phase]);
	emit(job, "job.state", job_event_data(job));
}

static void progress_event(struct job *job, bool force)
{
	uint64_t now = gw_now_ms(job->eng->gw);
	unsigned pct = job->size ? (unsigned)(job->offset * 100 / job->size) : 0;
	double eta = -1;
	json_t *d;

	if (!force && now - job->last_progress_ms < PROGRESS_MIN_MS &&
	    pct < job->last_pct + PROGRESS_STEP_PCT)
		return;
	if (now > job->up_start_ms && job->offset > job->up_start_off)
		job->rate = (double)(job->offset - job->up_start_off) * 1000.0 /
			    (double)(now - job->up_start_ms);
	if (job->rate > 0)
		eta = (double)(job->size - job->offset) / job->rate;
	job->last_progress_ms = now;
	job->last_pct = pct;
	d = json_pack("{s:I, s:s, s:s, s:I, s:I, s:i, s:f, s:i, s:I, s:i}",
		      "id", (json_int_t)job->id,
		      "device", job->device_id, "phase", engine_phase_names[job->phase],
		      "bytes", (json_int_t)job->offset, "total", (json_int_t)job->size,
		      "percent", (int)pct, "rate", job->rate,
		      "window", (int)job->ctl.window, "frame", (json_int_t)job->ctl.frame,
		      "lost_frames", (int)job->ctl.losses);
	json_object_set_new(d, "eta_s", eta >= 0 ? json_real(eta) : json_null());
	emit(job, "job.progress", d);
	if (now - job->last_persist_ms >= PERSIST_OFFSET_MS)
		engine_job_persist(job);
}

static char *metric_labels(struct job *job)
{
	char *t = gw_metrics_label_escape(job->dev ? gw_device_transport(job->dev) : "none");
	char *l = xasprintf("transport=\"%s\"", t);

	free(t);
	return l;
}

/* ---- radio tokens: concurrent jobs per BLE adapter ---- */

static char *radio_key_of(struct gw_device *dev)
{
	json_t *j, *adapter;
	char *key;

	if (strcmp(gw_device_transport(dev), "ble"))
		return NULL; /* UDP and serial devices do not share a radio */
	j = gw_device_to_json(dev);
	adapter = json_object_get(json_object_get(j, "advertising"), "adapter");
	key = xstrdup(json_is_string(adapter) ? json_string_value(adapter) : "ble");
	json_decref(j);
	return key;
}

static struct radio *radio_find(struct gw_engine *eng, const char *key, bool add)
{
	for (size_t i = 0; i < eng->n_radios; i++)
		if (!strcmp(eng->radios[i].key, key))
			return &eng->radios[i];
	if (!add)
		return NULL;
	eng->radios = xrealloc(eng->radios, (eng->n_radios + 1) * sizeof(*eng->radios));
	eng->radios[eng->n_radios] = (struct radio){ .key = xstrdup(key) };
	return &eng->radios[eng->n_radios++];
}

static bool radio_acquire(struct job *job)
{
	struct gw_engine *eng = job->eng;
	const struct gw_config *cfg = gw_config(eng->gw);
	struct radio *r = NULL;

	if (cfg->update.max_concurrent && eng->uploads >= cfg->update.max_concurrent)
		return false;
	if (job->radio_key) {
		r = radio_find(eng, job->radio_key, true);
		if (cfg->update.max_per_adapter && r->used >= cfg->update.max_per_adapter)
			return false;
		r->used++;
	}
	eng->uploads++;
	job->radio_held = true;
	return true;
}

static void radio_release(struct job *job)
{
	struct radio *r;

	if (!job->radio_held)
		return;
	job->radio_held = false;
	job->eng->uploads--;
	r = job->radio_key ? radio_find(job->eng, job->radio_key, false) : NULL;
	if (r && r->used)
		r->used--;
	dispatch_soon(job->eng);
}

/* ---- running a job: plumbing ---- */

static void job_stop_io(struct job *job)
{
	if (job->req && job->dev)
		gw_device_cancel(job->dev, job->req);
	job->req = 0;
	job->up = gw_upload_free(job->up);
	if (job->timer)
		evtimer_del(job->timer);
	job->timer_fn = NULL;
}

static void job_release_device(struct job *job)
{
	if (job->dev && job->held)
		gw_device_release(job->dev);
	job->held = false;
	job->dev = NULL;
}

#define job_free engine_job_free

/* Memory holds the newest finished jobs only; the store keeps them all. */
static void prune_finished(struct gw_engine *eng, struct job *keep)
{
	struct job *j, *next;
	size_t finished = 0;

	TAILQ_FOREACH(j, &eng->jobs, entry)
		finished += engine_job_final(j);
	for (j = TAILQ_FIRST(&eng->jobs); j && finished > ENGINE_FINISHED_KEPT; j = next) {
		next = TAILQ_NEXT(j, entry);
		if (j == keep || !engine_job_final(j))
			continue;
		TAILQ_REMOVE(&eng->jobs, j, entry);
		eng->n_jobs--;
		finished--;
		job_free(j);
	}
}

static void job_finish(struct job *job, enum gw_job_state state, const char *fmt, ...)
{
	struct gw_engine *eng = job->eng;
	uint64_t dur;
	json_t *d;

	job_stop_io(job);
	evtimer_del(job->stall_ev);
	radio_release(job);
	job_release_device(job);
	engine_image_put(job->img);
	job->img = NULL;
	free(job->error);
	job->error = NULL;
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		if (vasprintf(&job->error, fmt, ap) < 0)
			job->error = NULL;
		va_end(ap);
	}
	job->state = state;
	job->finished_ms = gw_now_ms(eng->gw);
	if (state == GW_JOB_STATE_DONE)
		job->phase = PHASE_DONE;
	engine_job_persist(job);
	engine_db_notify(eng); /* a scheduler elsewhere may wait for it */
	dur = job->started_ms ? job->finished_ms - job->started_ms : 0;
	if (state == GW_JOB_STATE_DONE)
		log_info("job %lld: %s %s on %s: done%s", (long long)job->id,
			 gw_job_mode_str(job->mode), job->image_id, job->device_id,
			 job->up_to_date ? " (already running)" :
			 job->skipped_upload ? " (upload skipped)" : "");
	else
		log_notice("job %lld on %s: %s%s%s", (long long)job->id, job->device_id,
			   gw_job_state_str(state), job->error ? ": " : "",
			   job->error ? job->error : "");
	d = job_event_data(job);
	json_object_set_new(d, "duration_ms", json_integer((json_int_t)dur));
	json_object_set_new(d, "bytes_sent", json_integer((json_int_t)job->bytes_sent));
	json_object_set_new(d, "skipped_upload", json_boolean(job->skipped_upload));
	json_object_set_new(d, "up_to_date", json_boolean(job->up_to_date));
	emit(job, "job.state", job_event_data(job));
	emit(job, "job.result", d);
	if (job->done) {
		gw_job_done_cb cb = job->done;

		job->done = NULL;
		cb(job->id, state, job->error, job->user_data);
	}
	prune_finished(eng, job);
	dispatch_soon(eng);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct job *job = arg;
	void (*fn)(struct job *) = job->timer_fn;

	job->timer_fn = NULL;
	if (fn)
		fn(job);
}

static void job_after(struct job *job, uint32_t ms, void (*fn)(struct job *))
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	job->timer_fn = fn;
	evtimer_add(job->timer, &tv);
}

/* The device may have been removed (SIGHUP) or not discovered yet. */
static struct gw_device *job_device(struct job *job)
{
	if (!job->dev) {
		job->dev = gw_device_find(job->eng->gw, job->device_id);
		if (job->dev) {
			gw_device_hold(job->dev);
			job->held = true;
		}
	}
	return job->dev;
}

typedef void (*job_rsp_fn)(struct job *job, const uint8_t *frame, size_t len);

struct pending {
	struct job *job;
	job_rsp_fn fn;
};

static void job_transport_error(struct job *job, int err, const char *what);

static void job_rsp_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct pending p = *(struct pending *)user_data;

	free(user_data);
	p.job->req = 0;
	if (err) {
		job_transport_error(p.job, err, "no answer");
		return;
	}
	p.fn(p.job, frame, len);
}

/* Sends one request frame (consumed) for the job; its answer goes to fn. */
static void job_request(struct job *job, uint8_t *frame, size_t len, uint32_t timeout_ms,
			job_rsp_fn fn)
{
	struct gw_req_opts opts = { .timeout_ms = timeout_ms };
	struct pending *p;
	int64_t id;

	if (job->claim_lost) {
		/* Another gateway runs it now: nothing more is sent from here;
		 * the claim round drops it. */
		free(frame);
		return;
	}
	if (!job_device(job)) {
		free(frame);
		job_transport_error(job, -ENODEV, "device not present");
		return;
	}
	p = xnew(struct pending);
	p->job = job;
	p->fn = fn;
	id = gw_device_request(job->dev, frame, len, &opts, job_rsp_cb, p);
	free(frame);
	if (id < 0) {
		free(p);
		job_transport_error(job, (int)id, "cannot queue a request");
		return;
	}
	job->req = id;
}

/* An SMP-level answer: 0 when it carries no error, else fails the job. */
static int job_check_smp(struct job *job, const uint8_t *frame, size_t len,
			 const char *what)
{
	struct gw_smp_result res;
	char msg[128];

	if (gw_smp_result(frame, len, &res) < 0) {
		job_finish(job, GW_JOB_STATE_FAILED, "%s: malformed response", what);
		return -EBADMSG;
	}
	if (res.smp_error) {
		gw_smp_result_str(&res, msg, sizeof(msg));
		job_finish(job, GW_JOB_STATE_FAILED, "%s: %s", what, msg);
		return -EPROTO;
	}
	return 0;
}

/* Reads the state out of an answer (and caches it on the device). */
static int job_parse_state(struct job *job, const uint8_t *frame, size_t len,
			   struct gw_img_state *st, const char *what)
{
	json_t *images = NULL;

	if (job_check_smp(job, frame, len, what) < 0)
		return -EPROTO;
	if (gw_img_state_parse(frame, len, st, &images) < 0) {
		job_finish(job, GW_JOB_STATE_FAILED, "%s: no image list", what);
		return -EBADMSG;
	}
	if (images && job->dev)
		gw_device_set_slots(job->dev, images);
	json_decref(images);
	return 0;
}

/* Link trouble: retry the whole step sequence from a state read, with
 * backoff, until retry_timeout passes without reaching the device. */
static void job_transport_error(struct job *job, int err, const char *what)
{
	const struct gw_config *cfg = gw_config(job->eng->gw);
	uint64_t now = gw_now_ms(job->eng->gw);

	job_stop_io(job);
	job->link_errors++;
	free(job->last_link_error);
	job->last_link_error = xasprintf("%s: %s", what, strerror(-err));
	if (err == -ECANCELED) /* the device was removed */
		job_release_device(job);
	if (!job->retry_deadline_ms)
		job->retry_deadline_ms = now + cfg->update.retry_timeout_ms;
	if (now >= job->retry_deadline_ms) {
		job_finish(job, GW_JOB_STATE_FAILED, "device unreachable (%s: %s)", what,
			   strerror(-err));
		return;
	}
	log_info("job %lld (%s): %s: %s; retrying in %u ms", (long long)job->id,
		 job->device_id, what, strerror(-err), job->retry_ms);
	job_after(job, job->retry_ms, job_step_state);
	job->retry_ms = MIN(job->retry_ms * 2, RETRY_MAX_MS);
}

static void job_progressed(struct job *job)
{
	job->retry_deadline_ms = 0;
	job->retry_ms = RETRY_FIRST_MS;
}

/* ---- steps ---- */

static void job_step_upload(struct job *job);
static void job_step_test(struct job *job);
static void job_step_reset(struct job *job);
static void job_step_confirm(struct job *job);
static void job_wait_poll(struct job *job);

static void done_up_to_date(struct job *job)
{
	job->up_to_date = true;
	job->skipped_upload = true;
	job_finish(job, GW_JOB_STATE_DONE, NULL);
}

/* What to do given the watch's image state; the heart of resume. */
static void job_decide(struct job *job, const struct gw_img_state *st)
{
	const struct gw_img_slot *s = gw_img_state_find(st, job->hash);

	if (job->mode == GW_JOB_MODE_CONFIRM) {
		if (s && s->active && s->confirmed)
			done_up_to_date(job);
		else if (s && s->active)
			job_step_confirm(job);
		else
			job_finish(job, GW_JOB_STATE_FAILED,
				   "the image is not running on the device: nothing to confirm");
		return;
	}
	if (s && s->active) {
		/* Running it: after our reset, or from before the job (then
		 * "up to date" only if nothing is left to do either). */
		bool confirm = job->mode == GW_JOB_MODE_TEST_CONFIRM && !s->confirmed;

		if (!job->bytes_sent)
			job->skipped_upload = true;
		if (!job->did_reset && !confirm)
			job->up_to_date = true;
		if (confirm)
			job_step_confirm(job);
		else
			job_finish(job, GW_JOB_STATE_DONE, NULL);
		return;
	}
	if (job->did_reset && (!s || !s->pending)) {
		job_finish(job, GW_JOB_STATE_ROLLED_BACK,
			   "the watch came back on its previous image%s",
			   s ? "" : " (the new one was erased: it did not validate)");
		return;
	}
	if (s) {
		job->skipped_upload = job->skipped_upload || job->phase <= PHASE_STATE;
		job->offset = job->size;
		if (job->mode == GW_JOB_MODE_UPLOAD)
			job_finish(job, GW_JOB_STATE_DONE, NULL);
		else if (s->pending)
			job_step_reset(job);
		else
			job_step_test(job);
		return;
	}
	job_step_upload(job);
}

static void state_rsp(struct job *job, const uint8_t *frame, size_t len)
{
	struct gw_img_state st;

	if (job_parse_state(job, frame, len, &st, "image state") < 0)
		return;
	job_progressed(job);
	job_decide(job, &st);
}

/* Every (re)start of a job begins here. The phase is not rewritten, so a
 * job that was resetting the watch still knows it did. */
static void job_step_state(struct job *job)
{
	uint8_t *frame;
	size_t len;

	if (job->phase < PHASE_STATE)
		set_phase(job, PHASE_STATE);
	if (job->phase == PHASE_WAIT) {
		job_wait_poll(job);
		return;
	}
	if (gw_smp_img_state_read(&frame, &len) < 0)
		return job_finish(job, GW_JOB_STATE_FAILED, "cannot build a request");
	job_request(job, frame, len, 0, state_rsp);
}

/* -- upload -- */

/* ---- reassembly: asked of the watch once per daemon run ---- */

/* 1 / 0 when the watch was probed, -1 when not yet. */
static int probe_get(struct gw_engine *eng, const char *id)
{
	for (size_t i = 0; i < eng->n_probes; i++)
		if (!strcasecmp(eng->probes[i].id, id))
			return eng->probes[i].reassembly;
	return -1;
}

static void probe_set(struct gw_engine *eng, const char *id, bool on)
{
	if (probe_get(eng, id) >= 0)
		return;
	eng->probes = xrealloc(eng->probes, (eng->n_probes + 1) * sizeof(*eng->probes));
	eng->probes[eng->n_probes++] = (struct probe){ .id = xstrdup(id), .reassembly = on };
}

static size_t frame_limit(struct job *job)
{
	const struct gw_config *cfg = gw_config(job->eng->gw);
	uint32_t buf_size, buf_count;
	size_t mtu = gw_device_mtu(job->dev);
	bool reassembly;

	gw_device_params(job->dev, &buf_size, &buf_count);
	/* Without the device's word, a watch is assumed to take one write per
	 * frame (Zephyr without reassembly); a device that answers mcumgr
	 * params is a Zephyr new enough to have reassembly when it has a
	 * buffer bigger than one write. [update] reassembly overrides. */
	if (cfg->update.reassembly >= 0)
		reassembly = cfg->update.reassembly == 1;
	else if (probe_get(job->eng, job->device_id) >= 0)
		reassembly = probe_get(job->eng, job->device_id) == 1;
	else
		reassembly = gw_device_params_known(job->dev);
	if (!reassembly && mtu && mtu < buf_size)
		return mtu;
	/* Split over writes: a last write that is not full costs a whole
	 * link-layer packet (and its slot in a connection event), so the
	 * frame is the most whole writes that fit. */
	if (mtu && mtu < buf_size)
		return buf_size / mtu * mtu;
	return buf_size;
}

static unsigned pipeline_depth(struct job *job)
{
	const struct gw_config *cfg = gw_config(job->eng->gw);
	uint32_t buf_count;
	unsigned depth;

	gw_device_params(job->dev, NULL, &buf_count);
	depth = buf_count > 1 ? buf_count - 1 : 1;
	if (cfg->update.pipeline_depth && depth > cfg->update.pipeline_depth)
		depth = cfg->update.pipeline_depth;
	return depth;
}

/* Lost frames into the metrics as the upload reports them. */
static void count_losses(struct job *job)
{
	struct gw_metrics *m = gw_metrics(job->eng->gw);

	if (m && job->ctl.losses > job->ctl_losses_seen) {
		char *l = metric_labels(job);

		gw_metrics_add(m, GW_M_UPLOAD_LOSSES, l,
			       (double)(job->ctl.losses - job->ctl_losses_seen));
		free(l);
	}
	job->ctl_losses_seen = job->ctl.losses;
}

static void upload_progress(const struct gw_upload_stats *st, void *user_data)
{
	struct job *job = user_data;
	struct gw_metrics *m = gw_metrics(job->eng->gw);

	uint64_t sent = job->sent_base + st->bytes_sent;

	if (m && sent > job->bytes_sent) {
		char *l = metric_labels(job);

		gw_metrics_add(m, GW_M_UPLOAD_BYTES, l, (double)(sent - job->bytes_sent));
		free(l);
	}
	job->bytes_sent = sent;
	if (st->acked > job->offset || st->acked < job->up_start_off)
		job->advanced_ms = gw_now_ms(job->eng->gw);
	job->offset = st->acked;
	job_progressed(job);
	count_losses(job);
	progress_event(job, false);
}

static void verify_rsp(struct job *job, const uint8_t *frame, size_t len);

static void upload_done(int err, const char *msg, const struct gw_upload_stats *st,
			void *user_data)
{
	struct job *job = user_data;
	struct gw_metrics *m = gw_metrics(job->eng->gw);
	uint64_t now = gw_now_ms(job->eng->gw);
	uint8_t *frame;
	size_t len;

	upload_progress(st, job);
	job->up = NULL; /* it frees itself after this callback */
	if (err && err != -EEXIST) {
		if (err == -EPROTO || err == -EMSGSIZE)
			return job_finish(job, GW_JOB_STATE_FAILED, "upload: %s",
					  msg ? msg : strerror(-err));
		return job_transport_error(job, err, msg ? msg : "upload");
	}
	if (m && now > job->up_start_ms && job->offset > job->up_start_off) {
		char *l = metric_labels(job);

		gw_metrics_observe(m, GW_M_UPLOAD_RATE, l,
				   (double)(job->offset - job->up_start_off) * 1000.0 /
				   (double)(now - job->up_start_ms));
		free(l);
	}
	job->offset = job->size;
	progress_event(job, true);
	log_info("job %lld (%s): upload finished: %zu bytes, %.0f B/s, %u timeouts,"
		 " %u mismatches, %u restarts; %u frames lost, ended at %u in flight,"
		 " frames of %zu bytes", (long long)job->id, job->device_id,
		 job->size, job->rate, st->timeouts, st->mismatches, st->restarts,
		 job->ctl.losses, job->ctl.window, job->ctl.frame);
	set_phase(job, PHASE_VERIFY);
	if (gw_smp_img_state_read(&frame, &len) < 0)
		return job_finish(job, GW_JOB_STATE_FAILED, "cannot build a request");
	job_request(job, frame, len, 0, verify_rsp);
}

/* The gw_upload is freed from a deferred point: its callback is on the
 * stack when upload_done runs. */
static void start_upload(struct job *job)
{
	const struct gw_config *cfg = gw_config(job->eng->gw);
	struct gw_upload_params p = {
		.base = gw_base(job->eng->gw),
		.dev = job->dev,
		.image = job->img->buf,
		.len = job->img->len,
		/* Always a first chunk (off 0, len, sha), even to resume: a
		 * watch holding a session for this sha answers with its own
		 * offset and the upload continues there; one holding another
		 * image's session starts ours instead of taking our bytes into
		 * its image. (The state read just showed the image absent, so
		 * this never erases a complete one.) */
		.start_off = 0,
		.frame_max = frame_limit(job),
		.max_inflight = pipeline_depth(job),
		.ctl = &job->ctl,
		/* Effective: the loss recovery's hold is counted in it. */
		.chunk_timeout_ms = cfg->update.chunk_timeout_ms ?
				    cfg->update.chunk_timeout_ms : cfg->request.timeout_ms,
		.state_checked = true,
	};
	static const struct gw_upload_cbs cbs = { upload_progress, upload_done };

	memcpy(p.sha, job->img->sha, sizeof(p.sha));
	memcpy(p.hash, job->hash, sizeof(p.hash));
	p.write_len = gw_device_mtu(job->dev);
	job->up_start_ms = gw_now_ms(job->eng->gw);
	job->up_start_off = job->offset < job->size ? job->offset : 0;
	job->sent_base = job->bytes_sent; /* counts across attempts */
	job->up = gw_upload_start(&p, &cbs, job);
	log_info("job %lld (%s): uploading %zu bytes from %zu: frames of %zu bytes"
		 " (at most %zu), %u in flight (at most %u)", (long long)job->id,
		 job->device_id, job->size, job->up_start_off, job->ctl.frame,
		 p.frame_max, job->ctl.window, p.max_inflight);
}

/* Nothing says whether a watch reassembles a frame written in several
 * pieces (Zephyr's CONFIG_MCUMGR_TRANSPORT_BT_REASSEMBLY): before the first
 * upload whose frames would span writes, an echo just longer than one
 * write tells. Any answer: it does. Silence: one write per frame. */
static void probe_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct job *job = user_data;

	job->req = 0;
	if (err && err != -ETIMEDOUT)
		return job_transport_error(job, err, "reassembly probe");
	probe_set(job->eng, job->device_id, err == 0);
	log_info("%s: SMP reassembly %s", job->device_id,
		 err == 0 ? "works: frames fill buf_size" :
		 "does not answer: one write per frame");
	start_upload(job);
}

static bool needs_probe(struct job *job)
{
	const struct gw_config *cfg = gw_config(job->eng->gw);
	uint32_t buf_size;
	size_t mtu = gw_device_mtu(job->dev);

	gw_device_params(job->dev, &buf_size, NULL);
	return cfg->update.reassembly < 0 && gw_device_params_known(job->dev) &&
	       mtu && mtu + 16 <= buf_size && probe_get(job->eng, job->device_id) < 0;
}

static void upload_go(struct job *job)
{
	struct gw_req_opts opts = { .timeout_ms = PROBE_TIMEOUT_MS };
	size_t mtu = gw_device_mtu(job->dev);
	uint8_t *frame;
	size_t len;
	int64_t id;

	if (!needs_probe(job))
		return start_upload(job);
	if (gw_smp_os_echo(mtu + 2, &frame, &len) < 0)
		return start_upload(job);
	id = gw_device_request(job->dev, frame, len, &opts, probe_cb, job);
	free(frame);
	if (id < 0)
		return job_transport_error(job, (int)id, "reassembly probe");
	job->req = id;
}

static void job_step_upload(struct job *job)
{
	if (job->phase != PHASE_UPLOAD)
		set_phase(job, PHASE_UPLOAD);
	upload_go(job);
}

static void verify_rsp(struct job *job, const uint8_t *frame, size_t len)
{
	struct gw_img_state st;
	const struct gw_img_slot *s;

	/* A finished upload is freed here, outside its own callback. */
	if (job_parse_state(job, frame, len, &st, "verify") < 0)
		return;
	s = gw_img_state_find(&st, job->hash);
	if (!s)
		return job_finish(job, GW_JOB_STATE_FAILED,
				  "after the upload no slot holds the image hash "
				  "(the watch rejected or corrupted it)");
	if (job->mode == GW_JOB_MODE_UPLOAD)
		return job_finish(job, GW_JOB_STATE_DONE, NULL);
	job_decide(job, &st);
}

/* -- test, reset, wait -- */

static void test_rsp(struct job *job, const uint8_t *frame, size_t len)
{
	struct gw_img_state st;
	const struct gw_img_slot *s;

	if (job_parse_state(job, frame, len, &st, "test") < 0)
		return;
	s = gw_img_state_find(&st, job->hash);
	if (!s || !s->pending)
		return job_finish(job, GW_JOB_STATE_FAILED,
				  "the watch did not mark the image for test");
	job_step_reset(job);
}

static void job_step_test(struct job *job)
{
	uint8_t *frame;
	size_t len;

	set_phase(job, PHASE_TEST);
	if (gw_smp_img_state_write(job->hash, false, &frame, &len) < 0)
		return job_finish(job, GW_JOB_STATE_FAILED, "cannot build a request");
	job_request(job, frame, len, 0, test_rsp);
}

static void wait_begin(struct job *job)
{
	const struct gw_config *cfg = gw_config(job->eng->gw);

	set_phase(job, PHASE_WAIT);
	/* The watch reboots (MCUboot's swap: tens of seconds on a PineTime)
	 * with its link down: the adapter's token goes to the next job, or
	 * the radio would idle through every swap (bench/README.md, "The
	 * 1000-watch night"). The job keeps its device; the few requests
	 * after the boot need no token. */
	radio_release(job);
	job->wait_deadline_ms = gw_now_ms(job->eng->gw) + cfg->update.boot_timeout_ms;
	job_after(job, WAIT_FIRST_POLL_MS, job_wait_poll);
}

static void reset_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct job *job = user_data;

	/* Whatever the answer (a watch may reset before its answer leaves),
	 * the reset may have happened: from here on only the watch's state
	 * after reboot says what happened. */
	job->req = 0;
	wait_begin(job);
}

static void job_step_reset(struct job *job)
{
	uint8_t *frame;
	size_t len;
	int64_t id;

	set_phase(job, PHASE_RESET);
	if (job->claim_lost)
		return;
	job->reset_sent_ms = gw_now_ms(job->eng->gw);
	if (!job_device(job) || gw_smp_os_reset(&frame, &len) < 0)
		return job_transport_error(job, -ENODEV, "reset");
	id = gw_device_request(job->dev, frame, len, NULL, reset_cb, job);
	free(frame);
	if (id < 0)
		return job_transport_error(job, (int)id, "reset");
	job->req = id;
}

static void wait_rsp_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct job *job = user_data;
	struct gw_img_state st;
	const struct gw_img_slot *s;

	job->req = 0;
	if (err || gw_img_state_parse(frame, len, &st, NULL) < 0) {
		job_after(job, WAIT_POLL_MS, job_wait_poll);
		return;
	}
	s = gw_img_state_find(&st, job->hash);
	if (s && !s->active && s->pending) {
		/* The answer came before the reset; or, well after it (a
		 * watch resets within a second of its answer and does not
		 * answer while it boots), the reset never reached it. */
		if (gw_now_ms(job->eng->gw) - job->reset_sent_ms < RESET_SETTLE_MS) {
			job_after(job, WAIT_POLL_MS, job_wait_poll);
			return;
		}
		if (++job->resets > MAX_RESETS)
			return job_finish(job, GW_JOB_STATE_FAILED,
					  "the watch does not reset: the image stays pending");
		log_info("job %lld (%s): still not rebooted; resetting again",
			 (long long)job->id, job->device_id);
		return job_step_reset(job);
	}
	job_progressed(job);
	if (job_parse_state(job, frame, len, &st, "state after reboot") < 0)
		return;
	job_decide(job, &st);
}

static void job_wait_poll(struct job *job)
{
	uint8_t *frame;
	size_t len;
	int64_t id;

	if (!job->wait_deadline_ms) /* resumed after a restart */
		job->wait_deadline_ms = gw_now_ms(job->eng->gw) +
					gw_config(job->eng->gw)->update.boot_timeout_ms;
	if (gw_now_ms(job->eng->gw) >= job->wait_deadline_ms)
		return job_finish(job, GW_JOB_STATE_LOST,
				  "the watch did not come back within %u s of its reset",
				  gw_config(job->eng->gw)->update.boot_timeout_ms / 1000);
	if (!job_device(job) || gw_smp_img_state_read(&frame, &len) < 0) {
		job_after(job, WAIT_POLL_MS, job_wait_poll);
		return;
	}
	id = gw_device_request(job->dev, frame, len, NULL, wait_rsp_cb, job);
	free(frame);
	if (id < 0) {
		job_after(job, WAIT_POLL_MS, job_wait_poll);
		return;
	}
	job->req = id;
}

/* -- confirm -- */

/* The project's firmware refuses a confirm until its post-boot self-check
 * passed: {"err": {"group": 64, "rc": 2}} (smpgw/usergroup.h). */
static bool self_check_pending(const uint8_t *frame, size_t len)
{
	struct gw_smp_result res;

	return gw_smp_result(frame, len, &res) == 0 && res.smp_error && res.v2 &&
	       res.group == SMPGW_MGMT_GROUP_ID && res.rc == SMPGW_MGMT_RC_SELF_CHECK_PENDING;
}

/* Asks again every second, from a fresh state read (so only an image
 * still active is confirmed), for up to [update] self_check_timeout. */
static void confirm_refused(struct job *job)
{
	uint32_t limit = gw_config(job->eng->gw)->update.self_check_timeout_ms;
	uint64_t now = gw_now_ms(job->eng->gw);

	if (!job->self_check_deadline_ms)
		job->self_check_deadline_ms = now + limit;
	if (now >= job->self_check_deadline_ms)
		return job_finish(job, GW_JOB_STATE_FAILED,
				  "confirm: the watch still refuses it after %u ms: its post-boot "
				  "self-check has not passed (device error: group %d rc %d)",
				  limit, SMPGW_MGMT_GROUP_ID, SMPGW_MGMT_RC_SELF_CHECK_PENDING);
	log_info("job %lld (%s): confirm refused, self-check pending; asking again",
		 (long long)job->id, job->device_id);
	job_after(job, SELF_CHECK_POLL_MS, job_step_state);
}

static void confirm_rsp(struct job *job, const uint8_t *frame, size_t len)
{
	struct gw_img_state st;
	const struct gw_img_slot *s;

	if (self_check_pending(frame, len))
		return confirm_refused(job);
	if (job_parse_state(job, frame, len, &st, "confirm") < 0)
		return;
	s = gw_img_state_find(&st, job->hash);
	if (s && s->active && s->confirmed)
		return job_finish(job, GW_JOB_STATE_DONE, NULL);
	if (s && s->active)
		return job_finish(job, GW_JOB_STATE_FAILED,
				  "the watch did not confirm the image");
	job_finish(job, GW_JOB_STATE_ROLLED_BACK,
		   "the watch was no longer running the image when confirming");
}

/* Only reached right after a state read in this process showed the image
 * active in slot 0. No hash: "confirm what runs", never a slot-1 image. */
static void job_step_confirm(struct job *job)
{
	uint8_t *frame;
	size_t len;

	set_phase(job, PHASE_CONFIRM);
	if (gw_smp_img_state_write(NULL, true, &frame, &len) < 0)
		return job_finish(job, GW_JOB_STATE_FAILED, "cannot build a request");
	job_request(job, frame, len, 0, confirm_rsp);
}

/* ---- the stall bound: [update] stall_timeout without progress ---- */

static int64_t device_timeout_resets(struct gw_device *dev)
{
	json_t *j = dev ? gw_device_to_json(dev) : NULL;
	int64_t v = json_integer_value(json_object_get(json_object_get(j, "counters"),
						       "timeout_resets"));

	json_decref(j);
	return v;
}

static void stall_arm(struct job *job, uint32_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(job->stall_ev, &tv);
}

/* What was tried, for the error: so an operator sees a lossy link from a
 * dead watch. */
static void stall_fail(struct job *job, uint32_t stall_ms)
{
	const struct gw_upload_ctl *c = &job->ctl;
	int64_t resets = device_timeout_resets(job->dev) - job->resets_base;
	char tried[192] = "no upload chunk was sent";

	if (c->frame)
		snprintf(tried, sizeof(tried), "tried frames of %zu to %zu bytes, %u to %u in "
			 "flight, %u frames lost", c->min_frame, c->max_frame,
			 c->min_window, c->max_window, c->losses);
	job_finish(job, GW_JOB_STATE_FAILED,
		   "stalled: no progress for %u s ([update] stall_timeout) in phase %s "
		   "at %zu of %zu bytes; %s, %lld link resets after unanswered "
		   "requests, %u attempts ended in a link error%s%s%s",
		   stall_ms / 1000, engine_phase_names[job->phase], job->offset, job->size,
		   tried, (long long)MAX(resets, 0), job->link_errors,
		   job->last_link_error ? " (last: " : "",
		   job->last_link_error ? job->last_link_error : "",
		   job->last_link_error ? ")" : "");
}

static void stall_cb(evutil_socket_t fd, short what, void *arg)
{
	struct job *job = arg;
	uint32_t stall = gw_config(job->eng->gw)->update.stall_timeout_ms;
	uint64_t now = gw_now_ms(job->eng->gw), idle = now - job->advanced_ms;

	if (!stall || job->state != GW_JOB_STATE_RUNNING)
		return;
	/* Rebooting has its own bound ([update] boot_timeout: lost). */
	if (job->phase == PHASE_WAIT || idle < stall) {
		stall_arm(job, job->phase == PHASE_WAIT ? stall : (uint32_t)(stall - idle));
		return;
	}
	stall_fail(job, stall);
}

/* ---- dispatch: one job per device, in id order ---- */

static bool device_busy(struct gw_engine *eng, const char *device_id)
{
	struct job *j;

	TAILQ_FOREACH(j, &eng->jobs, entry)
		if (j->state == GW_JOB_STATE_RUNNING && !strcasecmp(j->device_id, device_id))
			return true;
	return false;
}

static void job_start(struct job *job)
{
	int err = 0;

	job->img = engine_image_get(job->eng, job->image_id, &err);
	if (!job->img && err == -EINVAL) {
		log_warn("job %lld: corrupted row in the store: image id is not"
			 " 64 lowercase hex digits; job failed", (long long)job->id);
		return job_finish(job, GW_JOB_STATE_FAILED, "corrupted job row:"
				  " image id is not a valid image id");
	}
	if (!job->img)
		return job_finish(job, GW_JOB_STATE_FAILED, "image %s: %s", job->image_id,
				  err == -ENOENT ? "not in the image store" :
				  "not a valid MCUboot image");
	memcpy(job->hash, job->img->hash, sizeof(job->hash));
	job->size = job->img->len;
	job->state = GW_JOB_STATE_RUNNING;
	if (!job->started_ms)
		job->started_ms = gw_now_ms(job->eng->gw);
	job->retry_ms = RETRY_FIRST_MS;
	job->advanced_ms = gw_now_ms(job->eng->gw);
	job->ctl = (struct gw_upload_ctl){ 0 };
	job->ctl_losses_seen = 0;
	job->link_errors = 0;
	free(job->last_link_error);
	job->last_link_error = NULL;
	job->resets_base = device_timeout_resets(job_device(job));
	if (gw_config(job->eng->gw)->update.stall_timeout_ms)
		stall_arm(job, gw_config(job->eng->gw)->update.stall_timeout_ms);
	log_info("job %lld: %s %s on %s%s", (long long)job->id, gw_job_mode_str(job->mode),
		 job->image_id, job->device_id,
		 job->phase > PHASE_QUEUED ? " (resumed after a restart)" : "");
	job_step_state(job);
}

static void dispatch(struct gw_engine *eng)
{
	struct gw_device *dev;
	struct job *j, *next;

	for (j = TAILQ_FIRST(&eng->jobs); j; j = next) {
		next = TAILQ_NEXT(j, entry);
		if (j->state != GW_JOB_STATE_QUEUED || j->claim_lost ||
		    device_busy(eng, j->device_id))
			continue;
		dev = gw_device_find(eng->gw, j->device_id);
		if (!dev)
			continue; /* not discovered yet: device.added wakes us */
		/* A job holds its adapter's token (and so one of its links)
		 * from start to end: jobs beyond it wait queued, unconnected. */
		free(j->radio_key);
		j->radio_key = radio_key_of(dev);
		if (!radio_acquire(j))
			continue;
		job_device(j);
		j->state = GW_JOB_STATE_RUNNING;
		job_start(j);
	}
}

static void dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	dispatch(arg);
}

static void dispatch_soon(struct gw_engine *eng)
{
	event_active(eng->dispatch_ev, 0, 0);
}

static struct job *job_find(struct gw_engine *eng, int64_t id)
{
	struct job *j;

	TAILQ_FOREACH(j, &eng->jobs, entry)
		if (j->id == id)
			return j;
	return NULL;
}

/* ---- device events ---- */

static void on_event(const struct gw_event *ev, void *user_data)
{
	struct gw_engine *eng = user_data;
	const char *id = json_string_value(json_object_get(ev->data, "id"));
	struct job *j;

	if (!id)
		return;
	if (!strcmp(ev->type, "device.added")) {
		if (eng->claim_ev) /* its queued jobs may be claimed now */
			event_active(eng->claim_ev, 0, 0);
		dispatch_soon(eng);
		return;
	}
	TAILQ_FOREACH(j, &eng->jobs, entry) {
		if (j->state != GW_JOB_STATE_RUNNING || strcasecmp(j->device_id, id))
			continue;
		if (!strcmp(ev->type, "device.removed") && j->dev) {
			/* Before the device is freed: drop our requests and the
			 * pointer; the job retries until it comes back. */
			job_stop_io(j);
			j->held = false;
			j->dev = NULL;
			job_after(j, RETRY_FIRST_MS, j->phase == PHASE_WAIT ?
				  job_wait_poll : job_step_state);
		} else if (!strcmp(ev->type, "device.connected") &&
			   j->phase == PHASE_WAIT && !j->req && j->timer_fn) {
			/* Back from its reset: look now rather than at the next poll. */
			evtimer_del(j->timer);
			j->timer_fn = NULL;
			job_wait_poll(j);
		}
	}
}

/* ---- leases (lease.h): jobs follow their watch between gateways ---- */

int gw_engine_hand_over(struct gw_engine *eng, const char *device_id)
{
	struct job *j, *next;
	int n = 0;

	for (j = TAILQ_FIRST(&eng->jobs); j; j = next) {
		next = TAILQ_NEXT(j, entry);
		if (engine_job_final(j) || strcasecmp(j->device_id, device_id))
			continue;
		/* As the store has it now: a running job stays "running" at
		 * its phase and offset, and its next holder resumes it from
		 * the watch's own state. */
		if (j->state == GW_JOB_STATE_RUNNING)
			engine_job_persist(j);
		if (eng->me && !j->claim_lost) /* the next holder claims it at once */
			engine_db_release(eng, j->id);
		TAILQ_REMOVE(&eng->jobs, j, entry);
		eng->n_jobs--;
		log_notice("job %lld (%s): handed over with its watch", (long long)j->id,
			   j->device_id);
		job_free(j);
		n++;
	}
	return n;
}

uint64_t gw_engine_rebooting_until(struct gw_engine *eng, const char *device_id)
{
	const struct gw_config *cfg;
	struct job *j;

	if (!eng || !device_id)
		return 0;
	cfg = gw_config(eng->gw);
	TAILQ_FOREACH(j, &eng->jobs, entry) {
		if (j->state != GW_JOB_STATE_RUNNING || strcasecmp(j->device_id, device_id) ||
		    (j->phase != PHASE_RESET && j->phase != PHASE_WAIT))
			continue;
		/* The reset asked (or, resumed, the wait's first poll): its
		 * deadline; at most boot_timeout from the reset. */
		if (j->phase == PHASE_WAIT && j->wait_deadline_ms)
			return j->wait_deadline_ms;
		return (j->reset_sent_ms ? j->reset_sent_ms : gw_now_ms(eng->gw)) +
		       cfg->update.boot_timeout_ms;
	}
	return 0;
}

int gw_engine_adopt(struct gw_engine *eng, const char *device_id)
{
	struct job *j, *next;
	int n;

	if (eng->me) {
		/* Several gateways: the watch's jobs are claimed. */
		n = engine_db_claim(eng, device_id);
		dispatch_soon(eng);
		return n < 0 ? -EIO : n;
	}
	/* Copies loaded at start or left from an earlier hold may be stale
	 * (another gateway ran them since): the store's rows win. */
	for (j = TAILQ_FIRST(&eng->jobs); j; j = next) {
		next = TAILQ_NEXT(j, entry);
		if (engine_job_final(j) || j->state == GW_JOB_STATE_RUNNING ||
		    strcasecmp(j->device_id, device_id))
			continue;
		TAILQ_REMOVE(&eng->jobs, j, entry);
		eng->n_jobs--;
		job_free(j);
	}
	n = engine_db_adopt(eng, device_id);
	if (n > 0)
		log_notice("jobs: %d unfinished job(s) of %s adopted with its watch", n,
			   device_id);
	dispatch_soon(eng);
	return n;
}

/* ---- several gateways: the claim round ---- */

#define CLAIM_ROUND_MS 2000

static void renewed(struct gw_engine *eng, int64_t id, bool cancel_req)
{
	struct job *j = job_find(eng, id);

	if (!j)
		return;
	j->renewed = true;
	if (cancel_req && !engine_job_final(j) && gw_job_cancel(eng, id) == 0)
		log_notice("job %lld (%s): canceled by a request on another gateway",
			   (long long)id, j->device_id);
}

/* Renews this gateway's claims (a job whose claim another gateway took is
 * dropped without writing its row), acts on cancels asked elsewhere, and
 * claims the unfinished jobs of the watches it manages. */
static void claim_round(struct gw_engine *eng)
{
	struct job *j, *next;
	json_t *devs, *v;
	size_t i;

	TAILQ_FOREACH(j, &eng->jobs, entry)
		j->renewed = false;
	if (engine_db_renew(eng, renewed) < 0)
		return; /* the store is unreachable: the lease rules apply */
	for (j = TAILQ_FIRST(&eng->jobs); j; j = next) {
		next = TAILQ_NEXT(j, entry);
		if (engine_job_final(j) || (j->renewed && !j->claim_lost))
			continue;
		log_warn("job %lld (%s): this gateway's claim lapsed; dropped here (the "
			 "store has it as its runner wrote it)", (long long)j->id, j->device_id);
		TAILQ_REMOVE(&eng->jobs, j, entry);
		eng->n_jobs--;
		job_free(j);
	}
	devs = engine_db_claimable(eng);
	json_array_foreach(devs, i, v)
		if (gw_device_find(eng->gw, json_string_value(v)))
			engine_db_claim(eng, json_string_value(v));
	json_decref(devs);
	dispatch_soon(eng);
}

static void claim_cb(evutil_socket_t fd, short what, void *arg)
{
	claim_round(arg);
}

static void jobs_notified(bool reconnected, void *user_data)
{
	struct gw_engine *eng = user_data;

	event_active(eng->claim_ev, 0, 0);
}

/* ---- public API ---- */

struct job *engine_job_new(struct gw_engine *eng)
{
	struct job *job = xnew(struct job);

	job->eng = eng;
	job->timer = evtimer_new(gw_base(eng->gw), timer_cb, job);
	job->stall_ev = evtimer_new(gw_base(eng->gw), stall_cb, job);
	return job;
}

void engine_job_free(struct job *job)
{
	job_stop_io(job);
	radio_release(job);
	job_release_device(job);
	engine_image_put(job->img);
	event_free(job->timer);
	event_free(job->stall_ev);
	free(job->device_id);
	free(job->image_id);
	free(job->rollout_id);
	free(job->error);
	free(job->radio_key);
	free(job->last_link_error);
	free(job->runner);
	free(job->runners);
	free(job);
}

int64_t gw_job_submit(struct gw_engine *engine, const char *device_id,
		      const char *image_id, enum gw_job_mode mode,
		      const struct gw_job_opts *opts)
{
	struct gw_device *dev;
	struct image *im;
	struct job *job;
	int err = 0;
	int64_t id;

	char *known = NULL;

	if (!engine || !device_id || mode > GW_JOB_MODE_CONFIRM || !gw_images_id_valid(image_id))
		return -EINVAL;
	dev = gw_device_find(engine->gw, device_id);
	/* Several gateways: a watch another gateway holds (or nobody holds
	 * now) gets a queued row; its holder claims it. */
	if (!dev && engine->me)
		known = engine_db_device(engine, device_id);
	if (!dev && !known)
		return -ENOENT;
	im = engine_image_get(engine, image_id, &err);
	if (!im) {
		free(known);
		return err == -ENOENT ? -ENOENT : -EINVAL;
	}
	job = engine_job_new(engine);
	job->size = im->len;
	engine_image_put(im);
	job->device_id = known ? known : xstrdup(gw_device_id(dev));
	if (dev && engine->me) {
		job->runner = xstrdup(engine->me);
		job->runners = xstrdup(engine->me);
		job->runner_expires = gw_now_ms(engine->gw) + engine->claim_ttl_ms;
	}
	job->image_id = xstrdup(image_id);
	job->rollout_id = opts && opts->rollout_id ? xstrdup(opts->rollout_id) : NULL;
	job->mode = mode;
	job->created_ms = job->updated_ms = gw_now_ms(engine->gw);
	id = engine_db_insert(engine, job);
	if (id < 0) {
		job_free(job);
		return id;
	}
	job->id = id;
	if (!dev) {
		engine_db_notify(engine);
		log_info("job %lld queued: %s %s on %s (not managed here: its holder "
			 "claims it)", (long long)id, gw_job_mode_str(mode), image_id,
			 job->device_id);
		emit(job, "job.state", job_event_data(job));
		job_free(job);
		return id;
	}
	job->done = opts ? opts->done : NULL;
	job->user_data = opts ? opts->user_data : NULL;
	TAILQ_INSERT_TAIL(&engine->jobs, job, entry);
	engine->n_jobs++;
	log_info("job %lld queued: %s %s on %s", (long long)id, gw_job_mode_str(mode),
		 image_id, job->device_id);
	emit(job, "job.state", job_event_data(job));
	dispatch_soon(engine);
	return id;
}

static const char cancel_marked[] =
	"canceled after the image was marked for test: nothing is confirmed; MCUboot "
	"reverts it at the reset after the one that boots it";

/* Several gateways: a job this gateway does not run. Cancelled in the
 * store when nobody runs it now, else asked of its runner (its next claim
 * round, within 2 s). */
static int cancel_elsewhere(struct gw_engine *eng, int64_t job_id)
{
	struct job *job = engine_db_job(eng, job_id);
	int r;

	if (!job)
		return -ENOENT;
	if (engine_job_final(job))
		r = -EALREADY;
	else if (job->state == GW_JOB_STATE_RUNNING && job->phase == PHASE_CONFIRM)
		r = -EBUSY;
	else {
		if (job->phase == PHASE_TEST || job->phase == PHASE_RESET ||
		    job->phase == PHASE_WAIT)
			job->error = xstrdup(cancel_marked);
		r = engine_db_cancel_unclaimed(eng, job);
		if (r == 1) {
			log_info("job %lld (%s): canceled (no gateway was running it)",
				 (long long)job_id, job->device_id);
			emit(job, "job.state", job_event_data(job));
			emit(job, "job.result", job_event_data(job));
			r = 0;
		} else if (r == 0) {
			r = engine_db_cancel_request(eng, job_id);
			log_info("job %lld (%s): cancel asked of %s", (long long)job_id,
				 job->device_id, job->runner ? job->runner : "its runner");
		}
	}
	job_free(job);
	return r;
}

int gw_job_cancel(struct gw_engine *engine, int64_t job_id)
{
	struct job *job = engine ? job_find(engine, job_id) : NULL;

	if (!job && engine && engine->me)
		return cancel_elsewhere(engine, job_id);
	if (!job)
		return -ENOENT;
	if (engine_job_final(job))
		return -EALREADY;
	/* The confirm cannot be taken back once sent: let it land. */
	if (job->state == GW_JOB_STATE_RUNNING && job->phase == PHASE_CONFIRM)
		return -EBUSY;
	if (job->phase == PHASE_TEST || job->phase == PHASE_RESET || job->phase == PHASE_WAIT)
		job_finish(job, GW_JOB_STATE_CANCELED, "%s", cancel_marked);
	else
		job_finish(job, GW_JOB_STATE_CANCELED, NULL);
	return 0;
}

static json_t *job_json(const struct job *job)
{
	json_t *o = job_event_data(job);
	unsigned pct = job->size ? (unsigned)(job->offset * 100 / job->size) : 0;

	json_object_set_new(o, "created", json_integer((json_int_t)job->created_ms));
	json_object_set_new(o, "updated", json_integer((json_int_t)job->updated_ms));
	json_object_set_new(o, "started", job->started_ms ?
			    json_integer((json_int_t)job->started_ms) : json_null());
	json_object_set_new(o, "finished", job->finished_ms ?
			    json_integer((json_int_t)job->finished_ms) : json_null());
	json_object_set_new(o, "skipped_upload", json_boolean(job->skipped_upload));
	json_object_set_new(o, "up_to_date", json_boolean(job->up_to_date));
	json_object_set_new(o, "progress",
			    json_pack("{s:I, s:I, s:i, s:f, s:I, s:i, s:I, s:i}",
				      "bytes", (json_int_t)job->offset,
				      "total", (json_int_t)job->size, "percent", (int)pct,
				      "rate", job->rate,
				      "bytes_sent", (json_int_t)job->bytes_sent,
				      "window", (int)job->ctl.window,
				      "frame", (json_int_t)job->ctl.frame,
				      "lost_frames", (int)job->ctl.losses));
	if (!job->error)
		json_object_set_new(o, "error", json_null());
	if (job->eng->me) {
		/* Several gateways: who runs it (or ran it last) and who ran it. */
		json_t *runners = json_array();
		char *list = job->runners ? xstrdup(job->runners) : NULL, *save = NULL;

		for (char *t = list ? strtok_r(list, ",", &save) : NULL; t;
		     t = strtok_r(NULL, ",", &save))
			json_array_append_new(runners, json_string(t));
		free(list);
		json_object_set_new(o, "runner", job->runner ? json_string(job->runner) :
				    json_null());
		json_object_set_new(o, "runners", runners);
		if (job->cancel_req && !engine_job_final(job))
			json_object_set_new(o, "cancel_requested", json_true());
	}
	return o;
}

/* A row of the store, or this gateway's copy when it runs the job (its
 * progress is newer than the last write). */
static json_t *row_json(const struct job *row)
{
	struct job *mem = job_find(row->eng, row->id);

	return job_json(mem ? mem : row);
}

json_t *gw_job_to_json(struct gw_engine *engine, int64_t job_id)
{
	struct job *job = engine ? job_find(engine, job_id) : NULL;
	json_t *o;

	if (job || !engine || !engine->me)
		return job ? job_json(job) : NULL;
	/* Several gateways: every job of the fleet, from the store. */
	job = engine_db_job(engine, job_id);
	o = job ? job_json(job) : NULL;
	if (job)
		job_free(job);
	return o;
}

json_t *gw_jobs_to_json(struct gw_engine *engine, const char *device_id)
{
	json_t *a;
	struct job *j;

	if (engine && engine->me)
		return engine_db_jobs_json(engine, device_id, row_json);
	a = json_array();
	if (!engine)
		return a;
	TAILQ_FOREACH_REVERSE(j, &engine->jobs, job_list, entry)
		if (!device_id || !strcasecmp(j->device_id, device_id))
			json_array_append_new(a, job_json(j));
	return a;
}

struct gw_engine *gw_engine_new(struct gw *gw, int *err)
{
	struct gw_engine *eng = xnew(struct gw_engine);
	struct gw_store *store = gw_store(gw);

	eng->gw = gw;
	eng->next_mem_id = 1;
	TAILQ_INIT(&eng->jobs);
	LIST_INIT(&eng->images);
	eng->store = store;
	eng->dispatch_ev = event_new(gw_base(gw), -1, 0, dispatch_cb, eng);
	if (store && gw_config(gw)->gateway.id) {
		struct timeval tv = { CLAIM_ROUND_MS / 1000, (CLAIM_ROUND_MS % 1000) * 1000 };

		eng->me = xstrdup(gw_config(gw)->gateway.id);
		eng->claim_ttl_ms = gw_config(gw)->gateway.lease_ttl_ms ?
				    gw_config(gw)->gateway.lease_ttl_ms : 15000;
		eng->claim_ev = event_new(gw_base(gw), -1, EV_PERSIST, claim_cb, eng);
		event_add(eng->claim_ev, &tv);
		event_active(eng->claim_ev, 0, 0);
		/* PostgreSQL: a round at once when another gateway queues or
		 * lets go a job (NULL on SQLite: the rounds alone). */
		eng->listener = gw_store_listen(store, gw_base(gw), GW_JOBS_CHANNEL,
						CLAIM_ROUND_MS, jobs_notified, eng, NULL);
	}
	if (eng->store && engine_load_jobs(eng) < 0) {
		if (err)
			*err = -EIO;
		return gw_engine_free(eng);
	}
	eng->sub = gw_events_subscribe(gw_events(gw), on_event, eng);
	gw_set_engine(gw, eng);
	dispatch_soon(eng);
	return eng;
}

struct gw_engine *gw_engine_free(struct gw_engine *engine)
{
	struct job *j;

	if (!engine)
		return NULL;
	if (gw_engine(engine->gw) == engine)
		gw_set_engine(engine->gw, NULL);
	if (engine->sub)
		gw_events_unsubscribe(gw_events(engine->gw), engine->sub);
	/* Running jobs stay "running" in the store: the next start resumes
	 * them. */
	while ((j = TAILQ_FIRST(&engine->jobs))) {
		TAILQ_REMOVE(&engine->jobs, j, entry);
		/* Several gateways: a clean stop lets its claims go, so the
		 * next holder of the watch need not wait for them to lapse. */
		if (engine->me && !engine_job_final(j) && !j->claim_lost) {
			if (j->state == GW_JOB_STATE_RUNNING)
				engine_job_persist(j);
			engine_db_release(engine, j->id);
		}
		job_free(j);
	}
	for (size_t i = 0; i < engine->n_radios; i++)
		free(engine->radios[i].key);
	free(engine->radios);
	for (size_t i = 0; i < engine->n_probes; i++)
		free(engine->probes[i].id);
	free(engine->probes);
	event_free(engine->dispatch_ev);
	gw_store_listener_free(engine->listener);
	if (engine->claim_ev)
		event_free(engine->claim_ev);
	free(engine->me);
	free(engine);
	return NULL;
}
