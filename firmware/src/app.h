/* SPDX-License-Identifier: MIT */
/*
 * State shared by the smpgw watch firmware's modules: main.c (BLE,
 * advertising, self-check, watchdog), health.c (battery, reset cause, boot
 * counter) and mgmt.c (the smpgw SMP group and the MCUmgr hooks).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "smpgw/adv.h"
#include "smpgw/usergroup.h"

/* health.c ---------------------------------------------------------------- */

/* Reads and clears the hardware reset cause, bumps the boot counter in
 * settings. Call once at boot, after settings_subsys_init(). */
int health_init(void);
/* Samples the battery (SAADC) and charger inputs; caches the result. */
int health_sample_battery(void);
/* Fills every field of the health response from cached state. */
void health_fill(struct smpgw_health *h);
bool health_charging(void);
uint8_t health_battery_pct(void);
/* Boots counted in settings, this one included (1: first boot). */
uint32_t health_boot_count(void);

/* main.c ------------------------------------------------------------------ */

/* True once the post-boot self-check passed (see main.c). */
bool app_self_check_passed(void);
/* Evaluates the self-check now (not only at the next tick); returns it. */
bool app_self_check_poll(void);
/* True while the running image is unconfirmed (booted for test). */
bool app_image_unconfirmed(void);
/* MCUmgr hooks report SMP activity and DFU state here. */
void app_smp_request_started(void);
void app_smp_request_done(void);
void app_set_updating(bool updating);
/* Rebuilds the advertising record and pushes it if it changed. */
void app_adv_refresh(void);

/* security.c -------------------------------------------------------------- */

/* Registers the pairing callbacks; opens the pairing window on the first
 * boot. Call after health_init() (before or after bt_enable()). */
int security_init(bool first_boot);
/* Once a second: samples the side button (may open the pairing window). */
void security_tick(void);
/* May an SMP command run? False on a link that is not encrypted while
 * SMPGW_SMP_REQUIRE_BOND is on. */
bool security_smp_allowed(void);
bool security_pairing_open(void);

/* mgmt.c ------------------------------------------------------------------ */

/* Registers the MCUmgr callbacks (the group registers itself). */
void mgmt_hooks_init(void);
