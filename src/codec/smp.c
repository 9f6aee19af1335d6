/* SPDX-License-Identifier: MIT */
/* SMP header encode/decode and error extraction (see smp.h). */
#include "codec/smp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cbor.h>

#include "codec/cbor-util.h"
#include "util/util.h"

int smp_hdr_decode(const uint8_t *buf, size_t len, struct smp_hdr *ret)
{
	if (!buf || len < SMP_HDR_LEN)
		return -EBADMSG;
	ret->res = (uint8_t)(buf[0] >> 5);
	ret->ver = (uint8_t)((buf[0] >> 3) & 0x3);
	ret->op = (uint8_t)(buf[0] & 0x7);
	ret->flags = buf[1];
	ret->len = get_be16(buf + 2);
	ret->group = get_be16(buf + 4);
	ret->seq = buf[6];
	ret->id = buf[7];
	return 0;
}

void smp_hdr_encode(const struct smp_hdr *hdr, uint8_t out[SMP_HDR_LEN])
{
	out[0] = (uint8_t)((hdr->res & 0x7) << 5 | (hdr->ver & 0x3) << 3 |
			   (hdr->op & 0x7));
	out[1] = hdr->flags;
	put_be16(out + 2, hdr->len);
	put_be16(out + 4, hdr->group);
	out[6] = hdr->seq;
	out[7] = hdr->id;
}

int smp_frame_check(const uint8_t *buf, size_t len, struct smp_hdr *ret)
{
	struct smp_hdr hdr;

	if (len < SMP_HDR_LEN)
		return -EAGAIN;
	smp_hdr_decode(buf, len, &hdr);
	if (len < SMP_HDR_LEN + (size_t)hdr.len)
		return -EAGAIN;
	if (len > SMP_HDR_LEN + (size_t)hdr.len)
		return -EBADMSG;
	if (ret)
		*ret = hdr;
	return (int)(SMP_HDR_LEN + hdr.len);
}

static bool item_int(const cbor_item_t *item, int64_t *out)
{
	if (!item || (!cbor_isa_uint(item) && !cbor_isa_negint(item)))
		return false;
	if (cbor_get_int(item) > INT64_MAX)
		return false;
	*out = cbor_isa_uint(item) ? (int64_t)cbor_get_int(item)
				   : -1 - (int64_t)cbor_get_int(item);
	return true;
}

int smp_err_extract(const uint8_t *payload, size_t len, struct smp_err *ret)
{
	struct smp_err err = { 0 };
	cbor_item_t *root;
	const cbor_item_t *item, *e;
	int r;

	r = smp_cbor_decode(payload, len, &root);
	if (r < 0)
		return r;
	if (!cbor_isa_map(root)) {
		cbor_decref(&root);
		return -EBADMSG;
	}
	item = smp_cbor_map_get(root, "rc");
	if (item_int(item, &err.rc) && err.rc != 0)
		err.present = true;
	e = smp_cbor_map_get(root, "err");
	if (e && cbor_isa_map(e)) {
		int64_t group = 0, rc = 0;

		if (item_int(smp_cbor_map_get(e, "rc"), &rc) && rc != 0) {
			err.present = true;
			err.v2 = true;
			err.rc = rc;
			if (item_int(smp_cbor_map_get(e, "group"), &group))
				err.group = (uint16_t)group;
		}
	}
	item = smp_cbor_map_get(root, "rsn");
	if (item && cbor_isa_string(item) && cbor_string_is_definite(item)) {
		size_t n = MIN(cbor_string_length(item), sizeof(err.rsn) - 1);

		memcpy(err.rsn, cbor_string_handle(item), n);
		err.rsn[n] = '\0';
		err.has_rsn = true;
	}
	cbor_decref(&root);
	*ret = err;
	return 0;
}

const char *smp_rc_str(int64_t rc)
{
	static const char *const names[] = {
		[SMP_RC_OK] = "ok",
		[SMP_RC_EUNKNOWN] = "unknown error",
		[SMP_RC_ENOMEM] = "out of memory",
		[SMP_RC_EINVAL] = "invalid argument",
		[SMP_RC_ETIMEOUT] = "timed out",
		[SMP_RC_ENOENT] = "no such entry",
		[SMP_RC_EBADSTATE] = "bad state",
		[SMP_RC_EMSGSIZE] = "message too large",
		[SMP_RC_ENOTSUP] = "not supported",
		[SMP_RC_ECORRUPT] = "corrupt",
		[SMP_RC_EBUSY] = "busy",
		[SMP_RC_EACCESSDENIED] = "access denied",
		[SMP_RC_UNSUPPORTED_TOO_OLD] = "protocol too old",
		[SMP_RC_UNSUPPORTED_TOO_NEW] = "protocol too new",
	};

	if (rc >= 0 && rc < (int64_t)ARRAY_SIZE(names) && names[rc])
		return names[rc];
	return "unknown rc";
}

int smp_build_error_rsp(const struct smp_hdr *req, int rc, uint8_t *out,
			size_t out_size)
{
	struct smp_hdr hdr = *req;
	uint8_t body[32];
	size_t n = 0;

	/* Definite-length maps, hand-encoded: small and allocation-free. */
	if (req->ver == SMP_VER_2) {
		/* a1 63 "err" a2 65 "group" <uint> 62 "rc" <uint> */
		body[n++] = 0xa1;
		body[n++] = 0x63;
		memcpy(body + n, "err", 3), n += 3;
		body[n++] = 0xa2;
		body[n++] = 0x65;
		memcpy(body + n, "group", 5), n += 5;
		body[n++] = 0x19;
		put_be16(body + n, req->group), n += 2;
	} else {
		body[n++] = 0xa1;
	}
	body[n++] = 0x62;
	memcpy(body + n, "rc", 2), n += 2;
	body[n++] = 0x18;
	body[n++] = (uint8_t)rc;

	if (out_size < SMP_HDR_LEN + n)
		return -ENOBUFS;
	hdr.op = smp_rsp_op(req->op);
	hdr.len = (uint16_t)n;
	smp_hdr_encode(&hdr, out);
	memcpy(out + SMP_HDR_LEN, body, n);
	return (int)(SMP_HDR_LEN + n);
}
