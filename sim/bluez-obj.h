/* SPDX-License-Identifier: MIT */
/*
 * A tiny gdbus look-alike for the fake org.bluez: objects made of ordered
 * interface descriptors (methods, properties, signals), answered the way
 * BlueZ 5.66's gdbus answers: Introspect XML byte for byte, Properties
 * Get/GetAll/Set with its error texts, batched PropertiesChanged, and an
 * ObjectManager at "/" with InterfacesAdded/InterfacesRemoved.
 *
 * Owns the object table of one connection; the objects' data belong to the
 * callers (bluez.c, bluez-device.c).
 */
#pragma once

#include <stdbool.h>

#include <dbus/dbus.h>

struct event_base;
struct bz_bus;
struct bz_object;

/* A method: in/out are space-separated "name:type" lists (may be "").
 * fn returns the reply, or NULL when it keeps msg (ref) to answer later. */
struct bz_method {
	const char *name;
	const char *in;
	const char *out;
	DBusMessage *(*fn)(void *data, DBusMessage *msg);
};

struct bz_signal {
	const char *name;
	const char *args; /* "name:type" list */
};

struct bz_prop {
	const char *name;
	const char *type;
	/* NULL: always there (gdbus' exists) */
	bool (*exists)(void *data);
	/* appends the value (not the variant) */
	void (*get)(void *data, DBusMessageIter *it);
	/* NULL: read-only. Returns an error reply, or NULL on success. */
	DBusMessage *(*set)(void *data, DBusMessageIter *value, DBusMessage *msg);
};

struct bz_iface {
	const char *name;
	const struct bz_method *methods; /* NULL-name terminated, may be NULL */
	const struct bz_signal *signals;
	const struct bz_prop *props;
};

extern const struct bz_iface bz_iface_introspectable;
extern const struct bz_iface bz_iface_properties;
extern const struct bz_iface bz_iface_object_manager;

struct bz_bus *bz_bus_new(struct event_base *base, DBusConnection *conn);
/* Unregisters every object (no signals). Returns NULL. */
struct bz_bus *bz_bus_free(struct bz_bus *bus);

/*
 * Registers path with ifaces (NULL-terminated, in the order BlueZ lists
 * them, Introspectable and Properties included). announce: emit
 * InterfacesAdded. NULL when the path is taken.
 */
struct bz_object *bz_object_add(struct bz_bus *bus, const char *path,
				const struct bz_iface *const *ifaces, void *data,
				bool announce);
/* Emits InterfacesRemoved when announce. */
void bz_object_remove(struct bz_object *obj, bool announce);
const char *bz_object_path(const struct bz_object *obj);

/* Queue a PropertiesChanged (batched per interface, like gdbus). A property
 * whose exists() is false goes in the invalidated list. */
void bz_prop_changed(struct bz_object *obj, const char *iface, const char *prop);
/* Sends every queued PropertiesChanged now. */
void bz_bus_flush(struct bz_bus *bus);

/* Sends msg (consumed) after flushing queued property changes, so signals
 * and replies keep the order in which things happened. */
void bz_bus_send(struct bz_bus *bus, DBusMessage *msg);

/* Error replies. */
DBusMessage *bz_error(DBusMessage *msg, const char *name, const char *text);
DBusMessage *bz_error_invalid_args(DBusMessage *msg);
DBusMessage *bz_error_failed(DBusMessage *msg, const char *text);
DBusMessage *bz_error_not_supported(DBusMessage *msg);
