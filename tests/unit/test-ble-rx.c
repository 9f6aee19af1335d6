/* SPDX-License-Identifier: MIT */
/* Reassembly of SMP frames from BLE notifications (src/links/ble-rx.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "links/ble-rx.h"
#include "tap.h"
#include "util/util.h"

/* The echo response notification recorded from a real Zephyr smp_svr
 * through real BlueZ (conformance/bluez, "notify fd first read"). */
static const char *const zephyr_echo_rsp =
	"0b00001200000100bf61726d48656c6c6f2c20576f726c6421ff";

struct got {
	unsigned frames;
	uint8_t last[BLE_RX_FRAME_MAX];
	size_t last_len;
	bool stop;
};

static bool on_frame(const uint8_t *frame, size_t len, void *ud)
{
	struct got *g = ud;

	g->frames++;
	memcpy(g->last, frame, len);
	g->last_len = len;
	return !g->stop;
}

/* A write response frame with payload_len bytes of payload. */
static uint8_t *make_frame(size_t payload_len, uint8_t seq, size_t *ret_len)
{
	uint8_t *f = xmalloc(8 + payload_len);

	f[0] = 0x0b; /* v2, write response */
	f[1] = 0;
	put_be16(f + 2, (uint16_t)payload_len);
	put_be16(f + 4, 0);
	f[6] = seq;
	f[7] = 0;
	for (size_t i = 0; i < payload_len; i++)
		f[8 + i] = (uint8_t)(i * 31 + seq);
	*ret_len = 8 + payload_len;
	return f;
}

/* Pushes frame as notifications of at most mtu bytes. */
static int push_split(struct ble_rx *rx, const uint8_t *f, size_t len, size_t mtu,
		      uint64_t now, struct got *g)
{
	int frames = 0;

	for (size_t off = 0; off < len; off += mtu) {
		int r = ble_rx_push(rx, f + off, MIN(mtu, len - off), now, on_frame, g);

		if (r < 0)
			return r;
		frames += r;
	}
	return frames;
}

static void test_real_notification(void)
{
	struct ble_rx rx;
	struct got *g = xnew(struct got);
	size_t len;
	uint8_t *n = tap_unhex(zephyr_echo_rsp, &len);

	ble_rx_init(&rx);
	is_int(ble_rx_push(&rx, n, len, 1000, on_frame, g), 1, "real echo response: one frame");
	is_mem(g->last, n, len, "delivered as received");
	is_int(rx.len, 0, "nothing left over");
	ble_rx_fini(&rx);
	free(n);
	free(g);
}

static void test_split(void)
{
	struct ble_rx rx;
	struct got *g = xnew(struct got);
	size_t len;
	uint8_t *f = make_frame(2004, 7, &len);

	ble_rx_init(&rx);
	is_int(push_split(&rx, f, len, 495, 1000, g), 1, "2012 bytes over 5 notifications: one frame");
	ok(g->last_len == len && !memcmp(g->last, f, len), "reassembled byte for byte");
	free(f);
	f = make_frame(0, 8, &len);
	is_int(ble_rx_push(&rx, f, len, 1000, on_frame, g), 1, "empty payload: header-only frame");
	free(f);
	f = make_frame(65528, 9, &len);
	is_int(push_split(&rx, f, len, 244, 1000, g), 1, "a 64 KiB frame");
	free(f);
	ble_rx_fini(&rx);
	free(g);
}

static void test_garbage(void)
{
	struct ble_rx rx;
	struct got *g = xnew(struct got);
	static const uint8_t short_n[] = { 0x0b, 0x00, 0x00 };
	static const uint8_t request[] = { 0x0a, 0, 0, 0, 0, 0, 1, 0 };
	static const uint8_t bad_ver[] = { 0x13, 0, 0, 0, 0, 0, 1, 0 };
	static const uint8_t noise[] = { 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6 };
	size_t len;
	uint8_t *f;

	ble_rx_init(&rx);
	is_int(ble_rx_push(&rx, short_n, sizeof(short_n), 1, on_frame, g), -EBADMSG,
	       "shorter than a header: dropped");
	is_int(ble_rx_push(&rx, request, sizeof(request), 1, on_frame, g), -EBADMSG,
	       "a request is not a response: dropped");
	is_int(ble_rx_push(&rx, bad_ver, sizeof(bad_ver), 1, on_frame, g), -EBADMSG,
	       "version 2: dropped");
	is_int(ble_rx_push(&rx, noise, sizeof(noise), 1, on_frame, g), -EBADMSG,
	       "noise: dropped");
	is_int(g->frames, 0, "no frame out of garbage");

	/* Trailing garbage after a whole frame in one notification. */
	f = make_frame(20, 1, &len);
	f = xrealloc(f, len + 4);
	memcpy(f + len, "\xff\xff\xff\xff", 4);
	is_int(ble_rx_push(&rx, f, len + 4, 1, on_frame, g), 1, "frame + trailing garbage: frame out");
	is_int(rx.len, 0, "trailing garbage dropped");
	free(f);

	/* Two frames in one notification. */
	size_t l1, l2;
	uint8_t *f1 = make_frame(10, 2, &l1), *f2 = make_frame(12, 3, &l2), both[64];

	memcpy(both, f1, l1);
	memcpy(both + l1, f2, l2);
	is_int(ble_rx_push(&rx, both, l1 + l2, 1, on_frame, g), 2, "two frames in one notification");
	is_int(g->last[6], 3, "the second one last");
	free(f1);
	free(f2);
	ble_rx_fini(&rx);
	free(g);
}

