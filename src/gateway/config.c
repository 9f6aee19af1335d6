/* SPDX-License-Identifier: MIT */
/*
 * INI configuration parser. Owns struct gw_config and its strings.
 * Sections: [general] [ble] [udp] [http] [request] [update] [images] [store]
 * [gateway] [device "name"].
 */
#include "gateway/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/lease.h"
#include "gateway/log.h"
#include "gateway/store.h"
#include "links/serial.h"
#include "util/util.h"

#define CONFIG_MAX_SIZE (1u << 20)
#define CONFIG_MAX_DEVICES 4096

struct gw_config *gw_config_new_default(void)
{
	struct gw_config *cfg = xnew(struct gw_config);

	cfg->general.state_dir = xstrdup("/var/lib/smpgw");
	cfg->general.log_level = GW_LOG_INFO;
	cfg->ble.enabled = true;
	cfg->ble.max_connections_per_adapter = 7;
	cfg->ble.idle_timeout_ms = 2000;
	cfg->ble.time_slice_ms = 5000;
	cfg->ble.connect_timeout_ms = 10000;
	cfg->ble.presence_timeout_ms = 30000;
	cfg->ble.manage_all = true;
	cfg->ble.prefer_acquire = true;
	cfg->ble.rebond = true;
	cfg->udp.bind = xstrdup("127.0.0.1");
	cfg->udp.base_port = 17001;
	cfg->gateway.lease_ttl_ms = 15000;
	cfg->gateway.lease_hysteresis_db = 8;
	cfg->gateway.forward_timeout_ms = 30000;
	cfg->store.timeout_ms = GW_STORE_TIMEOUT_DEFAULT_MS;
	cfg->http.listen = xstrdup("127.0.0.1:8080");
	cfg->http.max_body = 16u << 20;
	cfg->http.max_connections = 64;
	cfg->request.timeout_ms = 5000;
	cfg->request.first_chunk_timeout_ms = 30000;
	cfg->request.connect_timeout_ms = 30000;
	cfg->request.queue_max = 64;
	cfg->update.max_per_adapter = 4;
	cfg->update.pipeline_depth = 8;
	cfg->update.reassembly = -1;
	cfg->update.boot_timeout_ms = 120000;
	cfg->update.self_check_timeout_ms = 60000;
	cfg->update.retry_timeout_ms = 300000;
	cfg->update.stall_timeout_ms = 180000;
	return cfg;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void device_conf_clear(struct gw_device_conf *d)
{
	free(d->name);
	free(d->address);
	free(d->path);
}

struct gw_config *gw_config_free(struct gw_config *cfg)
{
	if (!cfg)
		return NULL;
	free(cfg->general.state_dir);
	free(cfg->ble.bus);
	free(cfg->ble.adapters);
	strv_free(cfg->ble.allow, cfg->ble.n_allow);
	strv_free(cfg->ble.pair_allow, cfg->ble.n_pair_allow);
	strv_free(cfg->ble.pair_first, cfg->ble.n_pair_first);
	free(cfg->udp.bind);
	free(cfg->http.listen);
	free(cfg->http.token_file);
	free(cfg->http.tls_cert);
	free(cfg->http.tls_key);
	for (size_t i = 0; i < cfg->images.n_keys; i++)
		free(cfg->images.keys[i]);
	free(cfg->images.keys);
	free(cfg->images.dir);
	free(cfg->store.conninfo);
	free(cfg->gateway.id);
	free(cfg->gateway.url);
	for (size_t i = 0; i < cfg->n_devices; i++)
		device_conf_clear(&cfg->devices[i]);
	free(cfg->devices);
	free(cfg);
	return NULL;
}

int gw_config_parse_duration_ms(const char *s, uint32_t *ret)
{
	char *end;
	unsigned long long v, mul = 1000;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (!strcmp(end, "ms"))
		mul = 1;
	else if (!strcmp(end, "s") || !*end)
		mul = 1000;
	else if (!strcmp(end, "m") || !strcmp(end, "min"))
		mul = 60000;
	else
		return -EINVAL;
	if (v > UINT32_MAX / mul)
		return -ERANGE;
	*ret = (uint32_t)(v * mul);
	return 0;
}

static int parse_uint(const char *s, unsigned long long max,
		      unsigned long long *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int gw_config_parse_port(const char *s, uint16_t *ret)
{
	unsigned long long v;
	int r = parse_uint(s, 65535, &v);

	if (r < 0)
		return r;
	*ret = (uint16_t)v;
	return 0;
}

static int parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(s, yes[i])) {
			*ret = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

static void set_str(char **dst, const char *value)
{
	free(*dst);
	*dst = *value ? xstrdup(value) : NULL;
}

static int set_duration(uint32_t *dst, const char *value)
{
	return gw_config_parse_duration_ms(value, dst);
}

static int set_unsigned(unsigned *dst, const char *value, unsigned max)
{
	unsigned long long v;
	int r = parse_uint(value, max, &v);

	if (r == 0)
		*dst = (unsigned)v;
	return r;
}

/* Addresses or name globs, comma- or space-separated; repeated keys append. */
static void add_patterns(char ***v, size_t *n, const char *value)
{
	char *copy = xstrdup(value), *save = NULL;

	for (char *tok = strtok_r(copy, ", \t", &save); tok;
	     tok = strtok_r(NULL, ", \t", &save)) {
		*v = xrealloc(*v, (*n + 1) * sizeof(char *));
		(*v)[(*n)++] = xstrdup(tok);
	}
	free(copy);
}

static int set_general(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "state_dir")) {
		if (!*value)
			return -EINVAL;
		set_str(&cfg->general.state_dir, value);
		return 0;
	}
	if (!strcmp(key, "log_level")) {
		int l = gw_log_level_parse(value);

		if (l < 0)
			return l;
		cfg->general.log_level = l;
		return 0;
	}
	return -ENOENT;
}

