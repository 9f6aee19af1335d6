/* SPDX-License-Identifier: MIT */
/*
 * Peripheral front-end: a simulated watch behind a real bluetoothd (see
 * peripheral.h). Owns its D-Bus connection, the exported objects (GATT
 * application, service, characteristic, advertisement), the reassembly
 * buffer of the central's writes and the registration state machine.
 * Every D-Bus call is asynchronous with its own timeout.
 */
#include "peripheral.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <dbus/dbus.h>
#include <event2/event.h>

#include "device.h"
#include "util/dbus-loop.h"
#include "util/util.h"

#define BLUEZ "org.bluez"
#define SMP_SVC_UUID "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
#define SMP_CHR_UUID "da2e7828-fbce-4e01-ae9e-261174997c48"
#define IFACE_SVC "org.bluez.GattService1"
#define IFACE_CHR "org.bluez.GattCharacteristic1"
#define IFACE_ADV "org.bluez.LEAdvertisement1"
#define IFACE_PROPS "org.freedesktop.DBus.Properties"
#define IFACE_OM "org.freedesktop.DBus.ObjectManager"

#define CALL_TIMEOUT_MS 10000
#define RETRY_MS 1000
#define RETRY_MAX 60          /* registration attempts before giving up */
#define RX_MAX (64u * 1024)   /* a frame larger than this is garbage */
#define NOTIFY_MAX 510        /* BlueZ 5.66's GATT server caps values */

enum adv_state { ADV_OFF = 0, ADV_REGISTERING, ADV_ON, ADV_UNREGISTERING };

struct pcall;

struct sim_peripheral {
	struct event_base *base;
	struct sim_device *dev;
	DBusConnection *conn;
	struct dbus_loop *loop;
	unsigned obs_id;
	char *adapter_path;
	char paths[4][64]; /* app root, service, characteristic, advertisement */
	LIST_HEAD(, pcall) calls;
	struct event *retry_ev;

	bool bluez_up;     /* org.bluez has an owner */
	bool app_on;       /* application registered */
	bool app_pending;
	unsigned attempts;
	enum adv_state adv;
	bool adv_no_record; /* the record did not fit: advertise without it */
	bool want_adv;      /* booted and in range */

	char *central;      /* Device1 path of the connected central */
	bool notifying;
	uint16_t mtu;
	uint8_t *rx;
	size_t rx_len;
	uint64_t notifications;
	unsigned writes;    /* WriteValue calls making up the frame in progress */
	bool verbose;       /* a line per frame (SMPGW_SIM_PERIPHERAL_VERBOSE) */
	sim_peripheral_log_fn log;
	void *log_ud;
};

#define APP_PATH(p) ((p)->paths[0])
#define SVC_PATH(p) ((p)->paths[1])
#define CHR_PATH(p) ((p)->paths[2])
#define ADV_PATH(p) ((p)->paths[3])

static void say(struct sim_peripheral *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Events go to the caller's log function (the simulator's main prints
 * them: the VM tests' logs then show what the watch saw). */
static void say(struct sim_peripheral *p, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!p->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	p->log(p->dev, line, p->log_ud);
}

/* ---- asynchronous calls ------------------------------------------------ */

typedef void (*reply_fn)(struct sim_peripheral *p, DBusMessage *reply, const char *err);

struct pcall {
	LIST_ENTRY(pcall) link;
	struct sim_peripheral *p;
	DBusPendingCall *pc;
	reply_fn fn;
};

static void pcall_notify(DBusPendingCall *pc, void *data)
{
	struct pcall *c = data;
	struct sim_peripheral *p = c->p;
	DBusMessage *reply = dbus_pending_call_steal_reply(pc);
	const char *err = NULL;

	LIST_REMOVE(c, link);
	if (reply && dbus_message_get_type(reply) == DBUS_MESSAGE_TYPE_ERROR)
		err = dbus_message_get_error_name(reply);
	else if (!reply)
		err = "no reply";
	if (c->fn)
		c->fn(p, reply, err);
	if (reply)
		dbus_message_unref(reply);
	dbus_pending_call_unref(pc);
	free(c);
}

/* Sends m (consumed); fn runs exactly once with the reply or an error. */
static void call(struct sim_peripheral *p, DBusMessage *m, reply_fn fn)
{
	struct pcall *c = xnew(struct pcall);
	DBusPendingCall *pc = NULL;

	c->p = p;
	c->fn = fn;
	if (!dbus_connection_send_with_reply(p->conn, m, &pc, CALL_TIMEOUT_MS) || !pc) {
		dbus_message_unref(m);
		free(c);
		if (fn)
			fn(p, NULL, "disconnected");
		return;
	}
	dbus_message_unref(m);
	c->pc = pc;
	LIST_INSERT_HEAD(&p->calls, c, link);
	dbus_pending_call_set_notify(pc, pcall_notify, c, NULL);
}

static DBusMessage *bluez_call(const char *path, const char *iface, const char *method)
{
	return dbus_message_new_method_call(BLUEZ, path, iface, method);
}

/* ---- message building --------------------------------------------------- */

static void put_variant(DBusMessageIter *it, int type, const char *sig, const void *v)
{
	DBusMessageIter var;

	dbus_message_iter_open_container(it, DBUS_TYPE_VARIANT, sig, &var);
	dbus_message_iter_append_basic(&var, type, v);
	dbus_message_iter_close_container(it, &var);
}

/* One "name": variant entry of an a{sv}. */
static void put_entry(DBusMessageIter *dict, const char *name, int type, const char *sig,
		      const void *v)
{
	DBusMessageIter e;

	dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &name);
	put_variant(&e, type, sig, v);
	dbus_message_iter_close_container(dict, &e);
}

