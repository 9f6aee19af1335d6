/* SPDX-License-Identifier: MIT */
/*
 * CBOR helpers over libcbor (0.8) for SMP payloads: decoding with limits,
 * typed getters on maps, map/array builders, encoding and whole-frame
 * building. Decoding accepts what real Zephyr sends: indefinite-length maps,
 * arrays and strings, and repeated map keys (lookups return the first
 * match). Pure code: no I/O, no logging.
 *
 * Ownership: getters return borrowed items/pointers that live as long as the
 * map; builders' put/push functions consume the value they are given.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

#include "codec/smp.h"

/* Deepest nesting accepted: containers (array, map, indefinite string) and
 * tags each count one level; a top-level map is depth 1. libcbor frees items
 * recursively, so this also bounds its stack use. */
#define SMP_CBOR_MAX_DEPTH 32
/* Largest encoding smp_cbor_encode() will produce. */
#define SMP_CBOR_MAX_ENCODED (16u * 1024 * 1024)

/*
 * Checks that buf..len is exactly one well-formed CBOR item no deeper than
 * SMP_CBOR_MAX_DEPTH whose declared lengths fit in the buffer, without
 * allocating. Simple values other than false/true/null/undefined and tags
 * 6..20 are refused (libcbor 0.8 cannot decode them, or cannot decode its
 * own encoding of them). Returns 0 or -EBADMSG.
 */
int smp_cbor_check(const uint8_t *buf, size_t len);

/* Decodes exactly one CBOR item filling buf..len (checked with
 * smp_cbor_check() first, so hostile input cannot make libcbor allocate
 * more than a small multiple of len or nest deeply). -EBADMSG on malformed
 * input, trailing bytes or text that is not UTF-8 (libcbor checks it). On success *ret is a new reference. */
int smp_cbor_decode(const uint8_t *buf, size_t len, cbor_item_t **ret);

/* Value for text key in map (definite or indefinite map, definite or chunked
 * key), first match, or NULL. Borrowed. */
const cbor_item_t *smp_cbor_map_get(const cbor_item_t *map, const char *key);

/*
 * Typed getters on a map. Return 0, -ENOENT when the key is missing (or map
 * is not a map), -EBADMSG when the value has the wrong type or does not fit
 * the result type; *ret is untouched on failure.
 */
int smp_cbor_get_uint(const cbor_item_t *map, const char *key, uint64_t *ret);
int smp_cbor_get_int(const cbor_item_t *map, const char *key, int64_t *ret);
int smp_cbor_get_bool(const cbor_item_t *map, const char *key, bool *ret);
/* Text value copied into buf (size bytes) and NUL-terminated; chunked
 * strings are concatenated. *ret_len (optional) gets the length without the
 * NUL. -ENOBUFS when it does not fit (buf then untouched). */
int smp_cbor_get_text(const cbor_item_t *map, const char *key, char *buf,
		      size_t size, size_t *ret_len);
/* Same, into a new NUL-terminated allocation (caller frees). */
int smp_cbor_get_text_dup(const cbor_item_t *map, const char *key, char **ret,
			  size_t *ret_len);
/* Byte string value copied into buf; chunked strings concatenated.
 * -ENOBUFS when it does not fit. */
int smp_cbor_get_bytes(const cbor_item_t *map, const char *key, uint8_t *buf,
		       size_t size, size_t *ret_len);
/* Same, into a new allocation (caller frees; non-NULL even when empty). */
int smp_cbor_get_bytes_dup(const cbor_item_t *map, const char *key,
			   uint8_t **ret, size_t *ret_len);
/* Zero-copy: pointer into the item, valid while the map lives. Works for
 * definite strings and chunked strings of at most one chunk; -EMSGSIZE for
 * a string split into several chunks (use the copying getters). */
int smp_cbor_get_text_ref(const cbor_item_t *map, const char *key,
			  const char **ret, size_t *ret_len);
