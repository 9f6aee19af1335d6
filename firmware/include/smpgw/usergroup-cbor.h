/* SPDX-License-Identifier: MIT */
/*
 * Host-only (libcbor) encoder and decoder of the smpgw user group's health
 * response (see smpgw/usergroup.h for the fields). The simulator encodes
 * with it, the gateway decodes with it; the firmware encodes the same
 * fields with zcbor. Pure code: no I/O, no logging.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

#include "smpgw/usergroup.h"

/* New reference to a definite-length map holding every health field.
 * NULL if h fails smpgw_health_validate(). */
cbor_item_t *smpgw_health_to_cbor(const struct smpgw_health *h);

/* Serialises the health map into buf. Returns the length, -EINVAL for an
 * invalid h, -ENOBUFS when it does not fit size. */
int smpgw_health_encode(const struct smpgw_health *h, uint8_t *buf, size_t size);

/* Reads the health fields from a decoded response map (definite or
 * indefinite, as Zephyr sends). Unknown keys are ignored. -EBADMSG when
 * map is not a map, a field is missing, of the wrong type or out of range;
 * *ret untouched on failure. */
int smpgw_health_from_cbor(const cbor_item_t *map, struct smpgw_health *ret);

/* Same from the raw CBOR payload of an SMP response (after the 8-byte
 * header). -EBADMSG on malformed CBOR or fields. */
int smpgw_health_decode(const uint8_t *buf, size_t len, struct smpgw_health *ret);
