/* SPDX-License-Identifier: MIT */
/*
 * The upload engine's pieces that need no daemon: the exact CBOR size of an
 * upload chunk (frames filled to the byte, never over), the answers it
 * parses, the job names, and one pipelined upload (upload.c) through the
 * real request queue to a fake watch written here (not the simulator) that
 * drops writes when its buffers are full, answers "off: 0" mid-upload and
 * reports its expected offset on a mismatch. The fake checks that no frame
 * exceeds buf_size and that after a mismatch the client only sends the
 * offset the watch asked for.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cbor.h>
#include <event2/event.h>

#include "codec/cbor-util.h"
#include "codec/smp.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/engine-int.h"
#include "gateway/gateway.h"
#include "gateway/jobs.h"
#include "gateway/registry/registry.h"
#include "links/link.h"
#include "smpgw/usergroup.h"
#include "tap.h"
#include "util/util.h"

/* ---- chunk arithmetic ---- */

static void test_chunk_sizes(void)
{
	static const uint8_t data[70000];
	static const uint8_t sha[32];
	static const size_t totals[] = { 5000, 65535, 70000 };
	static const size_t offs[] = { 0, 1, 23, 24, 255, 256, 4000, 65535 };
	unsigned exact = 0, bad = 0, over = 0;

	for (size_t t = 0; t < ARRAY_SIZE(totals); t++)
		for (size_t o = 0; o < ARRAY_SIZE(offs); o++)
			for (size_t fm = 30; fm <= 3000; fm += 7) {
				size_t off = offs[o], total = totals[t];
				size_t shalen = off == 0 ? 32 : 0;
				size_t n = gw_upload_chunk_max(off, total, shalen, fm);
				uint8_t *frame;
				size_t len;

				if (off >= total || n == 0)
					continue;
				if (gw_smp_img_upload(off, total, sha, shalen, data, n,
						      &frame, &len) < 0) {
					bad++;
					continue;
				}
				if (len != SMP_HDR_LEN +
				    gw_upload_chunk_cbor_len(off, total, shalen, n))
					bad++;
				if (len > fm)
					over++;
				/* Full unless the image ends here, or the data
				 * head grows by one byte exactly at the edge. */
				if (len == fm || off + n == total ||
				    (len + 1 == fm))
					exact++;
				else
					bad++;
				free(frame);
			}
	is_int(over, 0, "no chunk frame exceeds its limit");
	is_int(bad, 0, "predicted CBOR length is exact and frames are full");
	ok(exact > 1000, "checked %u frame sizes", exact);
	is_int(gw_upload_chunk_max(0, 1000, 32, 20), 0, "nothing fits in 20 bytes");
	/* 2475-byte Zephyr buffer, mid-image: 8 header + 1 map + 4+3 off +
	 * 5+3 data head = 24 bytes of overhead. */
	is_int(gw_upload_chunk_max(4096, 300000, 0, 2475), 2475 - 24,
	       "2475-byte buffer at 4096: 2451 data bytes");
	is_int(gw_upload_chunk_max(299990, 300000, 0, 2475), 10, "last chunk: the rest");
}

static void test_names(void)
{
	enum gw_job_mode m;

	ok(gw_job_mode_parse("test-confirm", &m) == 0 && m == GW_JOB_MODE_TEST_CONFIRM,
	   "mode test-confirm");
	ok(gw_job_mode_parse("upload", &m) == 0 && m == GW_JOB_MODE_UPLOAD, "mode upload");
	ok(gw_job_mode_parse("bogus", &m) == -EINVAL, "bad mode refused");
	ok(gw_job_mode_parse(NULL, &m) == -EINVAL, "NULL mode refused");
	for (int i = GW_JOB_MODE_UPLOAD; i <= GW_JOB_MODE_CONFIRM; i++)
		ok(gw_job_mode_parse(gw_job_mode_str(i), &m) == 0 && (int)m == i,
		   "mode %s round-trips", gw_job_mode_str(i));
	is_str(gw_job_state_str(GW_JOB_STATE_ROLLED_BACK), "rolled_back", "state name");
	is_str(gw_job_state_str(GW_JOB_STATE_LOST), "lost", "state name");
}

