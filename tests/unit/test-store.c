/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/store.h"
#include "tap.h"
#include "util/util.h"

/*
 * One suite for both backends: SQLite in a temp directory, or PostgreSQL
 * when SMPGW_TEST_PG names a database (tests/pg/pg_server.py starts a
 * throw-away server and sets it; meson test "store-pg").
 */
static const char *pg; /* NULL: SQLite */

static enum gw_store_backend backend(void)
{
	return pg ? GW_STORE_POSTGRESQL : GW_STORE_SQLITE;
}

/* Opens the store of this run with an explicit migration list. */
static struct gw_store *open_with(const char *path, const struct gw_migration *m,
				  size_t n, int *err, char **msg)
{
	return gw_store_open_with(backend(), pg ? pg : path, m, n, err, msg);
}

/* Opens the store of this run with the real schema. */
static struct gw_store *open_real(const char *dir, int *err, char **msg)
{
	return pg ? gw_store_open_pg(pg, err, msg) : gw_store_open(dir, err, msg);
}

/* PostgreSQL: an empty database for the next part (m, n: the migrations
 * the database has, or the open refuses it as newer). */
static void reset(const struct gw_migration *m, size_t n)
{
	struct gw_store *s;

	if (!pg)
		return;
	s = gw_store_open_with(GW_STORE_POSTGRESQL, pg, m, n, NULL, NULL);
	ok(s && gw_store_exec(s, "DROP SCHEMA public CASCADE; CREATE SCHEMA public") == 0,
	   "empty database");
	gw_store_free(s);
}

static bool query_ok(struct gw_store *s, const char *sql)
{
	struct gw_stmt *st = gw_store_prepare(s, sql);

	return st && gw_stmt_run(st) == 0;
}

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

	reset(NULL, 0);

	s = open_with(path, steps, 1, &err, &msg);
	ok(s != NULL, "open with one step");
	is_int(gw_store_schema_version(s), 1, "version 1");
	gw_store_free(s);
	s = open_with(path, steps, 2, &err, &msg);
	is_int(gw_store_schema_version(s), 2, "appended step applied on reopen");
	ok(query_ok(s, "SELECT y FROM b"), "table from step two");
	gw_store_free(s);
	s = open_with(path, steps, 3, &err, &msg);
	ok(s == NULL, "a broken step fails the open");
	ok(msg != NULL, "with a message");
	free(msg);
	msg = NULL;
	s = open_with(path, steps, 2, &err, &msg);
	is_int(gw_store_schema_version(s), 2, "failed step rolled back");
	ok(!query_ok(s, "SELECT z FROM c"), "no table from the failed step");
	gw_store_free(s);
	s = open_with(path, steps, 1, &err, &msg);
	ok(s == NULL, "newer schema than this binary refused");
	is_int(err, -EPROTO, "-EPROTO");
	free(msg);
	msg = NULL;
	s = open_with(path, reordered, 2, &err, &msg);
	ok(s == NULL, "reordered migrations refused");
	ok(msg && strstr(msg, "migration 1 is \"one\""), "message: %s", msg ? msg : "");
	free(msg);
	free(path);
}

