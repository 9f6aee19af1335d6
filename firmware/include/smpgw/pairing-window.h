/* SPDX-License-Identifier: MIT */
/*
 * When the watch accepts a new pairing. SMP needs an encrypted link with a
 * bonded central (firmware/README.md, "Security"); a central becomes bonded
 * only by pairing while this window is open:
 *  - for boot_window_s seconds after the first boot (the boot counter in
 *    settings is 1: freshly flashed, or storage erased), so a gateway can
 *    adopt a new watch without anyone touching it;
 *  - for button_window_s seconds after the side button was held for
 *    hold_s seconds (consecutive samples), so the wearer can let a new or
 *    replaced gateway in.
 * Each window admits one new bond: a successful pairing closes it.
 *
 * Plain C, no Zephyr: the firmware feeds it uptime seconds and one button
 * sample per second; the host unit tests drive it the same way.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct smpgw_pairing_config {
	uint32_t boot_window_s;   /* 0: no window after the first boot */
	uint32_t button_window_s; /* 0: the button opens nothing */
	uint32_t hold_s;          /* button held this long opens it (>= 1) */
};

struct smpgw_pairing_window {
	struct smpgw_pairing_config cfg;
	uint32_t open_until_s; /* exclusive; 0 = closed */
	uint32_t held_since_s; /* valid while held */
	bool held;
	bool hold_used; /* this press already opened the window */
};

/* first_boot: the boot counter says this is the first boot. */
void smpgw_pairing_init(struct smpgw_pairing_window *w, const struct smpgw_pairing_config *cfg,
			bool first_boot, uint32_t now_s);
/* One button sample. Returns true when this sample opened the window. */
bool smpgw_pairing_button(struct smpgw_pairing_window *w, bool pressed, uint32_t now_s);
bool smpgw_pairing_open(const struct smpgw_pairing_window *w, uint32_t now_s);
/* Seconds left, 0 when closed. */
uint32_t smpgw_pairing_left_s(const struct smpgw_pairing_window *w, uint32_t now_s);
/* A pairing completed (bond stored): the window closes. */
void smpgw_pairing_done(struct smpgw_pairing_window *w);
