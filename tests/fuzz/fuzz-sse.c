/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the smpgw client's event-stream parser
 * (src/cli/sse.c). The first byte picks the piece size, so a stream is
 * also fed in many splittings; the events must not depend on it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct digest {
	uint64_t h;
	unsigned events;
};

static void mix(struct digest *d, const char *s)
{
	for (; *s; s++)
		d->h = (d->h ^ (uint8_t)*s) * 1099511628211u;
	d->h = (d->h ^ 0xff) * 1099511628211u;
}

static int on_event(const char *type, const char *id, const char *data, void *ud)
{
	struct digest *d = ud;

	if (!type || !data)
		abort();
	mix(d, type);
	mix(d, id ? id : "\x01");
	mix(d, data);
	d->events++;
	return 0;
}

static struct digest run(const char *buf, size_t len, size_t piece)
{
	struct digest d = { 14695981039346656037u, 0 };
	struct sse *s = sse_new(on_event, &d);

	for (size_t off = 0; off < len; off += piece)
		if (sse_feed(s, buf + off, len - off < piece ? len - off : piece) < 0)
			break;
	sse_free(s);
	return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct digest whole, pieces;

	if (size < 1)
		return 0;
	whole = run((const char *)data + 1, size - 1, size);
	pieces = run((const char *)data + 1, size - 1, (size_t)data[0] % 16 + 1);
	if (whole.h != pieces.h || whole.events != pieces.events)
		abort();
	return 0;
}
