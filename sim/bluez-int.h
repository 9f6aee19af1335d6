/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by the fake org.bluez files: bluez.c (bus name, /org/bluez,
 * adapters, discovery, agents), bluez-device.c (Device1, pairing, GATT
 * objects) and bluez-link.c (acquired fds, WriteValue/notifications, the BLE
 * link timing model).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <dbus/dbus.h>

#include "bluez-obj.h"
#include "bluez.h"

struct event;
struct sim_device;

#define BZ_SMP_SERVICE_UUID "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
#define BZ_SMP_CHAR_UUID "da2e7828-fbce-4e01-ae9e-261174997c48"
#define BZ_N_GATT 8

struct bz_session {
	struct bz_session *next;
	char *owner;          /* unique bus name of the client */
	bool started;         /* StartDiscovery called (else: filter only) */
	bool has_filter;
	char **uuids;         /* filter UUIDs, lower case, NULL-terminated or NULL */
	bool has_rssi;
	int16_t rssi;
	bool has_pathloss;
	uint16_t pathloss;
	bool duplicate;       /* DuplicateData */
	char transport[8];
};

struct bz_adapter {
	struct sim_bluez *bz;
	unsigned index;            /* hciN on this bus */
	unsigned fleet_index;      /* the fleet's adapters[] entry */
	char path[32];
	char address[18];
	char *alias;
	bool powered, discoverable, pairable;
	uint32_t discoverable_timeout, pairable_timeout;
	unsigned max_connections, n_connections;
	struct bz_object *obj;
	struct bz_session *sessions;
	bool discovering;
	struct event *scan_ev;
	uint64_t air_busy_us;  /* the radio is shared by every link on it */
};

enum bz_conn_state {
	BZ_CONN_DISCONNECTED,
	BZ_CONN_CONNECTING,
	BZ_CONN_CONNECTED,
	BZ_CONN_DISCONNECTING,
};

struct bz_pdu {
	struct bz_pdu *next;
	uint64_t queued_us;        /* handed to the controller */
	uint64_t due_us;           /* through the air; UINT64_MAX: not yet sent */
	size_t len;
	uint8_t data[];
};

struct bz_notify_client {
	struct bz_notify_client *next;
	char *owner;
};

struct bz_gatt {
	struct bz_dev *dev;
	const struct bz_gatt_desc *desc;
	struct bz_object *obj;
};

struct bz_dev {
	struct sim_bluez *bz;
	struct bz_adapter *ad;
	struct sim_device *sim;
	size_t index;              /* in the fleet */
	unsigned obs_id;
	/* what this bus (gateway) hears of the watch: heard (in its range),
	 * at the watch's own RSSI (follow) or at heard_rssi */
	bool heard, follow;
	int16_t heard_rssi;
	char path[64];
	struct bz_object *obj;     /* NULL until discovered */
	bool has_rssi;
	int16_t rssi;
	char *alias;
	bool trusted, blocked, paired, bonded, wake_allowed;
	bool watch_keys;           /* the watch holds the bond (lost on a reset with volatile_bonds) */
	bool pair_no_agent;        /* Pair() with no agent at all: fails, as bluetoothd 5.66 */
	/* bluetoothd's own pairing after an ATT security error (the GATT call
	 * that hit it waits: AcquireNotify or StartNotify) */
	DBusMessage *secure_msg;
	struct bz_gatt *secure_g;
	bool secure_acquire, secure_agreed;
	DBusPendingCall *secure_call;
	struct event *secure_ev;
	bool services_known;       /* GATT objects exported (cached afterwards) */
	enum bz_conn_state state;
	bool resolved;
	DBusMessage *connect_msg;  /* pending Connect (or the Pair that connects) */
	DBusMessage *disconnect_msg;
	DBusMessage *pair_msg;
	DBusPendingCall *agent_call;
	char *agent_owner, *agent_path; /* the agent asked, for Agent1.Cancel */
	struct event *conn_ev;     /* connect/resolve/disconnect steps */
	struct event *pair_ev;
	struct event *drop_ev;     /* supervision timeout after reset/range */
	struct event *expire_ev;   /* temporary device forgotten when not seen */
	uint64_t conn_deadline_us; /* LE create connection gives up then */
	bool establishing;         /* the watch advertised: CONNECT_IND sent */
	uint32_t passkey;
	uint64_t mfr_digest, svc_digest; /* advertising data last reported, 0: none */

	struct bz_gatt gatt[BZ_N_GATT];

