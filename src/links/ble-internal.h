/* SPDX-License-Identifier: MIT */
/*
 * Private to the BLE transport (ble-*.c): the manager's view of BlueZ's
 * objects (adapters, devices), the per-device link state machine, D-Bus
 * helpers and the optional HCI helpers. Nothing outside src/links/ble-*.c
 * includes this.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <dbus/dbus.h>

#include "links/ble-rx.h"
#include "links/ble.h"

struct event;
struct dbus_loop;

#define BLUEZ_SERVICE "org.bluez"
#define BLUEZ_ADAPTER "org.bluez.Adapter1"
#define BLUEZ_DEVICE "org.bluez.Device1"
#define BLUEZ_CHAR "org.bluez.GattCharacteristic1"
#define BLUEZ_AGENT_MGR "org.bluez.AgentManager1"
#define BLUEZ_AGENT "org.bluez.Agent1"
#define DBUS_PROPS "org.freedesktop.DBus.Properties"
#define DBUS_OM "org.freedesktop.DBus.ObjectManager"
#define BLE_AGENT_PATH "/org/smpgw/agent"

/* Bounds of one SMP frame on BLE: the header's 16-bit length + header. */
#define BLE_FRAME_MAX (65535 + 8)
/* Bytes a link may queue for sending before send() says -EAGAIN. */
#define BLE_TXQ_MAX (256 * 1024)
/* Short D-Bus calls (GetManagedObjects, Acquire*, StartNotify, ...). */
#define BLE_CALL_TIMEOUT_MS 10000
/* Pair(): Just Works takes ~0.5 s on a real radio, plus the connection
 * when Pair() has to connect first. */
#define BLE_PAIR_TIMEOUT_MS 10000
/* Failed attempts on a paired watch that look like its bond is gone (the
 * connection ends before the link is up) before the bond is declared lost. */
#define BLE_BOND_SUSPECTS 2
/* bluetoothd gone this soon after such an attempt: it crashed on it. */
#define BLE_CRASH_WINDOW_US 3000000ULL
#define BLE_DEFAULT_ATT_MTU 23
#define BLE_LIMIT_MEMORY_US (60ULL * 1000000)

enum ble_adapter_step {
	BLE_ADAPTER_POWER,
	BLE_ADAPTER_FILTER,
	BLE_ADAPTER_START,
};

struct ble_adapter {
	LIST_ENTRY(ble_adapter) entry;
	struct ble_manager *mgr;
	char *path;             /* /org/bluez/hci0 */
	const char *name;       /* last path element, points into path */
	bool powered, discovering, selected, filter_set;
	enum ble_adapter_step step; /* of the call in flight */
	unsigned active;        /* links holding a connection slot */
	unsigned waiting;       /* scheduler's scratch: waiters seen */
	/* The controller said it was full at this many links (0: never);
	 * believed for BLE_LIMIT_MEMORY_US, other programs' links come and go. */
	unsigned learned_max;
	uint64_t learned_us;
	DBusPendingCall *pc;    /* power / filter / start discovery chain */
	struct event *retry_ev; /* restart discovery after a failure */
};

struct ble_dev {
	LIST_ENTRY(ble_dev) entry;
	char *path;             /* /org/bluez/hci0/dev_AA_BB_... */
	char *address, *name, *adapter_path;
	int16_t rssi;
	bool rssi_new;          /* the update being handled carried RSSI */
	bool connected, resolved, paired, smp; /* smp: advertises the service */
	uint16_t mfr_id;
	uint8_t *mfr_data, *svc_data;
	size_t mfr_len, svc_len;
	char *char_path;        /* SMP characteristic, once resolved */
	uint16_t char_mtu;      /* its MTU property (0: unknown) */
};

enum ble_link_phase {
	BLE_PHASE_IDLE = 0,     /* nothing wanted, or parked */
	BLE_PHASE_QUEUED,       /* wants a connection slot */
	BLE_PHASE_BACKOFF,      /* waits for the retry timer */
	BLE_PHASE_CONNECTING,   /* Device1.Connect in flight or waiting resolve */
	BLE_PHASE_PAIRING,      /* Device1.Pair in flight */
	BLE_PHASE_ACQUIRING,    /* AcquireWrite/AcquireNotify/StartNotify */
	BLE_PHASE_UP,
	BLE_PHASE_DISCONNECTING, /* Device1.Disconnect in flight, slot held */
};

