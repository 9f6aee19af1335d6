/* SPDX-License-Identifier: MIT */
/* The smpgw user group: health response encoding (libcbor side), decoding
 * what the firmware's zcbor encoder sends, validation and bad input. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "smpgw/usergroup.h"
#include "smpgw/usergroup-cbor.h"
#include "tap.h"

/* Python cbor2.dumps of the sample as a dict: definite map, minimal ints. */
static const char golden_definite[] =
	"a76b626174746572795f70637418576a626174746572795f6d76190f516b7265736574"
	"5f6361757365687761746368646f676a626f6f745f636f756e74182a68757074696d65"
	"5f73190e1069636f6e6669726d6564f46a73656c665f636865636bf5";
/* The same fields as Zephyr's SMP layer frames them: indefinite map. */
static const char golden_zephyr[] =
	"bf6b626174746572795f70637418576a626174746572795f6d76190f516b7265736574"
	"5f6361757365687761746368646f676a626f6f745f636f756e74182a68757074696d65"
	"5f73190e1069636f6e6669726d6564f46a73656c665f636865636bf5ff";

static struct smpgw_health sample(void)
{
	struct smpgw_health h = {
		.battery_pct = 87, .battery_mv = 3921,
		.reset_cause = SMPGW_RESET_WATCHDOG, .boot_count = 42,
		.uptime_s = 3600, .confirmed = false, .self_check = true,
	};
	return h;
}

static bool same(const struct smpgw_health *a, const struct smpgw_health *b)
{
	return a->battery_pct == b->battery_pct && a->battery_mv == b->battery_mv &&
	       a->reset_cause == b->reset_cause && a->boot_count == b->boot_count &&
	       a->uptime_s == b->uptime_s && a->confirmed == b->confirmed &&
	       a->self_check == b->self_check;
}

static void test_constants(void)
{
	is_int(SMPGW_MGMT_GROUP_ID, 64, "group id 64 (first user group)");
	is_int(SMPGW_MGMT_ID_HEALTH, 0, "health is command 0");
	is_str(SMPGW_MGMT_GROUP_NAME, "smpgw", "group name");
}

static void test_encode_golden(void)
{
	struct smpgw_health h = sample(), back;
	size_t glen;
	uint8_t *g = tap_unhex(golden_definite, &glen);
	uint8_t buf[256];
	int n = smpgw_health_encode(&h, buf, sizeof(buf));

	is_int(n, (int)glen, "encoded length");
	ok(n == (int)glen && memcmp(buf, g, glen) == 0, "matches cbor2 bytes");
	is_int(smpgw_health_decode(buf, (size_t)n, &back), 0, "decode own output");
	ok(same(&h, &back), "round trip");
	is_int(smpgw_health_encode(&h, buf, 10), -ENOBUFS, "short buffer");
	h.battery_pct = 120;
	is_int(smpgw_health_encode(&h, buf, sizeof(buf)), -EINVAL, "invalid battery");
	ok(smpgw_health_to_cbor(&h) == NULL, "no map for invalid struct");
	free(g);
}

static void test_decode_zephyr(void)
{
	struct smpgw_health h = sample(), got;
	size_t len;
	uint8_t *z = tap_unhex(golden_zephyr, &len);

	is_int(smpgw_health_decode(z, len, &got), 0, "indefinite map decodes");
	ok(same(&h, &got), "fields from the firmware's framing");
	for (size_t n = 0; n < len; n++) {
		if (smpgw_health_decode(z, n, &got) != -EBADMSG) {
			ok(0, "truncated to %zu must fail", n);
			break;
		}
	}
	ok(1, "every truncation rejected");
	free(z);
}

/* Builds a map from the sample, then lets the caller spoil one key. */
static int decode_with(const char *key, cbor_item_t *val, struct smpgw_health *ret)
{
	struct smpgw_health h = sample();
	cbor_item_t *m = smpgw_health_to_cbor(&h);
	cbor_item_t *out = cbor_new_definite_map(SMPGW_HEALTH_NKEYS + 1);
	struct cbor_pair *p = cbor_map_handle(m);
	int r;

	for (size_t i = 0; i < cbor_map_size(m); i++) {
		bool drop = strlen(key) == cbor_string_length(p[i].key) &&
			    memcmp(cbor_string_handle(p[i].key), key, strlen(key)) == 0;
		if (!drop)
			cbor_map_add(out, p[i]);
	}
	if (val) {
		cbor_item_t *k = cbor_build_string(key);

		cbor_map_add(out, (struct cbor_pair){ .key = k, .value = val });
		cbor_decref(&k);
		cbor_decref(&val);
	}
	r = smpgw_health_from_cbor(out, ret);
	cbor_decref(&m);
	cbor_decref(&out);
	return r;
}

