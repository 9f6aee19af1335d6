/* SPDX-License-Identifier: MIT */
/* Reassembly of SMP frames from BLE notifications (see ble-rx.h). */
#include "links/ble-rx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec/smp.h"
#include "util/util.h"

void ble_rx_init(struct ble_rx *rx)
{
	memset(rx, 0, sizeof(*rx));
}

void ble_rx_reset(struct ble_rx *rx)
{
	rx->len = 0;
}

void ble_rx_fini(struct ble_rx *rx)
{
	free(rx->buf);
	ble_rx_init(rx);
}

static size_t frame_total(const uint8_t *buf)
{
	return SMP_HDR_LEN + get_be16(buf + 2);
}

bool ble_rx_starts_frame(const uint8_t *buf, size_t len)
{
	uint8_t op, ver;

	if (len < SMP_HDR_LEN)
		return false;
	op = buf[0] & 7;
	ver = (buf[0] >> 3) & 3;
	return (op == SMP_OP_READ_RSP || op == SMP_OP_WRITE_RSP) &&
	       ver <= SMP_VER_2 && frame_total(buf) <= BLE_RX_FRAME_MAX;
}

static void append(struct ble_rx *rx, const uint8_t *buf, size_t len)
{
	if (rx->len + len > rx->cap) {
		size_t cap = MAX(rx->cap * 2, (size_t)1024);

		while (cap < rx->len + len)
			cap *= 2;
		rx->cap = MIN(cap, (size_t)BLE_RX_FRAME_MAX);
		rx->buf = xrealloc(rx->buf, rx->cap);
	}
	memcpy(rx->buf + rx->len, buf, len);
	rx->len += len;
}

/* Could a notification of len bytes continue the partial frame? */
static bool continues(const struct ble_rx *rx, size_t len)
{
	size_t missing = frame_total(rx->buf) - rx->len;

	return len <= missing && (len == rx->first_len || len == missing);
}

int ble_rx_push(struct ble_rx *rx, const uint8_t *buf, size_t len,
		uint64_t now_us, ble_rx_frame_cb cb, void *user_data)
{
	bool start = ble_rx_starts_frame(buf, len);
	int frames = 0;

	if (rx->len && (now_us - rx->last_us > BLE_RX_STALE_US ||
			(start && !continues(rx, len)))) {
		rx->len = 0;
		rx->partials_dropped++;
	}
	rx->last_us = now_us;
	if ((!rx->len && !start) || rx->len + len > BLE_RX_FRAME_MAX) {
		if (rx->len)
			rx->partials_dropped++;
		rx->len = 0;
		return -EBADMSG;
	}
	if (!rx->len)
		rx->first_len = len;
	append(rx, buf, len);
	while (rx->len >= SMP_HDR_LEN) {
		size_t total = frame_total(rx->buf), rest;

		if (rx->len < total)
			break;
		frames++;
		if (!cb(rx->buf, total, user_data))
			return frames;
		rest = rx->len - total;
		memmove(rx->buf, rx->buf + total, rest);
		rx->len = rest;
		rx->first_len = rest;
		/* Bytes after a frame in the same notification: another frame
		 * if they look like one, else garbage. */
		if (rest && !ble_rx_starts_frame(rx->buf, rest)) {
			rx->len = 0;
			rx->partials_dropped++;
		}
	}
	return frames;
}
