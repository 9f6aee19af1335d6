/* SPDX-License-Identifier: MIT */
/* libdbus on libevent (see dbus-loop.h). */
#include "util/dbus-loop.h"

#include <stdbool.h>
#include <stdlib.h>

#include <event2/event.h>

#include "util/util.h"

struct dbus_loop {
	struct event_base *base;
	DBusConnection *conn;
	struct event *dispatch_ev;
	bool dispatching; /* inside dispatch_cb: a detach is deferred */
	bool detached;    /* detach asked for while dispatching */
};

static void loop_free(struct dbus_loop *loop)
{
	event_free(loop->dispatch_ev);
	dbus_connection_unref(loop->conn);
	free(loop);
}

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
	DBusWatch *watch = arg;
	unsigned flags = 0;

	if (what & EV_READ)
		flags |= DBUS_WATCH_READABLE;
	if (what & EV_WRITE)
		flags |= DBUS_WATCH_WRITABLE;
	dbus_watch_handle(watch, flags);
}

static void watch_sync(DBusWatch *watch)
{
	struct event *ev = dbus_watch_get_data(watch);

	if (!ev)
		return;
	if (dbus_watch_get_enabled(watch))
		event_add(ev, NULL);
	else
		event_del(ev);
}

static dbus_bool_t add_watch(DBusWatch *watch, void *data)
{
	struct dbus_loop *loop = data;
	unsigned flags = dbus_watch_get_flags(watch);
	short what = EV_PERSIST;
	struct event *ev;

	if (flags & DBUS_WATCH_READABLE)
		what |= EV_READ;
	if (flags & DBUS_WATCH_WRITABLE)
		what |= EV_WRITE;
	ev = event_new(loop->base, dbus_watch_get_unix_fd(watch), what,
		       watch_cb, watch);
	if (!ev)
		return FALSE;
	dbus_watch_set_data(watch, ev, NULL);
	watch_sync(watch);
	return TRUE;
}

static void remove_watch(DBusWatch *watch, void *data)
{
	struct event *ev = dbus_watch_get_data(watch);

	if (ev)
		event_free(ev);
	dbus_watch_set_data(watch, NULL, NULL);
}

static void toggle_watch(DBusWatch *watch, void *data)
{
	watch_sync(watch);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	dbus_timeout_handle(arg);
}

static void timeout_sync(DBusTimeout *timeout)
{
	struct event *ev = dbus_timeout_get_data(timeout);
	int ms = dbus_timeout_get_interval(timeout);
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (!ev)
		return;
	if (dbus_timeout_get_enabled(timeout))
		event_add(ev, &tv);
	else
		event_del(ev);
}

static dbus_bool_t add_timeout(DBusTimeout *timeout, void *data)
{
	struct dbus_loop *loop = data;
	struct event *ev = event_new(loop->base, -1, EV_PERSIST, timeout_cb,
				     timeout);

	if (!ev)
		return FALSE;
	dbus_timeout_set_data(timeout, ev, NULL);
	timeout_sync(timeout);
	return TRUE;
}

static void remove_timeout(DBusTimeout *timeout, void *data)
{
	struct event *ev = dbus_timeout_get_data(timeout);

	if (ev)
		event_free(ev);
	dbus_timeout_set_data(timeout, NULL, NULL);
}

static void toggle_timeout(DBusTimeout *timeout, void *data)
{
	timeout_sync(timeout);
}

static void dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dbus_loop *loop = arg;
	int budget = 64; /* bounded per turn so other events get their share */

	/* A handler may detach the loop (its owner freed from a message
	 * callback): then the loop is freed here, after the last dispatch. */
	loop->dispatching = true;
	while (!loop->detached && budget-- > 0 &&
	       dbus_connection_dispatch(loop->conn) == DBUS_DISPATCH_DATA_REMAINS)
		;
	loop->dispatching = false;
	if (loop->detached) {
		loop_free(loop);
		return;
	}
	if (dbus_connection_get_dispatch_status(loop->conn) ==
	    DBUS_DISPATCH_DATA_REMAINS)
		event_active(loop->dispatch_ev, 0, 0);
}

static void dispatch_status(DBusConnection *conn, DBusDispatchStatus status,
			    void *data)
{
	struct dbus_loop *loop = data;

	if (status == DBUS_DISPATCH_DATA_REMAINS)
		event_active(loop->dispatch_ev, 0, 0);
}

struct dbus_loop *dbus_loop_attach(struct event_base *base, DBusConnection *conn)
{
	struct dbus_loop *loop = xnew(struct dbus_loop);

	loop->base = base;
	loop->conn = dbus_connection_ref(conn);
	loop->dispatch_ev = event_new(base, -1, 0, dispatch_cb, loop);
	dbus_connection_set_exit_on_disconnect(conn, FALSE);
	dbus_connection_set_watch_functions(conn, add_watch, remove_watch,
					    toggle_watch, loop, NULL);
	dbus_connection_set_timeout_functions(conn, add_timeout, remove_timeout,
					      toggle_timeout, loop, NULL);
	dbus_connection_set_dispatch_status_function(conn, dispatch_status,
						     loop, NULL);
	if (dbus_connection_get_dispatch_status(conn) ==
	    DBUS_DISPATCH_DATA_REMAINS)
		event_active(loop->dispatch_ev, 0, 0);
	return loop;
}

struct dbus_loop *dbus_loop_detach(struct dbus_loop *loop)
{
	if (!loop)
		return NULL;
	dbus_connection_set_watch_functions(loop->conn, NULL, NULL, NULL, NULL,
					    NULL);
	dbus_connection_set_timeout_functions(loop->conn, NULL, NULL, NULL,
					      NULL, NULL);
	dbus_connection_set_dispatch_status_function(loop->conn, NULL, NULL,
						     NULL);
	if (loop->dispatching)
		loop->detached = true;
	else
		loop_free(loop);
	return NULL;
}

DBusConnection *dbus_loop_connect(const char *address, DBusError *err)
{
	DBusConnection *conn;

	if (address)
		conn = dbus_connection_open_private(address, err);
	else
		conn = dbus_bus_get_private(DBUS_BUS_SYSTEM, err);
	if (!conn)
		return NULL;
	if (address && !dbus_bus_register(conn, err)) {
		dbus_connection_close(conn);
		dbus_connection_unref(conn);
		return NULL;
	}
	return conn;
}
