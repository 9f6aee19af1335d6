/* SPDX-License-Identifier: MIT */
/*
 * The durable store (see store.h): the schema and its versioned
 * migrations, the statement interface over the backends (store-sqlite.c,
 * store-pg.c), the device table and the UDP port map.
 */
#include "gateway/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "gateway/store-int.h"
#include "util/util.h"

/*
 * The schema, one step per version. Append new steps at the end; never
 * edit or reorder released ones (a database records how many it applied).
 */
static const struct gw_migration migrations[] = {
	{ "devices and udp port map",
	  "CREATE TABLE devices ("
	  "  id TEXT PRIMARY KEY NOT NULL,"
	  "  name TEXT,"
	  "  transport TEXT NOT NULL,"
	  "  first_seen INTEGER NOT NULL DEFAULT 0,"
	  "  last_seen INTEGER NOT NULL DEFAULT 0,"
	  "  rssi INTEGER,"
	  "  adv TEXT);"
	  "CREATE TABLE udp_ports ("
	  "  device_id TEXT PRIMARY KEY NOT NULL,"
	  "  port INTEGER NOT NULL UNIQUE CHECK (port > 0 AND port < 65536),"
	  "  pinned INTEGER NOT NULL DEFAULT 0);" },
	/* The upload engine's jobs (src/gateway/engine.c). */
	{ "update jobs",
	  "CREATE TABLE jobs ("
	  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	  "  device_id TEXT NOT NULL,"
	  "  image_id TEXT NOT NULL,"
	  "  mode TEXT NOT NULL,"
	  "  state TEXT NOT NULL,"
	  "  phase TEXT NOT NULL,"
	  "  rollout_id TEXT,"
	  "  error TEXT,"
	  "  size INTEGER NOT NULL DEFAULT 0,"
	  "  off INTEGER NOT NULL DEFAULT 0,"
	  "  bytes_sent INTEGER NOT NULL DEFAULT 0,"
	  "  flags INTEGER NOT NULL DEFAULT 0,"
	  "  created INTEGER NOT NULL,"
	  "  started INTEGER NOT NULL DEFAULT 0,"
	  "  finished INTEGER NOT NULL DEFAULT 0,"
	  "  updated INTEGER NOT NULL);"
	  "CREATE INDEX jobs_device ON jobs (device_id, id);"
	  "CREATE INDEX jobs_state ON jobs (state);" },
	/* images.c: what an image file cannot say about itself. */
	{ "images",
	  "CREATE TABLE images ("
	  "  id TEXT PRIMARY KEY NOT NULL," /* SHA-256 TLV, lower-case hex */
	  "  version TEXT NOT NULL,"
	  "  size INTEGER NOT NULL,"
	  "  filename TEXT,"
	  "  uploaded_ms INTEGER NOT NULL DEFAULT 0);" },
	/* Rollouts (src/gateway/rollouts*.c): a rollout and its devices. */
	{ "rollouts",
	  "CREATE TABLE rollouts ("
	  "  id TEXT PRIMARY KEY NOT NULL,"
	  "  image_id TEXT NOT NULL,"
	  "  image_version TEXT,"
	  "  spec TEXT NOT NULL,"          /* normalized JSON */
	  "  state TEXT NOT NULL,"
	  "  reason TEXT,"
	  "  created_ms INTEGER NOT NULL,"
	  "  started_ms INTEGER NOT NULL DEFAULT 0,"
	  "  finished_ms INTEGER NOT NULL DEFAULT 0,"
	  "  windows_done INTEGER NOT NULL DEFAULT 0);"
	  "CREATE TABLE rollout_devices ("
	  "  rollout_id TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,"
	  "  device_id TEXT NOT NULL,"
	  "  position INTEGER NOT NULL,"
	  "  wave INTEGER NOT NULL,"
	  "  state TEXT NOT NULL,"
	  "  job_id INTEGER NOT NULL DEFAULT 0,"
	  "  attempts INTEGER NOT NULL DEFAULT 0,"
	  "  acked INTEGER NOT NULL DEFAULT 0,"
	  "  error TEXT,"
	  "  from_version TEXT,"
	  "  started_ms INTEGER NOT NULL DEFAULT 0,"
	  "  finished_ms INTEGER NOT NULL DEFAULT 0,"
	  "  last_try_ms INTEGER NOT NULL DEFAULT 0,"
	  "  PRIMARY KEY (rollout_id, device_id));"
	  "CREATE INDEX rollout_devices_job ON rollout_devices (job_id);" },
	/* Leases on watches between gateways (src/gateway/lease.c). */
	{ "leases",
	  "CREATE TABLE hearings ("
	  "  gateway_id TEXT NOT NULL,"
	  "  device_id TEXT NOT NULL,"
	  "  rssi INTEGER NOT NULL,"
	  "  heard_ms INTEGER NOT NULL,"
	  "  PRIMARY KEY (gateway_id, device_id));"
	  "CREATE INDEX hearings_device ON hearings (device_id, heard_ms);"
	  "CREATE TABLE leases ("
	  "  device_id TEXT PRIMARY KEY NOT NULL,"
	  "  holder TEXT NOT NULL,"
	  "  expires_ms INTEGER NOT NULL,"
	  "  acquired_ms INTEGER NOT NULL);" },
	/* The device model kept across restarts (registry/device.c): when the
	 * advertised record was heard, the typed slots and when they were read. */
	{ "device record and slots",
	  "ALTER TABLE devices ADD COLUMN rec_ms INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE devices ADD COLUMN slots TEXT;"
	  "ALTER TABLE devices ADD COLUMN slots_ms INTEGER NOT NULL DEFAULT 0;" },
	/* Jobs and rollouts across gateways (docs/multi-gateway.md): the
	 * gateway running a job (its claim, renewed while it runs, and the
	 * gateways that ran it, in order), a cancel asked on another
	 * gateway; the gateway scheduling a rollout and a person's action
	 * asked on another gateway. */
	{ "job claims and rollout owners",
	  "ALTER TABLE jobs ADD COLUMN runner TEXT;"
	  "ALTER TABLE jobs ADD COLUMN runner_expires INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE jobs ADD COLUMN runners TEXT;"
	  "ALTER TABLE jobs ADD COLUMN cancel_req INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE rollouts ADD COLUMN owner TEXT;"
	  "ALTER TABLE rollouts ADD COLUMN owner_expires INTEGER NOT NULL DEFAULT 0;"
	  "ALTER TABLE rollouts ADD COLUMN command TEXT;" },
	/* Several gateways, one fleet (src/gateway/cluster.c): the gateways and
	 * their REST URLs, every gateway's events (announced with NOTIFY,
	 * pruned), and each holder's last view of its watches. */
	{ "cluster",
	  "CREATE TABLE gateways ("
	  "  id TEXT PRIMARY KEY NOT NULL,"
	  "  url TEXT,"
	  "  started_ms INTEGER NOT NULL,"
	  "  last_seen_ms INTEGER NOT NULL);"
	  "CREATE TABLE cluster_events ("
	  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	  "  gateway TEXT NOT NULL,"
	  "  type TEXT NOT NULL,"
	  "  json TEXT NOT NULL,"
	  "  time_ms INTEGER NOT NULL);"
	  "CREATE INDEX cluster_events_time ON cluster_events (time_ms);"
	  "CREATE TABLE device_views ("
	  "  device_id TEXT PRIMARY KEY NOT NULL,"
	  "  gateway TEXT NOT NULL,"
	  "  json TEXT NOT NULL,"
	  "  updated_ms INTEGER NOT NULL);" },
};

