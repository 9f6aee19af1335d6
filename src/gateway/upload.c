/* SPDX-License-Identifier: MIT */
/*
 * One pipelined image upload to one device (engine-int.h). Owns the chunks
 * in flight, the device offset it trusts, and the recovery rules:
 *
 * - Chunks fill the current frame size to the byte: at most the limit the
 *   engine computed (buf_size in whole writes, or one write when the watch
 *   does not reassemble). A first chunk (off 0) fills one write only: its
 *   answer waits for the slot erase, so its timeout is long, and a lost
 *   write of a frame spanning several would leave the watch's reassembly
 *   out of step for all that time.
 * - How much goes out at once adapts (struct gw_upload_ctl, kept by the
 *   job across link resets): up to "window" chunks in flight, each of
 *   "frame" bytes. A lost frame (a chunk unanswered, or an answer whose
 *   "off" shows a write was dropped) halves the window; at a window of one
 *   it halves the frame instead, in whole writes (5 writes -> 2 -> 1). The
 *   level that lost becomes a ceiling. Every grow_after chunks acknowledged
 *   in a row earn one step back up: one write more per frame until the
 *   limit, then one frame more in flight. grow_after is 1 at the start (a
 *   clean link ramps up at once) and 8 after a loss. A step that would
 *   reach a ceiling waits until the loss's hold time has passed: 10 chunk
 *   timeouts after the first loss, doubling with each loss (at most 64):
 *   a lost frame costs about one chunk timeout and a reconnect, so probing
 *   where frames were lost costs at most about a tenth of the time. A
 *   level kept for grow_after chunks lifts the ceiling under it.
 * - A response whose "off" is not the end of its chunk (a write was
 *   dropped silently, or the device resumed by sha), or a chunk that timed
 *   out, stops the stream: every other chunk still queued or in flight is
 *   canceled at once (queued ones never leave; answers to sent ones are
 *   dropped), and the upload continues from the offset the device
 *   reported (after a timeout: the last one it acknowledged; a device
 *   further along says so in its answer). Data the device did not ask for
 *   is never sent after a mismatch.
 * - "off": 0 mid-upload means the device lost the session: start over with
 *   a first chunk. Before any first chunk but the very first, the image
 *   state is read: a first chunk of an image that is already complete in
 *   its slot would erase it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "codec/smp.h"
#include "gateway/device.h"
#include "gateway/engine-int.h"
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "util/util.h"

/* Timeouts in a row without the device acknowledging anything: the link
 * is not carrying our writes; let the engine reconnect and resume. */
#define MAX_STALLED_TIMEOUTS 6
/* The adaptation (header comment, docs/updates.md). */
#define GROW_AFTER_LOSS 8
#define HOLD_TIMEOUTS 10     /* first hold: chunk timeouts */
#define HOLD_MAX_TIMEOUTS 640

struct chunk {
	TAILQ_ENTRY(chunk) entry;
	struct gw_upload *up;
	int64_t req;
	size_t off, len;
};
TAILQ_HEAD(chunk_list, chunk);

struct gw_upload {
	struct gw_upload_params p;
	struct gw_upload_cbs cbs;
	void *user_data;
	struct chunk_list inflight;
	unsigned n_inflight;
	size_t next_off;     /* next chunk to send while streaming */
	size_t dev_off;      /* the device's offset, as it reported last */
	bool first_in_flight;
	bool started;        /* a first chunk went out in this upload */
	struct gw_upload_ctl own, *ctl;
	unsigned stalled;    /* timeouts since the last acknowledged chunk */
	int64_t state_req;   /* img state read before a restart, or 0 */
	struct event *kick;  /* deferred start */
	struct gw_upload_stats st;
};

static void pump(struct gw_upload *up);
static void resume(struct gw_upload *up);

static void cancel_all(struct gw_upload *up)
{
	struct chunk *c;

	while ((c = TAILQ_FIRST(&up->inflight))) {
		TAILQ_REMOVE(&up->inflight, c, entry);
		gw_device_cancel(up->p.dev, c->req);
		free(c);
	}
	up->n_inflight = 0;
	if (up->state_req) {
		gw_device_cancel(up->p.dev, up->state_req);
		up->state_req = 0;
	}
}

/* Ends the upload; the engine may free it from the callback, so this is
 * always the last thing a caller does. */
static void finish(struct gw_upload *up, int err, const char *msg)
{
	struct gw_upload_stats st = up->st;

	cancel_all(up);
	up->st.acked = up->dev_off;
	st.acked = up->dev_off;
	up->cbs.done(err, msg, &st, up->user_data);
	gw_upload_free(up);
}

