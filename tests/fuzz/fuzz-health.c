/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the smpgw health response decoder must never crash,
 * and whatever it accepts must re-encode and decode to the same fields. */
#include <stdlib.h>
#include <string.h>

#include "smpgw/usergroup-cbor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smpgw_health h, back;
	uint8_t out[256];
	int n;

	if (smpgw_health_decode(data, size, &h) < 0)
		return 0;
	n = smpgw_health_encode(&h, out, sizeof(out));
	if (n < 0 || smpgw_health_decode(out, (size_t)n, &back) < 0)
		abort();
	if (h.battery_pct != back.battery_pct || h.battery_mv != back.battery_mv ||
	    h.reset_cause != back.reset_cause || h.boot_count != back.boot_count ||
	    h.uptime_s != back.uptime_s || h.confirmed != back.confirmed ||
	    h.self_check != back.self_check)
		abort();
	return 0;
}