struct gw_store {
	const struct gw_store_ops *ops;
	void *conn;
	int version;
	uint64_t failures; /* see gw_store_failures() */
	int last_failure;
};

/* Counts a failed call (a constraint violation is an answer, not a
 * failure of the store). Returns r. */
static int failed(struct gw_store *store, int r)
{
	if (r < 0 && r != -EEXIST && store) {
		store->failures++;
		store->last_failure = r;
	}
	return r;
}

uint64_t gw_store_failures(const struct gw_store *store, int *last_err)
{
	if (last_err)
		*last_err = store ? store->last_failure : 0;
	return store ? store->failures : 0;
}

static const struct gw_store_ops *ops_of(enum gw_store_backend backend)
{
	switch (backend) {
	case GW_STORE_SQLITE:
		return &gw_store_sqlite_ops;
	case GW_STORE_POSTGRESQL:
		return &gw_store_pg_ops;
	}
	return NULL;
}

const char *gw_store_backend_name(enum gw_store_backend backend)
{
	return backend == GW_STORE_POSTGRESQL ? "postgresql" : "sqlite";
}

int gw_store_backend_parse(const char *s, enum gw_store_backend *ret)
{
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "sqlite") || !strcmp(s, "sqlite3")) {
		*ret = GW_STORE_SQLITE;
		return 0;
	}
	if (!strcmp(s, "postgresql") || !strcmp(s, "postgres") || !strcmp(s, "pg")) {
		*ret = GW_STORE_POSTGRESQL;
		return 0;
	}
	return -EINVAL;
}

