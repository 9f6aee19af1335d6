/* SPDX-License-Identifier: MIT */
/*
 * The fake org.bluez, top level: bus name, "/" (ObjectManager), /org/bluez
 * (AgentManager1), one Adapter1 per simulated adapter with per-client
 * discovery sessions and filters, and the clients' lifetimes
 * (NameOwnerChanged). Devices and GATT live in bluez-device.c and
 * bluez-link.c. Behaviour follows BlueZ 5.66 (src/adapter.c, src/agent.c).
 */
#include "bluez-int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "device.h"
#include "fleet.h"
#include "util/dbus-loop.h"
#include "util/util.h"

#define SCAN_FIRST_MS 10
#define SCAN_PERIOD_MS 1000
#define ADAPTER_REGISTER_MS 20 /* name owned -> adapters (mgmt index list) */

/* ---- fleet glue ------------------------------------------------------------ */

/* The fleet's adapter a is on this bus: its own, or one without a bus (each
 * bus has its copy). A plain --bus (no name) has every adapter. */
static bool adapter_here(const struct sim_bluez *bz, unsigned a)
{
	const char *b = sim_fleet_adapter_bus(bz->fleet, a);

	return !b || !bz->name || !strcmp(b, bz->name);
}

/* ---- adapter properties ----------------------------------------------------- */

static void put_str(DBusMessageIter *it, const char *s)
{
	dbus_message_iter_append_basic(it, DBUS_TYPE_STRING, &s);
}

static void put_bool(DBusMessageIter *it, bool v)
{
	dbus_bool_t b = v;

	dbus_message_iter_append_basic(it, DBUS_TYPE_BOOLEAN, &b);
}

static void put_u32(DBusMessageIter *it, uint32_t v)
{
	dbus_message_iter_append_basic(it, DBUS_TYPE_UINT32, &v);
}

static void put_strv(DBusMessageIter *it, const char *const *v)
{
	DBusMessageIter a;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "s", &a);
	for (; v && *v; v++)
		dbus_message_iter_append_basic(&a, DBUS_TYPE_STRING, v);
	dbus_message_iter_close_container(it, &a);
}

static void ad_address(void *data, DBusMessageIter *it) { put_str(it, ((struct bz_adapter *)data)->address); }
static void ad_address_type(void *data, DBusMessageIter *it) { put_str(it, "public"); }
static void ad_name(void *data, DBusMessageIter *it) { put_str(it, "BlueZ 5.66"); }
static void ad_alias(void *data, DBusMessageIter *it) { put_str(it, ((struct bz_adapter *)data)->alias); }
static void ad_class(void *data, DBusMessageIter *it) { put_u32(it, 0); }
static void ad_powered(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_adapter *)data)->powered); }
static void ad_discoverable(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_adapter *)data)->discoverable); }
static void ad_disc_timeout(void *data, DBusMessageIter *it) { put_u32(it, ((struct bz_adapter *)data)->discoverable_timeout); }
static void ad_pairable(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_adapter *)data)->pairable); }
static void ad_pair_timeout(void *data, DBusMessageIter *it) { put_u32(it, ((struct bz_adapter *)data)->pairable_timeout); }
static void ad_discovering(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_adapter *)data)->discovering); }
static void ad_modalias(void *data, DBusMessageIter *it) { put_str(it, "usb:v1D6Bp0246d0542"); }

static void ad_uuids(void *data, DBusMessageIter *it)
{
	static const char *const uuids[] = {
		"00001801-0000-1000-8000-00805f9b34fb", "00001800-0000-1000-8000-00805f9b34fb",
		"00001200-0000-1000-8000-00805f9b34fb", "0000110c-0000-1000-8000-00805f9b34fb",
		"0000110e-0000-1000-8000-00805f9b34fb", "0000180a-0000-1000-8000-00805f9b34fb",
		NULL,
	};

	put_strv(it, uuids);
}

static void ad_roles(void *data, DBusMessageIter *it)
{
	static const char *const roles[] = { "central", "peripheral", NULL };

	put_strv(it, roles);
}

static bool never(void *data) { return false; }
static void empty_strv(void *data, DBusMessageIter *it) { put_strv(it, NULL); }

static void adapter_changed(struct bz_adapter *ad, const char *prop)
{
	if (ad->obj)
		bz_prop_changed(ad->obj, "org.bluez.Adapter1", prop);
}

static DBusMessage *set_alias(void *data, DBusMessageIter *v, DBusMessage *msg)
{
	struct bz_adapter *ad = data;
	const char *s;

	dbus_message_iter_get_basic(v, &s);
	free(ad->alias);
	ad->alias = xstrdup(*s ? s : "BlueZ 5.66");
	adapter_changed(ad, "Alias");
	return NULL;
}

static void stop_discovering(struct bz_adapter *ad);

/* Powering off drops every link and every discovery session. */
static void power_off(struct bz_adapter *ad)
{
	for (size_t i = 0; i < ad->bz->n_devs; i++)
		if (ad->bz->devs[i].ad == ad)
			bz_dev_link_lost(&ad->bz->devs[i]);
	stop_discovering(ad);
}

static DBusMessage *set_powered(void *data, DBusMessageIter *v, DBusMessage *msg)
{
	struct bz_adapter *ad = data;
	dbus_bool_t b;

	dbus_message_iter_get_basic(v, &b);
	if (ad->powered == !!b)
		return NULL;
	if (!b)
		power_off(ad);
	ad->powered = b;
	adapter_changed(ad, "Powered");
	return NULL;
}