static void chunk_cb(int err, const uint8_t *frame, size_t len, void *user_data);

static size_t write_unit(const struct gw_upload *up);

static int send_chunk(struct gw_upload *up, size_t off)
{
	bool first = off == 0;
	/* A first chunk spans no writes: it waits for the slot erase (a long
	 * timeout), and a lost write there would cost all of it. */
	size_t limit = first && write_unit(up) ? MIN(up->ctl->frame, write_unit(up)) :
		       up->ctl->frame;
	size_t n = gw_upload_chunk_max(off, up->p.len, first ? sizeof(up->p.sha) : 0,
				       limit);
	struct gw_req_opts opts = { .timeout_ms = up->p.chunk_timeout_ms,
				    .pipelined = !first };
	struct chunk *c;
	uint8_t *frame;
	size_t flen;
	int64_t id;
	int r;

	if (n == 0)
		return -EMSGSIZE;
	r = gw_smp_img_upload(off, up->p.len, up->p.sha, sizeof(up->p.sha),
			      up->p.image + off, n, &frame, &flen);
	if (r < 0)
		return r;
	c = xnew(struct chunk);
	c->up = up;
	c->off = off;
	c->len = n;
	id = gw_device_request(up->p.dev, frame, flen, &opts, chunk_cb, c);
	free(frame);
	if (id < 0) {
		free(c);
		return (int)id;
	}
	c->req = id;
	TAILQ_INSERT_TAIL(&up->inflight, c, entry);
	up->n_inflight++;
	up->st.bytes_sent += n;
	if (first) {
		up->first_in_flight = true;
		up->started = true;
	}
	up->next_off = off + n;
	return 0;
}

static void pump(struct gw_upload *up)
{
	/* Bounded by the window. */
	while (!up->first_in_flight &&
	       up->n_inflight < up->ctl->window && up->next_off < up->p.len) {
		int r = send_chunk(up, up->next_off);

		if (r == -EBUSY && up->n_inflight)
			return; /* the device queue is full: wait for answers */
		if (r < 0) {
			finish(up, r, "cannot queue an upload chunk");
			return;
		}
		if (up->first_in_flight)
			return;
	}
}

/* ---- restart from zero: read state first ---- */

static void state_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct gw_upload *up = user_data;
	struct gw_img_state st;
	const struct gw_img_slot *s;
	int r;

	up->state_req = 0;
	if (err) {
		finish(up, err, "image state read failed before restarting the upload");
		return;
	}
	if (gw_img_state_parse(frame, len, &st, NULL) < 0) {
		finish(up, -EPROTO, "unreadable image state");
		return;
	}
	s = gw_img_state_find(&st, up->p.hash);
	if (s) {
		up->dev_off = up->p.len;
		finish(up, -EEXIST, "the image is complete in its slot");
		return;
	}
	r = send_chunk(up, 0);
	if (r < 0)
		finish(up, r, "cannot queue the first chunk");
}

static void restart_from_zero(struct gw_upload *up)
{
	uint8_t *frame;
	size_t len;
	int64_t id;

	up->st.restarts++;
	if (gw_smp_img_state_read(&frame, &len) < 0) {
		finish(up, -ENOMEM, "cannot build a state read");
		return;
	}
	id = gw_device_request(up->p.dev, frame, len, NULL, state_cb, up);
	free(frame);
	if (id < 0) {
		finish(up, (int)id, "cannot queue a state read");
		return;
	}
	up->state_req = id;
}

/* After trouble: drop what is in flight, continue from the device's offset. */
static void resume(struct gw_upload *up)
{
	cancel_all(up);
	if (up->dev_off >= up->p.len) {
		finish(up, 0, NULL);
		return;
	}
	if (up->dev_off == 0) {
		restart_from_zero(up);
		return;
	}
	up->next_off = up->dev_off;
	pump(up);
}

/* ---- adaptation: what the link has proven it carries ---- */

static void ctl_init(struct gw_upload *up)
{
	struct gw_upload_ctl *ctl = up->ctl;

	if (!ctl->frame) {
		*ctl = (struct gw_upload_ctl){ .window = 1, .frame = up->p.frame_max,
					       .grow_after = 1 };
		ctl->min_window = ctl->max_window = 1;
		ctl->min_frame = ctl->max_frame = ctl->frame;
	}
	/* The limits may have changed since (params read again, a setting). */
	ctl->frame = MIN(ctl->frame, up->p.frame_max);
	ctl->window = MAX(1, MIN(ctl->window, up->p.max_inflight));
}