static void put_bytes(DBusMessageIter *it, const uint8_t *buf, size_t len)
{
	DBusMessageIter arr;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "y", &arr);
	dbus_message_iter_append_fixed_array(&arr, DBUS_TYPE_BYTE, &buf, (int)len);
	dbus_message_iter_close_container(it, &arr);
}

static void put_entry_strv(DBusMessageIter *dict, const char *name, const char *const *v)
{
	DBusMessageIter e, var, arr;

	dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &name);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "as", &var);
	dbus_message_iter_open_container(&var, DBUS_TYPE_ARRAY, "s", &arr);
	for (; *v; v++)
		dbus_message_iter_append_basic(&arr, DBUS_TYPE_STRING, v);
	dbus_message_iter_close_container(&var, &arr);
	dbus_message_iter_close_container(&e, &var);
	dbus_message_iter_close_container(dict, &e);
}

/* ManufacturerData a{qv}: { company: ay record }. */
static void put_entry_mfr(DBusMessageIter *dict, uint16_t company, const uint8_t *buf,
			  size_t len)
{
	static const char *name = "ManufacturerData";
	DBusMessageIter e, var, arr, me, mv;

	dbus_message_iter_open_container(dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &name);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "a{qv}", &var);
	dbus_message_iter_open_container(&var, DBUS_TYPE_ARRAY, "{qv}", &arr);
	dbus_message_iter_open_container(&arr, DBUS_TYPE_DICT_ENTRY, NULL, &me);
	dbus_message_iter_append_basic(&me, DBUS_TYPE_UINT16, &company);
	dbus_message_iter_open_container(&me, DBUS_TYPE_VARIANT, "ay", &mv);
	put_bytes(&mv, buf, len);
	dbus_message_iter_close_container(&me, &mv);
	dbus_message_iter_close_container(&arr, &me);
	dbus_message_iter_close_container(&var, &arr);
	dbus_message_iter_close_container(&e, &var);
	dbus_message_iter_close_container(dict, &e);
}

/* ---- exported objects: properties ---------------------------------------- */

enum obj { OBJ_APP = 0, OBJ_SVC, OBJ_CHR, OBJ_ADV, OBJ_NONE };

static const char *obj_iface(enum obj o)
{
	return o == OBJ_SVC ? IFACE_SVC : o == OBJ_CHR ? IFACE_CHR : o == OBJ_ADV ? IFACE_ADV : NULL;
}

static void svc_props(struct sim_peripheral *p, DBusMessageIter *dict)
{
	const char *uuid = SMP_SVC_UUID;
	dbus_bool_t primary = TRUE;

	put_entry(dict, "UUID", DBUS_TYPE_STRING, "s", &uuid);
	put_entry(dict, "Primary", DBUS_TYPE_BOOLEAN, "b", &primary);
}

static void chr_props(struct sim_peripheral *p, DBusMessageIter *dict)
{
	static const char *const flags[] = { "write-without-response", "notify", NULL };
	const char *uuid = SMP_CHR_UUID, *svc = SVC_PATH(p);
	dbus_bool_t notifying = p->notifying;

	put_entry(dict, "UUID", DBUS_TYPE_STRING, "s", &uuid);
	put_entry(dict, "Service", DBUS_TYPE_OBJECT_PATH, "o", &svc);
	put_entry_strv(dict, "Flags", flags);
	put_entry(dict, "Notifying", DBUS_TYPE_BOOLEAN, "b", &notifying);
}

