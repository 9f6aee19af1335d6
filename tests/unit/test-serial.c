/* SPDX-License-Identifier: MIT */
/* Tests for the SMP serial framing: Zephyr's wire vector, every chunking,
 * noise between frames, and one error per kind of bad packet. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "codec/base64.h"
#include "codec/crc16.h"
#include "codec/serial.h"
#include "tap.h"
#include "util/util.h"

#define MAX_EVENTS 16

struct event {
	int err;
	enum smp_serial_status st;
	uint8_t *frame;
	size_t len;
};

struct sink {
	struct event ev[MAX_EVENTS];
	size_t n;
	struct smp_serial_decoder *dec; /* to test freeing from the callback */
	bool free_in_cb;
};

static void on_frame(const uint8_t *frame, size_t len, int err,
		     enum smp_serial_status st, void *user_data)
{
	struct sink *s = user_data;

	if (s->n < MAX_EVENTS) {
		s->ev[s->n] = (struct event){ err, st, frame ? xmemdup(frame, len) : NULL, len };
		s->n++;
	}
	if (s->free_in_cb)
		smp_serial_decoder_free(s->dec);
}

static void sink_clear(struct sink *s)
{
	for (size_t i = 0; i < s->n && i < MAX_EVENTS; i++)
		free(s->ev[i].frame);
	s->n = 0;
}

/* Feeds buf in one go into a fresh decoder. */
static void decode_all(struct sink *s, const void *buf, size_t len, size_t max)
{
	struct smp_serial_decoder *dec = smp_serial_decoder_new(max, on_frame, s);

	sink_clear(s);
	smp_serial_decoder_feed(dec, buf, len);
	smp_serial_decoder_free(dec);
}

static json_t *vectors;

static uint8_t *vector(const char *name, const char *field, size_t *len)
{
	json_t *v = json_object_get(json_object_get(json_object_get(vectors, "serial"), name), field);

	if (!json_is_string(v)) {
		tap_diag("missing vector %s.%s", name, field);
		exit(1);
	}
	return tap_unhex(json_string_value(v), len);
}

static void test_wire_vector(void)
{
	size_t rlen, wlen, elen;
	uint8_t *req = vector("echo", "req", &rlen);
	uint8_t *wire = vector("echo", "serial_wire_req", &wlen);
	uint8_t *enc;
	struct sink s = { 0 };

	is_int(smp_serial_encode(req, rlen, &enc, &elen), 0, "encode echo");
	is_int(elen, wlen, "encoded length = Zephyr wire length");
	is_mem(enc, wire, MIN(elen, wlen), "encoded bytes = serial_wire_req");
	free(enc);

	decode_all(&s, wire, wlen, 512);
	is_int(s.n, 1, "wire vector decodes to one frame");
	is_int(s.ev[0].err, 0, "no error");
	is_int(s.ev[0].len, rlen, "frame length");
	is_mem(s.ev[0].frame, req, rlen, "frame = req");

	/* Every split point, and byte-by-byte. */
	bool all = true;

	for (size_t cut = 0; cut <= wlen; cut++) {
		struct smp_serial_decoder *dec = smp_serial_decoder_new(512, on_frame, &s);

		sink_clear(&s);
		smp_serial_decoder_feed(dec, wire, cut);
		smp_serial_decoder_feed(dec, wire + cut, wlen - cut);
		smp_serial_decoder_free(dec);
		all &= s.n == 1 && s.ev[0].err == 0 && s.ev[0].len == rlen &&
		       memcmp(s.ev[0].frame, req, rlen) == 0;
	}
	ok(all, "split at every position gives the same frame");
	struct smp_serial_decoder *dec = smp_serial_decoder_new(512, on_frame, &s);

	sink_clear(&s);
	for (size_t i = 0; i < wlen; i++)
		smp_serial_decoder_feed(dec, wire + i, 1);
	smp_serial_decoder_free(dec);
	ok(s.n == 1 && s.ev[0].err == 0, "byte by byte");
	sink_clear(&s);
	free(req);
	free(wire);
}

/* Checks line lengths, markers and that each line is whole base64. */
static bool lines_ok(const uint8_t *w, size_t len, size_t *nlines)
{
	size_t start = 0;

	*nlines = 0;
	for (size_t i = 0; i < len; i++) {
		if (w[i] != '\n')
			continue;
		size_t ll = i + 1 - start;

		if (ll > SMP_SERIAL_MAX_LINE || (ll - 3) % 4 != 0)
			return false;
		if (*nlines == 0 ? (w[start] != 0x06 || w[start + 1] != 0x09)
				 : (w[start] != 0x04 || w[start + 1] != 0x14))
			return false;
		(*nlines)++;
		start = i + 1;
	}
	return start == len;
}

