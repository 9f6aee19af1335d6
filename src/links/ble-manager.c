/* SPDX-License-Identifier: MIT */
/*
 * The BLE manager: one D-Bus connection to the system (or a private) bus,
 * bluetoothd's presence (NameOwnerChanged), BlueZ's objects (adapters,
 * devices, the SMP characteristic) mirrored from GetManagedObjects and the
 * ObjectManager/Properties signals, discovery filtered on the SMP service,
 * and the per-adapter connection budget (FIFO wait queue; idle links
 * released and busy ones taking turns when others wait).
 * It owns the links (ble-link.c) and routes BlueZ's events to them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "links/ble-internal.h"
#include "util/dbus-loop.h"
#include "util/util.h"

static const char *const match_rules[] = {
	"type='signal',sender='org.freedesktop.DBus',"
	"interface='org.freedesktop.DBus',member='NameOwnerChanged',"
	"arg0='org.bluez'",
	"type='signal',sender='org.bluez',"
	"interface='org.freedesktop.DBus.ObjectManager'",
	"type='signal',sender='org.bluez',"
	"interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
};

/* ---- lookups ---- */

struct ble_dev *ble_mgr_dev_by_addr(struct ble_manager *mgr, const char *addr)
{
	struct ble_dev *dev;

	LIST_FOREACH(dev, &mgr->devs, entry)
		if (dev->address && !strcasecmp(dev->address, addr))
			return dev;
	return NULL;
}

static struct ble_dev *dev_by_path(struct ble_manager *mgr, const char *path)
{
	struct ble_dev *dev;

	LIST_FOREACH(dev, &mgr->devs, entry)
		if (!strcmp(dev->path, path))
			return dev;
	return NULL;
}

/* The device an object (service, characteristic) lives under. */
static struct ble_dev *dev_owning(struct ble_manager *mgr, const char *path)
{
	struct ble_dev *dev;

	LIST_FOREACH(dev, &mgr->devs, entry) {
		size_t n = strlen(dev->path);

		if (!strncmp(path, dev->path, n) && path[n] == '/')
			return dev;
	}
	return NULL;
}

struct ble_adapter *ble_mgr_adapter(struct ble_manager *mgr, const char *path)
{
	struct ble_adapter *ad;

	if (!path)
		return NULL;
	LIST_FOREACH(ad, &mgr->adapters, entry)
		if (!strcmp(ad->path, path))
			return ad;
	return NULL;
}

static struct ble_link *link_by_addr(struct ble_manager *mgr, const char *addr)
{
	struct ble_link *bl;

	LIST_FOREACH(bl, &mgr->links, entry)
		if (!strcasecmp(bl->address, addr))
			return bl;
	return NULL;
}

struct ble_link *ble_mgr_link_by_dev_path(struct ble_manager *mgr,
					  const char *path)
{
	struct ble_dev *dev = path ? dev_by_path(mgr, path) : NULL;

	return dev && dev->address ? link_by_addr(mgr, dev->address) : NULL;
}

unsigned ble_mgr_capacity(const struct ble_manager *mgr,
			  const struct ble_adapter *ad)
{
	unsigned cap = mgr->opts.max_conn_per_adapter;

	if (ad->learned_max && now_usec() - ad->learned_us < BLE_LIMIT_MEMORY_US)
		cap = MIN(cap, ad->learned_max);
	return cap;
}

void ble_mgr_adapter_full(struct ble_manager *mgr, struct ble_adapter *ad)
{
	ad->learned_max = ad->active > 1 ? ad->active - 1 : 1;
	ad->learned_us = now_usec();
}

void ble_mgr_requeue_first(struct ble_manager *mgr, struct ble_link *bl)
{
	bl->phase = BLE_PHASE_QUEUED;
	TAILQ_INSERT_HEAD(&mgr->waitq, bl, qentry);
	ble_mgr_kick(mgr);
}

void ble_mgr_kick(struct ble_manager *mgr)
{
	event_active(mgr->sched_ev, 0, 0);
}

/* ---- devices ---- */

static void dev_report(struct ble_manager *mgr, struct ble_dev *dev)
{
	struct ble_adapter *ad = ble_mgr_adapter(mgr, dev->adapter_path);
	struct ble_device_info info = {
		.address = dev->address,
		.name = dev->name,
		.adapter = ad ? ad->name : NULL,
		.rssi = dev->rssi,
		.rssi_fresh = dev->rssi_new && dev->rssi != 127,
		.connected = dev->connected,
		.mfr_id = dev->mfr_id,
		.mfr_data = dev->mfr_data,
		.mfr_len = dev->mfr_len,
		.svc_data = dev->svc_data,
		.svc_len = dev->svc_len,
	};

	if (dev->smp && dev->address && mgr->cbs.device_seen)
		mgr->cbs.device_seen(mgr, &info, mgr->user_data);
}

static void dev_free(struct ble_dev *dev)
{
	free(dev->path);
	free(dev->address);
	free(dev->name);
	free(dev->adapter_path);
	free(dev->mfr_data);
	free(dev->svc_data);
	free(dev->char_path);
	free(dev);
}

static void read_mfr(struct ble_dev *dev, DBusMessageIter *v)
{
	DBusMessageIter arr, entry, var;
	uint16_t id;

	if (dbus_message_iter_get_arg_type(v) != DBUS_TYPE_ARRAY)
		return;
	dbus_message_iter_recurse(v, &arr);
	if (dbus_message_iter_get_arg_type(&arr) != DBUS_TYPE_DICT_ENTRY)
		return;
	dbus_message_iter_recurse(&arr, &entry);
	if (dbus_message_iter_get_arg_type(&entry) != DBUS_TYPE_UINT16)
		return;
	dbus_message_iter_get_basic(&entry, &id);
	dbus_message_iter_next(&entry);
	if (dbus_message_iter_get_arg_type(&entry) != DBUS_TYPE_VARIANT)
		return;
	dbus_message_iter_recurse(&entry, &var);
	free(dev->mfr_data);
	dev->mfr_data = NULL;
	dev->mfr_len = 0;
	dev->mfr_id = id;
	ble_var_bytes(&var, &dev->mfr_data, &dev->mfr_len);
}