/* ---- answers ---- */

static uint8_t *frame_of(cbor_item_t *map, size_t *len)
{
	struct smp_hdr h = { .op = SMP_OP_READ_RSP, .ver = SMP_VER_2,
			     .group = SMP_GROUP_IMG };
	uint8_t *f = NULL;

	smp_frame_build(&h, map, &f, len);
	cbor_decref(&map);
	return f;
}

static void test_answers(void)
{
	cbor_item_t *m = smp_cbor_map_new_indefinite(), *a = smp_cbor_array_new_indefinite();
	cbor_item_t *s = smp_cbor_map_new_indefinite();
	struct gw_img_state st;
	struct gw_smp_result res;
	uint8_t hash[32], *f;
	uint64_t off = 0;
	int match = 0;
	size_t len;

	memset(hash, 0xab, sizeof(hash));
	smp_cbor_map_put_uint(s, "slot", 1);
	smp_cbor_map_put_text(s, "version", "1.2.3.4");
	smp_cbor_map_put_bytes(s, "hash", hash, 32);
	smp_cbor_map_put_bool(s, "pending", true);
	smp_cbor_array_push(a, s);
	smp_cbor_map_put_item(m, "images", a);
	f = frame_of(m, &len);
	ok(gw_img_state_parse(f, len, &st, NULL) == 0 && st.n == 1, "state parsed");
	ok(gw_img_state_find(&st, hash) && gw_img_state_find(&st, hash)->pending &&
	   gw_img_state_find(&st, hash)->slot == 1, "slot 1 pending found by hash");
	ok(gw_smp_result(f, len, &res) == 0 && !res.smp_error, "no error in it");
	free(f);

	m = smp_cbor_map_new();
	smp_cbor_map_put_uint(m, "off", 4096);
	smp_cbor_map_put_bool(m, "match", true);
	f = frame_of(m, &len);
	ok(gw_img_upload_parse(f, len, &off, &match) == 0 && off == 4096 && match == 1,
	   "upload answer: off and match");
	free(f);

	m = smp_cbor_map_new();
	s = smp_cbor_map_new();
	smp_cbor_map_put_uint(s, "group", 1);
	smp_cbor_map_put_uint(s, "rc", 6);
	smp_cbor_map_put_item(m, "err", s);
	f = frame_of(m, &len);
	ok(gw_smp_result(f, len, &res) == 0 && res.smp_error && res.v2 && res.rc == 6,
	   "v2 group error recognized");
	ok(gw_img_upload_parse(f, len, &off, NULL) == -EBADMSG, "error has no off");
	free(f);
	ok(gw_img_state_parse((const uint8_t *)"\x01\x00\x00\x01\x00\x01\x00\x00\xff",
			      9, &st, NULL) == -EBADMSG, "garbage refused");
}

/* ---- one upload against a fake watch ---- */

#define FAKE_IMAGE 50000
#define BUF_SIZE 600
#define BUF_COUNT 4

struct fake {
	struct link *link;
	struct event_base *base;
	uint8_t slot[FAKE_IMAGE];
	size_t expected;       /* Zephyr's upload offset */
	bool session;
	unsigned busy;         /* requests being processed (buffers) */
	unsigned real_bufs;    /* buffers it really has (it claims BUF_COUNT) */
	unsigned frames, drops, too_big, off0_sent;
	int drop_frame;        /* drop the Nth upload frame (>0) */
	int off0_at_frame;     /* answer off 0 (session lost) at the Nth frame */
	size_t asked;          /* last offset we answered with on a mismatch */
	bool mismatch_pending; /* the client must now send "asked" */
	bool answer_mismatch;  /* the answer being built is a mismatch */
	size_t answer_asked;
	unsigned violations;   /* sent data the device did not ask for */
	const uint8_t *running; /* hash of the image it runs, or NULL */
	bool unconfirmed;      /* ... as a test image (a confirm makes it permanent) */
	int refuse_confirms;   /* answer this many confirms with refuse_rc (-1: all) */
	int refuse_rc;         /* in group 64: 2 is the firmware's "self-check pending" */
	unsigned refused;
	unsigned upload_frames;
	/* the lossy watch: frames span writes of mtu bytes; more than
	 * lossy_burst writes arriving while it is busy lose one, and a frame
	 * that lost a write leaves its reassembly swallowing every later
	 * write until the link drops (Zephyr smp_svr short of ACL buffers) */
	size_t mtu;
	unsigned lossy_burst, burst, desyncs, disconnects;
	bool desync;
};