static int set_ble_pairing(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "pairing")) {
		if (!strcmp(value, "all"))
			cfg->ble.pairing = GW_BLE_PAIRING_ALL;
		else if (!strcmp(value, "allowlist"))
			cfg->ble.pairing = GW_BLE_PAIRING_ALLOWLIST;
		else if (!strcmp(value, "off"))
			cfg->ble.pairing = GW_BLE_PAIRING_OFF;
		else
			return -EINVAL;
		return 0;
	}
	if (!strcmp(key, "pair_allow")) {
		add_patterns(&cfg->ble.pair_allow, &cfg->ble.n_pair_allow, value);
		return 0;
	}
	if (!strcmp(key, "pair_first")) {
		add_patterns(&cfg->ble.pair_first, &cfg->ble.n_pair_first, value);
		return 0;
	}
	if (!strcmp(key, "rebond"))
		return parse_bool(value, &cfg->ble.rebond);
	return -ENOENT;
}

static int set_ble(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "enabled"))
		return parse_bool(value, &cfg->ble.enabled);
	if (!strcmp(key, "bus")) {
		/* "system" (or empty) means the system bus. */
		if (!strcmp(value, "system"))
			value = "";
		set_str(&cfg->ble.bus, value);
		return 0;
	}
	if (!strcmp(key, "adapters")) {
		set_str(&cfg->ble.adapters, value);
		return 0;
	}
	if (!strcmp(key, "max_connections_per_adapter"))
		return set_unsigned(&cfg->ble.max_connections_per_adapter, value, 64);
	if (!strcmp(key, "prefer_acquire"))
		return parse_bool(value, &cfg->ble.prefer_acquire);
	if (!strcmp(key, "idle_timeout"))
		return set_duration(&cfg->ble.idle_timeout_ms, value);
	if (!strcmp(key, "time_slice"))
		return set_duration(&cfg->ble.time_slice_ms, value);
	if (!strcmp(key, "connect_timeout"))
		return set_duration(&cfg->ble.connect_timeout_ms, value);
	if (!strcmp(key, "presence_timeout"))
		return set_duration(&cfg->ble.presence_timeout_ms, value);
	if (!strcmp(key, "manage")) {
		if (!strcmp(value, "all"))
			cfg->ble.manage_all = true;
		else if (!strcmp(value, "allowlist"))
			cfg->ble.manage_all = false;
		else
			return -EINVAL;
		return 0;
	}
	if (!strcmp(key, "allow")) {
		add_patterns(&cfg->ble.allow, &cfg->ble.n_allow, value);
		return 0;
	}
	return set_ble_pairing(cfg, key, value);
}

static int set_udp(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "bind")) {
		if (!*value)
			return -EINVAL;
		set_str(&cfg->udp.bind, value);
		return 0;
	}
	if (!strcmp(key, "base_port"))
		return gw_config_parse_port(value, &cfg->udp.base_port);
	return -ENOENT;
}