static void adv_props(struct sim_peripheral *p, DBusMessageIter *dict)
{
	static const char *const uuids[] = { SMP_SVC_UUID, NULL };
	const char *type = "peripheral", *name = sim_device_name(p->dev);
	dbus_bool_t discoverable = TRUE;
	const uint8_t *rec;
	uint16_t company;
	size_t len;

	put_entry(dict, "Type", DBUS_TYPE_STRING, "s", &type);
	put_entry_strv(dict, "ServiceUUIDs", uuids);
	put_entry(dict, "LocalName", DBUS_TYPE_STRING, "s", &name);
	put_entry(dict, "Discoverable", DBUS_TYPE_BOOLEAN, "b", &discoverable);
	if (!p->adv_no_record &&
	    sim_device_manufacturer_data(p->dev, &company, &rec, &len) == 0)
		put_entry_mfr(dict, company, rec, len);
}

static void obj_props(struct sim_peripheral *p, enum obj o, DBusMessageIter *dict)
{
	if (o == OBJ_SVC)
		svc_props(p, dict);
	else if (o == OBJ_CHR)
		chr_props(p, dict);
	else if (o == OBJ_ADV)
		adv_props(p, dict);
}

/* a{sv} of one object's properties appended to it. */
static void put_props(struct sim_peripheral *p, enum obj o, DBusMessageIter *it)
{
	DBusMessageIter dict;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	obj_props(p, o, &dict);
	dbus_message_iter_close_container(it, &dict);
}

/* GetManagedObjects of the application: the service and the characteristic
 * (bluetoothd adds the CCC descriptor of a notify characteristic itself). */
static DBusMessage *managed_objects(struct sim_peripheral *p, DBusMessage *m)
{
	DBusMessage *r = dbus_message_new_method_return(m);
	DBusMessageIter it, objs, oe, ifs, ie;

	dbus_message_iter_init_append(r, &it);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{oa{sa{sv}}}", &objs);
	for (enum obj o = OBJ_SVC; o <= OBJ_CHR; o++) {
		const char *path = p->paths[o], *iface = obj_iface(o);

		dbus_message_iter_open_container(&objs, DBUS_TYPE_DICT_ENTRY, NULL, &oe);
		dbus_message_iter_append_basic(&oe, DBUS_TYPE_OBJECT_PATH, &path);
		dbus_message_iter_open_container(&oe, DBUS_TYPE_ARRAY, "{sa{sv}}", &ifs);
		dbus_message_iter_open_container(&ifs, DBUS_TYPE_DICT_ENTRY, NULL, &ie);
		dbus_message_iter_append_basic(&ie, DBUS_TYPE_STRING, &iface);
		put_props(p, o, &ie);
		dbus_message_iter_close_container(&ifs, &ie);
		dbus_message_iter_close_container(&oe, &ifs);
		dbus_message_iter_close_container(&objs, &oe);
	}
	dbus_message_iter_close_container(&it, &objs);
	return r;
}

/* Properties.GetAll on one of our objects (what bluetoothd's proxies use);
 * Get is not needed by bluetoothd and answered NotSupported. */
static DBusMessage *props_call(struct sim_peripheral *p, enum obj o, DBusMessage *m)
{
	const char *iface = NULL, *want = obj_iface(o);
	DBusMessage *r;
	DBusMessageIter it;

	if (!dbus_message_is_method_call(m, IFACE_PROPS, "GetAll"))
		return dbus_message_new_error(m, DBUS_ERROR_NOT_SUPPORTED, "Use GetAll");
	if (!dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID) ||
	    !want || strcmp(iface, want))
		return dbus_message_new_error(m, DBUS_ERROR_INVALID_ARGS, "No such interface");
	r = dbus_message_new_method_return(m);
	dbus_message_iter_init_append(r, &it);
	put_props(p, o, &it);
	return r;
}

/* ---- the link: writes in, notifications out ----------------------------- */

/* The link to the central is gone (or must be): forget its state. */
static void link_reset(struct sim_peripheral *p)
{
	sim_device_cancel_replies(p->dev, p);
	p->rx_len = 0;
	p->writes = 0;
}

