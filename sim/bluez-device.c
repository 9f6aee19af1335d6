/* SPDX-License-Identifier: MIT */
/*
 * Device1 of the fake org.bluez: discovery appearance, Connect/Disconnect
 * with modelled delays and BlueZ 5.66's error names, the adapter's
 * connection budget, pairing through the client's agent, link loss on the
 * watch's faults/reset/range, and the GATT objects exported after service
 * discovery (kept cached after a disconnect, as bluetoothd does).
 */
#include "bluez-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "device.h"
#include "fleet.h"
#include "util/util.h"

#define RSSI_THRESHOLD 8            /* BlueZ only reports RSSI moves >= 8 dBm */
#define SUPERVISION_TIMEOUT_MS 420  /* Linux default LE supervision timeout */
#define DISCOVER_SERVICES_MS 110    /* first connection: GATT discovery */
#define CACHED_RESOLVE_MS 58        /* recorded: cached services resolved after 58 ms */
#define PAIRING_MS 150              /* SMP pairing exchange */
#define LIMIT_REJECT_MS 5           /* controller rejects LE Create Connection */

static const char *const smp_uuids_adv[] = { BZ_SMP_SERVICE_UUID, NULL };
static const char *const smp_uuids_full[] = {
	"00001800-0000-1000-8000-00805f9b34fb", "00001801-0000-1000-8000-00805f9b34fb",
	BZ_SMP_SERVICE_UUID, NULL,
};

static void arm(struct event *ev, uint32_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_del(ev);
	event_add(ev, &tv);
}

void bz_dev_props_changed(struct bz_dev *d, const char *prop)
{
	if (d->obj)
		bz_prop_changed(d->obj, "org.bluez.Device1", prop);
}

static uint32_t conn_interval_ms(const struct bz_dev *d)
{
	return sim_device_link_model(d->sim)->conn_interval_us / 1000 + 1;
}

/* ---- properties ------------------------------------------------------------- */

static void put_str(DBusMessageIter *it, const char *s)
{
	dbus_message_iter_append_basic(it, DBUS_TYPE_STRING, &s);
}

static void put_bool(DBusMessageIter *it, bool v)
{
	dbus_bool_t b = v;

	dbus_message_iter_append_basic(it, DBUS_TYPE_BOOLEAN, &b);
}

static void p_address(void *data, DBusMessageIter *it)
{
	put_str(it, sim_device_address(((struct bz_dev *)data)->sim));
}

/* Random static addresses have the two top bits set. */
static void p_address_type(void *data, DBusMessageIter *it)
{
	const char *a = sim_device_address(((struct bz_dev *)data)->sim);
	unsigned top = (unsigned)strtoul(a, NULL, 16);

	put_str(it, (top & 0xc0) == 0xc0 ? "random" : "public");
}

static bool has_name(void *data)
{
	const char *n = sim_device_name(((struct bz_dev *)data)->sim);

	return n && *n;
}

static void p_name(void *data, DBusMessageIter *it)
{
	put_str(it, sim_device_name(((struct bz_dev *)data)->sim));
}

static void p_alias(void *data, DBusMessageIter *it)
{
	struct bz_dev *d = data;
	char buf[18];

	if (d->alias) {
		put_str(it, d->alias);
	} else if (has_name(d)) {
		p_name(d, it);
	} else {
		snprintf(buf, sizeof(buf), "%s", sim_device_address(d->sim));
		for (char *p = buf; *p; p++)
			if (*p == ':')
				*p = '-';
		put_str(it, buf);
	}
}

static DBusMessage *set_alias(void *data, DBusMessageIter *v, DBusMessage *msg)
{
	struct bz_dev *d = data;
	const char *s;

	dbus_message_iter_get_basic(v, &s);
	free(d->alias);
	d->alias = *s ? xstrdup(s) : NULL;
	bz_dev_props_changed(d, "Alias");
	return NULL;
}

static bool never(void *data) { return false; }
static void p_zero_u32(void *data, DBusMessageIter *it) { uint32_t v = 0; dbus_message_iter_append_basic(it, DBUS_TYPE_UINT32, &v); }
static void p_zero_u16(void *data, DBusMessageIter *it) { uint16_t v = 0; dbus_message_iter_append_basic(it, DBUS_TYPE_UINT16, &v); }
static void p_zero_i16(void *data, DBusMessageIter *it) { int16_t v = 0; dbus_message_iter_append_basic(it, DBUS_TYPE_INT16, &v); }
static void p_empty(void *data, DBusMessageIter *it) { put_str(it, ""); }
static void p_false(void *data, DBusMessageIter *it) { put_bool(it, false); }
static void p_paired(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_dev *)data)->paired); }
static void p_bonded(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_dev *)data)->bonded); }
static void p_trusted(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_dev *)data)->trusted); }
static void p_blocked(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_dev *)data)->blocked); }
static bool has_rssi(void *data) { return ((struct bz_dev *)data)->has_rssi; }

