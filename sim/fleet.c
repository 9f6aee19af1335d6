/* SPDX-License-Identifier: MIT */
/*
 * Fleet file parser and the running fleet. The parser validates every key
 * (unknown keys are errors: a typo must not silently fall back to a default)
 * and resolves "defaults" + "devices"[i] + generated names/addresses into one
 * device config per watch. The fleet shares initial images: one buffer per
 * distinct file or synthesized version, referenced copy-on-write by slots.
 */
#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "device-int.h"
#include "fleet.h"
#include "smpgw/adv.h"
#include "util/util.h"

#ifndef SIM_CONFORMANCE_IMAGES
#define SIM_CONFORMANCE_IMAGES "tests/data/conformance/images"
#endif

#define DEFAULT_MAX_CONNECTIONS 10
#define MAX_CENTRALS 8

/* One gateway bus hearing a watch (fleet key "heard": {"g1": -50}). */
struct hearing {
	char bus[SIM_FLEET_BUS_NAME_MAX + 1];
	int rssi;
};

struct dev_spec {
	struct sim_device_config cfg; /* name/address/initial filled at build time */
	char *name, *address, *image; /* owned */
	struct { uint8_t major, minor; uint16_t rev; uint32_t build; } ver;
	bool adapter_set;
	uint16_t udp_port;
	bool serial;
	bool pairing_required, refuse_pairing, volatile_bonds;
	struct hearing *heard;        /* owned; with heard_set: only these buses hear it */
	size_t nheard;
	bool heard_set;
	unsigned centrals;            /* centrals it accepts at once (CONFIG_BT_MAX_CONN) */
};

struct adapter_spec {
	unsigned max_connections;
	char address[18];
	char bus[SIM_FLEET_BUS_NAME_MAX + 1]; /* "": one copy on every bus */
};

struct sim_fleet_spec {
	struct dev_spec *devs;
	size_t n;
	struct adapter_spec adapters[SIM_FLEET_MAX_ADAPTERS];
	unsigned nadapters;
	uint16_t udp_base;
	bool serial_all;
	uint64_t seed;
};

/* ---- parse errors ------------------------------------------------------------ */

struct perr {
	char *buf;
	size_t size;
};

