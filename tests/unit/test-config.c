/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/config.h"
#include "gateway/store.h"
#include "gateway/log.h"
#include "tap.h"

static int parse(const char *text, struct gw_config **cfg, char **err)
{
	*err = NULL;
	return gw_config_parse((const uint8_t *)text, strlen(text), cfg, err);
}

static void expect_error(const char *text, int want, const char *want_msg,
			 const char *name)
{
	struct gw_config *cfg = (struct gw_config *)0x1;
	char *err;
	int r = parse(text, &cfg, &err);

	is_int(r, want, name);
	ok(cfg == (struct gw_config *)0x1, "%s: out-param untouched", name);
	ok(err && strstr(err, want_msg), "%s: message '%s' has '%s'", name,
	   err ? err : "(null)", want_msg);
	free(err);
}

static void test_defaults(void)
{
	struct gw_config *cfg;
	char *err;

	is_int(parse("", &cfg, &err), 0, "empty file parses");
	is_str(cfg->general.state_dir, "/var/lib/smpgw", "default state_dir");
	is_int(cfg->general.log_level, GW_LOG_INFO, "default log level");
	ok(cfg->ble.enabled, "ble on by default");
	ok(cfg->ble.manage_all, "manage all by default");
	ok(cfg->ble.bus == NULL, "system bus by default");
	is_int(cfg->ble.max_connections_per_adapter, 7, "default budget");
	is_str(cfg->udp.bind, "127.0.0.1", "udp binds loopback");
	is_int(cfg->udp.base_port, 17001, "default base port");
	is_str(cfg->http.listen, "127.0.0.1:8080", "http on loopback");
	is_int(cfg->request.timeout_ms, 5000, "default timeout");
	is_int(cfg->request.first_chunk_timeout_ms, 30000, "first chunk timeout");
	is_int(cfg->update.stall_timeout_ms, 180000, "default stall timeout");
	is_int(cfg->n_devices, 0, "no devices");
	gw_config_free(cfg);
}

static const char full[] =
	"# comment\n"
	"; other comment\n"
	"[general]\n"
	"state_dir = /tmp/x\n"
	"log_level = debug\n"
	"\n"
	"[ble]\n"
	"enabled = no\n"
	"bus = unix:path=/tmp/bus\n"
	"adapters = hci0,hci1\n"
	"max_connections_per_adapter = 3\n"
	"idle_timeout = 1500ms\n"
	"connect_timeout = 2m\n"
	"manage = allowlist\n"
	"allow = AA:BB:CC:DD:EE:FF, InfiniTime-*\n"
	"allow = Pine*\n"
	"[udp]\n"
	"  bind = ::1  \r\n"
	"base_port = 0\n"
	"[http]\n"
	"listen = \"0.0.0.0:0\"\n"
	"token_file = /etc/smpgw/token\n"
	"max_body = 1048576\n"
	"max_connections = 8\n"
	"[request]\n"
	"timeout = 2\n"
	"first_chunk_timeout = 45s\n"
	"connect_timeout = 500ms\n"
	"[update]\n"
	"stall_timeout = 4m\n"
	"[device \"bench-1\"]\n"
	"transport = udp\n"
	"address = 127.0.0.1:1337\n"
	"udp_port = 18000\n"
	"[device \"recovery\"]\n"
	"transport = serial\n"
	"path = /dev/ttyACM0\n"
	"baud = 1000000\n"
	"[device \"desk\"]\n"
	"transport = ble\n"
	"address = 11:22:33:44:55:66\n"
	"udp_port = 18001\n";