static void p_rssi(void *data, DBusMessageIter *it)
{
	dbus_message_iter_append_basic(it, DBUS_TYPE_INT16, &((struct bz_dev *)data)->rssi);
}

static void p_connected(void *data, DBusMessageIter *it)
{
	enum bz_conn_state s = ((struct bz_dev *)data)->state;

	put_bool(it, s == BZ_CONN_CONNECTED || s == BZ_CONN_DISCONNECTING);
}

static void p_resolved(void *data, DBusMessageIter *it)
{
	put_bool(it, ((struct bz_dev *)data)->resolved);
}

static void p_uuids(void *data, DBusMessageIter *it)
{
	const char *const *v = ((struct bz_dev *)data)->services_known ? smp_uuids_full
								       : smp_uuids_adv;
	DBusMessageIter a;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "s", &a);
	for (; *v; v++)
		dbus_message_iter_append_basic(&a, DBUS_TYPE_STRING, v);
	dbus_message_iter_close_container(it, &a);
}

static void p_adapter(void *data, DBusMessageIter *it)
{
	const char *p = ((struct bz_dev *)data)->ad->path;

	dbus_message_iter_append_basic(it, DBUS_TYPE_OBJECT_PATH, &p);
}

static void put_bytes(DBusMessageIter *it, const uint8_t *buf, size_t len)
{
	DBusMessageIter a;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "y", &a);
	if (len)
		dbus_message_iter_append_fixed_array(&a, DBUS_TYPE_BYTE, &buf, (int)len);
	dbus_message_iter_close_container(it, &a);
}

static bool has_mfr(void *data)
{
	uint16_t c;
	const uint8_t *b;
	size_t n;

	return sim_device_manufacturer_data(((struct bz_dev *)data)->sim, &c, &b, &n) == 0;
}

static void p_mfr(void *data, DBusMessageIter *it)
{
	uint16_t c = 0;
	const uint8_t *b = NULL;
	size_t n = 0;
	DBusMessageIter a, e, v;

	sim_device_manufacturer_data(((struct bz_dev *)data)->sim, &c, &b, &n);
	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{qv}", &a);
	dbus_message_iter_open_container(&a, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_UINT16, &c);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "ay", &v);
	put_bytes(&v, b, n);
	dbus_message_iter_close_container(&e, &v);
	dbus_message_iter_close_container(&a, &e);
	dbus_message_iter_close_container(it, &a);
}

static bool has_svc_data(void *data)
{
	const char *u;
	const uint8_t *b;
	size_t n;

	return sim_device_service_data(((struct bz_dev *)data)->sim, &u, &b, &n) == 0;
}

static void p_svc_data(void *data, DBusMessageIter *it)
{
	const char *u = "";
	const uint8_t *b = NULL;
	size_t n = 0;
	DBusMessageIter a, e, v;

	sim_device_service_data(((struct bz_dev *)data)->sim, &u, &b, &n);
	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &a);
	dbus_message_iter_open_container(&a, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &u);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "ay", &v);
	put_bytes(&v, b, n);
	dbus_message_iter_close_container(&e, &v);
	dbus_message_iter_close_container(&a, &e);
	dbus_message_iter_close_container(it, &a);
}

#define DEV_BOOL_SETTER(fn, field, prop)                                             \
	static DBusMessage *fn(void *data, DBusMessageIter *v, DBusMessage *msg)     \
	{                                                                            \
		struct bz_dev *d = data;                                             \
		dbus_bool_t b;                                                       \
		dbus_message_iter_get_basic(v, &b);                                  \
		if (d->field != !!b) {                                               \
			d->field = b;                                                \
			bz_dev_props_changed(d, prop);                               \
		}                                                                    \
		return NULL;                                                         \
	}
DEV_BOOL_SETTER(set_trusted, trusted, "Trusted")
DEV_BOOL_SETTER(set_blocked, blocked, "Blocked")
DEV_BOOL_SETTER(set_wake, wake_allowed, "WakeAllowed")

/* ---- GATT objects -------------------------------------------------------------- */

static void export_gatt(struct bz_dev *d)
{
	static const struct bz_iface *const *const by_kind[] = {
		bz_gatt_service_ifaces, bz_gatt_char_ifaces, bz_gatt_desc_ifaces,
	};
	char path[128];

	for (int i = 0; i < BZ_N_GATT; i++) {
		struct bz_gatt *g = &d->gatt[i];

		snprintf(path, sizeof(path), "%s/%s", d->path, bz_gatt_table[i].suffix);
		g->dev = d;
		g->desc = &bz_gatt_table[i];
		g->obj = bz_object_add(d->bz->bus, path, by_kind[g->desc->kind], g, true);
	}
	d->services_known = true;
}

