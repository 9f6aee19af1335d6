/* SPDX-License-Identifier: MIT */
/*
 * The PostgreSQL backend of the store (see store-int.h), over libpq.
 *
 * The store's SQL is written for both backends; here it is mapped to
 * PostgreSQL's dialect: ?N and ? become $N, INTEGER becomes BIGINT
 * (SQLite's integers are 64-bit) and INTEGER PRIMARY KEY AUTOINCREMENT an
 * identity column. Parameters travel as text (integers typed int8, the
 * rest inferred by the server). A connection lost between transactions is
 * re-established (on the loop, or by the next statement: at most once a
 * second, less often while the server does not answer); inside a transaction every statement
 * up to the COMMIT or ROLLBACK fails (the transaction is gone with the
 * connection; COMMIT reports it).
 *
 * Every round trip is bounded ([store] timeout, gw_store_set_timeout()):
 * the statement is sent without blocking and its socket waited on with a
 * deadline. A server that stops answering without closing the connection
 * (a partition that drops) costs at most one timeout: the connection is
 * dropped, the statement fails with -ETIMEDOUT, and reconnecting is tried
 * again only after twice the timeout. Reconnecting never blocks the
 * daemon: with its event loop given (gw_store_set_loop()) the new
 * connection is made on the loop (PQconnectStartParams/PQconnectPoll on
 * the socket's events, the timeout as the deadline, a failed attempt
 * retried after a second) and every statement meanwhile fails at once
 * with -ENOTCONN, so during an outage or a black hole the loop (UDP,
 * REST, BLE) stalls at most once, for the round trip in flight when the
 * server went silent. Without a loop (tools, tests) the statement after
 * the retry time reconnects itself, polling with the same deadline.
 * Opening is a blocking connect (connect_timeout when the conninfo names
 * none): the daemon needs the schema before it serves anything.
 *
 * LISTEN (store.h) uses a connection of its own, driven by the event loop
 * without blocking: PQconnectStart/PQconnectPoll while connecting, then
 * the socket is one persistent read event that consumes input and drains
 * the notifications. The statement connection never listens, so a
 * notification can never be swallowed by a statement waiting for its
 * result. Connecting and LISTEN must finish within the timeout, and an idle
 * listener pings the server (LISTEN again) every PING_MS: no answer within
 * the timeout and it reconnects.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "gateway/store-int.h"
#include "util/util.h"

#define INT8OID 20

static void quiet(void *arg, const char *msg);
/* While opening (migrations may wait for another gateway's): the bound of
 * a round trip until gw_store_set_timeout() gives the configured one. */
#define OPEN_TIMEOUT_MS 60000
#define PING_MS 10000

struct pg {
	PGconn *c;      /* NULL: dropped, reconnected (see revive()) */
	char *conninfo; /* for reconnects and the listener's own connection */
	char *err;
	uint32_t timeout_ms;  /* a round trip's bound; 0: none */
	uint64_t retry_at_ms; /* no reconnect before (monotonic) */
	bool in_tx;     /* BEGIN sent, no COMMIT/ROLLBACK yet */
	bool lost_tx;   /* the connection went inside that transaction */
	/* With a loop (pg_set_loop): reconnecting without blocking. */
	struct event_base *evb;
	PGconn *pending;     /* being connected (PQconnectPoll) */
	struct event *io;    /* its socket */
	struct event *timer; /* pending: its deadline; else the next try */
};

struct pg_stmt {
	struct gw_stmt base;
	struct pg *pg;
	char *sql;
	int n;          /* parameters the statement uses */
	char **vals;
	unsigned *types;
	PGresult *res;
	int row, rows;
	bool ran;
};

static void set_err(struct pg *pg, const char *msg)
{
	size_t n;

	free(pg->err);
	pg->err = xstrdup(msg && *msg ? msg : "unknown error");
	/* One line: libpq ends with a newline and may add the statement. */
	n = strcspn(pg->err, "\n");
	while (n && pg->err[n - 1] == ' ')
		n--;
	pg->err[n] = '\0';
}

