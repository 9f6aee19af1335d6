/* SPDX-License-Identifier: MIT */
/*
 * The simulated watch against the real Zephyr: conformance replay of
 * zephyr-smp-vectors.json and zephyr-edge-cases.json, then the MCUboot
 * update cycle (upload, test, reset, revert, confirm), resume after a
 * disconnect, the first chunk's erase delay, silent drops when the SMP
 * buffers are full, and the reply faults. Client requests are built here by
 * hand with the CBOR helpers, never with the gateway's code.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "codec/cbor-util.h"
#include "codec/smp.h"
#include "device.h"
#include "tap.h"
#include "util/util.h"

#define IMAGES CONFORMANCE_DIR "/images/"

struct box {
	uint8_t buf[8192];
	size_t len;
	unsigned count;
};

static struct event_base *base;
static unsigned xchg_timeout_ms = 5000;

static void reply_cb(struct sim_device *dev, const uint8_t *frame, size_t len, void *ud)
{
	struct box *b = ud;

	b->len = MIN(len, sizeof(b->buf));
	memcpy(b->buf, frame, b->len);
	b->count++;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {}

/* Runs the loop until b has count replies or ms passed; bounded. */
static bool wait_for(struct box *b, unsigned count, unsigned ms)
{
	struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	struct timeval tv = { 0, 5000 };
	uint64_t deadline = now_usec() + (uint64_t)ms * 1000;

	event_add(tick, &tv);
	while (b->count < count && now_usec() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(tick);
	return b->count >= count;
}

static void run_for(unsigned ms)
{
	struct box never = { .count = 0 };

	wait_for(&never, 1, ms);
}

static struct sim_device *new_dev(bool no_primary, uint16_t buf_size, uint16_t buf_count,
				  bool flash_timing)
{
	struct sim_device_config cfg;

	sim_device_config_default(&cfg);
	cfg.no_primary = no_primary;
	cfg.link.buf_size = buf_size;
	cfg.link.buf_count = buf_count;
	cfg.boot_ms = 20;
	if (!flash_timing)
		cfg.flash.erase_sector_us = cfg.flash.program_page_us = 0;
	return sim_device_new(base, &cfg);
}

/* Sends a raw frame and waits for one reply into b. */
static bool xchg_raw(struct sim_device *dev, const uint8_t *req, size_t len, struct box *b)
{
	b->count = 0;
	if (sim_device_rx_frame(dev, req, len, reply_cb, b) != 0)
		return false;
	return wait_for(b, 1, xchg_timeout_ms);
}

static uint8_t seq_counter;

/* Builds an SMP v2 request around body (consumed; NULL = empty map). */
static uint8_t *build(uint8_t op, uint16_t group, uint8_t id, cbor_item_t *body, size_t *len)
{
	struct smp_hdr h = { .op = op, .ver = SMP_VER_2, .group = group, .seq = ++seq_counter,
			     .id = id };
	uint8_t *out = NULL;

	if (smp_frame_build(&h, body, &out, len) < 0)
		abort();
	if (body)
		cbor_decref(&body);
	return out;
}

/* Request/response; returns the decoded reply map (caller decrefs) or NULL. */
static cbor_item_t *xchg(struct sim_device *dev, uint8_t op, uint16_t group, uint8_t id,
			 cbor_item_t *body)
{
	size_t len;
	uint8_t *req = build(op, group, id, body, &len);
	struct box b = { 0 };
	cbor_item_t *rsp = NULL;

	if (xchg_raw(dev, req, len, &b) && b.len >= SMP_HDR_LEN && b.buf[6] == req[6])
		smp_cbor_decode(b.buf + SMP_HDR_LEN, b.len - SMP_HDR_LEN, &rsp);
	free(req);
	return rsp;
}

/* ---- conformance replay ------------------------------------------------------ */

static json_t *load_json(const char *name)
{
	json_error_t err;
	json_t *j = json_load_file(name, 0, &err);

	if (!j) {
		tap_diag("%s: %s", name, err.text);
		exit(1);
	}
	return j;
}

/* Field-by-field checks for answers whose values legitimately differ. */
static void check_taskstat(const cbor_item_t *m, const char *what)
{
	const cbor_item_t *tasks = smp_cbor_map_get(m, "tasks");
	bool good = tasks && cbor_isa_map(tasks) && cbor_map_size(tasks) > 0;

	for (size_t i = 0; good && i < cbor_map_size(tasks); i++) {
		const cbor_item_t *t = cbor_map_handle(tasks)[i].value;
		int64_t v;
		good = smp_cbor_get_int(t, "prio", &v) == 0 && smp_cbor_get_int(t, "tid", &v) == 0 &&
		       smp_cbor_get_int(t, "state", &v) == 0;
	}
	ok(good, "%s: tasks map with prio/tid/state", what);
}

static bool same_keys(const cbor_item_t *a, const cbor_item_t *b)
{
	if (!cbor_isa_map(a) || !cbor_isa_map(b) || cbor_map_size(a) != cbor_map_size(b))
		return false;
	for (size_t i = 0; i < cbor_map_size(a); i++) {
		const cbor_item_t *k = cbor_map_handle(a)[i].key;
		char key[64] = "";
		size_t n = MIN(cbor_string_length(k), sizeof(key) - 1);
		memcpy(key, cbor_string_handle(k), n);
		if (!smp_cbor_map_get(b, key))
			return false;
	}
	return true;
}

static void compare_fields(const char *name, const uint8_t *got, size_t glen,
			   const uint8_t *want, size_t wlen)
{
	cbor_item_t *g = NULL, *w = NULL;

	is_mem(got, want, 2, name); /* op/ver, flags */
	is_mem(got + 4, want + 4, 4, name); /* group, seq, id */
	smp_cbor_decode(got + 8, glen - 8, &g);
	smp_cbor_decode(want + 8, wlen - 8, &w);
	ok(g && w, "%s: both decode", name);
	if (g && w && strstr(name, "taskstat")) {
		check_taskstat(g, name);
	} else if (g && w && strstr(name, "os info")) {
		char out[200];
		ok(smp_cbor_get_text(g, "output", out, sizeof(out), NULL) == 0 &&
		   strncmp(out, "Zephyr unknown  3.4.99 ", 23) == 0, "%s: uname-like output", name);
	} else if (g && w && strstr(name, "smp_svr_stats")) {
		const cbor_item_t *f = smp_cbor_map_get(g, "fields");
		uint64_t t;
		ok(same_keys(g, w) && smp_cbor_get_uint(f, "ticks", &t) == 0, "%s: name, fields.ticks", name);
	} else if (g && w && strstr(name, "image state read (after)")) {
		/* The recording's flash still held a complete image from an earlier
		 * run (a state read lists only images whose TLVs are there): after
		 * one chunk our slot 1 is rightly not listed. */
		const cbor_item_t *imgs = smp_cbor_map_get(g, "images");
		ok(imgs && cbor_isa_array(imgs) && smp_cbor_map_get(g, "splitStatus"),
		   "%s: state shape (slot 1 partial, not listed)", name);
	} else {
		ok(false, "%s: unexpected difference", name);
	}
	if (g)
		cbor_decref(&g);
	if (w)
		cbor_decref(&w);
}

static void replay(struct sim_device *dev, const char *name, const char *req_hex,
		   const char *rsp_hex)
{
	size_t rlen, wlen;
	uint8_t *req = tap_unhex(req_hex, &rlen), *want = tap_unhex(rsp_hex, &wlen);
	struct box b = { 0 };

	if (!xchg_raw(dev, req, rlen, &b)) {
		ok(false, "%s: answered", name);
	} else if (b.len == wlen && memcmp(b.buf, want, wlen) == 0) {
		ok(true, "%s: byte for byte", name);
	} else {
		compare_fields(name, b.buf, b.len, want, wlen);
	}
	free(req);
	free(want);
}

static void test_vectors(void)
{
	json_t *root = load_json(CONFORMANCE_DIR "/zephyr-smp-vectors.json");
	static const struct { const char *t; uint16_t size, count; } tr[] = {
		{ "serial", 384, 4 }, { "udp", 2048, 2 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(tr); i++) {
		struct sim_device *dev = new_dev(true, tr[i].size, tr[i].count, false);
		const char *name;
		json_t *v;
		json_object_foreach(json_object_get(root, tr[i].t), name, v) {
			char what[96];
			snprintf(what, sizeof(what), "%s %s", tr[i].t, name);
			replay(dev, what, json_string_value(json_object_get(v, "req")),
			       json_string_value(json_object_get(v, "rsp")));
		}
		sim_device_free(dev);
	}
	json_decref(root);
}

static void test_edge_cases(void)
{
	json_t *root = load_json(CONFORMANCE_DIR "/zephyr-edge-cases.json");
	struct sim_device *dev = new_dev(true, 2048, 2, false);
	size_t i;
	json_t *e;

	json_array_foreach(root, i, e) {
		replay(dev, json_string_value(json_object_get(e, "name")),
		       json_string_value(json_object_get(e, "req")),
		       json_string_value(json_object_get(e, "rsp")));
	}
	sim_device_free(dev);
	json_decref(root);
}

/* ---- update cycle ------------------------------------------------------------- */

static uint8_t *read_image(const char *file, size_t *len)
{
	return tap_read_file(file, len);
}

static void sha256(const uint8_t *b, size_t n, uint8_t out[32]);

/* Uploads the image from offset from in chunks until the device reports
 * stop or more; returns the last reported off, -1 when unanswered. */
static int64_t upload_until(struct sim_device *dev, const uint8_t *img, size_t len, size_t from,
			    size_t chunk, size_t stop)
{
	uint8_t sha[32];
	int64_t off = (int64_t)from;

	sha256(img, len, sha);
	for (unsigned guard = 0; off >= 0 && (size_t)off < stop && guard < 10000; guard++) {
		cbor_item_t *m = smp_cbor_map_new();
		size_t n = MIN(chunk, len - (size_t)off);
		if (off == 0) {
			smp_cbor_map_put_uint(m, "image", 0);
			smp_cbor_map_put_uint(m, "len", len);
			smp_cbor_map_put_bytes(m, "sha", sha, 32);
		}
		smp_cbor_map_put_uint(m, "off", (uint64_t)off);
		smp_cbor_map_put_bytes(m, "data", img + off, n);
		cbor_item_t *r = xchg(dev, SMP_OP_WRITE, SMP_GROUP_IMG, SMP_IMG_UPLOAD, m);
		uint64_t next;
		if (!r || smp_cbor_get_uint(r, "off", &next) < 0)
			off = -1;
		else
			off = (int64_t)next;
		if (r)
			cbor_decref(&r);
	}
	return off;
}

static int64_t upload(struct sim_device *dev, const uint8_t *img, size_t len, size_t from,
		      size_t chunk)
{
	return upload_until(dev, img, len, from, chunk, len);
}

#include <openssl/evp.h>
static void sha256(const uint8_t *b, size_t n, uint8_t out[32])
{
	EVP_Digest(b, n, out, NULL, EVP_sha256(), NULL);
}

static void state_write(struct sim_device *dev, const uint8_t *hash, bool confirm, const char *what)
{
	cbor_item_t *m = smp_cbor_map_new();

	if (hash)
		smp_cbor_map_put_bytes(m, "hash", hash, 32);
	smp_cbor_map_put_bool(m, "confirm", confirm);
	cbor_item_t *r = xchg(dev, SMP_OP_WRITE, SMP_GROUP_IMG, SMP_IMG_STATE, m);
	ok(r && smp_cbor_map_get(r, "images"), "%s: state write answers the state", what);
	if (r)
		cbor_decref(&r);
}

static void reboot_and_wait(struct sim_device *dev)
{
	sim_device_reset(dev);
	for (unsigned i = 0; i < 200 && !sim_device_is_up(dev); i++)
		run_for(5);
}

static void test_update_cycle(void)
{
	size_t len;
	uint8_t *img = read_image(IMAGES "app-1.2.3+4-ecdsa-p256.bin", &len);
	struct sim_device *dev = new_dev(false, 2475, 4, false);
	struct sim_slot_info s0, s1;
	uint8_t hash[32];

	sim_device_slot_info(dev, 0, &s0);
	ok(s0.present && s0.active && s0.confirmed && strcmp(s0.version, "1.0.0") == 0,
	   "boots a confirmed 1.0.0");
	is_int(upload(dev, img, len, 0, 2000), (int64_t)len, "upload reaches len");
	sim_device_slot_info(dev, 1, &s1);
	ok(s1.present && s1.bootable && !s1.pending && strcmp(s1.version, "1.2.3.4") == 0,
	   "slot 1 holds 1.2.3.4 (%s)", s1.version);
	hex_decode("b3d335f636f901591380c46c5ba8da01938862e162ff335a847acd6e1374cd3b", hash, 32);
	is_mem(s1.hash, hash, 32, "slot 1 hash is the SHA-256 TLV");

	state_write(dev, hash, false, "test");
	sim_device_slot_info(dev, 1, &s1);
	ok(s1.pending && !s1.permanent, "slot 1 pending (test)");
	reboot_and_wait(dev);
	ok(sim_device_is_up(dev), "booted after reset");
	sim_device_slot_info(dev, 0, &s0);
	sim_device_slot_info(dev, 1, &s1);
	ok(s0.active && !s0.confirmed && memcmp(s0.hash, hash, 32) == 0,
	   "new image active, unconfirmed");
	ok(s1.confirmed && strcmp(s1.version, "1.0.0") == 0, "old image kept for revert");

	reboot_and_wait(dev);
	sim_device_slot_info(dev, 0, &s0);
	ok(strcmp(s0.version, "1.0.0") == 0 && s0.confirmed, "reset without confirm reverts");

	state_write(dev, hash, false, "test again");
	reboot_and_wait(dev);
	state_write(dev, NULL, true, "confirm");
	sim_device_slot_info(dev, 0, &s0);
	ok(s0.active && s0.confirmed && memcmp(s0.hash, hash, 32) == 0, "confirmed");
	reboot_and_wait(dev);
	sim_device_slot_info(dev, 0, &s0);
	ok(memcmp(s0.hash, hash, 32) == 0 && s0.confirmed, "stays after another reset");
	is_int(sim_device_boot_count(dev), 5, "boot count");

	/* health from the user group */
	cbor_item_t *h = xchg(dev, SMP_OP_READ, 64, 0, NULL);
	uint64_t bc = 0;
	ok(h && smp_cbor_get_uint(h, "boot_count", &bc) == 0 && bc == 5, "health boot_count 5");
	if (h)
		cbor_decref(&h);

	/* a corrupted image is refused by MCUboot at boot */
	free(img);
	img = read_image(IMAGES "app-1.0.1-rsa2048.bin", &len);
	img[600] ^= 1;
	is_int(upload(dev, img, len, 0, 2000), (int64_t)len, "upload corrupted image");
	sim_device_slot_info(dev, 1, &s1);
	ok(s1.present && !s1.bootable, "corrupted image listed, not bootable");
	state_write(dev, s1.hash, false, "test corrupted");
	reboot_and_wait(dev);
	sim_device_slot_info(dev, 0, &s0);
	sim_device_slot_info(dev, 1, &s1);
	ok(memcmp(s0.hash, hash, 32) == 0 && !s1.present, "MCUboot kept slot 0, erased slot 1");
	sim_device_free(dev);
	free(img);
}

/* ---- resume, erase delay, drops, faults --------------------------------------------- */

static unsigned disconnects;
static void on_disconnect(struct sim_device *dev, void *ud) { disconnects++; }
static const struct sim_device_observer obs_ops = { .disconnect = on_disconnect };

static void test_resume(void)
{
	size_t len;
	uint8_t *img = read_image(IMAGES "app-1.0.1-rsa2048.bin", &len);
	struct sim_device *dev = new_dev(false, 2475, 4, false);
	struct sim_faults f = *sim_device_faults(dev);
	unsigned id = sim_device_observe(dev, &obs_ops, NULL);
	struct sim_slot_info s1;

	f.disconnect_at_offset = 50000;
	sim_device_set_faults(dev, &f);
	xchg_timeout_ms = 200;
	is_int(upload(dev, img, len, 0, 2000), -1, "upload broken by the disconnect");
	xchg_timeout_ms = 5000;
	is_int(disconnects, 1, "observer told to drop the link");
	sim_device_slot_info(dev, 1, &s1);
	ok(s1.len >= 50000 && s1.len < len, "progress kept (%zu)", s1.len);
	/* reconnect: the first chunk with the same sha answers where it stopped */
	is_int(upload_until(dev, img, len, 0, 2000, 1), (int64_t)s1.len, "resume answers the offset");
	is_int(sim_device_counters(dev)->erases, (len + 4095) / 4096 + 1, "no second erase");
	is_int(upload(dev, img, len, 0, 2000), (int64_t)len, "resumed to the end");
	sim_device_slot_info(dev, 1, &s1);
	ok(s1.present && s1.bootable && strcmp(s1.version, "1.0.1") == 0, "resumed image complete");
	sim_device_unobserve(dev, id);
	sim_device_free(dev);
	free(img);
}

static void test_erase_delay(void)
{
	size_t len;
	uint8_t *img = read_image(IMAGES "app-1.0.0-hash.bin", &len);
	struct sim_device_config cfg;
	struct sim_device *dev;

	sim_device_config_default(&cfg);
	cfg.flash.erase_sector_us = 5000;
	cfg.flash.program_page_us = 0;
	dev = sim_device_new(base, &cfg);
	uint64_t t0 = now_usec();
	is_int(upload_until(dev, img, len, 0, 2000, 1), 2000, "first chunk answered");
	uint64_t first = now_usec() - t0;
	size_t sectors = (len + 4095) / 4096 + 1;
	ok(first >= sectors * 5000 * 9 / 10, "first chunk waited for the erase (%llu us, %zu sectors)",
	   (unsigned long long)first, sectors);
	is_int(sim_device_counters(dev)->erases, sectors, "erase counter");
	sim_device_free(dev);
	free(img);
}

static void test_progressive_erase(void)
{
	size_t len;
	uint8_t *img = read_image(IMAGES "app-1.0.0-hash.bin", &len);
	struct sim_device_config cfg;
	struct sim_device *dev;

	sim_device_config_default(&cfg);
	cfg.flash.progressive_erase = true;
	cfg.flash.erase_sector_us = 1000;
	dev = sim_device_new(base, &cfg);
	is_int(upload_until(dev, img, len, 0, 2000, 1), 2000, "first chunk");
	is_int(sim_device_counters(dev)->erases, 1, "progressive: one sector erased so far");
	is_int(upload(dev, img, len, 2000, 2000), (int64_t)len, "rest of the upload");
	is_int(sim_device_counters(dev)->erases, (len + 4095) / 4096, "sectors erased as data came");
	struct sim_slot_info s1;
	sim_device_slot_info(dev, 1, &s1);
	ok(s1.present && s1.bootable, "image complete and valid");
	sim_device_free(dev);
	free(img);
}

static void test_drops(void)
{
	struct sim_device_config cfg;
	struct sim_device *dev;
	struct box b = { 0 };
	size_t len;
	uint8_t *req = build(SMP_OP_READ, SMP_GROUP_OS, SMP_OS_PARAMS, NULL, &len);

	sim_device_config_default(&cfg);
	cfg.link.buf_count = 2;
	dev = sim_device_new(base, &cfg);
	is_int(sim_device_rx_frame(dev, req, len, reply_cb, &b), 0, "first accepted");
	is_int(sim_device_rx_frame(dev, req, len, reply_cb, &b), 0, "second accepted");
	is_int(sim_device_rx_frame(dev, req, len, reply_cb, &b), -ENOBUFS, "third dropped");
	is_int(sim_device_counters(dev)->drops, 1, "drop counted");
	ok(wait_for(&b, 2, 2000), "two replies");
	run_for(20);
	is_int(b.count, 2, "no reply for the dropped write");
	is_int(sim_device_rx_frame(dev, req, 5, reply_cb, &b), -EBADMSG, "short frame dropped");
	sim_device_free(dev);
	free(req);
}

static void test_faults(void)
{
	struct sim_device *dev = new_dev(false, 2475, 4, false);
	struct sim_faults f = *sim_device_faults(dev);
	struct box b = { 0 };
	size_t len;
	uint8_t *req = build(SMP_OP_READ, SMP_GROUP_OS, SMP_OS_PARAMS, NULL, &len);

	f.wrong_seq = 1;
	f.answer_twice = 1;
	sim_device_set_faults(dev, &f);
	sim_device_rx_frame(dev, req, len, reply_cb, &b);
	ok(wait_for(&b, 2, 2000), "answered twice");
	is_int(b.buf[6], (uint8_t)(req[6] + 1), "wrong sequence number");
	f = *sim_device_faults(dev);
	f.truncate_notifications = 1;
	sim_device_set_faults(dev, &f);
	b.count = 0;
	sim_device_rx_frame(dev, req, len, reply_cb, &b);
	ok(wait_for(&b, 1, 2000) && b.len < get_be16(b.buf + 2) + 8u, "truncated reply");
	f = *sim_device_faults(dev);
	f.corrupt_notifications = 1;
	sim_device_set_faults(dev, &f);
	struct box clean = { 0 };
	sim_device_rx_frame(dev, req, len, reply_cb, &b);
	b.count = 0;
	ok(wait_for(&b, 1, 2000), "corrupted reply sent");
	sim_device_rx_frame(dev, req, len, reply_cb, &clean);
	ok(wait_for(&clean, 1, 2000) && clean.len == b.len && memcmp(clean.buf, b.buf, b.len) != 0 &&
	   memcmp(clean.buf, b.buf, SMP_HDR_LEN) == 0, "payload corrupted, header intact");

	/* disconnect after N frames: the N-th is answered, then the link drops */
	unsigned before = disconnects, id = sim_device_observe(dev, &obs_ops, NULL);
	f = *sim_device_faults(dev);
	f.disconnect_after_frames = 2;
	sim_device_set_faults(dev, &f);
	b.count = 0;
	sim_device_rx_frame(dev, req, len, reply_cb, &b);
	sim_device_rx_frame(dev, req, len, reply_cb, &b);
	sim_device_rx_frame(dev, req, len, reply_cb, &b);
	wait_for(&b, 3, 300);
	is_int(b.count, 2, "two answered, the one queued behind is lost");
	is_int(disconnects - before, 1, "disconnect observed once");
	sim_device_unobserve(dev, id);

	f = *sim_device_faults(dev);
	f.hang = true;
	sim_device_set_faults(dev, &f);
	is_int(sim_device_rx_frame(dev, req, len, reply_cb, &b), -ENETDOWN, "hung device refuses");
	reboot_and_wait(dev);
	ok(sim_device_is_up(dev) && !sim_device_faults(dev)->hang, "reset clears the hang");
	sim_device_set_in_range(dev, false);
	is_int(sim_device_rx_frame(dev, req, len, reply_cb, &b), -ENETDOWN, "out of range");
	sim_device_set_in_range(dev, true);
	/* cancel: no callback */
	b.count = 0;
	sim_device_rx_frame(dev, req, len, reply_cb, &b);
	sim_device_cancel_replies(dev, &b);
	run_for(30);
	is_int(b.count, 0, "cancelled reply never delivered");
	uint16_t company;
	const uint8_t *adv;
	size_t alen;
	ok(sim_device_manufacturer_data(dev, &company, &adv, &alen) == 0 && alen == 15 &&
	   adv[1] == 1, "advertising record carries version 1.x");
	sim_device_free(dev);
	free(req);
}


/* ---- os/stat details the recordings do not cover ---------------------------------- */

static bool rsp_text(cbor_item_t *r, const char *key, const char *want)
{
	char buf[128];
	bool good = r && smp_cbor_get_text(r, key, buf, sizeof(buf), NULL) == 0 &&
		    !strcmp(buf, want);

	if (!good)
		tap_diag("%s: want \"%s\"", key, want);
	if (r)
		cbor_decref(&r);
	return good;
}

static bool rsp_rc(cbor_item_t *r, int64_t want)
{
	int64_t rc = -1;
	bool good = r && smp_cbor_get_int(r, "rc", &rc) == 0 && rc == want;

	if (!good)
		tap_diag("rc %lld, want %lld", (long long)rc, (long long)want);
	if (r)
		cbor_decref(&r);
	return good;
}

static cbor_item_t *map1(const char *k, const char *v)
{
	cbor_item_t *m = smp_cbor_map_new();

	smp_cbor_map_put_text(m, k, v);
	return m;
}

static void test_os_details(void)
{
	struct sim_device *dev = new_dev(false, 256, 4, false);

	cbor_item_t *r = xchg(dev, SMP_OP_WRITE, 0, SMP_OS_DATETIME,
			      map1("datetime", "2030-05-06T07:08:09"));
	ok(r && cbor_map_size(r) == 0, "datetime set: {}");
	if (r)
		cbor_decref(&r);
	r = xchg(dev, SMP_OP_READ, 0, SMP_OS_DATETIME, NULL);
	char buf[64] = "";
	ok(r && smp_cbor_get_text(r, "datetime", buf, sizeof(buf), NULL) == 0 &&
	   !strncmp(buf, "2030-05-06T07:08:", 17), "datetime get follows the set (%s)", buf);
	if (r)
		cbor_decref(&r);
	ok(rsp_rc(xchg(dev, SMP_OP_WRITE, 0, SMP_OS_DATETIME, map1("datetime", "yesterday")), 3),
	   "bad datetime: rc 3");
	ok(rsp_text(xchg(dev, SMP_OP_READ, 0, SMP_OS_INFO, NULL), "output", "Zephyr"), "info default s");
	ok(rsp_text(xchg(dev, SMP_OP_READ, 0, SMP_OS_INFO, map1("format", "vs")), "output",
		    "Zephyr 3.4.99"), "info in Zephyr's order");
	ok(rsp_rc(xchg(dev, SMP_OP_READ, 0, SMP_OS_INFO, map1("format", "q")), 3), "info bad letter");
	ok(rsp_rc(xchg(dev, SMP_OP_READ, 0, SMP_OS_MPSTAT, NULL), 8), "mpstat not supported");
	ok(rsp_rc(xchg(dev, SMP_OP_READ, 0, SMP_OS_ECHO, map1("d", "x")), 8), "echo as a read: rc 8");
	char big[300];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ok(sim_device_rx_frame(dev, (const uint8_t *)big, 300, reply_cb, NULL) == -EMSGSIZE,
	   "frame above buf_size dropped");
	struct sim_device *tiny = new_dev(false, 64, 2, false);
	ok(rsp_rc(xchg(tiny, SMP_OP_READ, 0, SMP_OS_TASKSTAT, NULL), 7),
	   "reply above buf_size: rc 7");
	sim_device_free(tiny);
	cbor_item_t *st = xchg(dev, SMP_OP_READ, SMP_GROUP_STAT, SMP_STAT_READ,
			       map1("name", "flash_sim_stats"));
	ok(st && smp_cbor_map_get(st, "fields"), "stat flash_sim_stats");
	if (st)
		cbor_decref(&st);

	/* SMP v1: group errors become the legacy rc */
	struct smp_hdr h = { .op = SMP_OP_WRITE, .ver = SMP_VER_1, .group = SMP_GROUP_IMG,
			     .seq = 9, .id = SMP_IMG_UPLOAD };
	cbor_item_t *m = smp_cbor_map_new();
	uint8_t data[64] = { 0 }, *req;
	size_t len;
	struct box b = { 0 };
	smp_cbor_map_put_uint(m, "off", 0);
	smp_cbor_map_put_bytes(m, "data", data, sizeof(data));
	smp_frame_build(&h, m, &req, &len);
	cbor_decref(&m);
	ok(xchg_raw(dev, req, len, &b) && b.len == 14 &&
	   !memcmp(b.buf + 8, "\xbf\x62rc\x03\xff", 6), "v1 upload without len: {\"rc\": 3}");
	req[0] = (uint8_t)((2 << 3) | SMP_OP_WRITE); /* version 3 */
	ok(xchg_raw(dev, req, len, &b) && b.buf[8 + 4] == 13, "unknown SMP version: rc 13");
	free(req);

	/* upgrade: only a newer version may start an upload */
	size_t ilen;
	uint8_t *img = read_image(IMAGES "app-1.0.0-hash.bin", &ilen), sha[32];
	sha256(img, ilen, sha);
	m = smp_cbor_map_new();
	smp_cbor_map_put_uint(m, "image", 0);
	smp_cbor_map_put_uint(m, "len", ilen);
	smp_cbor_map_put_bytes(m, "sha", sha, 32);
	smp_cbor_map_put_uint(m, "off", 0);
	smp_cbor_map_put_bytes(m, "data", img, 64);
	smp_cbor_map_put_bool(m, "upgrade", true);
	cbor_item_t *r2 = xchg(dev, SMP_OP_WRITE, SMP_GROUP_IMG, SMP_IMG_UPLOAD, m);
	const cbor_item_t *e = r2 ? smp_cbor_map_get(r2, "err") : NULL;
	uint64_t erc = 0;
	ok(e && smp_cbor_get_uint(e, "rc", &erc) == 0 && erc == 27,
	   "upgrade with a version not newer: img rc 27");
	if (r2)
		cbor_decref(&r2);
	free(img);
	sim_device_free(dev);
}

int main(void)
{
	base = event_base_new();
	test_vectors();
	test_edge_cases();
	test_update_cycle();
	test_resume();
	test_erase_delay();
	test_progressive_erase();
	test_drops();
	test_faults();
	test_os_details();
	event_base_free(base);
	return tap_done();
}