static void unexport_gatt(struct bz_dev *d)
{
	for (int i = BZ_N_GATT - 1; i >= 0; i--) {
		bz_object_remove(d->gatt[i].obj, true);
		d->gatt[i].obj = NULL;
	}
	d->services_known = false;
}

struct bz_object *bz_dev_smp_char(struct bz_dev *d)
{
	for (int i = 0; i < BZ_N_GATT; i++)
		if (bz_gatt_table[i].smp && bz_gatt_table[i].kind == 1)
			return d->gatt[i].obj;
	return NULL;
}

/* ---- connection state machine -------------------------------------------------- */

static void reply(struct bz_dev *d, DBusMessage **pending, DBusMessage *r)
{
	if (*pending) {
		bz_bus_send(d->bz->bus, r);
		dbus_message_unref(*pending);
		*pending = NULL;
	} else {
		dbus_message_unref(r);
	}
}

static void pair_fail(struct bz_dev *d, const char *name, const char *text);
static void secure_end(struct bz_dev *d, const char *name, const char *text);

static void connect_failed(struct bz_dev *d, const char *text)
{
	d->state = BZ_CONN_DISCONNECTED;
	d->ad->n_connections--;
	d->bz->counters.connect_failures++;
	if (d->connect_msg)
		reply(d, &d->connect_msg, bz_error_failed(d->connect_msg, text));
	if (d->pair_msg)
		pair_fail(d, "org.bluez.Error.Failed", text);
	bz_dev_expire_arm(d);
}

static void pair_start(struct bz_dev *d);

static void connected(struct bz_dev *d)
{
	d->state = BZ_CONN_CONNECTED;
	sim_fleet_link_add(d->bz->fleet, d->index, 1);
	d->bz->counters.connects++;
	bz_link_up(d);
	bz_dev_props_changed(d, "Connected");
	if (d->connect_msg)
		reply(d, &d->connect_msg, dbus_message_new_method_return(d->connect_msg));
	arm(d->conn_ev, d->services_known ? CACHED_RESOLVE_MS : DISCOVER_SERVICES_MS);
	if (d->pair_msg)
		pair_start(d);
}

static void resolved(struct bz_dev *d)
{
	if (!d->services_known) {
		export_gatt(d);
		bz_dev_props_changed(d, "UUIDs");
	}
	d->resolved = true;
	bz_dev_props_changed(d, "ServicesResolved");
}

static void link_gone(struct bz_dev *d)
{
	bool was = d->state == BZ_CONN_CONNECTED || d->state == BZ_CONN_DISCONNECTING;

	event_del(d->conn_ev);
	event_del(d->drop_ev);
	if (d->resolved) {
		d->resolved = false;
		bz_dev_props_changed(d, "ServicesResolved");
		bz_bus_flush(d->bz->bus);
	}
	if (d->disconnect_msg)
		reply(d, &d->disconnect_msg, dbus_message_new_method_return(d->disconnect_msg));
	d->state = BZ_CONN_DISCONNECTED;
	d->ad->n_connections--;
	d->bz->counters.disconnects++;
	if (was)
		sim_fleet_link_add(d->bz->fleet, d->index, -1);
	if (was)
		bz_dev_props_changed(d, "Connected");
	bz_bus_flush(d->bz->bus);
	bz_link_down(d);
	bz_dev_expire_arm(d);
	if (d->pair_msg)
		pair_fail(d, "org.bluez.Error.AuthenticationCanceled", "Authentication Canceled");
	secure_end(d, "org.bluez.Error.Failed", "Not connected");
}

int bz_dev_rssi(const struct bz_dev *d)
{
	return d->follow ? sim_device_rssi(d->sim) : d->heard_rssi;
}

bool bz_dev_hears(const struct bz_dev *d)
{
	return d->heard && sim_device_in_range(d->sim);
}

bool bz_dev_advertising(const struct bz_dev *d)
{
	return sim_device_in_range(d->sim) && sim_device_is_up(d->sim) &&
	       sim_fleet_links(d->bz->fleet, d->index) < sim_fleet_centrals(d->bz->fleet, d->index);
}

/* Connectable from this bus: heard here and advertising (a watch that took
 * its last central elsewhere does not advertise: a Connect waits for it). */
static bool reachable(const struct bz_dev *d)
{
	return bz_dev_hears(d) && bz_dev_advertising(d);
}

/* Create connection: waits for the watch's next advertisement until the
 * LE connection timeout, then the kernel cancels it (ECONNABORTED). */
