/* SPDX-License-Identifier: MIT */
/*
 * The durable store. Two backends behind one small statement interface
 * (struct gw_store_ops in store-int.h):
 *  - SQLite (the default): one database (WAL, synchronous=FULL so an
 *    acknowledged write survives kill -9 and power loss) in the state
 *    directory;
 *  - PostgreSQL ([store] backend = postgresql): a server several gateways
 *    share (docs/multi-gateway.md); a commit returns once it is durable
 *    on the server (synchronous_commit as the server sets it).
 * Owns the schema and its versioned migrations (one list for both
 * backends, written in the portable subset: the PostgreSQL backend maps
 * INTEGER to BIGINT), the device table and the stable UDP port map.
 *
 * Other modules (upload engine, rollouts) add their tables by appending a
 * step to the migrations table in store.c: steps are applied in order,
 * each in its own transaction, and never edited once released. Their SQL
 * goes through gw_store_prepare() and friends: numbered parameters ?1..?N
 * (or bare ?), and only what both SQLite and PostgreSQL understand.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_store;
struct gw_stmt;

enum gw_store_backend {
	GW_STORE_SQLITE = 0,
	GW_STORE_POSTGRESQL,
};

struct gw_migration {
	const char *name; /* short description, kept in schema_migrations */
	const char *sql;  /* one or more statements */
};

/* Opens (creating) state_dir/smpgw.db and migrates it. NULL with *err
 * (negative errno) and *errmsg (new string, may be NULL) on failure. */
struct gw_store *gw_store_open(const char *state_dir, int *err, char **errmsg);
/* Connects to a PostgreSQL server (libpq connection string) and migrates
 * its schema. Same error convention. */
struct gw_store *gw_store_open_pg(const char *conninfo, int *err, char **errmsg);
/* Test hook: open with an explicit migration list. where: the SQLite path
 * (":memory:" works) or the PostgreSQL connection string. */
struct gw_store *gw_store_open_with(enum gw_store_backend backend,
				    const char *where,
				    const struct gw_migration *steps,
				    size_t n_steps, int *err, char **errmsg);
struct gw_store *gw_store_free(struct gw_store *store);
/* The bound of one round trip to a database server ([store] timeout; 0:
 * none): a statement without an answer by then fails with -ETIMEDOUT and
 * the connection is dropped (reconnected later). While opening, a minute.
 * SQLite: nothing to bound. */
#define GW_STORE_TIMEOUT_DEFAULT_MS 3000
void gw_store_set_timeout(struct gw_store *store, uint32_t ms);
/* Reconnects on base, without blocking (PostgreSQL): a lost connection is
 * re-established in the background (libpq's non-blocking connect, bounded
 * by the timeout, retried every second), and a statement issued meanwhile
 * fails at once with -ENOTCONN. Without it (tools, tests) the first
 * statement after a loss reconnects, blocking up to the timeout. SQLite:
 * nothing to do. Before gw_store_free(), base must still exist. */
struct event_base;
void gw_store_set_loop(struct gw_store *store, struct event_base *base);
/* The schema's migration steps, oldest first (tests open older versions). */
const struct gw_migration *gw_store_migrations(size_t *n);

enum gw_store_backend gw_store_backend(const struct gw_store *store);
const char *gw_store_backend_name(enum gw_store_backend backend);
/* Parses "sqlite" / "postgresql" (also "postgres", "pg"). */
int gw_store_backend_parse(const char *s, enum gw_store_backend *ret);
/* Number of migration steps applied. */
int gw_store_schema_version(struct gw_store *store);
/* The last error the backend reported (never NULL; valid until the next
 * call on this store). */
const char *gw_store_errmsg(struct gw_store *store);

/* How many calls on this store failed so far (the server unreachable or
 * not answering, a read-only or full database, ...; a constraint
 * violation, -EEXIST, is an answer and not counted) and *last_err, the
 * last failure's negative errno. The REST layer compares the count around
 * a request (src/http/server.c) to answer a store failure as one. */
uint64_t gw_store_failures(const struct gw_store *store, int *last_err);

/* ---- statements (every module's SQL goes through these) ---- */

/* Runs one or more statements without parameters. 0 or negative errno. */
int gw_store_exec(struct gw_store *store, const char *sql);
/* A write transaction (SQLite: BEGIN IMMEDIATE). commit fails (and rolls
 * back) when a statement inside failed. */
int gw_store_begin(struct gw_store *store);
int gw_store_commit(struct gw_store *store);
void gw_store_rollback(struct gw_store *store);

