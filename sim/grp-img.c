/* SPDX-License-Identifier: MIT */
/*
 * The simulated img_mgmt group (1) of Zephyr 3.4 on a single-image MCUboot
 * device: state read and write (test/confirm), upload (len/off/sha/data/
 * upgrade/image, resume by sha, offset correction, session rules as the
 * recorded Zephyr shows), erase. Slot info (6) is not built in that Zephyr.
 * Flash work is charged to the request as simulated time.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "codec/cbor-util.h"
#include "codec/mcuboot.h"
#include "device-int.h"
#include "smpgw/usergroup.h"
#include "util/util.h"

/* Zephyr 3.4 img_mgmt_err_code_t values used here. */
enum img_err {
	IMG_ERR_HASH_NOT_FOUND = 8,
	IMG_ERR_NO_FREE_SLOT = 9,
	IMG_ERR_INVALID_SLOT = 14,
	IMG_ERR_INVALID_LENGTH = 21,
	IMG_ERR_INVALID_MAGIC = 23,
	IMG_ERR_INVALID_HASH = 24,
	IMG_ERR_CURRENT_VERSION_IS_NEWER = 27,
	IMG_ERR_TOO_LARGE = 30,
	IMG_ERR_DATA_OVERRUN = 31,
	IMG_ERR_TEST_TO_ACTIVE_DENIED = 33,
};

/* What an SMP v1 client sees instead (img_mgmt_translate_error_code). */
static int img_legacy_rc(int rc)
{
	switch (rc) {
	case IMG_ERR_NO_FREE_SLOT:
	case IMG_ERR_CURRENT_VERSION_IS_NEWER:
		return SMP_RC_EBADSTATE;
	case IMG_ERR_INVALID_SLOT:
	case IMG_ERR_INVALID_LENGTH:
	case IMG_ERR_INVALID_HASH:
		return SMP_RC_EINVAL;
	default:
		return SMP_RC_EUNKNOWN;
	}
}

static int img_err(struct sim_req *req, int rc)
{
	return sim_req_group_err(req, SMP_GROUP_IMG, rc, img_legacy_rc(rc));
}

/* ---- state ----------------------------------------------------------------- */

static void put_slot(struct sim_req *req, cbor_item_t *images, unsigned n)
{
	struct sim_slot *s = &req->dev->slot[n];
	bool pending, confirmed, active, permanent;
	char ver[40];

	slot_scan(s);
	if (!s->meta_present)
		return;
	sim_device_slot_flags(req->dev, n, &pending, &confirmed, &active, &permanent);
	slot_version_str(s, ver, sizeof(ver));
	cbor_item_t *m = smp_cbor_map_new_indefinite();
	smp_cbor_map_put_uint(m, "slot", n);
	smp_cbor_map_put_text(m, "version", ver);
	smp_cbor_map_put_bytes(m, "hash", s->hash, 32);
	smp_cbor_map_put_bool(m, "bootable", !s->meta_flags_nb);
	smp_cbor_map_put_bool(m, "pending", pending);
	smp_cbor_map_put_bool(m, "confirmed", confirmed);
	smp_cbor_map_put_bool(m, "active", active);
	smp_cbor_map_put_bool(m, "permanent", permanent);
	smp_cbor_array_push(images, m);
}

static int img_state_read(struct sim_req *req)
{
	cbor_item_t *images = smp_cbor_array_new_indefinite();

	put_slot(req, images, 0);
	put_slot(req, images, 1);
	smp_cbor_map_put_item(req->rsp, "images", images);
	smp_cbor_map_put_uint(req->rsp, "splitStatus", 0);
	return 0;
}

static int find_slot_by_hash(struct sim_device *dev, const uint8_t *hash)
{
	for (unsigned i = 0; i < 2; i++) {
		slot_scan(&dev->slot[i]);
		if (dev->slot[i].meta_present && memcmp(dev->slot[i].hash, hash, 32) == 0)
			return (int)i;
	}
	return -1;
}

static int img_state_write(struct sim_req *req)
{
	struct sim_device *dev = req->dev;
	uint8_t hash[64];
	size_t hlen = 0;
	bool confirm = false;
	int r, slot;

	/* The firmware holds every state write while an unconfirmed image
	 * has not passed its self-check (firmware/src/mgmt.c). */
	if (dev->swap == SIM_SWAP_REVERT && !sim_device_self_check_passed(dev))
		return sim_req_group_err(req, SMPGW_MGMT_GROUP_ID,
					 SMPGW_MGMT_RC_SELF_CHECK_PENDING, SMP_RC_EUNKNOWN);
	r = smp_cbor_get_bytes(req->body, "hash", hash, sizeof(hash), &hlen);
	if ((r < 0 && r != -ENOENT) || smp_cbor_get_bool(req->body, "confirm", &confirm) == -EBADMSG)
		return SMP_RC_EINVAL;
	if (r == -ENOENT) {
		if (!confirm)
			return SMP_RC_EINVAL;
		slot = 0; /* confirm the running image */
	} else {
		if (hlen != 32)
			return img_err(req, IMG_ERR_INVALID_HASH);
		slot = find_slot_by_hash(dev, hash);
		if (slot < 0)
			return img_err(req, IMG_ERR_HASH_NOT_FOUND);
	}
	if (confirm)
		*(slot == 0 ? &dev->ctr.confirms : &dev->ctr.confirms_unbooted) += 1;
	if (slot == 0) {
		if (!confirm)
			return img_err(req, IMG_ERR_TEST_TO_ACTIVE_DENIED);
		if (dev->swap == SIM_SWAP_REVERT)
			dev->swap = SIM_SWAP_NONE; /* image_ok written to slot 0 */
	} else {
		/* MCUboot checks the image at boot, not here */
		dev->swap = confirm ? SIM_SWAP_PERM : SIM_SWAP_TEST;
	}
	return img_state_read(req);
}