/* One text value of a query (a setting), "" on error. */
static const char *value(struct gw_store *s, const char *sql)
{
	static char out[32];
	struct gw_stmt *st = gw_store_prepare(s, sql);

	out[0] = '\0';
	if (st && gw_stmt_step(st) == 1 && gw_stmt_text(st, 0))
		snprintf(out, sizeof(out), "%s", gw_stmt_text(st, 0));
	gw_stmt_finalize(st);
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

	reset(steps, 2); /* what test_migrations left */
	s = open_real(dir, &err, NULL);
	ok(s != NULL, "open the store");
	ok(gw_store_schema_version(s) >= 1, "migrated");
	if (pg) {
		is_str(value(s, "SHOW synchronous_commit"), "on",
		       "a commit waits for the server's disk");
	} else {
		is_str(value(s, "PRAGMA journal_mode"), "wal", "WAL journal");
		is_str(value(s, "PRAGMA synchronous"), "2", "synchronous=FULL");
	}
	is_int(port(s, "a", 0, NULL, 0), 20000, "first free port");
	is_int(port(s, "b", 0, NULL, 0), 20001, "second");
	is_int(port(s, "c", 0, reserved, 1), 20002, "third");
	is_int(port(s, "a", 0, NULL, 0), 20000, "same device, same port");
	gw_store_free(s);

	s = open_real(dir, &err, NULL);
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

struct model {
	int rows;
	uint64_t rec_ms, slots_ms;
	char slots[64];
};

static void model_row(const struct gw_store_device *d, uint16_t udp_port, void *user_data)
{
	struct model *m = user_data;

	m->rows++;
	m->rec_ms = d->rec_ms;
	m->slots_ms = d->slots_ms;
	snprintf(m->slots, sizeof(m->slots), "%s", d->slots_json ? d->slots_json : "(null)");
}

/* The record's time and the slots kept for a restart (registry/device.c). */
static void test_device_model(struct gw_store *s)
{
	struct gw_store_device d = { .id = "AA:BB", .transport = "ble", .rssi = 127,
				     .rec_ms = 2000, .slots_json = "[1]", .slots_ms = 1500 };
	struct model m = { 0 };

	is_int(gw_store_device_put(s, &d), 0, "record and slots");
	d.rec_ms = 1800;
	d.slots_json = NULL;
	d.slots_ms = 0;
	is_int(gw_store_device_put(s, &d), 0, "an older record, no slots");
	is_int(gw_store_device_get(s, "AA:BB", model_row, &m), 0, "get");
	is_int(m.rows, 1, "one row");
	is_int(m.rec_ms, 2000, "rec_ms never goes back");
	is_str(m.slots, "[1]", "no slots keep the stored ones");
	is_int(m.slots_ms, 1500, "with their time");
	is_int(gw_store_device_get(s, "CC:DD", model_row, &m), -ENOENT, "get: unknown id");
	is_int(m.rows, 1, "no callback for it");
}

static void test_devices(const char *dir)
{
	struct gw_store *s = open_real(dir, NULL, NULL);
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
	test_device_model(s);
	gw_store_free(s);
}

/* The statement interface both backends implement. */
static void test_statements(const char *dir)
{
	struct gw_store *s = open_real(dir, NULL, NULL);
	struct gw_stmt *st;
	int64_t id1 = 0, id2 = 0;

	ok(s != NULL, "open");
	st = gw_store_prepare(s, "INSERT INTO jobs (device_id, image_id, mode, state,"
			      " phase, created, updated) VALUES (?, ?, 'test', 'queued',"
			      " 'queued', ?, ?) RETURNING id");
	gw_stmt_bind_text(st, 1, "dev-1");
	gw_stmt_bind_text(st, 2, "img?'x");
	gw_stmt_bind_int64(st, 3, 1700000000123LL);
	gw_stmt_bind_int64(st, 4, 1700000000123LL);
	is_int(gw_stmt_step(st), 1, "insert returns its id");
	id1 = gw_stmt_int64(st, 0);
	gw_stmt_finalize(st);
	st = gw_store_prepare(s, "INSERT INTO jobs (device_id, image_id, mode, state,"
			      " phase, created, updated) VALUES ('d2', 'i', 'test',"
			      " 'done?', 'queued', 0, 0) RETURNING id");
	is_int(gw_stmt_step(st), 1, "a ? inside a literal is not a parameter");
	id2 = gw_stmt_int64(st, 0);
	gw_stmt_finalize(st);
	ok(id1 > 0 && id2 > id1, "ids grow (%lld, %lld)", (long long)id1, (long long)id2);

	st = gw_store_prepare(s, "SELECT image_id, created, rollout_id, state FROM jobs"
			      " WHERE id = ?1");
	gw_stmt_bind_int64(st, 1, id1);
	is_int(gw_stmt_step(st), 1, "row");
	is_str(gw_stmt_text(st, 0), "img?'x", "text round trip");
	ok(gw_stmt_int64(st, 1) == 1700000000123LL, "64-bit integers");
	ok(gw_stmt_is_null(st, 2) && !gw_stmt_text(st, 2), "NULL");
	is_int(gw_stmt_step(st), 0, "then done");
	gw_stmt_finalize(st);

	/* A constraint violation is -EEXIST on both. */
	ok(query_ok(s, "INSERT INTO images (id, version, size) VALUES ('x', '1', 1)"),
	   "insert an image row");
	st = gw_store_prepare(s, "INSERT INTO images (id, version, size) VALUES (?1, '1', 1)");
	gw_stmt_bind_text(st, 1, "x");
	is_int(gw_stmt_run(st), -EEXIST, "duplicate key: -EEXIST");

	/* A transaction: rolled back leaves nothing; a commit after a failed
	 * statement fails and leaves nothing either. */
	is_int(gw_store_begin(s), 0, "begin");
	ok(query_ok(s, "INSERT INTO images (id, version, size) VALUES ('y', '1', 1)"),
	   "insert in a transaction");
	gw_store_rollback(s);
	is_str(value(s, "SELECT count(*) FROM images WHERE id = 'y'"), "0", "rolled back");
	is_int(gw_store_begin(s), 0, "begin again");
	ok(query_ok(s, "INSERT INTO images (id, version, size) VALUES ('z', '1', 1)"),
	   "insert z");
	ok(!query_ok(s, "INSERT INTO images (id, version, size) VALUES ('x', '1', 1)"),
	   "a failing statement inside");
	if (pg) {
		ok(gw_store_commit(s) < 0, "the commit fails");
		is_str(value(s, "SELECT count(*) FROM images WHERE id = 'z'"), "0",
		       "nothing of it kept");
	} else {
		/* SQLite keeps the statements that succeeded (the callers roll
		 * back themselves on an error). */
		is_int(gw_store_commit(s), 0, "the commit keeps what succeeded");
	}
	ok(!query_ok(s, "NOT SQL AT ALL"), "bad SQL is an error");
	ok(strlen(gw_store_errmsg(s)) > 0, "with a message: %s", gw_store_errmsg(s));
	gw_store_free(s);
}

/* A database of the previous schema version, with data, migrates to the
 * current one keeping its rows. */
static void test_upgrade(const char *dir)
{
	char *path = xasprintf("%s/old.db", dir);
	size_t n;
	const struct gw_migration *all = gw_store_migrations(&n);
	struct gw_store *s;
	struct seen seen = { 0 };
	int err = 0;
	char *msg = NULL;

	reset(all, n); /* what test_statements left */
	s = open_with(path, all, n - 1, &err, &msg);
	ok(s != NULL, "open at the previous version (%zu)", n - 1);
	/* Raw SQL: gw_store_device_put() writes the current schema. */
	ok(query_ok(s, "INSERT INTO devices (id, transport, last_seen, rssi)"
		    " VALUES ('OLD', 'ble', 7, -40)"), "a device in the old schema");
	ok(query_ok(s, "INSERT INTO jobs (device_id, image_id, mode, state, phase,"
		    " created, updated) VALUES ('OLD', 'i', 'test', 'queued', 'queued', 1, 1)"),
	   "a job in the old schema");
	gw_store_free(s);
	s = pg ? gw_store_open_pg(pg, &err, &msg) :
		 gw_store_open_with(GW_STORE_SQLITE, path, all, n, &err, &msg);
	ok(s != NULL, "reopened by this version: %s", msg ? msg : "ok");
	is_int(gw_store_schema_version(s), (int)n, "migrated to the current version");
	gw_store_device_foreach(s, collect, &seen);
	ok(seen.n == 1 && !strcmp(seen.ids[0], "OLD") && seen.rssi[0] == -40,
	   "the device survived");
	is_str(value(s, "SELECT count(*) FROM jobs WHERE device_id = 'OLD'"), "1",
	       "the job survived");
	ok(query_ok(s, "SELECT holder, expires_ms FROM leases"), "the new tables exist");
	gw_store_free(s);
	free(msg);
	free(path);
}

struct heard {
	int notified, connected;
};

static void on_heard(bool reconnected, void *user_data)
{
	struct heard *h = user_data;

	if (reconnected)
		h->connected++;
	else
		h->notified++;
}

/* Runs base until cond holds, at most 10 s. */
static bool run_until(struct event_base *base, const int *counter, int want)
{
	for (int i = 0; i < 1000 && *counter < want; i++) {
		struct timeval tv = { 0, 10000 };

		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return *counter >= want;
}

/* LISTEN/NOTIFY (store.h): on the loop on PostgreSQL, -ENOTSUP on SQLite. */
static void test_notify(const char *dir)
{
	struct event_base *base = event_base_new();
	struct gw_store *s = open_real(dir, NULL, NULL);
	struct gw_store_listener *l;
	struct heard h = { 0 };
	int err = 0;

	l = gw_store_listen(s, base, "smpgw_test", 100, on_heard, &h, &err);
	if (!pg) {
		ok(!l && err == -ENOTSUP, "sqlite: no LISTEN");
		is_int(gw_store_notify(s, "smpgw_test", "1"), -ENOTSUP, "sqlite: no NOTIFY");
		goto out;
	}
	ok(l != NULL, "listener created");
	ok(!gw_store_listen(s, base, "bad channel;", 100, on_heard, &h, &err) &&
	   err == -EINVAL, "a bad channel name is refused");
	ok(run_until(base, &h.connected, 1) && gw_store_listener_up(l),
	   "the listener connects on the loop and says so");
	is_int(gw_store_notify(s, "smpgw_test", "42"), 0, "notify");
	ok(run_until(base, &h.notified, 1), "the notification arrives on the loop");
	/* Inside a transaction: delivered at the commit only. */
	gw_store_begin(s);
	gw_store_notify(s, "smpgw_test", "43");
	gw_store_rollback(s);
	gw_store_begin(s);
	gw_store_notify(s, "smpgw_test", "44");
	gw_store_commit(s);
	ok(run_until(base, &h.notified, 2) && h.notified == 2,
	   "a rolled back notification is not delivered, a committed one is");
	/* The listening connection killed: it reconnects and says so. */
	is_int(gw_store_exec(s, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
			     " WHERE query LIKE 'LISTEN smpgw_test%'"), 0, "cut the listener");
	ok(run_until(base, &h.connected, 2), "the listener reconnects after a cut");
	is_int(gw_store_notify(s, "smpgw_test", "45"), 0, "notify after the cut");
	ok(run_until(base, &h.notified, 3), "and hears again");
out:
	gw_store_listener_free(l);
	gw_store_free(s);
	event_base_free(base);
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* [store] timeout: a round trip the server does not answer in time fails
 * with -ETIMEDOUT (a statement sleeping stands in for a silent server),
 * the connection is dropped, a transaction it was in fails up to its
 * COMMIT (nothing committed on a new connection), and the next statement
 * after twice the timeout reconnects. */
static void test_timeout(const char *dir)
{
	struct gw_store *s = open_real(dir, NULL, NULL);
	double t0;
	int r;

	gw_store_set_timeout(s, 300);
	if (!pg) {
		ok(query_ok(s, "SELECT 1"), "sqlite: nothing to bound");
		gw_store_free(s);
		return;
	}
	ok(query_ok(s, "CREATE TABLE IF NOT EXISTS t_timeout (v INTEGER)") &&
	   query_ok(s, "DELETE FROM t_timeout"), "a table");
	t0 = mono_s();
	r = gw_store_exec(s, "SELECT pg_sleep(3)");
	is_int(r, -ETIMEDOUT, "an unanswered statement times out");
	ok(mono_s() - t0 < 2.5, "after the timeout, not the statement's 3 s (%.2f s)",
	   mono_s() - t0);
	ok(strstr(gw_store_errmsg(s), "did not answer within 300 ms") != NULL,
	   "the error says so: %s", gw_store_errmsg(s));
	is_int(gw_store_exec(s, "SELECT 1"), -ENOTCONN,
	       "right after: no connection (no reconnect before 2 x timeout, 1 s at least)");
	usleep(1200 * 1000);
	ok(query_ok(s, "SELECT 1"), "after that the next statement reconnects");
	/* Inside a transaction. */
	is_int(gw_store_begin(s), 0, "begin");
	ok(query_ok(s, "INSERT INTO t_timeout (v) VALUES (1)"), "a write in it");
	is_int(gw_store_exec(s, "SELECT pg_sleep(3)"), -ETIMEDOUT, "a timeout in it");
	usleep(1200 * 1000);
	ok(!query_ok(s, "INSERT INTO t_timeout (v) VALUES (2)"),
	   "the rest of the transaction fails (not run on a new connection)");
	ok(gw_store_commit(s) < 0, "its commit fails");
	ok(query_ok(s, "SELECT 1"), "the next statement runs on a new connection");
	{
		struct gw_stmt *st = gw_store_prepare(s, "SELECT count(*) FROM t_timeout");

		ok(st && gw_stmt_step(st) == 1 && gw_stmt_int64(st, 0) == 0,
		   "nothing of the transaction was committed");
		gw_stmt_finalize(st);
	}
	gw_store_free(s);
}

int main(void)
{
	char tmpl[] = "/tmp/test-store-XXXXXX";
	char *dir = mkdtemp(tmpl);
	char *cmd;

	if (!dir)
		return 1;
	pg = getenv("SMPGW_TEST_PG");
	if (pg && !*pg)
		pg = NULL;
	tap_diag("backend: %s", gw_store_backend_name(backend()));
	test_migrations(dir);
	test_ports(dir);
	test_devices(dir);
	test_statements(dir);
	test_upgrade(dir);
	test_notify(dir);
	test_timeout(dir);
	cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", dir);
	free(cmd);
	return tap_done();
}
