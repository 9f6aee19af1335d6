/* SPDX-License-Identifier: MIT */
/*
 * The smpgw user SMP group ("smpgw" group, id 64): command ids, CBOR field
 * names and the plain struct they carry. Defined once here so the firmware
 * (zcbor), the simulator and the gateway (libcbor, usergroup-cbor.h) agree.
 * Plain C: compiles in Zephyr and on the host.
 *
 * Command 0, "health", read only. Request: empty map. Response map
 * (all keys always present; readers ignore keys they do not know):
 *   "battery_pct"  uint   0..100, or 255 when unknown
 *   "battery_mv"   uint   cell voltage in mV, 0 when unknown
 *   "reset_cause"  tstr   one of smpgw_reset_cause_name()
 *   "boot_count"   uint   boots since the counter was created (u32)
 *   "uptime_s"     uint   seconds since this boot (u32)
 *   "confirmed"    bool   running image is confirmed in MCUboot
 *   "self_check"   bool   post-boot self-check passed (confirm allowed)
 * Errors follow SMP: {"rc": n} (v1) or {"err": {"group": 64, "rc": n}}.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMPGW_MGMT_GROUP_ID 64
#define SMPGW_MGMT_GROUP_NAME "smpgw"

enum smpgw_mgmt_id {
	SMPGW_MGMT_ID_HEALTH = 0,
};

/* Group-specific return codes carried in "err": {"group": 64, "rc": n}. */
enum smpgw_mgmt_rc {
	SMPGW_MGMT_RC_OK = 0,
	SMPGW_MGMT_RC_UNKNOWN = 1,
	/* img state write refused: self-check has not passed yet. */
	SMPGW_MGMT_RC_SELF_CHECK_PENDING = 2,
};

#define SMPGW_HEALTH_KEY_BATTERY_PCT "battery_pct"
#define SMPGW_HEALTH_KEY_BATTERY_MV "battery_mv"
#define SMPGW_HEALTH_KEY_RESET_CAUSE "reset_cause"
#define SMPGW_HEALTH_KEY_BOOT_COUNT "boot_count"
#define SMPGW_HEALTH_KEY_UPTIME "uptime_s"
#define SMPGW_HEALTH_KEY_CONFIRMED "confirmed"
#define SMPGW_HEALTH_KEY_SELF_CHECK "self_check"
#define SMPGW_HEALTH_NKEYS 7

#define SMPGW_BATTERY_PCT_UNKNOWN 255
#define SMPGW_BATTERY_MV_MAX 10000 /* anything above is not a LiPo cell */

/* Why the watch last reset. Wire form is the name (text), so the numbers
 * here may change without breaking anyone. When the hardware reports
 * several causes, the firmware reports the first in this order. */
enum smpgw_reset_cause {
	SMPGW_RESET_UNKNOWN = 0,
	SMPGW_RESET_WATCHDOG,
	SMPGW_RESET_LOCKUP,
	SMPGW_RESET_BROWNOUT,
	SMPGW_RESET_SOFTWARE,
	SMPGW_RESET_PIN,
	SMPGW_RESET_DEBUG,
	SMPGW_RESET_POWER_ON,
	SMPGW_RESET_OTHER,
	SMPGW_RESET__MAX,
};

struct smpgw_health {
	uint8_t battery_pct;  /* 0..100 or SMPGW_BATTERY_PCT_UNKNOWN */
	uint16_t battery_mv;  /* 0 when unknown */
	enum smpgw_reset_cause reset_cause;
	uint32_t boot_count;
	uint32_t uptime_s;
	bool confirmed;
	bool self_check;
};

/* "watchdog", "lockup", "brownout", "software", "pin", "debug",
 * "power_on", "other", "unknown"; "unknown" for out-of-range values. */
const char *smpgw_reset_cause_name(enum smpgw_reset_cause cause);
/* Inverse of smpgw_reset_cause_name over a counted string (CBOR text is
 * not NUL-terminated). Names this version does not know map to
 * SMPGW_RESET_OTHER so a newer watch does not break an older gateway. */
enum smpgw_reset_cause smpgw_reset_cause_from_name(const char *name, size_t len);

/* 0 if every field is in range, -EINVAL otherwise. */
int smpgw_health_validate(const struct smpgw_health *h);