/* ServiceData a{sv}: keep the SMP service's entry, else the first one. */
static void read_svc(struct ble_dev *dev, DBusMessageIter *v)
{
	DBusMessageIter arr, var;
	const char *key;
	bool got = false;

	if (dbus_message_iter_get_arg_type(v) != DBUS_TYPE_ARRAY)
		return;
	dbus_message_iter_recurse(v, &arr);
	while (ble_dict_next(&arr, &key, &var)) {
		bool smp = !strcasecmp(key, SMP_BLE_SERVICE_UUID);

		if (got && !smp)
			continue;
		free(dev->svc_data);
		dev->svc_data = NULL;
		dev->svc_len = 0;
		ble_var_bytes(&var, &dev->svc_data, &dev->svc_len);
		got = true;
		if (smp)
			break;
	}
}

static void set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = xstrdup(src);
}

static void dev_prop(struct ble_dev *dev, const char *key, DBusMessageIter *v)
{
	const char *s;
	int16_t rssi;

	if (!strcmp(key, "Address") && ble_var_str(v, &s))
		set_str(&dev->address, s);
	else if ((!strcmp(key, "Name") || (!strcmp(key, "Alias") && !dev->name)) &&
		 ble_var_str(v, &s))
		set_str(&dev->name, s);
	else if (!strcmp(key, "Adapter") && ble_var_str(v, &s))
		set_str(&dev->adapter_path, s);
	else if (!strcmp(key, "RSSI") &&
		 dbus_message_iter_get_arg_type(v) == DBUS_TYPE_INT16) {
		dbus_message_iter_get_basic(v, &rssi);
		dev->rssi = rssi;
		dev->rssi_new = true;
	} else if (!strcmp(key, "Connected"))
		ble_var_bool(v, &dev->connected);
	else if (!strcmp(key, "ServicesResolved")) {
		ble_var_bool(v, &dev->resolved);
		/* Resolved implies connected: bluetoothd 5.66 sometimes never
		 * signals Connected true (seen in tests/vm). */
		if (dev->resolved)
			dev->connected = true;
	}
	else if (!strcmp(key, "Paired"))
		ble_var_bool(v, &dev->paired);
	else if (!strcmp(key, "UUIDs"))
		dev->smp = dev->smp || ble_var_has_str(v, SMP_BLE_SERVICE_UUID);
	else if (!strcmp(key, "ManufacturerData"))
		read_mfr(dev, v);
	else if (!strcmp(key, "ServiceData"))
		read_svc(dev, v);
}

/* Adapter path from a device path when BlueZ did not say. */
static char *parent_path(const char *path)
{
	const char *slash = strrchr(path, '/');

	return xstrndup(path, slash ? (size_t)(slash - path) : 0);
}

static void dev_update(struct ble_manager *mgr, const char *path,
		       DBusMessageIter *props, bool added)
{
	struct ble_dev *dev = dev_by_path(mgr, path);
	struct ble_link *bl;
	DBusMessageIter var;
	const char *key;

	if (!dev && !added)
		return;
	if (!dev) {
		dev = xnew(struct ble_dev);
		dev->path = xstrdup(path);
		dev->adapter_path = parent_path(path);
		dev->rssi = 127;
		LIST_INSERT_HEAD(&mgr->devs, dev, entry);
	}
	dev->rssi_new = false;
	while (ble_dict_next(props, &key, &var))
		dev_prop(dev, key, &var);
	if (!dev->address)
		return;
	bl = link_by_addr(mgr, dev->address);
	if (bl)
		dev->smp = true; /* the gateway wants it: report it */
	dev_report(mgr, dev);
	/* The callback may have removed the device: look it up again. */
	dev = dev_by_path(mgr, path);
	if (!dev)
		return;
	dev->rssi_new = false;
	/* The callback may have forgotten the link: look it up again. */
	bl = link_by_addr(mgr, dev->address);
	if (bl && dev_by_path(mgr, path) == dev)
		ble_link_dev_changed(bl, dev);
	ble_mgr_kick(mgr);
}

static void dev_invalidate(struct ble_manager *mgr, const char *path,
			   DBusMessageIter *names)
{
	struct ble_dev *dev = dev_by_path(mgr, path);
	const char *s;

	if (!dev || dbus_message_iter_get_arg_type(names) != DBUS_TYPE_ARRAY)
		return;
	DBusMessageIter arr;

	dbus_message_iter_recurse(names, &arr);
	for (; dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRING;
	     dbus_message_iter_next(&arr)) {
		dbus_message_iter_get_basic(&arr, &s);
		if (!strcmp(s, "RSSI"))
			dev->rssi = 127;
	}
}

static void dev_remove(struct ble_manager *mgr, struct ble_dev *dev)
{
	struct ble_link *bl = dev->address ? link_by_addr(mgr, dev->address) : NULL;
	char *addr = dev->address ? xstrdup(dev->address) : NULL;
	bool smp = dev->smp;

	LIST_REMOVE(dev, entry);
	dev_free(dev);
	if (bl)
		ble_link_dev_gone(bl, -ENODEV);
	if (addr && smp && mgr->cbs.device_lost)
		mgr->cbs.device_lost(mgr, addr, mgr->user_data);
	free(addr);
}

/* ---- the SMP characteristic ---- */

