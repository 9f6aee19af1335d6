/* SPDX-License-Identifier: MIT */
/* CBOR helpers over libcbor (see cbor-util.h). */
#include "codec/cbor-util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define NO_CHUNKS 0xff

/* One open container while pre-scanning encoded CBOR. */
struct scan_frame {
	uint64_t left;    /* items still expected (definite containers) */
	bool indef;
	bool odd;         /* indefinite map: odd number of items so far */
	bool is_map;
	uint8_t chunk_mt; /* indefinite string: major type its chunks must have */
};

/* Reads the argument of a head whose additional info is ai. */
static int read_arg(const uint8_t *buf, size_t len, size_t *pos, uint8_t ai,
		    uint64_t *ret)
{
	uint64_t v = 0;
	size_t n;

	if (ai < 24) {
		*ret = ai;
		return 0;
	}
	if (ai > 27)
		return -EBADMSG;
	n = (size_t)1 << (ai - 24);
	if (len - *pos < n)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | buf[*pos + i];
	*pos += n;
	*ret = v;
	return 0;
}

static int scan_push(struct scan_frame *st, size_t *sp, struct scan_frame f)
{
	if (*sp >= SMP_CBOR_MAX_DEPTH)
		return -EBADMSG;
	st[(*sp)++] = f;
	return 0;
}

/*
 * Handles one head of a definite item (ai != 31). Returns 1 when it opened
 * a container (items follow), 0 when the item is complete, or -EBADMSG.
 * Declared lengths are checked against the bytes left: every array element
 * takes at least one byte and every map pair two, so libcbor's
 * preallocation stays proportional to the input.
 */
static int scan_head(const uint8_t *buf, size_t len, size_t *pos, uint8_t b,
		     struct scan_frame *st, size_t *sp)
{
	uint8_t mt = b >> 5, ai = b & 31;
	uint64_t arg;
	size_t rem;

	if (read_arg(buf, len, pos, ai, &arg) < 0)
		return -EBADMSG;
	rem = len - *pos;
	switch (mt) {
	case 2:
	case 3:
		if (arg > rem)
			return -EBADMSG;
		*pos += (size_t)arg;
		return 0;
	case 4:
		if (arg > rem)
			return -EBADMSG;
		if (!arg)
			return 0;
		return scan_push(st, sp, (struct scan_frame){ .left = arg,
			.chunk_mt = NO_CHUNKS }) < 0 ? -EBADMSG : 1;
	case 5:
		if (arg > rem / 2)
			return -EBADMSG;
		if (!arg)
			return 0;
		return scan_push(st, sp, (struct scan_frame){ .left = 2 * arg,
			.is_map = true, .chunk_mt = NO_CHUNKS }) < 0 ? -EBADMSG : 1;
	case 6:
		/* libcbor 0.8 cannot decode the one-byte heads c6..d4 that it
		 * encodes tags 6..20 with: refuse these tags in any form so a
		 * decoded item always re-encodes to something decodable. */
		if (arg >= 6 && arg <= 20)
			return -EBADMSG;
		return scan_push(st, sp, (struct scan_frame){ .left = 1,
			.chunk_mt = NO_CHUNKS }) < 0 ? -EBADMSG : 1;
	case 7:
		/* Only false/true/null/undefined and floats: libcbor 0.8
		 * cannot decode other simple values (and f8 < 32 is not
		 * well-formed, RFC 8949 3.3). */
		return ai < 20 || ai == 24 ? -EBADMSG : 0;
	default:
		return 0;
	}
}

/* An item just ended: close every definite container it completes.
 * Returns true when the top-level item is complete. */
static bool scan_complete(struct scan_frame *st, size_t *sp)
{
	while (*sp) {
		struct scan_frame *top = &st[*sp - 1];

		if (top->indef) {
			top->odd = !top->odd;
			return false;
		}
		if (--top->left)
			return false;
		(*sp)--;
	}
	return true;
}

