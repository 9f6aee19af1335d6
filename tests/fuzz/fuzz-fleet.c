/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the fleet file parser must never crash or leak, must
 * explain every refusal, and an accepted spec must have 1..max devices. */
#include <stdlib.h>
#include <string.h>

#include "fleet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sim_fleet_spec *spec = NULL;
	char err[256] = "";

	if (sim_fleet_spec_parse(data, size, &spec, err, sizeof(err)) == 0) {
		size_t n = sim_fleet_spec_count(spec);
		if (n == 0 || n > SIM_FLEET_MAX_DEVICES)
			abort();
		sim_fleet_spec_free(spec);
	} else if (!err[0] || spec) {
		abort();
	}
	return 0;
}
