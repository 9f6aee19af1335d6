/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the SMP serial decoder. The first input byte seeds
 * the chunk sizes, so the same stream is also tried under many chunkings.
 * Every frame that decodes is encoded again and must decode to itself.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/serial.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct roundtrip {
	const uint8_t *want;
	size_t len;
	int frames;
};

static void on_again(const uint8_t *frame, size_t len, int err,
		     enum smp_serial_status st, void *user_data)
{
	struct roundtrip *r = user_data;

	if (err || len != r->len || memcmp(frame, r->want, len) != 0)
		abort();
	r->frames++;
}

static void on_frame(const uint8_t *frame, size_t len, int err,
		     enum smp_serial_status st, void *user_data)
{
	struct roundtrip r = { frame, len, 0 };
	struct smp_serial_decoder *dec;
	uint8_t *wire;
	size_t wlen;

	if ((err == 0) != (frame != NULL) || (err == 0) != (st == SMP_SERIAL_STATUS_OK))
		abort();
	if (err)
		return;
	if (smp_serial_encode(frame, len, &wire, &wlen) != 0)
		abort();
	dec = smp_serial_decoder_new(len, on_again, &r);
	smp_serial_decoder_feed(dec, wire, wlen);
	smp_serial_decoder_free(dec);
	free(wire);
	if (r.frames != 1)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smp_serial_decoder *dec;
	uint32_t seed;

	if (size < 1)
		return 0;
	seed = data[0] * 2654435761u + 1;
	data++, size--;
	dec = smp_serial_decoder_new(1024, on_frame, NULL);
	while (size > 0) {
		size_t chunk;

		seed = seed * 1103515245u + 12345u;
		chunk = 1 + (seed >> 16) % 200;
		if (chunk > size)
			chunk = size;
		smp_serial_decoder_feed(dec, data, chunk);
		data += chunk, size -= chunk;
	}
	smp_serial_decoder_free(dec);
	return 0;
}
