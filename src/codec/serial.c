/* SPDX-License-Identifier: MIT */
/*
 * SMP serial framing: encoder and incremental decoder (see serial.h).
 * The decoder is a byte-at-a-time state machine so that any chunking of the
 * stream gives the same frames and the same errors.
 */
#include "codec/serial.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec/base64.h"
#include "codec/crc16.h"
#include "util/util.h"

#define MARK_PKT_1 0x06
#define MARK_PKT_2 0x09
#define MARK_FRAG_1 0x04
#define MARK_FRAG_2 0x14

/* Raw bytes per line: 124 base64 characters on the first line. Zephyr's
 * encoder uses only 120 on continuation lines (it takes the 2-byte length
 * out of a budget it never restores); we follow it byte for byte. */
#define FIRST_LINE_RAW 93
#define CONT_LINE_RAW 90
#define MAX_PKT_LEN 0xffff

const char *smp_serial_status_str(enum smp_serial_status st)
{
	switch (st) {
	case SMP_SERIAL_STATUS_OK: return "ok";
	case SMP_SERIAL_STATUS_BAD_BASE64: return "bad base64";
	case SMP_SERIAL_STATUS_BAD_CRC: return "bad CRC";
	case SMP_SERIAL_STATUS_BAD_LENGTH: return "length mismatch";
	case SMP_SERIAL_STATUS_TRUNCATED: return "packet cut short by a new start marker";
	case SMP_SERIAL_STATUS_ORPHAN: return "continuation line without a start";
	case SMP_SERIAL_STATUS_TOO_BIG: return "packet larger than the maximum frame";
	case SMP_SERIAL_STATUS_LINE_TOO_LONG: return "line longer than 127 bytes";
	}
	return "unknown";
}

/*
 * How many packet bytes go on the line starting at off. Lines carry whole
 * base64 quads (multiples of 3 raw bytes) except the last, and the CRC is
 * never split from the last line: Zephyr moves 3 bytes to the next line
 * rather than leave 1 or 2 bytes over.
 */
static size_t line_take(size_t remaining, size_t cap)
{
	if (remaining <= cap)
		return remaining;
	if (remaining - cap < 3)
		return cap - 3;
	return cap;
}

int smp_serial_encode(const uint8_t *frame, size_t len, uint8_t **ret,
		      size_t *ret_len)
{
	size_t n = len + 4, off = 0, o = 0;
	uint8_t *pkt, *out;
	uint16_t crc;

	if (len == 0 || len + 2 > MAX_PKT_LEN)
		return -EINVAL;
	pkt = xmalloc(n);
	put_be16(pkt, (uint16_t)(len + 2));
	memcpy(pkt + 2, frame, len);
	crc = crc16_ccitt(0, frame, len);
	put_be16(pkt + 2 + len, crc);

	/* Every line but the last carries at least 87 raw bytes. */
	out = xmalloc((n / 87 + 2) * SMP_SERIAL_MAX_LINE + 1);
	while (off < n) {
		size_t take = line_take(n - off, off == 0 ? FIRST_LINE_RAW : CONT_LINE_RAW);

		out[o++] = off == 0 ? MARK_PKT_1 : MARK_FRAG_1;
		out[o++] = off == 0 ? MARK_PKT_2 : MARK_FRAG_2;
		o += base64_encode(pkt + off, take, (char *)out + o);
		out[o++] = '\n';
		off += take;
	}
	free(pkt);
	*ret = out;
	*ret_len = o;
	return 0;
}

enum dec_state {
	DEC_STATE_HUNT,  /* outside any packet: skip bytes, look for 06 09 */
	DEC_STATE_WAIT,  /* packet in progress, between lines */
	DEC_STATE_LINE,  /* collecting a line's base64 text */
};

struct smp_serial_decoder {
	smp_serial_frame_cb cb;
	void *user_data;
	size_t max_frame;
	enum dec_state state;
	uint8_t prev;         /* previous byte outside a line, for markers */
	bool first_line;      /* the line being collected started with 06 09 */
	bool in_feed, dead;   /* deferred free from inside the callback */
	char line[SMP_SERIAL_MAX_B64];
	size_t line_len;
	uint8_t *pkt;         /* decoded packet bytes after the length field */
	size_t pkt_have, pkt_len;
};

struct smp_serial_decoder *smp_serial_decoder_new(size_t max_frame,
						  smp_serial_frame_cb cb,
						  void *user_data)
{
	struct smp_serial_decoder *dec = xnew(struct smp_serial_decoder);

	dec->max_frame = MIN(max_frame, (size_t)MAX_PKT_LEN - 2);
	dec->cb = cb;
	dec->user_data = user_data;
	dec->pkt = xmalloc(dec->max_frame + 2);
	return dec;
}

struct smp_serial_decoder *smp_serial_decoder_free(struct smp_serial_decoder *dec)
{
	if (!dec)
		return NULL;
	if (dec->in_feed) {
		dec->dead = true;
		return NULL;
	}
	free(dec->pkt);
	free(dec);
	return NULL;
}