struct answer {
	struct fake *f;
	bool mismatch;
	size_t asked;
	uint8_t *frame;
	size_t len;
	struct event *ev;
};

static void deliver(evutil_socket_t fd, short what, void *arg)
{
	struct answer *a = arg;

	a->f->busy--;
	/* From now on the client knows: it may send only what was asked. */
	if (a->mismatch) {
		a->f->mismatch_pending = true;
		a->f->asked = a->asked;
	}
	link_deliver_frame(a->f->link, a->frame, a->len);
	event_free(a->ev);
	free(a->frame);
	free(a);
}

static void reply(struct fake *f, const struct smp_hdr *req, cbor_item_t *map)
{
	struct answer *a = xnew(struct answer);
	struct smp_hdr h = *req;
	/* In order, like Zephyr's SMP work queue: one after the other. */
	struct timeval tv = { 0, 300 + 10 * f->busy };

	h.op = smp_rsp_op(req->op);
	smp_frame_build(&h, map, &a->frame, &a->len);
	cbor_decref(&map);
	a->f = f;
	a->mismatch = f->answer_mismatch;
	a->asked = f->answer_asked;
	f->answer_mismatch = false;
	a->ev = evtimer_new(f->base, deliver, a);
	evtimer_add(a->ev, &tv);
}

static cbor_item_t *upload(struct fake *f, const cbor_item_t *req)
{
	cbor_item_t *rsp = smp_cbor_map_new_indefinite();
	uint64_t off = 0, len = 0;
	const uint8_t *data = NULL;
	size_t n = 0;

	smp_cbor_get_uint(req, "off", &off);
	smp_cbor_get_bytes_ref(req, "data", &data, &n);
	f->upload_frames++;
	if (f->mismatch_pending && off != f->asked)
		f->violations++;
	f->mismatch_pending = false;
	f->answer_mismatch = false;
	if (f->off0_at_frame && (int)f->upload_frames == f->off0_at_frame) {
		f->session = false; /* as after a watch reboot */
		f->expected = 0;
	}
	if (off == 0 && smp_cbor_get_uint(req, "len", &len) == 0) {
		f->session = true;
		f->expected = 0;
	}
	if (!f->session || off != f->expected) {
		smp_cbor_map_put_uint(rsp, "off", f->session ? f->expected : 0);
		f->answer_asked = f->session ? f->expected : 0;
		f->answer_mismatch = true;
		if (!f->session)
			f->off0_sent++;
		return rsp;
	}
	if (off + n <= FAKE_IMAGE)
		memcpy(f->slot + off, data, n);
	f->expected = off + n;
	smp_cbor_map_put_uint(rsp, "off", f->expected);
	return rsp;
}