struct ble_chunk {
	STAILQ_ENTRY(ble_chunk) entry;
	size_t len;
	uint8_t data[];
};

struct ble_link {
	LIST_ENTRY(ble_link) entry;
	TAILQ_ENTRY(ble_link) qentry; /* manager's wait queue (phase QUEUED) */
	struct ble_manager *mgr;
	struct link *link;
	char *address;
	bool want;              /* gateway called connect and not disconnect */
	bool reassembly;
	bool paired_once;       /* Pair() tried in this attempt */
	bool fallback;          /* WriteValue/StartNotify path in use */
	bool mark;              /* manager's scratch: visit pending */
	bool connect_seen;      /* Connected true seen in this attempt */
	bool notify_pending;    /* AcquireNotify/StartNotify sent, no answer yet */
	bool connect_failed;    /* BlueZ answered Connect with an error */
	/* Pairing policy (ble_link_set_pairing) and what was learned. */
	bool pair_allowed, pair_first, rebond;
	bool needs_bond;        /* the watch asked for a bond once: pair first */
	bool paired_at_start;   /* BlueZ held a bond when the attempt began */
	unsigned bond_suspects; /* consecutive attempts that look like bond loss */
	bool remove_first;      /* remove the bond before connecting: bluetoothd
	                         * died right after such an attempt, or rebond
	                         * was allowed for a lost bond */
	uint64_t suspect_us;    /* when the last one ended */
	enum ble_pairing pairing;
	unsigned bonds_made;    /* pairings this link saw through */
	enum ble_link_phase phase;
	struct ble_adapter *slot; /* adapter whose budget this link holds */
	char *dev_path, *char_path; /* of the current attempt */
	uint16_t att_mtu;
	unsigned attempts;
	uint64_t last_activity_us;
	uint64_t up_us;         /* went UP (the time slice counts from here) */
	/* The gateway's use (ble_link_set_use) and the budget's request. */
	unsigned use_inflight, use_queued;
	bool held;              /* an upload job: never released for others */
	bool yield;             /* give the slot up once no request is in flight */
	DBusPendingCall *pc;    /* the state machine's call in flight */
	DBusPendingCall *wpc;   /* fallback: WriteValue in flight */
	struct event *timer_ev; /* connect timeout / backoff */
	int wfd, nfd;
	struct event *wev, *nev;
	STAILQ_HEAD(, ble_chunk) txq;
	size_t txq_bytes;
	struct ble_rx rx;
	int16_t hci_rssi;       /* 127: unknown */
	uint32_t rand_state;    /* backoff jitter */
};

LIST_HEAD(ble_adapter_list, ble_adapter);
LIST_HEAD(ble_dev_list, ble_dev);
LIST_HEAD(ble_link_list, ble_link);
TAILQ_HEAD(ble_link_queue, ble_link);

struct ble_manager {
	struct event_base *base;
	struct ble_manager_opts opts;
	char *adapters_opt;
	char *bus_address_opt;  /* opts.bus_address, kept for reconnects */
	struct ble_manager_callbacks cbs;
	void *user_data;
	DBusConnection *conn;
	struct dbus_loop *loop;
	char *owner;            /* unique name of org.bluez, NULL: absent */
	bool agent_registered, agent_exported;
	DBusPendingCall *owner_pc, *objects_pc, *agent_pc;
	struct ble_adapter_list adapters;
	struct ble_dev_list devs;
	struct ble_link_list links;
	struct ble_link_list graveyard; /* forgotten links, freed later */
	struct ble_link_queue waitq;
	struct event *sched_ev, *tick_ev, *reap_ev;
	struct event *objects_ev; /* GetManagedObjects retry */
};

/* ---- ble-dbus.c: D-Bus helpers ---- */
/* Sends msg (consumed) with a reply timeout; NULL when the bus is gone. */
DBusPendingCall *ble_call(struct ble_manager *mgr, DBusMessage *msg,
			  int timeout_ms, DBusPendingCallNotifyFunction fn,
			  void *data);
/* Cancels and drops *pc; accepts NULL. */
void ble_call_cancel(DBusPendingCall **pc);
/* Takes the reply of a finished call and drops the caller's reference. */
DBusMessage *ble_call_reply(DBusPendingCall **pc);
DBusMessage *ble_method(const char *path, const char *iface,
			const char *method);
