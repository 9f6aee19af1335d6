/* SPDX-License-Identifier: MIT */
/*
 * The device model of every typed REST answer: one shape for what the
 * gateway knows about a watch's firmware, whichever way it learned it.
 *
 *  - slots (img_mgmt "images", read over a connection): "hash" is lower-case
 *    hex (never the {"$bytes": ...} of the SMP passthrough), "version" is
 *    MCUboot's canonical "1.2.3+4" (as GET /api/v1/images writes it) and
 *    "version_text" the watch's own text ("1.2.3.4", "1.2.3" for build 0);
 *  - advertised: the smpgw advertising record (smpgw/adv.h) as typed fields;
 *  - firmware: the freshest of the two.
 *
 * Pure functions of their arguments (no daemon state), so unit tests drive
 * them directly.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "smpgw/adv.h"

/* A copy of an img_mgmt "images" array in the typed form above: each slot
 * map keeps its flags; "hash" as hex (from a {"$bytes"} or a hex string),
 * "version" canonical and "version_text" as the watch sent it (a version
 * that does not parse is kept as is in both). New reference; NULL when
 * images is not an array. */
json_t *gw_slots_typed(const json_t *images);

/* The update state an advertising record's flags say, one word, by
 * precedence: "updating" (an upload is under way) > "unconfirmed" (the
 * running image boots for test and reverts unless confirmed) > "pending"
 * (slot 1 swaps in at the next reset) > "idle". */
const char *gw_adv_update_state(uint8_t flags);

/* The "advertised" object: record_version, version (canonical),
 * version_text, hash_prefix (hex of the 4 bytes), battery (null when
 * unknown), charging, update_state, self_check_ok, flags, seen_at (ms
 * epoch) and age_s (seconds from seen_ms to now_ms). New reference. */
json_t *gw_adv_typed(const struct smpgw_adv *a, uint64_t seen_ms, uint64_t now_ms);

/* The "firmware" object: the running image as best known, from the active
 * slot read over a connection (slots, read at slots_ms; full hash) or from
 * the advertising record (adv, seen at adv_ms; hash prefix), whichever is
 * fresher: {version, version_text, hash, source: "connection" |
 * "advertising", age_s}. slots and adv may be NULL; NULL (no reference)
 * when neither says anything. New reference. */
json_t *gw_firmware_typed(const json_t *slots, uint64_t slots_ms,
			  const struct smpgw_adv *adv, uint64_t adv_ms,
			  uint64_t now_ms);