static void char_update(struct ble_manager *mgr, const char *path,
			DBusMessageIter *props, bool added)
{
	struct ble_dev *dev = dev_owning(mgr, path);
	struct ble_link *bl;
	DBusMessageIter var;
	const char *key, *s;
	bool smp = dev && dev->char_path && !strcmp(dev->char_path, path);
	uint8_t *val = NULL;
	size_t val_len = 0;
	bool has_val = false;
	uint16_t mtu = 0;

	if (!dev)
		return;
	while (ble_dict_next(props, &key, &var)) {
		if (!strcmp(key, "UUID") && ble_var_str(&var, &s))
			smp = !strcasecmp(s, SMP_BLE_CHAR_UUID);
		else if (!strcmp(key, "MTU") &&
			 dbus_message_iter_get_arg_type(&var) == DBUS_TYPE_UINT16)
			dbus_message_iter_get_basic(&var, &mtu);
		else if (!strcmp(key, "Value") && !added) {
			free(val);
			val = NULL;
			has_val = ble_var_bytes(&var, &val, &val_len);
		}
	}
	if (!smp) {
		free(val);
		return;
	}
	if (!dev->char_path || strcmp(dev->char_path, path))
		set_str(&dev->char_path, path);
	if (mtu)
		dev->char_mtu = mtu;
	bl = dev->address ? link_by_addr(mgr, dev->address) : NULL;
	if (bl && has_val)
		ble_link_char_value(bl, val, val_len);
	else if (bl && added)
		ble_link_dev_changed(bl, dev);
	free(val);
}

static void char_remove(struct ble_manager *mgr, const char *path)
{
	struct ble_dev *dev = dev_owning(mgr, path);

	if (dev && dev->char_path && !strcmp(dev->char_path, path)) {
		free(dev->char_path);
		dev->char_path = NULL;
	}
}

/* ---- adapters and discovery ---- */

static bool adapter_selected(struct ble_manager *mgr, const char *name)
{
	const char *p = mgr->adapters_opt;
	size_t n = strlen(name);

	if (!p || !*p)
		return true;
	while (*p) {
		size_t len = strcspn(p, ", ");

		if (len == n && !strncmp(p, name, n))
			return true;
		p += len;
		p += strspn(p, ", ");
	}
	return false;
}

static void adapter_step(struct ble_adapter *ad);

static void adapter_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	adapter_step(arg);
}

static void adapter_retry(struct ble_adapter *ad)
{
	struct timeval tv = { 5, 0 };

	event_add(ad->retry_ev, &tv);
}

static void adapter_reply(DBusPendingCall *pc, void *data)
{
	struct ble_adapter *ad = data;
	DBusMessage *reply = ble_call_reply(&ad->pc);
	bool err = dbus_message_get_type(reply) == DBUS_MESSAGE_TYPE_ERROR;
	bool in_progress = ble_error_is(reply, "org.bluez.Error.InProgress");
	static const char *const what[] = {
		[BLE_ADAPTER_POWER] = "power on",
		[BLE_ADAPTER_FILTER] = "discovery filter",
		[BLE_ADAPTER_START] = "start discovery",
	};
	struct ble_manager *mgr = ad->mgr;

	if (err && mgr->cbs.adapter_error)
		mgr->cbs.adapter_error(mgr, ad->name, what[ad->step],
				       ble_error_errno(reply), mgr->user_data);
	dbus_message_unref(reply);
	switch (ad->step) {
	case BLE_ADAPTER_POWER:
		if (!err)
			ad->powered = true;
		break;
	case BLE_ADAPTER_FILTER:
		/* Without a filter discovery still works: devices are then
		 * filtered on their UUIDs here. */
		ad->filter_set = true;
		break;
	case BLE_ADAPTER_START:
		/* InProgress proves no session: bluetoothd (5.66) also
		 * answers it when the kernel refused to start discovery
		 * (MGMT busy/failed, e.g. an HCI timeout under load) and then
		 * drops the session. Only the Discovering property counts;
		 * until it shows, ask again after the retry delay. */
		if (!err)
			ad->discovering = true;
		else if (in_progress)
			in_progress = false;
		break;
	}
	if (err && !in_progress && ad->step != BLE_ADAPTER_FILTER) {
		adapter_retry(ad);
		return;
	}
	adapter_step(ad);
}

static DBusMessage *msg_power_on(struct ble_adapter *ad)
{
	DBusMessage *m = ble_method(ad->path, DBUS_PROPS, "Set");
	const char *iface = BLUEZ_ADAPTER, *name = "Powered";
	dbus_bool_t on = TRUE;
	DBusMessageIter it, var;

	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &iface);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &name);
	dbus_message_iter_open_container(&it, DBUS_TYPE_VARIANT, "b", &var);
	dbus_message_iter_append_basic(&var, DBUS_TYPE_BOOLEAN, &on);
	dbus_message_iter_close_container(&it, &var);
	return m;
}

static void dict_entry(DBusMessageIter *dict, const char *key, int type,
		       const char *sig, const void *val)
{
	DBusMessageIter e, v, arr;

	dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &v);
	if (type == DBUS_TYPE_ARRAY) {
		dbus_message_iter_open_container(&v, DBUS_TYPE_ARRAY, "s", &arr);
		dbus_message_iter_append_basic(&arr, DBUS_TYPE_STRING, val);
		dbus_message_iter_close_container(&v, &arr);
	} else {
		dbus_message_iter_append_basic(&v, type, val);
	}
	dbus_message_iter_close_container(&e, &v);
	dbus_message_iter_close_container(dict, &e);
}