static void test_full(void)
{
	struct gw_config *cfg;
	const struct gw_device_conf *d;
	char *err;

	is_int(parse(full, &cfg, &err), 0, "full example parses");
	is_str(cfg->general.state_dir, "/tmp/x", "state_dir");
	is_int(cfg->general.log_level, GW_LOG_DEBUG, "log level");
	ok(!cfg->ble.enabled, "ble disabled");
	is_str(cfg->ble.bus, "unix:path=/tmp/bus", "bus");
	is_str(cfg->ble.adapters, "hci0,hci1", "adapters");
	is_int(cfg->ble.max_connections_per_adapter, 3, "budget");
	is_int(cfg->ble.idle_timeout_ms, 1500, "ms suffix");
	is_int(cfg->ble.connect_timeout_ms, 120000, "m suffix");
	ok(!cfg->ble.manage_all, "allowlist");
	is_int(cfg->ble.n_allow, 3, "allow entries appended");
	ok(gw_config_ble_allowed(cfg, "aa:bb:cc:dd:ee:ff", NULL), "address match");
	ok(gw_config_ble_allowed(cfg, "00:00:00:00:00:01", "InfiniTime-7"), "glob");
	ok(gw_config_ble_allowed(cfg, "11:22:33:44:55:66", NULL), "declared device");
	ok(!gw_config_ble_allowed(cfg, "00:00:00:00:00:01", "Other"), "not allowed");
	is_str(cfg->udp.bind, "::1", "trimmed value");
	is_int(cfg->udp.base_port, 0, "base 0");
	is_str(cfg->http.listen, "0.0.0.0:0", "quoted value");
	is_str(cfg->http.token_file, "/etc/smpgw/token", "token file");
	is_int(cfg->http.max_body, 1048576, "max_body");
	is_int(cfg->http.max_connections, 8, "max_connections");
	is_int(cfg->request.timeout_ms, 2000, "bare seconds");
	is_int(cfg->request.first_chunk_timeout_ms, 45000, "s suffix");
	is_int(cfg->update.stall_timeout_ms, 240000, "[update] stall_timeout");
	is_int(cfg->request.connect_timeout_ms, 500, "connect timeout");
	is_int(cfg->n_devices, 3, "three devices");
	d = gw_config_find_device(cfg, "bench-1");
	ok(d && d->transport == GW_TRANSPORT_UDP && d->udp_port == 18000 &&
	   !strcmp(d->address, "127.0.0.1:1337"), "udp device");
	d = gw_config_find_device(cfg, "recovery");
	ok(d && d->transport == GW_TRANSPORT_SERIAL && d->baud == 1000000 &&
	   !strcmp(d->path, "/dev/ttyACM0"), "serial device");
	d = gw_config_find_device(cfg, "desk");
	ok(d && d->transport == GW_TRANSPORT_BLE && d->udp_port == 18001, "ble pin");
	ok(!gw_config_find_device(cfg, "nope"), "unknown device");
	gw_config_free(cfg);
}

static void test_errors(void)
{
	expect_error("key = 1\n", -EBADMSG, "line 1: key outside a section",
		     "key before section");
	expect_error("[general]\n\n[nope]\n", -EINVAL, "line 3: unknown section",
		     "unknown section");
	expect_error("[udp]\nbase_port = 70000\n", -EINVAL,
		     "line 2: bad value for: base_port", "port out of range");
	expect_error("[udp]\nfoo = 1\n", -EINVAL, "line 2: unknown key: foo",
		     "unknown key");
	expect_error("[udp\n", -EBADMSG, "line 1: section header", "bad header");
	expect_error("[general]\njust text\n", -EBADMSG, "line 2: expected key = value",
		     "no equals");
	expect_error("[device nope]\n", -EBADMSG, "expected [device \"name\"]",
		     "unquoted device");
	expect_error("[device \"a b\"]\n", -EINVAL, "bad device name", "device name");
	expect_error("[device \"a\"]\naddress=127.0.0.1:1\n[device \"a\"]\n", -EINVAL,
		     "line 3: duplicate device", "duplicate device");
	expect_error("[device \"a\"]\ntransport = udp\n", -EINVAL,
		     "device \"a\": needs address", "udp without address");
	expect_error("[device \"a\"]\ntransport = serial\n", -EINVAL,
		     "needs path", "serial without path");
	expect_error("[device \"a\"]\naddress=127.0.0.1:1\nudp_port=5\n"
		     "[device \"b\"]\naddress=127.0.0.1:2\nudp_port=5\n", -EINVAL,
		     "pin the same udp_port", "same pinned port");
	expect_error("[request]\ntimeout = 5h\n", -EINVAL, "bad value for: timeout",
		     "bad duration");
	expect_error("[device \"s\"]\ntransport = serial\npath = /dev/x\nbaud = 12345\n",
		     -EINVAL, "unsupported baud", "odd baud rate");
	expect_error("[ble]\nmanage = some\n", -EINVAL, "bad value for: manage",
		     "bad manage");
	expect_error("[general]\nlog_level = loud\n", -EINVAL, "log_level",
		     "bad level");
}

