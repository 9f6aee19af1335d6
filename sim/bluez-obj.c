/* SPDX-License-Identifier: MIT */
/* Object table of the fake org.bluez, gdbus-compatible (see bluez-obj.h). */
#include "bluez-obj.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "util/util.h"

struct bz_object {
	struct bz_bus *bus;
	char *path;
	const struct bz_iface *const *ifaces;
	void *data;
	struct bz_object *prev, *next;
};

struct bz_pending {
	struct bz_object *obj;
	const char *iface;
	const char *prop;
};

struct bz_bus {
	struct event_base *base;
	DBusConnection *conn;
	struct bz_object *head, *tail; /* registration order */
	struct bz_pending *pending;
	size_t n_pending, cap_pending;
	struct event *flush_ev;
};

const struct bz_iface bz_iface_introspectable = {
	.name = "org.freedesktop.DBus.Introspectable",
	.methods = (const struct bz_method[]){
		{ "Introspect", "", "xml:s", NULL },
		{ NULL, NULL, NULL, NULL },
	},
};

const struct bz_iface bz_iface_properties = {
	.name = "org.freedesktop.DBus.Properties",
	.methods = (const struct bz_method[]){
		{ "Get", "interface:s name:s", "value:v", NULL },
		{ "Set", "interface:s name:s value:v", "", NULL },
		{ "GetAll", "interface:s", "properties:a{sv}", NULL },
		{ NULL, NULL, NULL, NULL },
	},
	.signals = (const struct bz_signal[]){
		{ "PropertiesChanged", "interface:s changed_properties:a{sv} "
				       "invalidated_properties:as" },
		{ NULL, NULL },
	},
};

const struct bz_iface bz_iface_object_manager = {
	.name = "org.freedesktop.DBus.ObjectManager",
	.methods = (const struct bz_method[]){
		{ "GetManagedObjects", "", "objects:a{oa{sa{sv}}}", NULL },
		{ NULL, NULL, NULL, NULL },
	},
	.signals = (const struct bz_signal[]){
		{ "InterfacesAdded", "object:o interfaces:a{sa{sv}}" },
		{ "InterfacesRemoved", "object:o interfaces:as" },
		{ NULL, NULL },
	},
};

/* ---- small string builder ------------------------------------------------ */

struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (b->len + (size_t)n + 1 > b->cap) {
		b->cap = (b->len + (size_t)n + 1) * 2;
		b->s = realloc(b->s, b->cap);
		if (!b->s)
			abort();
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* ---- errors ---------------------------------------------------------------- */

DBusMessage *bz_error(DBusMessage *msg, const char *name, const char *text)
{
	DBusMessage *r = dbus_message_new_error(msg, name, text);

	if (!r)
		abort();
	return r;
}

DBusMessage *bz_error_invalid_args(DBusMessage *msg)
{
	return bz_error(msg, "org.bluez.Error.InvalidArguments",
			"Invalid arguments in method call");
}

DBusMessage *bz_error_failed(DBusMessage *msg, const char *text)
{
	return bz_error(msg, "org.bluez.Error.Failed", text);
}

DBusMessage *bz_error_not_supported(DBusMessage *msg)
{
	return bz_error(msg, "org.bluez.Error.NotSupported",
			"Operation is not supported");
}

static DBusMessage *errorf(DBusMessage *msg, const char *name, const char *fmt,
			   const char *arg) __attribute__((format(printf, 3, 0)));

static DBusMessage *errorf(DBusMessage *msg, const char *name, const char *fmt,
			   const char *arg)
{
	char text[256];

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(text, sizeof(text), fmt, arg);
#pragma GCC diagnostic pop
	return bz_error(msg, name, text);
}

/* ---- introspection --------------------------------------------------------- */

/* Appends "<arg .../>\n" for each "name:type" of list. */
static void xml_args(struct sbuf *b, const char *list, const char *dir)
{
	const char *p = list;

	while (p && *p) {
		const char *colon = strchr(p, ':');
		const char *end = strchr(p, ' ');

		if (!end)
			end = p + strlen(p);
		if (!colon || colon > end)
			return;
		sb_printf(b, "<arg name=\"%.*s\" type=\"%.*s\"", (int)(colon - p), p,
			  (int)(end - colon - 1), colon + 1);
		if (dir)
			sb_printf(b, " direction=\"%s\"", dir);
		sb_printf(b, "/>\n");
		p = *end ? end + 1 : end;
	}
}

/* The exact layout gdbus (BlueZ 5.66) produces. */
static void xml_iface(struct sbuf *b, const struct bz_iface *i)
{
	sb_printf(b, "<interface name=\"%s\">", i->name);
	for (const struct bz_method *m = i->methods; m && m->name; m++) {
		sb_printf(b, "<method name=\"%s\">", m->name);
		xml_args(b, m->in, "in");
		xml_args(b, m->out, "out");
		sb_printf(b, "</method>");
	}
	for (const struct bz_signal *s = i->signals; s && s->name; s++) {
		sb_printf(b, "<signal name=\"%s\">", s->name);
		xml_args(b, s->args, NULL);
		sb_printf(b, "</signal>\n");
	}
	for (const struct bz_prop *p = i->props; p && p->name; p++)
		sb_printf(b, "<property name=\"%s\" type=\"%s\" access=\"%s\">"
			  "</property>", p->name, p->type,
			  p->set ? "readwrite" : "read");
	sb_printf(b, "</interface>");
}

static DBusMessage *introspect(struct bz_object *obj, DBusMessage *msg)
{
	struct sbuf b = { 0 };
	char **children = NULL;
	DBusMessage *r;

	sb_printf(&b, "%s", DBUS_INTROSPECT_1_0_XML_DOCTYPE_DECL_NODE "<node>");
	for (const struct bz_iface *const *i = obj->ifaces; *i; i++)
		xml_iface(&b, *i);
	if (dbus_connection_list_registered(obj->bus->conn, obj->path, &children)) {
		for (char **c = children; *c; c++)
			sb_printf(&b, "<node name=\"%s\"/>", *c);
		dbus_free_string_array(children);
	}
	sb_printf(&b, "</node>");
	r = dbus_message_new_method_return(msg);
	dbus_message_append_args(r, DBUS_TYPE_STRING, &b.s, DBUS_TYPE_INVALID);
	free(b.s);
	return r;
}

/* ---- properties ------------------------------------------------------------- */

static const struct bz_iface *find_iface(const struct bz_object *obj, const char *name)
{
	for (const struct bz_iface *const *i = obj->ifaces; *i; i++)
		if (!strcmp((*i)->name, name))
			return *i;
	return NULL;
}

static const struct bz_prop *find_prop(const struct bz_iface *i, const char *name)
{
	for (const struct bz_prop *p = i->props; p && p->name; p++)
		if (!strcmp(p->name, name))
			return p;
	return NULL;
}

static bool prop_exists(const struct bz_prop *p, void *data)
{
	return !p->exists || p->exists(data);
}

static void append_variant(DBusMessageIter *it, const struct bz_prop *p, void *data)
{
	DBusMessageIter v;

	dbus_message_iter_open_container(it, DBUS_TYPE_VARIANT, p->type, &v);
	p->get(data, &v);
	dbus_message_iter_close_container(it, &v);
}

static void append_props(DBusMessageIter *it, const struct bz_iface *i, void *data)
{
	DBusMessageIter dict, e;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	for (const struct bz_prop *p = i->props; p && p->name; p++) {
		if (!prop_exists(p, data))
			continue;
		dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &p->name);
		append_variant(&e, p, data);
		dbus_message_iter_close_container(&dict, &e);
	}
	dbus_message_iter_close_container(it, &dict);
}

static DBusMessage *props_get(struct bz_object *obj, DBusMessage *msg)
{
	const char *iname, *pname;
	const struct bz_iface *i;
	const struct bz_prop *p;
	DBusMessageIter it;
	DBusMessage *r;

	dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &iname,
			      DBUS_TYPE_STRING, &pname, DBUS_TYPE_INVALID);
	i = find_iface(obj, iname);
	if (!i)
		return errorf(msg, DBUS_ERROR_INVALID_ARGS, "No such interface '%s'", iname);
	p = find_prop(i, pname);
	if (!p || !prop_exists(p, obj->data))
		return errorf(msg, DBUS_ERROR_INVALID_ARGS, "No such property '%s'", pname);
	r = dbus_message_new_method_return(msg);
	dbus_message_iter_init_append(r, &it);
	append_variant(&it, p, obj->data);
	return r;
}