enum gw_store_backend gw_store_backend(const struct gw_store *store)
{
	return store->ops->backend;
}

const char *gw_store_errmsg(struct gw_store *store)
{
	return store->ops->errmsg(store->conn);
}

int gw_store_exec(struct gw_store *store, const char *sql)
{
	return failed(store, store->ops->exec(store->conn, sql));
}

int gw_store_begin(struct gw_store *store)
{
	return failed(store, store->ops->exec(store->conn, store->ops->begin_sql));
}

void gw_store_rollback(struct gw_store *store)
{
	store->ops->exec(store->conn, "ROLLBACK");
}

int gw_store_commit(struct gw_store *store)
{
	int r;

	if (store->ops->tx_failed(store->conn)) {
		gw_store_rollback(store);
		return -EIO;
	}
	r = failed(store, store->ops->exec(store->conn, "COMMIT"));
	if (r < 0)
		gw_store_rollback(store);
	return r;
}

struct gw_stmt *gw_store_prepare(struct gw_store *store, const char *sql)
{
	struct gw_stmt *st = store->ops->prepare(store->conn, sql);

	if (st)
		st->store = store;
	else
		failed(store, -EIO);
	return st;
}

void gw_stmt_bind_text(struct gw_stmt *st, int i, const char *v)
{
	st->ops->bind_text(st, i, v);
}

void gw_stmt_bind_int64(struct gw_stmt *st, int i, int64_t v)
{
	st->ops->bind_int64(st, i, v);
}

int gw_stmt_step(struct gw_stmt *st)
{
	return failed(st->store, st->ops->step(st));
}

bool gw_stmt_is_null(struct gw_stmt *st, int col)
{
	return st->ops->is_null(st, col);
}

const char *gw_stmt_text(struct gw_stmt *st, int col)
{
	return st->ops->text(st, col);
}

int64_t gw_stmt_int64(struct gw_stmt *st, int col)
{
	return st->ops->int64(st, col);
}

void gw_stmt_finalize(struct gw_stmt *st)
{
	if (st)
		st->ops->finalize(st);
}

int gw_stmt_run(struct gw_stmt *st)
{
	int r;

	if (!st)
		return -EIO;
	r = gw_stmt_step(st);
	gw_stmt_finalize(st);
	return r < 0 ? r : 0;
}

/* ---- notifications ---- */

