/* SPDX-License-Identifier: MIT */
/*
 * The smpgw advertising record: what a watch tells the gateway in its
 * advertisements, so the gateway knows firmware version, image, battery and
 * update state of every watch in range without connecting.
 *
 * Shared by the firmware (Zephyr), the gateway and the simulator: plain C,
 * needs only <stddef.h>, <stdint.h>, <string.h> and <errno.h>.
 *
 * Where it travels: AD type 0xFF (manufacturer specific data), company id
 * SMPGW_ADV_COMPANY_ID. The record below is the manufacturer data *after*
 * the 2-byte company id, which is exactly what BlueZ hands out as the value
 * of Device1.ManufacturerData[company]. Why manufacturer data and not
 * 16-bit-UUID service data: service data needs a 16-bit UUID assigned by
 * the Bluetooth SIG (member-only, paid); a company id is what every vendor
 * already has (0xFFFF is the SIG's "internal use / testing" id, the default
 * here; products set their own at build time), and BlueZ exposes it keyed
 * by company, so the gateway finds it with one lookup.
 *
 * Record, little-endian like the rest of BLE, SMPGW_ADV_RECORD_LEN bytes:
 *   0      record version (SMPGW_ADV_RECORD_VERSION)
 *   1      firmware major
 *   2      firmware minor
 *   3..4   firmware revision (u16)
 *   5..8   firmware build number (u32)
 *   9..12  first 4 bytes of the active image's SHA-256 (img_mgmt "hash")
 *   13     battery percent 0..100, 0xFF unknown
 *   14     flags (SMPGW_ADV_F_*)
 *
 * Legacy advertising budget (31 bytes each):
 *   ADV: flags (3) + manufacturer data (2 + 2 company + 15) = 22 bytes
 *   SCAN_RSP: 128-bit SMP service UUID (18) + complete name (2 + <= 11)
 * The SMP UUID does not fit next to the record, so it goes to the scan
 * response; BlueZ merges both (active scan) before filtering on UUIDs.
 *
 * Compatibility: bytes appended after byte 14 are ignored by this decoder
 * (later additions append and keep the version); the version byte changes
 * only for an incompatible layout, which this decoder rejects.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SMPGW_ADV_COMPANY_ID 0xFFFF
#define SMPGW_ADV_RECORD_VERSION 1
#define SMPGW_ADV_RECORD_LEN 15
#define SMPGW_ADV_HASH_LEN 4
#define SMPGW_ADV_BATTERY_UNKNOWN 0xFF

/* AD types used around the record (Bluetooth Assigned Numbers). */
#define SMPGW_AD_TYPE_FLAGS 0x01
#define SMPGW_AD_TYPE_MANUFACTURER_DATA 0xFF

enum smpgw_adv_flag {
	/* Running image was booted for test and is not confirmed yet:
	 * MCUboot reverts it on the next reset unless confirmed. */
	SMPGW_ADV_F_UNCONFIRMED = 1u << 0,
	/* An image upload is under way (img_mgmt DFU started, not stopped). */
	SMPGW_ADV_F_UPDATING = 1u << 1,
	/* Post-boot self-check passed (BLE up, SMP answered): confirm allowed. */
	SMPGW_ADV_F_SELF_CHECK_OK = 1u << 2,
	/* External power present / charging. */
	SMPGW_ADV_F_CHARGING = 1u << 3,
	/* Slot 1 holds an image marked for test: swap on next reset. */
	SMPGW_ADV_F_PENDING = 1u << 4,
	/* The pairing window is open: a new central may pair (and bond) now
	 * (smpgw/pairing-window.h). Without a bond, SMP is refused. */
	SMPGW_ADV_F_PAIRING = 1u << 5,
};
/* Bits this version defines; others are reserved and ignored by readers. */
#define SMPGW_ADV_F_KNOWN 0x3Fu

struct smpgw_fw_version {
	uint8_t major;
	uint8_t minor;
	uint16_t revision;
	uint32_t build;
};

struct smpgw_adv {
	struct smpgw_fw_version fw;
	uint8_t hash[SMPGW_ADV_HASH_LEN];
	uint8_t battery; /* percent 0..100 or SMPGW_ADV_BATTERY_UNKNOWN */
	uint8_t flags;   /* enum smpgw_adv_flag bits */
};

/* Writes the record into buf. Returns its length (SMPGW_ADV_RECORD_LEN),
 * -EINVAL on a bad argument or battery value, -ENOBUFS if size is short. */
int smpgw_adv_encode(const struct smpgw_adv *in, uint8_t *buf, size_t size);

/* Reads a record (manufacturer data after the company id). Returns 0, or
 * -EBADMSG on short input, unknown record version or a battery value out
 * of range; *ret is untouched on failure. */
int smpgw_adv_decode(const uint8_t *buf, size_t len, struct smpgw_adv *ret);

/* Walks raw advertising data (a sequence of length-type-value AD
 * structures, as in an ADV or SCAN_RSP PDU) for manufacturer data with
 * SMPGW_ADV_COMPANY_ID and decodes the record. Returns 0, -ENOENT when no
 * such AD structure is present, -EBADMSG on malformed AD data or record. */
int smpgw_adv_parse_ad(const uint8_t *ad, size_t len, struct smpgw_adv *ret);

/* Battery percent from cell voltage (mV) for the PineTime's LiPo cell:
 * piecewise-linear discharge curve, clamped to 0..100. */
uint8_t smpgw_battery_percent(uint16_t mv);