/* Appends an empty a{sv}. */
void ble_append_empty_dict(DBusMessageIter *it);
/* Maps a BlueZ error reply to a negative errno. */
int ble_error_errno(const DBusMessage *reply);
bool ble_error_is_auth(const DBusMessage *reply);
/* NotPermitted "Notify acquired"/"Write acquired": a session of ours that
 * bluetoothd still holds (released by StopNotify, or when the fd closes). */
bool ble_error_is_stale_session(const DBusMessage *reply);
bool ble_error_is(const DBusMessage *reply, const char *name);
/* Iterating a{sv}: returns the key and leaves *var on the variant's value. */
bool ble_dict_next(DBusMessageIter *dict, const char **key,
		   DBusMessageIter *var);
bool ble_var_bool(DBusMessageIter *v, bool *ret);
bool ble_var_str(DBusMessageIter *v, const char **ret);
/* Reads an ay into a new buffer. */
bool ble_var_bytes(DBusMessageIter *v, uint8_t **ret, size_t *ret_len);
bool ble_var_has_str(DBusMessageIter *v, const char *s);

/* ---- ble-manager.c: for links ---- */
struct ble_dev *ble_mgr_dev_by_addr(struct ble_manager *mgr, const char *addr);
struct ble_adapter *ble_mgr_adapter(struct ble_manager *mgr, const char *path);
/* Connection slots on ad: the configured budget, lowered for a while when
 * the controller refused a connection for lack of room. */
unsigned ble_mgr_capacity(const struct ble_manager *mgr,
			  const struct ble_adapter *ad);
/* The controller refused a connection: it holds at most `active` - 1. */
void ble_mgr_adapter_full(struct ble_manager *mgr, struct ble_adapter *ad);
/* Back to the head of the wait queue (no state report). */
void ble_mgr_requeue_first(struct ble_manager *mgr, struct ble_link *bl);
void ble_mgr_kick(struct ble_manager *mgr);

/* ---- ble-link.c ---- */
struct ble_link *ble_link_create(struct ble_manager *mgr, const char *address);
/* Tears down without reporting; the link is freed by link_free(). */
void ble_link_shutdown(struct ble_link *bl);
/* The manager granted a connection slot on adapter. */
void ble_link_start(struct ble_link *bl, struct ble_adapter *ad);
/* Park: disconnect politely, DOWN with 0; the gateway connects again on
 * demand (behind the links already waiting). */
void ble_link_evict(struct ble_link *bl);
/* Events from the manager's object tracking. */
void ble_link_dev_changed(struct ble_link *bl, struct ble_dev *dev);
void ble_link_dev_gone(struct ble_link *bl, int err);
void ble_link_char_value(struct ble_link *bl, const uint8_t *buf, size_t len);
/* bluetoothd went away: drop everything, keep wanting. */
void ble_link_service_lost(struct ble_link *bl);
/* How a link could leave its slot to a waiter (the budget's policy). */
enum ble_release {
	BLE_RELEASE_NO = 0,
	BLE_RELEASE_IDLE,       /* unused and quiet for idle_us: park now */
	BLE_RELEASE_SLICE,      /* in use for slice_us: yield between requests */
};
enum ble_release ble_link_releasable(const struct ble_link *bl, uint64_t now_us,
				     uint64_t idle_us, uint64_t slice_us);
/* UP with nothing in flight, being sent or being received. */
bool ble_link_between_requests(const struct ble_link *bl);

/* Pairing as the agent sees it: bluetoothd's own pairing for a managed
 * watch started (allowed) or was refused by the agent (not allowed). */
struct ble_link *ble_mgr_link_by_dev_path(struct ble_manager *mgr,
					  const char *path);
bool ble_link_agent_request(struct ble_link *bl);

/* ---- ble-agent.c ---- */
int ble_agent_export(struct ble_manager *mgr);
void ble_agent_register(struct ble_manager *mgr);
void ble_agent_unexport(struct ble_manager *mgr);

/* ---- ble-hci.c (optional; -EOPNOTSUPP without AF_BLUETOOTH/CAP_NET_RAW) ---- */
int ble_hci_read_rssi(const char *adapter, const char *address, int8_t *ret);
int ble_hci_conn_update(const char *adapter, const char *address,
			uint16_t min_interval, uint16_t max_interval,
			uint16_t latency, uint16_t supervision_timeout);
