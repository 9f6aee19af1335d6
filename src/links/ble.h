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
 * connection budget; links idle longer than idle_timeout_ms are closed
 * when others wait (fair, oldest waiter first); several adapters are used
 * together.
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
	uint32_t idle_timeout_ms;  /* 0: 30000 */
	uint32_t connect_timeout_ms; /* 0: 10000 */
	uint32_t backoff_min_ms, backoff_max_ms; /* 0: 500 / 60000 */
	bool prefer_acquire;       /* AcquireWrite/Notify fast path (default true) */
};

struct ble_device_info {
	const char *address;       /* "AA:BB:CC:DD:EE:FF" */
	const char *name;          /* may be NULL */
	const char *adapter;       /* "hci0" */
	int16_t rssi;              /* 127 when unknown */
	bool connected;
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
	/* The device object went away (removed by BlueZ or bluetoothd gone). */
	void (*device_lost)(struct ble_manager *mgr, const char *address,
			    void *user_data);
	/* bluetoothd appeared (true) or vanished (false). */
	void (*service)(struct ble_manager *mgr, bool up, void *user_data);
};

/* Returns NULL with *err set (negative errno) when the bus is unreachable. */
struct ble_manager *ble_manager_new(struct event_base *base,
				    const struct ble_manager_opts *opts,
				    const struct ble_manager_callbacks *cbs,
				    void *user_data, int *err);
struct ble_manager *ble_manager_free(struct ble_manager *mgr);

/* The link for a device (created on first call; owned by the manager,
 * freed with it or by ble_manager_forget()). */
struct link *ble_manager_link(struct ble_manager *mgr, const char *address);
void ble_manager_forget(struct ble_manager *mgr, const char *address);
/* Link facts BlueZ exposes: -1 / 0 when unknown. */
int ble_link_rssi(const struct link *link);
bool ble_link_reassembly(const struct link *link);
void ble_link_set_reassembly(struct link *link, bool on);