static int fail(struct perr *e, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct perr *e, const char *path, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (e->buf && e->size) {
		n = snprintf(e->buf, e->size, "%s%s", path, *path ? ": " : "");
		if (n >= 0 && (size_t)n < e->size) {
			va_start(ap, fmt);
			vsnprintf(e->buf + n, e->size - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EBADMSG;
}

static int get_uint(struct perr *e, const char *path, const json_t *v, uint64_t min,
		    uint64_t max, uint64_t *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max)
		return fail(e, path, "must be an integer %llu..%llu", (unsigned long long)min,
			    (unsigned long long)max);
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_bool(struct perr *e, const char *path, const json_t *v, bool *ret)
{
	if (!json_is_boolean(v))
		return fail(e, path, "must be true or false");
	*ret = json_is_true(v);
	return 0;
}

static int get_str(struct perr *e, const char *path, const json_t *v, size_t max, char **ret)
{
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return fail(e, path, "must be a non-empty string of at most %zu bytes", max);
	free(*ret);
	*ret = xstrdup(json_string_value(v));
	return 0;
}

static bool valid_address(const char *a)
{
	if (strlen(a) != 17)
		return false;
	for (int i = 0; i < 17; i++)
		if (i % 3 == 2 ? a[i] != ':' : !isxdigit((unsigned char)a[i]))
			return false;
	return true;
}

static int parse_version(const char *s, struct dev_spec *d)
{
	unsigned ma, mi, rev, build = 0;
	int n = 0;

	if (sscanf(s, "%u.%u.%u%n", &ma, &mi, &rev, &n) != 3)
		return -EINVAL;
	if (s[n] == '+' && sscanf(s + n + 1, "%u%n", &build, &n) == 1)
		s += n + 1;
	else
		s += n;
	if (*s || ma > 255 || mi > 255 || rev > 65535)
		return -EINVAL;
	d->ver.major = (uint8_t)ma;
	d->ver.minor = (uint8_t)mi;
	d->ver.rev = (uint16_t)rev;
	d->ver.build = build;
	return 0;
}

/* ---- sections ----------------------------------------------------------------------- */

/* "path.key" into sub (truncated paths are still good enough for errors). */
static const char *field_path(char *sub, size_t size, const char *path, const char *key)
{
	if (snprintf(sub, size, "%s.%s", path, key) >= (int)size)
		sub[size - 1] = '\0';
	return sub;
}

#define FIELD(p, name) field_path(sub, sizeof(sub), p, name)

/* Integer fields of the link model: key, range, where, width. */
static const struct {
	const char *key;
	uint32_t min, max;
	size_t off, size;
} link_fields[] = {
#define LF(k, lo, hi) { #k, lo, hi, offsetof(struct sim_link_model, k), \
			sizeof(((struct sim_link_model *)0)->k) }
	LF(conn_interval_us, 7500, 4000000), LF(phy, 1, 2), LF(ll_payload, 27, 251),
	LF(pkts_per_event, 1, 64), LF(att_mtu, 23, 517), LF(buf_size, 64, 65535),
	LF(buf_count, 1, 64),
#undef LF
};

static int parse_link_key(struct perr *e, const char *p, const char *key, const json_t *v,
			  struct sim_link_model *m)
{
	uint64_t u;
	int r;

	if (!strcmp(key, "reassembly"))
		return get_bool(e, p, v, &m->reassembly);
	for (size_t i = 0; i < ARRAY_SIZE(link_fields); i++) {
		if (strcmp(key, link_fields[i].key))
			continue;
		if ((r = get_uint(e, p, v, link_fields[i].min, link_fields[i].max, &u)))
			return r;
		uint8_t *at = (uint8_t *)m + link_fields[i].off;
		if (link_fields[i].size == 1)
			*at = (uint8_t)u;
		else if (link_fields[i].size == 2)
			*(uint16_t *)(void *)at = (uint16_t)u;
		else
			*(uint32_t *)(void *)at = (uint32_t)u;
		return 0;
	}
	return fail(e, p, "unknown key");
}

static int parse_link(struct perr *e, const char *path, const json_t *o, struct sim_link_model *m)
{
	char sub[160];
	const char *key, *why;
	json_t *v;
	int r;

	if (!json_is_object(o))
		return fail(e, path, "must be an object");
	json_object_foreach((json_t *)o, key, v) {
		if ((r = parse_link_key(e, FIELD(path, key), key, v, m)))
			return r;
	}
	if (sim_link_model_validate(m, &why) < 0)
		return fail(e, path, "%s", why);
	return 0;
}

static int parse_flash(struct perr *e, const char *path, const json_t *o,
		       struct sim_flash_timing *f)
{
	char sub[160];
	const char *key;
	json_t *v;
	uint64_t u;
	int r = 0;

	if (!json_is_object(o))
		return fail(e, path, "must be an object");
	json_object_foreach((json_t *)o, key, v) {
		const char *p = FIELD(path, key);
		if (!strcmp(key, "erase_sector_us")) {
			if (!(r = get_uint(e, p, v, 0, 10000000, &u)))
				f->erase_sector_us = (uint32_t)u;
		} else if (!strcmp(key, "program_page_us")) {
			if (!(r = get_uint(e, p, v, 0, 1000000, &u)))
				f->program_page_us = (uint32_t)u;
		} else if (!strcmp(key, "progressive_erase")) {
			r = get_bool(e, p, v, &f->progressive_erase);
		} else {
			r = fail(e, p, "unknown key");
		}
		if (r)
			return r;
	}
	return 0;
}

bool sim_fleet_bus_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > SIM_FLEET_BUS_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i]))
			return false;
	return true;
}

/* "heard": {"g1": -50, "g2": -72}: the buses (gateways) that hear the
 * watch and at what RSSI; a bus not named does not hear it. */
static int parse_heard(struct perr *e, const char *path, const json_t *o, struct dev_spec *d)
{
	char sub[160];
	const char *key;
	json_t *v;

	if (!json_is_object(o) || json_object_size(o) > SIM_FLEET_MAX_BUSES)
		return fail(e, path, "must be an object of at most %d bus names to RSSI",
			    SIM_FLEET_MAX_BUSES);
	free(d->heard);
	d->heard = xnew_array(struct hearing, json_object_size(o) ? json_object_size(o) : 1);
	d->nheard = 0;
	d->heard_set = true;
	json_object_foreach((json_t *)o, key, v) {
		const char *p = FIELD(path, key);
		struct hearing *h = &d->heard[d->nheard++];

		if (!sim_fleet_bus_name_valid(key))
			return fail(e, p, "a bus name is 1..%d letters, digits, '_', '.', '-'",
				    SIM_FLEET_BUS_NAME_MAX);
		if (!json_is_integer(v) || json_integer_value(v) < -127 || json_integer_value(v) > 20)
			return fail(e, p, "must be an integer -127..20");
		snprintf(h->bus, sizeof(h->bus), "%s", key);
		h->rssi = (int)json_integer_value(v);
	}
	return 0;
}

