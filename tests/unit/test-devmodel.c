/* SPDX-License-Identifier: MIT */
/* The typed device model: version forms, typed slots, the advertising
 * record as JSON, the freshest firmware, and the GET /devices filters
 * (every parameter, bad input). */
#include <errno.h>
#include <string.h>

#include "codec/mcuboot.h"
#include "gateway/devmodel.h"
#include "http/devfilter.h"
#include "tap.h"

static void test_version_parse(void)
{
	static const struct { const char *in, *canon, *text; } good[] = {
		{ "1.2.3", "1.2.3+0", "1.2.3" },
		{ "1.2.3+4", "1.2.3+4", "1.2.3.4" },
		{ "1.2.3.4", "1.2.3+4", "1.2.3.4" },
		{ "0.0.0", "0.0.0+0", "0.0.0" },
		{ "255.255.65535.4294967295", "255.255.65535+4294967295",
		  "255.255.65535.4294967295" },
	};
	static const char *const bad[] = {
		"", "1", "1.2", "1.2.", "1.2.3.", "1.2.3+", "1.2.3+4.5", "1.2.3.4.5",
		"256.0.0", "1.256.0", "1.2.65536", "1.2.3.4294967296", "a.b.c",
		"1.2.3-rc1", " 1.2.3", "1.2.3 ", "1+2.3", "-1.2.3", "1.2.3++4",
		"99999999999.0.0",
	};
	struct mcuboot_version v, untouched = { 9, 9, 9, 9 };
	char out[MCUBOOT_VERSION_STR_LEN];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ok(mcuboot_version_parse(good[i].in, strlen(good[i].in), &v) == 0,
		   "parses '%s'", good[i].in);
		mcuboot_version_str(&v, out, sizeof(out));
		is_str(out, good[i].canon, "canonical form");
		mcuboot_version_text(&v, out, sizeof(out));
		is_str(out, good[i].text, "Zephyr's text");
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = untouched;
		ok(mcuboot_version_parse(bad[i], strlen(bad[i]), &v) == -EBADMSG &&
		   v.major == 9, "refuses '%s', output untouched", bad[i]);
	}
	ok(mcuboot_version_parse("1.2.3+4xyz", 7, &v) == 0 && v.build == 4,
	   "length bounds the text");
	is_int(mcuboot_version_canonical(NULL, out, sizeof(out)), -EBADMSG, "NULL");
}

static void test_slots(void)
{
	json_t *in = json_loads("[{\"slot\":0,\"version\":\"1.2.3.4\",\"active\":true,"
				"\"hash\":{\"$bytes\":\"B3D335F6\"}},"
				"{\"slot\":1,\"version\":\"1.0.0\",\"hash\":\"ab01\"},"
				"{\"slot\":2,\"version\":\"weird\"}, 7]", 0, NULL);
	json_t *out = gw_slots_typed(in), *s0 = json_array_get(out, 0);

	is_str(json_string_value(json_object_get(s0, "hash")), "b3d335f6",
	       "$bytes hash -> lower-case hex");
	is_str(json_string_value(json_object_get(s0, "version")), "1.2.3+4",
	       "canonical version");
	is_str(json_string_value(json_object_get(s0, "version_text")), "1.2.3.4",
	       "watch's text kept");
	ok(json_is_true(json_object_get(s0, "active")), "flags kept");
	is_str(json_string_value(json_object_get(json_array_get(out, 1), "version")),
	       "1.0.0+0", "build 0 canonical like GET /images");
	is_str(json_string_value(json_object_get(json_array_get(out, 1), "hash")),
	       "ab01", "hex hash kept");
	is_str(json_string_value(json_object_get(json_array_get(out, 2), "version")),
	       "weird", "unparsable version kept as sent");
	ok(json_is_object(json_object_get(json_array_get(in, 0), "hash")),
	   "input untouched");
	ok(gw_slots_typed(json_object_get(s0, "slot")) == NULL, "not an array: NULL");
	json_decref(in);
	json_decref(out);
}