static void test_decode_bad(void)
{
	struct smpgw_health got, untouched;
	static const char *const keys[] = {
		SMPGW_HEALTH_KEY_BATTERY_PCT, SMPGW_HEALTH_KEY_BATTERY_MV,
		SMPGW_HEALTH_KEY_RESET_CAUSE, SMPGW_HEALTH_KEY_BOOT_COUNT,
		SMPGW_HEALTH_KEY_UPTIME, SMPGW_HEALTH_KEY_CONFIRMED,
		SMPGW_HEALTH_KEY_SELF_CHECK,
	};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		ok(decode_with(keys[i], NULL, &got) == -EBADMSG, "missing %s", keys[i]);
	is_int(decode_with(SMPGW_HEALTH_KEY_BATTERY_PCT, cbor_build_uint8(101), &got), -EBADMSG,
	       "battery 101%");
	is_int(decode_with(SMPGW_HEALTH_KEY_BATTERY_PCT, cbor_build_uint8(255), &got), 0,
	       "battery unknown (255)");
	is_int(decode_with(SMPGW_HEALTH_KEY_BATTERY_MV, cbor_build_uint32(70000), &got), -EBADMSG,
	       "70 V battery");
	is_int(decode_with(SMPGW_HEALTH_KEY_UPTIME, cbor_build_uint64(1ull << 33), &got), -EBADMSG,
	       "uptime beyond u32");
	is_int(decode_with(SMPGW_HEALTH_KEY_BOOT_COUNT, cbor_build_negint8(0), &got), -EBADMSG,
	       "negative boot count");
	is_int(decode_with(SMPGW_HEALTH_KEY_CONFIRMED, cbor_build_uint8(1), &got), -EBADMSG,
	       "confirmed as int");
	is_int(decode_with(SMPGW_HEALTH_KEY_SELF_CHECK, cbor_build_float4(1.0f), &got), -EBADMSG,
	       "self_check as float (libcbor would assert)");
	is_int(decode_with(SMPGW_HEALTH_KEY_SELF_CHECK, cbor_new_null(), &got), -EBADMSG,
	       "self_check null");
	is_int(decode_with(SMPGW_HEALTH_KEY_RESET_CAUSE, cbor_build_uint8(1), &got), -EBADMSG,
	       "reset cause as int");
	is_int(decode_with(SMPGW_HEALTH_KEY_RESET_CAUSE, cbor_build_string("cosmic_ray"), &got), 0,
	       "unknown cause accepted");
	is_int(got.reset_cause, SMPGW_RESET_OTHER, "... as other");
	is_int(decode_with("future_field", cbor_build_string("x"), &got), 0, "unknown key ignored");

	memset(&got, 0x5a, sizeof(got));
	untouched = got;
	is_int(smpgw_health_decode((const uint8_t *)"\xa0", 1, &got), -EBADMSG, "empty map");
	is_int(smpgw_health_decode((const uint8_t *)"\x80", 1, &got), -EBADMSG, "array");
	is_int(smpgw_health_decode((const uint8_t *)"\xa1\x62rc\x08", 5, &got), -EBADMSG,
	       "SMP error map is not a health response");
	is_int(smpgw_health_decode(NULL, 0, &got), -EBADMSG, "no input");
	ok(memcmp(&got, &untouched, sizeof(got)) == 0, "out-param untouched");
}

static void test_indefinite_string(void)
{
	/* reset_cause as an indefinite text string: "watch" "dog" */
	static const char hex[] =
		"bf6b626174746572795f70637418576a626174746572795f6d76190f516b7265736574"
		"5f63617573657f6577617463686364 6f67ff"
		"6a626f6f745f636f756e74182a68757074696d655f73190e1069636f6e6669726d6564"
		"f46a73656c665f636865636bf5ff";
	char clean[sizeof(hex)];
	size_t j = 0, len;
	struct smpgw_health got;

	for (size_t i = 0; hex[i]; i++)
		if (hex[i] != ' ')
			clean[j++] = hex[i];
	clean[j] = 0;
	uint8_t *b = tap_unhex(clean, &len);
	is_int(smpgw_health_decode(b, len, &got), 0, "chunked text decodes");
	is_int(got.reset_cause, SMPGW_RESET_WATCHDOG, "chunks joined");
	free(b);
}

static void test_names(void)
{
	for (int c = 0; c < SMPGW_RESET__MAX; c++) {
		const char *n = smpgw_reset_cause_name((enum smpgw_reset_cause)c);

		if (smpgw_reset_cause_from_name(n, strlen(n)) != (enum smpgw_reset_cause)c) {
			ok(0, "name %s round trip", n);
			return;
		}
	}
	ok(1, "every reset cause name round-trips");
	is_str(smpgw_reset_cause_name((enum smpgw_reset_cause)99), "unknown", "out of range");
	is_int(smpgw_reset_cause_from_name("watchdogs", 9), SMPGW_RESET_OTHER, "longer name");
	is_int(smpgw_reset_cause_from_name("watchdogs", 8), SMPGW_RESET_WATCHDOG, "counted string");
	is_int(smpgw_reset_cause_from_name(NULL, 0), SMPGW_RESET_OTHER, "NULL name");
}

static void test_validate(void)
{
	struct smpgw_health h = sample();

	is_int(smpgw_health_validate(&h), 0, "sample valid");
	is_int(smpgw_health_validate(NULL), -EINVAL, "NULL");
	h.reset_cause = SMPGW_RESET__MAX;
	is_int(smpgw_health_validate(&h), -EINVAL, "cause out of range");
	h = sample();
	h.battery_mv = SMPGW_BATTERY_MV_MAX + 1;
	is_int(smpgw_health_validate(&h), -EINVAL, "mV out of range");
}

int main(void)
{
	test_constants();
	test_encode_golden();
	test_decode_zephyr();
	test_decode_bad();
	test_indefinite_string();
	test_names();
	test_validate();
	return tap_done();
}