static void reply_cb(struct sim_device *dev, const uint8_t *frame, size_t len, void *ud)
{
	struct sim_peripheral *p = ud;
	/* MTU - 5, not Zephyr's MTU - 3: bluetoothd 5.66 serves a central that
	 * announced support for it (BlueZ does) with Handle Multiple Value
	 * Notifications, whose handle + length take 4 bytes, and silently cuts
	 * longer values (seen in tests/vm: 495 -> 493). */
	size_t chunk = p->mtu > 25 ? p->mtu - 5u : 20u;
	static const char *iface = IFACE_CHR;

	if (chunk > NOTIFY_MAX)
		chunk = NOTIFY_MAX;
	if (p->verbose)
		say(p, "tx %zu bytes in %zu notifications", len, (len + chunk - 1) / chunk);
	/* One PropertiesChanged(Value) = one notification to every central
	 * that enabled the CCC; back to back, like Zephyr's SMP transport. */
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		DBusMessage *s = dbus_message_new_signal(CHR_PATH(p), IFACE_PROPS,
							 "PropertiesChanged");
		DBusMessageIter it, dict, e, var, inval;
		const char *name = "Value";

		dbus_message_iter_init_append(s, &it);
		dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &iface);
		dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
		dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &name);
		dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "ay", &var);
		put_bytes(&var, frame + off, n);
		dbus_message_iter_close_container(&e, &var);
		dbus_message_iter_close_container(&dict, &e);
		dbus_message_iter_close_container(&it, &dict);
		dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "s", &inval);
		dbus_message_iter_close_container(&it, &inval);
		dbus_connection_send(p->conn, s, NULL);
		dbus_message_unref(s);
		p->notifications++;
	}
}

/* Zephyr's SMP reassembly: the first write's header says how long the frame
 * is; later writes append until it is complete. A frame the device refuses
 * (buffers full, too big, down) is dropped silently, as Zephyr does. */
static void rx_bytes(struct sim_peripheral *p, const uint8_t *buf, size_t len)
{
	if (len > RX_MAX - p->rx_len) {
		p->rx_len = 0; /* garbage: start over */
		return;
	}
	memcpy(p->rx + p->rx_len, buf, len);
	p->rx_len += len;
	while (p->rx_len >= 8) {
		size_t need = 8u + ((size_t)p->rx[2] << 8 | p->rx[3]);

		if (need > RX_MAX) {
			p->rx_len = 0;
			return;
		}
		if (p->rx_len < need)
			return;
		int r = sim_device_rx_frame(p->dev, p->rx, need, reply_cb, p);

		if (p->verbose || r < 0)
			say(p, "rx frame %zu bytes in %u writes (mtu %u)%s%s", need, p->writes, p->mtu,
			    r < 0 ? ": dropped, " : "", r < 0 ? strerror(-r) : "");
		p->writes = 0;
		memmove(p->rx, p->rx + need, p->rx_len - need);
		p->rx_len -= need;
	}
}

/* Options of WriteValue: "mtu" (q) and "device" (o) matter here. */
static void write_options(struct sim_peripheral *p, DBusMessageIter *dict)
{
	for (; dbus_message_iter_get_arg_type(dict) == DBUS_TYPE_DICT_ENTRY;
	     dbus_message_iter_next(dict)) {
		DBusMessageIter e, v;
		const char *k;

		dbus_message_iter_recurse(dict, &e);
		dbus_message_iter_get_basic(&e, &k);
		dbus_message_iter_next(&e);
		dbus_message_iter_recurse(&e, &v);
		if (!strcmp(k, "mtu") && dbus_message_iter_get_arg_type(&v) == DBUS_TYPE_UINT16) {
			dbus_message_iter_get_basic(&v, &p->mtu);
		} else if (!strcmp(k, "device") &&
			   dbus_message_iter_get_arg_type(&v) == DBUS_TYPE_OBJECT_PATH) {
			const char *dev;

			dbus_message_iter_get_basic(&v, &dev);
			if (!p->central || strcmp(p->central, dev)) {
				free(p->central);
				p->central = xstrdup(dev);
			}
		}
	}
}

static DBusMessage *write_value(struct sim_peripheral *p, DBusMessage *m)
{
	DBusMessageIter it, arr, dict;
	const uint8_t *buf = NULL;
	int n = 0;

	if (!dbus_message_iter_init(m, &it) ||
	    dbus_message_iter_get_arg_type(&it) != DBUS_TYPE_ARRAY ||
	    dbus_message_iter_get_element_type(&it) != DBUS_TYPE_BYTE)
		return dbus_message_new_error(m, "org.bluez.Error.InvalidArguments", "ay a{sv}");
	dbus_message_iter_recurse(&it, &arr);
	dbus_message_iter_get_fixed_array(&arr, &buf, &n);
	if (dbus_message_iter_next(&it) && dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_ARRAY) {
		dbus_message_iter_recurse(&it, &dict);
		write_options(p, &dict);
	}
	if (n > 0) {
		p->writes++;
		rx_bytes(p, buf, (size_t)n);
	}
	return dbus_message_new_method_return(m);
}