static int fake_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct fake *f = link_priv(link);
	struct smp_hdr h;
	cbor_item_t *req = NULL, *rsp;

	f->frames++;
	if (len > BUF_SIZE) {
		f->too_big++;
		return 0;
	}
	if (f->lossy_burst) {
		size_t writes = (len + f->mtu - 1) / f->mtu;

		if (f->busy == 0)
			f->burst = 0; /* idle: its buffers are free again */
		f->burst += (unsigned)writes;
		if (!f->desync && f->burst > f->lossy_burst && writes > 1) {
			f->desync = true;
			f->desyncs++;
		}
		if (f->desync || f->burst > f->lossy_burst) {
			f->drops++;
			return 0;
		}
	}
	smp_frame_check(frame, len, &h);
	/* All buffers busy, or the chosen victim: dropped without a word. */
	if (f->busy >= f->real_bufs || (h.group == SMP_GROUP_IMG && f->drop_frame &&
				     (int)f->upload_frames + 1 == f->drop_frame)) {
		if (h.group == SMP_GROUP_IMG)
			f->upload_frames++;
		f->drops++;
		return 0;
	}
	f->busy++;
	smp_cbor_decode(frame + SMP_HDR_LEN, len - SMP_HDR_LEN, &req);
	if (h.group == SMP_GROUP_OS && h.id == SMP_OS_PARAMS) {
		rsp = smp_cbor_map_new();
		smp_cbor_map_put_uint(rsp, "buf_size", BUF_SIZE);
		smp_cbor_map_put_uint(rsp, "buf_count", BUF_COUNT);
	} else if (h.group == SMP_GROUP_IMG && h.id == SMP_IMG_UPLOAD) {
		rsp = upload(f, req);
	} else if (h.group == SMP_GROUP_IMG && h.op == SMP_OP_WRITE && f->refuse_confirms) {
		cbor_item_t *e = smp_cbor_map_new();

		if (f->refuse_confirms > 0)
			f->refuse_confirms--;
		f->refused++;
		smp_cbor_map_put_uint(e, "group", SMPGW_MGMT_GROUP_ID);
		smp_cbor_map_put_uint(e, "rc", (uint64_t)f->refuse_rc);
		rsp = smp_cbor_map_new();
		smp_cbor_map_put_item(rsp, "err", e);
	} else if (f->running) {
		/* img state: slot 0 runs f->running, confirmed unless a test */
		cbor_item_t *a = smp_cbor_array_new(), *sl = smp_cbor_map_new();

		if (h.group == SMP_GROUP_IMG && h.op == SMP_OP_WRITE)
			f->unconfirmed = false;
		smp_cbor_map_put_uint(sl, "slot", 0);
		smp_cbor_map_put_bytes(sl, "hash", f->running, 32);
		smp_cbor_map_put_bool(sl, "active", true);
		smp_cbor_map_put_bool(sl, "confirmed", !f->unconfirmed);
		smp_cbor_array_push(a, sl);
		rsp = smp_cbor_map_new();
		smp_cbor_map_put_item(rsp, "images", a);
	} else {
		/* img state: an empty list (the image is not there) */
		rsp = smp_cbor_map_new();
		smp_cbor_map_put_item(rsp, "images", smp_cbor_array_new());
	}
	if (req)
		cbor_decref(&req);
	reply(f, &h, rsp);
	return 0;
}

static int fake_connect(struct link *link)
{
	link_set_state(link, LINK_STATE_UP, 0);
	return 0;
}

static void fake_disconnect(struct link *link)
{
	struct fake *f = link_priv(link);

	f->desync = false; /* the watch drops its reassembly with the link */
	f->disconnects++;
	link_set_state(link, LINK_STATE_DOWN, 0);
}

static size_t fake_mtu(const struct link *link)
{
	struct fake *f = link_priv(link);

	return f->mtu ? f->mtu : 65535;
}

static void fake_destroy(struct link *link)
{
}

static const struct link_ops fake_ops = {
	.name = "fake", .connect = fake_connect, .disconnect = fake_disconnect,
	.send = fake_send, .mtu = fake_mtu, .destroy = fake_destroy,
};

struct result {
	bool done;
	int err;
	struct gw_upload_stats st;
	struct event_base *base;
};

static void up_done(int err, const char *msg, const struct gw_upload_stats *st,
		    void *user_data)
{
	struct result *r = user_data;

	r->done = true;
	r->err = err;
	r->st = *st;
	if (msg)
		tap_diag("upload: %s", msg);
	event_base_loopbreak(r->base);
}