static void connecting(struct bz_dev *d)
{
	uint64_t now = now_usec();

	if (d->ad->n_connections > d->ad->max_connections) {
		connect_failed(d, "le-connection-concurrent-connection-limit");
	} else if (reachable(d)) {
		if (d->establishing && d->paired && !d->watch_keys) {
			/* BlueZ encrypts with the old key, the watch has none:
			 * the link ends with 0x05 (authentication failure) */
			connect_failed(d, "le-connection-abort-by-local");
		} else if (d->establishing) {
			connected(d);
		} else {
			d->establishing = true;
			arm(d->conn_ev, 20 + 2 * conn_interval_ms(d)); /* adv + CONNECT_IND */
		}
	} else if (now >= d->conn_deadline_us) {
		connect_failed(d, "le-connection-abort-by-local");
	} else {
		uint64_t left_ms = (d->conn_deadline_us - now + 999) / 1000;

		d->establishing = false;
		arm(d->conn_ev, left_ms < 50 ? (uint32_t)left_ms : 50);
	}
}

/* One timer walks Connect -> connected -> services resolved, and Disconnect. */
static void conn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;

	switch (d->state) {
	case BZ_CONN_CONNECTING:
		connecting(d);
		break;
	case BZ_CONN_CONNECTED:
		if (!d->resolved)
			resolved(d);
		break;
	case BZ_CONN_DISCONNECTING:
		link_gone(d);
		break;
	case BZ_CONN_DISCONNECTED:
		break;
	}
}

/* Starts an LE connection; the result comes through conn_cb. */
static void connect_start(struct bz_dev *d)
{
	d->state = BZ_CONN_CONNECTING;
	d->establishing = false;
	d->ad->n_connections++;
	d->conn_deadline_us = now_usec() + (uint64_t)d->bz->le_conn_timeout_ms * 1000;
	/* over budget: the controller rejects the command at once (HCI 0x09) */
	arm(d->conn_ev, d->ad->n_connections > d->ad->max_connections ? LIMIT_REJECT_MS : 0);
}

void bz_dev_link_lost(struct bz_dev *d)
{
	switch (d->state) {
	case BZ_CONN_CONNECTING:
		event_del(d->conn_ev);
		connect_failed(d, "le-connection-abort-by-local");
		break;
	case BZ_CONN_CONNECTED:
	case BZ_CONN_DISCONNECTING:
		link_gone(d);
		break;
	case BZ_CONN_DISCONNECTED:
		break;
	}
}

static DBusMessage *dev_connect(void *data, DBusMessage *msg)
{
	struct bz_dev *d = data;

	if (d->state == BZ_CONN_CONNECTED)
		return dbus_message_new_method_return(msg);
	if (d->state != BZ_CONN_DISCONNECTED || d->connect_msg || d->pair_msg)
		return bz_error(msg, "org.bluez.Error.InProgress", "In Progress");
	if (!d->ad->powered)
		return bz_error(msg, "org.bluez.Error.NotReady", "Resource Not Ready");
	d->connect_msg = dbus_message_ref(msg);
	connect_start(d);
	return NULL;
}

static DBusMessage *dev_disconnect(void *data, DBusMessage *msg)
{
	struct bz_dev *d = data;

	switch (d->state) {
	case BZ_CONN_DISCONNECTED:
		return dbus_message_new_method_return(msg);
	case BZ_CONN_CONNECTING:
		event_del(d->conn_ev);
		connect_failed(d, "le-connection-abort-by-local");
		return dbus_message_new_method_return(msg);
	case BZ_CONN_DISCONNECTING:
		return bz_error(msg, "org.bluez.Error.InProgress", "In Progress");
	case BZ_CONN_CONNECTED:
		break;
	}
	/* recorded order: ServicesResolved false, the reply, Connected false */
	if (d->resolved) {
		d->resolved = false;
		bz_dev_props_changed(d, "ServicesResolved");
		bz_bus_flush(d->bz->bus);
	}
	d->state = BZ_CONN_DISCONNECTING;
	d->disconnect_msg = dbus_message_ref(msg);
	arm(d->conn_ev, conn_interval_ms(d) + 5);
	return NULL;
}

static DBusMessage *dev_connect_profile(void *data, DBusMessage *msg)
{
	const char *uuid;

	if (!dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &uuid, DBUS_TYPE_INVALID))
		return bz_error_invalid_args(msg);
	if (strcasecmp(uuid, BZ_SMP_SERVICE_UUID))
		return bz_error(msg, "org.bluez.Error.NotAvailable",
				"Operation currently not available");
	return dev_connect(data, msg);
}

static DBusMessage *dev_disconnect_profile(void *data, DBusMessage *msg)
{
	return bz_error_not_supported(msg);
}

/* ---- pairing ------------------------------------------------------------------ */

