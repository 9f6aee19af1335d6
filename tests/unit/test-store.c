/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/store.h"
#include "tap.h"
#include "util/util.h"

static const struct gw_migration steps[] = {
	{ "one", "CREATE TABLE a (x INTEGER)" },
	{ "two", "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (7)" },
	{ "broken", "CREATE TABLE c (z INTEGER); THIS IS NOT SQL" },
};

static const struct gw_migration reordered[] = {
	{ "two", "CREATE TABLE b (y INTEGER)" },
	{ "one", "CREATE TABLE a (x INTEGER)" },
};

static void test_migrations(const char *dir)
{
	char *path = xasprintf("%s/m.db", dir);
	struct gw_store *s;
	char *msg = NULL;
	int err = 0;

	s = gw_store_open_with(path, steps, 1, &err, &msg);
	ok(s != NULL, "open with one step");
	is_int(gw_store_schema_version(s), 1, "version 1");
	gw_store_free(s);
	s = gw_store_open_with(path, steps, 2, &err, &msg);
	is_int(gw_store_schema_version(s), 2, "appended step applied on reopen");
	ok(sqlite3_exec(gw_store_db(s), "SELECT y FROM b", NULL, NULL, NULL) == 0,
	   "table from step two");
	gw_store_free(s);
	s = gw_store_open_with(path, steps, 3, &err, &msg);
	ok(s == NULL, "a broken step fails the open");
	ok(msg != NULL, "with a message");
	free(msg);
	msg = NULL;
	s = gw_store_open_with(path, steps, 2, &err, &msg);
	is_int(gw_store_schema_version(s), 2, "failed step rolled back");
	ok(sqlite3_exec(gw_store_db(s), "SELECT z FROM c", NULL, NULL, NULL) != 0,
	   "no table from the failed step");
	gw_store_free(s);
	s = gw_store_open_with(path, steps, 1, &err, &msg);
	ok(s == NULL, "newer schema than this binary refused");
	is_int(err, -EPROTO, "-EPROTO");
	free(msg);
	msg = NULL;
	s = gw_store_open_with(path, reordered, 2, &err, &msg);
	ok(s == NULL, "reordered migrations refused");
	ok(msg && strstr(msg, "migration 1 is \"one\""), "message: %s", msg ? msg : "");
	free(msg);
	free(path);
}

static const char *pragma(struct gw_store *s, const char *name)
{
	static char out[32];
	char *sql = xasprintf("PRAGMA %s", name);
	sqlite3_stmt *st;

	out[0] = '\0';
	if (sqlite3_prepare_v2(gw_store_db(s), sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			snprintf(out, sizeof(out), "%s", sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
	}
	free(sql);
	return out;
}

static uint16_t port(struct gw_store *s, const char *id, uint16_t pinned,
		     const uint16_t *res, size_t n)
{
	uint16_t p = 0;
	int r = gw_store_port_assign(s, id, pinned, 20000, res, n, &p);

	return r < 0 ? 0 : p;
}

static void test_ports(const char *dir)
{
	static const uint16_t reserved[] = { 20003 };
	struct gw_store *s;
	int err = 0;
	uint16_t p = 0;

	s = gw_store_open(dir, &err, NULL);
	ok(s != NULL, "open state dir");
	ok(gw_store_schema_version(s) >= 1, "migrated");
	is_str(pragma(s, "journal_mode"), "wal", "WAL journal");
	is_str(pragma(s, "synchronous"), "2", "synchronous=FULL");
	is_int(port(s, "a", 0, NULL, 0), 20000, "first free port");
	is_int(port(s, "b", 0, NULL, 0), 20001, "second");
	is_int(port(s, "c", 0, reserved, 1), 20002, "third");
	is_int(port(s, "a", 0, NULL, 0), 20000, "same device, same port");
	gw_store_free(s);

	s = gw_store_open(dir, &err, NULL);
	is_int(port(s, "c", 0, NULL, 0), 20002, "stable across reopen");
	is_int(port(s, "d", 0, reserved, 1), 20004, "reserved (pinned) port skipped");
	is_int(port(s, "e", 20001, NULL, 0), 20001, "pinned port");
	is_int(gw_store_port_get(s, "b", &p), -ENOENT, "b gave its port up");
	is_int(port(s, "b", 0, reserved, 1), 20005, "b gets a new one");
	is_int(port(s, "a", 0, (const uint16_t[]){ 20000 }, 1), 20003,
	       "a device whose port became pinned elsewhere moves");
	gw_store_free(s);
}

struct seen {
	int n;
	char ids[4][16];
	uint16_t ports[4];
	uint64_t last[4];
	int rssi[4];
};

static void collect(const struct gw_store_device *d, uint16_t udp_port,
		    void *user_data)
{
	struct seen *s = user_data;

	if (s->n >= 4)
		return;
	snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", d->id);
	s->ports[s->n] = udp_port;
	s->last[s->n] = d->last_seen_ms;
	s->rssi[s->n] = d->rssi;
	s->n++;
}

static void test_devices(const char *dir)
{
	struct gw_store *s = gw_store_open(dir, NULL, NULL);
	struct gw_store_device d = { .id = "AA:BB", .name = "W", .transport = "ble",
				     .last_seen_ms = 1000, .rssi = -60 };
	struct seen seen = { 0 };

	is_int(gw_store_device_put(s, &d), 0, "insert");
	d.last_seen_ms = 500;
	d.rssi = 127;
	d.name = NULL;
	is_int(gw_store_device_put(s, &d), 0, "update");
	is_int(gw_store_device_foreach(s, collect, &seen), 0, "foreach");
	is_int(seen.n, 1, "one device");
	is_str(seen.ids[0], "AA:BB", "id");
	is_int(seen.last[0], 1000, "last_seen never goes back");
	is_int(seen.rssi[0], -60, "unknown rssi keeps the stored one");
	is_int(seen.ports[0], 0, "no port yet");
	gw_store_free(s);
}

int main(void)
{
	char tmpl[] = "/tmp/test-store-XXXXXX";
	char *dir = mkdtemp(tmpl);
	char *cmd;

	if (!dir)
		return 1;
	test_migrations(dir);
	test_ports(dir);
	test_devices(dir);
	cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", dir);
	free(cmd);
	return tap_done();
}