#define BOOL_SETTER(fn, field, prop)                                                 \
	static DBusMessage *fn(void *data, DBusMessageIter *v, DBusMessage *msg)     \
	{                                                                            \
		struct bz_adapter *ad = data;                                        \
		dbus_bool_t b;                                                       \
		dbus_message_iter_get_basic(v, &b);                                  \
		if (ad->field != !!b) {                                              \
			ad->field = b;                                               \
			adapter_changed(ad, prop);                                   \
		}                                                                    \
		return NULL;                                                         \
	}
#define U32_SETTER(fn, field, prop)                                                  \
	static DBusMessage *fn(void *data, DBusMessageIter *v, DBusMessage *msg)     \
	{                                                                            \
		struct bz_adapter *ad = data;                                        \
		dbus_uint32_t u;                                                     \
		dbus_message_iter_get_basic(v, &u);                                  \
		if (ad->field != u) {                                                \
			ad->field = u;                                               \
			adapter_changed(ad, prop);                                   \
		}                                                                    \
		return NULL;                                                         \
	}
BOOL_SETTER(set_discoverable, discoverable, "Discoverable")
BOOL_SETTER(set_pairable, pairable, "Pairable")
U32_SETTER(set_disc_timeout, discoverable_timeout, "DiscoverableTimeout")
U32_SETTER(set_pair_timeout, pairable_timeout, "PairableTimeout")

/* ---- discovery ------------------------------------------------------------------ */

static struct bz_session *session_find(struct bz_adapter *ad, const char *owner)
{
	for (struct bz_session *s = ad->sessions; s; s = s->next)
		if (!strcmp(s->owner, owner))
			return s;
	return NULL;
}

static void session_clear_filter(struct bz_session *s)
{
	if (s->uuids)
		for (char **u = s->uuids; *u; u++)
			free(*u);
	free(s->uuids);
	s->uuids = NULL;
	s->has_filter = s->has_rssi = s->has_pathloss = false;
	s->duplicate = true;
	snprintf(s->transport, sizeof(s->transport), "auto");
}

static void session_free(struct bz_session *s)
{
	session_clear_filter(s);
	free(s->owner);
	free(s);
}

static void session_unlink(struct bz_adapter *ad, struct bz_session *s)
{
	for (struct bz_session **p = &ad->sessions; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	session_free(s);
}

static bool any_started(const struct bz_adapter *ad)
{
	for (const struct bz_session *s = ad->sessions; s; s = s->next)
		if (s->started)
			return true;
	return false;
}

static bool session_match(const struct bz_session *s, const struct bz_dev *d)
{
	if (!s->has_filter)
		return true;
	if (!strcmp(s->transport, "bredr"))
		return false; /* the watches are LE only */
	if (s->has_rssi && bz_dev_rssi(d) < s->rssi)
		return false;
	if (s->uuids && s->uuids[0]) {
		for (char **u = s->uuids; *u; u++)
			if (!strcmp(*u, BZ_SMP_SERVICE_UUID))
				return true;
		return false;
	}
	return true;
}

/* BlueZ merges every client's filter: a device is reported when one wants it. */
static bool bz_session_wants(const struct bz_adapter *ad, const struct bz_dev *d)
{
	for (const struct bz_session *s = ad->sessions; s; s = s->next)
		if (s->started && session_match(s, d))
			return true;
	return false;
}

/* bluetoothd reports every advertisement (an RSSI PropertiesChanged even
 * when the value did not move) when a client's discovery filter is set
 * (RSSI delta threshold 0) and asks for DuplicateData (the controller's
 * duplicate filter off); otherwise only RSSI moves of 8 dBm or more. */
static bool bz_session_every(const struct bz_adapter *ad)
{
	for (const struct bz_session *s = ad->sessions; s; s = s->next)
		if (s->started && s->has_filter && s->duplicate)
			return true;
	return false;
}

static void scan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_adapter *ad = arg;
	struct timeval tv = { SCAN_PERIOD_MS / 1000, (SCAN_PERIOD_MS % 1000) * 1000 };
	bool every = bz_session_every(ad);

	for (size_t i = 0; i < ad->bz->n_devs; i++) {
		struct bz_dev *d = &ad->bz->devs[i];

		/* a connected watch stops advertising (smp_svr: one connection),
		 * here or to another gateway; one out of this bus's range is
		 * not heard */
		if (d->ad != ad || d->state != BZ_CONN_DISCONNECTED || !bz_dev_hears(d) ||
		    !bz_dev_advertising(d))
			continue;
		if (bz_session_wants(ad, d))
			bz_dev_seen(d, every);
	}
	event_add(ad->scan_ev, &tv);
}

static void start_discovering(struct bz_adapter *ad)
{
	struct timeval tv = { 0, SCAN_FIRST_MS * 1000 };

	if (ad->discovering)
		return;
	ad->discovering = true;
	adapter_changed(ad, "Discovering");
	event_add(ad->scan_ev, &tv);
}