/* SQLSTATE classes to errno (docs: PostgreSQL "Error Codes"). */
static int state_errno(const PGresult *res, PGconn *c)
{
	const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(c) == CONNECTION_BAD)
		return -ENOTCONN;
	if (!s)
		return -EIO;
	if (!strncmp(s, "23", 2))
		return -EEXIST;     /* integrity constraint violation */
	if (!strcmp(s, "40001") || !strcmp(s, "40P01") || !strcmp(s, "55P03"))
		return -EBUSY;      /* serialization, deadlock, lock not available */
	if (!strcmp(s, "53100"))
		return -ENOSPC;     /* disk full */
	if (!strcmp(s, "53200"))
		return -ENOMEM;
	if (!strncmp(s, "08", 2) || !strncmp(s, "57P", 3))
		return -ENOTCONN;   /* connection exception, shutdown */
	if (!strncmp(s, "28", 2) || !strcmp(s, "42501"))
		return -EACCES;
	return -EIO;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for fd (POLLIN/POLLOUT) until deadline (monotonic ms; 0: none):
 * 1 ready, 0 the deadline passed, -1 error. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		uint64_t now = mono_ms();
		int r;

		if (deadline && now >= deadline)
			return 0;
		r = poll(&p, 1, deadline ? (int)(deadline - now) : -1);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* A connection to conninfo, blocking (bounded by connect_timeout) or
 * started (PQconnectStartParams). conninfo may be a URI or key=value
 * words; its own connect_timeout wins over ours (later words win). */
static PGconn *start_conn(const char *conninfo, uint32_t timeout_ms, bool blocking)
{
	static const char *const kw[] = { "connect_timeout", "dbname", NULL };
	char secs[16];
	const char *vals[3];
	uint32_t t = (timeout_ms + 999) / 1000;

	snprintf(secs, sizeof(secs), "%u", t < 2 ? 2u : t); /* libpq's minimum */
	vals[0] = secs;
	vals[1] = conninfo ? conninfo : "";
	vals[2] = NULL;
	return blocking ? PQconnectdbParams(kw, vals, 1) : PQconnectStartParams(kw, vals, 1);
}

static void conn_ready(PGconn *c)
{
	PQsetNoticeProcessor(c, quiet, NULL);
	PQsetnonblocking(c, 1);
}

/* old replaced by an event for what on c's socket (which may change
 * between the steps of a connect). */
static struct event *watch_conn(struct event *old, struct event_base *base, PGconn *c,
				short what, event_callback_fn fn, void *arg)
{
	struct event *ev;

	if (old)
		event_free(old);
	ev = event_new(base, PQsocket(c), what, fn, arg);
	event_add(ev, NULL);
	return ev;
}

/* One step of a non-blocking connect, its socket ready: 1 connected, 0
 * wait for *what, -1 failed. */
static int connect_step(PGconn *c, short *what)
{
	switch (PQconnectPoll(c)) {
	case PGRES_POLLING_READING:
		*what = EV_READ;
		return 0;
	case PGRES_POLLING_WRITING:
		*what = EV_WRITE;
		return 0;
	case PGRES_POLLING_OK:
		return 1;
	default:
		return -1;
	}
}

static bool word_at(const char *p, const char *start, const char *w)
{
	size_t n = strlen(w);

	return !strncmp(p, w, n) && (p == start || !(isalnum((unsigned char)p[-1]) ||
						      p[-1] == '_')) &&
	       !(isalnum((unsigned char)p[n]) || p[n] == '_');
}

/* The dialect mapping (see the top); *n_params: the highest parameter.
 * The output is at most 4 times the input (? -> $999) plus the identity
 * column's growth, which only a 33-character word can cause. */
