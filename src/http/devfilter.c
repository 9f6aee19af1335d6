/* SPDX-License-Identifier: MIT */
/*
 * GET /api/v1/devices filters (devfilter.h). Versions and hashes are
 * matched against "firmware", the best-known running image (from a
 * connection or from advertising, whichever is fresher), so fleet queries
 * work without connecting a single watch.
 */
#include "http/devfilter.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Parameters every route accepts (EventSource auth). */
static const char *const known[] = { "state", "name", "version", "battery_below",
				     "hash", "access_token" };

/* Writes the reason into err and yields -EDOM. */
#define BAD(err, size, ...) (snprintf((err), (size), __VA_ARGS__), -EDOM)

static int parse_battery(const char *v, int *ret)
{
	char *end;
	long n;

	if (!*v || !isdigit((unsigned char)*v))
		return -EDOM;
	n = strtol(v, &end, 10);
	if (*end || n < 0 || n > 101)
		return -EDOM;
	*ret = (int)n;
	return 0;
}

static int parse_hash(const char *v, char out[65])
{
	size_t n = strlen(v);

	if (n == 0 || n > 64 || strspn(v, "0123456789abcdefABCDEF") != n)
		return -EDOM;
	for (size_t i = 0; i <= n; i++)
		out[i] = (char)tolower((unsigned char)v[i]);
	return 0;
}

/* A '+' typed into a URL ("?version=1.2.3+4", as curl sends it) reaches
 * us as a space (form decoding): read it back as MCUboot's '+'. */
static int parse_version(const char *v, struct mcuboot_version *ret)
{
	char buf[MCUBOOT_VERSION_STR_LEN];
	size_t n = strlen(v);

	if (n >= sizeof(buf))
		return -EDOM;
	memcpy(buf, v, n + 1);
	for (char *c = strchr(buf, ' '); c; c = strchr(c, ' '))
		*c = '+';
	return mcuboot_version_parse(buf, n, ret) < 0 ? -EDOM : 0;
}

static int parse_one(const char *k, const char *v, struct devices_filter *f,
		     char *err, size_t size)
{
	if (!strcmp(k, "state")) {
		if (strcmp(v, "down") && strcmp(v, "connecting") && strcmp(v, "up"))
			return BAD(err, size, "%s must be one of down, connecting, up "
				   "(got '%s')", k, v);
		f->state = v;
	} else if (!strcmp(k, "name")) {
		f->name = v;
	} else if (!strcmp(k, "version")) {
		if (parse_version(v, &f->version) < 0)
			return BAD(err, size, "%s must be a firmware version such as "
				   "1.2.3, 1.2.3+4 or 1.2.3.4 (got '%s')", k, v);
		f->has_version = true;
	} else if (!strcmp(k, "battery_below")) {
		if (parse_battery(v, &f->battery_below) < 0)
			return BAD(err, size, "%s must be an integer percent 0..101 "
				   "(got '%s')", k, v);
	} else if (!strcmp(k, "hash")) {
		if (parse_hash(v, f->hash) < 0)
			return BAD(err, size, "%s must be 1 to 64 hex digits, a prefix "
				   "of the image's SHA-256 (got '%s')", k, v);
	}
	return 0;
}

static bool is_known(const char *k)
{
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(k, known[i]))
			return true;
	return false;
}

int devices_filter_parse(const char *const *keys, const char *const *values,
			 size_t n, struct devices_filter *ret, char *err,
			 size_t err_size)
{
	struct devices_filter f = { .battery_below = -1 };

	for (size_t i = 0; i < n; i++) {
		const char *v = values[i] ? values[i] : "";

		if (!is_known(keys[i]))
			return BAD(err, err_size, "unknown query parameter '%s' (the "
				   "filters are state, name, version, battery_below, "
				   "hash)", keys[i]);
		if (parse_one(keys[i], v, &f, err, err_size) < 0)
			return -EDOM;
	}
	*ret = f;
	return 0;
}

static bool version_matches(const struct devices_filter *f, const json_t *fw)
{
	const char *v = json_string_value(json_object_get(fw, "version"));
	struct mcuboot_version have;

	return v && mcuboot_version_parse(v, strlen(v), &have) == 0 &&
	       mcuboot_version_equal(&have, &f->version);
}

/* A prefix of what is known: the advertised hash is itself a prefix, so
 * the shorter of the two decides. */
static bool hash_matches(const char *want, const json_t *fw)
{
	const char *h = json_string_value(json_object_get(fw, "hash"));
	size_t n;

	if (!h)
		return false;
	n = strlen(want) < strlen(h) ? strlen(want) : strlen(h);
	return n > 0 && !strncasecmp(want, h, n);
}

bool devices_filter_match(const struct devices_filter *f, const json_t *dev)
{
	const json_t *fw = json_object_get(dev, "firmware");
	const char *name = json_string_value(json_object_get(dev, "name"));
	const char *state = json_string_value(json_object_get(dev, "link_state"));
	const json_t *battery = json_object_get(dev, "battery");

	if (f->state && (!state || strcmp(f->state, state)))
		return false;
	if (f->name && (!name || fnmatch(f->name, name, 0)))
		return false;
	if (f->has_version && !version_matches(f, fw))
		return false;
	if (f->battery_below >= 0 && (!json_is_integer(battery) ||
				      json_integer_value(battery) >= f->battery_below))
		return false;
	if (f->hash[0] && !hash_matches(f->hash, fw))
		return false;
	return true;
}