static void stop_discovering(struct bz_adapter *ad)
{
	while (ad->sessions) {
		struct bz_session *s = ad->sessions;

		ad->sessions = s->next;
		session_free(s);
	}
	if (!ad->discovering)
		return;
	event_del(ad->scan_ev);
	/* BlueZ forgets the RSSI of what it saw when scanning stops */
	for (size_t i = 0; i < ad->bz->n_devs; i++) {
		struct bz_dev *d = &ad->bz->devs[i];

		if (d->ad == ad && d->obj && d->has_rssi) {
			d->has_rssi = false;
			bz_dev_props_changed(d, "RSSI");
		}
	}
	bz_bus_flush(ad->bz->bus);
	ad->discovering = false;
	adapter_changed(ad, "Discovering");
}

/* A session ended (StopDiscovery, client gone). */
static void session_stopped(struct bz_adapter *ad, struct bz_session *s)
{
	s->started = false;
	if (!s->has_filter)
		session_unlink(ad, s);
	if (!any_started(ad) && ad->discovering) {
		struct bz_session *keep = ad->sessions;

		/* filters of idle clients survive a stop, as in BlueZ */
		ad->sessions = NULL;
		stop_discovering(ad);
		ad->sessions = keep;
	}
}

static DBusMessage *start_discovery(void *data, DBusMessage *msg)
{
	struct bz_adapter *ad = data;
	const char *owner = dbus_message_get_sender(msg);
	struct bz_session *s;

	if (!ad->powered)
		return bz_error(msg, "org.bluez.Error.NotReady", "Resource Not Ready");
	s = session_find(ad, owner);
	if (s && s->started)
		return bz_error(msg, "org.bluez.Error.InProgress",
				"Operation already in progress");
	if (!s) {
		s = xnew(struct bz_session);
		s->owner = xstrdup(owner);
		session_clear_filter(s);
		s->next = ad->sessions;
		ad->sessions = s;
	}
	s->started = true;
	/* recorded order: the reply, then Discovering true, then devices */
	bz_bus_send(ad->bz->bus, dbus_message_new_method_return(msg));
	start_discovering(ad);
	return NULL;
}

static DBusMessage *stop_discovery(void *data, DBusMessage *msg)
{
	struct bz_adapter *ad = data;
	struct bz_session *s = session_find(ad, dbus_message_get_sender(msg));
	DBusMessage *r;

	if (!ad->powered)
		return bz_error(msg, "org.bluez.Error.NotReady", "Resource Not Ready");
	if (!s || !s->started)
		return bz_error_failed(msg, "No discovery started");
	r = dbus_message_new_method_return(msg);
	bz_bus_send(ad->bz->bus, r);
	session_stopped(ad, s);
	return NULL;
}

