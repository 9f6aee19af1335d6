/* SPDX-License-Identifier: MIT */
/*
 * Internals of the upload engine shared by engine.c (jobs and the update
 * flow), upload.c (one pipelined image upload) and update-smp.c (the SMP
 * frames the engine sends and the answers it reads). Not a public API.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct gw;
struct gw_device;
struct gw_upload;

/* ---- update-smp.c: frames and answers ---- */

#define GW_IMG_HASH_LEN 32
#define GW_IMG_MAX_SLOTS 4

struct gw_img_slot {
	unsigned image, slot;
	bool has_hash;
	uint8_t hash[GW_IMG_HASH_LEN];
	bool active, pending, confirmed, permanent, bootable;
	char version[32];
};

struct gw_img_state {
	size_t n;
	struct gw_img_slot slots[GW_IMG_MAX_SLOTS];
};

/* What a response frame said: a transport-level success can still carry
 * an SMP error ({"rc"} or {"err"}). */
struct gw_smp_result {
	bool smp_error;
	int64_t rc;
	bool v2;
	uint16_t group;
	char rsn[64];
};

/* Whole request frames (caller frees *ret). 0 or negative errno. */
int gw_smp_img_state_read(uint8_t **ret, size_t *ret_len);
/* hash NULL with confirm: confirm the running image (slot 0). */
int gw_smp_img_state_write(const uint8_t *hash, bool confirm, uint8_t **ret,
			   size_t *ret_len);
int gw_smp_os_reset(uint8_t **ret, size_t *ret_len);
/* os echo of text_len 'x' characters (the reassembly probe). */
int gw_smp_os_echo(size_t text_len, uint8_t **ret, size_t *ret_len);

/*
 * One upload chunk: first (off 0) carries image 0, len, sha; others only
 * off and data. The frame is exactly 8 + gw_upload_chunk_cbor_len() bytes.
 */
int gw_smp_img_upload(size_t off, size_t total, const uint8_t *sha,
		      size_t sha_len, const uint8_t *data, size_t data_len,
		      uint8_t **ret, size_t *ret_len);
/* Exact CBOR payload length of that chunk's map. */
size_t gw_upload_chunk_cbor_len(size_t off, size_t total, size_t sha_len,
				size_t data_len);
/* The most data bytes a chunk at off may carry so the whole frame (header
 * included) fits in frame_max; at most total - off. 0 if nothing fits. */
size_t gw_upload_chunk_max(size_t off, size_t total, size_t sha_len,
			   size_t frame_max);

/* Parses a response frame's error. -EBADMSG when not a CBOR map. */
int gw_smp_result(const uint8_t *frame, size_t len, struct gw_smp_result *ret);
/* "images" of an img state response; *ret_json (optional) gets the array as
 * JSON (new reference) for the device's cached slots. */
int gw_img_state_parse(const uint8_t *frame, size_t len,
		       struct gw_img_state *ret, json_t **ret_json);
/* "off" (and "match" when present: *ret_match 1/0, else -1) of an upload
 * response. */
int gw_img_upload_parse(const uint8_t *frame, size_t len, uint64_t *ret_off,
			int *ret_match);
/* The slot holding hash, or NULL. */
const struct gw_img_slot *gw_img_state_find(const struct gw_img_state *st,
					    const uint8_t *hash);
/* Describes an SMP error into buf ("img rc 6 (...)"). */
void gw_smp_result_str(const struct gw_smp_result *r, char *buf, size_t size);

/* ---- upload.c: one pipelined upload ---- */

struct gw_upload_params {
	struct event_base *base;
	struct gw_device *dev;
	const uint8_t *image;   /* borrowed; lives until the upload is freed */
	size_t len;
	uint8_t sha[32];        /* SHA-256 of the whole file: the session id */
	size_t start_off;       /* where we believe the device is (resume) */
	size_t frame_max;       /* whole SMP frame limit (header included) */
	unsigned max_inflight;  /* pipeline depth, >= 1 */
	uint32_t chunk_timeout_ms;
	bool state_checked;     /* a state read just showed the image absent */
	uint8_t hash[GW_IMG_HASH_LEN]; /* MCUboot SHA-256 TLV: slot check */
};

/*
 * Result of an upload (called once):
 *   0              every byte acknowledged by the device;
 *   -ECONNRESET / -ENOTCONN / -ETIMEDOUT   the link failed: resumable;
 *   -EPROTO        the device refused (msg says how);
 *   -EEXIST        a state read found the image complete already.
 */
struct gw_upload_stats {
	size_t acked;           /* device offset */
	uint64_t bytes_sent;    /* data bytes sent, resends included */
	unsigned timeouts, mismatches, restarts;
};
struct gw_upload_cbs {
	void (*progress)(const struct gw_upload_stats *st, void *user_data);
	void (*done)(int err, const char *msg, const struct gw_upload_stats *st,
		     void *user_data);
};

struct gw_upload *gw_upload_start(const struct gw_upload_params *p,
				  const struct gw_upload_cbs *cbs,
				  void *user_data);
/* Cancels every request; no callback afterwards. Accepts NULL. Not to be
 * called from the done callback: the upload frees itself after it. */
struct gw_upload *gw_upload_free(struct gw_upload *up);