static int parse_device_key(struct perr *e, const char *p, const char *key, const json_t *v,
			    struct dev_spec *d)
{
	uint64_t u;
	int r;

	if (!strcmp(key, "name"))
		return get_str(e, p, v, 64, &d->name);
	if (!strcmp(key, "address")) {
		if ((r = get_str(e, p, v, 17, &d->address)))
			return r;
		return valid_address(d->address) ? 0 : fail(e, p, "must look like C0:FF:EE:00:00:01");
	}
	if (!strcmp(key, "rssi")) {
		if (!json_is_integer(v) || json_integer_value(v) < -127 || json_integer_value(v) > 20)
			return fail(e, p, "must be an integer -127..20");
		d->cfg.rssi = (int)json_integer_value(v);
		return 0;
	}
	if (!strcmp(key, "adapter")) {
		if ((r = get_uint(e, p, v, 0, SIM_FLEET_MAX_ADAPTERS - 1, &u)))
			return r;
		d->cfg.adapter = (unsigned)u;
		d->adapter_set = true;
		return 0;
	}
	if (!strcmp(key, "in_range"))
		return get_bool(e, p, v, &d->cfg.in_range);
	if (!strcmp(key, "heard"))
		return parse_heard(e, p, v, d);
	if (!strcmp(key, "centrals")) {
		if ((r = get_uint(e, p, v, 1, MAX_CENTRALS, &u)))
			return r;
		d->centrals = (unsigned)u;
		return 0;
	}
	if (!strcmp(key, "image"))
		return get_str(e, p, v, 4096, &d->image);
	if (!strcmp(key, "version")) {
		if (!json_is_string(v) || parse_version(json_string_value(v), d) < 0)
			return fail(e, p, "must be a version like \"1.0.0\" or \"1.2.3+4\"");
		return 0;
	}
	if (!strcmp(key, "boot_ms")) {
		if ((r = get_uint(e, p, v, 0, 600000, &u)))
			return r;
		d->cfg.boot_ms = (uint32_t)u;
		return 0;
	}
	if (!strcmp(key, "self_check_ms")) {
		if ((r = get_uint(e, p, v, 0, 86400000, &u)))
			return r;
		d->cfg.self_check_ms = (uint32_t)u;
		return 0;
	}
	if (!strcmp(key, "proc_us")) { /* benchmarks: 0 = no simulated CPU time */
		if ((r = get_uint(e, p, v, 0, 1000000, &u)))
			return r;
		d->cfg.proc_us = (uint32_t)u;
		return 0;
	}
	if (!strcmp(key, "battery_pct")) {
		if ((r = get_uint(e, p, v, 0, 100, &u)))
			return r;
		d->cfg.battery_pct = (uint8_t)u;
		return 0;
	}
	if (!strcmp(key, "battery_mv")) {
		if ((r = get_uint(e, p, v, 0, 10000, &u)))
			return r;
		d->cfg.battery_mv = (uint32_t)u;
		return 0;
	}
	if (!strcmp(key, "udp_port")) {
		if ((r = get_uint(e, p, v, 0, 65535, &u)))
			return r;
		d->udp_port = (uint16_t)u;
		return 0;
	}
	if (!strcmp(key, "serial"))
		return get_bool(e, p, v, &d->serial);
	if (!strcmp(key, "pairing_required"))
		return get_bool(e, p, v, &d->pairing_required);
	if (!strcmp(key, "refuse_pairing"))
		return get_bool(e, p, v, &d->refuse_pairing);
	if (!strcmp(key, "volatile_bonds"))
		return get_bool(e, p, v, &d->volatile_bonds);
	if (!strcmp(key, "image_check"))
		return get_bool(e, p, v, &d->cfg.image_check);
	if (!strcmp(key, "link"))
		return parse_link(e, p, v, &d->cfg.link);
	if (!strcmp(key, "flash"))
		return parse_flash(e, p, v, &d->cfg.flash);
	return fail(e, p, "unknown key");
}

