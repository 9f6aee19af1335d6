/* SPDX-License-Identifier: MIT */
/*
 * Lossless JSON form of CBOR (jansson <-> libcbor), used by the REST API to
 * show SMP payloads and to take raw SMP requests. Pure code: no I/O.
 * Full description: docs/json-cbor.md.
 *
 * CBOR                        JSON
 * uint <= INT64_MAX           integer
 * uint >  INT64_MAX           {"$uint": "<decimal>"}
 * negint >= INT64_MIN         integer
 * negint <  INT64_MIN         {"$negint": "-<decimal>"}
 * byte string                 {"$bytes": "<lowercase hex>"}
 *                             (input also {"$base64": "<base64>"})
 * text string (UTF-8)         string
 * array                       array
 * map, unique text keys not   object, keys in order
 *   starting with '$'
 * any other map               {"$map": [[key, value], ...]}
 * tag n                       {"$tag": n, "value": ...}
 *                             (n as "<decimal>" when > INT64_MAX; tags
 *                             6..20 refused: libcbor 0.8 cannot decode them)
 * false/true/null             false/true/null
 * undefined                   {"$undefined": true}
 * other simple value n        {"$simple": n}
 * float (half/single/double)  real; NaN/Inf as {"$float": "nan"|"inf"|"-inf"}
 *
 * Chunked (indefinite) strings are concatenated and indefinite containers
 * come back as definite ones. JSON integers become the smallest CBOR
 * integer, JSON reals the shortest float width that holds the value exactly.
 * Any JSON object with a key starting with '$' must be one of the forms
 * above.
 */
#pragma once

#include <jansson.h>
#include <cbor.h>

/* Deepest CBOR nesting either conversion accepts (as SMP_CBOR_MAX_DEPTH). */
#define SMP_JSON_CBOR_MAX_DEPTH 32

/*
 * JSON to CBOR. On success *ret is a new item (cbor_decref() it).
 * -EINVAL for a malformed "$" form (unknown name, wrong value type, bad hex
 * or base64, number out of range, extra keys), -E2BIG when nested deeper
 * than SMP_JSON_CBOR_MAX_DEPTH. *ret untouched on failure.
 */
int smp_json_to_cbor(const json_t *json, cbor_item_t **ret);

/*
 * CBOR to JSON. On success *ret is a new reference (json_decref() it).
 * -EBADMSG when a text string (value or key) is not valid UTF-8, -E2BIG when
 * nested deeper than SMP_JSON_CBOR_MAX_DEPTH. *ret untouched on failure.
 */
int smp_cbor_to_json(const cbor_item_t *item, json_t **ret);
