/* SPDX-License-Identifier: MIT */
/*
 * SMP over a serial line (termios): Zephyr's "SMP over console" framing
 * from codec/serial.h, so it also talks to MCUboot's serial recovery.
 * The link is up while the device file is open; EOF or an I/O error (USB
 * adapter unplugged, pty closed) brings it down.
 */
#pragma once

#include "links/link.h"

struct event_base;

/* The largest SMP frame accepted from the line. */
#define SERIAL_LINK_MAX_FRAME 8192u

/* Returns 0 and the termios speed constant for a baud rate, or -EINVAL. */
int serial_baud_to_speed(unsigned baud, unsigned *ret);

/* NULL with *err = -EINVAL for an unsupported baud rate. The file is
 * opened by link_connect(). */
struct link *serial_link_new(struct event_base *base, const char *path,
			     unsigned baud, int *err);
