/* SPDX-License-Identifier: MIT */
/* The smpgw advertising record: golden bytes, round trip, bad input. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "smpgw/adv.h"
#include "tap.h"

/* 1.2.3+4, hash 12 34 56 78..., 87 %, unconfirmed + self-check ok. */
static const uint8_t golden[] = {
	0x01, 0x01, 0x02, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00,
	0x12, 0x34, 0x56, 0x78, 0x57, 0x05,
};

static struct smpgw_adv sample(void)
{
	struct smpgw_adv a = {
		.fw = { .major = 1, .minor = 2, .revision = 3, .build = 4 },
		.hash = { 0x12, 0x34, 0x56, 0x78 },
		.battery = 87,
		.flags = SMPGW_ADV_F_UNCONFIRMED | SMPGW_ADV_F_SELF_CHECK_OK,
	};
	return a;
}

/* Field by field: struct padding is not part of the record. */
static bool same(const struct smpgw_adv *a, const struct smpgw_adv *b)
{
	return a->fw.major == b->fw.major && a->fw.minor == b->fw.minor &&
	       a->fw.revision == b->fw.revision && a->fw.build == b->fw.build &&
	       memcmp(a->hash, b->hash, SMPGW_ADV_HASH_LEN) == 0 &&
	       a->battery == b->battery && a->flags == b->flags;
}

static void test_golden(void)
{
	struct smpgw_adv a = sample(), b;
	uint8_t buf[32];

	is_int(sizeof(golden), SMPGW_ADV_RECORD_LEN, "record length constant");
	is_int(smpgw_adv_encode(&a, buf, sizeof(buf)), SMPGW_ADV_RECORD_LEN, "encode length");
	is_mem(buf, golden, sizeof(golden), "golden bytes");
	is_int(smpgw_adv_decode(golden, sizeof(golden), &b), 0, "decode golden");
	ok(same(&a, &b), "decode gives back the fields");
}

static void test_extremes(void)
{
	struct smpgw_adv a = {
		.fw = { 255, 255, 0xfffe, 0xfffffffe },
		.hash = { 0xde, 0xad, 0xbe, 0xef },
		.battery = SMPGW_ADV_BATTERY_UNKNOWN,
		.flags = 0xff,
	}, b;
	uint8_t buf[SMPGW_ADV_RECORD_LEN];

	is_int(smpgw_adv_encode(&a, buf, sizeof(buf)), SMPGW_ADV_RECORD_LEN, "exact size fits");
	is_int(smpgw_adv_decode(buf, sizeof(buf), &b), 0, "decode extremes");
	is_int(b.fw.revision, 0xfffe, "revision u16 little-endian");
	is_int(b.fw.build, 0xfffffffe, "build u32 little-endian");
	is_int(b.flags, 0xff, "reserved flag bits kept for the caller to ignore");
	is_int(b.battery, SMPGW_ADV_BATTERY_UNKNOWN, "battery unknown");
}

static void test_bad(void)
{
	struct smpgw_adv a = sample(), b, untouched;
	uint8_t buf[SMPGW_ADV_RECORD_LEN + 4];

	is_int(smpgw_adv_encode(&a, buf, SMPGW_ADV_RECORD_LEN - 1), -ENOBUFS, "short buffer");
	is_int(smpgw_adv_encode(NULL, buf, sizeof(buf)), -EINVAL, "NULL record");
	a.battery = 101;
	is_int(smpgw_adv_encode(&a, buf, sizeof(buf)), -EINVAL, "battery 101 refused");

	memset(&b, 0xaa, sizeof(b));
	untouched = b;
	for (size_t n = 0; n < SMPGW_ADV_RECORD_LEN; n++)
		ok(smpgw_adv_decode(golden, n, &b) == -EBADMSG, "truncated to %zu", n);
	ok(memcmp(&b, &untouched, sizeof(b)) == 0, "out-param untouched on failure");
	is_int(smpgw_adv_decode(NULL, 0, &b), -EBADMSG, "NULL input");

	memcpy(buf, golden, sizeof(golden));
	buf[0] = 2;
	is_int(smpgw_adv_decode(buf, sizeof(golden), &b), -EBADMSG, "unknown version");
	buf[0] = 0;
	is_int(smpgw_adv_decode(buf, sizeof(golden), &b), -EBADMSG, "version 0");
	memcpy(buf, golden, sizeof(golden));
	buf[13] = 150;
	is_int(smpgw_adv_decode(buf, sizeof(golden), &b), -EBADMSG, "battery 150");

	memcpy(buf, golden, sizeof(golden));
	memset(buf + sizeof(golden), 0x77, 4);
	is_int(smpgw_adv_decode(buf, sizeof(buf), &b), 0, "appended bytes ignored");
	is_int(b.battery, 87, "fields still read");
}