static DBusMessage *chr_call(struct sim_peripheral *p, DBusMessage *m)
{
	if (dbus_message_is_method_call(m, IFACE_CHR, "WriteValue"))
		return write_value(p, m);
	if (dbus_message_is_method_call(m, IFACE_CHR, "StartNotify") ||
	    dbus_message_is_method_call(m, IFACE_CHR, "StopNotify")) {
		p->notifying = dbus_message_is_method_call(m, IFACE_CHR, "StartNotify");
		say(p, "%s", p->notifying ? "notifications on" : "notifications off");
		return dbus_message_new_method_return(m);
	}
	return dbus_message_new_error(m, "org.bluez.Error.NotSupported", "Not supported");
}

/* ---- registration with bluetoothd ------------------------------------------ */

static void kick(struct sim_peripheral *p);

static void retry_later(struct sim_peripheral *p)
{
	if (p->attempts++ >= RETRY_MAX) {
		say(p, "giving up registering with bluetoothd after %u attempts", RETRY_MAX);
		return;
	}
	event_add(p->retry_ev, &(struct timeval){ 0, RETRY_MS * 1000 });
}

static void retry_cb(evutil_socket_t fd, short what, void *ud)
{
	kick(ud);
}

static void app_reply(struct sim_peripheral *p, DBusMessage *r, const char *err)
{
	p->app_pending = false;
	if (err) {
		say(p, "RegisterApplication on %s: %s", p->adapter_path, err);
		retry_later(p);
		return;
	}
	p->app_on = true;
	p->attempts = 0;
	say(p, "GATT application registered on %s", p->adapter_path);
	kick(p);
}

/* Powered first (a fresh bluetoothd may leave the adapter off), then the
 * application; an error powering is reported by the registration anyway. */
static void power_reply(struct sim_peripheral *p, DBusMessage *r, const char *err)
{
	DBusMessage *m = bluez_call(p->adapter_path, "org.bluez.GattManager1",
				    "RegisterApplication");
	const char *app = APP_PATH(p);
	DBusMessageIter it, dict;

	if (err)
		say(p, "powering %s: %s", p->adapter_path, err);
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_OBJECT_PATH, &app);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	dbus_message_iter_close_container(&it, &dict);
	call(p, m, app_reply);
}

static void power_on(struct sim_peripheral *p)
{
	DBusMessage *m = bluez_call(p->adapter_path, IFACE_PROPS, "Set");
	const char *iface = "org.bluez.Adapter1", *prop = "Powered";
	dbus_bool_t on = TRUE;
	DBusMessageIter it;

	p->app_pending = true;
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &iface);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &prop);
	put_variant(&it, DBUS_TYPE_BOOLEAN, "b", &on);
	call(p, m, power_reply);
}

static void adv_reply(struct sim_peripheral *p, DBusMessage *r, const char *err)
{
	if (err && !p->adv_no_record) {
		/* Legacy advertising has 31 bytes: flags, the 128-bit UUID and the
		 * 15-byte record do not fit together (BlueZ 5.66 cannot move the
		 * record to the scan response). Discovery needs the UUID. */
		say(p, "RegisterAdvertisement with the record: %s; advertising without it", err);
		p->adv_no_record = true;
		p->adv = ADV_OFF;
		kick(p);
		return;
	}
	if (err) {
		say(p, "RegisterAdvertisement on %s: %s", p->adapter_path, err);
		p->adv = ADV_OFF;
		retry_later(p);
		return;
	}
	p->adv = ADV_ON;
	say(p, "advertising on %s (%s)", p->adapter_path,
	    p->adv_no_record ? "name, SMP UUID" : "name, SMP UUID, record");
	kick(p);
}

static void unadv_reply(struct sim_peripheral *p, DBusMessage *r, const char *err)
{
	p->adv = ADV_OFF;
	say(p, "advertising stopped%s%s", err ? ": " : "", err ? err : "");
	kick(p);
}

static void adv_call(struct sim_peripheral *p, bool on)
{
	DBusMessage *m = bluez_call(p->adapter_path, "org.bluez.LEAdvertisingManager1",
				    on ? "RegisterAdvertisement" : "UnregisterAdvertisement");
	const char *adv = ADV_PATH(p);
	DBusMessageIter it, dict;

	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_OBJECT_PATH, &adv);
	if (on) {
		dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
		dbus_message_iter_close_container(&it, &dict);
	}
	p->adv = on ? ADV_REGISTERING : ADV_UNREGISTERING;
	call(p, m, on ? adv_reply : unadv_reply);
}