static void test_adv(void)
{
	struct smpgw_adv a = {
		.fw = { 1, 2, 3, 4 }, .hash = { 0xb3, 0xd3, 0x35, 0xf6 }, .battery = 87,
		.flags = SMPGW_ADV_F_UNCONFIRMED | SMPGW_ADV_F_SELF_CHECK_OK |
			 SMPGW_ADV_F_CHARGING,
	};
	json_t *j = gw_adv_typed(&a, 1000, 3500);

	is_int(json_integer_value(json_object_get(j, "record_version")), 1, "record_version");
	is_str(json_string_value(json_object_get(j, "version")), "1.2.3+4", "version");
	is_str(json_string_value(json_object_get(j, "version_text")), "1.2.3.4", "text");
	is_str(json_string_value(json_object_get(j, "hash_prefix")), "b3d335f6", "hash");
	is_int(json_integer_value(json_object_get(j, "battery")), 87, "battery");
	ok(json_is_true(json_object_get(j, "charging")), "charging");
	ok(json_is_true(json_object_get(j, "self_check_ok")), "self check");
	is_str(json_string_value(json_object_get(j, "update_state")), "unconfirmed",
	       "update state");
	is_int(json_integer_value(json_object_get(j, "flags")), a.flags, "flags");
	is_int(json_integer_value(json_object_get(j, "seen_at")), 1000, "seen_at");
	ok(json_real_value(json_object_get(j, "age_s")) == 2.5, "age_s");
	json_decref(j);
	a.battery = SMPGW_ADV_BATTERY_UNKNOWN;
	j = gw_adv_typed(&a, 1000, 500);
	ok(json_is_null(json_object_get(j, "battery")), "battery 0xFF: null");
	ok(json_real_value(json_object_get(j, "age_s")) == 0, "clock behind: age 0");
	json_decref(j);
	is_str(gw_adv_update_state(0), "idle", "idle");
	is_str(gw_adv_update_state(SMPGW_ADV_F_PENDING), "pending", "pending");
	is_str(gw_adv_update_state(SMPGW_ADV_F_PENDING | SMPGW_ADV_F_UNCONFIRMED),
	       "unconfirmed", "unconfirmed beats pending");
	is_str(gw_adv_update_state(SMPGW_ADV_F_UPDATING | SMPGW_ADV_F_UNCONFIRMED),
	       "updating", "updating beats all");
}

static void test_firmware(void)
{
	struct smpgw_adv a = { .fw = { 1, 0, 0, 0 }, .hash = { 0x8a, 0xa2, 0xde, 0x87 } };
	json_t *in = json_loads("[{\"slot\":0,\"version\":\"1.2.3.4\",\"active\":true,"
				"\"hash\":\"b3d3\"}]", 0, NULL);
	json_t *slots = gw_slots_typed(in), *fw;

	fw = gw_firmware_typed(slots, 2000, &a, 1000, 3000);
	is_str(json_string_value(json_object_get(fw, "source")), "connection",
	       "fresher connection wins");
	is_str(json_string_value(json_object_get(fw, "hash")), "b3d3", "full hash");
	is_str(json_string_value(json_object_get(fw, "version")), "1.2.3+4", "version");
	json_decref(fw);
	fw = gw_firmware_typed(slots, 2000, &a, 2500, 3000);
	is_str(json_string_value(json_object_get(fw, "source")), "advertising",
	       "fresher advertising wins");
	is_str(json_string_value(json_object_get(fw, "hash")), "8aa2de87", "prefix");
	is_str(json_string_value(json_object_get(fw, "version")), "1.0.0+0", "version");
	ok(json_real_value(json_object_get(fw, "age_s")) == 0.5, "age");
	json_decref(fw);
	ok(gw_firmware_typed(NULL, 0, NULL, 0, 3000) == NULL, "nothing known: NULL");
	json_decref(in);
	json_decref(slots);
}

static int parse(const char *k, const char *v, struct devices_filter *f, char *err)
{
	const char *keys[] = { k }, *values[] = { v };

	return devices_filter_parse(keys, values, 1, f, err, 200);
}