static int set_http(struct gw_config *cfg, const char *key, const char *value)
{
	unsigned long long v;
	int r;

	if (!strcmp(key, "listen")) {
		if (!*value)
			return -EINVAL;
		set_str(&cfg->http.listen, value);
		return 0;
	}
	if (!strcmp(key, "token_file")) {
		set_str(&cfg->http.token_file, value);
		return 0;
	}
	if (!strcmp(key, "tls_cert")) {
		set_str(&cfg->http.tls_cert, value);
		return 0;
	}
	if (!strcmp(key, "tls_key")) {
		set_str(&cfg->http.tls_key, value);
		return 0;
	}
	if (!strcmp(key, "max_body")) {
		r = parse_uint(value, 1ull << 32, &v);
		if (r == 0)
			cfg->http.max_body = (size_t)v;
		return r;
	}
	if (!strcmp(key, "max_connections"))
		return set_unsigned(&cfg->http.max_connections, value, 65535);
	return -ENOENT;
}

static int set_request(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "timeout"))
		return set_duration(&cfg->request.timeout_ms, value);
	if (!strcmp(key, "first_chunk_timeout"))
		return set_duration(&cfg->request.first_chunk_timeout_ms, value);
	if (!strcmp(key, "connect_timeout"))
		return set_duration(&cfg->request.connect_timeout_ms, value);
	if (!strcmp(key, "queue_max"))
		return set_unsigned(&cfg->request.queue_max, value, 65535);
	return -ENOENT;
}

/* [update]: the upload engine's settings (see engine.c). */
static int set_update(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "max_per_adapter"))
		return set_unsigned(&cfg->update.max_per_adapter, value, 1000);
	if (!strcmp(key, "max_concurrent"))
		return set_unsigned(&cfg->update.max_concurrent, value, 100000);
	if (!strcmp(key, "pipeline_depth"))
		return set_unsigned(&cfg->update.pipeline_depth, value, 64);
	if (!strcmp(key, "reassembly")) {
		if (!strcmp(value, "auto"))
			cfg->update.reassembly = -1;
		else if (!strcmp(value, "yes") || !strcmp(value, "true"))
			cfg->update.reassembly = 1;
		else if (!strcmp(value, "no") || !strcmp(value, "false"))
			cfg->update.reassembly = 0;
		else
			return -EINVAL;
		return 0;
	}
	if (!strcmp(key, "chunk_timeout"))
		return set_duration(&cfg->update.chunk_timeout_ms, value);
	if (!strcmp(key, "boot_timeout"))
		return set_duration(&cfg->update.boot_timeout_ms, value);
	if (!strcmp(key, "self_check_timeout"))
		return set_duration(&cfg->update.self_check_timeout_ms, value);
	if (!strcmp(key, "retry_timeout"))
		return set_duration(&cfg->update.retry_timeout_ms, value);
	if (!strcmp(key, "stall_timeout"))
		return set_duration(&cfg->update.stall_timeout_ms, value);
	return -ENOENT;
}

/* [images]: signature policy of the image store (see images.c). */
static int set_images(struct gw_config *cfg, const char *key, const char *value)
{
	char *copy, *save = NULL;

	if (!strcmp(key, "require_signature"))
		return parse_bool(value, &cfg->images.require_signature);
	if (!strcmp(key, "dir")) {
		if (value[0] != '/')
			return -EINVAL; /* relative to what? */
		set_str(&cfg->images.dir, value);
		return 0;
	}
	if (strcmp(key, "key"))
		return -ENOENT;
	/* Comma-separated PEM files; repeated keys append. */
	copy = xstrdup(value);
	for (char *tok = strtok_r(copy, ", \t", &save); tok;
	     tok = strtok_r(NULL, ", \t", &save)) {
		cfg->images.keys = xrealloc(cfg->images.keys,
					    (cfg->images.n_keys + 1) * sizeof(char *));
		cfg->images.keys[cfg->images.n_keys++] = xstrdup(tok);
	}
	free(copy);
	return 0;
}

/* [store]: backend = sqlite | postgresql, conninfo = libpq string,
 * timeout = the bound of one round trip to the server. */