/* Accepts 16-, 32- and 128-bit UUID strings; writes the 128-bit lower-case form. */
static bool parse_uuid(const char *in, char out[37])
{
	size_t n = strlen(in);

	if (n == 4 || n == 8) {
		for (size_t i = 0; i < n; i++)
			if (!isxdigit((unsigned char)in[i]))
				return false;
		memcpy(out, "00000000-0000-1000-8000-00805f9b34fb", 37);
		memcpy(out + 8 - n, in, n);
	} else if (n == 36) {
		for (size_t i = 0; i < n; i++) {
			bool dash = i == 8 || i == 13 || i == 18 || i == 23;

			if (dash ? in[i] != '-' : !isxdigit((unsigned char)in[i]))
				return false;
		}
		memcpy(out, in, 37);
	} else {
		return false;
	}
	for (char *p = out; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return true;
}

static bool parse_filter_uuids(DBusMessageIter *v, struct bz_session *s)
{
	DBusMessageIter a;
	size_t n = 0;

	if (dbus_message_iter_get_arg_type(v) != DBUS_TYPE_ARRAY ||
	    dbus_message_iter_get_element_type(v) != DBUS_TYPE_STRING)
		return false;
	dbus_message_iter_recurse(v, &a);
	s->uuids = xnew_array(char *, 1);
	while (dbus_message_iter_get_arg_type(&a) == DBUS_TYPE_STRING) {
		const char *u;
		char buf[37];

		dbus_message_iter_get_basic(&a, &u);
		if (!parse_uuid(u, buf))
			return false;
		s->uuids = xrealloc(s->uuids, (n + 2) * sizeof(char *));
		s->uuids[n++] = xstrdup(buf);
		s->uuids[n] = NULL;
		dbus_message_iter_next(&a);
	}
	return true;
}

static bool parse_filter_entry(const char *key, DBusMessageIter *v, struct bz_session *s)
{
	int t = dbus_message_iter_get_arg_type(v);

	if (!strcmp(key, "UUIDs"))
		return parse_filter_uuids(v, s);
	if (!strcmp(key, "RSSI") && t == DBUS_TYPE_INT16) {
		dbus_message_iter_get_basic(v, &s->rssi);
		s->has_rssi = true;
		return s->rssi >= -127 && s->rssi <= 20;
	}
	if (!strcmp(key, "Pathloss") && t == DBUS_TYPE_UINT16) {
		dbus_message_iter_get_basic(v, &s->pathloss);
		s->has_pathloss = true;
		return s->pathloss <= 137;
	}
	if (!strcmp(key, "Transport") && t == DBUS_TYPE_STRING) {
		const char *tr;

		dbus_message_iter_get_basic(v, &tr);
		if (strcmp(tr, "auto") && strcmp(tr, "bredr") && strcmp(tr, "le"))
			return false;
		snprintf(s->transport, sizeof(s->transport), "%s", tr);
		return true;
	}
	if (!strcmp(key, "DuplicateData") && t == DBUS_TYPE_BOOLEAN) {
		dbus_bool_t b;

		dbus_message_iter_get_basic(v, &b);
		s->duplicate = b;
		return true;
	}
	if (!strcmp(key, "Discoverable") && t == DBUS_TYPE_BOOLEAN)
		return true;
	if (!strcmp(key, "Pattern") && t == DBUS_TYPE_STRING)
		return true;
	return false;
}

static bool parse_filter(DBusMessage *msg, struct bz_session *s)
{
	DBusMessageIter it, dict;
	bool any = false;

	dbus_message_iter_init(msg, &it);
	dbus_message_iter_recurse(&it, &dict);
	while (dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY) {
		DBusMessageIter e, v;
		const char *key;

		dbus_message_iter_recurse(&dict, &e);
		dbus_message_iter_get_basic(&e, &key);
		dbus_message_iter_next(&e);
		dbus_message_iter_recurse(&e, &v);
		if (!parse_filter_entry(key, &v, s))
			return false;
		any = true;
		dbus_message_iter_next(&dict);
	}
	if (s->has_rssi && s->has_pathloss)
		return false; /* BlueZ: RSSI and Pathloss are mutually exclusive */
	s->has_filter = any;
	return true;
}

static DBusMessage *set_discovery_filter(void *data, DBusMessage *msg)
{
	struct bz_adapter *ad = data;
	const char *owner = dbus_message_get_sender(msg);
	struct bz_session tmp = { 0 };
	struct bz_session *s;

	if (!ad->powered)
		return bz_error(msg, "org.bluez.Error.NotReady", "Resource Not Ready");
	session_clear_filter(&tmp);
	if (!parse_filter(msg, &tmp)) {
		session_clear_filter(&tmp);
		return bz_error_invalid_args(msg);
	}
	s = session_find(ad, owner);
	if (!s && !tmp.has_filter)
		return dbus_message_new_method_return(msg);
	if (!s) {
		s = xnew(struct bz_session);
		s->owner = xstrdup(owner);
		s->next = ad->sessions;
		ad->sessions = s;
	} else {
		session_clear_filter(s);
	}
	s->has_filter = tmp.has_filter;
	s->uuids = tmp.uuids;
	s->has_rssi = tmp.has_rssi;
	s->rssi = tmp.rssi;
	s->has_pathloss = tmp.has_pathloss;
	s->pathloss = tmp.pathloss;
	s->duplicate = tmp.duplicate;
	memcpy(s->transport, tmp.transport, sizeof(s->transport));
	if (!s->has_filter && !s->started)
		session_unlink(ad, s);
	return dbus_message_new_method_return(msg);
}

static DBusMessage *get_discovery_filters(void *data, DBusMessage *msg)
{
	static const char *const names[] = {
		"UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData",
		"Discoverable", "Pattern", NULL,
	};
	DBusMessage *r = dbus_message_new_method_return(msg);
	DBusMessageIter it;

	dbus_message_iter_init_append(r, &it);
	put_strv(&it, names);
	return r;
}

static struct bz_dev *bz_dev_by_path(struct sim_bluez *bz, const char *path)
{
	for (size_t i = 0; i < bz->n_devs; i++)
		if (!strcmp(bz->devs[i].path, path))
			return &bz->devs[i];
	return NULL;
}

static DBusMessage *remove_device(void *data, DBusMessage *msg)
{
	struct bz_adapter *ad = data;
	const char *path;
	struct bz_dev *d;

	if (!dbus_message_get_args(msg, NULL, DBUS_TYPE_OBJECT_PATH, &path, DBUS_TYPE_INVALID))
		return bz_error_invalid_args(msg);
	d = bz_dev_by_path(ad->bz, path);
	if (!d || d->ad != ad || !d->obj)
		return bz_error(msg, "org.bluez.Error.DoesNotExist", "Does Not Exist");
	bz_dev_remove(d);
	return dbus_message_new_method_return(msg);
}

static DBusMessage *unsupported(void *data, DBusMessage *msg)
{
	return bz_error_not_supported(msg);
}

/* ---- interface tables ------------------------------------------------------ */

static const struct bz_iface adapter1 = {
	.name = "org.bluez.Adapter1",
	.methods = (const struct bz_method[]){
		{ "StartDiscovery", "", "", start_discovery },
		{ "SetDiscoveryFilter", "properties:a{sv}", "", set_discovery_filter },
		{ "StopDiscovery", "", "", stop_discovery },
		{ "RemoveDevice", "device:o", "", remove_device },
		{ "GetDiscoveryFilters", "", "filters:as", get_discovery_filters },
		{ NULL, NULL, NULL, NULL },
	},
	.props = (const struct bz_prop[]){
		{ "Address", "s", NULL, ad_address, NULL },
		{ "AddressType", "s", NULL, ad_address_type, NULL },
		{ "Name", "s", NULL, ad_name, NULL },
		{ "Alias", "s", NULL, ad_alias, set_alias },
		{ "Class", "u", NULL, ad_class, NULL },
		{ "Powered", "b", NULL, ad_powered, set_powered },
		{ "Discoverable", "b", NULL, ad_discoverable, set_discoverable },
		{ "DiscoverableTimeout", "u", NULL, ad_disc_timeout, set_disc_timeout },
		{ "Pairable", "b", NULL, ad_pairable, set_pairable },
		{ "PairableTimeout", "u", NULL, ad_pair_timeout, set_pair_timeout },
		{ "Discovering", "b", NULL, ad_discovering, NULL },
		{ "UUIDs", "as", NULL, ad_uuids, NULL },
		{ "Modalias", "s", NULL, ad_modalias, NULL },
		{ "Roles", "as", NULL, ad_roles, NULL },
		{ "ExperimentalFeatures", "as", never, empty_strv, NULL },
		{ NULL, NULL, NULL, NULL, NULL },
	},
};

static const struct bz_iface gatt_manager1 = {
	.name = "org.bluez.GattManager1",
	.methods = (const struct bz_method[]){
		{ "RegisterApplication", "application:o options:a{sv}", "", unsupported },
		{ "UnregisterApplication", "application:o", "", unsupported },
		{ NULL, NULL, NULL, NULL },
	},
};

static void media_uuids(void *data, DBusMessageIter *it)
{
	static const char *const uuids[] = {
		"0000110a-0000-1000-8000-00805f9b34fb", "0000110b-0000-1000-8000-00805f9b34fb", NULL,
	};

	put_strv(it, uuids);
}

static const struct bz_iface media1 = {
	.name = "org.bluez.Media1",
	.methods = (const struct bz_method[]){
		{ "RegisterEndpoint", "endpoint:o properties:a{sv}", "", unsupported },
		{ "UnregisterEndpoint", "endpoint:o", "", unsupported },
		{ "RegisterPlayer", "player:o properties:a{sv}", "", unsupported },
		{ "UnregisterPlayer", "player:o", "", unsupported },
		{ "RegisterApplication", "application:o options:a{sv}", "", unsupported },
		{ "UnregisterApplication", "application:o", "", unsupported },
		{ NULL, NULL, NULL, NULL },
	},
	.props = (const struct bz_prop[]){
		{ "SupportedUUIDs", "as", NULL, media_uuids, NULL },
		{ NULL, NULL, NULL, NULL, NULL },
	},
};

static const struct bz_iface network_server1 = {
	.name = "org.bluez.NetworkServer1",
	.methods = (const struct bz_method[]){
		{ "Register", "uuid:s bridge:s", "", unsupported },
		{ "Unregister", "uuid:s", "", unsupported },
		{ NULL, NULL, NULL, NULL },
	},
};

static void adv_active(void *data, DBusMessageIter *it)
{
	uint8_t v = 0;

	dbus_message_iter_append_basic(it, DBUS_TYPE_BYTE, &v);
}

static void adv_supported(void *data, DBusMessageIter *it)
{
	uint8_t v = 5;

	dbus_message_iter_append_basic(it, DBUS_TYPE_BYTE, &v);
}

static void adv_includes(void *data, DBusMessageIter *it)
{
	static const char *const inc[] = { "tx-power", "appearance", "local-name", NULL };

	put_strv(it, inc);
}

static const struct bz_iface le_adv_manager1 = {
	.name = "org.bluez.LEAdvertisingManager1",
	.methods = (const struct bz_method[]){
		{ "RegisterAdvertisement", "advertisement:o options:a{sv}", "", unsupported },
		{ "UnregisterAdvertisement", "service:o", "", unsupported },
		{ NULL, NULL, NULL, NULL },
	},
	.props = (const struct bz_prop[]){
		{ "ActiveInstances", "y", NULL, adv_active, NULL },
		{ "SupportedInstances", "y", NULL, adv_supported, NULL },
		{ "SupportedIncludes", "as", NULL, adv_includes, NULL },
		{ "SupportedSecondaryChannels", "as", never, empty_strv, NULL },
		{ NULL, NULL, NULL, NULL, NULL },
	},
};

static const struct bz_iface *const adapter_ifaces[] = {
	&bz_iface_introspectable, &adapter1, &bz_iface_properties, &gatt_manager1,
	&media1, &network_server1, &le_adv_manager1, NULL,
};

/* ---- agents (AgentManager1) --------------------------------------------------- */

struct bz_agent {
	struct bz_agent *next;
	char *owner, *path, *cap;
};

static bool valid_cap(const char *cap)
{
	static const char *const caps[] = {
		"", "DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput",
		"KeyboardDisplay", NULL,
	};

	for (const char *const *c = caps; *c; c++)
		if (!strcmp(*c, cap))
			return true;
	return false;
}

static struct bz_agent **agent_find(struct sim_bluez *bz, const char *owner)
{
	struct bz_agent **p = &bz->agents;

	for (; *p; p = &(*p)->next)
		if (!strcmp((*p)->owner, owner))
			return p;
	return NULL;
}

static DBusMessage *register_agent(void *data, DBusMessage *msg)
{
	struct sim_bluez *bz = data;
	const char *path, *cap;
	struct bz_agent *a;

	if (!dbus_message_get_args(msg, NULL, DBUS_TYPE_OBJECT_PATH, &path,
				   DBUS_TYPE_STRING, &cap, DBUS_TYPE_INVALID) ||
	    !valid_cap(cap))
		return bz_error_invalid_args(msg);
	if (agent_find(bz, dbus_message_get_sender(msg)))
		return bz_error(msg, "org.bluez.Error.AlreadyExists", "Already Exists");
	a = xnew(struct bz_agent);
	a->owner = xstrdup(dbus_message_get_sender(msg));
	a->path = xstrdup(path);
	a->cap = xstrdup(*cap ? cap : "KeyboardDisplay");
	a->next = bz->agents;
	bz->agents = a;
	return dbus_message_new_method_return(msg);
}

static void agent_drop(struct sim_bluez *bz, struct bz_agent **p)
{
	struct bz_agent *a = *p;

	if (bz->default_agent == a)
		bz->default_agent = NULL;
	*p = a->next;
	free(a->owner);
	free(a->path);
	free(a->cap);
	free(a);
}

static DBusMessage *unregister_agent(void *data, DBusMessage *msg)
{
	struct sim_bluez *bz = data;
	struct bz_agent **p = agent_find(bz, dbus_message_get_sender(msg));
	const char *path;

	if (!dbus_message_get_args(msg, NULL, DBUS_TYPE_OBJECT_PATH, &path, DBUS_TYPE_INVALID))
		return bz_error_invalid_args(msg);
	if (!p || strcmp((*p)->path, path))
		return bz_error(msg, "org.bluez.Error.DoesNotExist", "Does Not Exist");
	agent_drop(bz, p);
	return dbus_message_new_method_return(msg);
}

static DBusMessage *request_default_agent(void *data, DBusMessage *msg)
{
	struct sim_bluez *bz = data;
	struct bz_agent **p = agent_find(bz, dbus_message_get_sender(msg));
	const char *path;

	if (!dbus_message_get_args(msg, NULL, DBUS_TYPE_OBJECT_PATH, &path, DBUS_TYPE_INVALID))
		return bz_error_invalid_args(msg);
	if (!p || strcmp((*p)->path, path))
		return bz_error(msg, "org.bluez.Error.DoesNotExist", "Does Not Exist");
	bz->default_agent = *p;
	return dbus_message_new_method_return(msg);
}

/* The agent BlueZ would ask for a Pair() from sender: its own, else the default. */
bool bz_agent_for(struct sim_bluez *bz, const char *sender, const char **owner,
		  const char **path, const char **cap)
{
	struct bz_agent **p = agent_find(bz, sender);
	struct bz_agent *a = p ? *p : bz->default_agent;

	if (!a)
		return false;
	*owner = a->owner;
	*path = a->path;
	*cap = a->cap;
	return true;
}

static const struct bz_iface agent_manager1 = {
	.name = "org.bluez.AgentManager1",
	.methods = (const struct bz_method[]){
		{ "RegisterAgent", "agent:o capability:s", "", register_agent },
		{ "UnregisterAgent", "agent:o", "", unregister_agent },
		{ "RequestDefaultAgent", "agent:o", "", request_default_agent },
		{ NULL, NULL, NULL, NULL },
	},
};

static const struct bz_iface profile_manager1 = {
	.name = "org.bluez.ProfileManager1",
	.methods = (const struct bz_method[]){
		{ "RegisterProfile", "profile:o UUID:s options:a{sv}", "", unsupported },
		{ "UnregisterProfile", "profile:o", "", unsupported },
		{ NULL, NULL, NULL, NULL },
	},
};

static const struct bz_iface health_manager1 = {
	.name = "org.bluez.HealthManager1",
	.methods = (const struct bz_method[]){
		{ "CreateApplication", "config:a{sv}", "application:o", unsupported },
		{ "DestroyApplication", "application:o", "", unsupported },
		{ NULL, NULL, NULL, NULL },
	},
};

static const struct bz_iface *const bluez_ifaces[] = {
	&bz_iface_introspectable, &agent_manager1, &profile_manager1, &health_manager1, NULL,
};

static const struct bz_iface *const root_ifaces[] = {
	&bz_iface_introspectable, &bz_iface_object_manager, NULL,
};

/* ---- clients going away ------------------------------------------------------- */

static void client_gone(struct sim_bluez *bz, const char *name)
{
	struct bz_agent **p = agent_find(bz, name);

	if (p)
		agent_drop(bz, p);
	for (unsigned i = 0; i < bz->n_adapters; i++) {
		struct bz_adapter *ad = &bz->adapters[i];
		struct bz_session *s = session_find(ad, name);

		if (!s)
			continue;
		s->has_filter = false;
		if (s->started)
			session_stopped(ad, s);
		else
			session_unlink(ad, s);
	}
	for (size_t i = 0; i < bz->n_devs; i++)
		bz_dev_client_gone(&bz->devs[i], name);
}

static DBusHandlerResult filter_cb(DBusConnection *conn, DBusMessage *msg, void *data)
{
	const char *name, *old_owner, *new_owner;

	if (dbus_message_is_signal(msg, DBUS_INTERFACE_DBUS, "NameOwnerChanged") &&
	    dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &name,
				  DBUS_TYPE_STRING, &old_owner,
				  DBUS_TYPE_STRING, &new_owner, DBUS_TYPE_INVALID) &&
	    name[0] == ':' && !*new_owner)
		client_gone(data, name);
	return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

/* ---- lifetime ------------------------------------------------------------------- */

static void adapters_init(struct sim_bluez *bz)
{
	unsigned nf = sim_fleet_adapter_count(bz->fleet);

	bz->adapters = xnew_array(struct bz_adapter, nf ? nf : 1);
	bz->n_adapters = 0;
	for (unsigned a = 0; a < nf || (a == 0 && nf == 0); a++) {
		struct bz_adapter *ad = &bz->adapters[bz->n_adapters];
		unsigned max = sim_fleet_adapter_max_connections(bz->fleet, a);
		const char *addr = sim_fleet_adapter_address(bz->fleet, a);

		if (nf && !adapter_here(bz, a))
			continue;
		ad->bz = bz;
		ad->index = bz->n_adapters++;
		ad->fleet_index = a;
		snprintf(ad->path, sizeof(ad->path), "/org/bluez/hci%u", ad->index);
		if (addr)
			snprintf(ad->address, sizeof(ad->address), "%s", addr);
		else
			snprintf(ad->address, sizeof(ad->address), "00:AA:01:01:00:%02X",
				 (a + 1) & 0xff);
		/* each bus's copy of a shared adapter is a radio of its own */
		if (bz->bus_index && !sim_fleet_adapter_bus(bz->fleet, a))
			snprintf(ad->address + 9, sizeof(ad->address) - 9, "%02X:00:00",
				 bz->bus_index & 0xff);
		ad->alias = xstrdup("BlueZ 5.66");
		ad->powered = true;
		ad->discoverable_timeout = 180;
		ad->max_connections = max ? max : 7;
		ad->scan_ev = event_new(bz->base, -1, 0, scan_cb, ad);
	}
}

/* bluetoothd owns its name first and registers adapters once the kernel's
 * index list is read: clients see them come with InterfacesAdded. */
static void register_adapters_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_bluez *bz = arg;

	for (unsigned i = 0; i < bz->n_adapters; i++)
		bz->adapters[i].obj = bz_object_add(bz->bus, bz->adapters[i].path,
						    adapter_ifaces, &bz->adapters[i], true);
}