static void pair_done(struct bz_dev *d)
{
	event_del(d->pair_ev);
	if (d->agent_call) {
		/* the question is void: bluetoothd tells the agent with Cancel() */
		DBusMessage *c = dbus_message_new_method_call(d->agent_owner, d->agent_path,
							      "org.bluez.Agent1", "Cancel");

		dbus_message_set_no_reply(c, TRUE);
		dbus_connection_send(d->bz->conn, c, NULL);
		dbus_message_unref(c);
		dbus_pending_call_cancel(d->agent_call);
		dbus_pending_call_unref(d->agent_call);
		d->agent_call = NULL;
	}
	free(d->agent_owner);
	free(d->agent_path);
	d->agent_owner = d->agent_path = NULL;
}

static void pair_fail(struct bz_dev *d, const char *name, const char *text)
{
	pair_done(d);
	if (d->pair_msg)
		reply(d, &d->pair_msg, bz_error(d->pair_msg, name, text));
}

static void pair_ok(struct bz_dev *d)
{
	pair_done(d);
	d->paired = d->bonded = d->watch_keys = true;
	d->bz->counters.pairings++;
	bz_dev_props_changed(d, "Paired");
	bz_dev_props_changed(d, "Bonded");
	if (d->pair_msg)
		reply(d, &d->pair_msg, dbus_message_new_method_return(d->pair_msg));
}

static void pair_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;

	/* bluetoothd 5.66 needs an agent even for Just Works ("No agent
	 * available"), so Pair() without any agent fails */
	if (sim_device_faults(d->sim)->refuse_pairing || d->pair_no_agent)
		pair_fail(d, "org.bluez.Error.AuthenticationFailed", "Authentication Failed");
	else
		pair_ok(d);
}

/* Maps the agent's answer as bluetoothd does (agent.c / device.c). */
static void agent_reply_cb(DBusPendingCall *call, void *arg)
{
	struct bz_dev *d = arg;
	DBusMessage *r = dbus_pending_call_steal_reply(call);
	const char *err = r ? dbus_message_get_error_name(r) : DBUS_ERROR_NO_REPLY;
	bool passkey_ok = true;

	dbus_pending_call_unref(d->agent_call);
	d->agent_call = NULL;
	if (!err && r && !strcmp(dbus_message_get_signature(r), "u")) {
		dbus_uint32_t pk = 0;

		dbus_message_get_args(r, NULL, DBUS_TYPE_UINT32, &pk, DBUS_TYPE_INVALID);
		passkey_ok = pk == d->passkey;
	}
	if (r)
		dbus_message_unref(r);
	if (!err && passkey_ok)
		arm(d->pair_ev, PAIRING_MS);
	else if (err && !strcmp(err, "org.bluez.Error.Canceled"))
		pair_fail(d, "org.bluez.Error.AuthenticationCanceled", "Authentication Canceled");
	else if (err && (!strcmp(err, DBUS_ERROR_NO_REPLY) ||
			 !strcmp(err, DBUS_ERROR_TIMEOUT)))
		pair_fail(d, "org.bluez.Error.AuthenticationTimeout", "Authentication Timeout");
	else
		pair_fail(d, "org.bluez.Error.AuthenticationFailed", "Authentication Failed");
}

static bool ask_agent(struct bz_dev *d, const char *sender)
{
	const char *owner, *path, *cap, *method;
	DBusMessage *call;

	if (!bz_agent_for(d->bz, sender, &owner, &path, &cap))
		return false;
	/* the watch has a display and a button: numeric comparison or passkey */
	if (!strcmp(cap, "DisplayYesNo") || !strcmp(cap, "KeyboardDisplay"))
		method = "RequestConfirmation";
	else if (!strcmp(cap, "KeyboardOnly"))
		method = "RequestPasskey";
	else
		return false; /* DisplayOnly, NoInputNoOutput: Just Works */
	call = dbus_message_new_method_call(owner, path, "org.bluez.Agent1", method);
	if (!strcmp(method, "RequestConfirmation"))
		dbus_message_append_args(call, DBUS_TYPE_OBJECT_PATH, &(const char *){ d->path },
					 DBUS_TYPE_UINT32, &d->passkey, DBUS_TYPE_INVALID);
	else
		dbus_message_append_args(call, DBUS_TYPE_OBJECT_PATH, &(const char *){ d->path },
					 DBUS_TYPE_INVALID);
	if (!dbus_connection_send_with_reply(d->bz->conn, call, &d->agent_call,
					     (int)d->bz->agent_timeout_ms) || !d->agent_call) {
		dbus_message_unref(call);
		return false;
	}
	dbus_message_unref(call);
	dbus_pending_call_set_notify(d->agent_call, agent_reply_cb, d, NULL);
	free(d->agent_owner);
	free(d->agent_path);
	d->agent_owner = xstrdup(owner);
	d->agent_path = xstrdup(path);
	return true;
}

