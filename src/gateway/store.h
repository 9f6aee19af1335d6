/* SPDX-License-Identifier: MIT */
/*
 * The durable store: one SQLite database (WAL, synchronous=FULL so an
 * acknowledged write survives kill -9 and power loss) in the state
 * directory. Owns the schema and its versioned migrations, the device
 * table and the stable UDP port map.
 *
 * Other modules (upload engine, rollouts) add their tables by appending a
 * step to the migrations table in store.c: steps are applied in order,
 * each in its own transaction, and never edited once released.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

struct gw_store;

struct gw_migration {
	const char *name; /* short description, kept in schema_migrations */
	const char *sql;  /* one or more statements */
};

/* Opens (creating) state_dir/smpgw.db and migrates it. NULL with *err
 * (negative errno) and *errmsg (new string, may be NULL) on failure. */
struct gw_store *gw_store_open(const char *state_dir, int *err, char **errmsg);
/* Test hook: open with an explicit migration list (path ":memory:" works). */
struct gw_store *gw_store_open_with(const char *db_path,
				    const struct gw_migration *steps,
				    size_t n_steps, int *err, char **errmsg);
struct gw_store *gw_store_free(struct gw_store *store);

/* The raw handle, for modules with their own tables. Borrowed. */
sqlite3 *gw_store_db(struct gw_store *store);
/* Number of migration steps applied. */
int gw_store_schema_version(struct gw_store *store);

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
};

/* Inserts or updates a device row (fields NULL/0 keep the stored value). */
int gw_store_device_put(struct gw_store *store, const struct gw_store_device *d);
typedef void (*gw_store_device_cb)(const struct gw_store_device *d,
				   uint16_t udp_port, void *user_data);
/* Lists the devices known to the store, by id. */
int gw_store_device_foreach(struct gw_store *store, gw_store_device_cb cb,
			    void *user_data);
