/* SPDX-License-Identifier: MIT */
/*
 * D-Bus helpers for the BLE transport: async calls with timeouts that can
 * be cancelled, BlueZ error names to errno, and readers for the a{sv}
 * property dictionaries BlueZ sends. No state of its own.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "links/ble-internal.h"
#include "util/util.h"

DBusPendingCall *ble_call(struct ble_manager *mgr, DBusMessage *msg,
			  int timeout_ms, DBusPendingCallNotifyFunction fn,
			  void *data)
{
	DBusPendingCall *pc = NULL;

	if (!mgr->conn || !dbus_connection_get_is_connected(mgr->conn) ||
	    !dbus_connection_send_with_reply(mgr->conn, msg, &pc, timeout_ms) ||
	    !pc) {
		dbus_message_unref(msg);
		return NULL;
	}
	dbus_message_unref(msg);
	if (!dbus_pending_call_set_notify(pc, fn, data, NULL)) {
		dbus_pending_call_cancel(pc);
		dbus_pending_call_unref(pc);
		return NULL;
	}
	return pc;
}

void ble_call_cancel(DBusPendingCall **pc)
{
	if (!*pc)
		return;
	dbus_pending_call_cancel(*pc);
	dbus_pending_call_unref(*pc);
	*pc = NULL;
}

DBusMessage *ble_call_reply(DBusPendingCall **pc)
{
	DBusMessage *reply = dbus_pending_call_steal_reply(*pc);

	dbus_pending_call_unref(*pc);
	*pc = NULL;
	return reply;
}

DBusMessage *ble_method(const char *path, const char *iface,
			const char *method)
{
	DBusMessage *m = dbus_message_new_method_call(BLUEZ_SERVICE, path,
						      iface, method);

	if (!m)
		abort(); /* out of memory, as xmalloc would */
	return m;
}

void ble_append_empty_dict(DBusMessageIter *it)
{
	DBusMessageIter dict;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	dbus_message_iter_close_container(it, &dict);
}

bool ble_error_is(const DBusMessage *reply, const char *name)
{
	const char *e = dbus_message_get_error_name((DBusMessage *)reply);

	return e && !strcmp(e, name);
}

static const char *error_text(const DBusMessage *reply)
{
	const char *s = NULL;
	DBusMessageIter it;

	if (dbus_message_iter_init((DBusMessage *)reply, &it) &&
	    dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_STRING)
		dbus_message_iter_get_basic(&it, &s);
	return s ? s : "";
}

bool ble_error_is_auth(const DBusMessage *reply)
{
	const char *e = dbus_message_get_error_name((DBusMessage *)reply);
	const char *text = error_text(reply);

	if (!e)
		return false;
	if (strstr(e, "NotAuthorized") || strstr(e, "Authentication") ||
	    strstr(e, "Insufficient"))
		return true;
	/* BlueZ reports ATT security errors as Failed/NotPermitted with a
	 * text; match the text conservatively. */
	return strcasestr(text, "authenticat") || strcasestr(text, "encrypt") ||
	       strcasestr(text, "not paired");
}

bool ble_error_is_stale_session(const DBusMessage *reply)
{
	/* bluetoothd 5.66 keeps a subscription whose call the client gave up
	 * on ("Notify acquired" / "Write acquired" to the same client). */
	return ble_error_is(reply, "org.bluez.Error.NotPermitted") &&
	       strcasestr(error_text(reply), "acquired");
}

struct err_map {
	const char *suffix;
	int err;
};

