/* SPDX-License-Identifier: MIT */
/*
 * The SMP frames the upload engine sends (img state read/write, os reset,
 * img upload chunks) and the answers it reads. Owns the exact CBOR size
 * arithmetic of an upload chunk, so chunks fill the device's buffer to
 * the byte without ever exceeding it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "codec/cbor-util.h"
#include "codec/json-cbor.h"
#include "codec/smp.h"
#include "gateway/engine-int.h"
#include "util/util.h"

static int build(uint8_t op, uint16_t group, uint8_t id, cbor_item_t *body,
		 uint8_t **ret, size_t *ret_len)
{
	struct smp_hdr hdr = { .op = op, .ver = SMP_VER_2, .group = group,
			       .id = id };
	int r = smp_frame_build(&hdr, body, ret, ret_len);

	if (body)
		cbor_decref(&body);
	return r;
}

int gw_smp_img_state_read(uint8_t **ret, size_t *ret_len)
{
	return build(SMP_OP_READ, SMP_GROUP_IMG, SMP_IMG_STATE, NULL, ret, ret_len);
}

int gw_smp_img_state_write(const uint8_t *hash, bool confirm, uint8_t **ret,
			   size_t *ret_len)
{
	cbor_item_t *m = smp_cbor_map_new();

	if (hash)
		smp_cbor_map_put_bytes(m, "hash", hash, GW_IMG_HASH_LEN);
	smp_cbor_map_put_bool(m, "confirm", confirm);
	return build(SMP_OP_WRITE, SMP_GROUP_IMG, SMP_IMG_STATE, m, ret, ret_len);
}

int gw_smp_os_reset(uint8_t **ret, size_t *ret_len)
{
	return build(SMP_OP_WRITE, SMP_GROUP_OS, SMP_OS_RESET, smp_cbor_map_new(),
		     ret, ret_len);
}

int gw_smp_os_echo(size_t text_len, uint8_t **ret, size_t *ret_len)
{
	cbor_item_t *m = smp_cbor_map_new();
	char *text = xmalloc(text_len + 1);
	int r;

	memset(text, 'x', text_len);
	text[text_len] = '\0';
	smp_cbor_map_put_text(m, "d", text);
	free(text);
	r = build(SMP_OP_WRITE, SMP_GROUP_OS, SMP_OS_ECHO, m, ret, ret_len);
	return r;
}

/* ---- upload chunks: exact sizes ---- */

/* Length of a CBOR head (major type + argument) for argument v. */
static size_t head_len(uint64_t v)
{
	if (v < 24)
		return 1;
	if (v <= 0xff)
		return 2;
	if (v <= 0xffff)
		return 3;
	if (v <= 0xffffffffu)
		return 5;
	return 9;
}

/* A text key of n characters: head + bytes. */
#define KEY(n) (1 + (n))

size_t gw_upload_chunk_cbor_len(size_t off, size_t total, size_t sha_len,
				size_t data_len)
{
	/* Map of at most 6 entries: a one-byte head. */
	size_t n = 1;

	if (off == 0) {
		n += KEY(5) + head_len(0);                  /* "image": 0 */
		n += KEY(3) + head_len(total);              /* "len" */
		n += KEY(3) + head_len(sha_len) + sha_len;  /* "sha" */
	}
	n += KEY(3) + head_len(off);                        /* "off" */
	n += KEY(4) + head_len(data_len) + data_len;        /* "data" */
	return n;
}

size_t gw_upload_chunk_max(size_t off, size_t total, size_t sha_len,
			   size_t frame_max)
{
	static const size_t heads[] = { 1, 2, 3, 5, 9 };
	size_t left = off < total ? total - off : 0;
	size_t fixed = gw_upload_chunk_cbor_len(off, total, sha_len, 0) - 1;

	if (frame_max <= SMP_HDR_LEN + fixed)
		return 0;
	/* The data's own head grows with its length: the smallest head
	 * that can carry what is left of the room gives the largest n. */
	for (size_t i = 0; i < ARRAY_SIZE(heads); i++) {
		size_t room = frame_max - SMP_HDR_LEN - fixed;
		size_t n;

		if (room < heads[i])
			continue;
		n = room - heads[i];
		if (head_len(n) > heads[i])
			continue;
		return MIN(n, left);
	}
	return 0;
}

int gw_smp_img_upload(size_t off, size_t total, const uint8_t *sha,
		      size_t sha_len, const uint8_t *data, size_t data_len,
		      uint8_t **ret, size_t *ret_len)
{
	cbor_item_t *m = smp_cbor_map_new();

	/* Keys in the order stock clients (smpclient, mcumgr) send them. */
	if (off == 0) {
		smp_cbor_map_put_uint(m, "image", 0);
		smp_cbor_map_put_uint(m, "len", total);
	}
	smp_cbor_map_put_uint(m, "off", off);
	if (off == 0)
		smp_cbor_map_put_bytes(m, "sha", sha, sha_len);
	smp_cbor_map_put_bytes(m, "data", data, data_len);
	return build(SMP_OP_WRITE, SMP_GROUP_IMG, SMP_IMG_UPLOAD, m, ret, ret_len);
}