static char *translate(const char *sql, int *n_params)
{
	static const char autoinc[] = "INTEGER PRIMARY KEY AUTOINCREMENT";
	static const char ident[] = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY";
	size_t cap = strlen(sql) * 4 + 64, o = 0;
	char *out = xmalloc(cap);
	bool quoted = false;
	int max = 0;

	for (const char *p = sql; *p;) {
		if (*p == '\'') { /* literals ('' included) are copied as is */
			quoted = !quoted;
			out[o++] = *p++;
		} else if (quoted) {
			out[o++] = *p++;
		} else if (*p == '?') {
			char *end;
			long v = strtol(p + 1, &end, 10);

			if (end == p + 1 || v < 1 || v > 999)
				v = max + 1;
			if (v > 999)
				v = 999;
			if (v > max)
				max = (int)v;
			o += (size_t)snprintf(out + o, cap - o, "$%ld", v);
			p = end;
		} else if (word_at(p, sql, autoinc)) {
			memcpy(out + o, ident, sizeof(ident) - 1);
			o += sizeof(ident) - 1;
			p += sizeof(autoinc) - 1;
		} else if (word_at(p, sql, "INTEGER")) {
			memcpy(out + o, "BIGINT", 6);
			o += 6;
			p += 7;
		} else {
			out[o++] = *p++;
		}
	}
	out[o] = '\0';
	if (n_params)
		*n_params = max;
	return out;
}

static void quiet(void *arg, const char *msg)
{
	(void)arg; /* NOTICEs ("relation exists, skipping") are not errors */
	(void)msg;
}

static void pg_close(void *conn)
{
	struct pg *pg = conn;

	if (!pg)
		return;
	if (pg->io)
		event_free(pg->io); /* before its socket closes */
	if (pg->timer)
		event_free(pg->timer);
	PQfinish(pg->c);
	PQfinish(pg->pending);
	free(pg->conninfo);
	free(pg->err);
	free(pg);
}

static void *pg_open(const char *conninfo, int *err, char **errmsg)
{
	struct pg *pg = xnew(struct pg);

	pg->c = start_conn(conninfo, GW_STORE_TIMEOUT_DEFAULT_MS, true);
	if (!pg->c || PQstatus(pg->c) != CONNECTION_OK) {
		set_err(pg, pg->c ? PQerrorMessage(pg->c) : "out of memory");
		*errmsg = xasprintf("PostgreSQL: %s", pg->err);
		*err = -ENOTCONN;
		pg_close(pg);
		return NULL;
	}
	conn_ready(pg->c);
	pg->conninfo = xstrdup(conninfo ? conninfo : "");
	pg->timeout_ms = OPEN_TIMEOUT_MS;
	return pg;
}

static void pg_set_timeout(void *conn, uint32_t ms)
{
	((struct pg *)conn)->timeout_ms = ms;
}

/* After a round trip or connect that ran into the timeout: no reconnect
 * before twice the timeout (a second at least), so without a loop a server
 * that does not answer blocks the caller a third of the time at most. */
static uint32_t quiet_ms(const struct pg *pg)
{
	return pg->timeout_ms * 2 > 1000 ? pg->timeout_ms * 2 : 1000;
}

/* The connection is gone (lost, or dropped after a timeout): reconnected
 * by the first statement after wait_ms. */
static void drop(struct pg *pg, uint32_t wait_ms)
{
	PQfinish(pg->c);
	pg->c = NULL;
	if (pg->in_tx)
		pg->lost_tx = true;
	pg->retry_at_ms = mono_ms() + wait_ms;
	if (pg->evb && !pg->pending) {
		struct timeval tv = { wait_ms / 1000, (wait_ms % 1000) * 1000 };

		evtimer_add(pg->timer, &tv);
	}
}

/* ---- reconnecting on the loop (pg_set_loop) ----
 * PQconnectStartParams, then PQconnectPoll each time the socket is ready
 * the way the last poll asked (the socket may change between polls: each
 * poll re-registers it), within the timeout; the statements meanwhile
 * fail at once (ready()). A failed or late attempt is retried after a
 * second. */

