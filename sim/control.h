/* SPDX-License-Identifier: MIT */
/*
 * The simulator's control interface: a Unix stream socket speaking JSON
 * lines (one request object per line, one response object per line) for
 * tests and people: list devices and slots, move in and out of range,
 * inject faults, reboot, read counters, set the link model. Commands are
 * documented in docs/simulator.md. Also the tiny client behind
 * `smpgw-sim ctl SOCKET JSON`.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct sim_fleet;
struct sim_control;
struct sim_bluez;

/* Listens on path (an existing socket file is replaced). NULL, *ret_err = -errno. */
struct sim_control *sim_control_new(struct event_base *base, struct sim_fleet *fleet,
				    const char *path, int *ret_err);
/* Closes clients and removes the socket file. */
struct sim_control *sim_control_free(struct sim_control *ctl);

/* What `list` reports about device i's other faces (port 0 / NULL: none). */
void sim_control_set_transport(struct sim_control *ctl, size_t i, uint16_t udp_port,
			       const char *pty_path);

/* The fake org.bluez of each --bus (borrowed; n 0: none, `counters` says
 * "bluez": null). Named buses (--bus NAME=ADDRESS) add per-bus hearing to
 * `list`/`show`, per-bus counters, and the `move`/`power` commands. */
void sim_control_set_bluez(struct sim_control *ctl, struct sim_bluez *const *buses, size_t n);

/* Handles one request (borrowed text); returns the response JSON text,
 * without newline, in a new string (caller frees). Never NULL. */
char *sim_control_handle(struct sim_control *ctl, const char *line, size_t len);

/* Client: sends request, waits (bounded by timeout_ms) for one response line.
 * Returns 0 and *ret (caller frees), or -errno (-ETIMEDOUT). */
int sim_control_request(const char *path, const char *request, unsigned timeout_ms, char **ret);
