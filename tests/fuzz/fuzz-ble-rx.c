/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the BLE notification reassembler (src/links/ble-rx.c).
 * Input: records of [len][delay][len bytes]: one notification each, the
 * delay byte advances the clock (x 10 ms, so staleness is exercised).
 * Every frame that comes out must be a whole SMP response frame, and a
 * push gives up at most two partial frames (the one it replaces and the
 * bytes after a frame), each counted once in partials_dropped.
 */
#include <stdint.h>
#include <stdlib.h>

#include "links/ble-rx.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool check_frame(const uint8_t *frame, size_t len, void *ud)
{
	if (len < 8 || len != 8u + get_be16(frame + 2) || len > BLE_RX_FRAME_MAX ||
	    !ble_rx_starts_frame(frame, len))
		abort();
	(*(unsigned *)ud)++;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ble_rx rx;
	uint64_t now = 1;
	unsigned frames = 0;

	ble_rx_init(&rx);
	while (size >= 2) {
		size_t len = MIN((size_t)data[0], size - 2);
		uint64_t dropped = rx.partials_dropped;

		now += (uint64_t)data[1] * 10000;
		(void)ble_rx_push(&rx, data + 2, len, now, check_frame, &frames);
		if (rx.len > BLE_RX_FRAME_MAX || rx.partials_dropped > dropped + 2)
			abort();
		data += 2 + len;
		size -= 2 + len;
	}
	ble_rx_fini(&rx);
	return 0;
}
