/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the rollout document parser (a REST body, and the
 * normalized copy read back from the store): whatever parses must
 * normalize to a document that parses again to the same normalization,
 * and its window must locate without trouble.
 */
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "gateway/rollouts-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_round_trip(const json_t *norm)
{
	struct ro_spec s2;
	json_t *norm2 = NULL;
	char *err = NULL;

	if (ro_spec_parse(norm, &s2, &norm2, &err) != 0 || !json_equal(norm, norm2))
		abort(); /* the store could not read back what it wrote */
	ro_spec_clear(&s2);
	json_decref(norm2);
	free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *j = json_loadb((const char *)data, size, 0, NULL);
	struct ro_spec s;
	json_t *norm = NULL;
	char *err = NULL;
	bool inside;
	int64_t next;

	if (j && ro_spec_parse(j, &s, &norm, &err) == 0) {
		check_round_trip(norm);
		/* 2026-03-29 00:30 UTC: Europe's spring change is near. */
		rollout_window_locate(&s.window, 1774744200000LL, &inside, &next, NULL);
		for (size_t i = 0; i < 60; i++)
			rollout_wave_of(&s.policy, i);
		ro_spec_clear(&s);
		json_decref(norm);
	}
	free(err);
	json_decref(j);
	return 0;
}