static void p_io(evutil_socket_t fd, short what, void *arg);

static void p_watch(struct pg *pg, short what)
{
	pg->io = watch_conn(pg->io, pg->evb, pg->pending, what, p_io, pg);
}

/* The attempt failed (msg: why, NULL: libpq's message). */
static void p_failed(struct pg *pg, const char *msg)
{
	set_err(pg, msg ? msg : PQerrorMessage(pg->pending));
	if (pg->io)
		event_free(pg->io);
	pg->io = NULL;
	PQfinish(pg->pending);
	pg->pending = NULL;
	drop(pg, 1000);
}

static void p_start(struct pg *pg)
{
	uint32_t ms = pg->timeout_ms ? pg->timeout_ms : GW_STORE_TIMEOUT_DEFAULT_MS;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	pg->pending = start_conn(pg->conninfo, ms, false);
	if (!pg->pending || PQstatus(pg->pending) == CONNECTION_BAD ||
	    PQsocket(pg->pending) < 0) {
		p_failed(pg, pg->pending ? NULL : "out of memory");
		return;
	}
	evtimer_add(pg->timer, &tv); /* the deadline */
	p_watch(pg, EV_WRITE);       /* PQconnectPoll's first state is "writing" */
}

static void p_io(evutil_socket_t fd, short what, void *arg)
{
	struct pg *pg = arg;
	int r = connect_step(pg->pending, &what);

	(void)fd;
	if (r == 0) {
		p_watch(pg, what);
	} else if (r < 0) {
		p_failed(pg, NULL);
	} else {
		event_free(pg->io);
		pg->io = NULL;
		evtimer_del(pg->timer);
		conn_ready(pg->pending);
		PQfinish(pg->c);
		pg->c = pg->pending;
		pg->pending = NULL;
	}
}

/* The deadline of the attempt under way, or time to try again. */
static void p_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pg *pg = arg;

	(void)fd;
	(void)what;
	if (pg->pending)
		p_failed(pg, "PostgreSQL did not answer the connection in time");
	else if (!pg->c)
		p_start(pg);
}

static void pg_set_loop(void *conn, struct event_base *base)
{
	struct pg *pg = conn;

	if (pg->evb || !base)
		return;
	pg->evb = base;
	pg->timer = evtimer_new(base, p_timer, pg);
	if (!pg->c)
		drop(pg, 0);
}

static const char *pg_errmsg(void *conn)
{
	struct pg *pg = conn;

	return pg->err ? pg->err : "no error";
}

/* Reconnects when the connection is gone and no transaction was open
 * (see drop() for how often); the connection is polled with the timeout
 * as its deadline. The statements in between fail with -ENOTCONN. With a
 * loop the reconnect runs on it (see above): never here. */
static void revive(struct pg *pg)
{
	uint64_t deadline;
	bool late = false;
	PGconn *c;

	if (pg->c && PQstatus(pg->c) != CONNECTION_BAD)
		return;
	if (pg->c)
		drop(pg, 0); /* lost (closed): reconnect at once */
	if (pg->evb) {
		if (!pg->pending && !evtimer_pending(pg->timer, NULL))
			drop(pg, 0); /* not scheduled (cannot happen): now */
		if (pg->pending)
			set_err(pg, "connecting to PostgreSQL");
		return;
	}
	if (pg->lost_tx || mono_ms() < pg->retry_at_ms)
		return;
	if (!pg->timeout_ms) {
		c = start_conn(pg->conninfo, GW_STORE_TIMEOUT_DEFAULT_MS, true);
	} else {
		c = start_conn(pg->conninfo, pg->timeout_ms, false);
		deadline = mono_ms() + pg->timeout_ms;
		for (PostgresPollingStatusType st = PGRES_POLLING_WRITING;
		     c && PQstatus(c) != CONNECTION_BAD;) {
			int w = 0;

			if (st == PGRES_POLLING_READING)
				w = wait_fd(PQsocket(c), POLLIN, deadline);
			else if (st == PGRES_POLLING_WRITING)
				w = wait_fd(PQsocket(c), POLLOUT, deadline);
			if (w <= 0 && st != PGRES_POLLING_OK) {
				set_err(pg, "PostgreSQL did not answer the connection in time");
				PQfinish(c);
				c = NULL;
				late = true;
				break;
			}
			st = PQconnectPoll(c);
			if (st == PGRES_POLLING_OK || st == PGRES_POLLING_FAILED)
				break;
		}
	}
	if (!c || PQstatus(c) != CONNECTION_OK) {
		if (c)
			set_err(pg, PQerrorMessage(c));
		PQfinish(c);
		drop(pg, late ? quiet_ms(pg) : 1000);
		return;
	}
	conn_ready(c);
	pg->c = c;
}