static int set_store(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "backend")) {
		enum gw_store_backend b;

		if (gw_store_backend_parse(value, &b) < 0)
			return -EINVAL;
		cfg->store.backend = (int)b;
		return 0;
	}
	if (!strcmp(key, "conninfo")) {
		set_str(&cfg->store.conninfo, value);
		return 0;
	}
	if (!strcmp(key, "timeout")) {
		int r = set_duration(&cfg->store.timeout_ms, value);

		if (r == 0 && (cfg->store.timeout_ms < 100 || cfg->store.timeout_ms > 60000))
			r = -ERANGE;
		return r;
	}
	return -ENOENT;
}

/* [gateway] url: where the other gateways reach this one's REST API. */
static bool url_ok(const char *v)
{
	const char *host = !strncmp(v, "http://", 7) ? v + 7 :
			   !strncmp(v, "https://", 8) ? v + 8 : NULL;
	size_t n = strlen(v);

	return host && *host && *host != '/' && n < 256 && strcspn(v, " \t\r\n") == n;
}

/* [gateway]: id (leases on watches), lease_ttl, lease_hysteresis (dB),
 * url and forward_timeout (cluster.h, docs/multi-gateway.md). */
static int set_gateway(struct gw_config *cfg, const char *key, const char *value)
{
	if (!strcmp(key, "url")) {
		if (!url_ok(value))
			return -EINVAL;
		set_str(&cfg->gateway.url, value);
		return 0;
	}
	if (!strcmp(key, "forward_timeout")) {
		int r = set_duration(&cfg->gateway.forward_timeout_ms, value);

		if (r == 0 && (cfg->gateway.forward_timeout_ms < 100 ||
			       cfg->gateway.forward_timeout_ms > 600000))
			return -EINVAL;
		return r;
	}
	if (!strcmp(key, "id")) {
		if (!*value || strlen(value) > 64)
			return -EINVAL;
		set_str(&cfg->gateway.id, value);
		return 0;
	}
	if (!strcmp(key, "lease_ttl")) {
		int r = set_duration(&cfg->gateway.lease_ttl_ms, value);

		if (r == 0 && (cfg->gateway.lease_ttl_ms < 300 ||
			       cfg->gateway.lease_ttl_ms > GW_LEASE_TTL_MAX_MS))
			return -EINVAL;
		return r;
	}
	if (!strcmp(key, "lease_hysteresis"))
		return set_unsigned(&cfg->gateway.lease_hysteresis_db, value, 60);
	return -ENOENT;
}

static int set_device(struct gw_device_conf *d, const char *key, const char *value)
{
	if (!strcmp(key, "transport")) {
		if (!strcmp(value, "udp"))
			d->transport = GW_TRANSPORT_UDP;
		else if (!strcmp(value, "serial"))
			d->transport = GW_TRANSPORT_SERIAL;
		else if (!strcmp(value, "ble"))
			d->transport = GW_TRANSPORT_BLE;
		else
			return -EINVAL;
		return 0;
	}
	if (!strcmp(key, "address")) {
		set_str(&d->address, value);
		return 0;
	}
	if (!strcmp(key, "path")) {
		set_str(&d->path, value);
		return 0;
	}
	if (!strcmp(key, "baud"))
		return set_unsigned(&d->baud, value, 4000000);
	if (!strcmp(key, "udp_port"))
		return gw_config_parse_port(value, &d->udp_port);
	return -ENOENT;
}

int gw_config_set(struct gw_config *cfg, const char *section, const char *key,
		  const char *value)
{
	if (!strcmp(section, "general"))
		return set_general(cfg, key, value);
	if (!strcmp(section, "ble"))
		return set_ble(cfg, key, value);
	if (!strcmp(section, "udp"))
		return set_udp(cfg, key, value);
	if (!strcmp(section, "http"))
		return set_http(cfg, key, value);
	if (!strcmp(section, "request"))
		return set_request(cfg, key, value);
	if (!strcmp(section, "update"))
		return set_update(cfg, key, value);
	if (!strcmp(section, "images"))
		return set_images(cfg, key, value);
	if (!strcmp(section, "store"))
		return set_store(cfg, key, value);
	if (!strcmp(section, "gateway"))
		return set_gateway(cfg, key, value);
	return -ENOENT;
}

/* ---- the INI reader ---- */

struct parser {
	struct gw_config *cfg;
	char section[64];
	struct gw_device_conf *dev; /* current [device "x"], or NULL */
	unsigned line;
	char *err;
};