int smp_cbor_check(const uint8_t *buf, size_t len)
{
	struct scan_frame st[SMP_CBOR_MAX_DEPTH];
	size_t sp = 0, pos = 0;

	if (!buf || !len)
		return -EBADMSG;
	for (;;) {
		struct scan_frame *top = sp ? &st[sp - 1] : NULL;
		uint8_t b, mt;
		int r;

		if (pos >= len)
			return -EBADMSG;
		b = buf[pos++];
		mt = b >> 5;
		if (b == 0xff) {
			/* Break: closes an indefinite container. */
			if (!top || !top->indef || (top->is_map && top->odd))
				return -EBADMSG;
			sp--;
		} else if (top && top->chunk_mt != NO_CHUNKS &&
			   (mt != top->chunk_mt || (b & 31) == 31)) {
			return -EBADMSG; /* chunks: definite, same type */
		} else if ((b & 31) == 31) {
			if (mt < 2 || mt > 5)
				return -EBADMSG;
			if (scan_push(st, &sp, (struct scan_frame){
				    .indef = true, .is_map = mt == 5,
				    .chunk_mt = mt <= 3 ? mt : NO_CHUNKS }) < 0)
				return -EBADMSG;
			continue;
		} else {
			r = scan_head(buf, len, &pos, b, st, &sp);
			if (r < 0)
				return r;
			if (r > 0)
				continue;
		}
		if (scan_complete(st, &sp))
			return pos == len ? 0 : -EBADMSG;
	}
}

int smp_cbor_decode(const uint8_t *buf, size_t len, cbor_item_t **ret)
{
	struct cbor_load_result res;
	cbor_item_t *item;

	if (smp_cbor_check(buf, len) < 0)
		return -EBADMSG;
	item = cbor_load(buf, len, &res);
	if (!item || res.error.code != CBOR_ERR_NONE || res.read != len) {
		if (item)
			cbor_decref(&item);
		return -EBADMSG;
	}
	*ret = item;
	return 0;
}

/* --- strings: definite or chunked, text or bytes ------------------------ */

static bool str_definite(const cbor_item_t *s)
{
	return cbor_isa_string(s) ? cbor_string_is_definite(s)
				  : cbor_bytestring_is_definite(s);
}

static size_t str_def_len(const cbor_item_t *s)
{
	return cbor_isa_string(s) ? cbor_string_length(s)
				  : cbor_bytestring_length(s);
}

static const uint8_t *str_def_ptr(const cbor_item_t *s)
{
	return cbor_isa_string(s) ? cbor_string_handle(s)
				  : cbor_bytestring_handle(s);
}

static size_t str_nchunks(const cbor_item_t *s)
{
	return cbor_isa_string(s) ? cbor_string_chunk_count(s)
				  : cbor_bytestring_chunk_count(s);
}

static cbor_item_t **str_chunks(const cbor_item_t *s)
{
	return cbor_isa_string(s) ? cbor_string_chunks_handle(s)
				  : cbor_bytestring_chunks_handle(s);
}

int smp_cbor_string_len(const cbor_item_t *item, size_t *ret)
{
	size_t n = 0;

	if (!item || (!cbor_isa_string(item) && !cbor_isa_bytestring(item)))
		return -EBADMSG;
	if (str_definite(item)) {
		n = str_def_len(item);
	} else {
		cbor_item_t **c = str_chunks(item);

		for (size_t i = 0; i < str_nchunks(item); i++)
			n += str_def_len(c[i]);
	}
	*ret = n;
	return 0;
}

void smp_cbor_string_copy(const cbor_item_t *item, uint8_t *out)
{
	cbor_item_t **c;
	size_t n;

	if (str_definite(item)) {
		n = str_def_len(item);
		if (n)
			memcpy(out, str_def_ptr(item), n);
		return;
	}
	c = str_chunks(item);
	for (size_t i = 0; i < str_nchunks(item); i++) {
		n = str_def_len(c[i]);
		if (n)
			memcpy(out, str_def_ptr(c[i]), n);
		out += n;
	}
}

static bool key_is(const cbor_item_t *k, const char *key, size_t n)
{
	cbor_item_t **c;
	size_t off = 0;

	if (!cbor_isa_string(k))
		return false;
	if (cbor_string_is_definite(k))
		return cbor_string_length(k) == n &&
		       (!n || memcmp(cbor_string_handle(k), key, n) == 0);
	c = cbor_string_chunks_handle(k);
	for (size_t i = 0; i < cbor_string_chunk_count(k); i++) {
		size_t cl = cbor_string_length(c[i]);

		if (cl > n - off ||
		    (cl && memcmp(cbor_string_handle(c[i]), key + off, cl)))
			return false;
		off += cl;
	}
	return off == n;
}

