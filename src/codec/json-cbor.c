/* SPDX-License-Identifier: MIT */
/* Lossless JSON form of CBOR (see json-cbor.h and docs/json-cbor.md). */
#include "codec/json-cbor.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/base64.h"
#include "codec/cbor-util.h"
#include "util/util.h"

#define MAX_DEPTH SMP_JSON_CBOR_MAX_DEPTH
/* "18446744073709551616" plus sign and NUL */
#define DEC_BUF 24

static cbor_item_t *must(cbor_item_t *item)
{
	if (!item)
		abort(); /* libcbor allocation failure, as xmalloc does */
	return item;
}

/* ========================= JSON -> CBOR ================================== */

static int j2c(const json_t *j, int depth, cbor_item_t **ret);

/* Strict unsigned decimal: digits only, fits uint64. */
static int parse_u64(const char *s, size_t len, uint64_t *ret)
{
	uint64_t v = 0;

	if (!len || len != strlen(s))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

/* A uint given as a JSON integer >= 0 or a decimal string. */
static int json_u64(const json_t *v, uint64_t *ret)
{
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return -EINVAL;
		*ret = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v))
		return parse_u64(json_string_value(v), json_string_length(v), ret);
	return -EINVAL;
}

/* "-<m>" with m in 1..2^64: CBOR negint argument m - 1. */
static int parse_negint(const char *s, size_t len, uint64_t *ret)
{
	char digits[DEC_BUF];
	size_t n;

	if (len < 2 || len != strlen(s) || s[0] != '-')
		return -EINVAL;
	/* strip leading zeros so the length check below is exact */
	s++, len--;
	while (len > 1 && s[0] == '0')
		s++, len--;
	if (len >= sizeof(digits))
		return -EINVAL;
	memcpy(digits, s, len);
	digits[len] = '\0';
	/* decrement the decimal string: m - 1 fits uint64 when m <= 2^64 */
	for (n = len; n-- > 0;) {
		if (digits[n] < '0' || digits[n] > '9')
			return -EINVAL;
		if (digits[n] != '0') {
			digits[n]--;
			break;
		}
		digits[n] = '9';
	}
	if (n == (size_t)-1)
		return -EINVAL; /* m was 0 */
	for (size_t i = 0; i < n; i++)
		if (digits[i] < '0' || digits[i] > '9')
			return -EINVAL;
	return parse_u64(digits, len, ret);
}

/* Exactly representable as a normal IEEE half (or zero/inf)? */
static bool fits_half(float f)
{
	float m, a = fabsf(f);
	int e;

	if (a == 0.0f || isinf(f))
		return true;
	if (a < 0x1p-14f || a > 65504.0f)
		return false; /* subnormal halves: libcbor 0.8 encodes them lossily */
	m = frexpf(a, &e);
	m = ldexpf(m, 11);
	return m == truncf(m);
}

static cbor_item_t *build_float(double d)
{
	float f = (float)d;

	if (isnan(d))
		return must(cbor_build_float2(NAN));
	if ((double)f == d) {
		if (fits_half(f))
			return must(cbor_build_float2(f));
		return must(cbor_build_float4(f));
	}
	return must(cbor_build_float8(d));
}

static int form_bytes(const json_t *v, bool b64, cbor_item_t **ret)
{
	const char *s = json_string_value(v);
	size_t len = json_string_length(v), cap;
	uint8_t *buf;
	int n;

	if (!s)
		return -EINVAL;
	cap = b64 ? len / 4 * 3 + 3 : len / 2 + 1;
	buf = xmalloc(cap);
	if (b64)
		n = base64_decode(s, len, buf, cap);
	else
		n = (len % 2 || strlen(s) != len) ? -EINVAL
						  : hex_decode(s, buf, cap);
	if (n < 0 || (!b64 && (size_t)n != len / 2)) {
		free(buf);
		return -EINVAL;
	}
	*ret = must(cbor_build_bytestring(buf, (size_t)n));
	free(buf);
	return 0;
}

static int form_float(const json_t *v, cbor_item_t **ret)
{
	const char *s = json_string_value(v);

	if (json_is_number(v)) {
		*ret = build_float(json_number_value(v));
		return 0;
	}
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "nan"))
		*ret = build_float(NAN);
	else if (!strcmp(s, "inf"))
		*ret = build_float(INFINITY);
	else if (!strcmp(s, "-inf"))
		*ret = build_float(-INFINITY);
	else
		return -EINVAL;
	return 0;
}

static int form_simple(const json_t *v, cbor_item_t **ret)
{
	json_int_t n;

	if (!json_is_integer(v))
		return -EINVAL;
	n = json_integer_value(v);
	/* 24..31 have no well-formed encoding (RFC 8949 3.3) */
	if (n < 0 || n > 255 || (n >= 24 && n < 32))
		return -EINVAL;
	*ret = must(cbor_build_ctrl((uint8_t)n));
	return 0;
}