	/* SMP characteristic / link */
	int wfd, nfd;              /* simulator's ends of acquired fds, -1 */
	struct event *wfd_ev, *nfd_ev;
	struct bz_notify_client *notify_clients;
	uint8_t *rx;               /* reassembly buffer */
	size_t rx_len, rx_want, rx_cap;
	unsigned smp_pending;      /* frames handed to the watch, not answered yet */
	unsigned burst;            /* writes since the watch was last idle (lossy fault) */
	bool desync;               /* lossy fault: reassembly swallows until disconnect */
	struct bz_pdu *up_head, *up_tail, *dn_head, *dn_tail;
	unsigned up_n, dn_n;
	struct event *up_ev, *dn_ev;
	uint64_t anchor_us;        /* first connection event of the link */
	struct event *ce_ev;       /* the next connection event with data to carry */
	uint64_t ce_next;          /* index of the first connection event not yet run */
	struct bz_pdu *up_send, *dn_send; /* first PDU not yet through, per direction */
	size_t up_left, dn_left;   /* its LL payload octets (L2CAP header incl.) to send */
	uint8_t value[520];        /* last notification (Value property) */
	size_t value_len;
};

struct sim_bluez {
	char *name;                /* --bus NAME=ADDRESS; NULL: plain --bus */
	unsigned bus_index;
	struct event_base *base;
	struct sim_fleet *fleet;
	DBusConnection *conn;
	struct dbus_loop *loop;
	struct bz_bus *bus;
	struct bz_object *root, *bluez;
	struct bz_adapter *adapters;
	unsigned n_adapters;
	struct bz_dev *devs;
	size_t n_devs;
	struct bz_agent *agents, *default_agent;
	struct event *register_ev;
	uint32_t le_conn_timeout_ms;
	uint32_t temp_timeout_ms;
	uint32_t agent_timeout_ms;
	uint32_t att_timeout_ms;   /* a GATT request never answered: the link drops */
	struct sim_bluez_counters counters;
};

/* bluez.c */
struct bz_agent;
bool bz_agent_for(struct sim_bluez *bz, const char *sender, const char **owner,
		  const char **path, const char **cap);

/* bluez-device.c */
extern const struct bz_iface *const bz_device_ifaces[];
void bz_dev_init(struct bz_dev *d);
void bz_dev_fini(struct bz_dev *d);
/* One advertisement received; every: report it even with an unchanged
 * RSSI (see bz_session_every()). */
void bz_dev_seen(struct bz_dev *d, bool every);
void bz_dev_expire_arm(struct bz_dev *d);
void bz_dev_remove(struct bz_dev *d);
void bz_dev_link_lost(struct bz_dev *d);
void bz_dev_props_changed(struct bz_dev *d, const char *prop);
void bz_dev_client_gone(struct bz_dev *d, const char *name);
/* The RSSI this bus hears the watch at. */
int bz_dev_rssi(const struct bz_dev *d);
/* In this bus's range (and the watch's own in_range). */
bool bz_dev_hears(const struct bz_dev *d);
/* The watch advertises: up, in range, fewer links than centrals it takes. */
bool bz_dev_advertising(const struct bz_dev *d);
/* This bus stopped hearing it: an established link drops after the
 * supervision timeout. */
void bz_dev_hearing_lost(struct bz_dev *d);
struct bz_object *bz_dev_smp_char(struct bz_dev *d);
/* A GATT call that needs an encrypted link on an unpaired watch: pairs as
 * bluetoothd does on its own (the default agent's RequestAuthorization);
 * the call's reply waits (NULL) or is an error. */
DBusMessage *bz_dev_auto_pair(struct bz_dev *d, struct bz_gatt *g, DBusMessage *msg,
			      bool acquire);

/* bluez-link.c */
extern const struct bz_iface *const bz_gatt_service_ifaces[];
extern const struct bz_iface *const bz_gatt_char_ifaces[];
extern const struct bz_iface *const bz_gatt_desc_ifaces[];
struct bz_gatt_desc {
	const char *suffix;    /* path below the device */
	int kind;              /* 0 service, 1 characteristic, 2 descriptor */
	const char *uuid;
	int parent;            /* index in the table, -1 */
	const char *const *flags;
	const char *value_hex;
	bool smp;
};
extern const struct bz_gatt_desc bz_gatt_table[BZ_N_GATT];
void bz_link_up(struct bz_dev *d);
/* Runs AcquireNotify (acquire) or StartNotify again once paired. */
DBusMessage *bz_gatt_secured(struct bz_gatt *g, DBusMessage *msg, bool acquire);
void bz_link_down(struct bz_dev *d);