/* ---- upload ------------------------------------------------------------------- */

struct upload_req {
	uint64_t image, len, off;
	bool has_len, upgrade;
	const uint8_t *sha, *data;
	size_t sha_len, data_len;
	uint8_t *sha_buf, *data_buf;
};

static int get_bytes_opt(const cbor_item_t *m, const char *key, uint8_t **buf,
			 const uint8_t **ret, size_t *ret_len)
{
	int r = smp_cbor_get_bytes_dup(m, key, buf, ret_len);

	if (r == -ENOENT)
		return 0;
	*ret = *buf;
	return r;
}

static int upload_decode(const cbor_item_t *m, struct upload_req *u)
{
	int r;

	memset(u, 0, sizeof(*u));
	if ((r = smp_cbor_get_uint(m, "image", &u->image)) == -EBADMSG)
		return r;
	r = smp_cbor_get_uint(m, "len", &u->len);
	if (r == -EBADMSG)
		return r;
	u->has_len = r == 0;
	if (smp_cbor_get_uint(m, "off", &u->off) < 0)
		return -EBADMSG; /* off is required */
	if (smp_cbor_get_bool(m, "upgrade", &u->upgrade) == -EBADMSG)
		return -EBADMSG;
	if (get_bytes_opt(m, "sha", &u->sha_buf, &u->sha, &u->sha_len) < 0 ||
	    get_bytes_opt(m, "data", &u->data_buf, &u->data, &u->data_len) < 0)
		return -EBADMSG;
	return 0;
}

static void upload_end(struct sim_device *dev)
{
	memset(&dev->up, 0, sizeof(dev->up));
}

static int upload_fail(struct sim_req *req, int rc)
{
	upload_end(req->dev);
	return img_err(req, rc);
}

static void erase_sectors(struct sim_req *req, size_t first, size_t n)
{
	slot_erase(&req->dev->slot[1], first * SIM_SECTOR_SIZE, n * SIM_SECTOR_SIZE);
	req->dev->ctr.erases += n;
	req->cost_us += sim_device_erase_cost(req->dev, n);
}

static bool version_newer(const uint8_t *hdr, const struct sim_slot *cur)
{
	uint64_t a = ((uint64_t)hdr[20] << 56) | ((uint64_t)hdr[21] << 48) |
		     ((uint64_t)get_le16(hdr + 22) << 32) | get_le32(hdr + 24);
	uint64_t b = ((uint64_t)cur->ver.major << 56) | ((uint64_t)cur->ver.minor << 48) |
		     ((uint64_t)cur->ver.revision << 32) | cur->ver.build;
	return !cur->meta_present || a > b;
}

/* First chunk: checks, resume by sha, or a new session with its erase. */
static int upload_start(struct sim_req *req, const struct upload_req *u, bool *ret_resumed)
{
	struct sim_device *dev = req->dev;
	struct sim_upload *up = &dev->up;

	if (u->data_len < MCUBOOT_HEADER_LEN || !u->has_len)
		return upload_fail(req, IMG_ERR_INVALID_LENGTH);
	if (up->active && up->off > 0 && u->sha_len > 0 && u->sha_len == up->sha_len &&
	    memcmp(u->sha, up->sha, u->sha_len) == 0 && u->len == up->size) {
		*ret_resumed = true; /* same image: carry on where it stopped */
		return 0;
	}
	if (get_le32(u->data) != MCUBOOT_IMAGE_MAGIC)
		return upload_fail(req, IMG_ERR_INVALID_MAGIC);
	if (u->sha_len > 32)
		return upload_fail(req, IMG_ERR_INVALID_HASH);
	if (u->image != 0 || dev->swap != SIM_SWAP_NONE)
		return upload_fail(req, IMG_ERR_NO_FREE_SLOT);
	if (u->len > SIM_SLOT_SIZE)
		return upload_fail(req, IMG_ERR_TOO_LARGE);
	slot_scan(&dev->slot[0]);
	if (u->upgrade && !version_newer(u->data, &dev->slot[0]))
		return upload_fail(req, IMG_ERR_CURRENT_VERSION_IS_NEWER);
	upload_end(dev);
	up->active = true;
	up->size = (size_t)u->len;
	up->sha_len = u->sha_len;
	if (u->sha_len)
		memcpy(up->sha, u->sha, u->sha_len);
	if (!dev->flash.progressive_erase) {
		/* erase what the image needs plus the trailer's last sector, and
		 * answer only when done: the first chunk's long wait */
		size_t n = (up->size + SIM_SECTOR_SIZE - 1) / SIM_SECTOR_SIZE;
		erase_sectors(req, 0, n);
		erase_sectors(req, SIM_SLOT_SIZE / SIM_SECTOR_SIZE - 1, 1);
		up->erased_upto = n;
	}
	return 0;
}

