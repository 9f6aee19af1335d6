/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: arbitrary bytes through the SMP header, error
 * extraction, CBOR decoding (limits), the typed getters and the JSON form.
 * Whatever decodes must re-encode to bytes that decode and re-encode the
 * same (libcbor does not keep non-shortest length heads, so the first
 * re-encoding may differ from the input), and must survive
 * CBOR -> JSON -> CBOR -> JSON unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec/cbor-util.h"
#include "codec/json-cbor.h"
#include "codec/smp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void poke_getters(const cbor_item_t *map)
{
	static const char *const keys[] = { "rc", "off", "data", "r", "sha", "len" };
	uint64_t u;
	int64_t i;
	bool b;
	char text[16], *dup;
	uint8_t bytes[16], *bdup;
	const uint8_t *ref;
	size_t n;

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		(void)smp_cbor_get_uint(map, keys[k], &u);
		(void)smp_cbor_get_int(map, keys[k], &i);
		(void)smp_cbor_get_bool(map, keys[k], &b);
		(void)smp_cbor_get_text(map, keys[k], text, sizeof(text), &n);
		(void)smp_cbor_get_bytes(map, keys[k], bytes, sizeof(bytes), &n);
		(void)smp_cbor_get_bytes_ref(map, keys[k], &ref, &n);
		if (smp_cbor_get_text_dup(map, keys[k], &dup, &n) == 0)
			free(dup);
		if (smp_cbor_get_bytes_dup(map, keys[k], &bdup, &n) == 0)
			free(bdup);
	}
}

/* JSON -> CBOR bytes, which must always work for our own JSON form. */
static void json_bytes(const json_t *j, uint8_t **enc, size_t *len)
{
	cbor_item_t *c;

	if (smp_json_to_cbor(j, &c) < 0 || smp_cbor_encode(c, enc, len) < 0)
		abort();
	cbor_decref(&c);
}

/*
 * The JSON form must be a fixpoint: item -> JSON -> CBOR bytes -> item ->
 * JSON -> CBOR bytes gives the same bytes twice. (Compared as bytes:
 * jansson's json_equal() misses keys with embedded NULs.)
 */
static void check_json_form(const cbor_item_t *item)
{
	json_t *j1 = NULL, *j2 = NULL;
	cbor_item_t *d = NULL;
	uint8_t *enc1 = NULL, *enc2 = NULL;
	size_t len1, len2;

	if (smp_cbor_to_json(item, &j1) < 0)
		return; /* e.g. text libcbor took but jansson calls bad UTF-8 */
	json_bytes(j1, &enc1, &len1);
	if (smp_cbor_decode(enc1, len1, &d) < 0 || smp_cbor_to_json(d, &j2) < 0)
		abort();
	json_bytes(j2, &enc2, &len2);
	if (len1 != len2 || memcmp(enc1, enc2, len1))
		abort();
	json_decref(j1);
	json_decref(j2);
	cbor_decref(&d);
	free(enc1);
	free(enc2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *payload = data;
	struct smp_hdr hdr;
	struct smp_err err;
	cbor_item_t *item, *again;
	uint8_t *enc, *enc2;
	size_t len, len2, plen = size;

	if (smp_hdr_decode(data, size, &hdr) == 0) {
		(void)smp_frame_check(data, size, &hdr);
		payload = data + SMP_HDR_LEN;
		plen = size - SMP_HDR_LEN;
	}
	(void)smp_err_extract(payload, plen, &err);
	if (smp_cbor_decode(payload, plen, &item) < 0)
		return 0;
	poke_getters(item);
	if (smp_cbor_encode(item, &enc, &len) < 0 ||
	    smp_cbor_decode(enc, len, &again) < 0 ||
	    smp_cbor_encode(again, &enc2, &len2) < 0 || len2 != len ||
	    memcmp(enc, enc2, len))
		abort();
	cbor_decref(&again);
	free(enc);
	free(enc2);
	check_json_form(item);
	cbor_decref(&item);
	return 0;
}