static DBusMessage *msg_filter(struct ble_adapter *ad)
{
	DBusMessage *m = ble_method(ad->path, BLUEZ_ADAPTER, "SetDiscoveryFilter");
	const char *uuid = SMP_BLE_SERVICE_UUID, *transport = "le";
	/* DuplicateData on: with a filter set, bluetoothd then reports every
	 * advertisement (an RSSI change with threshold 0), which is how
	 * last_seen and RSSI follow a watch that keeps advertising. The
	 * daemon keeps that in memory and writes its store at most once a
	 * minute per watch (registry.h); a watch advertising every second is
	 * one small D-Bus signal a second. */
	dbus_bool_t dup = TRUE;
	DBusMessageIter it, dict;

	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	dict_entry(&dict, "UUIDs", DBUS_TYPE_ARRAY, "as", &uuid);
	dict_entry(&dict, "Transport", DBUS_TYPE_STRING, "s", &transport);
	dict_entry(&dict, "DuplicateData", DBUS_TYPE_BOOLEAN, "b", &dup);
	dbus_message_iter_close_container(&it, &dict);
	return m;
}

/*
 * One step towards "powered and discovering": power on, then set the
 * filter, then start discovery. Each reply calls this again; property
 * changes (Powered, Discovering) call it too.
 */
static void adapter_step(struct ble_adapter *ad)
{
	struct ble_manager *mgr = ad->mgr;
	DBusMessage *m;

	if (!ad->selected || ad->pc || !mgr->owner ||
	    event_pending(ad->retry_ev, EV_TIMEOUT, NULL) ||
	    (ad->powered && ad->filter_set && ad->discovering))
		return;
	if (!ad->powered) {
		ad->step = BLE_ADAPTER_POWER;
		m = msg_power_on(ad);
	} else if (!ad->filter_set) {
		ad->step = BLE_ADAPTER_FILTER;
		m = msg_filter(ad);
	} else {
		ad->step = BLE_ADAPTER_START;
		m = ble_method(ad->path, BLUEZ_ADAPTER, "StartDiscovery");
	}
	ad->pc = ble_call(mgr, m, BLE_CALL_TIMEOUT_MS, adapter_reply, ad);
}

static void adapter_prop(struct ble_adapter *ad, const char *key,
			 DBusMessageIter *v)
{
	if (!strcmp(key, "Powered")) {
		ble_var_bool(v, &ad->powered);
		/* Powering off ends BlueZ's discovery sessions, filters too. */
		if (!ad->powered)
			ad->filter_set = ad->discovering = false;
	}
	else if (!strcmp(key, "Discovering"))
		ble_var_bool(v, &ad->discovering);
}

static void adapter_update(struct ble_manager *mgr, const char *path,
			   DBusMessageIter *props, bool added)
{
	struct ble_adapter *ad = ble_mgr_adapter(mgr, path);
	DBusMessageIter var;
	const char *key, *slash;

	if (!ad && !added)
		return;
	if (!ad) {
		ad = xnew(struct ble_adapter);
		ad->mgr = mgr;
		ad->path = xstrdup(path);
		slash = strrchr(ad->path, '/');
		ad->name = slash ? slash + 1 : ad->path;
		ad->selected = adapter_selected(mgr, ad->name);
		ad->retry_ev = evtimer_new(mgr->base, adapter_retry_cb, ad);
		LIST_INSERT_HEAD(&mgr->adapters, ad, entry);
	}
	while (ble_dict_next(props, &key, &var))
		adapter_prop(ad, key, &var);
	adapter_step(ad);
	ble_mgr_kick(mgr);
}

static void adapter_free(struct ble_adapter *ad)
{
	ble_call_cancel(&ad->pc);
	event_free(ad->retry_ev);
	free(ad->path);
	free(ad);
}

/*
 * Calls fn on every link that matches (ad NULL: all), robust against the
 * gateway forgetting links from inside the state callbacks fn triggers.
 */
static void links_each(struct ble_manager *mgr, struct ble_adapter *ad,
		       void (*fn)(struct ble_link *bl))
{
	struct ble_link *bl;
	bool again = true;

	LIST_FOREACH(bl, &mgr->links, entry)
		bl->mark = !ad || bl->slot == ad;
	while (again) {
		again = false;
		LIST_FOREACH(bl, &mgr->links, entry) {
			if (bl->mark) {
				bl->mark = false;
				fn(bl);
				again = true;
				break;
			}
		}
	}
}

static void link_adapter_gone(struct ble_link *bl)
{
	ble_link_dev_gone(bl, -ENODEV);
}

static void adapter_remove(struct ble_manager *mgr, struct ble_adapter *ad)
{
	links_each(mgr, ad, link_adapter_gone);
	LIST_REMOVE(ad, entry);
	adapter_free(ad);
}

/* ---- objects: GetManagedObjects, InterfacesAdded/Removed ---- */

#define KIND_ADAPTER 1u
#define KIND_DEVICE 2u
#define KIND_CHAR 4u

static void object_iface(struct ble_manager *mgr, const char *path,
			 const char *iface, DBusMessageIter *props, bool added,
			 unsigned kind)
{
	if (kind == KIND_ADAPTER && !strcmp(iface, BLUEZ_ADAPTER))
		adapter_update(mgr, path, props, added);
	else if (kind == KIND_DEVICE && !strcmp(iface, BLUEZ_DEVICE))
		dev_update(mgr, path, props, added);
	else if (kind == KIND_CHAR && !strcmp(iface, BLUEZ_CHAR))
		char_update(mgr, path, props, added);
}

/* ifaces: a{sa{sv}}. Adapters before devices before characteristics:
 * each refers to the one before. */
