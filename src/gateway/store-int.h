/* SPDX-License-Identifier: MIT */
/*
 * The store's backend interface (see store.h): each backend fills one ops
 * table; store.c owns the schema, the migrations and the shared queries
 * and never talks to SQLite or libpq itself.
 */
#pragma once

#include "gateway/store.h"

struct gw_store_ops {
	enum gw_store_backend backend;
	/* A connection (opaque to store.c); NULL with *err and *errmsg. */
	void *(*open)(const char *where, int *err, char **errmsg);
	void (*close)(void *conn);
	/* Bounds every round trip from now on (NULL: nothing to bound). */
	void (*set_timeout)(void *conn, uint32_t ms);
	/* Reconnects without blocking, on base (NULL: nothing to do). */
	void (*set_loop)(void *conn, struct event_base *base);
	const char *(*errmsg)(void *conn);
	int (*exec)(void *conn, const char *sql);
	const char *begin_sql;      /* a write transaction */
	/* Serializes migrations between processes sharing the database
	 * (NULL: begin_sql already does). */
	const char *schema_lock_sql, *schema_unlock_sql;
	/* True when a statement failed inside the open transaction (the
	 * commit must then fail). */
	bool (*tx_failed)(void *conn);
	struct gw_stmt *(*prepare)(void *conn, const char *sql);
	void (*bind_text)(struct gw_stmt *st, int i, const char *v);
	void (*bind_int64)(struct gw_stmt *st, int i, int64_t v);
	int (*step)(struct gw_stmt *st);
	bool (*is_null)(struct gw_stmt *st, int col);
	const char *(*text)(struct gw_stmt *st, int col);
	int64_t (*int64)(struct gw_stmt *st, int col);
	void (*finalize)(struct gw_stmt *st);
	/* LISTEN on a second connection (NULL: the backend has none). */
	struct gw_store_listener *(*listen)(void *conn, struct event_base *base,
					    const char *channel, uint32_t retry_ms,
					    gw_store_listen_cb cb, void *user_data);
	struct gw_store_listener *(*listener_free)(struct gw_store_listener *l);
	bool (*listener_up)(const struct gw_store_listener *l);
};

/* Every backend's listener starts with this. */
struct gw_store_listener {
	const struct gw_store_ops *ops;
};

/* Every backend's statement starts with this. */
struct gw_stmt {
	const struct gw_store_ops *ops;
	struct gw_store *store; /* set by gw_store_prepare (failure count) */
};

extern const struct gw_store_ops gw_store_sqlite_ops;
extern const struct gw_store_ops gw_store_pg_ops;