static void test_filter_parse(void)
{
	struct devices_filter f;
	char err[200];

	is_int(devices_filter_parse(NULL, NULL, 0, &f, err, sizeof(err)), 0, "no filters");
	ok(!f.has_version && f.battery_below == -1 && !f.hash[0] && !f.state, "all off");
	is_int(parse("version", "1.2.3.4", &f, err), 0, "Zephyr form");
	ok(f.has_version && f.version.build == 4, "parsed");
	is_int(parse("version", "1.2.3 4", &f, err), 0, "URL '+' as space");
	ok(f.version.build == 4, "read back as +");
	is_int(parse("version", "1.2", &f, err), -EDOM, "bad version");
	ok(strstr(err, "version") && strstr(err, "1.2"), "names parameter and value: %s", err);
	is_int(parse("battery_below", "101", &f, err), 0, "battery 101");
	is_int(f.battery_below, 101, "value");
	is_int(parse("battery_below", "0", &f, err), 0, "battery 0");
	for (const char *const *b = (const char *const[]){ "102", "-1", "", "5x", "+5",
							    " 5", NULL }; *b; b++)
		ok(parse("battery_below", *b, &f, err) == -EDOM &&
		   strstr(err, "battery_below"), "battery_below '%s' refused", *b);
	is_int(parse("hash", "B3D3", &f, err), 0, "hash prefix");
	is_str(f.hash, "b3d3", "lower-cased");
	is_int(parse("hash", "xyz", &f, err), -EDOM, "bad hex");
	is_int(parse("hash", "", &f, err), -EDOM, "empty hash");
	is_int(parse("state", "sideways", &f, err), -EDOM, "bad state");
	is_int(parse("frobnicate", "1", &f, err), -EDOM, "unknown parameter");
	ok(strstr(err, "unknown query parameter 'frobnicate'") != NULL, "says so: %s", err);
	is_int(parse("access_token", "t", &f, err), 0, "access_token allowed");
	is_int(parse("version", NULL, &f, err), -EDOM, "version without value");
}

static void test_filter_match(void)
{
	struct devices_filter f;
	char err[200];
	json_t *dev = json_loads("{\"name\":\"PineTime-3\",\"link_state\":\"down\","
				 "\"battery\":40,\"firmware\":{\"version\":\"1.2.3+4\","
				 "\"hash\":\"b3d335f6\"}}", 0, NULL);
	json_t *bare = json_loads("{\"name\":\"x\",\"link_state\":\"up\","
				  "\"battery\":null,\"firmware\":null}", 0, NULL);

	parse("version", "1.2.3.4", &f, err);
	ok(devices_filter_match(&f, dev), "version, other form");
	ok(!devices_filter_match(&f, bare), "no firmware known: no match");
	parse("version", "1.2.3", &f, err);
	ok(!devices_filter_match(&f, dev), "1.2.3 is not 1.2.3+4");
	parse("battery_below", "41", &f, err);
	ok(devices_filter_match(&f, dev), "40 < 41");
	ok(!devices_filter_match(&f, bare), "unknown battery never below");
	parse("battery_below", "40", &f, err);
	ok(!devices_filter_match(&f, dev), "40 not < 40");
	parse("hash", "b3d3", &f, err);
	ok(devices_filter_match(&f, dev), "hash prefix");
	parse("hash", "b3d335f636f90159", &f, err);
	ok(devices_filter_match(&f, dev), "longer than the advertised prefix");
	parse("hash", "b3d4", &f, err);
	ok(!devices_filter_match(&f, dev), "other hash");
	parse("name", "PineTime-*", &f, err);
	ok(devices_filter_match(&f, dev) && !devices_filter_match(&f, bare), "name glob");
	parse("state", "up", &f, err);
	ok(!devices_filter_match(&f, dev) && devices_filter_match(&f, bare), "state");
	json_decref(dev);
	json_decref(bare);
}

int main(void)
{
	test_version_parse();
	test_slots();
	test_adv();
	test_firmware();
	test_filter_parse();
	test_filter_match();
	return tap_done();
}