void smp_serial_decoder_reset(struct smp_serial_decoder *dec)
{
	dec->state = DEC_STATE_HUNT;
	dec->prev = 0;
	dec->line_len = 0;
	dec->pkt_have = dec->pkt_len = 0;
}

static void emit_error(struct smp_serial_decoder *dec, enum smp_serial_status st)
{
	int err = (st == SMP_SERIAL_STATUS_TOO_BIG ||
		   st == SMP_SERIAL_STATUS_LINE_TOO_LONG) ? -EMSGSIZE : -EBADMSG;

	smp_serial_decoder_reset(dec);
	dec->cb(NULL, 0, err, st, dec->user_data);
}

/* Appends one line's decoded bytes; delivers the packet when complete. */
static void add_data(struct smp_serial_decoder *dec, const uint8_t *data, size_t n)
{
	if (n > dec->pkt_len - dec->pkt_have) {
		emit_error(dec, SMP_SERIAL_STATUS_BAD_LENGTH);
		return;
	}
	memcpy(dec->pkt + dec->pkt_have, data, n);
	dec->pkt_have += n;
	if (dec->pkt_have < dec->pkt_len) {
		dec->state = DEC_STATE_WAIT;
		return;
	}
	/* The CRC over message + its own big-endian CRC is zero. */
	if (crc16_ccitt(0, dec->pkt, dec->pkt_len) != 0) {
		emit_error(dec, SMP_SERIAL_STATUS_BAD_CRC);
		return;
	}
	size_t mlen = dec->pkt_len - 2;

	smp_serial_decoder_reset(dec);
	dec->cb(dec->pkt, mlen, 0, SMP_SERIAL_STATUS_OK, dec->user_data);
}

static void end_line(struct smp_serial_decoder *dec)
{
	uint8_t raw[SMP_SERIAL_MAX_B64 / 4 * 3];
	int n = base64_decode(dec->line, dec->line_len, raw, sizeof(raw));
	size_t skip = 0;

	dec->line_len = 0;
	if (n < 0) {
		emit_error(dec, SMP_SERIAL_STATUS_BAD_BASE64);
		return;
	}
	if (dec->first_line) {
		if (n < 2) {
			emit_error(dec, SMP_SERIAL_STATUS_BAD_LENGTH);
			return;
		}
		dec->pkt_len = get_be16(raw);
		dec->pkt_have = 0;
		skip = 2;
		if (dec->pkt_len < 3) {
			emit_error(dec, SMP_SERIAL_STATUS_BAD_LENGTH);
			return;
		}
		if (dec->pkt_len - 2 > dec->max_frame) {
			emit_error(dec, SMP_SERIAL_STATUS_TOO_BIG);
			return;
		}
	}
	add_data(dec, raw + skip, (size_t)n - skip);
}

static void start_line(struct smp_serial_decoder *dec, bool first)
{
	dec->state = DEC_STATE_LINE;
	dec->first_line = first;
	dec->line_len = 0;
}

/* Outside a line: markers only, everything else is console noise. */
static void feed_marker(struct smp_serial_decoder *dec, uint8_t b)
{
	uint8_t prev = dec->prev;

	dec->prev = b;
	if (prev == MARK_PKT_1 && b == MARK_PKT_2) {
		if (dec->state == DEC_STATE_WAIT) {
			emit_error(dec, SMP_SERIAL_STATUS_TRUNCATED);
			if (dec->dead)
				return;
		}
		start_line(dec, true);
	} else if (prev == MARK_FRAG_1 && b == MARK_FRAG_2) {
		if (dec->state == DEC_STATE_WAIT)
			start_line(dec, false);
		else
			emit_error(dec, SMP_SERIAL_STATUS_ORPHAN);
	}
}

static bool is_b64(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
}

static void feed_line(struct smp_serial_decoder *dec, uint8_t b)
{
	if (b == '\n') {
		dec->prev = 0;
		end_line(dec);
	} else if (b == '\r') {
		return; /* tolerate CRLF line ends */
	} else if (!is_b64(b)) {
		/* A lost newline, console output or a new marker inside the
		 * line: drop the packet and look at this byte again. */
		emit_error(dec, SMP_SERIAL_STATUS_BAD_BASE64);
		if (!dec->dead)
			feed_marker(dec, b);
	} else if (dec->line_len == sizeof(dec->line)) {
		emit_error(dec, SMP_SERIAL_STATUS_LINE_TOO_LONG);
	} else {
		dec->line[dec->line_len++] = (char)b;
	}
}

void smp_serial_decoder_feed(struct smp_serial_decoder *dec, const uint8_t *buf,
			     size_t len)
{
	dec->in_feed = true;
	for (size_t i = 0; i < len && !dec->dead; i++) {
		if (dec->state == DEC_STATE_LINE)
			feed_line(dec, buf[i]);
		else
			feed_marker(dec, buf[i]);
	}
	dec->in_feed = false;
	if (dec->dead)
		smp_serial_decoder_free(dec);
}