static bool channel_ok(const char *c)
{
	size_t n = c ? strlen(c) : 0;

	return n && n < 64 && strspn(c, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

int gw_store_notify(struct gw_store *store, const char *channel, const char *payload)
{
	struct gw_stmt *st;

	if (!store->ops->listen)
		return -ENOTSUP;
	if (!channel_ok(channel))
		return -EINVAL;
	st = gw_store_prepare(store, "SELECT pg_notify(?1, ?2)");
	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, channel);
	gw_stmt_bind_text(st, 2, payload ? payload : "");
	return gw_stmt_run(st);
}

struct gw_store_listener *gw_store_listen(struct gw_store *store, struct event_base *base,
					  const char *channel, uint32_t retry_ms,
					  gw_store_listen_cb cb, void *user_data, int *err)
{
	struct gw_store_listener *l = NULL;

	if (!store->ops->listen)
		*err = -ENOTSUP;
	else if (!channel_ok(channel))
		*err = -EINVAL;
	else
		l = store->ops->listen(store->conn, base, channel, retry_ms, cb, user_data);
	return l;
}

struct gw_store_listener *gw_store_listener_free(struct gw_store_listener *l)
{
	return l ? l->ops->listener_free(l) : NULL;
}

bool gw_store_listener_up(const struct gw_store_listener *l)
{
	return l && l->ops->listener_up(l);
}

/* ---- migrations ---- */

static void keep_err(struct gw_store *s, char **errmsg)
{
	if (errmsg && !*errmsg)
		*errmsg = xstrdup(gw_store_errmsg(s));
}

static int read_version(struct gw_store *s, int *ret)
{
	struct gw_stmt *st = gw_store_prepare(s, "SELECT count(*) FROM schema_migrations");
	int r;

	if (!st)
		return -EIO;
	r = gw_stmt_step(st);
	if (r == 1)
		*ret = (int)gw_stmt_int64(st, 0);
	gw_stmt_finalize(st);
	return r == 1 ? 0 : r < 0 ? r : -EIO;
}

static int apply_step(struct gw_store *s, int version,
		      const struct gw_migration *m, char **errmsg)
{
	struct gw_stmt *st;
	int r = gw_store_begin(s);

	if (r == 0)
		r = gw_store_exec(s, m->sql);
	if (r == 0) {
		st = gw_store_prepare(s, "INSERT INTO schema_migrations"
				      " (version, name, applied) VALUES (?1, ?2, ?3)");
		if (st) {
			gw_stmt_bind_int64(st, 1, version);
			gw_stmt_bind_text(st, 2, m->name);
			gw_stmt_bind_int64(st, 3, (int64_t)time(NULL));
		}
		r = gw_stmt_run(st);
	}
	if (r == 0)
		r = gw_store_commit(s);
	else
		gw_store_rollback(s);
	if (r < 0)
		keep_err(s, errmsg);
	return r;
}

/* Steps are counted, so a reordered or edited list would silently skip a
 * table: the names recorded must match the list, step by step. */
static int check_applied(struct gw_store *s, const struct gw_migration *steps,
			 size_t n, char **errmsg)
{
	struct gw_stmt *st = gw_store_prepare(s, "SELECT version, name FROM"
					      " schema_migrations ORDER BY version");
	int rc, r = 0;

	if (!st)
		return -EIO;
	while (r == 0 && (rc = gw_stmt_step(st)) == 1) {
		int64_t v = gw_stmt_int64(st, 0);
		const char *name = gw_stmt_text(st, 1);

		if (v < 1 || (size_t)v > n || !name)
			continue; /* newer than this binary: refused below */
		if (strcmp(name, steps[v - 1].name)) {
			if (errmsg)
				*errmsg = xasprintf("database migration %d is \"%s\", this "
						    "smpgwd expects \"%s\" (migrations "
						    "were reordered?)", (int)v, name,
						    steps[v - 1].name);
			r = -EPROTO;
		}
	}
	if (r == 0 && rc < 0)
		r = rc;
	gw_stmt_finalize(st);
	return r;
}

static int migrate_locked(struct gw_store *s, const struct gw_migration *steps,
			  size_t n, char **errmsg)
{
	int r = gw_store_exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			      " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
			      " applied INTEGER NOT NULL)");

	if (r < 0)
		keep_err(s, errmsg);
	if (r == 0)
		r = read_version(s, &s->version);
	if (r == 0)
		r = check_applied(s, steps, n, errmsg);
	if (r < 0)
		return r;
	if ((size_t)s->version > n) {
		if (errmsg)
			*errmsg = xasprintf("database schema version %d is newer than "
					    "this smpgwd (%zu)", s->version, n);
		return -EPROTO;
	}
	for (size_t i = (size_t)s->version; i < n; i++) {
		r = apply_step(s, (int)i + 1, &steps[i], errmsg);
		if (r < 0)
			return r;
		s->version = (int)i + 1;
	}
	return 0;
}

static int migrate(struct gw_store *s, const struct gw_migration *steps,
		   size_t n, char **errmsg)
{
	int r = 0;

	if (s->ops->schema_lock_sql)
		r = gw_store_exec(s, s->ops->schema_lock_sql);
	if (r < 0) {
		keep_err(s, errmsg);
		return r;
	}
	r = migrate_locked(s, steps, n, errmsg);
	if (s->ops->schema_unlock_sql)
		gw_store_exec(s, s->ops->schema_unlock_sql);
	return r;
}

struct gw_store *gw_store_open_with(enum gw_store_backend backend,
				    const char *where,
				    const struct gw_migration *steps,
				    size_t n_steps, int *err, char **errmsg)
{
	const struct gw_store_ops *ops = ops_of(backend);
	char *msg = NULL;
	struct gw_store *s;
	int r = 0;

	if (!ops) {
		if (err)
			*err = -ENOTSUP;
		if (errmsg)
			*errmsg = xasprintf("this smpgwd was built without %s support",
					    gw_store_backend_name(backend));
		return NULL;
	}
	s = xnew(struct gw_store);
	s->ops = ops;
	s->conn = ops->open(where, &r, &msg);
	if (s->conn)
		r = migrate(s, steps, n_steps, &msg);
	if (r < 0 || !s->conn) {
		if (err)
			*err = r < 0 ? r : -EIO;
		if (errmsg)
			*errmsg = msg;
		else
			free(msg);
		return gw_store_free(s);
	}
	return s;
}