struct run_opts {
	const char *name;
	int drop_frame, off0_at_frame;
	unsigned depth, real_bufs;
	size_t mtu;             /* 0: one write carries any frame */
	unsigned lossy_burst;   /* the lossy watch above, 0: off */
};

static void run_upload_opts(const struct run_opts *o, struct gw_upload_ctl *ctl,
			    struct fake *f, struct result *res)
{
	struct event_base *base = event_base_new();
	struct gw_config *cfg = gw_config_new_default();
	struct gw *gw;
	struct gw_device *dev;
	static const struct gw_upload_cbs cbs = { NULL, up_done };
	struct gw_upload_params p = { 0 };
	struct timeval limit = { 20, 0 };
	uint8_t *image = xmalloc(FAKE_IMAGE);
	const char *name = o->name;

	cfg->request.timeout_ms = 100;
	cfg->request.first_chunk_timeout_ms = 300;
	gw = gw_new(base, cfg, NULL);
	for (size_t i = 0; i < FAKE_IMAGE; i++)
		image[i] = (uint8_t)(i * 7 + i / 251);
	res->base = base;
	f->base = base;
	f->drop_frame = o->drop_frame;
	f->real_bufs = o->real_bufs;
	f->off0_at_frame = o->off0_at_frame;
	f->mtu = o->mtu;
	f->lossy_burst = o->lossy_burst;
	f->link = link_new(&fake_ops, base, f);
	dev = gw_registry_add(gw_registry_of(gw), "fake", "fake", f->link, true, 0);
	gw_device_set_params(dev, BUF_SIZE, BUF_COUNT);
	p.base = base;
	p.dev = dev;
	p.image = image;
	p.len = FAKE_IMAGE;
	p.frame_max = o->mtu ? BUF_SIZE / o->mtu * o->mtu : BUF_SIZE;
	p.write_len = o->mtu;
	p.max_inflight = o->depth;
	p.chunk_timeout_ms = 100;
	p.state_checked = true;
	p.ctl = ctl;
	gw_upload_start(&p, &cbs, res);
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	ok(res->done && res->err == 0, "%s: upload finished (done %d err %d)", name,
	   res->done, res->err);
	ok(!memcmp(f->slot, image, FAKE_IMAGE), "%s: the watch holds the image", name);
	ok(f->too_big == 0, "%s: no frame over buf_size", name);
	ok(f->violations == 0, "%s: only the asked offset after a mismatch (%u)", name,
	   f->violations);
	tap_diag("%s: %u frames, %u drops, %u timeouts, %u mismatches, %u restarts",
		 name, f->frames, f->drops, res->st.timeouts, res->st.mismatches,
		 res->st.restarts);
	gw_free(gw);
	free(image);
	event_base_free(base);
}

static void run_upload(const char *name, int drop_frame, int off0_at_frame,
		       unsigned depth, unsigned real_bufs)
{
	struct run_opts o = { .name = name, .drop_frame = drop_frame,
			      .off0_at_frame = off0_at_frame, .depth = depth,
			      .real_bufs = real_bufs };
	struct fake *f = xnew(struct fake);
	struct result res = { 0 };

	run_upload_opts(&o, NULL, f, &res);
	if (drop_frame || real_bufs < BUF_COUNT)
		ok(res.st.timeouts + res.st.mismatches > 0, "%s: the drop was noticed", name);
	if (off0_at_frame)
		ok(res.st.restarts == 1, "%s: restarted from zero once", name);
	free(f);
}

/* The lossy watch: 5-write frames and pipelining desynchronise it. The
 * upload must converge by shrinking the window, then the frame, each
 * desync costing one timeout and one link reset (not three timeouts). */