/* Brings the registrations in line with what is wanted; one call at a time. */
static void kick(struct sim_peripheral *p)
{
	if (!p->bluez_up || p->app_pending)
		return;
	if (!p->app_on) {
		power_on(p);
		return;
	}
	if (p->adv == ADV_REGISTERING || p->adv == ADV_UNREGISTERING)
		return;
	if (p->want_adv && p->adv == ADV_OFF)
		adv_call(p, true);
	else if (!p->want_adv && p->adv == ADV_ON)
		adv_call(p, false);
}

static void cancel_calls(struct sim_peripheral *p)
{
	struct pcall *c;

	while ((c = LIST_FIRST(&p->calls))) {
		LIST_REMOVE(c, link);
		dbus_pending_call_cancel(c->pc);
		dbus_pending_call_unref(c->pc);
		free(c);
	}
}

/* Drops the link from the watch's side: Device1.Disconnect of the central
 * on our adapter (bluetoothd then tears the LE connection down). */
static void drop_link(struct sim_peripheral *p, const char *why)
{
	link_reset(p);
	if (!p->central || !p->bluez_up)
		return;
	say(p, "%s: disconnecting %s", why, p->central);
	call(p, bluez_call(p->central, "org.bluez.Device1", "Disconnect"), NULL);
}

static void bluez_owner(struct sim_peripheral *p, bool up)
{
	cancel_calls(p);
	event_del(p->retry_ev);
	link_reset(p);
	free(p->central);
	p->central = NULL;
	p->app_on = p->app_pending = false;
	p->adv = ADV_OFF;
	p->attempts = 0;
	p->bluez_up = up;
	say(p, "bluetoothd %s", up ? "is up" : "went away");
	kick(p);
}

static void owner_reply(struct sim_peripheral *p, DBusMessage *r, const char *err)
{
	if (!err)
		bluez_owner(p, true);
	/* else: not running yet; NameOwnerChanged will say when it is */
}

/* ---- the watch's own events ------------------------------------------------- */

static void obs_reset(struct sim_device *dev, void *ud)
{
	struct sim_peripheral *p = ud;

	p->want_adv = false;
	drop_link(p, "reset");
	kick(p);
}

static void obs_booted(struct sim_device *dev, void *ud)
{
	struct sim_peripheral *p = ud;

	p->want_adv = sim_device_in_range(dev);
	say(p, "booted (boot %u)", sim_device_boot_count(dev));
	kick(p);
}

static void obs_range(struct sim_device *dev, bool in_range, void *ud)
{
	struct sim_peripheral *p = ud;

	p->want_adv = in_range && sim_device_is_up(dev);
	if (!in_range)
		drop_link(p, "out of range");
	kick(p);
}

static void obs_disconnect(struct sim_device *dev, void *ud)
{
	drop_link(ud, "fault");
}

static const struct sim_device_observer observer = {
	.reset = obs_reset,
	.booted = obs_booted,
	.range = obs_range,
	.disconnect = obs_disconnect,
};

/* ---- bus: signals and method calls ----------------------------------------- */

/* Device1 properties (a{sv} at dict) of path under our adapter: the
 * central came (Connected true) or went (Connected false). */
static void device_props(struct sim_peripheral *p, const char *path, DBusMessageIter *dict_in)
{
	DBusMessageIter dict = *dict_in, e, v;
	dbus_bool_t connected;
	const char *k;

	for (; dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY;
	     dbus_message_iter_next(&dict)) {
		dbus_message_iter_recurse(&dict, &e);
		dbus_message_iter_get_basic(&e, &k);
		dbus_message_iter_next(&e);
		dbus_message_iter_recurse(&e, &v);
		if (strcmp(k, "Connected") || dbus_message_iter_get_arg_type(&v) != DBUS_TYPE_BOOLEAN)
			continue;
		dbus_message_iter_get_basic(&v, &connected);
		if (connected) {
			free(p->central);
			p->central = xstrdup(path);
			say(p, "central %s connected", path);
		} else if (p->central && !strcmp(p->central, path)) {
			say(p, "central %s disconnected (%llu notifications sent)", path,
			    (unsigned long long)p->notifications);
			link_reset(p);
			free(p->central);
			p->central = NULL;
		}
	}
}

/* PropertiesChanged(Device1) under our adapter. */
static void device_changed(struct sim_peripheral *p, DBusMessage *m)
{
	const char *path = dbus_message_get_path(m);
	DBusMessageIter it, dict;

	if (!path || !dbus_message_iter_init(m, &it) || !dbus_message_iter_next(&it) ||
	    dbus_message_iter_get_arg_type(&it) != DBUS_TYPE_ARRAY)
		return;
	dbus_message_iter_recurse(&it, &dict);
	device_props(p, path, &dict);
}