/* ---- answers ---- */

int gw_smp_result(const uint8_t *frame, size_t len, struct gw_smp_result *ret)
{
	struct smp_err e;
	int r;

	if (len < SMP_HDR_LEN)
		return -EBADMSG;
	r = smp_err_extract(frame + SMP_HDR_LEN, len - SMP_HDR_LEN, &e);
	if (r < 0)
		return r;
	memset(ret, 0, sizeof(*ret));
	ret->smp_error = e.present && e.rc != 0;
	ret->rc = e.rc;
	ret->v2 = e.v2;
	ret->group = e.group;
	if (e.has_rsn)
		snprintf(ret->rsn, sizeof(ret->rsn), "%s", e.rsn);
	return 0;
}

void gw_smp_result_str(const struct gw_smp_result *r, char *buf, size_t size)
{
	if (r->v2)
		snprintf(buf, size, "device error: group %u rc %lld%s%s", r->group,
			 (long long)r->rc, r->rsn[0] ? ": " : "", r->rsn);
	else
		snprintf(buf, size, "device error: rc %lld (%s)%s%s", (long long)r->rc,
			 smp_rc_str(r->rc), r->rsn[0] ? ": " : "", r->rsn);
}

static int decode(const uint8_t *frame, size_t len, cbor_item_t **ret)
{
	if (len < SMP_HDR_LEN)
		return -EBADMSG;
	return smp_cbor_decode(frame + SMP_HDR_LEN, len - SMP_HDR_LEN, ret);
}

static void get_flag(const cbor_item_t *m, const char *key, bool *ret)
{
	bool v = false;

	if (smp_cbor_get_bool(m, key, &v) == 0)
		*ret = v;
}

static void parse_slot(const cbor_item_t *m, struct gw_img_slot *s)
{
	uint64_t v;
	size_t n = 0;

	memset(s, 0, sizeof(*s));
	if (smp_cbor_get_uint(m, "image", &v) == 0 && v < 256)
		s->image = (unsigned)v;
	if (smp_cbor_get_uint(m, "slot", &v) == 0 && v < 256)
		s->slot = (unsigned)v;
	if (smp_cbor_get_bytes(m, "hash", s->hash, sizeof(s->hash), &n) == 0 &&
	    n == GW_IMG_HASH_LEN)
		s->has_hash = true;
	get_flag(m, "active", &s->active);
	get_flag(m, "pending", &s->pending);
	get_flag(m, "confirmed", &s->confirmed);
	get_flag(m, "permanent", &s->permanent);
	get_flag(m, "bootable", &s->bootable);
	if (smp_cbor_get_text(m, "version", s->version, sizeof(s->version), NULL) < 0)
		s->version[0] = '\0';
}

int gw_img_state_parse(const uint8_t *frame, size_t len,
		       struct gw_img_state *ret, json_t **ret_json)
{
	cbor_item_t *map = NULL;
	const cbor_item_t *images;
	struct gw_img_state st = { 0 };
	int r = decode(frame, len, &map);

	if (r < 0)
		return r;
	images = smp_cbor_map_get(map, "images");
	if (!images || !cbor_isa_array(images)) {
		cbor_decref(&map);
		return -EBADMSG;
	}
	for (size_t i = 0; i < cbor_array_size(images) && st.n < GW_IMG_MAX_SLOTS; i++) {
		cbor_item_t *m = cbor_array_get(images, i);

		if (m && cbor_isa_map(m))
			parse_slot(m, &st.slots[st.n++]);
		if (m)
			cbor_decref(&m);
	}
	if (ret_json) {
		json_t *j = NULL;

		*ret_json = smp_cbor_to_json(images, &j) == 0 ? j : NULL;
	}
	cbor_decref(&map);
	*ret = st;
	return 0;
}

int gw_img_upload_parse(const uint8_t *frame, size_t len, uint64_t *ret_off,
			int *ret_match)
{
	cbor_item_t *map = NULL;
	uint64_t off;
	bool match;
	int r = decode(frame, len, &map);

	if (r < 0)
		return r;
	r = smp_cbor_get_uint(map, "off", &off);
	if (r == 0) {
		*ret_off = off;
		if (ret_match)
			*ret_match = smp_cbor_get_bool(map, "match", &match) == 0 ?
				     match : -1;
	}
	cbor_decref(&map);
	return r < 0 ? -EBADMSG : 0;
}

const struct gw_img_slot *gw_img_state_find(const struct gw_img_state *st,
					    const uint8_t *hash)
{
	for (size_t i = 0; i < st->n; i++)
		if (st->slots[i].has_hash &&
		    !memcmp(st->slots[i].hash, hash, GW_IMG_HASH_LEN))
			return &st->slots[i];
	return NULL;
}