/* Reads the results of what was just sent (sent: what PQsend* returned)
 * within the timeout: the last result, or the first failed one. NULL with
 * *err: not sent, the connection lost or no answer in time (dropped). */
static PGresult *roundtrip(struct pg *pg, int sent, int *err)
{
	uint64_t deadline = pg->timeout_ms ? mono_ms() + pg->timeout_ms : 0;
	PGresult *keep = NULL, *res;
	int f, w;

	if (!sent)
		goto lost;
	while ((f = PQflush(pg->c)) == 1) {
		w = wait_fd(PQsocket(pg->c), POLLOUT | POLLIN, deadline);
		if (w == 0)
			goto late;
		if (w < 0 || !PQconsumeInput(pg->c))
			goto lost;
	}
	if (f < 0)
		goto lost;
	for (;;) {
		while (PQisBusy(pg->c)) {
			w = wait_fd(PQsocket(pg->c), POLLIN, deadline);
			if (w == 0)
				goto late;
			if (w < 0 || !PQconsumeInput(pg->c))
				goto lost;
		}
		res = PQgetResult(pg->c);
		if (!res)
			break;
		if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
			PQclear(res);
		} else {
			PQclear(keep);
			keep = res;
		}
	}
	if (keep)
		return keep;
lost:
	set_err(pg, pg->c ? PQerrorMessage(pg->c) : "no connection");
	*err = -ENOTCONN;
	PQclear(keep);
	if (!pg->c || PQstatus(pg->c) == CONNECTION_BAD)
		drop(pg, 0);
	return NULL;
late:
	{
		char *m = xasprintf("PostgreSQL did not answer within %u ms: connection dropped",
				    pg->timeout_ms);

		set_err(pg, m);
		free(m);
	}
	PQclear(keep);
	drop(pg, quiet_ms(pg));
	*err = -ETIMEDOUT;
	return NULL;
}

/* The first word of sql, for the transaction bookkeeping. */
static bool starts(const char *sql, const char *w)
{
	while (isspace((unsigned char)*sql))
		sql++;
	return !strncasecmp(sql, w, strlen(w)) && !isalnum((unsigned char)sql[strlen(w)]);
}

/* Before a statement: 0 to send it, or the error without a connection. */
static int ready(struct pg *pg, const char *sql)
{
	bool end = sql && (starts(sql, "COMMIT") || starts(sql, "ROLLBACK"));

	if (pg->lost_tx) {
		if (!end) {
			set_err(pg, "the connection was lost inside the transaction");
			return -ENOTCONN;
		}
		pg->lost_tx = pg->in_tx = false;
		if (starts(sql, "ROLLBACK"))
			return 1; /* nothing left to roll back */
		set_err(pg, "the connection was lost inside the transaction: not committed");
		return -ENOTCONN;
	}
	revive(pg);
	if (!pg->c) {
		if (!pg->err)
			set_err(pg, "no connection");
		return -ENOTCONN;
	}
	return 0;
}

