/* SPDX-License-Identifier: MIT */
/*
 * Plain-C side of the smpgw user SMP group: reset-cause names and health
 * validation. Compiled on the host and in the Zephyr app.
 */
#include <errno.h>
#include <string.h>

#include "smpgw/usergroup.h"

static const char *const reset_names[SMPGW_RESET__MAX] = {
	[SMPGW_RESET_UNKNOWN] = "unknown",
	[SMPGW_RESET_WATCHDOG] = "watchdog",
	[SMPGW_RESET_LOCKUP] = "lockup",
	[SMPGW_RESET_BROWNOUT] = "brownout",
	[SMPGW_RESET_SOFTWARE] = "software",
	[SMPGW_RESET_PIN] = "pin",
	[SMPGW_RESET_DEBUG] = "debug",
	[SMPGW_RESET_POWER_ON] = "power_on",
	[SMPGW_RESET_OTHER] = "other",
};

const char *smpgw_reset_cause_name(enum smpgw_reset_cause cause)
{
	if ((unsigned)cause >= SMPGW_RESET__MAX)
		return reset_names[SMPGW_RESET_UNKNOWN];
	return reset_names[cause];
}

enum smpgw_reset_cause smpgw_reset_cause_from_name(const char *name, size_t len)
{
	for (unsigned i = 0; name && i < SMPGW_RESET__MAX; i++) {
		if (strlen(reset_names[i]) == len && memcmp(reset_names[i], name, len) == 0)
			return (enum smpgw_reset_cause)i;
	}
	return SMPGW_RESET_OTHER;
}

int smpgw_health_validate(const struct smpgw_health *h)
{
	if (!h)
		return -EINVAL;
	if (h->battery_pct > 100 && h->battery_pct != SMPGW_BATTERY_PCT_UNKNOWN)
		return -EINVAL;
	if (h->battery_mv > SMPGW_BATTERY_MV_MAX)
		return -EINVAL;
	if ((unsigned)h->reset_cause >= SMPGW_RESET__MAX)
		return -EINVAL;
	return 0;
}