static void object_ifaces(struct ble_manager *mgr, const char *path,
			  const DBusMessageIter *ifaces, bool added,
			  unsigned mask)
{
	DBusMessageIter it, entry, props;
	const char *iface;

	for (unsigned kind = 1; kind <= KIND_CHAR; kind <<= 1) {
		if (!(mask & kind))
			continue;
		for (it = *ifaces;
		     dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_DICT_ENTRY;
		     dbus_message_iter_next(&it)) {
			dbus_message_iter_recurse(&it, &entry);
			if (dbus_message_iter_get_arg_type(&entry) != DBUS_TYPE_STRING)
				continue;
			dbus_message_iter_get_basic(&entry, &iface);
			dbus_message_iter_next(&entry);
			if (dbus_message_iter_get_arg_type(&entry) != DBUS_TYPE_ARRAY)
				continue;
			dbus_message_iter_recurse(&entry, &props);
			object_iface(mgr, path, iface, &props, added, kind);
		}
	}
}

static void objects_parse(struct ble_manager *mgr, DBusMessage *reply)
{
	DBusMessageIter it, objs, entry, ifaces;
	const char *path;

	dbus_message_iter_init(reply, &it);
	for (unsigned kind = 1; kind <= KIND_CHAR; kind <<= 1) {
		dbus_message_iter_recurse(&it, &objs);
		for (; dbus_message_iter_get_arg_type(&objs) == DBUS_TYPE_DICT_ENTRY;
		     dbus_message_iter_next(&objs)) {
			dbus_message_iter_recurse(&objs, &entry);
			dbus_message_iter_get_basic(&entry, &path);
			dbus_message_iter_next(&entry);
			dbus_message_iter_recurse(&entry, &ifaces);
			object_ifaces(mgr, path, &ifaces, true, kind);
		}
	}
}

static void get_objects(struct ble_manager *mgr);

static void objects_reply(DBusPendingCall *pc, void *data)
{
	struct ble_manager *mgr = data;
	DBusMessage *reply = ble_call_reply(&mgr->objects_pc);
	bool good = dbus_message_get_type(reply) == DBUS_MESSAGE_TYPE_METHOD_RETURN &&
		    dbus_message_has_signature(reply, "a{oa{sa{sv}}}");

	if (good)
		objects_parse(mgr, reply);
	dbus_message_unref(reply);
	if (!good) /* bluetoothd busy starting up: ask again shortly */
		event_add(mgr->objects_ev, &(struct timeval){ 2, 0 });
	ble_mgr_kick(mgr);
}

static void objects_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	get_objects(arg);
}

static void get_objects(struct ble_manager *mgr)
{
	DBusMessage *m;

	if (!mgr->owner || mgr->objects_pc)
		return;
	m = dbus_message_new_method_call(BLUEZ_SERVICE, "/", DBUS_OM,
					 "GetManagedObjects");
	mgr->objects_pc = ble_call(mgr, m, BLE_CALL_TIMEOUT_MS, objects_reply,
				   mgr);
}

static void ifaces_removed(struct ble_manager *mgr, const char *path,
			   DBusMessageIter *names)
{
	const char *iface;
	struct ble_dev *dev;
	struct ble_adapter *ad;

	for (; dbus_message_iter_get_arg_type(names) == DBUS_TYPE_STRING;
	     dbus_message_iter_next(names)) {
		dbus_message_iter_get_basic(names, &iface);
		if (!strcmp(iface, BLUEZ_DEVICE) && (dev = dev_by_path(mgr, path)))
			dev_remove(mgr, dev);
		else if (!strcmp(iface, BLUEZ_CHAR))
			char_remove(mgr, path);
		else if (!strcmp(iface, BLUEZ_ADAPTER) &&
			 (ad = ble_mgr_adapter(mgr, path)))
			adapter_remove(mgr, ad);
	}
}

/* ---- bluetoothd presence ---- */

static void bluez_down(struct ble_manager *mgr)
{
	struct ble_dev *dev;
	struct ble_adapter *ad;
	bool was_up = mgr->owner != NULL;

	free(mgr->owner);
	mgr->owner = NULL;
	mgr->agent_registered = false;
	ble_call_cancel(&mgr->objects_pc);
	event_del(mgr->objects_ev);
	ble_call_cancel(&mgr->agent_pc);
	links_each(mgr, NULL, ble_link_service_lost);
	/* Devices are kept by the gateway (no device_lost): their object
	 * paths die with bluetoothd, and come back with it. */
	while ((dev = LIST_FIRST(&mgr->devs))) {
		LIST_REMOVE(dev, entry);
		dev_free(dev);
	}
	while ((ad = LIST_FIRST(&mgr->adapters))) {
		LIST_REMOVE(ad, entry);
		adapter_free(ad);
	}
	if (was_up && mgr->cbs.service)
		mgr->cbs.service(mgr, false, mgr->user_data);
}

static void bluez_up(struct ble_manager *mgr, const char *owner)
{
	if (mgr->owner)
		bluez_down(mgr);
	mgr->owner = xstrdup(owner);
	get_objects(mgr);
	ble_agent_register(mgr);
	if (mgr->cbs.service)
		mgr->cbs.service(mgr, true, mgr->user_data);
}

static void owner_reply(DBusPendingCall *pc, void *data)
{
	struct ble_manager *mgr = data;
	DBusMessage *reply = ble_call_reply(&mgr->owner_pc);
	const char *owner = NULL;

	if (dbus_message_get_args(reply, NULL, DBUS_TYPE_STRING, &owner,
				  DBUS_TYPE_INVALID) && owner && *owner &&
	    !mgr->owner)
		bluez_up(mgr, owner);
	dbus_message_unref(reply);
}

static void name_owner_changed(struct ble_manager *mgr, DBusMessage *msg)
{
	const char *name, *old, *new;

	if (!dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &name,
				   DBUS_TYPE_STRING, &old, DBUS_TYPE_STRING,
				   &new, DBUS_TYPE_INVALID) ||
	    strcmp(name, BLUEZ_SERVICE))
		return;
	/* A GetNameOwner still in flight is superseded by this signal. */
	ble_call_cancel(&mgr->owner_pc);
	if (*new)
		bluez_up(mgr, new);
	else
		bluez_down(mgr);
}