/* The watch's adapter on this bus: its fleet adapter when that one is here,
 * else round-robin over this bus's adapters. */
static struct bz_adapter *dev_adapter(struct sim_bluez *bz, size_t i, unsigned fleet_a)
{
	for (unsigned k = 0; k < bz->n_adapters; k++)
		if (bz->adapters[k].fleet_index == fleet_a)
			return &bz->adapters[k];
	return &bz->adapters[i % bz->n_adapters];
}

static void devices_init(struct sim_bluez *bz)
{
	bz->n_devs = sim_fleet_count(bz->fleet);
	bz->devs = xnew_array(struct bz_dev, bz->n_devs ? bz->n_devs : 1);
	for (size_t i = 0; i < bz->n_devs; i++) {
		struct bz_dev *d = &bz->devs[i];
		int rssi = 0, h;

		d->bz = bz;
		d->index = i;
		d->sim = sim_fleet_device(bz->fleet, i);
		d->ad = dev_adapter(bz, i, sim_device_adapter(d->sim));
		h = sim_fleet_heard(bz->fleet, i, bz->name, &rssi);
		d->heard = h != 0;
		d->follow = h < 0;
		d->heard_rssi = (int16_t)(h > 0 ? rssi : sim_device_rssi(d->sim));
		bz_dev_init(d);
	}
}

