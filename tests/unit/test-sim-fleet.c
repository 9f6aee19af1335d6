/* SPDX-License-Identifier: MIT */
/*
 * Fleet file parsing (defaults, overrides, generated names and addresses,
 * adapters, clear errors) and the running fleet: 1000 watches in one process
 * cost no slot memory until written (copy-on-write initial images).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "fleet.h"
#include "tap.h"
#include "util/util.h"

static struct sim_fleet_spec *parse(const char *text, char *err, size_t esz)
{
	struct sim_fleet_spec *s = NULL;

	err[0] = '\0';
	if (sim_fleet_spec_parse((const uint8_t *)text, strlen(text), &s, err, esz) < 0)
		return NULL;
	return s;
}

static void test_parse(struct event_base *base)
{
	char err[256];
	struct sim_fleet_spec *s = parse(
		"{\"count\": 4, \"adapters\": [{\"max_connections\": 3}, {\"max_connections\": 7}],"
		" \"defaults\": {\"name\": \"W-{n}\", \"rssi\": -70, \"boot_ms\": 10,"
		"   \"link\": {\"phy\": 2, \"buf_count\": 3}},"
		" \"devices\": [{}, {\"name\": \"special\", \"address\": \"AA:BB:CC:DD:EE:FF\","
		"   \"adapter\": 0, \"udp_port\": 4242, \"image\": \"app-1.2.3+4-ecdsa-p256.bin\"}]}",
		err, sizeof(err));

	ok(s != NULL, "full file parses (%s)", err);
	if (!s)
		return;
	is_int(sim_fleet_spec_count(s), 4, "count 4");
	struct sim_fleet *f = sim_fleet_new(base, s, NULL, err, sizeof(err));
	ok(f != NULL, "fleet built (%s)", err);
	if (f) {
		is_str(sim_device_name(sim_fleet_device(f, 0)), "W-1", "pattern name");
		is_str(sim_device_name(sim_fleet_device(f, 3)), "W-4", "pattern name 4");
		is_str(sim_device_name(sim_fleet_device(f, 1)), "special", "override name");
		is_str(sim_device_address(sim_fleet_device(f, 1)), "AA:BB:CC:DD:EE:FF", "override address");
		is_str(sim_device_address(sim_fleet_device(f, 0)), "C0:FF:EE:00:00:01", "generated address");
		is_int(sim_device_adapter(sim_fleet_device(f, 2)), 0, "round robin adapter 2 -> 0");
		is_int(sim_device_adapter(sim_fleet_device(f, 3)), 1, "round robin adapter 3 -> 1");
		is_int(sim_device_adapter(sim_fleet_device(f, 1)), 0, "explicit adapter");
		is_int(sim_fleet_adapter_count(f), 2, "two adapters");
		is_int(sim_fleet_adapter_max_connections(f, 1), 7, "max_connections");
		is_int(sim_device_rssi(sim_fleet_device(f, 3)), -70, "default rssi");
		is_int(sim_device_link_model(sim_fleet_device(f, 2))->phy, 2, "default link phy");
		is_int(sim_device_link_model(sim_fleet_device(f, 2))->buf_count, 3, "default buf_count");
		is_int(sim_fleet_udp_port(f, 1), 4242, "udp port");
		ok(sim_fleet_find(f, "aa:bb:cc:dd:ee:ff") == sim_fleet_device(f, 1), "find by address");
		ok(sim_fleet_find(f, "W-3") == sim_fleet_device(f, 2), "find by name");
		struct sim_slot_info si;
		sim_device_slot_info(sim_fleet_device(f, 1), 0, &si);
		ok(si.present && si.bootable && !strcmp(si.version, "1.2.3.4"), "image from conformance dir");
		sim_device_slot_info(sim_fleet_device(f, 0), 0, &si);
		ok(si.present && si.bootable && !strcmp(si.version, "1.0.0"), "synthesized 1.0.0");
	}
	sim_fleet_free(f);
	sim_fleet_spec_free(s);
}

static void test_errors(struct event_base *base)
{
	static const struct { const char *text, *want; } bad[] = {
		{ "[]", "must be a JSON object" },
		{ "{\"count\": 0}", "count" },
		{ "{}", "no devices" },
		{ "{\"count\": 2, \"colour\": 1}", "colour: unknown key" },
		{ "{\"count\": 1, \"defaults\": {\"link\": {\"phy\": 3}}}", "defaults.link.phy" },
		{ "{\"devices\": [{\"rssi\": \"loud\"}]}", "devices[0].rssi" },
		{ "{\"devices\": [{}, {\"address\": \"C0:FF:EE:00:00:01\"}]}", "used twice" },
		{ "{\"devices\": [{\"address\": \"nope\"}]}", "devices[0].address" },
		{ "{\"count\": 1, \"adapters\": [{}], \"devices\": [{\"adapter\": 2}]}", "adapter 2 does not exist" },
		{ "{\"count\": 1, \"adapters\": [{\"max_connections\": 0}]}", "adapters[0].max_connections" },
		{ "{\"count\": 1, \"defaults\": {\"address\": \"C0:FF:EE:00:00:09\"}}", "per device" },
		{ "{\"count\": 1, \"defaults\": {\"version\": \"1.x\"}}", "defaults.version" },
		{ "{\"count\": 1, \"defaults\": {\"flash\": {\"erase\": 1}}}", "defaults.flash.erase" },
		{ "{\"count\": 1, \"count\": 2}", "line 1" },
		{ "{\"count\": 1, \"defaults\": {\"heard\": [1]}}", "defaults.heard: must be an object" },
		{ "{\"devices\": [{\"heard\": {\"g 1\": -50}}]}", "devices[0].heard.g 1: a bus name" },
		{ "{\"devices\": [{\"heard\": {\"g1\": -128}}]}", "devices[0].heard.g1: must be an integer" },
		{ "{\"devices\": [{\"centrals\": 0}]}", "devices[0].centrals" },
		{ "{\"count\": 1, \"adapters\": [{\"bus\": \"\"}]}", "adapters[0].bus" },
		{ "{\"count\": 1", "line 1" },
	};
	char err[256];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct sim_fleet_spec *s = parse(bad[i].text, err, sizeof(err));
		ok(!s && strstr(err, bad[i].want), "refused %s: \"%s\"", bad[i].text, err);
		sim_fleet_spec_free(s);
	}
	struct sim_fleet_spec *s = parse("{\"count\": 1, \"defaults\": {\"image\": \"missing.bin\"}}",
					 err, sizeof(err));
	struct sim_fleet *f = s ? sim_fleet_new(base, s, "/nonexistent", err, sizeof(err)) : NULL;
	ok(s && !f && strstr(err, "missing.bin"), "missing image named: \"%s\"", err);
	sim_fleet_spec_free(s);
	uint8_t junk[3] = { 0xff, 0x00, 0x7b };
	ok(sim_fleet_spec_parse(junk, sizeof(junk), &s, err, sizeof(err)) == -EBADMSG, "binary junk");
}

/* Per-gateway radio visibility: "heard" maps, "centrals", adapters' "bus". */
static void test_buses(struct event_base *base)
{
	const char *text = "{\"count\": 3, \"adapters\": [{\"bus\": \"g1\"}, {}],"
			   " \"defaults\": {\"heard\": {\"g1\": -60}},"
			   " \"devices\": [{\"heard\": {\"g1\": -50, \"g2\": -72}, \"centrals\": 2},"
			   " {\"heard\": {}}]}";
	const char *names[] = { "g1", "g2" }, *only_g1[] = { "g1" }, *g3[] = { "g1", "g2", "g3" };
	char err[256] = "";
	struct sim_fleet_spec *s = parse(text, err, sizeof(err));
	struct sim_fleet *f = s ? sim_fleet_new(base, s, NULL, err, sizeof(err)) : NULL;
	int rssi = 0;

	ok(f != NULL, "fleet with hearing maps: %s", err);
	if (!f)
		return;
	ok(sim_fleet_heard(f, 0, "g1", &rssi) == 1 && rssi == -50, "watch 0 heard by g1 at -50");
	ok(sim_fleet_heard(f, 0, "g2", &rssi) == 1 && rssi == -72, "and by g2 at -72");
	ok(sim_fleet_heard(f, 1, "g1", &rssi) == 0, "an empty map: heard by nobody");
	ok(sim_fleet_heard(f, 2, "g1", &rssi) == 1 && rssi == -60, "defaults' map");
	ok(sim_fleet_heard(f, 2, "g2", &rssi) == 0, "a bus not in the map does not hear it");
	ok(sim_fleet_heard(f, 0, NULL, &rssi) == -ENOENT, "a plain bus hears everything");
	ok(sim_fleet_centrals(f, 0) == 2 && sim_fleet_centrals(f, 1) == 1, "centrals, default 1");
	sim_fleet_link_add(f, 0, 1);
	sim_fleet_link_add(f, 1, -1);
	ok(sim_fleet_links(f, 0) == 1 && sim_fleet_links(f, 1) == 0, "link counts never negative");
	ok(!strcmp(sim_fleet_adapter_bus(f, 0), "g1") && !sim_fleet_adapter_bus(f, 1),
	   "adapter buses");
	ok(sim_fleet_check_buses(f, names, 2, err, sizeof(err)) == 0, "g1 and g2 given: fine");
	ok(sim_fleet_check_buses(f, only_g1, 1, err, sizeof(err)) < 0 && strstr(err, "g2"),
	   "g2 missing: \"%s\"", err);
	ok(sim_fleet_check_buses(f, g3, 3, err, sizeof(err)) == 0,
	   "g3 gets the shared adapter");
	sim_fleet_free(f);
	sim_fleet_spec_free(s);
}

static void test_thousand(struct event_base *base)
{
	struct sim_fleet_spec *s = sim_fleet_spec_new_count(1000);
	char err[256] = "";
	uint64_t t0 = now_usec();
	struct sim_fleet *f = sim_fleet_new(base, s, NULL, err, sizeof(err));

	ok(f && sim_fleet_count(f) == 1000, "1000 devices");
	ok(now_usec() - t0 < 5000000, "built in %llu ms", (unsigned long long)(now_usec() - t0) / 1000);
	is_int(sim_fleet_private_bytes(f), 0, "no private slot memory until written");
	ok(sim_fleet_find(f, "PineTime-1000") != NULL, "last one found");
	sim_fleet_free(f);
	sim_fleet_spec_free(s);
	ok(sim_fleet_spec_new_count(0) == NULL, "count 0 refused");
}

int main(void)
{
	struct event_base *base = event_base_new();

	test_parse(base);
	test_errors(base);
	test_buses(base);
	test_thousand(base);
	event_base_free(base);
	return tap_done();
}