/* ---- signals ---- */

static void props_changed(struct ble_manager *mgr, DBusMessage *msg)
{
	DBusMessageIter it, props;
	const char *iface, *path = dbus_message_get_path(msg);

	if (!path || !dbus_message_has_signature(msg, "sa{sv}as"))
		return;
	dbus_message_iter_init(msg, &it);
	dbus_message_iter_get_basic(&it, &iface);
	dbus_message_iter_next(&it);
	dbus_message_iter_recurse(&it, &props);
	if (!strcmp(iface, BLUEZ_DEVICE)) {
		DBusMessageIter inval = it;

		dbus_message_iter_next(&inval);
		dev_invalidate(mgr, path, &inval);
		dev_update(mgr, path, &props, false);
	} else if (!strcmp(iface, BLUEZ_CHAR)) {
		char_update(mgr, path, &props, false);
	} else if (!strcmp(iface, BLUEZ_ADAPTER)) {
		adapter_update(mgr, path, &props, false);
	}
}

static void om_signal(struct ble_manager *mgr, DBusMessage *msg)
{
	DBusMessageIter it, sub;
	const char *path;

	if (dbus_message_is_signal(msg, DBUS_OM, "InterfacesAdded") &&
	    dbus_message_has_signature(msg, "oa{sa{sv}}")) {
		dbus_message_iter_init(msg, &it);
		dbus_message_iter_get_basic(&it, &path);
		dbus_message_iter_next(&it);
		dbus_message_iter_recurse(&it, &sub);
		object_ifaces(mgr, path, &sub, true,
			      KIND_ADAPTER | KIND_DEVICE | KIND_CHAR);
	} else if (dbus_message_is_signal(msg, DBUS_OM, "InterfacesRemoved") &&
		   dbus_message_has_signature(msg, "oas")) {
		dbus_message_iter_init(msg, &it);
		dbus_message_iter_get_basic(&it, &path);
		dbus_message_iter_next(&it);
		dbus_message_iter_recurse(&it, &sub);
		ifaces_removed(mgr, path, &sub);
	}
}

static DBusHandlerResult filter(DBusConnection *conn, DBusMessage *msg,
				void *data)
{
	struct ble_manager *mgr = data;
	const char *sender = dbus_message_get_sender(msg);

	if (dbus_message_get_type(msg) != DBUS_MESSAGE_TYPE_SIGNAL)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	if (dbus_message_is_signal(msg, DBUS_INTERFACE_LOCAL, "Disconnected")) {
		/* Our own connection closed: the bus daemon itself went
		 * away, not only bluetoothd. The owner tells reconnects. */
		bluez_down(mgr);
		if (mgr->cbs.bus_lost)
			mgr->cbs.bus_lost(mgr, mgr->user_data);
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	}
	if (dbus_message_is_signal(msg, DBUS_INTERFACE_DBUS, "NameOwnerChanged")) {
		name_owner_changed(mgr, msg);
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	}
	/* Only bluetoothd's own signals (the match rules ask for those, but
	 * other filters on this connection may let more through). */
	if (!mgr->owner || !sender || strcmp(sender, mgr->owner))
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	if (dbus_message_is_signal(msg, DBUS_PROPS, "PropertiesChanged"))
		props_changed(mgr, msg);
	else
		om_signal(mgr, msg);
	return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

/* ---- connection budget ---- */

/* Links on ad on their way out: disconnecting, or asked to yield. */
static unsigned leaving_on(struct ble_manager *mgr, struct ble_adapter *ad)
{
	struct ble_link *bl;
	unsigned n = 0;

	LIST_FOREACH(bl, &mgr->links, entry)
		if (bl->slot == ad &&
		    (bl->phase == BLE_PHASE_DISCONNECTING || bl->yield))
			n++;
	return n;
}

/*
 * The link on ad that should give its slot to a waiter: an unused link
 * quiet for the idle time (the quietest first), else a link in use whose
 * time slice is over (the longest connected first). Held links never.
 */
static struct ble_link *victim_on(struct ble_manager *mgr, struct ble_adapter *ad,
				  enum ble_release *kind)
{
	uint64_t now = now_usec(), idle = mgr->opts.idle_timeout_ms * 1000ULL;
	uint64_t slice = mgr->opts.time_slice_ms * 1000ULL;
	struct ble_link *bl, *idlest = NULL, *oldest = NULL;

	LIST_FOREACH(bl, &mgr->links, entry) {
		if (bl->slot != ad)
			continue;
		switch (ble_link_releasable(bl, now, idle, slice)) {
		case BLE_RELEASE_IDLE:
			if (!idlest || bl->last_activity_us < idlest->last_activity_us)
				idlest = bl;
			break;
		case BLE_RELEASE_SLICE:
			if (!oldest || bl->up_us < oldest->up_us)
				oldest = bl;
			break;
		case BLE_RELEASE_NO:
			break;
		}
	}
	*kind = idlest ? BLE_RELEASE_IDLE : BLE_RELEASE_SLICE;
	return idlest ? idlest : oldest;
}

/* Fewer waiters than links asked to yield on ad (a waiter got a slot
 * elsewhere, or went away): those links keep their slot. */
static void unyield_on(struct ble_manager *mgr, struct ble_adapter *ad)
{
	unsigned leaving = leaving_on(mgr, ad);
	struct ble_link *bl;

	LIST_FOREACH(bl, &mgr->links, entry) {
		if (leaving <= ad->waiting)
			return;
		if (bl->slot == ad && bl->yield) {
			bl->yield = false;
			leaving--;
		}
	}
}

/* A link that yields leaves once its last request was answered. */
static bool sched_yielded(struct ble_manager *mgr)
{
	struct ble_link *bl;

	LIST_FOREACH(bl, &mgr->links, entry) {
		if (bl->yield && ble_link_between_requests(bl)) {
			ble_link_evict(bl);
			return true;
		}
	}
	return false;
}

/* Oldest waiter first: a free slot on its adapter. Counts the waiters
 * of full adapters in ad->waiting. */
static bool sched_grant(struct ble_manager *mgr)
{
	struct ble_adapter *ad;
	struct ble_link *bl;
	struct ble_dev *dev;

	LIST_FOREACH(ad, &mgr->adapters, entry)
		ad->waiting = 0;
	TAILQ_FOREACH(bl, &mgr->waitq, qentry) {
		dev = ble_mgr_dev_by_addr(mgr, bl->address);
		ad = dev ? ble_mgr_adapter(mgr, dev->adapter_path) : NULL;
		if (!ad || !ad->selected)
			continue;
		if (ad->active < ble_mgr_capacity(mgr, ad)) {
			TAILQ_REMOVE(&mgr->waitq, bl, qentry);
			ble_link_start(bl, ad);
			return true;
		}
		ad->waiting++;
	}
	return false;
}

/* Full adapters with waiters: one link more on its way out per waiter. */
static bool sched_make_room(struct ble_manager *mgr)
{
	struct ble_adapter *ad;
	struct ble_link *victim;
	enum ble_release kind;

	LIST_FOREACH(ad, &mgr->adapters, entry) {
		unyield_on(mgr, ad);
		/* Bounded: each pass parks a link or marks one more. */
		while (ad->waiting && leaving_on(mgr, ad) < ad->waiting &&
		       (victim = victim_on(mgr, ad, &kind))) {
			if (kind == BLE_RELEASE_IDLE ||
			    ble_link_between_requests(victim)) {
				ble_link_evict(victim);
				return true;
			}
			/* Busy: no new request goes out; it leaves once
			 * answered (ble_link_set_use). */
			victim->yield = true;
		}
	}
	return false;
}

/*
 * The budget's scheduler: hands free slots to waiting links, oldest waiter
 * first, and makes room on full adapters (docs/ble.md). At most one
 * connect or disconnect per run (the callbacks it triggers may change the
 * lists); it re-arms itself while there is work.
 */
static void sched_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ble_manager *mgr = arg;

	if (!mgr->owner)
		return;
	if (sched_yielded(mgr) || sched_grant(mgr) || sched_make_room(mgr))
		ble_mgr_kick(mgr);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ble_manager *mgr = arg;

	if (!TAILQ_EMPTY(&mgr->waitq))
		ble_mgr_kick(mgr);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ble_manager *mgr = arg;
	struct ble_link *bl;

	while ((bl = LIST_FIRST(&mgr->graveyard))) {
		LIST_REMOVE(bl, entry);
		link_free(bl->link);
	}
}