static struct sim_bluez *fail(struct sim_bluez *bz, char **ret_err, const char *what,
			      const char *why)
{
	if (ret_err)
		*ret_err = xasprintf("%s: %s", what, why ? why : "failed");
	sim_bluez_free(bz);
	return NULL;
}

struct sim_bluez *sim_bluez_new(struct event_base *base, struct sim_fleet *fleet,
				const char *bus_address, char **ret_err)
{
	return sim_bluez_new_named(base, fleet, NULL, 0, bus_address, ret_err);
}

struct sim_bluez *sim_bluez_new_named(struct event_base *base, struct sim_fleet *fleet,
				      const char *name, unsigned bus_index,
				      const char *bus_address, char **ret_err)
{
	struct sim_bluez *bz = xnew(struct sim_bluez);
	const char *env = getenv("SMPGW_SIM_LE_CONN_TIMEOUT_MS");
	DBusError err;
	int r;

	bz->name = name ? xstrdup(name) : NULL;
	bz->bus_index = bus_index;
	bz->base = base;
	bz->fleet = fleet;
	bz->le_conn_timeout_ms = env && atoi(env) > 0 ? (uint32_t)atoi(env) : 20000;
	env = getenv("SMPGW_SIM_TEMP_TIMEOUT_MS");
	bz->temp_timeout_ms = env && atoi(env) > 0 ? (uint32_t)atoi(env) : 30000;
	bz->agent_timeout_ms = 60000; /* BlueZ's agent request timeout */
	env = getenv("SMPGW_SIM_ATT_TIMEOUT_MS");
	bz->att_timeout_ms = env && atoi(env) > 0 ? (uint32_t)atoi(env) : 30000; /* ATT's 30 s */
	dbus_error_init(&err);
	bz->conn = dbus_loop_connect(bus_address, &err);
	if (!bz->conn) {
		struct sim_bluez *ret = fail(bz, ret_err, "cannot connect to D-Bus", err.message);

		dbus_error_free(&err);
		return ret;
	}
	bz->bus = bz_bus_new(base, bz->conn);
	bz->root = bz_object_add(bz->bus, "/", root_ifaces, bz, false);
	bz->bluez = bz_object_add(bz->bus, "/org/bluez", bluez_ifaces, bz, false);
	adapters_init(bz);
	if (!bz->n_adapters)
		return fail(bz, ret_err, "no adapter", "no fleet adapter is on this bus");
	devices_init(bz);
	dbus_connection_add_filter(bz->conn, filter_cb, bz, NULL);
	dbus_bus_add_match(bz->conn, "type='signal',sender='org.freedesktop.DBus',"
			   "interface='org.freedesktop.DBus',member='NameOwnerChanged'", NULL);
	/* take the name last: a client that sees org.bluez appear finds everything */
	r = dbus_bus_request_name(bz->conn, "org.bluez", DBUS_NAME_FLAG_DO_NOT_QUEUE, &err);
	if (r != DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER) {
		struct sim_bluez *ret = fail(bz, ret_err, "cannot own org.bluez",
					     dbus_error_is_set(&err) ? err.message
								     : "name already taken");

		dbus_error_free(&err);
		return ret;
	}
	bz->loop = dbus_loop_attach(base, bz->conn);
	bz->register_ev = event_new(base, -1, 0, register_adapters_cb, bz);
	event_add(bz->register_ev, &(struct timeval){ 0, ADAPTER_REGISTER_MS * 1000 });
	return bz;
}

