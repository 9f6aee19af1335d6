/* SPDX-License-Identifier: MIT */
/*
 * BLE transport through BlueZ's D-Bus API (org.bluez). One ble_manager per
 * D-Bus connection: it selects adapters, runs discovery filtered on the
 * SMP service UUID, tracks devices (RSSI, name, advertising data), and
 * creates one struct link per device the gateway decides to manage.
 * Links connect on demand, keep connected, reconnect with backoff and
 * jitter, and follow bluetoothd restarts (NameOwnerChanged).
 *
 * Fleets larger than a controller's connection limit: each adapter has a
 * connection budget shared in turns (docs/ble.md "The connection budget"):
 * links wait for a slot in one FIFO queue; when others wait, a link the
 * gateway does not use (ble_link_set_use) is released after idle_timeout_ms
 * of quiet, and a link in use is asked to yield between two requests once
 * it held its slot for time_slice_ms; held links (upload jobs) are never
 * released. Several adapters are used together, each with its own budget.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "links/link.h"

struct event_base;
struct ble_manager;

#define SMP_BLE_SERVICE_UUID "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
#define SMP_BLE_CHAR_UUID "da2e7828-fbce-4e01-ae9e-261174997c48"

struct ble_manager_opts {
	const char *bus_address;   /* NULL: the system bus */
	const char *adapters;      /* comma-separated "hci0,hci1"; NULL: all */
	unsigned max_conn_per_adapter; /* 0: 7 */
	uint32_t idle_timeout_ms;  /* 0: 2000: unused links released to waiters */
	uint32_t time_slice_ms;    /* 0: 5000: links in use yield to waiters */
	uint32_t connect_timeout_ms; /* 0: 10000 */
	uint32_t backoff_min_ms, backoff_max_ms; /* 0: 500 / 60000 */
	bool prefer_acquire;       /* AcquireWrite/Notify fast path (default true) */
};

struct ble_device_info {
	const char *address;       /* "AA:BB:CC:DD:EE:FF" */
	const char *name;          /* may be NULL */
	const char *adapter;       /* "hci0" */
	int16_t rssi;              /* 127 when unknown */
	/* rssi came with this report (bluetoothd sets RSSI from each
	 * advertisement it receives); false: the value BlueZ kept from an
	 * earlier one, stale when the watch stopped advertising. */
	bool rssi_fresh;
	bool connected;            /* on this gateway's adapter */
	/* Manufacturer data of the first company id and SMP service data, raw. */
	uint16_t mfr_id;
	const uint8_t *mfr_data;
	size_t mfr_len;
	const uint8_t *svc_data;
	size_t svc_len;
};

struct ble_manager_callbacks {
	/* A device advertising the SMP service appeared or its advertising
	 * data / RSSI changed. Borrowed for the call. */
	void (*device_seen)(struct ble_manager *mgr,
			    const struct ble_device_info *info, void *user_data);
	/* The device object went away (removed by BlueZ). When bluetoothd
	 * vanishes, devices are kept and only service(false) is reported. */
	void (*device_lost)(struct ble_manager *mgr, const char *address,
			    void *user_data);
	/* bluetoothd appeared (true) or vanished (false). */
	void (*service)(struct ble_manager *mgr, bool up, void *user_data);
	/* The connection to the bus itself closed (the bus daemon went away),
	 * after service(false): call ble_manager_reconnect() from the loop
	 * (not from this callback) until it succeeds. Links and devices are
	 * kept. */
	void (*bus_lost)(struct ble_manager *mgr, void *user_data);
	/* A step towards discovery on a selected adapter failed (what:
	 * "power on", "discovery filter", "start discovery"; err a negative
	 * errno, -EINPROGRESS when bluetoothd refused a session without
	 * starting one). The manager retries by itself; this is for the log.
	 * May be NULL. */
	void (*adapter_error)(struct ble_manager *mgr, const char *adapter,
			      const char *what, int err, void *user_data);
};

/* Returns NULL with *err set (negative errno) when the bus is unreachable. */
struct ble_manager *ble_manager_new(struct event_base *base,
				    const struct ble_manager_opts *opts,
				    const struct ble_manager_callbacks *cbs,
				    void *user_data, int *err);
struct ble_manager *ble_manager_free(struct ble_manager *mgr);
/* After bus_lost: a new connection to the same bus (0, or a negative errno
 * when the bus is still unreachable: try again later). 0 when connected. */
int ble_manager_reconnect(struct ble_manager *mgr);

/* The link for a device (created on first call; owned by the manager,
 * freed with it or by ble_manager_forget()). */
struct link *ble_manager_link(struct ble_manager *mgr, const char *address);
void ble_manager_forget(struct ble_manager *mgr, const char *address);
/* Calls cb for every device connected on a selected adapter that has no
 * link of the gateway (ble_manager_link()): someone else's connection, or
 * one a previous smpgwd left behind. */