/* ---- public API ---- */

static void opts_defaults(struct ble_manager *mgr, const struct ble_manager_opts *o)
{
	struct ble_manager_opts *d = &mgr->opts;

	if (o)
		*d = *o;
	else
		d->prefer_acquire = true;
	/* Borrowed: a copy is kept for reconnects. */
	mgr->bus_address_opt = d->bus_address ? xstrdup(d->bus_address) : NULL;
	d->bus_address = NULL;
	mgr->adapters_opt = d->adapters ? xstrdup(d->adapters) : NULL;
	d->adapters = mgr->adapters_opt;
	if (!d->max_conn_per_adapter)
		d->max_conn_per_adapter = 7;
	if (!d->idle_timeout_ms)
		d->idle_timeout_ms = 2000;
	if (!d->time_slice_ms)
		d->time_slice_ms = 5000;
	if (!d->connect_timeout_ms)
		d->connect_timeout_ms = 10000;
	if (!d->backoff_min_ms)
		d->backoff_min_ms = 500;
	if (!d->backoff_max_ms)
		d->backoff_max_ms = 60000;
	if (d->backoff_max_ms < d->backoff_min_ms)
		d->backoff_max_ms = d->backoff_min_ms;
}

static int bus_setup(struct ble_manager *mgr, const char *address)
{
	DBusError derr;
	DBusMessage *m;
	const char *name = BLUEZ_SERVICE;

	dbus_error_init(&derr);
	mgr->conn = dbus_loop_connect(address, &derr);
	if (!mgr->conn) {
		dbus_error_free(&derr);
		return -ECONNREFUSED;
	}
	mgr->loop = dbus_loop_attach(mgr->base, mgr->conn);
	if (!dbus_connection_add_filter(mgr->conn, filter, mgr, NULL))
		return -ENOMEM;
	/* No error argument: libdbus then sends without waiting. */
	for (size_t i = 0; i < ARRAY_SIZE(match_rules); i++)
		dbus_bus_add_match(mgr->conn, match_rules[i], NULL);
	if (ble_agent_export(mgr) < 0)
		return -ENOMEM;
	m = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS,
					 DBUS_INTERFACE_DBUS, "GetNameOwner");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &name, DBUS_TYPE_INVALID);
	mgr->owner_pc = ble_call(mgr, m, BLE_CALL_TIMEOUT_MS, owner_reply, mgr);
	return mgr->owner_pc ? 0 : -ECONNRESET;
}

/* Drops the connection (the D-Bus side of ble_manager_free()). */
static void bus_teardown(struct ble_manager *mgr)
{
	ble_call_cancel(&mgr->owner_pc);
	if (!mgr->conn)
		return;
	ble_agent_unexport(mgr);
	dbus_connection_remove_filter(mgr->conn, filter, mgr);
	dbus_connection_flush(mgr->conn);
	mgr->loop = dbus_loop_detach(mgr->loop);
	dbus_connection_close(mgr->conn);
	dbus_connection_unref(mgr->conn);
	mgr->conn = NULL;
}