/*
 * bluetoothd on SIGTERM powers its adapters off (links drop, discovery
 * stops), then unregisters devices and adapters: InterfacesRemoved for each,
 * before its name goes. A crash (kill -9) shows only the name going.
 */
static void shutdown_gracefully(struct sim_bluez *bz)
{
	for (unsigned i = 0; i < bz->n_adapters; i++) {
		struct bz_adapter *ad = &bz->adapters[i];

		if (ad->obj && ad->powered) {
			power_off(ad);
			ad->powered = false;
			adapter_changed(ad, "Powered");
		}
	}
	bz_bus_flush(bz->bus);
	for (size_t i = 0; i < bz->n_devs; i++)
		if (bz->devs[i].obj)
			bz_dev_remove(&bz->devs[i]);
	for (unsigned i = 0; i < bz->n_adapters; i++) {
		bz_object_remove(bz->adapters[i].obj, true);
		bz->adapters[i].obj = NULL;
	}
}

struct sim_bluez *sim_bluez_free(struct sim_bluez *bz)
{
	if (!bz)
		return NULL;
	if (bz->loop)
		shutdown_gracefully(bz);
	for (size_t i = 0; i < bz->n_devs; i++)
		bz_dev_fini(&bz->devs[i]);
	free(bz->devs);
	for (unsigned i = 0; i < bz->n_adapters; i++) {
		struct bz_adapter *ad = &bz->adapters[i];

		while (ad->sessions) {
			struct bz_session *s = ad->sessions;

			ad->sessions = s->next;
			session_free(s);
		}
		if (ad->scan_ev)
			event_free(ad->scan_ev);
		free(ad->alias);
	}
	free(bz->adapters);
	if (bz->register_ev)
		event_free(bz->register_ev);
	while (bz->agents)
		agent_drop(bz, &bz->agents);
	if (bz->conn)
		dbus_connection_remove_filter(bz->conn, filter_cb, bz);
	bz->bus = bz_bus_free(bz->bus);
	bz->loop = dbus_loop_detach(bz->loop);
	if (bz->conn) {
		dbus_connection_flush(bz->conn);
		dbus_connection_close(bz->conn);
		dbus_connection_unref(bz->conn);
	}
	free(bz->name);
	free(bz);
	return NULL;
}