static DBusMessage *props_get_all(struct bz_object *obj, DBusMessage *msg)
{
	const char *iname;
	const struct bz_iface *i;
	DBusMessageIter it;
	DBusMessage *r;

	dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &iname, DBUS_TYPE_INVALID);
	i = find_iface(obj, iname);
	if (!i)
		return errorf(msg, DBUS_ERROR_INVALID_ARGS, "No such interface '%s'", iname);
	r = dbus_message_new_method_return(msg);
	dbus_message_iter_init_append(r, &it);
	append_props(&it, i, obj->data);
	return r;
}

static DBusMessage *props_set(struct bz_object *obj, DBusMessage *msg)
{
	const char *iname, *pname;
	const struct bz_iface *i;
	const struct bz_prop *p;
	DBusMessageIter it, sub;
	DBusMessage *r;
	char *sig;
	bool ok;

	dbus_message_iter_init(msg, &it);
	dbus_message_iter_get_basic(&it, &iname);
	dbus_message_iter_next(&it);
	dbus_message_iter_get_basic(&it, &pname);
	dbus_message_iter_next(&it);
	i = find_iface(obj, iname);
	if (!i)
		return errorf(msg, DBUS_ERROR_INVALID_ARGS, "No such interface '%s'", iname);
	p = find_prop(i, pname);
	if (!p)
		return errorf(msg, DBUS_ERROR_UNKNOWN_PROPERTY, "No such property '%s'", pname);
	if (!p->set)
		return errorf(msg, DBUS_ERROR_PROPERTY_READ_ONLY,
			      "Property '%s' is not writable", pname);
	if (!prop_exists(p, obj->data))
		return errorf(msg, DBUS_ERROR_UNKNOWN_PROPERTY, "No such property '%s'", pname);
	dbus_message_iter_recurse(&it, &sub);
	sig = dbus_message_iter_get_signature(&sub);
	ok = sig && !strcmp(sig, p->type);
	dbus_free(sig);
	if (!ok)
		return errorf(msg, DBUS_ERROR_INVALID_SIGNATURE,
			      "Invalid signature for '%s'", pname);
	r = p->set(obj->data, &sub, msg);
	if (r)
		return r;
	return dbus_message_new_method_return(msg);
}

/* ---- object manager ---------------------------------------------------------- */

static void append_object(DBusMessageIter *it, struct bz_object *obj)
{
	DBusMessageIter dict, e;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sa{sv}}", &dict);
	for (const struct bz_iface *const *i = obj->ifaces; *i; i++) {
		dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &(*i)->name);
		append_props(&e, *i, obj->data);
		dbus_message_iter_close_container(&dict, &e);
	}
	dbus_message_iter_close_container(it, &dict);
}

static DBusMessage *managed_objects(struct bz_object *root, DBusMessage *msg)
{
	DBusMessage *r = dbus_message_new_method_return(msg);
	DBusMessageIter it, arr, e;

	dbus_message_iter_init_append(r, &it);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{oa{sa{sv}}}", &arr);
	for (struct bz_object *o = root->bus->head; o; o = o->next) {
		if (o == root)
			continue;
		dbus_message_iter_open_container(&arr, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_OBJECT_PATH, &o->path);
		append_object(&e, o);
		dbus_message_iter_close_container(&arr, &e);
	}
	dbus_message_iter_close_container(&it, &arr);
	return r;
}

static void emit_added(struct bz_object *obj)
{
	DBusMessage *s = dbus_message_new_signal("/", bz_iface_object_manager.name,
						 "InterfacesAdded");
	DBusMessageIter it;

	dbus_message_iter_init_append(s, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_OBJECT_PATH, &obj->path);
	append_object(&it, obj);
	bz_bus_send(obj->bus, s);
}

