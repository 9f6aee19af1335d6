/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
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

/* A proxy in a child process from dir/.s.PGSQL.5432 to the server's
 * socket in server_dir. While dir/hole exists it forwards nothing and
 * holds new connections unanswered (a partition that drops silently);
 * once it is gone the held ones are closed. Ends after 120 s at most. */
#define PROXY_MAX 32
static void proxy_unix(struct sockaddr_un *a, const char *dir)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s/.s.PGSQL.5432", dir);
}

static pid_t hole_proxy(const char *dir, const char *server_dir)
{
	int pairs[PROXY_MAX][2], held[PROXY_MAX], np = 0, nh = 0, lis;
	char *hole = xasprintf("%s/hole", dir), buf[65536];
	struct sockaddr_un a, srv;
	double end = mono_s() + 120;
	pid_t pid = fork();

	if (pid) {
		free(hole); /* the child's copy is its own */
		return pid;
	}
	signal(SIGPIPE, SIG_IGN); /* a peer gone: its write fails, the pair closes */
	proxy_unix(&a, dir);
	proxy_unix(&srv, server_dir);
	lis = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lis < 0 || bind(lis, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lis, 16) < 0)
		_exit(1);
	while (mono_s() < end && getppid() != 1) {
		struct pollfd p[1 + 2 * PROXY_MAX] = { { .fd = lis, .events = POLLIN } };
		bool black = access(hole, F_OK) == 0;
		int n = 1;

		for (; !black && nh; nh--)
			close(held[nh - 1]);
		for (int i = 0; !black && i < np; i++) {
			p[n++] = (struct pollfd){ .fd = pairs[i][0], .events = POLLIN };
			p[n++] = (struct pollfd){ .fd = pairs[i][1], .events = POLLIN };
		}
		if (poll(p, (nfds_t)n, 50) <= 0)
			continue;
		if (p[0].revents) {
			int c = accept(lis, NULL, NULL), sv;

			if (c >= 0 && black && nh < PROXY_MAX) {
				held[nh++] = c;
			} else if (c >= 0 && np < PROXY_MAX &&
				   (sv = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0) {
				if (connect(sv, (struct sockaddr *)&srv, sizeof(srv)) == 0) {
					pairs[np][0] = c;
					pairs[np++][1] = sv;
				} else {
					close(sv);
					close(c);
				}
			} else if (c >= 0) {
				close(c);
			}
		}
		for (int k = 1; k < n; k++) {
			int i = (k - 1) / 2, from = (k - 1) % 2;
			ssize_t r, w = 0;

			if (!p[k].revents || i >= np)
				continue;
			r = read(pairs[i][from], buf, sizeof(buf));
			while (r > 0 && w < r) {
				ssize_t x = write(pairs[i][!from], buf + w, (size_t)(r - w));

				if (x <= 0)
					break;
				w += x;
			}
			if (r <= 0 || w < r) {
				close(pairs[i][0]);
				close(pairs[i][1]);
				pairs[i][0] = pairs[i][1] = -1; /* compacted below */
			}
		}
		for (int i = 0; i < np; i++)
			if (pairs[i][0] < 0) {
				pairs[i][0] = pairs[np - 1][0];
				pairs[i][1] = pairs[np - 1][1];
				np--;
				i--;
			}
	}
	_exit(0);
}

struct outage {
	struct gw_store *s;
	double timeout_s;
	int calls, ok_calls, slow, late_connects;
	double worst, worst_fast; /* worst_fast: but the slow ones */
};

/* A statement every tick of the loop, timed. */
static void outage_tick(evutil_socket_t fd, short what, void *arg)
{
	struct outage *o = arg;
	double t0 = mono_s(), dt;
	int r = gw_store_exec(o->s, "SELECT 1");

	(void)fd;
	(void)what;
	dt = mono_s() - t0;
	o->calls++;
	o->ok_calls += r == 0;
	o->late_connects += strstr(gw_store_errmsg(o->s), "the connection in time") != NULL;
	if (dt >= o->timeout_s * 0.9)
		o->slow++;
	else if (dt > o->worst_fast)
		o->worst_fast = dt;
	if (dt > o->worst)
		o->worst = dt;
}