/* [store], [gateway] and [images] dir (issue 17, docs/multi-gateway.md). */
static void test_multi_gateway(void)
{
	struct gw_config *cfg;
	char *err;

	is_int(parse("", &cfg, &err), 0, "defaults");
	is_int(cfg->store.backend, GW_STORE_SQLITE, "sqlite by default");
	ok(!cfg->gateway.id, "no gateway id: no leases");
	is_int(cfg->gateway.lease_ttl_ms, 15000, "lease ttl 15 s");
	is_int(cfg->gateway.lease_hysteresis_db, 8, "hysteresis 8 dB");
	gw_config_free(cfg);
	is_int(parse("[store]\nbackend = postgresql\nconninfo = host=/run/pg dbname=x\n"
		     "[gateway]\nid = ward-3\nlease_ttl = 6s\nlease_hysteresis = 3\n"
		     "[images]\ndir = /srv/img\n", &cfg, &err), 0, "all set");
	is_int(cfg->store.backend, GW_STORE_POSTGRESQL, "postgresql");
	is_str(cfg->store.conninfo, "host=/run/pg dbname=x", "conninfo kept whole");
	is_str(cfg->gateway.id, "ward-3", "gateway id");
	is_int(cfg->gateway.lease_ttl_ms, 6000, "lease ttl");
	is_int(cfg->gateway.lease_hysteresis_db, 3, "hysteresis");
	is_str(cfg->images.dir, "/srv/img", "image dir");
	is_int(cfg->store.timeout_ms, 3000, "store timeout 3 s by default");
	gw_config_free(cfg);
	is_int(parse("[store]\ntimeout = 1500ms\n", &cfg, &err), 0, "store timeout");
	is_int(cfg->store.timeout_ms, 1500, "store timeout 1.5 s");
	gw_config_free(cfg);
	expect_error("[store]\ntimeout = 50ms\n", -EINVAL, "bad value for: timeout",
		     "store timeout under 100 ms");
	expect_error("[store]\ntimeout = 2min\n", -EINVAL, "bad value for: timeout",
		     "store timeout over 60 s");
	expect_error("[store]\nbackend = mysql\n", -EINVAL, "bad value for: backend",
		     "unknown backend");
	expect_error("[gateway]\nlease_ttl = 100ms\n", -EINVAL, "bad value for: lease_ttl",
		     "lease ttl too short");
	expect_error("[gateway]\nlease_ttl = 6min\n", -EINVAL, "bad value for: lease_ttl",
		     "lease ttl over 5 min");
	expect_error("[images]\ndir = relative/img\n", -EINVAL, "bad value for: dir",
		     "relative image dir");
	expect_error("[gateway]\nid =\n", -EINVAL, "id", "empty gateway id");
	expect_error("[gateway]\nid = ward-3\n", -EINVAL,
		     "[gateway] id = ward-3 needs [store] backend = postgresql",
		     "a gateway id on SQLite (the default) is refused");
	expect_error("[gateway]\nid = ward-3\n[store]\nbackend = sqlite\n", -EINVAL,
		     "needs [store] backend = postgresql", "a gateway id on SQLite is refused");
	/* [gateway] url and forward_timeout (cluster.h) */
	is_int(parse("[gateway]\nurl = http://ward-3.example.org:8080/smpgw\n"
		     "forward_timeout = 5s\n", &cfg, &err), 0, "url and forward timeout");
	is_str(cfg->gateway.url, "http://ward-3.example.org:8080/smpgw", "url kept");
	is_int(cfg->gateway.forward_timeout_ms, 5000, "forward timeout");
	gw_config_free(cfg);
	is_int(parse("", &cfg, &err), 0, "defaults again");
	ok(!cfg->gateway.url, "no url: the bound address");
	is_int(cfg->gateway.forward_timeout_ms, 30000, "forward timeout 30 s");
	gw_config_free(cfg);
	expect_error("[gateway]\nurl = ward-3:8080\n", -EINVAL, "bad value for: url",
		     "url without a scheme");
	expect_error("[gateway]\nurl = http://\n", -EINVAL, "bad value for: url",
		     "url without a host");
	expect_error("[gateway]\nurl = http://a b\n", -EINVAL, "bad value for: url",
		     "url with a space");
	expect_error("[gateway]\nforward_timeout = 11min\n", -EINVAL,
		     "bad value for: forward_timeout", "forward timeout over 10 min");
}