static void test_lossy_upload(void)
{
	struct run_opts o = { .name = "lossy watch", .depth = 3, .real_bufs = BUF_COUNT,
			      .mtu = 120, .lossy_burst = 3 };
	struct gw_upload_ctl ctl = { 0 };
	struct fake *f = xnew(struct fake);
	struct result res = { 0 };

	run_upload_opts(&o, &ctl, f, &res);
	tap_diag("lossy watch: %u desyncs, %u disconnects, %u losses, window %u..%u, "
		 "frames %zu..%zu, now %u x %zu", f->desyncs, f->disconnects, ctl.losses,
		 ctl.min_window, ctl.max_window, ctl.min_frame, ctl.max_frame, ctl.window,
		 ctl.frame);
	ok(f->desyncs >= 1, "the watch desynchronised");
	ok(ctl.losses >= f->desyncs, "every desync counted as a lost frame (%u >= %u)",
	   ctl.losses, f->desyncs);
	is_int(f->disconnects, f->desyncs, "one link reset per desync");
	is_int(res.st.timeouts, f->desyncs, "one timeout per desync, not three");
	is_int(ctl.min_window, 1, "the window shrank to one frame");
	ok(ctl.min_frame <= 3 * 120, "frames shrank to what the watch takes (%zu)",
	   ctl.min_frame);
	ok(ctl.max_frame == 600, "frames started at the limit");
	ok(f->desyncs <= 8, "the probing stays rare (%u desyncs for %u chunks)",
	   f->desyncs, f->frames);
	free(f);
}

/* ---- the engine: queue, up-to-date jobs, cancel, memory bound ---- */

#define JOBS (ENGINE_FINISHED_KEPT + 5)

struct engine_run {
	struct event_base *base;
	unsigned done, up_to_date;
};

static void job_done(int64_t id, enum gw_job_state st, const char *err, void *ud)
{
	struct engine_run *r = ud;

	r->done++;
	r->up_to_date += st == GW_JOB_STATE_DONE;
	if (r->done == JOBS)
		event_base_loopbreak(r->base);
}

#define ENGINE_IMG "app-0.9.0-3k-hash.bin"
#define ENGINE_IMG_ID "1276f4fc9a7a5957889772588b5431c5053b89c298d981126398bffac9e04c5d"

/* A temporary state directory whose image store holds ENGINE_IMG. */
static char *state_dir_with_image(void)
{
	char *dir = xstrdup("/tmp/test-engine-XXXXXX"), *path, *src;
	uint8_t *buf;
	size_t len;
	FILE *out;

	ok(mkdtemp(dir) != NULL, "state dir");
	path = xasprintf("%s/images", dir);
	mkdir(path, 0700);
	free(path);
	src = xasprintf("%s/images/%s", CONFORMANCE_DIR, ENGINE_IMG);
	buf = tap_read_file(src, &len);
	free(src);
	path = xasprintf("%s/images/%s.bin", dir, ENGINE_IMG_ID);
	out = fopen(path, "wb");
	fwrite(buf, 1, len, out);
	fclose(out);
	free(path);
	free(buf);
	return dir;
}

static void state_dir_remove(char *dir)
{
	char *cmd = xasprintf("rm -rf %s", dir);

	ok(system(cmd) == 0, "state dir removed");
	free(cmd);
	free(dir);
}