static void emit_removed(struct bz_object *obj)
{
	DBusMessage *s = dbus_message_new_signal("/", bz_iface_object_manager.name,
						 "InterfacesRemoved");
	DBusMessageIter it, arr;

	dbus_message_iter_init_append(s, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_OBJECT_PATH, &obj->path);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "s", &arr);
	for (const struct bz_iface *const *i = obj->ifaces; *i; i++)
		dbus_message_iter_append_basic(&arr, DBUS_TYPE_STRING, &(*i)->name);
	dbus_message_iter_close_container(&it, &arr);
	bz_bus_send(obj->bus, s);
}

/* ---- dispatch -------------------------------------------------------------- */

/* Concatenated types of a "name:type" list, as gdbus compares them. */
static bool sig_matches(const char *list, const char *sig)
{
	const char *p = list;
	size_t off = 0;

	while (p && *p) {
		const char *colon = strchr(p, ':');
		const char *end = strchr(p, ' ');
		size_t n;

		if (!end)
			end = p + strlen(p);
		n = (size_t)(end - colon - 1);
		if (strncmp(sig + off, colon + 1, n))
			return false;
		off += n;
		p = *end ? end + 1 : end;
	}
	return sig[off] == '\0';
}

static DBusMessage *builtin(struct bz_object *obj, const struct bz_iface *i,
			    const char *member, DBusMessage *msg)
{
	if (i == &bz_iface_introspectable)
		return introspect(obj, msg);
	if (i == &bz_iface_object_manager)
		return managed_objects(obj, msg);
	if (!strcmp(member, "Get"))
		return props_get(obj, msg);
	if (!strcmp(member, "GetAll"))
		return props_get_all(obj, msg);
	return props_set(obj, msg);
}

static DBusHandlerResult message_cb(DBusConnection *conn, DBusMessage *msg, void *data)
{
	struct bz_object *obj = data;
	const char *iname = dbus_message_get_interface(msg);
	const char *member = dbus_message_get_member(msg);
	const char *sig = dbus_message_get_signature(msg);

	if (dbus_message_get_type(msg) != DBUS_MESSAGE_TYPE_METHOD_CALL || !member)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	for (const struct bz_iface *const *i = obj->ifaces; *i; i++) {
		if (iname && strcmp((*i)->name, iname))
			continue;
		for (const struct bz_method *m = (*i)->methods; m && m->name; m++) {
			DBusMessage *r;

			if (strcmp(m->name, member) || !sig_matches(m->in, sig))
				continue;
			r = m->fn ? m->fn(obj->data, msg) : builtin(obj, *i, member, msg);
			if (r)
				bz_bus_send(obj->bus, r);
			return DBUS_HANDLER_RESULT_HANDLED;
		}
	}
	return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

static const DBusObjectPathVTable vtable = { .message_function = message_cb };

/* ---- property change batching ------------------------------------------------ */

static void emit_changed(struct bz_bus *bus, size_t first)
{
	struct bz_pending *p0 = &bus->pending[first];
	const struct bz_iface *i = find_iface(p0->obj, p0->iface);
	DBusMessage *s;
	DBusMessageIter it, dict, inval, e;

	if (!i)
		return;
	s = dbus_message_new_signal(p0->obj->path, bz_iface_properties.name,
				    "PropertiesChanged");
	dbus_message_iter_init_append(s, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &i->name);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	for (size_t k = first; k < bus->n_pending; k++) {
		struct bz_pending *p = &bus->pending[k];
		const struct bz_prop *prop;

		if (p->obj != p0->obj || strcmp(p->iface, p0->iface))
			continue;
		prop = find_prop(i, p->prop);
		if (!prop || !prop_exists(prop, p->obj->data))
			continue;
		dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &prop->name);
		append_variant(&e, prop, p->obj->data);
		dbus_message_iter_close_container(&dict, &e);
	}
	dbus_message_iter_close_container(&it, &dict);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "s", &inval);
	for (size_t k = first; k < bus->n_pending; k++) {
		struct bz_pending *p = &bus->pending[k];
		const struct bz_prop *prop;

		if (p->obj != p0->obj || strcmp(p->iface, p0->iface))
			continue;
		prop = find_prop(i, p->prop);
		if (prop && !prop_exists(prop, p->obj->data))
			dbus_message_iter_append_basic(&inval, DBUS_TYPE_STRING, &prop->name);
		if (k != first)
			p->obj = NULL; /* consumed */
	}
	dbus_message_iter_close_container(&it, &inval);
	dbus_connection_send(bus->conn, s, NULL);
	dbus_message_unref(s);
}

