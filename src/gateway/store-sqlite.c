/* SPDX-License-Identifier: MIT */
/*
 * The SQLite backend of the store (see store-int.h): WAL journal,
 * synchronous=FULL, foreign keys on, a 2 s busy timeout.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "gateway/store-int.h"
#include "util/util.h"

struct lite {
	sqlite3 *db;
	char *err;
};

struct lite_stmt {
	struct gw_stmt base;
	struct lite *l;
	sqlite3_stmt *st;
};

static int lite_errno(int rc)
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

static void set_err(struct lite *l, const char *msg)
{
	free(l->err);
	l->err = xstrdup(msg ? msg : "unknown error");
}

static int lite_exec(void *conn, const char *sql)
{
	struct lite *l = conn;
	char *msg = NULL;
	int rc = sqlite3_exec(l->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK)
		set_err(l, msg ? msg : sqlite3_errstr(rc));
	sqlite3_free(msg);
	return lite_errno(rc);
}

static void lite_close(void *conn)
{
	struct lite *l = conn;

	if (!l)
		return;
	sqlite3_close_v2(l->db);
	free(l->err);
	free(l);
}

static void *lite_open(const char *path, int *err, char **errmsg)
{
	struct lite *l = xnew(struct lite);
	int rc = sqlite3_open_v2(path, &l->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, NULL);
	int r = lite_errno(rc);

	if (r == 0) {
		sqlite3_busy_timeout(l->db, 2000);
		/* FULL: a committed (acknowledged) write survives power loss,
		 * WAL included. */
		r = lite_exec(l, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			      " PRAGMA foreign_keys=ON");
		if (r < 0)
			*errmsg = xstrdup(l->err);
	} else {
		*errmsg = xasprintf("%s: %s", path,
				    l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
	}
	if (r < 0) {
		*err = r;
		lite_close(l);
		return NULL;
	}
	return l;
}

static const char *lite_errmsg(void *conn)
{
	struct lite *l = conn;

	return l->err ? l->err : "no error";
}

static bool lite_tx_failed(void *conn)
{
	(void)conn;
	return false; /* a failed statement does not poison the transaction */
}

static struct gw_stmt *lite_prepare(void *conn, const char *sql)
{
	struct lite *l = conn;
	struct lite_stmt *s;
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(l->db, sql, -1, &st, NULL) != SQLITE_OK) {
		set_err(l, sqlite3_errmsg(l->db));
		return NULL;
	}
	s = xnew(struct lite_stmt);
	s->base.ops = &gw_store_sqlite_ops;
	s->l = l;
	s->st = st;
	return &s->base;
}

#define LS(st) ((struct lite_stmt *)(st))

static void lite_bind_text(struct gw_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(LS(st)->st, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(LS(st)->st, i);
}

static void lite_bind_int64(struct gw_stmt *st, int i, int64_t v)
{
	sqlite3_bind_int64(LS(st)->st, i, (sqlite3_int64)v);
}

static int lite_step(struct gw_stmt *st)
{
	int rc = sqlite3_step(LS(st)->st);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	set_err(LS(st)->l, sqlite3_errmsg(LS(st)->l->db));
	return lite_errno(rc) ? lite_errno(rc) : -EIO;
}

static bool lite_is_null(struct gw_stmt *st, int col)
{
	return sqlite3_column_type(LS(st)->st, col) == SQLITE_NULL;
}

static const char *lite_text(struct gw_stmt *st, int col)
{
	return (const char *)sqlite3_column_text(LS(st)->st, col);
}

static int64_t lite_int64(struct gw_stmt *st, int col)
{
	return sqlite3_column_int64(LS(st)->st, col);
}

static void lite_finalize(struct gw_stmt *st)
{
	sqlite3_finalize(LS(st)->st);
	free(st);
}

const struct gw_store_ops gw_store_sqlite_ops = {
	.backend = GW_STORE_SQLITE,
	.open = lite_open,
	.close = lite_close,
	.errmsg = lite_errmsg,
	.exec = lite_exec,
	.begin_sql = "BEGIN IMMEDIATE",
	.tx_failed = lite_tx_failed,
	.prepare = lite_prepare,
	.bind_text = lite_bind_text,
	.bind_int64 = lite_bind_int64,
	.step = lite_step,
	.is_null = lite_is_null,
	.text = lite_text,
	.int64 = lite_int64,
	.finalize = lite_finalize,
};