static void test_engine_jobs(void)
{
	static const char *id = ENGINE_IMG_ID;
	char *dir = state_dir_with_image();
	struct event_base *base = event_base_new();
	struct gw_config *cfg = gw_config_new_default();
	struct engine_run run = { .base = base };
	struct gw_job_opts opts = { .done = job_done, .user_data = &run };
	struct timeval limit = { 60, 0 };
	struct fake *f = xnew(struct fake);
	struct gw_engine *eng;
	uint8_t hash[32];
	int64_t first = 0, second = 0;
	json_t *all, *j;
	struct gw *gw;

	free(cfg->general.state_dir);
	cfg->general.state_dir = xstrdup(dir);
	gw = gw_new(base, cfg, NULL);
	hex_decode(id, hash, sizeof(hash));
	f->base = base;
	f->real_bufs = BUF_COUNT;
	f->running = hash;
	f->link = link_new(&fake_ops, base, f);
	gw_registry_add(gw_registry_of(gw), "fake", "fake", f->link, true, 0);
	eng = gw_engine_new(gw, NULL);
	ok(gw_engine(gw) == eng, "the engine registers with the daemon context");
	ok(gw_job_submit(eng, "nope", id, GW_JOB_MODE_TEST_CONFIRM, NULL) == -ENOENT,
	   "unknown device: -ENOENT");
	ok(gw_job_submit(eng, "fake", "00", GW_JOB_MODE_TEST_CONFIRM, NULL) == -EINVAL,
	   "bad image id: -EINVAL");
	for (int i = 0; i < JOBS; i++) {
		int64_t jid = gw_job_submit(eng, "fake", id, GW_JOB_MODE_TEST_CONFIRM, &opts);

		if (i == 0)
			first = jid;
		if (i == 1)
			second = jid;
	}
	ok(first > 0 && second == first + 1, "jobs get increasing ids");
	ok(gw_job_cancel(eng, second) == 0, "cancel a queued job");
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	is_int(run.done, JOBS, "every job reported once (the canceled one too)");
	is_int(run.up_to_date, JOBS - 1, "each found the image running: done");
	j = gw_job_to_json(eng, first + JOBS - 1);
	ok(j && json_is_true(json_object_get(j, "up_to_date")), "a job says up_to_date");
	json_decref(j);
	ok(gw_job_cancel(eng, first + JOBS - 1) == -EALREADY, "cancel a finished job: -EALREADY");
	all = gw_jobs_to_json(eng, NULL);
	is_int(json_array_size(all), ENGINE_FINISHED_KEPT, "memory keeps the newest finished jobs");
	json_decref(all);
	ok(gw_job_to_json(eng, first) == NULL, "the oldest went out of memory");
	gw_engine_free(eng);
	gw_free(gw);
	free(f);
	event_base_free(base);
	state_dir_remove(dir);
}

struct stall_run {
	struct event_base *base;
	enum gw_job_state state;
	char *error;
};

static void stall_done(int64_t id, enum gw_job_state st, const char *err, void *ud)
{
	struct stall_run *r = ud;

	r->state = st;
	r->error = xstrdup(err ? err : "");
	event_base_loopbreak(r->base);
}

/* An engine in a daemon context whose one device "fake" is the fake f. */
struct eng_fix {
	char *dir;
	struct event_base *base;
	struct gw *gw;
	struct gw_engine *eng;
	struct fake *f;
};

static void fix_start(struct eng_fix *x, struct gw_config *cfg, struct fake *f)
{
	x->dir = state_dir_with_image();
	x->base = event_base_new();
	free(cfg->general.state_dir);
	cfg->general.state_dir = xstrdup(x->dir);
	x->gw = gw_new(x->base, cfg, NULL);
	x->f = f;
	f->base = x->base;
	f->link = link_new(&fake_ops, x->base, f);
	gw_registry_add(gw_registry_of(x->gw), "fake", "fake", f->link, true, 0);
	x->eng = gw_engine_new(x->gw, NULL);
}

static void fix_run(struct eng_fix *x, long limit_s)
{
	struct timeval limit = { limit_s, 0 };

	event_base_loopexit(x->base, &limit);
	event_base_dispatch(x->base);
}

static void fix_end(struct eng_fix *x)
{
	gw_engine_free(x->eng);
	gw_free(x->gw);
	free(x->f);
	event_base_free(x->base);
	state_dir_remove(x->dir);
}

/* A watch that connects but answers nothing: the job fails once
 * [update] stall_timeout passes without progress, naming what was tried,
 * well before retry_timeout. */