static int pg_exec(void *conn, const char *sql)
{
	struct pg *pg = conn;
	bool end = starts(sql, "COMMIT") || starts(sql, "ROLLBACK");
	PGresult *res;
	char *q;
	int r = ready(pg, sql);

	if (r)
		return r > 0 ? 0 : r;
	q = translate(sql, NULL);
	res = roundtrip(pg, PQsendQuery(pg->c, q), &r);
	if (res && PQresultStatus(res) != PGRES_COMMAND_OK &&
	    PQresultStatus(res) != PGRES_TUPLES_OK) {
		set_err(pg, PQerrorMessage(pg->c));
		r = state_errno(res, pg->c);
	}
	if (end)
		pg->in_tx = pg->lost_tx = false;
	else if (r == 0 && starts(sql, "BEGIN"))
		pg->in_tx = true;
	if (pg->c && PQstatus(pg->c) == CONNECTION_BAD)
		drop(pg, 0);
	PQclear(res);
	free(q);
	return r;
}

static bool pg_tx_failed(void *conn)
{
	struct pg *pg = conn;

	return pg->lost_tx || (pg->c && PQtransactionStatus(pg->c) == PQTRANS_INERROR);
}

static struct gw_stmt *pg_prepare(void *conn, const char *sql)
{
	struct pg_stmt *s = xnew(struct pg_stmt);

	s->base.ops = &gw_store_pg_ops;
	s->pg = conn;
	s->sql = translate(sql, &s->n);
	s->vals = xcalloc((size_t)s->n + 1, sizeof(*s->vals));
	s->types = xcalloc((size_t)s->n + 1, sizeof(*s->types));
	return &s->base;
}

#define PS(st) ((struct pg_stmt *)(st))

static void pg_bind_text(struct gw_stmt *st, int i, const char *v)
{
	struct pg_stmt *s = PS(st);

	if (i < 1 || i > s->n)
		return;
	free(s->vals[i - 1]);
	s->vals[i - 1] = v ? xstrdup(v) : NULL;
	s->types[i - 1] = 0;
}

static void pg_bind_int64(struct gw_stmt *st, int i, int64_t v)
{
	struct pg_stmt *s = PS(st);

	if (i < 1 || i > s->n)
		return;
	free(s->vals[i - 1]);
	s->vals[i - 1] = xasprintf("%" PRId64, v);
	s->types[i - 1] = INT8OID;
}

static int pg_run(struct pg_stmt *s)
{
	ExecStatusType status;
	int r = ready(s->pg, NULL);

	s->ran = true;
	if (r)
		return r;
	s->res = roundtrip(s->pg, PQsendQueryParams(s->pg->c, s->sql, s->n, s->types,
						    (const char *const *)s->vals,
						    NULL, NULL, 0), &r);
	if (!s->res)
		return r;
	status = PQresultStatus(s->res);
	if (status == PGRES_TUPLES_OK) {
		s->rows = PQntuples(s->res);
		s->row = -1;
		return 0;
	}
	if (status == PGRES_COMMAND_OK) {
		s->rows = 0;
		s->row = -1;
		return 0;
	}
	set_err(s->pg, PQerrorMessage(s->pg->c));
	r = state_errno(s->res, s->pg->c);
	if (PQstatus(s->pg->c) == CONNECTION_BAD)
		drop(s->pg, 0);
	return r;
}

static int pg_step(struct gw_stmt *st)
{
	struct pg_stmt *s = PS(st);

	if (!s->ran) {
		int r = pg_run(s);

		if (r < 0)
			return r;
	} else if (!s->res || s->row >= s->rows) {
		return 0;
	}
	s->row++;
	return s->row < s->rows ? 1 : 0;
}

static bool pg_is_null(struct gw_stmt *st, int col)
{
	struct pg_stmt *s = PS(st);

	if (!s->res || s->row < 0 || s->row >= s->rows || col >= PQnfields(s->res))
		return true;
	return PQgetisnull(s->res, s->row, col);
}

