/* SPDX-License-Identifier: MIT */
/*
 * The pairing agent (org.bluez.Agent1) the BLE manager registers with
 * BlueZ. Capability NoInputNoOutput: the watches pair "Just Works" (LE
 * Secure Connections without a passkey). A confirmation or authorization
 * (bluetoothd pairing on its own after an ATT security error) is accepted
 * only for a watch the gateway manages and may pair with (the link's
 * policy, ble_link_set_pairing); a refusal also ends that link's attempt
 * at once. Requests for a PIN or passkey are rejected. Only bluetoothd
 * itself may call it.
 */
#include <string.h>

#include "links/ble-internal.h"
#include "util/util.h"

static const char *const accept_methods[] = {
	"Release", "DisplayPinCode", "DisplayPasskey", "Cancel",
};

/* Methods whose first argument is the device asking to pair. */
static const char *const policy_methods[] = {
	"RequestConfirmation", "RequestAuthorization", "AuthorizeService",
};

static bool in_list(const char *member, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(member, list[i]))
			return true;
	return false;
}

static DBusMessage *policy_reply(struct ble_manager *mgr, DBusMessage *msg)
{
	const char *path = NULL;
	struct ble_link *bl;
	DBusMessageIter it;

	if (dbus_message_iter_init(msg, &it) &&
	    dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_OBJECT_PATH)
		dbus_message_iter_get_basic(&it, &path);
	bl = ble_mgr_link_by_dev_path(mgr, path);
	if (bl && ble_link_agent_request(bl))
		return dbus_message_new_method_return(msg);
	return dbus_message_new_error(msg, "org.bluez.Error.Rejected",
				      bl ? "Pairing with this watch is not allowed"
					 : "Not a watch this gateway manages");
}

static DBusHandlerResult agent_msg(DBusConnection *conn, DBusMessage *msg,
				   void *data)
{
	struct ble_manager *mgr = data;
	const char *sender = dbus_message_get_sender(msg);
	const char *member = dbus_message_get_member(msg);
	DBusMessage *reply = NULL;

	if (dbus_message_get_type(msg) != DBUS_MESSAGE_TYPE_METHOD_CALL ||
	    !dbus_message_has_interface(msg, BLUEZ_AGENT) || !member)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	if (!mgr->owner || !sender || strcmp(sender, mgr->owner)) {
		reply = dbus_message_new_error(msg, "org.bluez.Error.Rejected",
					       "Not bluetoothd");
	} else if (in_list(member, accept_methods, ARRAY_SIZE(accept_methods))) {
		reply = dbus_message_new_method_return(msg);
	} else if (in_list(member, policy_methods, ARRAY_SIZE(policy_methods))) {
		reply = policy_reply(mgr, msg);
	} else {
		reply = dbus_message_new_error(msg, "org.bluez.Error.Rejected",
					       "No input, no output");
	}
	if (reply && !dbus_message_get_no_reply(msg))
		dbus_connection_send(conn, reply, NULL);
	if (reply)
		dbus_message_unref(reply);
	return DBUS_HANDLER_RESULT_HANDLED;
}

static const DBusObjectPathVTable agent_vtable = {
	.message_function = agent_msg,
};

int ble_agent_export(struct ble_manager *mgr)
{
	if (!dbus_connection_register_object_path(mgr->conn, BLE_AGENT_PATH,
						  &agent_vtable, mgr))
		return -1;
	mgr->agent_exported = true;
	return 0;
}

static void default_reply(DBusPendingCall *pc, void *data)
{
	struct ble_manager *mgr = data;

	/* Not being the default agent only matters for pairings other
	 * programs start; ours go through Device1.Pair from this bus name. */
	dbus_message_unref(ble_call_reply(&mgr->agent_pc));
}

static DBusMessage *agent_call(const char *method, const char *cap)
{
	DBusMessage *m = ble_method("/org/bluez", BLUEZ_AGENT_MGR, method);
	const char *path = BLE_AGENT_PATH;

	if (cap)
		dbus_message_append_args(m, DBUS_TYPE_OBJECT_PATH, &path,
					 DBUS_TYPE_STRING, &cap, DBUS_TYPE_INVALID);
	else
		dbus_message_append_args(m, DBUS_TYPE_OBJECT_PATH, &path,
					 DBUS_TYPE_INVALID);
	return m;
}

static void register_reply(DBusPendingCall *pc, void *data)
{
	struct ble_manager *mgr = data;
	DBusMessage *reply = ble_call_reply(&mgr->agent_pc);

	mgr->agent_registered =
		dbus_message_get_type(reply) == DBUS_MESSAGE_TYPE_METHOD_RETURN ||
		ble_error_is(reply, "org.bluez.Error.AlreadyExists");
	dbus_message_unref(reply);
	if (mgr->agent_registered)
		mgr->agent_pc = ble_call(mgr, agent_call("RequestDefaultAgent", NULL),
					 BLE_CALL_TIMEOUT_MS, default_reply, mgr);
}

void ble_agent_register(struct ble_manager *mgr)
{
	ble_call_cancel(&mgr->agent_pc);
	mgr->agent_pc = ble_call(mgr, agent_call("RegisterAgent", "NoInputNoOutput"),
				 BLE_CALL_TIMEOUT_MS, register_reply, mgr);
}

void ble_agent_unexport(struct ble_manager *mgr)
{
	DBusMessage *m;

	ble_call_cancel(&mgr->agent_pc);
	if (mgr->agent_registered && mgr->owner) {
		m = agent_call("UnregisterAgent", NULL);
		dbus_message_set_no_reply(m, TRUE);
		dbus_connection_send(mgr->conn, m, NULL);
		dbus_message_unref(m);
	}
	mgr->agent_registered = false;
	if (mgr->agent_exported)
		dbus_connection_unregister_object_path(mgr->conn, BLE_AGENT_PATH);
	mgr->agent_exported = false;
}
