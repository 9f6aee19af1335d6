/* SPDX-License-Identifier: MIT */
/*
 * Runs a libdbus connection on a libevent loop: DBusWatch -> event,
 * DBusTimeout -> timer, dispatch scheduled whenever messages are queued.
 * Used by the BLE link (client of org.bluez) and by the simulator (server of
 * a fake org.bluez). No blocking calls: use dbus_connection_send_with_reply
 * and DBusPendingCall notify callbacks.
 */
#pragma once

#include <dbus/dbus.h>

struct event_base;
struct dbus_loop;

/* Attaches conn (a reference is taken) to base. */
struct dbus_loop *dbus_loop_attach(struct event_base *base, DBusConnection *conn);
/* Detaches and drops the reference; accepts NULL, returns NULL. */
struct dbus_loop *dbus_loop_detach(struct dbus_loop *loop);

/* Opens a private connection to address (NULL: the system bus), registers
 * with the bus and attaches it. Returns NULL and fills err on failure. */
DBusConnection *dbus_loop_connect(const char *address, DBusError *err);