/* One statement; NULL when it does not compile (SQLite) or on memory
 * exhaustion. Parameters are numbered from 1; an unbound one is NULL. */
struct gw_stmt *gw_store_prepare(struct gw_store *store, const char *sql);
void gw_stmt_bind_text(struct gw_stmt *st, int i, const char *v); /* NULL: NULL */
void gw_stmt_bind_int64(struct gw_stmt *st, int i, int64_t v);
/* 1: a row is available, 0: done, negative errno: failed (-EEXIST: a
 * constraint, -ENOSPC: disk full, -EBUSY: locked, -ENOTCONN: no server). */
int gw_stmt_step(struct gw_stmt *st);
bool gw_stmt_is_null(struct gw_stmt *st, int col);
const char *gw_stmt_text(struct gw_stmt *st, int col);   /* NULL for NULL */
int64_t gw_stmt_int64(struct gw_stmt *st, int col);      /* 0 for NULL */
void gw_stmt_finalize(struct gw_stmt *st);
/* Steps once to completion and finalizes: 0 or negative errno. */
int gw_stmt_run(struct gw_stmt *st);

/* ---- notifications between gateways sharing the store ----
 * PostgreSQL's LISTEN/NOTIFY (docs/multi-gateway.md, cluster.h). SQLite
 * has no other process to tell: -ENOTSUP / NULL. A notification is only a
 * hint that something changed (its payload is never relied on: the
 * listener re-reads the rows it cares about), so one lost while the
 * listener was disconnected costs nothing but latency. */
struct event_base;
struct gw_store_listener;
/* Sends payload on channel (letters, digits, '_'); with a transaction
 * open it is delivered when that transaction commits. */
int gw_store_notify(struct gw_store *store, const char *channel, const char *payload);
/* Called on the loop when notifications arrived on the channel
 * (reconnected false) or when the listener (re)connected and is
 * listening (reconnected true: the caller catches up on what it missed). */
typedef void (*gw_store_listen_cb)(bool reconnected, void *user_data);
/* Listens on channel over a second connection to the store's server, on
 * base: the connection's socket is one event of the loop (no thread, no
 * blocking call: connecting is libpq's non-blocking connect), and a lost
 * connection is retried every retry_ms. NULL with *err: -ENOTSUP on
 * SQLite, -EINVAL for a bad channel name. */
struct gw_store_listener *gw_store_listen(struct gw_store *store, struct event_base *base,
					  const char *channel, uint32_t retry_ms,
					  gw_store_listen_cb cb, void *user_data, int *err);
struct gw_store_listener *gw_store_listener_free(struct gw_store_listener *l);
/* Listening now (connected and LISTEN acknowledged). */
bool gw_store_listener_up(const struct gw_store_listener *l);

/*
 * The UDP port of device id: pinned (non-zero) wins and is recorded (a
 * device that held that port before gives it up); otherwise the port
 * already recorded for id; otherwise the first port >= base not recorded
 * for any device nor in reserved[] (ports pinned in the config), which is
 * then recorded. Returns 0 and *ret, -ENOSPC when no port is free.
 */
int gw_store_port_assign(struct gw_store *store, const char *id,
			 uint16_t pinned, uint16_t base,
			 const uint16_t *reserved, size_t n_reserved,
			 uint16_t *ret);
/* The recorded port of id, or -ENOENT. */
int gw_store_port_get(struct gw_store *store, const char *id, uint16_t *ret);

struct gw_store_device {
	const char *id;
	const char *name;      /* may be NULL */
	const char *transport; /* "ble", "udp", "serial" */
	uint64_t last_seen_ms; /* 0: unknown */
	int rssi;              /* 127: unknown */
	const char *adv_json;  /* advertising record as JSON text, or NULL */
	uint64_t rec_ms;       /* when the smpgw record in it was heard; 0: unknown */
	const char *slots_json; /* typed slots (devmodel.h) as JSON text, or NULL */
	uint64_t slots_ms;     /* when they were read */
};

/* Inserts or updates a device row (fields NULL/0 keep the stored value). */
int gw_store_device_put(struct gw_store *store, const struct gw_store_device *d);
typedef void (*gw_store_device_cb)(const struct gw_store_device *d,
				   uint16_t udp_port, void *user_data);
/* Lists the devices known to the store, by id. */
int gw_store_device_foreach(struct gw_store *store, gw_store_device_cb cb,
			    void *user_data);
/* The device row of id to cb; -ENOENT when there is none. */
int gw_store_device_get(struct gw_store *store, const char *id, gw_store_device_cb cb,
			void *user_data);