static int fail(struct parser *p, int r, const char *what, const char *detail)
{
	free(p->err);
	p->err = xasprintf("line %u: %s%s%s", p->line, what,
			   detail ? ": " : "", detail ? detail : "");
	return r;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static bool valid_device_name(const char *s)
{
	if (!*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

static int start_device(struct parser *p, const char *name)
{
	struct gw_config *cfg = p->cfg;

	if (!valid_device_name(name))
		return fail(p, -EINVAL, "bad device name (use letters, digits, . _ -)",
			    name);
	if (gw_config_find_device(cfg, name))
		return fail(p, -EINVAL, "duplicate device", name);
	if (cfg->n_devices >= CONFIG_MAX_DEVICES)
		return fail(p, -E2BIG, "too many devices", NULL);
	cfg->devices = xrealloc(cfg->devices,
				(cfg->n_devices + 1) * sizeof(*cfg->devices));
	p->dev = &cfg->devices[cfg->n_devices++];
	memset(p->dev, 0, sizeof(*p->dev));
	p->dev->name = xstrdup(name);
	p->dev->transport = GW_TRANSPORT_UDP;
	p->dev->baud = 115200;
	return 0;
}

static int parse_section(struct parser *p, char *s)
{
	size_t n = strlen(s);
	char *name;

	if (n < 2 || s[n - 1] != ']')
		return fail(p, -EBADMSG, "section header without ']'", NULL);
	s[n - 1] = '\0';
	s = trim(s + 1);
	p->dev = NULL;
	if (!strncmp(s, "device", 6) && (s[6] == ' ' || s[6] == '\t')) {
		name = trim(s + 6);
		n = strlen(name);
		if (n < 2 || name[0] != '"' || name[n - 1] != '"')
			return fail(p, -EBADMSG, "expected [device \"name\"]", NULL);
		name[n - 1] = '\0';
		snprintf(p->section, sizeof(p->section), "device");
		return start_device(p, name + 1);
	}
	if (strcmp(s, "general") && strcmp(s, "ble") && strcmp(s, "udp") &&
	    strcmp(s, "http") && strcmp(s, "request") && strcmp(s, "update") &&
	    strcmp(s, "images") && strcmp(s, "store") && strcmp(s, "gateway"))
		return fail(p, -EINVAL, "unknown section", s);
	snprintf(p->section, sizeof(p->section), "%s", s);
	return 0;
}

static int parse_kv(struct parser *p, char *s)
{
	char *eq = strchr(s, '='), *key, *value;
	size_t n;
	int r;

	if (!eq)
		return fail(p, -EBADMSG, "expected key = value", NULL);
	*eq = '\0';
	key = trim(s);
	value = trim(eq + 1);
	n = strlen(value);
	if (n >= 2 && value[0] == '"' && value[n - 1] == '"') {
		value[n - 1] = '\0';
		value++;
	}
	if (!*key)
		return fail(p, -EBADMSG, "empty key", NULL);
	if (!p->section[0])
		return fail(p, -EBADMSG, "key outside a section", key);
	if (p->dev)
		r = set_device(p->dev, key, value);
	else
		r = gw_config_set(p->cfg, p->section, key, value);
	if (r == -ENOENT)
		return fail(p, -EINVAL, "unknown key", key);
	if (r < 0)
		return fail(p, -EINVAL, "bad value for", key);
	return 0;
}

static int parse_line(struct parser *p, char *s)
{
	s = trim(s);
	if (!*s || *s == '#' || *s == ';')
		return 0;
	if (*s == '[')
		return parse_section(p, s);
	return parse_kv(p, s);
}

static int check_device(const struct gw_device_conf *d, char **err)
{
	const char *what = NULL;

	switch (d->transport) {
	case GW_TRANSPORT_UDP:
		if (!d->address || !strrchr(d->address, ':'))
			what = "needs address = host:port";
		break;
	case GW_TRANSPORT_SERIAL: {
		unsigned speed;

		if (!d->path)
			what = "needs path = /dev/tty...";
		else if (serial_baud_to_speed(d->baud, &speed) < 0)
			what = "unsupported baud (9600 19200 38400 57600 115200 230400 "
			       "460800 921600 1000000 2000000)";
		break;
	}
	case GW_TRANSPORT_BLE:
		if (!d->address)
			what = "needs address = AA:BB:CC:DD:EE:FF";
		break;
	}
	if (!what)
		return 0;
	*err = xasprintf("device \"%s\": %s", d->name, what);
	return -EINVAL;
}

static int check_config(struct gw_config *cfg, char **err)
{
	/* Leases, job claims and rollout owners are between gateways sharing
	 * a database server; a SQLite store belongs to one gateway, where they
	 * would only delay and narrow what it manages (docs/multi-gateway.md,
	 * "One gateway: SQLite, no id"). */
	if (cfg->gateway.id && cfg->store.backend != GW_STORE_POSTGRESQL) {
		*err = xasprintf("[gateway] id = %s needs [store] backend = postgresql: an id "
				 "names one of several gateways sharing a database server; "
				 "a gateway alone on SQLite has none (remove it)", cfg->gateway.id);
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_devices; i++) {
		int r = check_device(&cfg->devices[i], err);

		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++) {
			if (cfg->devices[i].udp_port &&
			    cfg->devices[i].udp_port == cfg->devices[j].udp_port) {
				*err = xasprintf("devices \"%s\" and \"%s\" pin the same udp_port",
						 cfg->devices[j].name, cfg->devices[i].name);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int gw_config_parse(const uint8_t *buf, size_t len, struct gw_config **ret,
		    char **errmsg)
{
	struct parser p = { .cfg = gw_config_new_default() };
	const uint8_t *s = buf, *end = buf + len;
	int r = 0;

	if (len > CONFIG_MAX_SIZE || (len && memchr(buf, '\0', len))) {
		p.line = 0;
		r = fail(&p, -EBADMSG, len > CONFIG_MAX_SIZE ? "file too large" :
			 "NUL byte in file", NULL);
	}
	while (r == 0 && s < end) {
		const uint8_t *nl = memchr(s, '\n', (size_t)(end - s));
		size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
		char *line = xstrndup((const char *)s, n);

		p.line++;
		r = parse_line(&p, line);
		free(line);
		s += n + (nl ? 1 : 0);
	}
	if (r == 0)
		r = check_config(p.cfg, &p.err);
	if (r < 0) {
		if (errmsg)
			*errmsg = p.err;
		else
			free(p.err);
		gw_config_free(p.cfg);
		return r;
	}
	*ret = p.cfg;
	return 0;
}

int gw_config_load(const char *path, struct gw_config **ret, char **errmsg)
{
	FILE *f = fopen(path, "re");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	int r;

	if (!f) {
		r = -errno;
		if (errmsg)
			*errmsg = xasprintf("%s: %s", path, strerror(-r));
		return r;
	}
	for (;;) {
		size_t n;

		if (cap - len < 4096)
			buf = xrealloc(buf, cap = cap ? cap * 2 : 8192);
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0 || len > CONFIG_MAX_SIZE)
			break;
	}
	fclose(f);
	r = gw_config_parse(buf ? buf : (const uint8_t *)"", len, ret, errmsg);
	free(buf);
	return r;
}

static bool patterns_match(char *const *pats, size_t n, const char *address,
			   const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (address && !strcasecmp(pats[i], address))
			return true;
		if (name && fnmatch(pats[i], name, 0) == 0)
			return true;
	}
	return false;
}

void gw_config_ble_pairing(const struct gw_config *cfg, const char *address,
			   const char *name, bool *allowed, bool *first)
{
	bool f = patterns_match(cfg->ble.pair_first, cfg->ble.n_pair_first,
				address, name);

	switch (cfg->ble.pairing) {
	case GW_BLE_PAIRING_ALLOWLIST:
		*allowed = f || patterns_match(cfg->ble.pair_allow,
					       cfg->ble.n_pair_allow, address, name);
		break;
	case GW_BLE_PAIRING_OFF:
		*allowed = false;
		break;
	default:
		*allowed = true;
		break;
	}
	*first = f && *allowed;
}

bool gw_config_ble_allowed(const struct gw_config *cfg, const char *address,
			   const char *name)
{
	if (cfg->ble.manage_all)
		return true;
	if (patterns_match(cfg->ble.allow, cfg->ble.n_allow, address, name))
		return true;
	/* BLE devices declared in a [device] section are always managed. */
	for (size_t i = 0; i < cfg->n_devices; i++)
		if (cfg->devices[i].transport == GW_TRANSPORT_BLE && address &&
		    !strcasecmp(cfg->devices[i].address, address))
			return true;
	return false;
}

const struct gw_device_conf *gw_config_find_device(const struct gw_config *cfg,
						   const char *name)
{
	for (size_t i = 0; i < cfg->n_devices; i++)
		if (!strcmp(cfg->devices[i].name, name))
			return &cfg->devices[i];
	return NULL;
}