static const struct err_map err_table[] = {
	{ ".NoReply", -ETIMEDOUT },
	{ ".Timeout", -ETIMEDOUT },
	{ ".TimedOut", -ETIMEDOUT },
	{ ".NotPermitted", -EPERM },
	{ ".NotSupported", -EOPNOTSUPP },
	{ ".NotAuthorized", -EACCES },
	{ ".AuthenticationFailed", -EACCES },
	{ ".AuthenticationRejected", -EACCES },
	{ ".AuthenticationCanceled", -EACCES },
	{ ".AuthenticationTimeout", -EACCES },
	{ ".InProgress", -EINPROGRESS },
	{ ".AlreadyConnected", -EALREADY },
	{ ".AlreadyExists", -EALREADY },
	{ ".DoesNotExist", -ENODEV },
	{ ".UnknownObject", -ENODEV },
	{ ".UnknownMethod", -ENODEV },
	{ ".ServiceUnknown", -ENODEV },
	{ ".NameHasNoOwner", -ENODEV },
	{ ".NotReady", -EAGAIN },
	{ ".NotConnected", -ENOTCONN },
	{ ".InvalidArguments", -EINVAL },
	{ ".Disconnected", -ECONNRESET },
};

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

int ble_error_errno(const DBusMessage *reply)
{
	const char *e = dbus_message_get_error_name((DBusMessage *)reply);
	const char *text;

	if (!e)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(err_table); i++)
		if (ends_with(e, err_table[i].suffix))
			return err_table[i].err;
	text = error_text(reply);
	/* HCI 0x09 Connection Limit Exceeded ("le-connection-concurrent-
	 * connection-limit" in BlueZ 5.65+): the controller is full. */
	if (strcasestr(text, "connection-limit") || strcasestr(text, "connection limit"))
		return -EMLINK;
	if (strcasestr(text, "timeout") || strcasestr(text, "timed out"))
		return -ETIMEDOUT;
	if (strcasestr(text, "abort"))
		return -ECONNABORTED;
	return -EIO;
}

bool ble_dict_next(DBusMessageIter *dict, const char **key,
		   DBusMessageIter *var)
{
	DBusMessageIter entry;

	while (dbus_message_iter_get_arg_type(dict) == DBUS_TYPE_DICT_ENTRY) {
		dbus_message_iter_recurse(dict, &entry);
		dbus_message_iter_next(dict);
		if (dbus_message_iter_get_arg_type(&entry) != DBUS_TYPE_STRING)
			continue;
		dbus_message_iter_get_basic(&entry, key);
		dbus_message_iter_next(&entry);
		if (dbus_message_iter_get_arg_type(&entry) != DBUS_TYPE_VARIANT)
			continue;
		dbus_message_iter_recurse(&entry, var);
		return true;
	}
	return false;
}

bool ble_var_bool(DBusMessageIter *v, bool *ret)
{
	dbus_bool_t b;

	if (dbus_message_iter_get_arg_type(v) != DBUS_TYPE_BOOLEAN)
		return false;
	dbus_message_iter_get_basic(v, &b);
	*ret = b;
	return true;
}

bool ble_var_str(DBusMessageIter *v, const char **ret)
{
	int t = dbus_message_iter_get_arg_type(v);

	if (t != DBUS_TYPE_STRING && t != DBUS_TYPE_OBJECT_PATH)
		return false;
	dbus_message_iter_get_basic(v, ret);
	return true;
}

bool ble_var_bytes(DBusMessageIter *v, uint8_t **ret, size_t *ret_len)
{
	DBusMessageIter arr;
	const uint8_t *p = NULL;
	int n = 0;

	if (dbus_message_iter_get_arg_type(v) != DBUS_TYPE_ARRAY ||
	    dbus_message_iter_get_element_type(v) != DBUS_TYPE_BYTE)
		return false;
	dbus_message_iter_recurse(v, &arr);
	dbus_message_iter_get_fixed_array(&arr, &p, &n);
	*ret = n > 0 ? xmemdup(p, (size_t)n) : NULL;
	*ret_len = n > 0 ? (size_t)n : 0;
	return true;
}

bool ble_var_has_str(DBusMessageIter *v, const char *s)
{
	DBusMessageIter arr;
	const char *e;

	if (dbus_message_iter_get_arg_type(v) != DBUS_TYPE_ARRAY ||
	    dbus_message_iter_get_element_type(v) != DBUS_TYPE_STRING)
		return false;
	dbus_message_iter_recurse(v, &arr);
	for (; dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRING;
	     dbus_message_iter_next(&arr)) {
		dbus_message_iter_get_basic(&arr, &e);
		if (!strcasecmp(e, s))
			return true;
	}
	return false;
}