static const char *pg_text(struct gw_stmt *st, int col)
{
	if (pg_is_null(st, col))
		return NULL;
	return PQgetvalue(PS(st)->res, PS(st)->row, col);
}

static int64_t pgs_int64(struct gw_stmt *st, int col)
{
	const char *v = pg_text(st, col);

	if (!v)
		return 0;
	if (!strcmp(v, "t"))
		return 1; /* a boolean */
	return strtoll(v, NULL, 10);
}

static void pg_finalize(struct gw_stmt *st)
{
	struct pg_stmt *s = PS(st);

	PQclear(s->res);
	for (int i = 0; i < s->n; i++)
		free(s->vals[i]);
	free(s->vals);
	free(s->types);
	free(s->sql);
	free(s);
}

/* ---- LISTEN ---- */

enum lstate { L_DOWN = 0, L_CONNECTING, L_LISTEN_SENT, L_UP, L_PING };

struct pg_listener {
	struct gw_store_listener base;
	struct event_base *evb;
	char *conninfo, *channel;
	uint32_t retry_ms, timeout_ms;
	gw_store_listen_cb cb;
	void *user_data;
	PGconn *c;
	enum lstate state;
	struct event *io, *retry;
	/* Connecting, LISTEN or a ping not finished in time: down. Up: the
	 * next ping. */
	struct event *deadline;
};

static void l_arm(struct pg_listener *l, uint32_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(l->deadline, &tv);
}

static void l_io(evutil_socket_t fd, short what, void *arg);

static void l_watch(struct pg_listener *l, short what)
{
	l->io = watch_conn(l->io, l->evb, l->c, what, l_io, l);
}

/* The connection failed or was lost: try again in retry_ms. */
static void l_down(struct pg_listener *l)
{
	struct timeval tv = { l->retry_ms / 1000, (l->retry_ms % 1000) * 1000 };

	if (l->io)
		event_free(l->io);
	l->io = NULL;
	PQfinish(l->c);
	l->c = NULL;
	l->state = L_DOWN;
	evtimer_del(l->deadline);
	evtimer_add(l->retry, &tv);
}

static void l_connect(evutil_socket_t fd, short what, void *arg)
{
	struct pg_listener *l = arg;

	l->c = PQconnectStart(l->conninfo);
	if (!l->c || PQstatus(l->c) == CONNECTION_BAD || PQsocket(l->c) < 0) {
		l_down(l);
		return;
	}
	PQsetNoticeProcessor(l->c, quiet, NULL);
	l->state = L_CONNECTING;
	l_arm(l, l->timeout_ms);
	l_watch(l, EV_WRITE); /* PQconnectPoll's first state is "writing" */
}

static void l_send_listen(struct pg_listener *l)
{
	char *q = xasprintf("LISTEN %s", l->channel); /* checked: [a-z0-9_] */

	if (PQsetnonblocking(l->c, 1) < 0 || !PQsendQuery(l->c, q)) {
		free(q);
		l_down(l);
		return;
	}
	free(q);
	PQflush(l->c);
	l->state = L_LISTEN_SENT;
	l_watch(l, EV_READ | EV_PERSIST);
}

/* Reads what arrived: the LISTEN's result, then notifications. */
static void l_read(struct pg_listener *l)
{
	bool notified = false, up = false;
	PGnotify *n;

	if (!PQconsumeInput(l->c) || PQstatus(l->c) == CONNECTION_BAD) {
		l_down(l);
		return;
	}
	while ((l->state == L_LISTEN_SENT || l->state == L_PING) && !PQisBusy(l->c)) {
		PGresult *res = PQgetResult(l->c);

		if (!res) {
			up = l->state == L_LISTEN_SENT;
			l->state = L_UP;
			l_arm(l, PING_MS);
			break;
		}
		if (l->state == L_PING) {
			PQclear(res); /* the ping's answer */
			continue;
		}
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			PQclear(res);
			l_down(l);
			return;
		}
		PQclear(res);
	}
	while ((n = PQnotifies(l->c))) {
		notified = true;
		PQfreemem(n);
	}
	/* The callback may free the listener: it comes last. */
	if (up)
		l->cb(true, l->user_data);
	else if (notified && l->state >= L_UP)
		l->cb(false, l->user_data);
}

