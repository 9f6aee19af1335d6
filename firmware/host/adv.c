/* SPDX-License-Identifier: MIT */
/*
 * Encoder and decoder of the smpgw advertising record (see smpgw/adv.h).
 * Compiled both on the host and in the Zephyr app: no allocation, no libc
 * beyond string.h, fuzz-safe (every read is bounds-checked against len).
 */
#include <errno.h>
#include <string.h>

#include "smpgw/adv.h"

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t rd_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd_le32(const uint8_t *p)
{
	return (uint32_t)rd_le16(p) | ((uint32_t)rd_le16(p + 2) << 16);
}

static int battery_valid(uint8_t pct)
{
	return pct <= 100 || pct == SMPGW_ADV_BATTERY_UNKNOWN;
}

int smpgw_adv_encode(const struct smpgw_adv *in, uint8_t *buf, size_t size)
{
	if (!in || !buf || !battery_valid(in->battery))
		return -EINVAL;
	if (size < SMPGW_ADV_RECORD_LEN)
		return -ENOBUFS;
	buf[0] = SMPGW_ADV_RECORD_VERSION;
	buf[1] = in->fw.major;
	buf[2] = in->fw.minor;
	put_le16(buf + 3, in->fw.revision);
	put_le32(buf + 5, in->fw.build);
	memcpy(buf + 9, in->hash, SMPGW_ADV_HASH_LEN);
	buf[13] = in->battery;
	buf[14] = in->flags;
	return SMPGW_ADV_RECORD_LEN;
}

int smpgw_adv_decode(const uint8_t *buf, size_t len, struct smpgw_adv *ret)
{
	struct smpgw_adv a;

	if (!buf || len < SMPGW_ADV_RECORD_LEN || buf[0] != SMPGW_ADV_RECORD_VERSION)
		return -EBADMSG;
	if (!battery_valid(buf[13]))
		return -EBADMSG;
	a.fw.major = buf[1];
	a.fw.minor = buf[2];
	a.fw.revision = rd_le16(buf + 3);
	a.fw.build = rd_le32(buf + 5);
	memcpy(a.hash, buf + 9, SMPGW_ADV_HASH_LEN);
	a.battery = buf[13];
	a.flags = buf[14];
	if (ret)
		*ret = a;
	return 0;
}

/* One AD structure: length byte (covers type + data), type, data. A zero
 * length ends the significant part (Core spec Vol 3 Part C 11). */
int smpgw_adv_parse_ad(const uint8_t *ad, size_t len, struct smpgw_adv *ret)
{
	size_t pos = 0;

	if (!ad && len)
		return -EBADMSG;
	while (pos < len) {
		size_t field = ad[pos];

		if (field == 0)
			break;
		if (field > len - pos - 1)
			return -EBADMSG;
		if (ad[pos + 1] == SMPGW_AD_TYPE_MANUFACTURER_DATA && field >= 3 &&
		    rd_le16(ad + pos + 2) == SMPGW_ADV_COMPANY_ID)
			return smpgw_adv_decode(ad + pos + 4, field - 3, ret);
		pos += field + 1;
	}
	return -ENOENT;
}

/* Approximate resting-voltage curve of a single LiPo cell (mV, percent).
 * Under load the reading sags a little: good enough for a fleet overview,
 * not a fuel gauge. */
static const struct {
	uint16_t mv;
	uint8_t pct;
} battery_curve[] = {
	{ 3500, 0 }, { 3600, 10 }, { 3700, 25 }, { 3800, 45 },
	{ 3900, 60 }, { 4000, 75 }, { 4100, 90 }, { 4180, 100 },
};

uint8_t smpgw_battery_percent(uint16_t mv)
{
	size_t n = sizeof(battery_curve) / sizeof(battery_curve[0]);

	if (mv <= battery_curve[0].mv)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (mv < battery_curve[i].mv) {
			uint32_t lo = battery_curve[i - 1].mv, hi = battery_curve[i].mv;
			uint32_t plo = battery_curve[i - 1].pct, phi = battery_curve[i].pct;

			return (uint8_t)(plo + (phi - plo) * (mv - lo) / (hi - lo));
		}
	}
	return 100;
}