static void test_resync(void)
{
	struct ble_rx rx;
	struct got *g = xnew(struct got);
	size_t len, len2;
	uint8_t *f = make_frame(1000, 4, &len), *f2 = make_frame(300, 5, &len2);

	ble_rx_init(&rx);
	/* Truncated: only the first notification of a 3-notification frame. */
	is_int(ble_rx_push(&rx, f, 495, 1000, on_frame, g), 0, "partial frame kept");
	/* The next response starts: it would overrun the partial one. */
	is_int(push_split(&rx, f2, len2, 495, 2000, g), 1, "next frame after a truncated one");
	ok(g->last_len == len2 && !memcmp(g->last, f2, len2), "delivered whole, not glued");

	/* A stale partial frame is dropped even when the next would fit. */
	is_int(ble_rx_push(&rx, f, 495, 10000, on_frame, g), 0, "partial frame again");
	is_int(ble_rx_push(&rx, f2, len2, 10000 + BLE_RX_STALE_US + 1, on_frame, g), 1,
	       "stale partial dropped, new frame whole");
	ok(g->last[6] == 5 && g->last_len == len2, "it is the new frame");
	is_int(rx.partials_dropped, 2, "both partial frames counted as dropped");

	/* A continuation that fits is appended (no false resync). */
	is_int(ble_rx_push(&rx, f, 495, 20000000, on_frame, g), 0, "first part");
	is_int(ble_rx_push(&rx, f + 495, 495, 20000001, on_frame, g), 0, "second part");
	is_int(ble_rx_push(&rx, f + 990, len - 990, 20000002, on_frame, g), 1, "third part: frame");
	ok(g->last_len == len && !memcmp(g->last, f, len), "continuations reassembled");
	is_int(rx.partials_dropped, 2, "a reassembled frame drops nothing");

	/* The callback stops delivery (link went down). */
	g->stop = true;
	ble_rx_reset(&rx);
	uint8_t two[64];
	size_t l1;
	uint8_t *f1 = make_frame(10, 6, &l1);

	memcpy(two, f1, l1);
	memcpy(two + l1, f1, l1);
	is_int(ble_rx_push(&rx, two, 2 * l1, 3, on_frame, g), 1, "stop after the first frame");
	free(f1);
	free(f);
	free(f2);
	ble_rx_fini(&rx);
	free(g);
}

static void test_oversize(void)
{
	struct ble_rx rx;
	struct got *g = xnew(struct got);
	uint8_t hdr[8] = { 0x0b, 0, 0xff, 0xf9, 0, 0, 1, 0 }; /* 8 + 65529 > 64 KiB */
	uint8_t chunk[495] = { 0 };

	ble_rx_init(&rx);
	is_int(ble_rx_push(&rx, hdr, sizeof(hdr), 1, on_frame, g), -EBADMSG,
	       "a header announcing more than 64 KiB is refused");
	put_be16(hdr + 2, 100);
	is_int(ble_rx_push(&rx, hdr, sizeof(hdr), 1, on_frame, g), 0, "100-byte frame started");
	/* More bytes than announced: the frame comes out, the rest is noise. */
	is_int(ble_rx_push(&rx, chunk, sizeof(chunk), 1, on_frame, g), 1, "overlong tail: frame out");
	is_int(rx.len, 0, "tail dropped");
	ble_rx_fini(&rx);
	free(g);
}

int main(void)
{
	test_real_notification();
	test_split();
	test_garbage();
	test_resync();
	test_oversize();
	return tap_done();
}
