/* SPDX-License-Identifier: MIT */
/*
 * The simulator's non-BLE faces of a device: a loopback UDP port (Zephyr's
 * SMP UDP transport: one datagram = one frame, reply to the sender) and a
 * pseudo-terminal speaking SMP serial framing (Zephyr's SMP over console).
 * Each object serves one device and owns its socket or pty.
 */
#pragma once

#include <stdint.h>

struct event_base;
struct sim_device;
struct sim_udp;
struct sim_serial;

/* Binds 127.0.0.1:port (0: the OS picks). NULL with *ret_err = -errno. */
struct sim_udp *sim_udp_new(struct event_base *base, struct sim_device *dev, uint16_t port,
			    int *ret_err);
struct sim_udp *sim_udp_free(struct sim_udp *u);
uint16_t sim_udp_port(const struct sim_udp *u);

/* Opens a pty master; clients open sim_serial_path(). NULL with *ret_err. */
struct sim_serial *sim_serial_new(struct event_base *base, struct sim_device *dev, int *ret_err);
struct sim_serial *sim_serial_free(struct sim_serial *s);
const char *sim_serial_path(const struct sim_serial *s);
