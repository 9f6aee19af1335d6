/* SPDX-License-Identifier: MIT */
/* libcbor encoder/decoder of the smpgw health response (usergroup-cbor.h). */
#include "smpgw/usergroup-cbor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec/cbor-util.h"

static void map_put(cbor_item_t *map, const char *key, cbor_item_t *val)
{
	cbor_item_t *k = cbor_build_string(key);

	/* cbor_map_add copies the references; a definite map sized for all
	 * keys cannot run out of room, and allocation failure aborts below. */
	if (!k || !val || !cbor_map_add(map, (struct cbor_pair){ .key = k, .value = val }))
		abort();
	cbor_decref(&k);
	cbor_decref(&val);
}

/* Smallest width, as zcbor writes it: keeps sim and watch byte-identical. */
static cbor_item_t *uint_item(uint32_t v)
{
	if (v <= UINT8_MAX)
		return cbor_build_uint8((uint8_t)v);
	if (v <= UINT16_MAX)
		return cbor_build_uint16((uint16_t)v);
	return cbor_build_uint32(v);
}

cbor_item_t *smpgw_health_to_cbor(const struct smpgw_health *h)
{
	cbor_item_t *map;

	if (smpgw_health_validate(h) < 0)
		return NULL;
	map = cbor_new_definite_map(SMPGW_HEALTH_NKEYS);
	if (!map)
		abort();
	map_put(map, SMPGW_HEALTH_KEY_BATTERY_PCT, uint_item(h->battery_pct));
	map_put(map, SMPGW_HEALTH_KEY_BATTERY_MV, uint_item(h->battery_mv));
	map_put(map, SMPGW_HEALTH_KEY_RESET_CAUSE,
		cbor_build_string(smpgw_reset_cause_name(h->reset_cause)));
	map_put(map, SMPGW_HEALTH_KEY_BOOT_COUNT, uint_item(h->boot_count));
	map_put(map, SMPGW_HEALTH_KEY_UPTIME, uint_item(h->uptime_s));
	map_put(map, SMPGW_HEALTH_KEY_CONFIRMED, cbor_build_bool(h->confirmed));
	map_put(map, SMPGW_HEALTH_KEY_SELF_CHECK, cbor_build_bool(h->self_check));
	return map;
}

int smpgw_health_encode(const struct smpgw_health *h, uint8_t *buf, size_t size)
{
	cbor_item_t *map = smpgw_health_to_cbor(h);
	size_t n;

	if (!map)
		return -EINVAL;
	n = cbor_serialize(map, buf, size);
	cbor_decref(&map);
	if (n == 0 || n > (size_t)INT32_MAX)
		return -ENOBUFS;
	return (int)n;
}

static int get_uint(const cbor_item_t *map, const char *key, uint32_t max, uint32_t *ret)
{
	const cbor_item_t *v = smp_cbor_map_get(map, key);
	uint64_t x;

	if (!v || !cbor_isa_uint(v))
		return -EBADMSG;
	x = cbor_get_int(v);
	if (x > max)
		return -EBADMSG;
	*ret = (uint32_t)x;
	return 0;
}

static int get_bool(const cbor_item_t *map, const char *key, bool *ret)
{
	const cbor_item_t *v = smp_cbor_map_get(map, key);

	/* libcbor's cbor_is_bool() asserts on floats: check the width first. */
	if (!v || !cbor_isa_float_ctrl(v) || cbor_float_get_width(v) != CBOR_FLOAT_0 ||
	    !cbor_is_bool(v))
		return -EBADMSG;
	*ret = cbor_get_bool(v);
	return 0;
}

/* Copies a text string (definite, or indefinite with chunks) into out;
 * longer than any known name means "other". */
static int get_cause(const cbor_item_t *map, enum smpgw_reset_cause *ret)
{
	const cbor_item_t *v = smp_cbor_map_get(map, SMPGW_HEALTH_KEY_RESET_CAUSE);
	char name[32];
	size_t n = 0;

	if (!v || !cbor_isa_string(v))
		return -EBADMSG;
	if (cbor_string_is_definite(v)) {
		n = cbor_string_length(v);
		*ret = smpgw_reset_cause_from_name((const char *)cbor_string_handle(v), n);
		return 0;
	}
	for (size_t i = 0; i < cbor_string_chunk_count(v); i++) {
		const cbor_item_t *c = cbor_string_chunks_handle((cbor_item_t *)v)[i];
		size_t cl = cbor_string_length(c);

		if (cl > sizeof(name) - n) {
			*ret = SMPGW_RESET_OTHER;
			return 0;
		}
		memcpy(name + n, cbor_string_handle(c), cl);
		n += cl;
	}
	*ret = smpgw_reset_cause_from_name(name, n);
	return 0;
}

int smpgw_health_from_cbor(const cbor_item_t *map, struct smpgw_health *ret)
{
	struct smpgw_health h = { 0 };
	uint32_t pct, mv;

	if (!map || !cbor_isa_map(map))
		return -EBADMSG;
	if (get_uint(map, SMPGW_HEALTH_KEY_BATTERY_PCT, UINT8_MAX, &pct) < 0 ||
	    get_uint(map, SMPGW_HEALTH_KEY_BATTERY_MV, SMPGW_BATTERY_MV_MAX, &mv) < 0 ||
	    get_cause(map, &h.reset_cause) < 0 ||
	    get_uint(map, SMPGW_HEALTH_KEY_BOOT_COUNT, UINT32_MAX, &h.boot_count) < 0 ||
	    get_uint(map, SMPGW_HEALTH_KEY_UPTIME, UINT32_MAX, &h.uptime_s) < 0 ||
	    get_bool(map, SMPGW_HEALTH_KEY_CONFIRMED, &h.confirmed) < 0 ||
	    get_bool(map, SMPGW_HEALTH_KEY_SELF_CHECK, &h.self_check) < 0)
		return -EBADMSG;
	h.battery_pct = (uint8_t)pct;
	h.battery_mv = (uint16_t)mv;
	if (smpgw_health_validate(&h) < 0)
		return -EBADMSG;
	if (ret)
		*ret = h;
	return 0;
}

int smpgw_health_decode(const uint8_t *buf, size_t len, struct smpgw_health *ret)
{
	cbor_item_t *item;
	int r;

	r = smp_cbor_decode(buf, len, &item);
	if (r < 0)
		return -EBADMSG;
	r = smpgw_health_from_cbor(item, ret);
	cbor_decref(&item);
	return r;
}