static int form_map(const json_t *v, int depth, cbor_item_t **ret)
{
	cbor_item_t *map;
	size_t i;
	json_t *pair;

	if (!json_is_array(v))
		return -EINVAL;
	if (depth >= MAX_DEPTH)
		return -E2BIG;
	map = must(cbor_new_definite_map(json_array_size(v)));
	json_array_foreach(v, i, pair) {
		cbor_item_t *k, *val;
		int r;

		if (!json_is_array(pair) || json_array_size(pair) != 2) {
			cbor_decref(&map);
			return -EINVAL;
		}
		r = j2c(json_array_get(pair, 0), depth + 1, &k);
		if (r < 0) {
			cbor_decref(&map);
			return r;
		}
		r = j2c(json_array_get(pair, 1), depth + 1, &val);
		if (r < 0) {
			cbor_decref(&k);
			cbor_decref(&map);
			return r;
		}
		smp_cbor_map_put_pair(map, k, val);
	}
	*ret = map;
	return 0;
}

static int form_tag(const json_t *j, int depth, cbor_item_t **ret)
{
	const json_t *value = json_object_get(j, "value");
	cbor_item_t *tag, *inner;
	uint64_t n;
	int r;

	if (!value || json_object_size(j) != 2 ||
	    json_u64(json_object_get(j, "$tag"), &n) < 0)
		return -EINVAL;
	if (n >= 6 && n <= 20)
		return -EINVAL; /* libcbor 0.8 cannot decode them back */
	if (depth >= MAX_DEPTH)
		return -E2BIG;
	r = j2c(value, depth + 1, &inner);
	if (r < 0)
		return r;
	tag = must(cbor_new_tag(n));
	cbor_tag_set_item(tag, inner);
	cbor_decref(&inner);
	*ret = tag;
	return 0;
}

/* An object with a '$' key: one of the documented forms or -EINVAL. */
static int j2c_form(const json_t *j, int depth, cbor_item_t **ret)
{
	void *it = json_object_iter((json_t *)j);
	const char *name = json_object_iter_key(it);
	const json_t *v = json_object_iter_value(it);
	uint64_t n;

	if (json_object_get(j, "$tag"))
		return form_tag(j, depth, ret);
	if (json_object_size(j) != 1)
		return -EINVAL;
	if (!strcmp(name, "$bytes") || !strcmp(name, "$base64"))
		return form_bytes(v, !strcmp(name, "$base64"), ret);
	if (!strcmp(name, "$uint")) {
		if (json_u64(v, &n) < 0)
			return -EINVAL;
		*ret = must(smp_cbor_build_uint(n));
		return 0;
	}
	if (!strcmp(name, "$negint")) {
		if (!json_is_string(v) ||
		    parse_negint(json_string_value(v), json_string_length(v), &n) < 0)
			return -EINVAL;
		*ret = must(smp_cbor_build_negint(n));
		return 0;
	}
	if (!strcmp(name, "$float"))
		return form_float(v, ret);
	if (!strcmp(name, "$undefined")) {
		if (!json_is_true(v))
			return -EINVAL;
		*ret = must(cbor_new_undef());
		return 0;
	}
	if (!strcmp(name, "$simple"))
		return form_simple(v, ret);
	if (!strcmp(name, "$map"))
		return form_map(v, depth, ret);
	return -EINVAL;
}

static bool has_dollar_key(const json_t *j)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)j, key, v)
		if (key[0] == '$')
			return true;
	return false;
}

static int j2c_object(const json_t *j, int depth, cbor_item_t **ret)
{
	cbor_item_t *map;
	void *it;

	if (has_dollar_key(j))
		return j2c_form(j, depth, ret);
	if (depth >= MAX_DEPTH)
		return -E2BIG;
	map = must(cbor_new_definite_map(json_object_size(j)));
	for (it = json_object_iter((json_t *)j); it;
	     it = json_object_iter_next((json_t *)j, it)) {
		const char *key = json_object_iter_key(it);
		size_t klen = json_object_iter_key_len(it);
		cbor_item_t *v;
		int r;

		r = j2c(json_object_iter_value(it), depth + 1, &v);
		if (r < 0) {
			cbor_decref(&map);
			return r;
		}
		smp_cbor_map_put_pair(map, must(cbor_build_stringn(key, klen)), v);
	}
	*ret = map;
	return 0;
}