static int parse_device(struct perr *e, const char *path, const json_t *o, struct dev_spec *d)
{
	char sub[160];
	const char *key;
	json_t *v;
	int r;

	if (!json_is_object(o))
		return fail(e, path, "must be an object");
	json_object_foreach((json_t *)o, key, v) {
		if ((r = parse_device_key(e, FIELD(path, key), key, v, d)))
			return r;
	}
	return 0;
}

static int parse_adapters(struct perr *e, const json_t *a, struct sim_fleet_spec *s)
{
	char sub[160];
	size_t i;
	json_t *o;

	if (!json_is_array(a) || json_array_size(a) < 1 ||
	    json_array_size(a) > SIM_FLEET_MAX_ADAPTERS)
		return fail(e, "adapters", "must be an array of 1..%d objects", SIM_FLEET_MAX_ADAPTERS);
	json_array_foreach(a, i, o) {
		const char *key;
		json_t *v;
		uint64_t u;
		int r;

		if (snprintf(sub, sizeof(sub), "adapters[%zu]", i) < 0)
			return -EBADMSG;
		if (!json_is_object(o))
			return fail(e, sub, "must be an object");
		json_object_foreach(o, key, v) {
			char p[200];
			field_path(p, sizeof(p), sub, key);
			if (!strcmp(key, "bus")) {
				if (!json_is_string(v) || !sim_fleet_bus_name_valid(json_string_value(v)))
					return fail(e, p, "a bus name is 1..%d letters, digits, "
						    "'_', '.', '-'", SIM_FLEET_BUS_NAME_MAX);
				snprintf(s->adapters[i].bus, sizeof(s->adapters[i].bus), "%s",
					 json_string_value(v));
				continue;
			}
			if (strcmp(key, "max_connections"))
				return fail(e, p, "unknown key");
			if ((r = get_uint(e, p, v, 1, 64, &u)))
				return r;
			s->adapters[i].max_connections = (unsigned)u;
		}
	}
	s->nadapters = (unsigned)json_array_size(a);
	return 0;
}

/* ---- resolution ------------------------------------------------------------------------ */

static void dev_spec_copy(struct dev_spec *dst, const struct dev_spec *src)
{
	*dst = *src;
	dst->name = src->name ? xstrdup(src->name) : NULL;
	dst->address = src->address ? xstrdup(src->address) : NULL;
	dst->image = src->image ? xstrdup(src->image) : NULL;
	dst->heard = NULL;
	if (src->heard_set) {
		dst->heard = xnew_array(struct hearing, src->nheard ? src->nheard : 1);
		memcpy(dst->heard, src->heard, src->nheard * sizeof(*src->heard));
	}
}

static void dev_spec_clear(struct dev_spec *d)
{
	free(d->name);
	free(d->address);
	free(d->image);
	free(d->heard);
}

/* "{n}" in a name becomes the 1-based device number. */
static char *expand_name(const char *pattern, size_t i)
{
	const char *at = strstr(pattern, "{n}");

	if (!at)
		return xstrdup(pattern);
	return xasprintf("%.*s%zu%s", (int)(at - pattern), pattern, i + 1, at + 3);
}

static int cmp_addr(const void *a, const void *b)
{
	return strcasecmp((*(struct dev_spec *const *)a)->address,
			  (*(struct dev_spec *const *)b)->address);
}