static void run_for(struct event_base *base, double secs)
{
	struct timeval tv = { (time_t)secs, (suseconds_t)((secs - (long)secs) * 1e6) };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* A black hole between the store and the server (gw_store_set_loop()):
 * the statement in flight waits the timeout once; after that every
 * statement fails at once while the reconnects run on the loop (each
 * bounded by the timeout), and the loop keeps turning. The hole closes:
 * the loop reconnects and the next statement works. A transaction the
 * hole cut fails up to its COMMIT, then the connection made meanwhile
 * serves the next statement. */
static void test_blackhole(const char *dir)
{
	const char *server_dir = getenv("SMPGW_TEST_PG_DIR");
	char *pdir, *hole, *ci, *msg = NULL;
	struct outage o = { .timeout_s = 0.5 };
	struct timeval tick = { 0, 50000 };
	struct event_base *base;
	struct event *ev;
	struct stat sb;
	int err = 0, ok_before;
	double t0;
	pid_t pid;

	if (!pg || !server_dir)
		return; /* SQLite: no server; or no server of our own to proxy */
	pdir = xasprintf("%s/pgproxy", dir);
	hole = xasprintf("%s/hole", pdir);
	mkdir(pdir, 0755);
	pid = hole_proxy(pdir, server_dir);
	ci = xasprintf("%s/.s.PGSQL.5432", pdir);
	for (int i = 0; i < 500 && stat(ci, &sb) < 0; i++)
		usleep(10000);
	free(ci);
	ci = xasprintf("%s host=%s", pg, pdir); /* the later host wins */
	o.s = gw_store_open_pg(ci, &err, &msg);
	ok(o.s != NULL, "opened through a proxy (%s)", msg ? msg : "ok");
	free(msg);
	if (!o.s)
		goto out;
	base = event_base_new();
	gw_store_set_timeout(o.s, 500);
	gw_store_set_loop(o.s, base);
	ok(query_ok(o.s, "CREATE TABLE IF NOT EXISTS t_hole (v INTEGER)") &&
	   query_ok(o.s, "DELETE FROM t_hole"), "statements through the proxy");
	ev = event_new(base, -1, EV_PERSIST, outage_tick, &o);
	event_add(ev, &tick);
	fclose(fopen(hole, "w"));
	run_for(base, 4.0); /* 8 timeouts */
	tap_diag("in the hole for 4 s: %d statements (%d answered), %d waited the timeout, "
		 "the slowest of the others %.1f ms", o.calls, o.ok_calls, o.slow,
		 o.worst_fast * 1000);
	ok(o.calls >= 10, "the loop keeps turning in the hole (%d ticks of 50 ms in 4 s)",
	   o.calls);
	ok(o.slow <= 1, "no more than one statement waited the whole timeout (%d)", o.slow);
	ok(o.late_connects > 0, "reconnects were tried in the hole, bounded (%s)",
	   gw_store_errmsg(o.s));
	unlink(hole);
	t0 = mono_s();
	ok_before = o.ok_calls;
	for (int i = 0; i < 200 && o.ok_calls == ok_before; i++)
		run_for(base, 0.05);
	ok(o.ok_calls > ok_before, "the hole closed: statements work again %.2f s later (%s)",
	   mono_s() - t0, o.ok_calls > ok_before ? "ok" : gw_store_errmsg(o.s));
	event_free(ev);
	/* A transaction the hole cuts. */
	is_int(gw_store_begin(o.s), 0, "begin");
	ok(query_ok(o.s, "INSERT INTO t_hole (v) VALUES (1)"), "a write in it");
	fclose(fopen(hole, "w"));
	usleep(200 * 1000); /* the proxy sees it */
	is_int(gw_store_exec(o.s, "SELECT 1"), -ETIMEDOUT, "the hole: a timeout in it");
	unlink(hole);
	run_for(base, 2.5); /* the reconnect after twice the timeout, on the loop */
	ok(!query_ok(o.s, "INSERT INTO t_hole (v) VALUES (2)"),
	   "the rest of the transaction fails (not run on the new connection)");
	ok(gw_store_commit(o.s) < 0, "its commit fails");
	t0 = mono_s();
	ok(query_ok(o.s, "SELECT 1") && mono_s() - t0 < 0.4,
	   "the next statement runs on the connection made meanwhile");
	{
		struct gw_stmt *st = gw_store_prepare(o.s, "SELECT count(*) FROM t_hole");

		ok(st && gw_stmt_step(st) == 1 && gw_stmt_int64(st, 0) == 0,
		   "nothing of the transaction was committed");
		gw_stmt_finalize(st);
	}
	gw_store_free(o.s);
	event_base_free(base);
out:
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	free(ci);
	free(hole);
	free(pdir);
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
	test_blackhole(dir);
	cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", dir);
	free(cmd);
	return tap_done();
}
