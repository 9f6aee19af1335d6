/* SPDX-License-Identifier: MIT */
/*
 * The simulator's fake org.bluez: owns the name org.bluez on a D-Bus bus and
 * exports what BlueZ 5.66's bluetoothd exports (see
 * tests/data/conformance/bluez/): /org/bluez with AgentManager1, one
 * Adapter1 per simulated adapter (discovery, filters, RemoveDevice), one
 * Device1 per discovered watch (Connect, Disconnect, Pair), and the GATT
 * objects with the SMP characteristic (WriteValue, StartNotify,
 * AcquireWrite/AcquireNotify over SOCK_SEQPACKET socket pairs). SMP frames go
 * to the simulated devices through the BLE link timing model.
 *
 * Owns its D-Bus connection; borrows the fleet (it must outlive this).
 * Dropping the connection (sim_bluez_free, or the process ending) is what a
 * client sees as bluetoothd going away: NameOwnerChanged on org.bluez.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct sim_fleet;
struct sim_bluez;

struct sim_bluez_counters {
	uint64_t writes;           /* ATT writes received (fd or WriteValue) */
	uint64_t notifications;    /* notifications sent */
	uint64_t frames;           /* SMP frames handed to devices */
	uint64_t drops_busy;       /* frames dropped: device buffers busy (-ENOBUFS) */
	uint64_t drops_link;       /* writes dropped by the link: too long, bad
	                            * reassembly, encryption missing, device down */
	uint64_t drops_notify;     /* notifications nobody subscribed to / socket full */
	uint64_t drops_lossy;      /* writes lost by the lossy_burst fault (lost or swallowed) */
	uint64_t lossy_desyncs;    /* frames that lost a write: reassembly stuck until disconnect */
	uint64_t connects, disconnects, connect_failures;
	uint64_t pairings;         /* bonds made (Pair() or bluetoothd's own pairing) */
};

/*
 * Connects to bus_address (NULL: the system bus), requests org.bluez
 * (fails when someone else owns it) and exports adapters and the fleet's
 * devices. On failure returns NULL and sets *ret_err to a malloc'ed message
 * (free() it). Test knobs: SMPGW_SIM_LE_CONN_TIMEOUT_MS overrides the 20 s
 * LE connection timeout that an out-of-range Connect waits for,
 * SMPGW_SIM_TEMP_TIMEOUT_MS the 30 s after which a discovered device that is
 * not connected, paired or trusted is forgotten (BlueZ's TemporaryTimeout).
 */
struct sim_bluez *sim_bluez_new(struct event_base *base, struct sim_fleet *fleet,
				const char *bus_address, char **ret_err);
/*
 * One of several fake org.bluez in one process (--bus NAME=ADDRESS), one per
 * gateway: name (NULL: as sim_bluez_new) picks the fleet adapters of that bus
 * (adapters[i].bus == name, plus a copy of each adapter without a bus, its
 * address's fourth byte = bus_index) and what it hears (sim_fleet_heard()).
 * The watches are shared: one flash, one slot state, seen by every bus that
 * hears it; a watch takes sim_fleet_centrals() links at once over all buses.
 */
struct sim_bluez *sim_bluez_new_named(struct event_base *base, struct sim_fleet *fleet,
				      const char *name, unsigned bus_index,
				      const char *bus_address, char **ret_err);
const char *sim_bluez_name(const struct sim_bluez *bz);
/* Adapters of this bus: count, and (hciN) its address. */
unsigned sim_bluez_adapter_count(const struct sim_bluez *bz);
const char *sim_bluez_adapter_address(const struct sim_bluez *bz, unsigned n);

/* What this bus hears of fleet device i: true and *rssi when in its range. */
bool sim_bluez_heard(const struct sim_bluez *bz, size_t i, int *rssi);
/* Moves device i for this bus: heard at rssi, or out of its range (an
 * established link drops after the supervision timeout). -ENOENT: no such
 * device. */
int sim_bluez_set_heard(struct sim_bluez *bz, size_t i, bool heard, int rssi);
/* Device i has an established link on this bus. */
bool sim_bluez_connected(const struct sim_bluez *bz, size_t i);
/* Powers every adapter of this bus on or off (off: links and discovery end,
 * as Adapter1.Powered = false; a gateway host going dark). */
void sim_bluez_set_powered(struct sim_bluez *bz, bool on);

/* Hangs up every link and leaves the bus. Accepts NULL, returns NULL. */
struct sim_bluez *sim_bluez_free(struct sim_bluez *bz);

const struct sim_bluez_counters *sim_bluez_counters(const struct sim_bluez *bz);
/* LE connection (create connection) timeout, default 20000 ms (Linux). */
void sim_bluez_set_le_conn_timeout(struct sim_bluez *bz, uint32_t ms);