static void upload_write(struct sim_req *req, const struct upload_req *u)
{
	struct sim_device *dev = req->dev;
	struct sim_upload *up = &dev->up;
	size_t end = up->off + u->data_len;
	size_t need = (end + SIM_SECTOR_SIZE - 1) / SIM_SECTOR_SIZE;

	if (need > up->erased_upto) {
		erase_sectors(req, up->erased_upto, need - up->erased_upto);
		up->erased_upto = need;
	}
	slot_write(&dev->slot[1], up->off, u->data, u->data_len);
	dev->ctr.programs += (u->data_len + 255) / 256;
	dev->ctr.upload_bytes += u->data_len;
	req->cost_us += sim_device_program_cost(dev, u->data_len);
	up->off = end;
	sim_device_upload_progress(dev, end);
}

static void put_match(struct sim_req *req, size_t size)
{
	struct sim_upload *up = &req->dev->up;
	uint8_t md[32];
	size_t stored;
	const uint8_t *b = slot_bytes(&req->dev->slot[1], &stored);

	if (up->sha_len != 32 || stored < size)
		return;
	EVP_Digest(b, size, md, NULL, EVP_sha256(), NULL);
	smp_cbor_map_put_bool(req->rsp, "match", memcmp(md, up->sha, 32) == 0);
}

static int upload_chunk(struct sim_req *req, const struct upload_req *u)
{
	struct sim_device *dev = req->dev;
	struct sim_upload *up = &dev->up;
	bool resumed = false;
	int rc;

	if (u->off == 0) {
		rc = upload_start(req, u, &resumed);
		if (rc != 0 || resumed)
			return rc;
	} else if (!up->active || u->off != up->off) {
		return 0; /* wrong offset: data ignored, expected offset answered */
	}
	if (up->off + u->data_len > up->size)
		return upload_fail(req, IMG_ERR_DATA_OVERRUN);
	if (u->data_len)
		upload_write(req, u);
	if (up->off == up->size) {
		size_t size = up->size;
		if (dev->image_check)
			put_match(req, size);
		upload_end(dev); /* complete: the next off 0 starts over */
		up->off = size;  /* reported once below */
	}
	return 0;
}

static int img_upload(struct sim_req *req)
{
	struct upload_req u;
	int rc;

	if (upload_decode(req->body, &u) < 0) {
		free(u.sha_buf);
		free(u.data_buf);
		return SMP_RC_EINVAL;
	}
	rc = upload_chunk(req, &u);
	free(u.sha_buf);
	free(u.data_buf);
	if (rc != 0)
		return rc;
	/* the "match" key, when any, was added first; Zephyr puts off first */
	cbor_item_t *m = req->rsp;
	req->rsp = smp_cbor_map_new_indefinite();
	smp_cbor_map_put_uint(req->rsp, "off", req->dev->up.off);
	const cbor_item_t *match = smp_cbor_map_get(m, "match");
	if (match)
		smp_cbor_map_put_bool(req->rsp, "match", cbor_get_bool(match));
	cbor_decref(&m);
	if (!req->dev->up.active)
		req->dev->up.off = 0;
	return 0;
}

/* ---- erase ------------------------------------------------------------------- */

static int img_erase(struct sim_req *req)
{
	struct sim_device *dev = req->dev;
	uint64_t slot = 1;

	if (smp_cbor_get_uint(req->body, "slot", &slot) == -EBADMSG)
		return SMP_RC_EINVAL;
	if (slot > 1)
		return img_err(req, IMG_ERR_INVALID_SLOT);
	if (slot == 0 || dev->swap != SIM_SWAP_NONE)
		return img_err(req, IMG_ERR_NO_FREE_SLOT);
	upload_end(dev);
	erase_sectors(req, 0, SIM_SLOT_SIZE / SIM_SECTOR_SIZE);
	return 0;
}

static const struct sim_handler img_handlers[] = {
	[SMP_IMG_STATE] = { img_state_read, img_state_write },
	[SMP_IMG_UPLOAD] = { NULL, img_upload },
	[SMP_IMG_ERASE] = { NULL, img_erase },
};

const struct sim_group sim_grp_img = { SMP_GROUP_IMG, img_handlers, ARRAY_SIZE(img_handlers) };
