/* SPDX-License-Identifier: MIT */
/*
 * CBOR helpers over libcbor for SMP payloads. Decoding accepts what real
 * Zephyr sends: indefinite-length maps and arrays, and repeated map keys
 * (lookups return the first match). Pure code: no I/O, no logging.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

/* Decodes exactly one CBOR item filling buf..len. -EBADMSG on malformed
 * input or trailing bytes; -ENOMEM never (allocation aborts). On success
 * *ret is a new reference. */
int smp_cbor_decode(const uint8_t *buf, size_t len, cbor_item_t **ret);

/* Value for text key in map (definite or indefinite), or NULL. Borrowed. */
const cbor_item_t *smp_cbor_map_get(const cbor_item_t *map, const char *key);