/* A whole ADV PDU payload as the firmware builds it, then a scan response
 * that carries no record. */
static void test_ad(void)
{
	uint8_t adv[31] = { 0x02, SMPGW_AD_TYPE_FLAGS, 0x06,
			    3 + SMPGW_ADV_RECORD_LEN, SMPGW_AD_TYPE_MANUFACTURER_DATA,
			    SMPGW_ADV_COMPANY_ID & 0xff, SMPGW_ADV_COMPANY_ID >> 8 };
	static const uint8_t sr[] = { 0x09, 0x09, 'P', 'i', 'n', 'e', 'T', 'i', 'm', 'e' };
	static const uint8_t other_company[] = { 0x05, 0xff, 0x59, 0x00, 0x01, 0x02 };
	static const uint8_t overrun[] = { 0x02, 0x01, 0x06, 0x09, 0xff, 0xff };
	size_t len = 7 + SMPGW_ADV_RECORD_LEN;
	struct smpgw_adv a = sample(), b;

	memcpy(adv + 7, golden, sizeof(golden));
	ok(len <= 31, "ADV with flags and record fits 31 bytes (%zu)", len);
	is_int(smpgw_adv_parse_ad(adv, len, &b), 0, "record found in ADV");
	ok(same(&a, &b), "record fields from ADV");
	is_int(smpgw_adv_parse_ad(adv, sizeof(adv), &b), 0, "zero padding ends AD data");
	is_int(smpgw_adv_parse_ad(sr, sizeof(sr), &b), -ENOENT, "no record in SCAN_RSP");
	is_int(smpgw_adv_parse_ad(other_company, sizeof(other_company), &b), -ENOENT,
	       "other company's data skipped");
	is_int(smpgw_adv_parse_ad(overrun, sizeof(overrun), &b), -EBADMSG, "AD length overrun");
	is_int(smpgw_adv_parse_ad(NULL, 0, &b), -ENOENT, "empty AD");
	/* Scan response budget: 128-bit UUID (18) + name of up to 11 chars. */
	ok(18 + 2 + 11 <= 31, "SCAN_RSP budget");
}

static void test_battery(void)
{
	is_int(smpgw_battery_percent(0), 0, "0 mV");
	is_int(smpgw_battery_percent(3500), 0, "empty");
	is_int(smpgw_battery_percent(3650), 17, "interpolated");
	is_int(smpgw_battery_percent(4180), 100, "full");
	is_int(smpgw_battery_percent(5000), 100, "clamped");
	for (unsigned mv = 3400, last = 0; mv < 4300; mv += 7) {
		unsigned p = smpgw_battery_percent((uint16_t)mv);

		if (p < last || p > 100) {
			ok(0, "monotonic at %u mV", mv);
			return;
		}
		last = p;
	}
	ok(1, "monotonic and bounded");
}

int main(void)
{
	test_golden();
	test_extremes();
	test_bad();
	test_ad();
	test_battery();
	return tap_done();
}