static int resolve(struct perr *e, struct sim_fleet_spec *s, const json_t *devices,
		   const struct dev_spec *defs, size_t count)
{
	size_t ndev = json_array_size(devices);
	bool pattern = defs->name && strstr(defs->name, "{n}");
	int r;

	s->n = MAX(count, ndev);
	if (s->n == 0)
		return fail(e, "", "no devices: give \"count\" or \"devices\"");
	s->devs = xnew_array(struct dev_spec, s->n);
	for (size_t i = 0; i < s->n; i++) {
		struct dev_spec *d = &s->devs[i];
		char path[64];

		dev_spec_copy(d, defs);
		free(d->address); /* an address is per device */
		d->address = NULL;
		snprintf(path, sizeof(path), "devices[%zu]", i);
		if (i < ndev && (r = parse_device(e, path, json_array_get(devices, i), d)))
			return r;
		if (!d->name || (pattern && d->name && strcmp(d->name, defs->name) == 0)) {
			char *n = expand_name(defs->name ? defs->name : "PineTime-{n}", i);
			free(d->name);
			d->name = n;
		}
		if (!d->address)
			d->address = xasprintf("C0:FF:EE:%02X:%02X:%02X", (unsigned)((i + 1) >> 16) & 0xff,
					       (unsigned)((i + 1) >> 8) & 0xff, (unsigned)(i + 1) & 0xff);
		if (!d->adapter_set)
			d->cfg.adapter = (unsigned)(i % s->nadapters);
		if (d->cfg.adapter >= s->nadapters)
			return fail(e, path, "adapter %u does not exist (%u adapters)", d->cfg.adapter,
				    s->nadapters);
	}
	struct dev_spec **sorted = xnew_array(struct dev_spec *, s->n);
	for (size_t i = 0; i < s->n; i++)
		sorted[i] = &s->devs[i];
	qsort(sorted, s->n, sizeof(*sorted), cmp_addr);
	r = 0;
	for (size_t i = 1; i < s->n && !r; i++)
		if (!strcasecmp(sorted[i]->address, sorted[i - 1]->address))
			r = fail(e, "devices", "address %s used twice", sorted[i]->address);
	free(sorted);
	return r;
}

static void defaults_init(struct dev_spec *d)
{
	memset(d, 0, sizeof(*d));
	sim_device_config_default(&d->cfg);
	d->cfg.name = d->cfg.address = NULL;
	d->ver.major = 1;
	d->centrals = 1;
}

static int parse_root(struct perr *e, const json_t *root, struct sim_fleet_spec *s)
{
	const char *key;
	json_t *v, *devices = NULL;
	struct dev_spec defs;
	uint64_t count = 0;
	int r = 0;

	defaults_init(&defs);
	if (!json_is_object(root))
		return fail(e, "", "the fleet file must be a JSON object");
	json_object_foreach((json_t *)root, key, v) {
		if (!strcmp(key, "adapters"))
			r = parse_adapters(e, v, s);
		else if (!strcmp(key, "count"))
			r = get_uint(e, "count", v, 1, SIM_FLEET_MAX_DEVICES, &count);
		else if (!strcmp(key, "seed"))
			r = get_uint(e, "seed", v, 0, UINT32_MAX, &s->seed);
		else if (!strcmp(key, "devices")) {
			if (!json_is_array(v) || json_array_size(v) > SIM_FLEET_MAX_DEVICES)
				r = fail(e, "devices", "must be an array of at most %d objects",
					 SIM_FLEET_MAX_DEVICES);
			devices = v;
		} else if (strcmp(key, "defaults"))
			r = fail(e, key, "unknown key (expected defaults, devices, count, adapters, seed)");
		if (r)
			goto out;
	}
	/* defaults after adapters are known, devices after defaults */
	v = json_object_get(root, "defaults");
	if (v && (r = parse_device(e, "defaults", v, &defs)))
		goto out;
	if (defs.address) {
		r = fail(e, "defaults.address", "an address is per device");
		goto out;
	}
	r = resolve(e, s, devices, &defs, (size_t)count);
out:
	dev_spec_clear(&defs);
	return r;
}

static struct sim_fleet_spec *spec_alloc(void)
{
	struct sim_fleet_spec *s = xnew(struct sim_fleet_spec);

	s->nadapters = 1;
	for (unsigned i = 0; i < SIM_FLEET_MAX_ADAPTERS; i++)
		s->adapters[i].max_connections = DEFAULT_MAX_CONNECTIONS;
	return s;
}