void bz_bus_flush(struct bz_bus *bus)
{
	/* emit_changed may not add entries, so the array is stable here */
	for (size_t k = 0; k < bus->n_pending; k++)
		if (bus->pending[k].obj)
			emit_changed(bus, k);
	bus->n_pending = 0;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	bz_bus_flush(arg);
}

void bz_prop_changed(struct bz_object *obj, const char *iface, const char *prop)
{
	struct bz_bus *bus = obj->bus;

	for (size_t k = 0; k < bus->n_pending; k++) {
		struct bz_pending *p = &bus->pending[k];

		if (p->obj == obj && !strcmp(p->iface, iface) && !strcmp(p->prop, prop))
			return; /* gdbus sends the latest value once */
	}
	if (bus->n_pending == bus->cap_pending) {
		bus->cap_pending = bus->cap_pending ? bus->cap_pending * 2 : 16;
		bus->pending = realloc(bus->pending,
				       bus->cap_pending * sizeof(*bus->pending));
		if (!bus->pending)
			abort();
	}
	bus->pending[bus->n_pending++] = (struct bz_pending){ obj, iface, prop };
	event_active(bus->flush_ev, 0, 0);
}

void bz_bus_send(struct bz_bus *bus, DBusMessage *msg)
{
	bz_bus_flush(bus);
	dbus_connection_send(bus->conn, msg, NULL);
	dbus_message_unref(msg);
}

/* ---- lifetime --------------------------------------------------------------- */

struct bz_bus *bz_bus_new(struct event_base *base, DBusConnection *conn)
{
	struct bz_bus *bus = xnew(struct bz_bus);

	bus->base = base;
	bus->conn = dbus_connection_ref(conn);
	bus->flush_ev = event_new(base, -1, 0, flush_cb, bus);
	return bus;
}

struct bz_bus *bz_bus_free(struct bz_bus *bus)
{
	if (!bus)
		return NULL;
	while (bus->tail)
		bz_object_remove(bus->tail, false);
	event_free(bus->flush_ev);
	free(bus->pending);
	dbus_connection_unref(bus->conn);
	free(bus);
	return NULL;
}

struct bz_object *bz_object_add(struct bz_bus *bus, const char *path,
				const struct bz_iface *const *ifaces, void *data,
				bool announce)
{
	struct bz_object *obj = xnew(struct bz_object);

	obj->bus = bus;
	obj->path = xstrdup(path);
	obj->ifaces = ifaces;
	obj->data = data;
	if (!dbus_connection_register_object_path(bus->conn, path, &vtable, obj)) {
		free(obj->path);
		free(obj);
		return NULL;
	}
	obj->prev = bus->tail;
	if (bus->tail)
		bus->tail->next = obj;
	else
		bus->head = obj;
	bus->tail = obj;
	if (announce)
		emit_added(obj);
	return obj;
}

void bz_object_remove(struct bz_object *obj, bool announce)
{
	struct bz_bus *bus;

	if (!obj)
		return;
	bus = obj->bus;
	if (announce)
		emit_removed(obj);
	for (size_t k = 0; k < bus->n_pending; k++)
		if (bus->pending[k].obj == obj)
			bus->pending[k].obj = NULL;
	dbus_connection_unregister_object_path(bus->conn, obj->path);
	if (obj->prev)
		obj->prev->next = obj->next;
	else
		bus->head = obj->next;
	if (obj->next)
		obj->next->prev = obj->prev;
	else
		bus->tail = obj->prev;
	free(obj->path);
	free(obj);
}

const char *bz_object_path(const struct bz_object *obj)
{
	return obj->path;
}
