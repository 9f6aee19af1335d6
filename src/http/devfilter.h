/* SPDX-License-Identifier: MIT */
/*
 * The query of GET /api/v1/devices: parsing its parameters (every one
 * checked, an unknown one refused) and matching a device's JSON
 * (gw_device_to_json()) against them. Pure, for unit tests.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "codec/mcuboot.h"

struct devices_filter {
	const char *state;        /* "down", "connecting", "up" or NULL */
	const char *name;         /* shell glob or NULL */
	bool has_version;
	struct mcuboot_version version; /* firmware version, either form */
	int battery_below;        /* battery < N (0..101); -1: no filter */
	char hash[65];            /* lower-case hex prefix; "" no filter */
};

/* Parses n query parameters (keys[i]=values[i], borrowed: the filter
 * keeps pointers into values). Returns 0, or -EDOM with a sentence naming
 * the parameter in err (an unknown parameter, a bad value). */
int devices_filter_parse(const char *const *keys, const char *const *values,
			 size_t n, struct devices_filter *ret, char *err,
			 size_t err_size);
/* True when the device JSON passes every filter set. */
bool devices_filter_match(const struct devices_filter *f, const json_t *dev);