struct gw_store *gw_store_open(const char *state_dir, int *err, char **errmsg)
{
	char *path = xasprintf("%s/smpgw.db", state_dir);
	struct gw_store *s;

	if (mkdir(state_dir, 0750) < 0 && errno != EEXIST) {
		int r = -errno;

		if (errmsg)
			*errmsg = xasprintf("%s: %s", state_dir, strerror(-r));
		if (err)
			*err = r;
		free(path);
		return NULL;
	}
	s = gw_store_open_with(GW_STORE_SQLITE, path, migrations,
			       ARRAY_SIZE(migrations), err, errmsg);
	free(path);
	return s;
}

struct gw_store *gw_store_open_pg(const char *conninfo, int *err, char **errmsg)
{
	return gw_store_open_with(GW_STORE_POSTGRESQL, conninfo, migrations,
				  ARRAY_SIZE(migrations), err, errmsg);
}

const struct gw_migration *gw_store_migrations(size_t *n)
{
	*n = ARRAY_SIZE(migrations);
	return migrations;
}

struct gw_store *gw_store_free(struct gw_store *store)
{
	if (!store)
		return NULL;
	if (store->conn)
		store->ops->close(store->conn);
	free(store);
	return NULL;
}

void gw_store_set_timeout(struct gw_store *store, uint32_t ms)
{
	if (store->ops->set_timeout)
		store->ops->set_timeout(store->conn, ms);
}

void gw_store_set_loop(struct gw_store *store, struct event_base *base)
{
	if (store->ops->set_loop)
		store->ops->set_loop(store->conn, base);
}

int gw_store_schema_version(struct gw_store *store)
{
	return store->version;
}

/* ---- UDP port map ---- */

int gw_store_port_get(struct gw_store *store, const char *id, uint16_t *ret)
{
	struct gw_stmt *st = gw_store_prepare(store,
		"SELECT port FROM udp_ports WHERE device_id = ?1");
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, id);
	r = gw_stmt_step(st);
	if (r == 1)
		*ret = (uint16_t)gw_stmt_int64(st, 0);
	gw_stmt_finalize(st);
	if (r == 1)
		return 0;
	return r == 0 ? -ENOENT : r;
}

static int run(struct gw_store *store, const char *sql, const char *id, int port)
{
	struct gw_stmt *st = gw_store_prepare(store, sql);

	if (!st)
		return -EIO;
	if (id)
		gw_stmt_bind_text(st, 1, id);
	if (port)
		gw_stmt_bind_int64(st, 2, port);
	return gw_stmt_run(st);
}

static bool port_taken(struct gw_store *store, uint16_t port)
{
	struct gw_stmt *st = gw_store_prepare(store,
		"SELECT 1 FROM udp_ports WHERE port = ?1");
	bool taken;

	if (!st)
		return true;
	gw_stmt_bind_int64(st, 1, port);
	taken = gw_stmt_step(st) != 0; /* a row, or an error: not free */
	gw_stmt_finalize(st);
	return taken;
}

static int pin_port(struct gw_store *store, const char *id, uint16_t pinned)
{
	int r = gw_store_begin(store);

	if (r < 0)
		return r;
	/* Whoever held the pinned port gives it up (gets a new one later). */
	r = run(store, "DELETE FROM udp_ports WHERE device_id != ?1 AND port = ?2",
		id, pinned);
	if (r == 0)
		r = run(store, "INSERT INTO udp_ports (device_id, port, pinned)"
			" VALUES (?1, ?2, 1) ON CONFLICT(device_id) DO UPDATE"
			" SET port = excluded.port, pinned = 1", id, pinned);
	if (r < 0) {
		gw_store_rollback(store);
		return r;
	}
	return gw_store_commit(store);
}

static bool reserved_port(uint16_t port, const uint16_t *reserved, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (reserved[i] == port)
			return true;
	return false;
}

