/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: arbitrary response frames through the upload engine's
 * parsers (update-smp.c): the SMP error, the image state (slots, hashes,
 * flags, the JSON copy for the device) and the upload answer's "off" and
 * "match". Also checks the chunk size arithmetic against the built frame
 * for sizes taken from the input.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec/smp.h"
#include "gateway/engine-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void chunk_sizes(const uint8_t *data, size_t size)
{
	static uint8_t buf[4096];
	size_t off, total, fm, n;
	uint8_t *frame;
	size_t len;

	if (size < 6)
		return;
	off = (size_t)data[0] << 8 | data[1];
	total = off + ((size_t)data[2] << 8 | data[3]) + 1;
	fm = ((size_t)data[4] << 8 | data[5]) % 4096;
	n = gw_upload_chunk_max(off, total, off ? 0 : 32, fm);
	if (n == 0 || n > sizeof(buf))
		return;
	if (gw_smp_img_upload(off, total, buf, off ? 0 : 32, buf, n, &frame, &len) < 0)
		return;
	if (len > fm || len != SMP_HDR_LEN + gw_upload_chunk_cbor_len(off, total,
								    off ? 0 : 32, n))
		abort();
	free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_smp_result res;
	struct gw_img_state st;
	json_t *images = NULL;
	uint64_t off;
	int match;
	char text[128];

	if (gw_smp_result(data, size, &res) == 0)
		gw_smp_result_str(&res, text, sizeof(text));
	if (gw_img_state_parse(data, size, &st, &images) == 0) {
		if (st.n > GW_IMG_MAX_SLOTS)
			abort();
		for (size_t i = 0; i < st.n; i++)
			if (st.slots[i].has_hash &&
			    gw_img_state_find(&st, st.slots[i].hash) == NULL)
				abort();
		json_decref(images);
	}
	gw_img_upload_parse(data, size, &off, &match);
	chunk_sizes(data, size);
	return 0;
}