static size_t write_unit(const struct gw_upload *up)
{
	size_t w = up->p.write_len;

	return w && w < up->p.frame_max ? w : 0;
}

/* A frame was lost: fewer in flight, or smaller frames at one in flight;
 * the level that lost becomes a ceiling for a while. */
static void ctl_loss(struct gw_upload *up, const char *why)
{
	struct gw_upload_ctl *ctl = up->ctl;
	uint64_t first = (uint64_t)HOLD_TIMEOUTS * MAX(up->p.chunk_timeout_ms, 100u) * 1000;
	size_t unit = write_unit(up);
	unsigned w = ctl->window;
	size_t f = ctl->frame;

	ctl->losses++;
	ctl->good = 0;
	ctl->grow_after = GROW_AFTER_LOSS;
	ctl->hold_us = ctl->hold_us ? MIN(ctl->hold_us * 2, first / HOLD_TIMEOUTS *
					  HOLD_MAX_TIMEOUTS) : first;
	ctl->probe_at_us = now_usec() + ctl->hold_us;
	if (ctl->window > 1) {
		ctl->ceil_window = ctl->window;
		ctl->window /= 2;
	} else if (unit && ctl->frame > unit) {
		ctl->ceil_frame = ctl->frame;
		ctl->frame = MAX(unit, ctl->frame / unit / 2 * unit);
	}
	ctl->min_window = MIN(ctl->min_window, ctl->window);
	ctl->min_frame = MIN(ctl->min_frame, ctl->frame);
	log_info("%s: upload: %s: %u in flight -> %u, frames of %zu -> %zu bytes; "
		 "back up one step per %u chunks answered, to where it was lost "
		 "after %llu s", gw_device_id(up->p.dev), why, w, ctl->window, f,
		 ctl->frame, ctl->grow_after,
		 (unsigned long long)(ctl->hold_us / 1000000));
}

/* A step up to (w, f): not to a ceiling while its hold lasts. */
static bool ctl_may_reach(const struct gw_upload_ctl *ctl, unsigned w, size_t f)
{
	bool ceiling = (ctl->ceil_frame && f >= ctl->ceil_frame) ||
		       (ctl->ceil_window && w >= ctl->ceil_window);

	return !ceiling || now_usec() >= ctl->probe_at_us;
}

/* A chunk was acknowledged: every grow_after in a row earn a step up. */
static void ctl_good(struct gw_upload *up)
{
	struct gw_upload_ctl *ctl = up->ctl;
	size_t unit = write_unit(up);
	unsigned w = ctl->window;
	size_t f = ctl->frame;

	if (++ctl->good < ctl->grow_after)
		return;
	ctl->good = 0;
	/* This level held: a ceiling at or under it is gone. */
	if (ctl->ceil_frame && ctl->frame >= ctl->ceil_frame)
		ctl->ceil_frame = 0;
	if (ctl->ceil_window && ctl->window >= ctl->ceil_window)
		ctl->ceil_window = 0;
	if (unit && f < up->p.frame_max)
		f = MIN(up->p.frame_max, f + unit);
	else if (w < up->p.max_inflight)
		w++;
	else
		return;
	if (!ctl_may_reach(ctl, w, f))
		return;
	ctl->window = w;
	ctl->frame = f;
	ctl->max_window = MAX(ctl->max_window, ctl->window);
	ctl->max_frame = MAX(ctl->max_frame, ctl->frame);
	log_debug("%s: upload: %u in flight, frames of %zu bytes",
		  gw_device_id(up->p.dev), ctl->window, ctl->frame);
}

static struct chunk *take_chunk(struct chunk *c)
{
	struct gw_upload *up = c->up;

	TAILQ_REMOVE(&up->inflight, c, entry);
	up->n_inflight--;
	if (c->off == 0)
		up->first_in_flight = false;
	return c;
}

/* A transport error for a chunk: 0 to resume, < 0 when the upload ended. */
static int chunk_error(struct gw_upload *up, int err)
{
	if (err != -ETIMEDOUT) {
		finish(up, err, "the link failed during the upload");
		return err;
	}
	up->st.timeouts++;
	ctl_loss(up, "a chunk went unanswered");
	if (++up->stalled >= MAX_STALLED_TIMEOUTS) {
		finish(up, -ETIMEDOUT, "the device stopped answering upload chunks");
		return -ETIMEDOUT;
	}
	return 0;
}