const cbor_item_t *smp_cbor_map_get(const cbor_item_t *map, const char *key)
{
	struct cbor_pair *pairs;
	size_t n, klen;

	if (!map || !key || !cbor_isa_map(map))
		return NULL;
	pairs = cbor_map_handle(map);
	n = cbor_map_size(map);
	klen = strlen(key);
	for (size_t i = 0; i < n; i++)
		if (key_is(pairs[i].key, key, klen))
			return pairs[i].value;
	return NULL;
}

/* --- typed getters -------------------------------------------------------- */

int smp_cbor_item_uint(const cbor_item_t *item, uint64_t *ret)
{
	if (!item || !cbor_isa_uint(item))
		return -EBADMSG;
	*ret = cbor_get_int(item);
	return 0;
}

int smp_cbor_item_int(const cbor_item_t *item, int64_t *ret)
{
	uint64_t v;

	if (!item || (!cbor_isa_uint(item) && !cbor_isa_negint(item)))
		return -EBADMSG;
	v = cbor_get_int(item);
	if (v > INT64_MAX)
		return -EBADMSG;
	*ret = cbor_isa_uint(item) ? (int64_t)v : -1 - (int64_t)v;
	return 0;
}

int smp_cbor_get_uint(const cbor_item_t *map, const char *key, uint64_t *ret)
{
	const cbor_item_t *v = smp_cbor_map_get(map, key);

	return v ? smp_cbor_item_uint(v, ret) : -ENOENT;
}

int smp_cbor_get_int(const cbor_item_t *map, const char *key, int64_t *ret)
{
	const cbor_item_t *v = smp_cbor_map_get(map, key);

	return v ? smp_cbor_item_int(v, ret) : -ENOENT;
}

int smp_cbor_get_bool(const cbor_item_t *map, const char *key, bool *ret)
{
	const cbor_item_t *v = smp_cbor_map_get(map, key);

	if (!v)
		return -ENOENT;
	/* libcbor 0.8's cbor_is_bool() asserts on a float: check ctrl first */
	if (!cbor_isa_float_ctrl(v) || !cbor_float_ctrl_is_ctrl(v) ||
	    !cbor_is_bool(v))
		return -EBADMSG;
	*ret = cbor_get_bool(v);
	return 0;
}

/* Finds a string value of the wanted kind and its total length. */
static int get_str(const cbor_item_t *map, const char *key, bool text,
		   const cbor_item_t **ret, size_t *ret_len)
{
	const cbor_item_t *v = smp_cbor_map_get(map, key);

	if (!v)
		return -ENOENT;
	if (text ? !cbor_isa_string(v) : !cbor_isa_bytestring(v))
		return -EBADMSG;
	*ret = v;
	return smp_cbor_string_len(v, ret_len);
}

static int get_copy(const cbor_item_t *map, const char *key, bool text,
		    uint8_t *buf, size_t size, size_t *ret_len)
{
	const cbor_item_t *v;
	size_t n;
	int r;

	r = get_str(map, key, text, &v, &n);
	if (r < 0)
		return r;
	if (n + text > size)
		return -ENOBUFS;
	smp_cbor_string_copy(v, buf);
	if (text)
		buf[n] = '\0';
	if (ret_len)
		*ret_len = n;
	return 0;
}

static int get_dup(const cbor_item_t *map, const char *key, bool text,
		   uint8_t **ret, size_t *ret_len)
{
	const cbor_item_t *v;
	uint8_t *buf;
	size_t n;
	int r;

	r = get_str(map, key, text, &v, &n);
	if (r < 0)
		return r;
	buf = xmalloc(n + 1);
	smp_cbor_string_copy(v, buf);
	buf[n] = '\0';
	*ret = buf;
	if (ret_len)
		*ret_len = n;
	return 0;
}