static void pair_start(struct bz_dev *d)
{
	const char *owner, *path, *cap;

	d->pair_no_agent = !bz_agent_for(d->bz, dbus_message_get_sender(d->pair_msg),
					 &owner, &path, &cap);
	if (sim_device_faults(d->sim)->refuse_pairing || d->pair_no_agent ||
	    !ask_agent(d, dbus_message_get_sender(d->pair_msg)))
		arm(d->pair_ev, PAIRING_MS);
}

/* ---- bluetoothd's own pairing (an ATT security error on a GATT call) ------------ */

/* Ends it: the waiting call gets name/text, or its result when NULL. */
static void secure_end(struct bz_dev *d, const char *name, const char *text)
{
	DBusMessage *msg = d->secure_msg, *r;

	if (!msg)
		return;
	d->secure_msg = NULL;
	event_del(d->secure_ev);
	if (d->secure_call) {
		dbus_pending_call_cancel(d->secure_call);
		dbus_pending_call_unref(d->secure_call);
		d->secure_call = NULL;
	}
	r = name ? bz_error(msg, name, text) : bz_gatt_secured(d->secure_g, msg, d->secure_acquire);
	if (r)
		bz_bus_send(d->bz->bus, r);
	dbus_message_unref(msg);
}

/* The pairing ran (agent said yes), or the ATT timeout hit (it did not). */
static void secure_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;

	if (!d->secure_agreed) {
		/* pairing failed on our side (no agent, agent said no): the
		 * retried ATT request waits on a suspended socket until the
		 * ATT timeout, and bluetoothd drops the link */
		bz_dev_link_lost(d);
		return;
	}
	if (sim_device_faults(d->sim)->refuse_pairing) {
		/* the watch answers Pairing Failed: the kernel disconnects (0x05) */
		bz_dev_link_lost(d);
		return;
	}
	d->paired = d->bonded = d->watch_keys = true;
	d->bz->counters.pairings++;
	bz_dev_props_changed(d, "Paired");
	bz_dev_props_changed(d, "Bonded");
	secure_end(d, NULL, NULL);
}

static void secure_agent_cb(DBusPendingCall *call, void *arg)
{
	struct bz_dev *d = arg;
	DBusMessage *r = dbus_pending_call_steal_reply(call);

	dbus_pending_call_unref(d->secure_call);
	d->secure_call = NULL;
	d->secure_agreed = r && dbus_message_get_type(r) == DBUS_MESSAGE_TYPE_METHOD_RETURN;
	if (r)
		dbus_message_unref(r);
	if (d->secure_agreed)
		arm(d->secure_ev, PAIRING_MS);
}

DBusMessage *bz_dev_auto_pair(struct bz_dev *d, struct bz_gatt *g, DBusMessage *msg,
			      bool acquire)
{
	const char *owner, *path, *cap;
	DBusMessage *call;

	if (d->secure_msg)
		return bz_error(msg, "org.bluez.Error.InProgress", "In Progress");
	d->secure_msg = dbus_message_ref(msg);
	d->secure_g = g;
	d->secure_acquire = acquire;
	d->secure_agreed = false;
	/* until the agent agrees, the ATT timeout runs */
	arm(d->secure_ev, d->bz->att_timeout_ms);
	/* Just Works without a Pair() caller: the default agent authorizes */
	if (!bz_agent_for(d->bz, "", &owner, &path, &cap))
		return NULL;
	call = dbus_message_new_method_call(owner, path, "org.bluez.Agent1",
					    "RequestAuthorization");
	dbus_message_append_args(call, DBUS_TYPE_OBJECT_PATH, &(const char *){ d->path },
				 DBUS_TYPE_INVALID);
	if (dbus_connection_send_with_reply(d->bz->conn, call, &d->secure_call,
					    (int)d->bz->agent_timeout_ms) && d->secure_call)
		dbus_pending_call_set_notify(d->secure_call, secure_agent_cb, d, NULL);
	dbus_message_unref(call);
	return NULL;
}

static DBusMessage *dev_pair(void *data, DBusMessage *msg)
{
	struct bz_dev *d = data;

	if (d->paired)
		return bz_error(msg, "org.bluez.Error.AlreadyExists", "Already Exists");
	if (d->pair_msg || d->connect_msg || d->state == BZ_CONN_CONNECTING ||
	    d->state == BZ_CONN_DISCONNECTING)
		return bz_error(msg, "org.bluez.Error.InProgress", "In Progress");
	if (!d->ad->powered)
		return bz_error(msg, "org.bluez.Error.NotReady", "Resource Not Ready");
	d->pair_msg = dbus_message_ref(msg);
	if (d->state == BZ_CONN_DISCONNECTED)
		connect_start(d); /* Pair() connects first, like BlueZ */
	else
		pair_start(d);
	return NULL;
}