void ble_manager_foreach_unowned(struct ble_manager *mgr,
				 void (*cb)(const struct ble_device_info *info, void *user_data),
				 void *user_data);
/* Device1.Disconnect of such a device (not waited for): 0, -ENOENT (not
 * known or not connected) or -EBUSY (the gateway has a link for it). */
int ble_manager_disconnect(struct ble_manager *mgr, const char *address);
/*
 * Link states reported by BLE links (link_callbacks.state):
 *  CONNECTING   after link_connect(): waiting for a connection slot on the
 *               device's adapter (budget), for the device to be seen, or
 *               connecting / resolving / pairing / acquiring.
 *  UP           frames can be sent.
 *  DOWN, err<0  the attempt or the connection failed (-ECONNRESET link lost
 *               or bluetoothd gone, -ETIMEDOUT, -ECONNREFUSED, -EACCES
 *               pairing refused, -ENOENT no SMP characteristic, -ENODEV);
 *               the link retries by itself after a backoff with jitter
 *               (CONNECTING again) as long as the gateway holds it.
 *  DOWN, err 0  link_disconnect(), or parked by the budget: released
 *               to a waiting link (unused and quiet for idle_timeout_ms,
 *               or in use past time_slice_ms, between two requests). A
 *               parked link connects again on the next link_connect(),
 *               behind the links already waiting.
 * link_send() splits a frame over ATT MTU - 3 byte writes when reassembly
 * is on (the default: the project's firmware has it), else frames larger
 * than link_mtu() fail with -EMSGSIZE; -EAGAIN when 256 KiB are queued.
 */

/*
 * What the link's user has going on, for the connection budget: requests
 * in flight (sent, not answered) and queued, and whether it holds the link
 * (an upload job). The gateway's request queue reports every change. While
 * the link yields its slot (time slice over, others waiting), link_send()
 * answers -EAGAIN until the link is parked: report in_flight 0 once the
 * last answer came. No-op for other transports.
 */
void ble_link_set_use(struct link *link, unsigned in_flight, unsigned queued,
		      bool held);

/*
 * Pairing (docs/ble.md "Pairing"). Per link: whether the gateway may bond
 * with the watch (the agent refuses bluetoothd's own pairing requests and
 * the link never calls Pair() otherwise), whether to pair before
 * subscribing (a watch known to need a bond), and whether a bond the watch
 * lost is removed and made again. Default: allowed, not first, rebond.
 * DOWN errors of pairing: -EACCES the watch refused (its pairing window is
 * closed; retried with the backoff), -EPERM a bond is needed and pairing is
 * not allowed, -EKEYREVOKED the watch lost its bond and rebonding is off
 * or not allowed. A rebond in progress reports DOWN with -ECONNRESET.
 */
enum ble_pairing {
	BLE_PAIRING_NONE = 0,      /* not paired, none needed so far */
	BLE_PAIRING_PAIRING,       /* Pair() or bluetoothd's own pairing running */
	BLE_PAIRING_PAIRED,        /* bonded */
	BLE_PAIRING_REFUSED,       /* the watch refused pairing */
	BLE_PAIRING_NOT_ALLOWED,   /* needs a bond, configuration says no */
	BLE_PAIRING_BOND_LOST,     /* the watch lost its bond, not rebonded */
};
void ble_link_set_pairing(struct link *link, bool allowed, bool first,
			  bool rebond);
/* BLE_PAIRING_NONE for other transports. */
enum ble_pairing ble_link_pairing(const struct link *link);
/* Bonds this link made (Pair(), or bluetoothd's own pairing the agent
 * authorized) since it was created; 0 for other transports. */
unsigned ble_link_bonds_made(const struct link *link);
/* "none", "pairing", "paired", "pairing_refused", "not_allowed", "bond_lost". */
const char *ble_pairing_str(enum ble_pairing p);

/* Link facts BlueZ exposes: -1 / 0 when unknown. RSSI: the last HCI
 * reading while connected, else the last advertised value. */
int ble_link_rssi(const struct link *link);
bool ble_link_reassembly(const struct link *link);
void ble_link_set_reassembly(struct link *link, bool on);
/* The device address of a BLE link; NULL for other transports. */
const char *ble_link_address(const struct link *link);
/* true while UP over the AcquireWrite/AcquireNotify fds (false: WriteValue
 * and StartNotify fallback, or not up). */
bool ble_link_fast_path(const struct link *link);
/* Optional HCI helpers (libbluetooth, raw HCI socket; CAP_NET_RAW for the
 * connection update). -EOPNOTSUPP without them, -ENOTCONN when not UP.
 * They wait up to 100 ms for the controller. */
int ble_link_read_rssi(struct link *link);          /* dBm or -errno */
int ble_link_set_fast(struct link *link, bool fast); /* 7.5-15 ms interval */