/* InterfacesAdded: a central bluetoothd had not seen before appears
 * already connected (no PropertiesChanged then). */
static void device_added(struct sim_peripheral *p, DBusMessage *m)
{
	DBusMessageIter it, ifs, e, props;
	const char *path, *iface;

	if (!dbus_message_iter_init(m, &it) ||
	    dbus_message_iter_get_arg_type(&it) != DBUS_TYPE_OBJECT_PATH)
		return;
	dbus_message_iter_get_basic(&it, &path);
	if (strncmp(path, p->adapter_path, strlen(p->adapter_path)) ||
	    path[strlen(p->adapter_path)] != '/' || !dbus_message_iter_next(&it) ||
	    dbus_message_iter_get_arg_type(&it) != DBUS_TYPE_ARRAY)
		return;
	dbus_message_iter_recurse(&it, &ifs);
	for (; dbus_message_iter_get_arg_type(&ifs) == DBUS_TYPE_DICT_ENTRY;
	     dbus_message_iter_next(&ifs)) {
		dbus_message_iter_recurse(&ifs, &e);
		dbus_message_iter_get_basic(&e, &iface);
		dbus_message_iter_next(&e);
		if (strcmp(iface, "org.bluez.Device1") ||
		    dbus_message_iter_get_arg_type(&e) != DBUS_TYPE_ARRAY)
			continue;
		dbus_message_iter_recurse(&e, &props);
		device_props(p, path, &props);
	}
}

static DBusHandlerResult filter_cb(DBusConnection *conn, DBusMessage *m, void *ud)
{
	struct sim_peripheral *p = ud;
	const char *name, *old, *new;

	if (dbus_message_is_signal(m, DBUS_INTERFACE_DBUS, "NameOwnerChanged") &&
	    dbus_message_get_args(m, NULL, DBUS_TYPE_STRING, &name, DBUS_TYPE_STRING, &old,
				  DBUS_TYPE_STRING, &new, DBUS_TYPE_INVALID) &&
	    !strcmp(name, BLUEZ)) {
		if (*old || *new)
			bluez_owner(p, *new != '\0');
	} else if (dbus_message_is_signal(m, IFACE_PROPS, "PropertiesChanged") &&
		   dbus_message_get_path(m) &&
		   !strncmp(dbus_message_get_path(m), p->adapter_path, strlen(p->adapter_path))) {
		device_changed(p, m);
	} else if (dbus_message_is_signal(m, IFACE_OM, "InterfacesAdded")) {
		device_added(p, m);
	}
	return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

static DBusMessage *obj_call(struct sim_peripheral *p, enum obj o, DBusMessage *m)
{
	if (dbus_message_has_interface(m, IFACE_PROPS))
		return props_call(p, o, m);
	if (o == OBJ_APP && dbus_message_is_method_call(m, IFACE_OM, "GetManagedObjects"))
		return managed_objects(p, m);
	if (o == OBJ_CHR)
		return chr_call(p, m);
	if (o == OBJ_ADV && dbus_message_is_method_call(m, IFACE_ADV, "Release")) {
		/* bluetoothd dropped our advertisement (adapter off, ...). */
		say(p, "advertisement released by bluetoothd");
		p->adv = ADV_OFF;
		event_add(p->retry_ev, &(struct timeval){ 0, RETRY_MS * 1000 });
		return dbus_message_new_method_return(m);
	}
	return NULL;
}

static DBusHandlerResult object_cb(DBusConnection *conn, DBusMessage *m, void *ud)
{
	struct sim_peripheral *p = ud;
	const char *path = dbus_message_get_path(m);
	enum obj o = OBJ_APP;
	DBusMessage *r;

	if (dbus_message_get_type(m) != DBUS_MESSAGE_TYPE_METHOD_CALL || !path)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	while (o < OBJ_NONE && strcmp(path, p->paths[o]))
		o++;
	if (o == OBJ_NONE)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	r = obj_call(p, o, m);
	if (!r)
		r = dbus_message_new_error(m, DBUS_ERROR_UNKNOWN_METHOD, "Unknown method");
	if (!dbus_message_get_no_reply(m))
		dbus_connection_send(conn, r, NULL);
	dbus_message_unref(r);
	return DBUS_HANDLER_RESULT_HANDLED;
}

static const DBusObjectPathVTable vtable = { .message_function = object_cb };

/* ---- lifetime ------------------------------------------------------------------ */

static int bus_setup(struct sim_peripheral *p, const char *address, char **err)
{
	DBusError derr;
	char rule[256];
	const char *name = BLUEZ;
	DBusMessage *m;

	dbus_error_init(&derr);
	p->conn = dbus_loop_connect(address, &derr);
	if (!p->conn) {
		*err = xstrdup(derr.message ? derr.message : "cannot connect to D-Bus");
		dbus_error_free(&derr);
		return -ECONNREFUSED;
	}
	dbus_connection_set_exit_on_disconnect(p->conn, FALSE);
	for (enum obj o = OBJ_APP; o < OBJ_NONE; o++)
		if (!dbus_connection_register_object_path(p->conn, p->paths[o], &vtable, p)) {
			*err = xstrdup("cannot export the GATT objects");
			return -ENOMEM;
		}
	dbus_connection_add_filter(p->conn, filter_cb, p, NULL);
	dbus_bus_add_match(p->conn, "type='signal',sender='org.freedesktop.DBus',"
			   "interface='org.freedesktop.DBus',member='NameOwnerChanged',"
			   "arg0='org.bluez'", NULL);
	snprintf(rule, sizeof(rule), "type='signal',sender='org.bluez',interface='%s',"
		 "member='PropertiesChanged',arg0='org.bluez.Device1',path_namespace='%s'",
		 IFACE_PROPS, p->adapter_path);
	dbus_bus_add_match(p->conn, rule, NULL);
	dbus_bus_add_match(p->conn, "type='signal',sender='org.bluez',"
			   "interface='org.freedesktop.DBus.ObjectManager',member='InterfacesAdded'",
			   NULL);
	p->loop = dbus_loop_attach(p->base, p->conn);
	m = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS, DBUS_INTERFACE_DBUS,
					 "GetNameOwner");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &name, DBUS_TYPE_INVALID);
	call(p, m, owner_reply);
	return 0;
}