static int j2c_array(const json_t *j, int depth, cbor_item_t **ret)
{
	cbor_item_t *arr;
	json_t *e;
	size_t i;

	if (depth >= MAX_DEPTH)
		return -E2BIG;
	arr = must(cbor_new_definite_array(json_array_size(j)));
	json_array_foreach(j, i, e) {
		cbor_item_t *v;
		int r = j2c(e, depth + 1, &v);

		if (r < 0) {
			cbor_decref(&arr);
			return r;
		}
		smp_cbor_array_push(arr, v);
	}
	*ret = arr;
	return 0;
}

static int j2c(const json_t *j, int depth, cbor_item_t **ret)
{
	if (!j)
		return -EINVAL;
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return j2c_object(j, depth, ret);
	case JSON_ARRAY:
		return j2c_array(j, depth, ret);
	case JSON_STRING:
		*ret = must(cbor_build_stringn(json_string_value(j),
					       json_string_length(j)));
		return 0;
	case JSON_INTEGER:
		*ret = must(smp_cbor_build_int(json_integer_value(j)));
		return 0;
	case JSON_REAL:
		*ret = build_float(json_real_value(j));
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		*ret = must(cbor_build_bool(json_is_true(j)));
		return 0;
	case JSON_NULL:
		*ret = must(cbor_new_null());
		return 0;
	}
	return -EINVAL;
}

int smp_json_to_cbor(const json_t *json, cbor_item_t **ret)
{
	return j2c(json, 0, ret);
}

/* ========================= CBOR -> JSON ================================== */

static int c2j(const cbor_item_t *it, int depth, json_t **ret);

static json_t *form1(const char *name, json_t *v)
{
	json_t *o = json_object();

	json_object_set_new(o, name, v);
	return o;
}

static json_t *u64_json(uint64_t v)
{
	char buf[DEC_BUF];

	if (v <= INT64_MAX)
		return json_integer((json_int_t)v);
	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return json_string(buf);
}

static json_t *negint_json(uint64_t n)
{
	char buf[DEC_BUF];
	size_t len;

	if (n <= INT64_MAX)
		return json_integer(-1 - (json_int_t)n);
	/* "-(n + 1)": add one in decimal, n + 1 may be 2^64 */
	len = (size_t)snprintf(buf + 1, sizeof(buf) - 1, "%" PRIu64, n) + 1;
	buf[0] = '-';
	for (size_t i = len; i-- > 1;) {
		if (buf[i] != '9') {
			buf[i]++;
			break;
		}
		buf[i] = '0';
		if (i == 1) { /* all nines (e.g. 9999999999999999999): carry */
			memmove(buf + 2, buf + 1, len);
			buf[1] = '1';
		}
	}
	return form1("$negint", json_string(buf));
}

/* Concatenated string bytes in a new buffer (NUL-terminated). */
static uint8_t *str_dup(const cbor_item_t *it, size_t *len)
{
	uint8_t *buf;

	smp_cbor_string_len(it, len);
	buf = xmalloc(*len + 1);
	smp_cbor_string_copy(it, buf);
	buf[*len] = '\0';
	return buf;
}

static int c2j_bytes(const cbor_item_t *it, json_t **ret)
{
	size_t len;
	uint8_t *buf = str_dup(it, &len);
	char *hex = xmalloc(2 * len + 1);

	hex_encode(buf, len, hex);
	*ret = form1("$bytes", json_stringn(hex, 2 * len));
	free(hex);
	free(buf);
	return 0;
}

static int c2j_text(const cbor_item_t *it, json_t **ret)
{
	size_t len;
	uint8_t *buf = str_dup(it, &len);
	json_t *s = json_stringn((const char *)buf, len);

	free(buf);
	if (!s)
		return -EBADMSG; /* jansson refuses invalid UTF-8 */
	*ret = s;
	return 0;
}

static int c2j_float_ctrl(const cbor_item_t *it, json_t **ret)
{
	double d;

	if (cbor_float_ctrl_is_ctrl(it)) {
		uint8_t v = cbor_ctrl_value(it);

		if (v == CBOR_CTRL_FALSE || v == CBOR_CTRL_TRUE)
			*ret = json_boolean(v == CBOR_CTRL_TRUE);
		else if (v == CBOR_CTRL_NULL)
			*ret = json_null();
		else if (v == CBOR_CTRL_UNDEF)
			*ret = form1("$undefined", json_true());
		else
			*ret = form1("$simple", json_integer(v));
		return 0;
	}
	d = cbor_float_get_float(it);
	if (isnan(d))
		*ret = form1("$float", json_string("nan"));
	else if (isinf(d))
		*ret = form1("$float", json_string(d > 0 ? "inf" : "-inf"));
	else
		*ret = json_real(d);
	return 0;
}

