/* SPDX-License-Identifier: MIT */
/*
 * Bonded-only SMP (CONFIG_SMPGW_SMP_REQUIRE_BOND, on by default):
 *  - new pairings are accepted only while the pairing window is open
 *    (smpgw/pairing-window.h: the first minutes after the first boot, or
 *    after the side button was held); outside it the watch answers a
 *    Pairing Request with "pairing not allowed";
 *  - SMP commands need an encrypted link, i.e. a central that paired inside
 *    a window (or re-encrypts with the bond it got then). Zephyr 4.x checks
 *    that in ATT already (MCUMGR_TRANSPORT_BT_PERM_RW_ENCRYPT, Kconfig.zephyr4);
 *    on 3.x, and as a second line on 4.x, security_smp_allowed() makes
 *    the SMP command hook (mgmt.c) answer MGMT_ERR_EACCESSDENIED.
 * Bonds live in settings (BT_SETTINGS) and come back at boot through
 * settings_load() in main.c.
 */
#include <zephyr/bluetooth/bluetooth.h>
#include <zephyr/bluetooth/conn.h>
#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "app.h"
#include "smpgw/pairing-window.h"

LOG_MODULE_REGISTER(smpgw_sec, LOG_LEVEL_INF);

#ifdef CONFIG_SMPGW_SMP_REQUIRE_BOND

/* One connection at a time: "the link is encrypted" names that link. */
BUILD_ASSERT(CONFIG_BT_MAX_CONN == 1, "security_smp_allowed() assumes one connection");

#if defined(CONFIG_MCUMGR_TRANSPORT_BT_PERM_RW) || defined(CONFIG_MCUMGR_TRANSPORT_BT_AUTHEN)
#error "SMPGW_SMP_REQUIRE_BOND: the SMP service must demand encryption (4.x: _PERM_RW_ENCRYPT; 3.x: AUTHEN off, checked here)"
#endif

/* PineTime side button: the sw0 alias (P0.13; the board hogs P0.15 high to
 * power it). Boards without one (native_sim) open the window at first boot
 * only. */
#define BUTTON_NODE DT_ALIAS(sw0)
#if DT_NODE_HAS_STATUS(BUTTON_NODE, okay)
static const struct gpio_dt_spec button = GPIO_DT_SPEC_GET(BUTTON_NODE, gpios);
#define HAVE_BUTTON 1
#else
#define HAVE_BUTTON 0
#endif

static struct smpgw_pairing_window window;
static struct k_spinlock lock;

static uint32_t now_s(void)
{
	return (uint32_t)(k_uptime_get() / MSEC_PER_SEC);
}

static enum bt_security_err pairing_accept(struct bt_conn *conn,
					   const struct bt_conn_pairing_feat *const feat)
{
	k_spinlock_key_t key = k_spin_lock(&lock);
	bool open = smpgw_pairing_open(&window, now_s());

	k_spin_unlock(&lock, key);
	if (!open) {
		LOG_WRN("pairing refused: pairing window closed (hold the button %d s)",
			CONFIG_SMPGW_PAIRING_BUTTON_HOLD_S);
		return BT_SECURITY_ERR_PAIR_NOT_ALLOWED;
	}
	return BT_SECURITY_ERR_SUCCESS;
}

static void pairing_complete(struct bt_conn *conn, bool bonded)
{
	k_spinlock_key_t key = k_spin_lock(&lock);

	smpgw_pairing_done(&window);
	k_spin_unlock(&lock, key);
	LOG_INF("paired (%s); pairing window closed", bonded ? "bonded" : "not bonded");
}

static void pairing_failed(struct bt_conn *conn, enum bt_security_err reason)
{
	LOG_WRN("pairing failed: %d", reason);
}

static struct bt_conn_auth_cb auth_cb = {
	/* No display, no keyboard: NoInputNoOutput, Just Works. */
	.pairing_accept = pairing_accept,
};

static struct bt_conn_auth_info_cb auth_info_cb = {
	.pairing_complete = pairing_complete,
	.pairing_failed = pairing_failed,
};

static void encrypted_cb(struct bt_conn *conn, void *data)
{
	bool *ok = data;

	if (bt_conn_get_security(conn) >= BT_SECURITY_L2) {
		*ok = true;
	}
}

bool security_smp_allowed(void)
{
	bool ok = false;

	bt_conn_foreach(BT_CONN_TYPE_LE, encrypted_cb, &ok);
	return ok;
}

bool security_pairing_open(void)
{
	k_spinlock_key_t key = k_spin_lock(&lock);
	bool open = smpgw_pairing_open(&window, now_s());

	k_spin_unlock(&lock, key);
	return open;
}

void security_tick(void)
{
	bool pressed = false;
	bool opened;
	k_spinlock_key_t key;

#if HAVE_BUTTON
	pressed = gpio_pin_get_dt(&button) == 1;
#endif
	key = k_spin_lock(&lock);
	opened = smpgw_pairing_button(&window, pressed, now_s());
	k_spin_unlock(&lock, key);
	if (opened) {
		LOG_INF("side button held: pairing window open for %d s",
			CONFIG_SMPGW_PAIRING_WINDOW_BUTTON_S);
	}
}

int security_init(bool first_boot)
{
	const struct smpgw_pairing_config cfg = {
		.boot_window_s = CONFIG_SMPGW_PAIRING_WINDOW_BOOT_S,
		.button_window_s = CONFIG_SMPGW_PAIRING_WINDOW_BUTTON_S,
		.hold_s = CONFIG_SMPGW_PAIRING_BUTTON_HOLD_S,
	};
	k_spinlock_key_t key = k_spin_lock(&lock);
	int err;

	smpgw_pairing_init(&window, &cfg, first_boot, now_s());
	k_spin_unlock(&lock, key);
#if HAVE_BUTTON
	if (device_is_ready(button.port)) {
		(void)gpio_pin_configure_dt(&button, GPIO_INPUT);
	}
#endif
	err = bt_conn_auth_cb_register(&auth_cb);
	if (!err) {
		err = bt_conn_auth_info_cb_register(&auth_info_cb);
	}
	if (first_boot && CONFIG_SMPGW_PAIRING_WINDOW_BOOT_S > 0) {
		LOG_INF("first boot: pairing window open for %d s",
			CONFIG_SMPGW_PAIRING_WINDOW_BOOT_S);
	}
	return err;
}

#else /* !CONFIG_SMPGW_SMP_REQUIRE_BOND */

bool security_smp_allowed(void)
{
	return true;
}

bool security_pairing_open(void)
{
	return false;
}

void security_tick(void)
{
}

int security_init(bool first_boot)
{
	ARG_UNUSED(first_boot);
	LOG_WRN("INSECURE build: SMP open to any central (SMPGW_SMP_REQUIRE_BOND=n)");
	return 0;
}

#endif /* CONFIG_SMPGW_SMP_REQUIRE_BOND */