/* The deadline: connecting, LISTEN or the last ping took too long (the
 * server does not answer: reconnect), or it is time to ping. */
static void l_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct pg_listener *l = arg;

	char *q;

	if (l->state != L_UP) {
		l_down(l);
		return;
	}
	/* LISTEN again (idempotent): the connection stays recognizable as a
	 * listener in pg_stat_activity. */
	q = xasprintf("LISTEN %s", l->channel);
	if (!PQsendQuery(l->c, q)) {
		free(q);
		l_down(l);
		return;
	}
	free(q);
	PQflush(l->c);
	l->state = L_PING;
	l_arm(l, l->timeout_ms);
}

static void l_io(evutil_socket_t fd, short what, void *arg)
{
	struct pg_listener *l = arg;
	int r;

	if (l->state != L_CONNECTING) {
		l_read(l);
		return;
	}
	r = connect_step(l->c, &what);
	if (r == 0)
		l_watch(l, what);
	else if (r > 0)
		l_send_listen(l);
	else
		l_down(l);
}

static struct gw_store_listener *pg_listen(void *conn, struct event_base *base,
					   const char *channel, uint32_t retry_ms,
					   gw_store_listen_cb cb, void *user_data)
{
	struct pg *pg = conn;
	struct pg_listener *l = xnew(struct pg_listener);

	l->base.ops = &gw_store_pg_ops;
	l->evb = base;
	l->conninfo = xstrdup(pg->conninfo);
	l->channel = xstrdup(channel);
	l->retry_ms = retry_ms ? retry_ms : 1000;
	l->timeout_ms = pg->timeout_ms && pg->timeout_ms < OPEN_TIMEOUT_MS ? pg->timeout_ms :
			GW_STORE_TIMEOUT_DEFAULT_MS;
	l->deadline = evtimer_new(base, l_deadline, l);
	l->cb = cb;
	l->user_data = user_data;
	l->retry = evtimer_new(base, l_connect, l);
	l_connect(-1, 0, l);
	return &l->base;
}

static struct gw_store_listener *pg_listener_free(struct gw_store_listener *gl)
{
	struct pg_listener *l = (struct pg_listener *)gl;

	if (l->io)
		event_free(l->io);
	event_free(l->retry);
	event_free(l->deadline);
	PQfinish(l->c);
	free(l->conninfo);
	free(l->channel);
	free(l);
	return NULL;
}

static bool pg_listener_up(const struct gw_store_listener *gl)
{
	return ((const struct pg_listener *)gl)->state >= L_UP;
}

const struct gw_store_ops gw_store_pg_ops = {
	.backend = GW_STORE_POSTGRESQL,
	.open = pg_open,
	.close = pg_close,
	.set_timeout = pg_set_timeout,
	.set_loop = pg_set_loop,
	.errmsg = pg_errmsg,
	.exec = pg_exec,
	.begin_sql = "BEGIN",
	/* One key for the whole schema: gateways starting together migrate
	 * one after the other. */
	.schema_lock_sql = "SELECT pg_advisory_lock(1936944999)",
	.schema_unlock_sql = "SELECT pg_advisory_unlock(1936944999)",
	.tx_failed = pg_tx_failed,
	.prepare = pg_prepare,
	.bind_text = pg_bind_text,
	.bind_int64 = pg_bind_int64,
	.step = pg_step,
	.is_null = pg_is_null,
	.text = pg_text,
	.int64 = pgs_int64,
	.finalize = pg_finalize,
	.listen = pg_listen,
	.listener_free = pg_listener_free,
	.listener_up = pg_listener_up,
};