int gw_store_port_assign(struct gw_store *store, const char *id,
			 uint16_t pinned, uint16_t base,
			 const uint16_t *reserved, size_t n_reserved,
			 uint16_t *ret)
{
	uint16_t port;
	int r;

	if (pinned) {
		r = pin_port(store, id, pinned);
		if (r == 0)
			*ret = pinned;
		return r;
	}
	r = gw_store_port_get(store, id, &port);
	if (r == 0 && !reserved_port(port, reserved, n_reserved)) {
		*ret = port;
		return 0;
	}
	if (r == 0)
		run(store, "DELETE FROM udp_ports WHERE device_id = ?1", id, 0);
	if (base == 0)
		return -EINVAL;
	/* Bounded by the port range. */
	for (uint32_t p = base; p <= 65535; p++) {
		if (reserved_port((uint16_t)p, reserved, n_reserved) ||
		    port_taken(store, (uint16_t)p))
			continue;
		r = run(store, "INSERT INTO udp_ports (device_id, port) VALUES (?1, ?2)",
			id, (int)p);
		if (r == 0)
			*ret = (uint16_t)p;
		return r;
	}
	return -ENOSPC;
}

/* ---- devices ---- */

int gw_store_device_put(struct gw_store *store, const struct gw_store_device *d)
{
	struct gw_stmt *st = gw_store_prepare(store,
		"INSERT INTO devices (id, name, transport, first_seen, last_seen, rssi, adv,"
		" rec_ms, slots, slots_ms)"
		" VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO UPDATE SET"
		" name = coalesce(excluded.name, devices.name),"
		" transport = excluded.transport,"
		" last_seen = CASE WHEN excluded.last_seen > devices.last_seen"
		"  THEN excluded.last_seen ELSE devices.last_seen END,"
		" rssi = coalesce(excluded.rssi, devices.rssi),"
		" adv = coalesce(excluded.adv, devices.adv),"
		" rec_ms = CASE WHEN excluded.rec_ms > devices.rec_ms"
		"  THEN excluded.rec_ms ELSE devices.rec_ms END,"
		" slots = coalesce(excluded.slots, devices.slots),"
		" slots_ms = CASE WHEN excluded.slots IS NULL"
		"  THEN devices.slots_ms ELSE excluded.slots_ms END");

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, d->id);
	gw_stmt_bind_text(st, 2, d->name);
	gw_stmt_bind_text(st, 3, d->transport ? d->transport : "?");
	gw_stmt_bind_int64(st, 4, (int64_t)d->last_seen_ms);
	if (d->rssi != 127)
		gw_stmt_bind_int64(st, 5, d->rssi);
	gw_stmt_bind_text(st, 6, d->adv_json);
	gw_stmt_bind_int64(st, 7, (int64_t)d->rec_ms);
	gw_stmt_bind_text(st, 8, d->slots_json);
	gw_stmt_bind_int64(st, 9, (int64_t)d->slots_ms);
	return gw_stmt_run(st);
}

#define DEVICE_SELECT \
	"SELECT d.id, d.name, d.transport, d.last_seen," \
	" coalesce(d.rssi, 127), d.adv, coalesce(p.port, 0), d.rec_ms, d.slots, d.slots_ms" \
	" FROM devices d LEFT JOIN udp_ports p ON p.device_id = d.id"

/* Each row of st (DEVICE_SELECT) to cb; the number of rows, or -EIO. */
static int device_rows(struct gw_stmt *st, gw_store_device_cb cb, void *user_data)
{
	int r, n = 0;

	if (!st)
		return -EIO;
	while ((r = gw_stmt_step(st)) == 1) {
		struct gw_store_device d = {
			.id = gw_stmt_text(st, 0), .name = gw_stmt_text(st, 1),
			.transport = gw_stmt_text(st, 2),
			.last_seen_ms = (uint64_t)gw_stmt_int64(st, 3),
			.rssi = (int)gw_stmt_int64(st, 4),
			.adv_json = gw_stmt_text(st, 5),
			.rec_ms = (uint64_t)gw_stmt_int64(st, 7),
			.slots_json = gw_stmt_text(st, 8),
			.slots_ms = (uint64_t)gw_stmt_int64(st, 9),
		};

		cb(&d, (uint16_t)gw_stmt_int64(st, 6), user_data);
		n++;
	}
	gw_stmt_finalize(st);
	return r < 0 ? r : n;
}

int gw_store_device_foreach(struct gw_store *store, gw_store_device_cb cb,
			    void *user_data)
{
	int r = device_rows(gw_store_prepare(store, DEVICE_SELECT " ORDER BY d.id"), cb,
			    user_data);

	return r < 0 ? r : 0;
}

int gw_store_device_get(struct gw_store *store, const char *id, gw_store_device_cb cb,
			void *user_data)
{
	struct gw_stmt *st = gw_store_prepare(store, DEVICE_SELECT " WHERE d.id = ?1");
	int r;

	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 1, id);
	r = device_rows(st, cb, user_data);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}
