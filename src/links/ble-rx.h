/* SPDX-License-Identifier: MIT */
/*
 * Reassembly of SMP frames from BLE notifications. Zephyr's SMP BLE
 * transport sends a response as back-to-back notifications of up to
 * MTU - 3 bytes; the 8-byte SMP header's length is all the framing there
 * is. Pure code: no I/O, the clock is passed in. Owns its buffer (grown on
 * demand up to BLE_RX_FRAME_MAX).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest frame reassembled (header included): 64 KiB. */
#define BLE_RX_FRAME_MAX 65536
/* A partial frame older than this is what a lost notification left. */
#define BLE_RX_STALE_US 1000000

struct ble_rx {
	uint8_t *buf;
	size_t len, cap;
	size_t first_len;  /* size of the partial frame's first notification */
	uint64_t last_us;
	uint64_t partials_dropped; /* partial frames given up (lost or cut notifications) */
};

/* A whole frame (borrowed); return false to stop (the link went down:
 * the rest of the notification is not looked at). */
typedef bool (*ble_rx_frame_cb)(const uint8_t *frame, size_t len, void *user_data);

void ble_rx_init(struct ble_rx *rx);
/* Forgets a partial frame (link dropped). */
void ble_rx_reset(struct ble_rx *rx);
void ble_rx_fini(struct ble_rx *rx);
/* Could buf begin an SMP response frame (read/write response, version 0
 * or 1, at most BLE_RX_FRAME_MAX long)? */
bool ble_rx_starts_frame(const uint8_t *buf, size_t len);
/*
 * One notification (borrowed). Delivers each frame it completes through
 * cb. Returns the number of frames delivered, or -EBADMSG when the
 * notification was dropped as garbage (it cannot start a frame and none is
 * in progress, or it would make a frame larger than BLE_RX_FRAME_MAX).
 * A partial frame is dropped (a notification was lost or the response
 * truncated) when it went stale, or when a notification that starts a frame
 * cannot be its continuation: it would overrun it, or its size is neither
 * the first notification's (the sender fills each to MTU - 3) nor what is
 * missing. Each partial frame given up counts in rx->partials_dropped.
 */
int ble_rx_push(struct ble_rx *rx, const uint8_t *buf, size_t len,
		uint64_t now_us, ble_rx_frame_cb cb, void *user_data);