const struct sim_bluez_counters *sim_bluez_counters(const struct sim_bluez *bz)
{
	return &bz->counters;
}

void sim_bluez_set_le_conn_timeout(struct sim_bluez *bz, uint32_t ms)
{
	bz->le_conn_timeout_ms = ms ? ms : 1;
}

const char *sim_bluez_name(const struct sim_bluez *bz)
{
	return bz->name;
}

unsigned sim_bluez_adapter_count(const struct sim_bluez *bz)
{
	return bz->n_adapters;
}

const char *sim_bluez_adapter_address(const struct sim_bluez *bz, unsigned n)
{
	return n < bz->n_adapters ? bz->adapters[n].address : NULL;
}

bool sim_bluez_heard(const struct sim_bluez *bz, size_t i, int *rssi)
{
	if (i >= bz->n_devs || !bz->devs[i].heard)
		return false;
	*rssi = bz_dev_rssi(&bz->devs[i]);
	return true;
}

int sim_bluez_set_heard(struct sim_bluez *bz, size_t i, bool heard, int rssi)
{
	struct bz_dev *d;

	if (i >= bz->n_devs)
		return -ENOENT;
	d = &bz->devs[i];
	if (heard) {
		d->follow = false;
		d->heard_rssi = (int16_t)rssi;
	}
	if (d->heard && !heard) {
		d->heard = false;
		bz_dev_hearing_lost(d);
	}
	d->heard = heard;
	return 0;
}

bool sim_bluez_connected(const struct sim_bluez *bz, size_t i)
{
	return i < bz->n_devs && (bz->devs[i].state == BZ_CONN_CONNECTED ||
				  bz->devs[i].state == BZ_CONN_DISCONNECTING);
}

void sim_bluez_set_powered(struct sim_bluez *bz, bool on)
{
	for (unsigned i = 0; i < bz->n_adapters; i++) {
		struct bz_adapter *ad = &bz->adapters[i];

		if (ad->powered == on)
			continue;
		if (!on)
			power_off(ad);
		ad->powered = on;
		adapter_changed(ad, "Powered");
	}
	bz_bus_flush(bz->bus);
}