static int get_ref(const cbor_item_t *map, const char *key, bool text,
		   const uint8_t **ret, size_t *ret_len)
{
	static const uint8_t empty[1];
	const cbor_item_t *v;
	const uint8_t *p = empty;
	size_t n;
	int r;

	r = get_str(map, key, text, &v, &n);
	if (r < 0)
		return r;
	if (!str_definite(v)) {
		if (str_nchunks(v) > 1)
			return -EMSGSIZE;
		if (str_nchunks(v) == 1)
			v = str_chunks(v)[0];
	}
	if (str_definite(v) && str_def_len(v))
		p = str_def_ptr(v);
	*ret = p;
	if (ret_len)
		*ret_len = n;
	return 0;
}

int smp_cbor_get_text(const cbor_item_t *map, const char *key, char *buf,
		      size_t size, size_t *ret_len)
{
	return get_copy(map, key, true, (uint8_t *)buf, size, ret_len);
}

int smp_cbor_get_text_dup(const cbor_item_t *map, const char *key, char **ret,
			  size_t *ret_len)
{
	return get_dup(map, key, true, (uint8_t **)ret, ret_len);
}

int smp_cbor_get_bytes(const cbor_item_t *map, const char *key, uint8_t *buf,
		       size_t size, size_t *ret_len)
{
	return get_copy(map, key, false, buf, size, ret_len);
}

int smp_cbor_get_bytes_dup(const cbor_item_t *map, const char *key,
			   uint8_t **ret, size_t *ret_len)
{
	return get_dup(map, key, false, ret, ret_len);
}

int smp_cbor_get_text_ref(const cbor_item_t *map, const char *key,
			  const char **ret, size_t *ret_len)
{
	return get_ref(map, key, true, (const uint8_t **)ret, ret_len);
}

int smp_cbor_get_bytes_ref(const cbor_item_t *map, const char *key,
			   const uint8_t **ret, size_t *ret_len)
{
	return get_ref(map, key, false, ret, ret_len);
}

/* --- builders --------------------------------------------------------------- */

cbor_item_t *smp_cbor_build_uint(uint64_t v)
{
	if (v <= UINT8_MAX)
		return cbor_build_uint8((uint8_t)v);
	if (v <= UINT16_MAX)
		return cbor_build_uint16((uint16_t)v);
	if (v <= UINT32_MAX)
		return cbor_build_uint32((uint32_t)v);
	return cbor_build_uint64(v);
}

cbor_item_t *smp_cbor_build_negint(uint64_t n)
{
	if (n <= UINT8_MAX)
		return cbor_build_negint8((uint8_t)n);
	if (n <= UINT16_MAX)
		return cbor_build_negint16((uint16_t)n);
	if (n <= UINT32_MAX)
		return cbor_build_negint32((uint32_t)n);
	return cbor_build_negint64(n);
}

cbor_item_t *smp_cbor_build_int(int64_t v)
{
	if (v >= 0)
		return smp_cbor_build_uint((uint64_t)v);
	/* -1 - v without overflow at INT64_MIN */
	return smp_cbor_build_negint((uint64_t)(-(v + 1)));
}

static cbor_item_t *checked(cbor_item_t *item)
{
	if (!item)
		abort(); /* libcbor allocation failure, as xmalloc does */
	return item;
}

cbor_item_t *smp_cbor_map_new(void)
{
	return checked(cbor_new_definite_map(4));
}

cbor_item_t *smp_cbor_map_new_indefinite(void)
{
	return checked(cbor_new_indefinite_map());
}

cbor_item_t *smp_cbor_array_new(void)
{
	return checked(cbor_new_definite_array(4));
}

cbor_item_t *smp_cbor_array_new_indefinite(void)
{
	return checked(cbor_new_indefinite_array());
}

/*
 * libcbor 0.8 refuses to add to a full definite container (it grows only
 * indefinite ones). A definite container encodes its current size, not its
 * capacity, so growing the storage the same way libcbor grows indefinite
 * ones (realloc of item->data, libcbor's default allocator) keeps a
 * definite encoding for built requests.
 */
static void grow_definite(cbor_item_t *item, size_t elem_size,
			  size_t *allocated, size_t end_ptr)
{
	size_t cap;

	if (end_ptr < *allocated)
		return;
	cap = *allocated ? *allocated * 2 : 4;
	item->data = xrealloc(item->data, cap * elem_size);
	*allocated = cap;
}