int smp_cbor_get_bytes_ref(const cbor_item_t *map, const char *key,
			   const uint8_t **ret, size_t *ret_len);

/* The same conversions on a bare item (e.g. an array element). */
int smp_cbor_item_uint(const cbor_item_t *item, uint64_t *ret);
int smp_cbor_item_int(const cbor_item_t *item, int64_t *ret);

/*
 * Total length of a (possibly chunked) text or byte string, and a copy of
 * its bytes into out (at least that many bytes). -EBADMSG if item is not a
 * string of the given kind. Used by json-cbor too.
 */
int smp_cbor_string_len(const cbor_item_t *item, size_t *ret);
void smp_cbor_string_copy(const cbor_item_t *item, uint8_t *out);

/* New integer item in the smallest encoding (uint or negint). */
cbor_item_t *smp_cbor_build_uint(uint64_t v);
cbor_item_t *smp_cbor_build_int(int64_t v);
/* -(n + 1) for n = 0..UINT64_MAX, i.e. -1 .. -2^64. */
cbor_item_t *smp_cbor_build_negint(uint64_t n);

/*
 * Builders. smp_cbor_map_new()/smp_cbor_array_new() make definite-length
 * containers that grow as entries are added (encoded a1.../81..., as stock
 * SMP clients send); the _indefinite variants encode bf..ff / 9f..ff as
 * Zephyr's server does. New reference; release with cbor_decref().
 */
cbor_item_t *smp_cbor_map_new(void);
cbor_item_t *smp_cbor_map_new_indefinite(void);
cbor_item_t *smp_cbor_array_new(void);
cbor_item_t *smp_cbor_array_new_indefinite(void);

/* Append key/value to map (keys are not deduplicated). Return 0 or -EINVAL
 * when map is not a map. */
int smp_cbor_map_put_uint(cbor_item_t *map, const char *key, uint64_t v);
int smp_cbor_map_put_int(cbor_item_t *map, const char *key, int64_t v);
int smp_cbor_map_put_bool(cbor_item_t *map, const char *key, bool v);
int smp_cbor_map_put_text(cbor_item_t *map, const char *key, const char *v);
int smp_cbor_map_put_textn(cbor_item_t *map, const char *key, const char *v,
			   size_t len);
int smp_cbor_map_put_bytes(cbor_item_t *map, const char *key,
			   const uint8_t *v, size_t len);
/* Consumes value (also on failure). */
int smp_cbor_map_put_item(cbor_item_t *map, const char *key,
			  cbor_item_t *value);
/* Generic pair append, consumes key and value (also on failure). */
int smp_cbor_map_put_pair(cbor_item_t *map, cbor_item_t *key,
			  cbor_item_t *value);
/* Append item to array; consumes item (also on failure). -EINVAL when array
 * is not an array. */
int smp_cbor_array_push(cbor_item_t *array, cbor_item_t *item);

/*
 * Encodes item into a new buffer (caller frees *ret). Definite/indefinite
 * lengths and integer widths are kept as the item has them, so a decoded
 * definite-length payload re-encodes byte for byte. -EMSGSIZE past
 * SMP_CBOR_MAX_ENCODED, -EINVAL on an item libcbor cannot serialize.
 */
int smp_cbor_encode(const cbor_item_t *item, uint8_t **ret, size_t *ret_len);
/* Encodes into buf; returns the length or -ENOBUFS. */
int smp_cbor_encode_buf(const cbor_item_t *item, uint8_t *buf, size_t size);

/*
 * Builds a whole SMP frame: the 8-byte header from hdr (its len ignored and
 * set to the payload length) followed by body encoded (body NULL: an empty
 * map, a0). New buffer in *ret, caller frees. -EMSGSIZE if the payload
 * exceeds 65535 bytes.
 */
int smp_frame_build(const struct smp_hdr *hdr, const cbor_item_t *body,
		    uint8_t **ret, size_t *ret_len);
