/* SPDX-License-Identifier: MIT */
/*
 * Flash slots of a simulated watch and the shared image blobs behind them.
 * Owns copy-on-write contents (a slot starts as a reference to a shared
 * image and gets a private buffer on the first write or erase), erased
 * bytes (0xff, never stored), and the cached parse of what a slot holds:
 * the header and TLVs as img_mgmt reads them, and whether MCUboot would
 * accept it (the SHA-256 TLV checks, through the codec's MCUboot parser).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "codec/mcuboot.h"
#include "device-int.h"
#include "util/util.h"

struct sim_image {
	unsigned refs;
	size_t len;
	uint8_t data[];
};

struct sim_image *sim_image_new(const uint8_t *buf, size_t len)
{
	struct sim_image *img;

	if (len > SIM_SLOT_SIZE)
		return NULL;
	img = xmalloc(sizeof(*img) + len);
	img->refs = 1;
	img->len = len;
	memcpy(img->data, buf, len);
	return img;
}

struct sim_image *sim_image_synthesize(uint8_t major, uint8_t minor, uint16_t rev,
				       uint32_t build, size_t payload_len, uint64_t seed)
{
	const size_t hdr = 0x200, tlv = 4 + 4 + 32;
	size_t len = hdr + payload_len + tlv;
	uint8_t *b;
	struct sim_image *img;
	unsigned md_len = 0;

	if (len > SIM_SLOT_SIZE)
		return NULL;
	b = xmalloc(len);
	memset(b, 0xff, hdr);
	memset(b, 0, 32);
	put_le32(b, MCUBOOT_IMAGE_MAGIC);
	put_le16(b + 8, (uint16_t)hdr);
	put_le32(b + 12, (uint32_t)payload_len);
	b[20] = major;
	b[21] = minor;
	put_le16(b + 22, rev);
	put_le32(b + 24, build);
	/* xorshift payload: deterministic per seed, incompressible enough */
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < payload_len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b[hdr + i] = (uint8_t)x;
	}
	uint8_t *t = b + hdr + payload_len;
	put_le16(t, MCUBOOT_TLV_INFO_MAGIC);
	put_le16(t + 2, (uint16_t)tlv);
	put_le16(t + 4, MCUBOOT_TLV_SHA256);
	put_le16(t + 6, 32);
	EVP_Digest(b, hdr + payload_len, t + 8, &md_len, EVP_sha256(), NULL);
	img = sim_image_new(b, len);
	free(b);
	return img;
}

struct sim_image *sim_image_load(const char *path)
{
	FILE *f = fopen(path, "rb");
	struct sim_image *img = NULL;
	uint8_t *buf;
	size_t n;
	int err;

	if (!f)
		return NULL;
	buf = xmalloc(SIM_SLOT_SIZE + 1);
	n = fread(buf, 1, SIM_SLOT_SIZE + 1, f);
	err = ferror(f) ? EIO : n > SIM_SLOT_SIZE ? EFBIG : n == 0 ? EBADMSG : 0;
	fclose(f);
	if (!err)
		img = sim_image_new(buf, n);
	free(buf);
	if (!img)
		errno = err ? err : EFBIG;
	return img;
}

struct sim_image *sim_image_ref(struct sim_image *img)
{
	if (img)
		img->refs++;
	return img;
}

struct sim_image *sim_image_unref(struct sim_image *img)
{
	if (img && --img->refs == 0)
		free(img);
	return NULL;
}

const uint8_t *sim_image_data(const struct sim_image *img)
{
	return img->data;
}

size_t sim_image_len(const struct sim_image *img)
{
	return img->len;
}

/* ---- slots ---------------------------------------------------------------- */

void slot_init_shared(struct sim_slot *s, struct sim_image *img)
{
	slot_clear(s);
	s->shared = sim_image_ref(img);
}

void slot_clear(struct sim_slot *s)
{
	s->shared = sim_image_unref(s->shared);
	free(s->buf);
	s->buf = NULL;
	s->cap = 0;
	s->meta_valid = false;
}

const uint8_t *slot_bytes(const struct sim_slot *s, size_t *ret_len)
{
	if (s->shared) {
		*ret_len = s->shared->len;
		return s->shared->data;
	}
	*ret_len = s->cap;
	return s->buf;
}

size_t slot_private_bytes(const struct sim_slot *s)
{
	return s->cap;
}

