/* SPDX-License-Identifier: MIT */
/*
 * Peripheral front-end of the simulator: one simulated watch served through
 * a REAL bluetoothd, on one of its adapters, over D-Bus. The watch exports
 * its GATT application (the SMP service and characteristic, write without
 * response + notify) and registers it with GattManager1, and advertises
 * through LEAdvertisingManager1 (name, SMP service UUID and, when the
 * controller has room for it, the firmware's advertising record). Writes
 * from the central are reassembled into SMP frames by the header length and
 * handed to the device model (device.h); replies leave as notifications of
 * ATT MTU - 5 bytes (what fits a Handle Multiple Value Notification, which
 * bluetoothd uses towards a BlueZ central; at most 510: BlueZ 5.66's limit).
 *
 * On a simulated reset or out-of-range the watch drops the link (Device1.
 * Disconnect of the central through its adapter) and stops advertising; it
 * advertises again once booted. It follows bluetoothd restarts (re-registers
 * everything). Used by tests/vm (real BlueZ over btvirt in a VM).
 */
#pragma once

struct event_base;
struct sim_device;
struct sim_peripheral;

/* One line (no newline) about what the watch did or saw: registrations,
 * centrals coming and going, resets; frames when SMPGW_SIM_PERIPHERAL_VERBOSE
 * is set in the environment. */
typedef void (*sim_peripheral_log_fn)(struct sim_device *dev, const char *line,
				      void *user_data);

/*
 * Serves dev on adapter ("hci1") of the bluetoothd reachable on bus_address
 * (NULL: the system bus). index makes the exported object paths unique
 * (/org/smpgw/sim<index>/...). Registration with bluetoothd happens
 * asynchronously (and again whenever bluetoothd restarts). log may be NULL.
 * Returns NULL with *err set (a new string, caller frees) when the bus
 * cannot be reached.
 */
struct sim_peripheral *sim_peripheral_new(struct event_base *base, struct sim_device *dev,
					  const char *bus_address, const char *adapter,
					  unsigned index, sim_peripheral_log_fn log,
					  void *log_ud, char **err);
/* Unregisters nothing (the bus connection closing does it); accepts NULL. */
struct sim_peripheral *sim_peripheral_free(struct sim_peripheral *p);
