/* SPDX-License-Identifier: MIT */
/*
 * The typed device model (devmodel.h): slots, the advertising record and
 * the best-known firmware as the REST API shows them.
 */
#include "gateway/devmodel.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "codec/mcuboot.h"
#include "util/util.h"

/* A hash as SMP's JSON carries it ({"$bytes": hex} or hex) -> lower hex. */
static json_t *hash_hex(json_t *h)
{
	const char *s;
	json_t *b = json_is_object(h) ? json_object_get(h, "$bytes") : NULL;
	char *lower;
	json_t *out;

	s = json_string_value(b ? b : h);
	if (!s)
		return json_incref(h);
	lower = xstrdup(s);
	for (char *c = lower; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	out = json_string(lower);
	free(lower);
	return out ? out : json_incref(h);
}

static void slot_versions(json_t *slot)
{
	json_t *v = json_object_get(slot, "version");
	const char *text = json_string_value(v);
	char canon[MCUBOOT_VERSION_STR_LEN];

	if (!text)
		return;
	json_object_set_new(slot, "version_text", json_string(text));
	if (mcuboot_version_canonical(text, canon, sizeof(canon)) == 0)
		json_object_set_new(slot, "version", json_string(canon));
}

json_t *gw_slots_typed(const json_t *images)
{
	json_t *out, *slot, *h;
	size_t i;

	if (!json_is_array(images))
		return NULL;
	out = json_deep_copy(images);
	json_array_foreach(out, i, slot) {
		if (!json_is_object(slot))
			continue;
		h = json_object_get(slot, "hash");
		if (h)
			json_object_set_new(slot, "hash", hash_hex(h));
		slot_versions(slot);
	}
	return out;
}

const char *gw_adv_update_state(uint8_t flags)
{
	if (flags & SMPGW_ADV_F_UPDATING)
		return "updating";
	if (flags & SMPGW_ADV_F_UNCONFIRMED)
		return "unconfirmed";
	if (flags & SMPGW_ADV_F_PENDING)
		return "pending";
	return "idle";
}

static double age_s(uint64_t then_ms, uint64_t now_ms)
{
	return now_ms > then_ms ? (double)(now_ms - then_ms) / 1000.0 : 0.0;
}

static void adv_version(const struct smpgw_adv *a, char canon[MCUBOOT_VERSION_STR_LEN],
			char text[MCUBOOT_VERSION_STR_LEN])
{
	struct mcuboot_version v = { .major = a->fw.major, .minor = a->fw.minor,
				     .revision = a->fw.revision, .build = a->fw.build };

	mcuboot_version_str(&v, canon, MCUBOOT_VERSION_STR_LEN);
	mcuboot_version_text(&v, text, MCUBOOT_VERSION_STR_LEN);
}

json_t *gw_adv_typed(const struct smpgw_adv *a, uint64_t seen_ms, uint64_t now_ms)
{
	char canon[MCUBOOT_VERSION_STR_LEN], text[MCUBOOT_VERSION_STR_LEN];
	char hash[2 * SMPGW_ADV_HASH_LEN + 1];
	json_t *o;

	adv_version(a, canon, text);
	hex_encode(a->hash, SMPGW_ADV_HASH_LEN, hash);
	o = json_pack("{s:i, s:s, s:s, s:s, s:b, s:s, s:b, s:i, s:I, s:f}",
		      "record_version", SMPGW_ADV_RECORD_VERSION,
		      "version", canon, "version_text", text,
		      "hash_prefix", hash,
		      "charging", (a->flags & SMPGW_ADV_F_CHARGING) != 0,
		      "update_state", gw_adv_update_state(a->flags),
		      "self_check_ok", (a->flags & SMPGW_ADV_F_SELF_CHECK_OK) != 0,
		      "flags", a->flags,
		      "seen_at", (json_int_t)seen_ms,
		      "age_s", age_s(seen_ms, now_ms));
	json_object_set_new(o, "battery", a->battery == SMPGW_ADV_BATTERY_UNKNOWN ?
			    json_null() : json_integer(a->battery));
	return o;
}

static const json_t *active_slot(const json_t *slots)
{
	const json_t *s;
	size_t i;

	json_array_foreach(slots, i, s)
		if (json_is_true(json_object_get(s, "active")))
			return s;
	return NULL;
}

json_t *gw_firmware_typed(const json_t *slots, uint64_t slots_ms,
			  const struct smpgw_adv *adv, uint64_t adv_ms,
			  uint64_t now_ms)
{
	const json_t *s = slots ? active_slot(slots) : NULL;
	char canon[MCUBOOT_VERSION_STR_LEN], text[MCUBOOT_VERSION_STR_LEN];
	char hash[2 * SMPGW_ADV_HASH_LEN + 1];

	if (s && json_string_value(json_object_get(s, "version")) &&
	    (!adv || slots_ms >= adv_ms))
		return json_pack("{s:O, s:O?, s:O?, s:s, s:f}",
				 "version", json_object_get(s, "version"),
				 "version_text", json_object_get(s, "version_text"),
				 "hash", json_object_get(s, "hash"),
				 "source", "connection",
				 "age_s", age_s(slots_ms, now_ms));
	if (!adv)
		return NULL;
	adv_version(adv, canon, text);
	hex_encode(adv->hash, SMPGW_ADV_HASH_LEN, hash);
	return json_pack("{s:s, s:s, s:s, s:s, s:f}", "version", canon,
			 "version_text", text, "hash", hash, "source", "advertising",
			 "age_s", age_s(adv_ms, now_ms));
}
