/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the smpgwd INI config parser. */
#include <stdint.h>
#include <stdlib.h>

#include "gateway/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_config *cfg = NULL;
	char *err = NULL;

	if (gw_config_parse(data, size, &cfg, &err) == 0) {
		/* Exercise the lookups on whatever parsed. */
		gw_config_ble_allowed(cfg, "AA:BB:CC:DD:EE:FF", "InfiniTime");
		if (cfg->n_devices)
			gw_config_find_device(cfg, cfg->devices[0].name);
	}
	gw_config_free(cfg);
	free(err);
	return 0;
}
