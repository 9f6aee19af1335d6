/* SPDX-License-Identifier: MIT */
/*
 * The durable store (see store.h): SQLite in WAL mode with
 * synchronous=FULL, versioned migrations, the device table and the UDP
 * port map.
 */
#include "gateway/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
};

struct gw_store {
	sqlite3 *db;
	int version;
};

static int sqlite_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

static int exec(struct gw_store *s, const char *sql, char **errmsg)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK && errmsg && !*errmsg)
		*errmsg = xstrdup(msg ? msg : sqlite3_errstr(rc));
	sqlite3_free(msg);
	return sqlite_errno(rc);
}

static int read_version(struct gw_store *s, int *ret)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT count(*) FROM schema_migrations",
				    -1, &st, NULL);

	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : sqlite_errno(rc);
}

static int apply_step(struct gw_store *s, int version,
		      const struct gw_migration *m, char **errmsg)
{
	sqlite3_stmt *st;
	int r = exec(s, "BEGIN IMMEDIATE", errmsg);

	if (r < 0)
		return r;
	r = exec(s, m->sql, errmsg);
	if (r == 0 && sqlite3_prepare_v2(s->db,
			"INSERT INTO schema_migrations (version, name, applied)"
			" VALUES (?, ?, strftime('%s','now'))", -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int(st, 1, version);
		sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
		r = sqlite_errno(sqlite3_step(st));
		sqlite3_finalize(st);
	} else if (r == 0) {
		r = -EIO;
	}
	if (r < 0) {
		exec(s, "ROLLBACK", NULL);
		return r;
	}
	return exec(s, "COMMIT", errmsg);
}

/* Steps are counted, so a reordered or edited list would silently skip a
 * table: the names recorded must match the list, step by step. */
static int check_applied(struct gw_store *s, const struct gw_migration *steps,
			 size_t n, char **errmsg)
{
	sqlite3_stmt *st;
	int rc, r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT version, name FROM schema_migrations"
			       " ORDER BY version", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int v = sqlite3_column_int(st, 0);
		const char *name = (const char *)sqlite3_column_text(st, 1);

		if (v < 1 || (size_t)v > n || !name)
			continue; /* newer than this binary: refused below */
		if (strcmp(name, steps[v - 1].name)) {
			if (errmsg)
				*errmsg = xasprintf("database migration %d is \"%s\", this "
						    "smpgwd expects \"%s\" (migrations "
						    "were reordered?)", v, name,
						    steps[v - 1].name);
			r = -EPROTO;
		}
	}
	sqlite3_finalize(st);
	return r;
}

static int migrate(struct gw_store *s, const struct gw_migration *steps,
		   size_t n, char **errmsg)
{
	int r = exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations ("
		     " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
		     " applied INTEGER NOT NULL)", errmsg);

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

struct gw_store *gw_store_open_with(const char *db_path,
				    const struct gw_migration *steps,
				    size_t n_steps, int *err, char **errmsg)
{
	struct gw_store *s = xnew(struct gw_store);
	int rc = sqlite3_open_v2(db_path, &s->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, NULL);
	int r = sqlite_errno(rc);

	if (r == 0) {
		sqlite3_busy_timeout(s->db, 2000);
		/* FULL: a committed (acknowledged) write survives power loss,
		 * WAL included. */
		r = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			 " PRAGMA foreign_keys=ON", errmsg);
	} else if (errmsg) {
		*errmsg = xasprintf("%s: %s", db_path,
				    s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
	}
	if (r == 0)
		r = migrate(s, steps, n_steps, errmsg);
	if (r < 0) {
		if (err)
			*err = r;
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
	s = gw_store_open_with(path, migrations, ARRAY_SIZE(migrations), err, errmsg);
	free(path);
	return s;
}

struct gw_store *gw_store_free(struct gw_store *store)
{
	if (!store)
		return NULL;
	sqlite3_close_v2(store->db);
	free(store);
	return NULL;
}

sqlite3 *gw_store_db(struct gw_store *store)
{
	return store->db;
}

int gw_store_schema_version(struct gw_store *store)
{
	return store->version;
}

/* ---- UDP port map ---- */

int gw_store_port_get(struct gw_store *store, const char *id, uint16_t *ret)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(store->db,
			       "SELECT port FROM udp_ports WHERE device_id = ?",
			       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = (uint16_t)sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
}

static int run(struct gw_store *store, const char *sql, const char *id, int port)
{
	sqlite3_stmt *st;
	int r;

	if (sqlite3_prepare_v2(store->db, sql, -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	if (id)
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (port)
		sqlite3_bind_int(st, 2, port);
	r = sqlite_errno(sqlite3_step(st));
	sqlite3_finalize(st);
	return r;
}

static bool port_taken(struct gw_store *store, uint16_t port)
{
	sqlite3_stmt *st;
	bool taken;

	if (sqlite3_prepare_v2(store->db, "SELECT 1 FROM udp_ports WHERE port = ?",
			       -1, &st, NULL) != SQLITE_OK)
		return true;
	sqlite3_bind_int(st, 1, port);
	taken = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return taken;
}

static int pin_port(struct gw_store *store, const char *id, uint16_t pinned)
{
	int r = exec(store, "BEGIN IMMEDIATE", NULL);

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
		exec(store, "ROLLBACK", NULL);
		return r;
	}
	return exec(store, "COMMIT", NULL);
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
	sqlite3_stmt *st;
	int r;

	if (sqlite3_prepare_v2(store->db,
		"INSERT INTO devices (id, name, transport, first_seen, last_seen, rssi, adv)"
		" VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6) ON CONFLICT(id) DO UPDATE SET"
		" name = coalesce(excluded.name, name),"
		" transport = excluded.transport,"
		" last_seen = max(last_seen, excluded.last_seen),"
		" rssi = coalesce(excluded.rssi, rssi),"
		" adv = coalesce(excluded.adv, adv)", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
	if (d->name)
		sqlite3_bind_text(st, 2, d->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, d->transport ? d->transport : "?", -1,
			  SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)d->last_seen_ms);
	if (d->rssi != 127)
		sqlite3_bind_int(st, 5, d->rssi);
	if (d->adv_json)
		sqlite3_bind_text(st, 6, d->adv_json, -1, SQLITE_STATIC);
	r = sqlite_errno(sqlite3_step(st));
	sqlite3_finalize(st);
	return r;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

int gw_store_device_foreach(struct gw_store *store, gw_store_device_cb cb,
			    void *user_data)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(store->db,
		"SELECT d.id, d.name, d.transport, d.last_seen,"
		" coalesce(d.rssi, 127), d.adv, coalesce(p.port, 0)"
		" FROM devices d LEFT JOIN udp_ports p ON p.device_id = d.id"
		" ORDER BY d.id", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct gw_store_device d = {
			.id = col_text(st, 0), .name = col_text(st, 1),
			.transport = col_text(st, 2),
			.last_seen_ms = (uint64_t)sqlite3_column_int64(st, 3),
			.rssi = sqlite3_column_int(st, 4),
			.adv_json = col_text(st, 5),
		};

		cb(&d, (uint16_t)sqlite3_column_int(st, 6), user_data);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
}
