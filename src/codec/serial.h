/* SPDX-License-Identifier: MIT */
/*
 * SMP over a serial line (Zephyr mcumgr "SMP over console" framing).
 *
 * A packet is: 2-byte big-endian length, the SMP message, CRC16-CCITT
 * (XMODEM) of the message, big-endian; the length counts message + CRC.
 * The packet is base64-encoded and cut into lines of at most 127 bytes:
 * marker 06 09 on the first line, 04 14 on continuation lines, then the
 * base64 text, then '\n'. Each line holds whole base64 quads, so each line
 * decodes on its own.
 *
 * This module owns the encoder and an incremental decoder that takes the
 * byte stream in arbitrary chunks, skips whatever is not a frame (console
 * output, noise), reports each bad packet once and resynchronises on the
 * next start marker. Pure code: no I/O, no logging.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SMP_SERIAL_MAX_LINE 127 /* marker + base64 + '\n' */
#define SMP_SERIAL_MAX_B64 (SMP_SERIAL_MAX_LINE - 3)

/*
 * Encodes one SMP message (header + CBOR, borrowed) as serial lines, line
 * breaks placed where Zephyr's mcumgr_serial_tx_pkt puts them. On success
 * *ret is a new buffer (caller frees) of *ret_len bytes. -EINVAL when len is
 * 0 or too big for the 16-bit length field.
 */
int smp_serial_encode(const uint8_t *frame, size_t len, uint8_t **ret,
		      size_t *ret_len);

/* Why a packet was dropped (or SMP_SERIAL_STATUS_OK for a good frame). */
enum smp_serial_status {
	SMP_SERIAL_STATUS_OK = 0,
	SMP_SERIAL_STATUS_BAD_BASE64,   /* -EBADMSG */
	SMP_SERIAL_STATUS_BAD_CRC,      /* -EBADMSG */
	SMP_SERIAL_STATUS_BAD_LENGTH,   /* -EBADMSG: data longer than length */
	SMP_SERIAL_STATUS_TRUNCATED,    /* -EBADMSG: new packet before the end */
	SMP_SERIAL_STATUS_ORPHAN,       /* -EBADMSG: continuation without start */
	SMP_SERIAL_STATUS_TOO_BIG,      /* -EMSGSIZE: length above max_frame */
	SMP_SERIAL_STATUS_LINE_TOO_LONG,/* -EMSGSIZE: line above 127 bytes */
};

const char *smp_serial_status_str(enum smp_serial_status st);

/*
 * Called once per packet: err 0 with the SMP message (borrowed, valid during
 * the call only), or err < 0 with frame NULL and st saying why. The callback
 * may call smp_serial_decoder_free() on its decoder; freeing then happens
 * when the feed returns and no further callback runs.
 */
typedef void (*smp_serial_frame_cb)(const uint8_t *frame, size_t len, int err,
				    enum smp_serial_status st, void *user_data);

struct smp_serial_decoder;

/* max_frame: the largest SMP message accepted (without length and CRC). */
struct smp_serial_decoder *smp_serial_decoder_new(size_t max_frame,
						  smp_serial_frame_cb cb,
						  void *user_data);
struct smp_serial_decoder *smp_serial_decoder_free(struct smp_serial_decoder *dec);

/* Feeds len bytes (borrowed); calls the callback for every packet ended in
 * them. Never fails: bad input is reported through the callback. */
void smp_serial_decoder_feed(struct smp_serial_decoder *dec, const uint8_t *buf,
			     size_t len);

/* Drops any partial packet silently (e.g. after the port was reopened). */
void smp_serial_decoder_reset(struct smp_serial_decoder *dec);