static int c2j_array(const cbor_item_t *it, int depth, json_t **ret)
{
	cbor_item_t **items = cbor_array_handle(it);
	json_t *arr = json_array();

	for (size_t i = 0; i < cbor_array_size(it); i++) {
		json_t *v;
		int r = c2j(items[i], depth + 1, &v);

		if (r < 0) {
			json_decref(arr);
			return r;
		}
		json_array_append_new(arr, v);
	}
	*ret = arr;
	return 0;
}

static int c2j_map_pairs(const cbor_item_t *it, int depth, json_t **ret)
{
	struct cbor_pair *pairs = cbor_map_handle(it);
	json_t *arr = json_array();

	for (size_t i = 0; i < cbor_map_size(it); i++) {
		json_t *k, *v;
		int r = c2j(pairs[i].key, depth + 1, &k);

		if (r >= 0) {
			r = c2j(pairs[i].value, depth + 1, &v);
			if (r < 0)
				json_decref(k);
		}
		if (r < 0) {
			json_decref(arr);
			return r;
		}
		json_array_append_new(arr, json_pack("[oo]", k, v));
	}
	*ret = form1("$map", arr);
	return 0;
}

/*
 * Collects the keys into obj (values null for now). Returns 1 when the map
 * needs the "$map" form (non-text, '$'-prefixed or repeated key), 0 when
 * a plain object fits, -EBADMSG for a key that is not UTF-8.
 */
static int map_keys(const cbor_item_t *it, json_t *obj)
{
	struct cbor_pair *pairs = cbor_map_handle(it);

	for (size_t i = 0; i < cbor_map_size(it); i++) {
		size_t len;
		uint8_t *key;
		int r = 0;

		if (!cbor_isa_string(pairs[i].key))
			return 1;
		key = str_dup(pairs[i].key, &len);
		if ((len && key[0] == '$') ||
		    json_object_getn(obj, (char *)key, len))
			r = 1;
		else if (json_object_setn_new(obj, (char *)key, len, json_null()))
			r = -EBADMSG;
		free(key);
		if (r)
			return r;
	}
	return 0;
}

static int c2j_map(const cbor_item_t *it, int depth, json_t **ret)
{
	struct cbor_pair *pairs = cbor_map_handle(it);
	json_t *obj = json_object();
	int r = map_keys(it, obj);

	if (r) {
		json_decref(obj);
		return r < 0 ? r : c2j_map_pairs(it, depth, ret);
	}
	for (size_t i = 0; i < cbor_map_size(it); i++) {
		size_t len;
		uint8_t *key;
		json_t *v;

		r = c2j(pairs[i].value, depth + 1, &v);
		if (r < 0) {
			json_decref(obj);
			return r;
		}
		/* replacing the placeholder keeps the key's position */
		key = str_dup(pairs[i].key, &len);
		json_object_setn_new(obj, (char *)key, len, v);
		free(key);
	}
	*ret = obj;
	return 0;
}

static int c2j_tag(const cbor_item_t *it, int depth, json_t **ret)
{
	cbor_item_t *inner = cbor_tag_item(it); /* new reference */
	json_t *v;
	int r = c2j(inner, depth + 1, &v);

	cbor_decref(&inner);
	if (r < 0)
		return r;
	*ret = json_pack("{s:o,s:o}", "$tag", u64_json(cbor_tag_value(it)),
			 "value", v);
	return 0;
}

static int c2j(const cbor_item_t *it, int depth, json_t **ret)
{
	switch (cbor_typeof(it)) {
	case CBOR_TYPE_UINT:
		*ret = cbor_get_int(it) <= INT64_MAX
			? u64_json(cbor_get_int(it))
			: form1("$uint", u64_json(cbor_get_int(it)));
		return 0;
	case CBOR_TYPE_NEGINT:
		*ret = negint_json(cbor_get_int(it));
		return 0;
	case CBOR_TYPE_BYTESTRING:
		return c2j_bytes(it, ret);
	case CBOR_TYPE_STRING:
		return c2j_text(it, ret);
	case CBOR_TYPE_FLOAT_CTRL:
		return c2j_float_ctrl(it, ret);
	case CBOR_TYPE_ARRAY:
	case CBOR_TYPE_MAP:
	case CBOR_TYPE_TAG:
		break;
	}
	if (depth >= MAX_DEPTH)
		return -E2BIG;
	switch (cbor_typeof(it)) {
	case CBOR_TYPE_ARRAY:
		return c2j_array(it, depth, ret);
	case CBOR_TYPE_MAP:
		return c2j_map(it, depth, ret);
	case CBOR_TYPE_TAG:
		return c2j_tag(it, depth, ret);
	default:
		return -EINVAL;
	}
}

int smp_cbor_to_json(const cbor_item_t *item, json_t **ret)
{
	if (!item)
		return -EINVAL;
	return c2j(item, 0, ret);
}