static void test_roundtrip_sizes(void)
{
	struct sink s = { 0 };
	uint8_t msg[2100];
	bool all = true, lines = true;

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 3);
	for (size_t len = 1; len <= sizeof(msg); len++) {
		uint8_t *w;
		size_t wl, nl;

		if (smp_serial_encode(msg, len, &w, &wl) != 0) {
			all = false;
			break;
		}
		lines &= lines_ok(w, wl, &nl);
		decode_all(&s, w, wl, sizeof(msg));
		all &= s.n == 1 && s.ev[0].err == 0 && s.ev[0].len == len &&
		       memcmp(s.ev[0].frame, msg, len) == 0;
		free(w);
	}
	ok(all, "encode/decode round trip for 1..2100 bytes");
	ok(lines, "lines at most 127 bytes, whole base64, right markers");

	/* Zephyr's line breaks: 91 data bytes do not fit with the CRC on
	 * one line; Zephyr moves 3 data bytes to the continuation line. */
	uint8_t *w;
	size_t wl, nl;

	smp_serial_encode(msg, 91, &w, &wl);
	lines_ok(w, wl, &nl);
	is_int(nl, 2, "91 bytes: two lines");
	is_int(memchr(w, '\n', wl) - (void *)w, 2 + 120, "91 bytes: first line carries 90 raw bytes");
	free(w);
	smp_serial_encode(msg, 88, &w, &wl);
	lines_ok(w, wl, &nl);
	is_int(nl, 1, "89 raw + CRC fits one line");
	free(w);
	is_int(smp_serial_encode(msg, 0, &w, &wl), -EINVAL, "empty frame refused");

	/* smpclient instead cuts the base64 of the whole packet every 124
	 * characters (full 127-byte continuation lines): accept it too. */
	uint8_t pkt[404];
	char b64[BASE64_ENCODED_LEN(sizeof(pkt)) + 1], wire[1024];
	size_t bl, o = 0;

	put_be16(pkt, 402);
	memcpy(pkt + 2, msg, 400);
	put_be16(pkt + 402, crc16_ccitt(0, msg, 400));
	bl = base64_encode(pkt, sizeof(pkt), b64);
	for (size_t off = 0; off < bl; off += SMP_SERIAL_MAX_B64) {
		size_t k = MIN((size_t)SMP_SERIAL_MAX_B64, bl - off);

		wire[o++] = off ? 0x04 : 0x06;
		wire[o++] = off ? 0x14 : 0x09;
		memcpy(wire + o, b64 + off, k), o += k;
		wire[o++] = '\n';
	}
	decode_all(&s, wire, o, sizeof(msg));
	ok(s.n == 1 && s.ev[0].err == 0 && s.ev[0].len == 400 &&
	   memcmp(s.ev[0].frame, msg, 400) == 0, "smpclient-style 124-character lines");
	sink_clear(&s);
}

static void test_noise_and_several(void)
{
	struct sink s = { 0 };
	uint8_t a[300], b[10], *wa, *wb;
	size_t la, lb;
	char buf[2048];
	size_t n = 0;

	memset(a, 0xa5, sizeof(a));
	memset(b, 0x5a, sizeof(b));
	smp_serial_encode(a, sizeof(a), &wa, &la);
	smp_serial_encode(b, sizeof(b), &wb, &lb);
	n += (size_t)sprintf(buf + n, "*** Booting Zephyr OS ***\r\n[00:00:01] <inf> app: hi\n");
	memcpy(buf + n, wa, la), n += la;
	n += (size_t)sprintf(buf + n, "uart:~$ \x04 garbage \x06 \x14\xff\n");
	memcpy(buf + n, wb, lb), n += lb;
	memcpy(buf + n, wb, lb), n += lb;
	decode_all(&s, buf, n, 1024);
	is_int(s.n, 3, "three frames among console output");
	ok(s.n == 3 && s.ev[0].err == 0 && s.ev[0].len == sizeof(a), "first frame");
	ok(s.n == 3 && s.ev[1].err == 0 && s.ev[2].len == sizeof(b), "second and third");

	/* Console lines between the lines of one packet are skipped too. */
	char *nl1 = memchr(wa, '\n', la);
	size_t first = (size_t)(nl1 - (char *)wa) + 1;

	n = 0;
	memcpy(buf + n, wa, first), n += first;
	n += (size_t)sprintf(buf + n, "log line\n");
	memcpy(buf + n, wa + first, la - first), n += la - first;
	decode_all(&s, buf, n, 1024);
	ok(s.n == 1 && s.ev[0].err == 0 && s.ev[0].len == sizeof(a), "log between continuation lines");
	sink_clear(&s);
	free(wa);
	free(wb);
}

static void expect_error(const char *wire, size_t len, int err,
			 enum smp_serial_status st, const char *name)
{
	struct sink s = { 0 };
	uint8_t good[] = { 0x08, 0, 0, 1, 0, 0, 0x34, 6, 0xa0 }, *w;
	size_t wl;
	char buf[1024];

