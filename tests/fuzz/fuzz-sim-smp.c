/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the simulated watch's SMP server takes any frame. The
 * input is a sequence of frames (2-byte big-endian length + bytes) fed to
 * one device; every accepted request must get exactly one reply whose
 * header echoes the request's group, id and sequence number. */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "device.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct expect {
	unsigned replies;
	uint8_t hdr[8];
};

static void reply_cb(struct sim_device *dev, const uint8_t *frame, size_t len, void *ud)
{
	struct expect *e = ud;

	if (len < 8 || frame[6] != e->hdr[6] || frame[7] != e->hdr[7] ||
	    memcmp(frame + 4, e->hdr + 4, 2) != 0)
		abort();
	e->replies++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct event_base *base = event_base_new();
	struct sim_device_config cfg;
	struct sim_device *dev;

	sim_device_config_default(&cfg);
	cfg.flash.erase_sector_us = cfg.flash.program_page_us = 0;
	cfg.boot_ms = 0;
	cfg.proc_us = 0;
	dev = sim_device_new(base, &cfg);
	for (unsigned guard = 0; size >= 2 && guard < 64; guard++) {
		size_t n = MIN((size_t)((data[0] << 8) | data[1]), size - 2);
		struct expect e = { 0 };

		memcpy(e.hdr, data + 2, MIN(n, sizeof(e.hdr)));
		if (sim_device_rx_frame(dev, data + 2, n, reply_cb, &e) == 0) {
			for (unsigned i = 0; i < 100 && e.replies == 0; i++)
				event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
			/* a reset may swallow the reply; otherwise exactly one */
			if (e.replies > 1)
				abort();
			sim_device_cancel_replies(dev, &e);
		}
		data += 2 + n;
		size -= 2 + n;
	}
	sim_device_free(dev);
	event_base_free(base);
	return 0;
}