/* Copy-on-write: turn a shared slot into a private buffer. */
static void slot_unshare(struct sim_slot *s)
{
	if (!s->shared)
		return;
	s->buf = xmemdup(s->shared->data, s->shared->len);
	s->cap = s->shared->len;
	s->shared = sim_image_unref(s->shared);
}

static void slot_grow(struct sim_slot *s, size_t need)
{
	if (need <= s->cap)
		return;
	/* grow in sectors so a chunked upload reallocates rarely */
	size_t cap = (need + SIM_SECTOR_SIZE * 8 - 1) / (SIM_SECTOR_SIZE * 8) *
		     (SIM_SECTOR_SIZE * 8);
	cap = MIN(cap, (size_t)SIM_SLOT_SIZE);
	s->buf = xrealloc(s->buf, cap);
	memset(s->buf + s->cap, 0xff, cap - s->cap);
	s->cap = cap;
}

void slot_erase(struct sim_slot *s, size_t off, size_t len)
{
	size_t stored;

	s->meta_valid = false;
	slot_bytes(s, &stored);
	if (off >= stored)
		return;
	if (off == 0 && len >= stored) {
		slot_clear(s); /* everything stored is gone: free it */
		return;
	}
	slot_unshare(s);
	memset(s->buf + off, 0xff, MIN(len, s->cap - off));
}

void slot_write(struct sim_slot *s, size_t off, const uint8_t *data, size_t len)
{
	s->meta_valid = false;
	slot_unshare(s);
	slot_grow(s, off + len);
	/* NOR flash programs 1 -> 0 only: AND like the real part */
	for (size_t i = 0; i < len; i++)
		s->buf[off + i] &= data[i];
}

static void slot_read(const struct sim_slot *s, size_t off, uint8_t *out, size_t n)
{
	size_t stored;
	const uint8_t *b = slot_bytes(s, &stored);

	memset(out, 0xff, n);
	if (off < stored)
		memcpy(out, b + off, MIN(n, stored - off));
}

/* The SHA-256 TLV, walking the TLV area like img_mgmt_read_info. */
static bool slot_find_hash(struct sim_slot *s, size_t off)
{
	uint8_t th[4];

	slot_read(s, off, th, 4);
	if (get_le16(th) == MCUBOOT_TLV_PROT_INFO_MAGIC) {
		off += get_le16(th + 2);
		slot_read(s, off, th, 4);
	}
	if (get_le16(th) != MCUBOOT_TLV_INFO_MAGIC)
		return false;
	size_t end = off + get_le16(th + 2);
	for (off += 4; off + 4 <= end && off + 4 <= SIM_SLOT_SIZE;) {
		uint8_t e[4];
		slot_read(s, off, e, 4);
		uint16_t type = get_le16(e), len = get_le16(e + 2);
		if (type == 0xffff && len == 0xffff)
			return false;
		if (type == MCUBOOT_TLV_SHA256) {
			if (len != 32)
				return false;
			slot_read(s, off + 4, s->hash, 32);
			return true;
		}
		off += 4 + (size_t)len;
	}
	return false;
}

void slot_scan(struct sim_slot *s)
{
	uint8_t h[32];
	size_t stored;
	const uint8_t *b;
	struct mcuboot_image img;

	if (s->meta_valid)
		return;
	s->meta_valid = true;
	s->meta_present = s->meta_verified = false;
	slot_read(s, 0, h, sizeof(h));
	if (get_le32(h) != MCUBOOT_IMAGE_MAGIC)
		return;
	s->ver.major = h[20];
	s->ver.minor = h[21];
	s->ver.revision = get_le16(h + 22);
	s->ver.build = get_le32(h + 24);
	s->meta_flags_nb = (get_le32(h + 16) & 0x10) != 0; /* IMAGE_F_NON_BOOTABLE */
	size_t tlv_off = (size_t)get_le16(h + 8) + get_le32(h + 12);
	if (tlv_off + 4 > SIM_SLOT_SIZE || !slot_find_hash(s, tlv_off))
		return;
	s->meta_present = true;
	b = slot_bytes(s, &stored);
	s->meta_verified = b && mcuboot_image_parse(b, stored, &img) == 0 &&
			   memcmp(img.hash, s->hash, 32) == 0;
}

void slot_version_str(const struct sim_slot *s, char *out, size_t size)
{
	if (s->ver.build)
		snprintf(out, size, "%u.%u.%u.%u", s->ver.major, s->ver.minor,
			 s->ver.revision, (unsigned)s->ver.build);
	else
		snprintf(out, size, "%u.%u.%u", s->ver.major, s->ver.minor, s->ver.revision);
}