static DBusMessage *dev_cancel_pairing(void *data, DBusMessage *msg)
{
	struct bz_dev *d = data;

	if (!d->pair_msg)
		return bz_error(msg, "org.bluez.Error.DoesNotExist", "Does Not Exist");
	pair_fail(d, "org.bluez.Error.AuthenticationCanceled", "Authentication Canceled");
	return dbus_message_new_method_return(msg);
}

/* ---- interface ------------------------------------------------------------------ */

static const struct bz_iface device1 = {
	.name = "org.bluez.Device1",
	.methods = (const struct bz_method[]){
		{ "Disconnect", "", "", dev_disconnect },
		{ "Connect", "", "", dev_connect },
		{ "ConnectProfile", "UUID:s", "", dev_connect_profile },
		{ "DisconnectProfile", "UUID:s", "", dev_disconnect_profile },
		{ "Pair", "", "", dev_pair },
		{ "CancelPairing", "", "", dev_cancel_pairing },
		{ NULL, NULL, NULL, NULL },
	},
	.props = (const struct bz_prop[]){
		{ "Address", "s", NULL, p_address, NULL },
		{ "AddressType", "s", NULL, p_address_type, NULL },
		{ "Name", "s", has_name, p_name, NULL },
		{ "Alias", "s", NULL, p_alias, set_alias },
		{ "Class", "u", never, p_zero_u32, NULL },
		{ "Appearance", "q", never, p_zero_u16, NULL },
		{ "Icon", "s", never, p_empty, NULL },
		{ "Paired", "b", NULL, p_paired, NULL },
		{ "Bonded", "b", NULL, p_bonded, NULL },
		{ "Trusted", "b", NULL, p_trusted, set_trusted },
		{ "Blocked", "b", NULL, p_blocked, set_blocked },
		{ "LegacyPairing", "b", NULL, p_false, NULL },
		{ "RSSI", "n", has_rssi, p_rssi, NULL },
		{ "Connected", "b", NULL, p_connected, NULL },
		{ "UUIDs", "as", NULL, p_uuids, NULL },
		{ "Modalias", "s", never, p_empty, NULL },
		{ "Adapter", "o", NULL, p_adapter, NULL },
		{ "ManufacturerData", "a{qv}", has_mfr, p_mfr, NULL },
		{ "ServiceData", "a{sv}", has_svc_data, p_svc_data, NULL },
		{ "TxPower", "n", never, p_zero_i16, NULL },
		{ "ServicesResolved", "b", NULL, p_resolved, NULL },
		{ "WakeAllowed", "b", never, p_false, set_wake },
		{ NULL, NULL, NULL, NULL, NULL },
	},
};

const struct bz_iface *const bz_device_ifaces[] = {
	&bz_iface_introspectable, &device1, &bz_iface_properties, NULL,
};

/* ---- discovery, removal ---------------------------------------------------------- */

/* BlueZ forgets temporary devices (not connected, paired or trusted) that
 * were not seen for TemporaryTimeout (30 s): their objects disappear. */
void bz_dev_expire_arm(struct bz_dev *d)
{
	if (d->obj)
		arm(d->expire_ev, d->bz->temp_timeout_ms);
}

static void expire_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;

	if (!d->obj || d->state != BZ_CONN_DISCONNECTED || d->paired || d->trusted ||
	    d->pair_msg)
		return;
	bz_dev_remove(d);
}

/* Digests of the advertised data (FNV-1a, 0 = absent), to report
 * ManufacturerData/ServiceData changes, e.g. a watch advertising its new
 * version after an update. */
static uint64_t fnv(uint64_t h, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h | 1;
}

static uint64_t mfr_digest(struct bz_dev *d)
{
	uint16_t company = 0;
	const uint8_t *b;
	size_t n;

	if (sim_device_manufacturer_data(d->sim, &company, &b, &n))
		return 0;
	return fnv(14695981039346656037ull ^ company, b, n);
}

static uint64_t svc_digest(struct bz_dev *d)
{
	const uint8_t *b;
	const char *u;
	size_t n;

	if (sim_device_service_data(d->sim, &u, &b, &n))
		return 0;
	return fnv(fnv(14695981039346656037ull, (const uint8_t *)u, strlen(u)), b, n);
}

static void adv_check(struct bz_dev *d)
{
	uint64_t m = mfr_digest(d), s = svc_digest(d);

	if (m != d->mfr_digest)
		bz_dev_props_changed(d, "ManufacturerData");
	if (s != d->svc_digest)
		bz_dev_props_changed(d, "ServiceData");
	d->mfr_digest = m;
	d->svc_digest = s;
}