static void test_nul(void)
{
	static const uint8_t buf[] = "[general]\0\n";
	struct gw_config *cfg = NULL;
	char *err = NULL;

	is_int(gw_config_parse(buf, sizeof(buf) - 1, &cfg, &err), -EBADMSG,
	       "NUL byte refused");
	ok(cfg == NULL, "no config");
	free(err);
	is_int(gw_config_parse(NULL, 0, &cfg, NULL), 0, "empty buffer, NULL ok");
	gw_config_free(cfg);
}

static void test_load_example(void)
{
	struct gw_config *cfg = NULL;
	char *err = NULL;
	/* The conformance data sits at tests/data/conformance in the tree. */
	int r = gw_config_load(CONFORMANCE_DIR "/../../../etc/smpgwd.conf", &cfg, &err);

	is_int(r, 0, "etc/smpgwd.conf parses");
	if (r < 0)
		tap_diag("%s", err ? err : "?");
	ok(cfg && cfg->udp.base_port == 17001, "example keeps defaults");
	gw_config_free(cfg);
	free(err);
	is_int(gw_config_load("/nonexistent/smpgwd.conf", &cfg, &err), -ENOENT,
	       "missing file");
	free(err);
}

static void test_pairing(void)
{
	static const char text[] =
		"[ble]\n"
		"pairing = allowlist\n"
		"pair_allow = AA:BB:CC:DD:EE:01, Pine*\n"
		"pair_first = InfiniTime-*\n"
		"rebond = no\n";
	struct gw_config *cfg = NULL, *def = gw_config_new_default();
	char *err = NULL;
	bool allowed = false, first = true;

	gw_config_ble_pairing(def, "AA:BB:CC:DD:EE:09", NULL, &allowed, &first);
	ok(allowed && !first && def->ble.rebond, "default: pair any watch on demand, rebond");
	is_int(gw_config_parse((const uint8_t *)text, sizeof(text) - 1, &cfg, &err), 0,
	       "pairing keys parse");
	if (!cfg)
		return;
	ok(!cfg->ble.rebond, "rebond = no");
	gw_config_ble_pairing(cfg, "aa:bb:cc:dd:ee:01", NULL, &allowed, &first);
	ok(allowed && !first, "pair_allow by address");
	gw_config_ble_pairing(cfg, "AA:BB:CC:DD:EE:02", "PineTime", &allowed, &first);
	ok(allowed && !first, "pair_allow by name glob");
	gw_config_ble_pairing(cfg, "AA:BB:CC:DD:EE:03", "InfiniTime-2", &allowed, &first);
	ok(allowed && first, "pair_first: allowed and paired first");
	gw_config_ble_pairing(cfg, "AA:BB:CC:DD:EE:04", "Other", &allowed, &first);
	ok(!allowed && !first, "not in the pairing allowlist");
	is_int(gw_config_set(cfg, "ble", "pairing", "off"), 0, "pairing = off");
	gw_config_ble_pairing(cfg, "AA:BB:CC:DD:EE:03", "InfiniTime-2", &allowed, &first);
	ok(!allowed && !first, "off: never, not even pair_first");
	is_int(gw_config_set(cfg, "ble", "pairing", "sometimes"), -EINVAL, "bad pairing value");
	is_int(gw_config_set(cfg, "ble", "rebond", "maybe"), -EINVAL, "bad rebond value");
	gw_config_free(cfg);
	gw_config_free(def);
	free(err);
}

int main(void)
{
	test_defaults();
	test_pairing();
	test_full();
	test_errors();
	test_multi_gateway();
	test_nul();
	test_load_example();
	return tap_done();
}