int ble_manager_reconnect(struct ble_manager *mgr)
{
	if (mgr->conn && dbus_connection_get_is_connected(mgr->conn))
		return 0;
	bluez_down(mgr);
	bus_teardown(mgr);
	return bus_setup(mgr, mgr->bus_address_opt);
}

struct ble_manager *ble_manager_new(struct event_base *base,
				    const struct ble_manager_opts *opts,
				    const struct ble_manager_callbacks *cbs,
				    void *user_data, int *err)
{
	struct ble_manager *mgr = xnew(struct ble_manager);
	int r;

	mgr->base = base;
	opts_defaults(mgr, opts);
	if (cbs)
		mgr->cbs = *cbs;
	mgr->user_data = user_data;
	LIST_INIT(&mgr->adapters);
	LIST_INIT(&mgr->devs);
	LIST_INIT(&mgr->links);
	LIST_INIT(&mgr->graveyard);
	TAILQ_INIT(&mgr->waitq);
	mgr->sched_ev = event_new(base, -1, 0, sched_cb, mgr);
	mgr->reap_ev = event_new(base, -1, 0, reap_cb, mgr);
	mgr->objects_ev = evtimer_new(base, objects_retry_cb, mgr);
	mgr->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, mgr);
	/* While links wait: idle times and time slices run out. */
	event_add(mgr->tick_ev, &(struct timeval){ 0, 250000 });
	r = bus_setup(mgr, mgr->bus_address_opt);
	if (r < 0) {
		ble_manager_free(mgr);
		if (err)
			*err = r;
		return NULL;
	}
	return mgr;
}

struct ble_manager *ble_manager_free(struct ble_manager *mgr)
{
	struct ble_link *bl;

	if (!mgr)
		return NULL;
	while ((bl = LIST_FIRST(&mgr->links))) {
		LIST_REMOVE(bl, entry);
		ble_link_shutdown(bl);
		link_free(bl->link);
	}
	reap_cb(-1, 0, mgr);
	mgr->cbs = (struct ble_manager_callbacks){ 0 };
	ble_call_cancel(&mgr->owner_pc);
	if (mgr->conn)
		ble_agent_unexport(mgr);
	bluez_down(mgr);
	bus_teardown(mgr);
	event_free(mgr->sched_ev);
	event_free(mgr->reap_ev);
	event_free(mgr->objects_ev);
	event_free(mgr->tick_ev);
	free(mgr->adapters_opt);
	free(mgr->bus_address_opt);
	free(mgr);
	return NULL;
}

struct link *ble_manager_link(struct ble_manager *mgr, const char *address)
{
	struct ble_link *bl = link_by_addr(mgr, address);

	if (!bl) {
		bl = ble_link_create(mgr, address);
		LIST_INSERT_HEAD(&mgr->links, bl, entry);
	}
	return bl->link;
}

static bool unowned(struct ble_manager *mgr, const struct ble_dev *dev)
{
	struct ble_adapter *ad = ble_mgr_adapter(mgr, dev->adapter_path);

	return dev->connected && dev->address && ad && ad->selected &&
	       !link_by_addr(mgr, dev->address);
}

void ble_manager_foreach_unowned(struct ble_manager *mgr,
				 void (*cb)(const struct ble_device_info *info, void *user_data),
				 void *user_data)
{
	struct ble_dev *dev;
	size_t n = 0, i = 0;
	char **addrs;

	LIST_FOREACH(dev, &mgr->devs, entry)
		n += unowned(mgr, dev);
	if (!n)
		return;
	/* Addresses first: the callback may disconnect (or the list change). */
	addrs = xcalloc(n, sizeof(*addrs));
	LIST_FOREACH(dev, &mgr->devs, entry)
		if (i < n && unowned(mgr, dev))
			addrs[i++] = xstrdup(dev->address);
	for (i = 0; i < n; i++) {
		LIST_FOREACH(dev, &mgr->devs, entry)
			if (dev->address && !strcasecmp(dev->address, addrs[i]))
				break;
		if (dev && unowned(mgr, dev)) {
			struct ble_adapter *ad = ble_mgr_adapter(mgr, dev->adapter_path);
			struct ble_device_info info = {
				.address = dev->address, .name = dev->name,
				.adapter = ad ? ad->name : NULL, .rssi = dev->rssi,
				.connected = true,
			};

			cb(&info, user_data);
		}
		free(addrs[i]);
	}
	free(addrs);
}

int ble_manager_disconnect(struct ble_manager *mgr, const char *address)
{
	struct ble_dev *dev;
	DBusMessage *m;

	LIST_FOREACH(dev, &mgr->devs, entry)
		if (dev->address && !strcasecmp(dev->address, address) && dev->connected)
			break;
	if (!dev)
		return -ENOENT;
	if (link_by_addr(mgr, address))
		return -EBUSY;
	if (!mgr->owner || !mgr->conn)
		return -ENOTCONN;
	m = ble_method(dev->path, BLUEZ_DEVICE, "Disconnect");
	dbus_message_set_no_reply(m, TRUE);
	dbus_connection_send(mgr->conn, m, NULL);
	dbus_message_unref(m);
	return 0;
}

void ble_manager_forget(struct ble_manager *mgr, const char *address)
{
	struct ble_link *bl = link_by_addr(mgr, address);

	if (!bl)
		return;
	LIST_REMOVE(bl, entry);
	ble_link_shutdown(bl);
	/* Freed from the loop: the caller may be inside this link's callback. */
	LIST_INSERT_HEAD(&mgr->graveyard, bl, entry);
	event_active(mgr->reap_ev, 0, 0);
}
