/* SPDX-License-Identifier: MIT */
/* libFuzzer target: advertising record and raw AD parsing must never
 * crash, and a decoded record must re-encode to the bytes it came from. */
#include <stdlib.h>
#include <string.h>

#include "smpgw/adv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smpgw_adv a;
	uint8_t out[SMPGW_ADV_RECORD_LEN];

	if (smpgw_adv_decode(data, size, &a) == 0) {
		if (smpgw_adv_encode(&a, out, sizeof(out)) != SMPGW_ADV_RECORD_LEN ||
		    memcmp(out, data, sizeof(out)) != 0)
			abort();
	}
	(void)smpgw_adv_parse_ad(data, size, &a);
	return 0;
}
