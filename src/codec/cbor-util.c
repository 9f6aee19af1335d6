/* SPDX-License-Identifier: MIT */
/* CBOR helpers over libcbor (see cbor-util.h). */
#include "codec/cbor-util.h"

#include <errno.h>
#include <string.h>

int smp_cbor_decode(const uint8_t *buf, size_t len, cbor_item_t **ret)
{
	struct cbor_load_result res;
	cbor_item_t *item;

	if (!buf || !len)
		return -EBADMSG;
	item = cbor_load(buf, len, &res);
	if (!item || res.error.code != CBOR_ERR_NONE)
		goto bad;
	if (res.read != len) {
		cbor_decref(&item);
		goto bad;
	}
	*ret = item;
	return 0;
bad:
	if (item)
		cbor_decref(&item);
	return -EBADMSG;
}

static bool key_is(const cbor_item_t *k, const char *key)
{
	size_t n = strlen(key);

	if (!cbor_isa_string(k) || !cbor_string_is_definite(k))
		return false;
	return cbor_string_length(k) == n &&
	       memcmp(cbor_string_handle(k), key, n) == 0;
}

const cbor_item_t *smp_cbor_map_get(const cbor_item_t *map, const char *key)
{
	struct cbor_pair *pairs;
	size_t n;

	if (!map || !cbor_isa_map(map))
		return NULL;
	pairs = cbor_map_handle(map);
	n = cbor_map_size(map);
	for (size_t i = 0; i < n; i++)
		if (key_is(pairs[i].key, key))
			return pairs[i].value;
	return NULL;
}