void bz_dev_seen(struct bz_dev *d, bool every)
{
	int rssi = bz_dev_rssi(d);

	if (d->obj)
		bz_dev_expire_arm(d);
	if (!d->obj) {
		d->has_rssi = true;
		d->rssi = (int16_t)rssi;
		d->mfr_digest = mfr_digest(d);
		d->svc_digest = svc_digest(d);
		d->obj = bz_object_add(d->bz->bus, d->path, bz_device_ifaces, d, true);
		bz_dev_expire_arm(d);
		return;
	}
	adv_check(d);
	if (!d->has_rssi || every || abs(rssi - d->rssi) >= RSSI_THRESHOLD) {
		d->has_rssi = true;
		d->rssi = (int16_t)rssi;
		bz_dev_props_changed(d, "RSSI");
	}
}

void bz_dev_remove(struct bz_dev *d)
{
	if (d->pair_msg)
		pair_fail(d, "org.bluez.Error.AuthenticationCanceled", "Authentication Canceled");
	bz_dev_link_lost(d);
	bz_bus_flush(d->bz->bus);
	if (d->services_known)
		unexport_gatt(d);
	bz_object_remove(d->obj, true);
	d->obj = NULL;
	event_del(d->expire_ev);
	d->has_rssi = d->paired = d->bonded = d->trusted = d->blocked = false;
	free(d->alias);
	d->alias = NULL;
}

/* ---- the watch's own events (deferred: observers run inside device code) -------- */

static void drop_cb(evutil_socket_t fd, short what, void *arg)
{
	bz_dev_link_lost(arg);
}

/* An established link notices a silent watch after the supervision timeout;
 * a connection being created just keeps waiting for its advertisement. */
static bool established(const struct bz_dev *d)
{
	return d->state == BZ_CONN_CONNECTED || d->state == BZ_CONN_DISCONNECTING;
}

static void obs_reset(struct sim_device *dev, void *user_data)
{
	struct bz_dev *d = user_data;

	/* bonds kept in RAM (the Zephyr peer without settings) die with it */
	if (sim_device_faults(d->sim)->volatile_bonds)
		d->watch_keys = false;

	if (established(d))
		arm(d->drop_ev, SUPERVISION_TIMEOUT_MS);
}

static void obs_range(struct sim_device *dev, bool in_range, void *user_data)
{
	if (!in_range)
		obs_reset(dev, user_data);
}

void bz_dev_hearing_lost(struct bz_dev *d)
{
	if (established(d))
		arm(d->drop_ev, SUPERVISION_TIMEOUT_MS);
}

static void obs_disconnect(struct sim_device *dev, void *user_data)
{
	struct bz_dev *d = user_data;

	if (established(d))
		arm(d->drop_ev, 0);
}

static const struct sim_device_observer observer = {
	.reset = obs_reset,
	.range = obs_range,
	.disconnect = obs_disconnect,
};

void bz_dev_init(struct bz_dev *d)
{
	struct event_base *base = d->bz->base;
	const char *a = sim_device_address(d->sim);
	size_t n;

	n = (size_t)snprintf(d->path, sizeof(d->path), "%s/dev_%s", d->ad->path, a);
	for (size_t i = strlen(d->ad->path) + 5; i < n && i < sizeof(d->path); i++)
		if (d->path[i] == ':')
			d->path[i] = '_';
	d->wfd = d->nfd = -1;
	d->conn_ev = event_new(base, -1, 0, conn_cb, d);
	d->pair_ev = event_new(base, -1, 0, pair_cb, d);
	d->secure_ev = event_new(base, -1, 0, secure_cb, d);
	d->drop_ev = event_new(base, -1, 0, drop_cb, d);
	d->expire_ev = event_new(base, -1, 0, expire_cb, d);
	/* a six-digit passkey per watch, stable across runs */
	d->passkey = 0;
	for (const char *p = a; *p; p++)
		d->passkey = d->passkey * 31u + (unsigned char)*p;
	d->passkey %= 1000000u;
	d->obs_id = sim_device_observe(d->sim, &observer, d);
}

void bz_dev_fini(struct bz_dev *d)
{
	if (!d->conn_ev)
		return;
	sim_device_unobserve(d->sim, d->obs_id);
	pair_done(d);
	if (d->secure_call) {
		dbus_pending_call_cancel(d->secure_call);
		dbus_pending_call_unref(d->secure_call);
	}
	if (d->secure_msg)
		dbus_message_unref(d->secure_msg);
	if (d->connect_msg)
		dbus_message_unref(d->connect_msg);
	if (d->disconnect_msg)
		dbus_message_unref(d->disconnect_msg);
	if (d->pair_msg)
		dbus_message_unref(d->pair_msg);
	bz_link_down(d);
	event_free(d->conn_ev);
	event_free(d->pair_ev);
	event_free(d->secure_ev);
	event_free(d->drop_ev);
	event_free(d->expire_ev);
	free(d->alias);
}
