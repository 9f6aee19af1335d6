/* SPDX-License-Identifier: MIT */
/*
 * SMP (Simple Management Protocol) frame header: 8 bytes, big-endian.
 *   byte0 = res:3 | ver:2 | op:3, byte1 flags, bytes2-3 payload length,
 *   bytes4-5 group, byte6 sequence, byte7 command id.
 * The payload is one CBOR map. Pure code: no I/O, no logging.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMP_HDR_LEN 8

enum smp_op {
	SMP_OP_READ = 0,
	SMP_OP_READ_RSP = 1,
	SMP_OP_WRITE = 2,
	SMP_OP_WRITE_RSP = 3,
};

/* Protocol versions as carried in the header's ver bits. */
enum smp_ver {
	SMP_VER_1 = 0, /* original SMP: errors as {"rc"} */
	SMP_VER_2 = 1, /* SMP v2: group errors as {"err": {"group","rc"}} */
};

enum smp_group {
	SMP_GROUP_OS = 0,
	SMP_GROUP_IMG = 1,
	SMP_GROUP_STAT = 2,
	SMP_GROUP_SETTINGS = 3,
	SMP_GROUP_FS = 8,
	SMP_GROUP_SHELL = 9,
	SMP_GROUP_ENUM = 10,
	SMP_GROUP_ZEPHYR = 63,
	SMP_GROUP_USER_BASE = 64,
};

enum smp_os_cmd {
	SMP_OS_ECHO = 0,
	SMP_OS_TASKSTAT = 2,
	SMP_OS_MPSTAT = 3,
	SMP_OS_DATETIME = 4,
	SMP_OS_RESET = 5,
	SMP_OS_PARAMS = 6,
	SMP_OS_INFO = 7,
	SMP_OS_BOOTLOADER_INFO = 8,
};

enum smp_img_cmd {
	SMP_IMG_STATE = 0,
	SMP_IMG_UPLOAD = 1,
	SMP_IMG_ERASE = 5,
	SMP_IMG_SLOT_INFO = 6,
};

enum smp_stat_cmd {
	SMP_STAT_READ = 0,
	SMP_STAT_LIST = 1,
};

/* MGMT_ERR_* codes (the SMP-level "rc"). */
enum smp_rc {
	SMP_RC_OK = 0,
	SMP_RC_EUNKNOWN = 1,
	SMP_RC_ENOMEM = 2,
	SMP_RC_EINVAL = 3,
	SMP_RC_ETIMEOUT = 4,
	SMP_RC_ENOENT = 5,
	SMP_RC_EBADSTATE = 6,
	SMP_RC_EMSGSIZE = 7,
	SMP_RC_ENOTSUP = 8,
	SMP_RC_ECORRUPT = 9,
	SMP_RC_EBUSY = 10,
	SMP_RC_EACCESSDENIED = 11,
	SMP_RC_UNSUPPORTED_TOO_OLD = 12,
	SMP_RC_UNSUPPORTED_TOO_NEW = 13,
};

struct smp_hdr {
	uint8_t op;    /* enum smp_op */
	uint8_t ver;   /* enum smp_ver */
	uint8_t res;   /* 3 reserved bits, kept as received */
	uint8_t flags;
	uint16_t len;  /* payload length */
	uint16_t group;
	uint8_t seq;
	uint8_t id;
};

/* Decodes the first 8 bytes of buf. -EBADMSG if len < 8 or op/ver invalid
 * is not checked here (all 3-bit values are representable). */
int smp_hdr_decode(const uint8_t *buf, size_t len, struct smp_hdr *ret);
/* Writes 8 bytes to out. */
void smp_hdr_encode(const struct smp_hdr *hdr, uint8_t out[SMP_HDR_LEN]);

/*
 * Checks that buf holds exactly one whole frame: header plus hdr.len
 * payload bytes. Returns the frame length (8 + payload), -EAGAIN when more
 * bytes are needed (len < 8 or len < 8 + payload), -EBADMSG when len is
 * larger than the frame (trailing bytes).
 */
int smp_frame_check(const uint8_t *buf, size_t len, struct smp_hdr *ret);

/* Op code of the response to a request op (READ->READ_RSP, WRITE->WRITE_RSP). */
static inline uint8_t smp_rsp_op(uint8_t op)
{
	return (uint8_t)(op | 1);
}

static inline bool smp_op_is_request(uint8_t op)
{
	return op == SMP_OP_READ || op == SMP_OP_WRITE;
}

struct smp_err {
	bool present;  /* an error field was found (rc != 0 or err map) */
	bool v2;       /* it was the {"err": {...}} form */
	int64_t rc;
	uint16_t group; /* valid when v2 */
	bool has_rsn;
	char rsn[64];   /* img group's optional "rsn" (truncated) */
};

/*
 * Extracts an SMP error from a CBOR payload (the bytes after the header).
 * Accepts {"rc": n} (rc 0 means success) and {"err": {"group": g, "rc": n}}.
 * Returns 0 and fills ret (ret->present false on success responses),
 * -EBADMSG if the payload is not a CBOR map.
 */
int smp_err_extract(const uint8_t *payload, size_t len, struct smp_err *ret);

/* Human-readable name of an SMP-level rc ("not supported", ...). */
const char *smp_rc_str(int64_t rc);

/*
 * Builds a complete error response frame to the request header req:
 * v1 requests get {"rc": rc}; v2 requests get {"err": {"group", "rc"}}
 * where group is req->group. Writes at most out_size bytes; returns the
 * frame length or -ENOBUFS.
 */
int smp_build_error_rsp(const struct smp_hdr *req, int rc, uint8_t *out,
			size_t out_size);