	/* The bad packet, then a good one: the decoder must resync. */
	smp_serial_encode(good, sizeof(good), &w, &wl);
	memcpy(buf, wire, len);
	memcpy(buf + len, w, wl);
	decode_all(&s, buf, len + wl, 128);
	ok(s.n == 2 && s.ev[0].err == err && s.ev[0].st == st && !s.ev[0].frame,
	   "%s: %s", name, smp_serial_status_str(st));
	ok(s.n == 2 && s.ev[1].err == 0 && s.ev[1].len == sizeof(good), "%s: resync", name);
	free(w);
	sink_clear(&s);
}

/* Builds one line: marker + base64 of packet bytes + '\n'. */
static size_t line(char *out, bool first, const uint8_t *raw, size_t n)
{
	out[0] = first ? 0x06 : 0x04;
	out[1] = first ? 0x09 : 0x14;
	size_t k = base64_encode(raw, n, out + 2);

	out[2 + k] = '\n';
	return k + 3;
}

static void test_errors(void)
{
	uint8_t pkt[16] = { 0, 5, 1, 2, 3 };
	char w[512];
	size_t n;
	uint16_t crc = crc16_ccitt(0, pkt + 2, 3);

	put_be16(pkt + 5, (uint16_t)(crc ^ 1));
	n = line(w, true, pkt, 7);
	expect_error(w, n, -EBADMSG, SMP_SERIAL_STATUS_BAD_CRC, "bad CRC");

	put_be16(pkt + 5, crc);
	pkt[1] = 4; /* says 4, carries 5 */
	n = line(w, true, pkt, 7);
	expect_error(w, n, -EBADMSG, SMP_SERIAL_STATUS_BAD_LENGTH, "length mismatch");

	memcpy(w, "\x06\x09" "AAU*AgM=\n", 11);
	expect_error(w, 11, -EBADMSG, SMP_SERIAL_STATUS_BAD_BASE64, "bad base64 char");
	memcpy(w, "\x06\x09" "AAUBAg\n", 9);
	expect_error(w, 9, -EBADMSG, SMP_SERIAL_STATUS_BAD_BASE64, "base64 not whole quads");

	pkt[0] = 0x01, pkt[1] = 0x00; /* 256 > 128 + 2 */
	n = line(w, true, pkt, 6);
	expect_error(w, n, -EMSGSIZE, SMP_SERIAL_STATUS_TOO_BIG, "oversize");

	pkt[0] = 0, pkt[1] = 2;
	n = line(w, true, pkt, 2);
	expect_error(w, n, -EBADMSG, SMP_SERIAL_STATUS_BAD_LENGTH, "length without room for CRC");

	n = line(w, false, pkt, 6);
	expect_error(w, n, -EBADMSG, SMP_SERIAL_STATUS_ORPHAN, "continuation without start");

	pkt[0] = 0, pkt[1] = 100; /* start of a long packet, then a new one */
	n = line(w, true, pkt, 6);
	expect_error(w, n, -EBADMSG, SMP_SERIAL_STATUS_TRUNCATED, "packet cut by next start");

	w[0] = 0x06, w[1] = 0x09;
	memset(w + 2, 'A', 200);
	w[202] = '\n';
	expect_error(w, 203, -EMSGSIZE, SMP_SERIAL_STATUS_LINE_TOO_LONG, "line too long");

	n = line(w, true, pkt, 6) - 1; /* newline lost: next marker inside the line */
	expect_error(w, n, -EBADMSG, SMP_SERIAL_STATUS_BAD_BASE64, "newline lost");
}

static void test_free_in_callback(void)
{
	struct sink s = { .free_in_cb = true };
	uint8_t m[5] = { 1, 2, 3, 4, 5 }, *w;
	size_t wl;
	char buf[256];

	smp_serial_encode(m, sizeof(m), &w, &wl);
	memcpy(buf, w, wl);
	memcpy(buf + wl, w, wl);
	s.dec = smp_serial_decoder_new(64, on_frame, &s);
	smp_serial_decoder_feed(s.dec, (uint8_t *)buf, 2 * wl);
	is_int(s.n, 1, "no callback after free from the callback");
	sink_clear(&s);
	free(w);
	ok(smp_serial_decoder_free(NULL) == NULL, "free(NULL)");
}

int main(void)
{
	json_error_t jerr;

	vectors = json_load_file(CONFORMANCE_DIR "/zephyr-smp-vectors.json", 0, &jerr);
	if (!vectors) {
		tap_diag("cannot load vectors: %s", jerr.text);
		return 1;
	}
	test_wire_vector();
	test_roundtrip_sizes();
	test_noise_and_several();
	test_errors();
	test_free_in_callback();
	json_decref(vectors);
	return tap_done();
}