/* A garbled answer (e.g. a corrupted BLE notification) is treated like a
 * lost one: resume from the last acknowledged offset, bounded by the same
 * stall count as timeouts. 0 to resume, < 0 when the upload ended. */
static int garbled(struct gw_upload *up, const char *why)
{
	up->st.timeouts++;
	if (++up->stalled >= MAX_STALLED_TIMEOUTS) {
		finish(up, -EPROTO, why);
		return -EPROTO;
	}
	log_debug("%s: upload: %s; resuming", gw_device_id(up->p.dev), why);
	return 0;
}

/* The device answered a chunk: 1 when it was the expected answer, 0 when
 * the stream must resume from the device's offset, < 0 when it ended. */
static int chunk_answer(struct gw_upload *up, const struct chunk *c,
			const uint8_t *frame, size_t len)
{
	struct gw_smp_result res;
	uint64_t off;
	int match = -1;
	char msg[128];

	if (gw_smp_result(frame, len, &res) < 0)
		return garbled(up, "malformed upload response");
	if (res.smp_error) {
		gw_smp_result_str(&res, msg, sizeof(msg));
		finish(up, -EPROTO, msg);
		return -EPROTO;
	}
	if (gw_img_upload_parse(frame, len, &off, &match) < 0 || off > up->p.len)
		return garbled(up, "upload response without a valid \"off\"");
	up->stalled = 0;
	/* CONFIG_IMG_ENABLE_IMAGE_CHECK: the watch hashed what it received
	 * against "sha" (the whole file's SHA-256). */
	if (match == 0) {
		finish(up, -EPROTO, "the watch's SHA-256 of the received image does "
		       "not match the file's (\"match\": false)");
		return -EPROTO;
	}
	if (off == c->off + c->len) {
		/* Max: a datagram transport may reorder answers. */
		up->dev_off = MAX(up->dev_off, (size_t)off);
		up->st.acked = up->dev_off;
		ctl_good(up);
		if (up->cbs.progress)
			up->cbs.progress(&up->st, up->user_data);
		return 1;
	}
	/* The device's word wins: dropped write, lost session (0), resume.
	 * Only a device behind the chunk that is not starting over lost
	 * something on the way (a first chunk's answer may resume a session). */
	up->st.mismatches++;
	if (c->off && off && off < c->off + c->len)
		ctl_loss(up, "the watch missed a write");
	log_debug("%s: upload: device at %llu, chunk was %zu+%zu",
		  gw_device_id(up->p.dev), (unsigned long long)off, c->off, c->len);
	up->dev_off = (size_t)off;
	up->st.acked = up->dev_off;
	return 0;
}

static void chunk_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct chunk *c = take_chunk(user_data);
	struct gw_upload *up = c->up;
	int r = err ? chunk_error(up, err) : chunk_answer(up, c, frame, len);

	free(c);
	if (r < 0)
		return; /* finished: up may be gone */
	if (r == 0) {
		resume(up);
		return;
	}
	if (up->dev_off >= up->p.len && !up->n_inflight) {
		finish(up, 0, NULL);
		return;
	}
	pump(up);
}

/* ---- lifetime ---- */

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_upload *up = arg;

	up->dev_off = up->p.start_off;
	up->st.acked = up->p.start_off;
	if (up->p.start_off == 0 && !up->p.state_checked) {
		restart_from_zero(up);
		return;
	}
	if (up->p.start_off == 0) {
		int r = send_chunk(up, 0);

		if (r < 0)
			finish(up, r, "cannot queue the first chunk");
		return;
	}
	up->next_off = up->p.start_off;
	pump(up);
}

struct gw_upload *gw_upload_start(const struct gw_upload_params *p,
				  const struct gw_upload_cbs *cbs,
				  void *user_data)
{
	struct gw_upload *up = xnew(struct gw_upload);

	up->p = *p;
	if (up->p.max_inflight < 1)
		up->p.max_inflight = 1;
	up->cbs = *cbs;
	up->user_data = user_data;
	up->ctl = p->ctl ? p->ctl : &up->own;
	ctl_init(up);
	TAILQ_INIT(&up->inflight);
	up->kick = event_new(p->base, -1, 0, kick_cb, up);
	event_active(up->kick, 0, 0);
	return up;
}

struct gw_upload *gw_upload_free(struct gw_upload *up)
{
	if (!up)
		return NULL;
	cancel_all(up);
	event_free(up->kick);
	free(up);
	return NULL;
}