int smp_cbor_map_put_pair(cbor_item_t *map, cbor_item_t *key,
			  cbor_item_t *value)
{
	bool done = false;

	if (map && key && value && cbor_isa_map(map)) {
		if (cbor_map_is_definite(map))
			grow_definite(map, sizeof(struct cbor_pair),
				      &map->metadata.map_metadata.allocated,
				      map->metadata.map_metadata.end_ptr);
		done = cbor_map_add(map, (struct cbor_pair){ key, value });
	}
	if (key)
		cbor_decref(&key);
	if (value)
		cbor_decref(&value);
	return done ? 0 : -EINVAL;
}

int smp_cbor_map_put_item(cbor_item_t *map, const char *key,
			  cbor_item_t *value)
{
	return smp_cbor_map_put_pair(map, checked(cbor_build_string(key)),
				     value);
}

int smp_cbor_map_put_uint(cbor_item_t *map, const char *key, uint64_t v)
{
	return smp_cbor_map_put_item(map, key, checked(smp_cbor_build_uint(v)));
}

int smp_cbor_map_put_int(cbor_item_t *map, const char *key, int64_t v)
{
	return smp_cbor_map_put_item(map, key, checked(smp_cbor_build_int(v)));
}

int smp_cbor_map_put_bool(cbor_item_t *map, const char *key, bool v)
{
	return smp_cbor_map_put_item(map, key, checked(cbor_build_bool(v)));
}

int smp_cbor_map_put_text(cbor_item_t *map, const char *key, const char *v)
{
	return smp_cbor_map_put_textn(map, key, v, strlen(v));
}

int smp_cbor_map_put_textn(cbor_item_t *map, const char *key, const char *v,
			   size_t len)
{
	return smp_cbor_map_put_item(map, key,
				     checked(cbor_build_stringn(len ? v : "", len)));
}

int smp_cbor_map_put_bytes(cbor_item_t *map, const char *key,
			   const uint8_t *v, size_t len)
{
	static const uint8_t empty[1];

	return smp_cbor_map_put_item(map, key,
		checked(cbor_build_bytestring(len ? v : empty, len)));
}

int smp_cbor_array_push(cbor_item_t *array, cbor_item_t *item)
{
	bool done = false;

	if (array && item && cbor_isa_array(array)) {
		if (cbor_array_is_definite(array))
			grow_definite(array, sizeof(cbor_item_t *),
				      &array->metadata.array_metadata.allocated,
				      array->metadata.array_metadata.end_ptr);
		done = cbor_array_push(array, item);
	}
	if (item)
		cbor_decref(&item);
	return done ? 0 : -EINVAL;
}

/* --- encoding --------------------------------------------------------------- */

int smp_cbor_encode(const cbor_item_t *item, uint8_t **ret, size_t *ret_len)
{
	/* libcbor 0.8 cannot tell the size up front: double until it fits. */
	for (size_t size = 256; size <= SMP_CBOR_MAX_ENCODED; size *= 2) {
		uint8_t *buf = xmalloc(size);
		size_t n = cbor_serialize(item, buf, size);

		if (n) {
			*ret = buf;
			*ret_len = n;
			return 0;
		}
		free(buf);
	}
	return -EMSGSIZE;
}

int smp_cbor_encode_buf(const cbor_item_t *item, uint8_t *buf, size_t size)
{
	size_t n;

	n = cbor_serialize(item, buf, MIN(size, (size_t)INT_MAX));
	return n ? (int)n : -ENOBUFS;
}

int smp_frame_build(const struct smp_hdr *hdr, const cbor_item_t *body,
		    uint8_t **ret, size_t *ret_len)
{
	static const uint8_t empty_map[] = { 0xa0 };
	struct smp_hdr h = *hdr;
	uint8_t *payload = NULL, *out;
	const uint8_t *p = empty_map;
	size_t n = sizeof(empty_map);
	int r;

	if (body) {
		r = smp_cbor_encode(body, &payload, &n);
		if (r < 0)
			return r;
		p = payload;
	}
	if (n > UINT16_MAX) {
		free(payload);
		return -EMSGSIZE;
	}
	out = xmalloc(SMP_HDR_LEN + n);
	h.len = (uint16_t)n;
	smp_hdr_encode(&h, out);
	memcpy(out + SMP_HDR_LEN, p, n);
	free(payload);
	*ret = out;
	*ret_len = SMP_HDR_LEN + n;
	return 0;
}