struct sim_peripheral *sim_peripheral_new(struct event_base *base, struct sim_device *dev,
					  const char *bus_address, const char *adapter,
					  unsigned index, sim_peripheral_log_fn log, void *log_ud,
					  char **err)
{
	struct sim_peripheral *p = xnew(struct sim_peripheral);
	static const char *const suffix[] = { "", "/service0", "/service0/char0", "/adv" };
	size_t n = strlen(adapter ? adapter : "");

	if (!n || n > 16 || strchr(adapter, '/')) {
		*err = xstrdup("adapter must be a name like hci1");
		free(p);
		return NULL;
	}
	p->base = base;
	p->dev = dev;
	p->log = log;
	p->log_ud = log_ud;
	p->mtu = 23;
	p->verbose = getenv("SMPGW_SIM_PERIPHERAL_VERBOSE") != NULL;
	p->rx = xmalloc(RX_MAX);
	p->adapter_path = xmalloc(n + 12);
	snprintf(p->adapter_path, n + 12, "/org/bluez/%s", adapter);
	for (size_t i = 0; i < ARRAY_SIZE(suffix); i++)
		snprintf(p->paths[i], sizeof(p->paths[i]), "/org/smpgw/sim%u%s", index, suffix[i]);
	/* The advertisement lives outside the application's tree: bluetoothd
	 * asks its root for managed objects and must not find it there. */
	snprintf(ADV_PATH(p), sizeof(p->paths[3]), "/org/smpgw/adv%u", index);
	LIST_INIT(&p->calls);
	p->retry_ev = evtimer_new(base, retry_cb, p);
	p->want_adv = sim_device_is_up(dev) && sim_device_in_range(dev);
	p->obs_id = sim_device_observe(dev, &observer, p);
	if (bus_setup(p, bus_address, err) < 0)
		return sim_peripheral_free(p);
	return p;
}

struct sim_peripheral *sim_peripheral_free(struct sim_peripheral *p)
{
	if (!p)
		return NULL;
	if (p->obs_id)
		sim_device_unobserve(p->dev, p->obs_id);
	sim_device_cancel_replies(p->dev, p);
	if (p->conn) {
		cancel_calls(p);
		p->loop = dbus_loop_detach(p->loop);
		for (enum obj o = OBJ_APP; o < OBJ_NONE; o++)
			dbus_connection_unregister_object_path(p->conn, p->paths[o]);
		dbus_connection_remove_filter(p->conn, filter_cb, p);
		dbus_connection_close(p->conn);
		dbus_connection_unref(p->conn);
	}
	event_free(p->retry_ev);
	free(p->central);
	free(p->adapter_path);
	free(p->rx);
	free(p);
	return NULL;
}