static void test_engine_stall(void)
{
	struct gw_config *cfg = gw_config_new_default();
	struct stall_run run = { .state = GW_JOB_STATE_QUEUED };
	struct gw_job_opts opts = { .done = stall_done, .user_data = &run };
	struct fake *f = xnew(struct fake);
	struct eng_fix x;

	cfg->request.timeout_ms = 100;
	cfg->update.stall_timeout_ms = 1500;
	cfg->update.retry_timeout_ms = 60000;
	f->real_bufs = 0; /* every frame dropped */
	fix_start(&x, cfg, f);
	run.base = x.base;
	ok(gw_job_submit(x.eng, "fake", ENGINE_IMG_ID, GW_JOB_MODE_UPLOAD, &opts) > 0,
	   "stall: job submitted");
	fix_run(&x, 20);
	tap_diag("stall: %s", run.error ? run.error : "(no result)");
	is_int(run.state, GW_JOB_STATE_FAILED, "stall: the job failed");
	ok(run.error && strstr(run.error, "stalled: no progress for 1 s ([update] stall_timeout) "
			       "in phase state") && strstr(run.error, "no upload chunk was sent") &&
	   strstr(run.error, "(last: "), "stall: the error names the bound, the phase, what was "
	   "tried and the last link error");
	free(run.error);
	fix_end(&x);
}

/* The firmware refuses a confirm until its self-check passed (group 64
 * rc 2): the engine asks again every second, within [update]
 * self_check_timeout; any other refusal fails the job at once. */
static void run_confirm(const char *name, int refuse, int rc, uint32_t timeout_ms,
			enum gw_job_state want, const char *want_err, unsigned want_refused)
{
	struct gw_config *cfg = gw_config_new_default();
	struct stall_run run = { .state = GW_JOB_STATE_QUEUED };
	struct gw_job_opts opts = { .done = stall_done, .user_data = &run };
	struct fake *f = xnew(struct fake);
	struct eng_fix x;
	uint8_t hash[32];

	cfg->update.self_check_timeout_ms = timeout_ms;
	hex_decode(ENGINE_IMG_ID, hash, sizeof(hash));
	f->real_bufs = BUF_COUNT;
	f->running = hash;
	f->unconfirmed = true;
	f->refuse_confirms = refuse;
	f->refuse_rc = rc;
	fix_start(&x, cfg, f);
	run.base = x.base;
	ok(gw_job_submit(x.eng, "fake", ENGINE_IMG_ID, GW_JOB_MODE_CONFIRM, &opts) > 0,
	   "%s: job submitted", name);
	fix_run(&x, 30);
	tap_diag("%s: %s", name, run.error ? run.error : "(no result)");
	ok(run.state == want, "%s: the job ends %s (%s)", name, gw_job_state_str(want),
	   gw_job_state_str(run.state));
	ok(run.error && strstr(run.error, want_err), "%s: error \"%s\"", name, want_err);
	/* until the timeout: as many as fit, at least the first and one more */
	ok(want == GW_JOB_STATE_FAILED && want_refused > 1 ? f->refused >= want_refused :
	   f->refused == want_refused, "%s: %u confirms refused (%u)", name, want_refused,
	   f->refused);
	ok(f->unconfirmed == (want != GW_JOB_STATE_DONE), "%s: confirmed only when done", name);
	free(run.error);
	fix_end(&x);
}

int main(void)
{
	test_chunk_sizes();
	test_names();
	test_answers();
	run_upload("stop-and-wait", 0, 0, 1, BUF_COUNT);
	run_upload("pipelined", 0, 0, 3, BUF_COUNT);
	run_upload("buffers full", 0, 0, 3, 1);
	run_upload("dropped write", 10, 0, 3, BUF_COUNT);
	run_upload("off 0 mid-upload", 0, 30, 3, BUF_COUNT);
	test_lossy_upload();
	test_engine_jobs();
	test_engine_stall();
	run_confirm("self-check passes", 2, SMPGW_MGMT_RC_SELF_CHECK_PENDING, 10000,
		    GW_JOB_STATE_DONE, "", 2);
	run_confirm("self-check never passes", -1, SMPGW_MGMT_RC_SELF_CHECK_PENDING, 2500,
		    GW_JOB_STATE_FAILED, "confirm: the watch still refuses it after 2500 ms: its "
		    "post-boot self-check has not passed (device error: group 64 rc 2)", 2);
	run_confirm("other refusal", -1, SMPGW_MGMT_RC_UNKNOWN, 10000, GW_JOB_STATE_FAILED,
		    "confirm: device error: group 64 rc 1", 1);
	return tap_done();
}