int sim_fleet_spec_parse(const uint8_t *buf, size_t len, struct sim_fleet_spec **ret,
			 char *err, size_t err_size)
{
	struct perr e = { err, err_size };
	struct sim_fleet_spec *s;
	json_error_t jerr;
	json_t *root;
	int r;

	root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return fail(&e, "", "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
	s = spec_alloc();
	r = parse_root(&e, root, s);
	json_decref(root);
	if (r < 0) {
		sim_fleet_spec_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

/* The lowest cell voltage the firmware's curve reads as pct (health.c:
 * smpgw_battery_percent), so health's battery_mv agrees with battery_pct. */
static uint16_t battery_mv_for(uint8_t pct)
{
	for (uint16_t mv = 3000; mv < SMPGW_BATTERY_MV_MAX; mv++)
		if (smpgw_battery_percent(mv) >= pct)
			return mv;
	return SMPGW_BATTERY_MV_MAX;
}

/* A --count fleet (the demo's) gets a spread of batteries, 5..100 %, the
 * same per index every run: 100, 77, 54, 31, 8, 81, ... so a battery
 * filter finds a few low watches. */
static void spread_batteries(struct sim_fleet_spec *s)
{
	for (size_t i = 0; i < s->n; i++) {
		s->devs[i].cfg.battery_pct = (uint8_t)(100 - (i * 23) % 96);
		s->devs[i].cfg.battery_mv = battery_mv_for(s->devs[i].cfg.battery_pct);
	}
}

struct sim_fleet_spec *sim_fleet_spec_new_count(unsigned n)
{
	struct sim_fleet_spec *s;
	struct dev_spec defs;
	struct perr e = { NULL, 0 };

	if (n == 0 || n > SIM_FLEET_MAX_DEVICES)
		return NULL;
	s = spec_alloc();
	defaults_init(&defs);
	defs.name = xstrdup("PineTime-{n}");
	resolve(&e, s, NULL, &defs, n);
	dev_spec_clear(&defs);
	spread_batteries(s);
	return s;
}

struct sim_fleet_spec *sim_fleet_spec_free(struct sim_fleet_spec *spec)
{
	if (!spec)
		return NULL;
	for (size_t i = 0; spec->devs && i < spec->n; i++)
		dev_spec_clear(&spec->devs[i]);
	free(spec->devs);
	free(spec);
	return NULL;
}

size_t sim_fleet_spec_count(const struct sim_fleet_spec *spec)
{
	return spec->n;
}

void sim_fleet_spec_set_udp_base(struct sim_fleet_spec *spec, uint16_t base)
{
	spec->udp_base = base;
}

void sim_fleet_spec_set_serial(struct sim_fleet_spec *spec, bool on)
{
	spec->serial_all = on;
}

void sim_fleet_spec_set_seed(struct sim_fleet_spec *spec, uint64_t seed)
{
	spec->seed = seed;
}

/* ---- the running fleet ------------------------------------------------------------------- */

struct image_cache_ent {
	char *key;
	struct sim_image *img;
};

struct sim_fleet {
	struct sim_device **devs;
	uint16_t *udp;
	bool *serial;
	size_t n;
	unsigned nadapters;
	unsigned max_conn[SIM_FLEET_MAX_ADAPTERS];
	char adapter_addr[SIM_FLEET_MAX_ADAPTERS][18];
	char adapter_bus[SIM_FLEET_MAX_ADAPTERS][SIM_FLEET_BUS_NAME_MAX + 1];
	struct radio {
		struct hearing *heard; /* owned, NULL: every bus hears it at its rssi */
		size_t nheard;
		unsigned centrals, links;
	} *radio;
	struct image_cache_ent *images;
	size_t nimages;
};

static struct sim_image *cache_get(struct sim_fleet *f, const char *key)
{
	for (size_t i = 0; i < f->nimages; i++)
		if (!strcmp(f->images[i].key, key))
			return f->images[i].img;
	return NULL;
}

static void cache_put(struct sim_fleet *f, const char *key, struct sim_image *img)
{
	f->images = xrealloc(f->images, (f->nimages + 1) * sizeof(*f->images));
	f->images[f->nimages++] = (struct image_cache_ent){ xstrdup(key), img };
}

static struct sim_image *load_image(struct sim_fleet *f, const char *path, const char *dir,
				    char *err, size_t err_size)
{
	struct sim_image *img = cache_get(f, path);
	char *full;
	int e = ENOENT;

	if (img)
		return img;
	full = path[0] == '/' ? xstrdup(path) : xasprintf("%s/%s", dir ? dir : ".", path);
	img = sim_image_load(full);
	if (!img && path[0] != '/') {
		e = errno;
		free(full);
		full = xasprintf("%s/%s", SIM_CONFORMANCE_IMAGES, path);
		img = sim_image_load(full);
	}
	if (!img) {
		snprintf(err, err_size, "image %s: %s", path, strerror(errno ? errno : e));
		free(full);
		return NULL;
	}
	free(full);
	cache_put(f, path, img);
	return img;
}

static struct sim_image *initial_image(struct sim_fleet *f, const struct dev_spec *d,
				       const char *dir, char *err, size_t err_size)
{
	char key[64];
	struct sim_image *img;

	if (d->image)
		return load_image(f, d->image, dir, err, err_size);
	snprintf(key, sizeof(key), "synth:%u.%u.%u+%u", d->ver.major, d->ver.minor, d->ver.rev,
		 (unsigned)d->ver.build);
	img = cache_get(f, key);
	if (!img) {
		/* a realistic app size, shared by every device on this version */
		img = sim_image_synthesize(d->ver.major, d->ver.minor, d->ver.rev, d->ver.build,
					   100 * 1024, 1);
		cache_put(f, key, img);
	}
	return img;
}

struct sim_fleet *sim_fleet_new(struct event_base *base, const struct sim_fleet_spec *spec,
				const char *image_dir, char *err, size_t err_size)
{
	struct sim_fleet *f = xnew(struct sim_fleet);

	f->n = spec->n;
	f->devs = xnew_array(struct sim_device *, f->n);
	f->udp = xnew_array(uint16_t, f->n);
	f->serial = xnew_array(bool, f->n);
	f->radio = xnew_array(struct radio, f->n ? f->n : 1);
	f->nadapters = spec->nadapters;
	for (unsigned i = 0; i < spec->nadapters; i++) {
		f->max_conn[i] = spec->adapters[i].max_connections;
		memcpy(f->adapter_bus[i], spec->adapters[i].bus, sizeof(f->adapter_bus[i]));
		snprintf(f->adapter_addr[i], sizeof(f->adapter_addr[i]), "00:AA:%02X:00:00:00",
			 (unsigned)(uint8_t)i);
	}
	for (size_t i = 0; i < f->n; i++) {
		const struct dev_spec *d = &spec->devs[i];
		struct sim_device_config cfg = d->cfg;
		struct sim_faults faults;

		cfg.name = d->name;
		cfg.address = d->address;
		cfg.seed = spec->seed * 1000003u + i + 1;
		cfg.initial = initial_image(f, d, image_dir, err, err_size);
		if (!cfg.initial || !(f->devs[i] = sim_device_new(base, &cfg))) {
			if (cfg.initial)
				snprintf(err, err_size, "device %s: bad configuration", d->name);
			f->n = i;
			return sim_fleet_free(f);
		}
		faults = *sim_device_faults(f->devs[i]);
		faults.pairing_required = d->pairing_required;
		faults.refuse_pairing = d->refuse_pairing;
		faults.volatile_bonds = d->volatile_bonds;
		sim_device_set_faults(f->devs[i], &faults);
		f->udp[i] = spec->udp_base ? (uint16_t)(spec->udp_base + i) : d->udp_port;
		f->serial[i] = spec->serial_all || d->serial;
		f->radio[i].centrals = d->centrals ? d->centrals : 1;
		if (d->heard_set) {
			f->radio[i].heard = xnew_array(struct hearing, d->nheard ? d->nheard : 1);
			memcpy(f->radio[i].heard, d->heard, d->nheard * sizeof(*d->heard));
			f->radio[i].nheard = d->nheard;
		}
	}
	return f;
}

struct sim_fleet *sim_fleet_free(struct sim_fleet *fleet)
{
	if (!fleet)
		return NULL;
	for (size_t i = 0; i < fleet->n; i++) {
		sim_device_free(fleet->devs[i]);
		free(fleet->radio[i].heard);
	}
	free(fleet->radio);
	for (size_t i = 0; i < fleet->nimages; i++) {
		free(fleet->images[i].key);
		sim_image_unref(fleet->images[i].img);
	}
	free(fleet->images);
	free(fleet->devs);
	free(fleet->udp);
	free(fleet->serial);
	free(fleet);
	return NULL;
}

size_t sim_fleet_count(const struct sim_fleet *fleet)
{
	return fleet->n;
}

struct sim_device *sim_fleet_device(const struct sim_fleet *fleet, size_t i)
{
	return i < fleet->n ? fleet->devs[i] : NULL;
}

struct sim_device *sim_fleet_find(const struct sim_fleet *fleet, const char *key)
{
	for (size_t i = 0; i < fleet->n; i++)
		if (!strcasecmp(sim_device_address(fleet->devs[i]), key) ||
		    !strcmp(sim_device_name(fleet->devs[i]), key))
			return fleet->devs[i];
	return NULL;
}

int sim_fleet_index(const struct sim_fleet *fleet, const struct sim_device *dev)
{
	for (size_t i = 0; i < fleet->n; i++)
		if (fleet->devs[i] == dev)
			return (int)i;
	return -ENOENT;
}

uint16_t sim_fleet_udp_port(const struct sim_fleet *fleet, size_t i)
{
	return i < fleet->n ? fleet->udp[i] : 0;
}

bool sim_fleet_serial(const struct sim_fleet *fleet, size_t i)
{
	return i < fleet->n && fleet->serial[i];
}

unsigned sim_fleet_adapter_count(const struct sim_fleet *fleet)
{
	return fleet->nadapters;
}

unsigned sim_fleet_adapter_max_connections(const struct sim_fleet *fleet, unsigned i)
{
	return i < fleet->nadapters ? fleet->max_conn[i] : 0;
}

const char *sim_fleet_adapter_address(const struct sim_fleet *fleet, unsigned i)
{
	return i < fleet->nadapters ? fleet->adapter_addr[i] : NULL;
}

const char *sim_fleet_adapter_bus(const struct sim_fleet *fleet, unsigned i)
{
	return i < fleet->nadapters && fleet->adapter_bus[i][0] ? fleet->adapter_bus[i] : NULL;
}

int sim_fleet_heard(const struct sim_fleet *fleet, size_t i, const char *bus, int *rssi)
{
	const struct radio *r = i < fleet->n ? &fleet->radio[i] : NULL;

	if (!r || !r->heard || !bus)
		return -ENOENT;
	for (size_t k = 0; k < r->nheard; k++)
		if (!strcmp(r->heard[k].bus, bus)) {
			*rssi = r->heard[k].rssi;
			return 1;
		}
	return 0;
}

unsigned sim_fleet_centrals(const struct sim_fleet *fleet, size_t i)
{
	return i < fleet->n ? fleet->radio[i].centrals : 1;
}

unsigned sim_fleet_links(const struct sim_fleet *fleet, size_t i)
{
	return i < fleet->n ? fleet->radio[i].links : 0;
}

void sim_fleet_link_add(struct sim_fleet *fleet, size_t i, int delta)
{
	if (i >= fleet->n || (delta < 0 && fleet->radio[i].links < (unsigned)-delta))
		return;
	fleet->radio[i].links = (unsigned)((int)fleet->radio[i].links + delta);
}

static bool name_in(const char *name, const char *const *names, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if (!strcmp(names[k], name))
			return true;
	return false;
}

int sim_fleet_check_buses(const struct sim_fleet *fleet, const char *const *names, size_t n,
			  char *err, size_t err_size)
{
	for (unsigned a = 0; a < fleet->nadapters; a++)
		if (fleet->adapter_bus[a][0] && !name_in(fleet->adapter_bus[a], names, n)) {
			snprintf(err, err_size, "adapters[%u].bus: no --bus %s=ADDRESS given", a,
				 fleet->adapter_bus[a]);
			return -EINVAL;
		}
	for (size_t i = 0; i < fleet->n; i++)
		for (size_t k = 0; k < fleet->radio[i].nheard; k++)
			if (!name_in(fleet->radio[i].heard[k].bus, names, n)) {
				snprintf(err, err_size, "%s: heard by bus %s, but no --bus %s=ADDRESS "
					 "given", sim_device_name(fleet->devs[i]),
					 fleet->radio[i].heard[k].bus, fleet->radio[i].heard[k].bus);
				return -EINVAL;
			}
	for (size_t k = 0; k < n; k++) {
		bool any = false;

		for (unsigned a = 0; a < fleet->nadapters && !any; a++)
			any = !fleet->adapter_bus[a][0] || !strcmp(fleet->adapter_bus[a], names[k]);
		if (!any) {
			snprintf(err, err_size, "bus %s has no adapter (give one \"bus\": \"%s\" "
				 "or one without \"bus\")", names[k], names[k]);
			return -EINVAL;
		}
	}
	return 0;
}

size_t sim_fleet_private_bytes(const struct sim_fleet *fleet)
{
	size_t sum = 0;

	for (size_t i = 0; i < fleet->n; i++)
		sum += slot_private_bytes(&fleet->devs[i]->slot[0]) +
		       slot_private_bytes(&fleet->devs[i]->slot[1]);
	return sum;
}

int sim_fleet_parse_link(const struct json_t *o, struct sim_link_model *m, char *err,
			 size_t err_size)
{
	struct perr e = { err, err_size };
	struct sim_link_model tmp = *m;
	int r = parse_link(&e, "link", o, &tmp);

	if (r == 0)
		*m = tmp;
	return r;
}
