/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: arbitrary JSON through json -> CBOR -> bytes -> CBOR ->
 * JSON. Converting the resulting JSON again must give the same CBOR bytes
 * (the JSON form is canonical after one round).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec/cbor-util.h"
#include "codec/json-cbor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* JSON -> CBOR bytes; false when the JSON is refused. */
static bool to_bytes(const json_t *j, uint8_t **enc, size_t *len)
{
	cbor_item_t *item;
	int r;

	if (smp_json_to_cbor(j, &item) < 0)
		return false;
	r = smp_cbor_encode(item, enc, len);
	cbor_decref(&item);
	if (r < 0)
		abort();
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *j = json_loadb((const char *)data, size,
			       JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	json_t *back = NULL;
	cbor_item_t *dec = NULL;
	uint8_t *enc = NULL, *enc2 = NULL;
	size_t len, len2;

	if (!j)
		return 0;
	if (!to_bytes(j, &enc, &len))
		goto out;
	/* only "$simple" values may fail to decode (libcbor 0.8) */
	if (smp_cbor_decode(enc, len, &dec) < 0)
		goto out;
	if (smp_cbor_to_json(dec, &back) < 0)
		abort();
	if (!to_bytes(back, &enc2, &len2) || len2 != len || memcmp(enc, enc2, len))
		abort();
out:
	free(enc);
	free(enc2);
	if (dec)
		cbor_decref(&dec);
	json_decref(back);
	json_decref(j);
	return 0;
}
