/* SPDX-License-Identifier: MIT */
/*
 * smpgw watch firmware for the PineTime (pinetime_devkit0): SMP over BLE
 * for the smpgw gateway, the smpgw advertising record, and safe updates.
 *
 * Update safety, end to end:
 *  1. The gateway uploads to slot 1, marks it for test and resets the watch.
 *  2. MCUboot swaps (swap-using-move) and boots the new image unconfirmed.
 *  3. This image runs its self-check: BLE advertising is up, at least one
 *     SMP request has been answered, and it has stayed healthy (watchdog
 *     fed) for SELF_CHECK_SOAK_MS. Until then mgmt.c refuses img state
 *     writes, so nobody can confirm an image that has not proved itself.
 *  4. The gateway reads the smpgw health command ("self_check": true), then
 *     confirms. An image that never passes stops feeding the watchdog after
 *     SELF_CHECK_DEADLINE_MS; the reset makes MCUboot revert it.
 *  5. At any time a hung image (system work queue stalled, an SMP handler
 *     stuck) stops feeding the watchdog: unconfirmed images revert, confirmed
 *     ones restart.
 */
#include <string.h>

#include <zephyr/bluetooth/bluetooth.h>
#include <zephyr/bluetooth/conn.h>
#include <zephyr/bluetooth/gap.h>
#include <zephyr/bluetooth/uuid.h>
#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/dfu/mcuboot.h>
#include <zephyr/drivers/watchdog.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/mgmt/mcumgr/grp/img_mgmt/img_mgmt.h>
#include <zephyr/settings/settings.h>
#include <zephyr/sys/atomic.h>
#if __has_include(<zephyr/version.h>)
#include <zephyr/version.h> /* Zephyr >= 3.5 (generated) */
#else
#include <version.h>
#endif

#include "app.h"

LOG_MODULE_REGISTER(smpgw, LOG_LEVEL_INF);

#define WDT_TIMEOUT_MS 8000
#define TICK_MS 1000
#define SELF_CHECK_SOAK_MS (CONFIG_SMPGW_SELF_CHECK_SOAK_S * MSEC_PER_SEC)
/* Long enough for the gateway to find the watch after the swap reset, even
 * behind a busy radio; short enough that a broken image does not linger. */
#define SELF_CHECK_DEADLINE_MS (10 * 60 * 1000)
/* Worst case for one SMP request: a full erase of slot 1 on the SPI NOR. */
#define SMP_HANDLER_MAX_S 120
#define WORKQ_STALL_S 10
#define BATTERY_PERIOD_TICKS 60
#define PENDING_PERIOD_TICKS 10

/* Legacy advertising: 31 bytes each, see smpgw/adv.h for the split. */
BUILD_ASSERT(sizeof(CONFIG_BT_DEVICE_NAME) - 1 <= 11,
	     "name must fit the scan response next to the 128-bit SMP UUID");

static uint8_t mfg_data[2 + SMPGW_ADV_RECORD_LEN] = {
	SMPGW_ADV_COMPANY_ID & 0xff, SMPGW_ADV_COMPANY_ID >> 8,
};

static const struct bt_data ad[] = {
	BT_DATA_BYTES(BT_DATA_FLAGS, (BT_LE_AD_GENERAL | BT_LE_AD_NO_BREDR)),
	BT_DATA(BT_DATA_MANUFACTURER_DATA, mfg_data, sizeof(mfg_data)),
};

static const struct bt_data sd[] = {
	/* SMP service 8D53DC1D-1DB7-4CD3-868B-8A527460AA84 */
	BT_DATA_BYTES(BT_DATA_UUID128_ALL,
		      BT_UUID_128_ENCODE(0x8d53dc1d, 0x1db7, 0x4cd3, 0x868b, 0x8a527460aa84)),
	BT_DATA(BT_DATA_NAME_COMPLETE, CONFIG_BT_DEVICE_NAME, sizeof(CONFIG_BT_DEVICE_NAME) - 1),
};

/* The nRF52 watchdog. Boards without one (native_sim) run without: the
 * health checks still run, nothing resets a hung process. */
#if DT_NODE_HAS_STATUS(DT_NODELABEL(wdt0), okay)
static const struct device *const wdt = DEVICE_DT_GET(DT_NODELABEL(wdt0));
#else
static const struct device *const wdt;
#endif
static int wdt_channel = -1;

/* Zephyr 4.0 dropped automatically resumed connectable advertising
 * (BT_LE_ADV_CONN): advertising now stops at the first connection and the
 * app restarts it once the connection object is free again (recycled). */
#if ZEPHYR_VERSION_CODE >= ZEPHYR_VERSION(4, 0, 0)
#define ADV_PARAM BT_LE_ADV_CONN_FAST_2
#define ADV_RESTART_BY_APP 1
#else
#define ADV_PARAM BT_LE_ADV_CONN
#define ADV_RESTART_BY_APP 0
#endif

static struct smpgw_adv adv_now;   /* what we want to advertise */
static uint8_t adv_pushed[SMPGW_ADV_RECORD_LEN];
static bool adv_pushed_valid;

static atomic_t self_check_ok;
static atomic_t updating;
static atomic_t smp_answered;
static atomic_t smp_busy_since; /* uptime_s() at the request in progress, 0 = idle */
static atomic_t workq_beat;     /* uptime_s() at the last system work queue beat */
static bool unconfirmed;
static bool ble_up;
static bool pending;
static atomic_t adv_wanted; /* 4.x: advertising must be (re)started */

bool app_self_check_passed(void)
{
	return atomic_get(&self_check_ok) != 0;
}

bool app_image_unconfirmed(void)
{
	return unconfirmed;
}

/* Seconds since boot + 1, so that 0 can mean "idle"; seconds rather than
 * milliseconds because atomic_t is 32 bits and a watch runs for months. */
static atomic_val_t uptime_s(void)
{
	return (atomic_val_t)(k_uptime_get() / MSEC_PER_SEC) + 1;
}

void app_smp_request_started(void)
{
	atomic_set(&smp_busy_since, uptime_s());
}

void app_smp_request_done(void)
{
	atomic_set(&smp_busy_since, 0);
	atomic_set(&smp_answered, 1);
}

void app_set_updating(bool on)
{
	atomic_set(&updating, on);
}

static void adv_start_fn(struct k_work *work);
static K_WORK_DEFINE(adv_start_work, adv_start_fn);

static void adv_start_fn(struct k_work *work)
{
	int err = bt_le_adv_start(ADV_PARAM, ad, ARRAY_SIZE(ad), sd, ARRAY_SIZE(sd));

	if (err == 0 || err == -EALREADY) {
		if (err == 0) {
			LOG_INF("advertising as %s", CONFIG_BT_DEVICE_NAME);
		}
		atomic_set(&adv_wanted, 0);
		ble_up = true;
	} else {
		/* The main loop retries each second (ble_up false meanwhile:
		 * the watchdog resets a watch that cannot advertise). */
		LOG_WRN("advertising: %d", err);
		atomic_set(&adv_wanted, 1);
		ble_up = false;
	}
}

static void connected(struct bt_conn *conn, uint8_t err)
{
	if (!err) {
		ble_up = true;
	}
#if ADV_RESTART_BY_APP
	else {
		/* Connection attempt failed: advertising stopped all the same. */
		atomic_set(&adv_wanted, 1);
		k_work_submit(&adv_start_work);
	}
#endif
}

static void disconnected(struct bt_conn *conn, uint8_t reason)
{
	/* An upload cut by link loss never sends DFU_STOPPED. */
	atomic_set(&updating, 0);
	LOG_INF("disconnected (reason 0x%02x)", reason);
}

#if ADV_RESTART_BY_APP
static void recycled(void)
{
	atomic_set(&adv_wanted, 1);
	k_work_submit(&adv_start_work);
}
#endif

BT_CONN_CB_DEFINE(conn_callbacks) = {
	.connected = connected,
	.disconnected = disconnected,
#if ADV_RESTART_BY_APP
	.recycled = recycled,
#endif
};

static void read_image_info(void)
{
	struct image_version ver = { 0 };
	uint8_t hash[IMAGE_HASH_LEN] = { 0 };
	int slot = img_mgmt_active_slot(img_mgmt_active_image());

	if (img_mgmt_read_info(slot, &ver, hash, NULL) != 0) {
		LOG_WRN("cannot read the running image's header");
	}
	adv_now.fw.major = ver.iv_major;
	adv_now.fw.minor = ver.iv_minor;
	adv_now.fw.revision = ver.iv_revision;
	adv_now.fw.build = ver.iv_build_num;
	memcpy(adv_now.hash, hash, SMPGW_ADV_HASH_LEN);
	unconfirmed = !boot_is_img_confirmed();
	LOG_INF("image %u.%u.%u+%u, %s", ver.iv_major, ver.iv_minor, ver.iv_revision,
		ver.iv_build_num, unconfirmed ? "unconfirmed (test boot)" : "confirmed");
}

static void refresh_pending(void)
{
	int t = mcuboot_swap_type();

	pending = t == BOOT_SWAP_TYPE_TEST || t == BOOT_SWAP_TYPE_PERM;
}

/* Builds the record from the current state into rec; false if it cannot. */
static bool adv_encode(uint8_t rec[SMPGW_ADV_RECORD_LEN])
{
	/* Re-read: a confirm through SMP changes it behind our back. */
	unconfirmed = !boot_is_img_confirmed();
	adv_now.battery = health_battery_pct();
	adv_now.flags = (unconfirmed ? SMPGW_ADV_F_UNCONFIRMED : 0) |
			(atomic_get(&updating) ? SMPGW_ADV_F_UPDATING : 0) |
			(app_self_check_passed() ? SMPGW_ADV_F_SELF_CHECK_OK : 0) |
			(health_charging() ? SMPGW_ADV_F_CHARGING : 0) |
			(pending ? SMPGW_ADV_F_PENDING : 0) |
			(security_pairing_open() ? SMPGW_ADV_F_PAIRING : 0);
	return smpgw_adv_encode(&adv_now, rec, SMPGW_ADV_RECORD_LEN) == SMPGW_ADV_RECORD_LEN;
}

void app_adv_refresh(void)
{
	uint8_t rec[SMPGW_ADV_RECORD_LEN];

	if (!adv_encode(rec)) {
		return;
	}
	if (adv_pushed_valid && memcmp(rec, adv_pushed, sizeof(rec)) == 0) {
		return;
	}
	memcpy(mfg_data + 2, rec, sizeof(rec));
	/* Fails with -EAGAIN while connected (not advertising): retried on
	 * the next tick, and advertising resumes with the data we set last. */
	if (bt_le_adv_update_data(ad, ARRAY_SIZE(ad), sd, ARRAY_SIZE(sd)) == 0) {
		memcpy(adv_pushed, rec, sizeof(rec));
		adv_pushed_valid = true;
	}
}

static int ble_start(void)
{
	int err = bt_enable(NULL);

	if (err) {
		LOG_ERR("bt_enable: %d", err);
		return err;
	}
	/* Bonds (BT_SETTINGS) and our own subtree (boot counter) live in
	 * settings: without this load every bond is forgotten at reboot and
	 * the central's re-encryption fails. */
	err = settings_load();
	if (err) {
		LOG_WRN("settings load: %d (bonds not restored)", err);
	}
	/* Connectable; 3.x resumes it after each disconnection, on 4.x
	 * recycled() restarts it. */
	adv_start_fn(NULL);
	return ble_up ? 0 : -EIO;
}

static void workq_beat_fn(struct k_work *work);
static K_WORK_DELAYABLE_DEFINE(workq_beat_work, workq_beat_fn);

static void workq_beat_fn(struct k_work *work)
{
	atomic_set(&workq_beat, uptime_s());
	(void)k_work_schedule(&workq_beat_work, K_MSEC(TICK_MS));
}

static int watchdog_start(void)
{
	struct wdt_timeout_cfg cfg = {
		.window = { .min = 0, .max = WDT_TIMEOUT_MS },
		.callback = NULL,
		.flags = WDT_FLAG_RESET_SOC,
	};
	int err;

	if (wdt == NULL || !device_is_ready(wdt)) {
		return -ENODEV;
	}
	wdt_channel = wdt_install_timeout(wdt, &cfg);
	if (wdt_channel < 0) {
		return wdt_channel;
	}
	/* Pause while a debugger halts the CPU, so that a breakpoint does
	 * not end the debugging session in a reset. The nRF52 watchdog
	 * cannot be stopped once started and survives soft resets:
	 * MCUboot feeds it during a swap (BOOT_WATCHDOG_FEED). */
	err = wdt_setup(wdt, WDT_OPT_PAUSE_HALTED_BY_DBG);
	return err;
}

static void self_check_step(int64_t now)
{
	if (app_self_check_passed() || !ble_up || !atomic_get(&smp_answered) ||
	    now < SELF_CHECK_SOAK_MS) {
		return;
	}
	/* Main loop and SMP work queue both get here: log once. */
	if (!atomic_cas(&self_check_ok, 0, 1)) {
		return;
	}
	LOG_INF("self-check passed after %lld ms%s", (long long)now,
		unconfirmed ? ": confirmation allowed" : "");
}

bool app_self_check_poll(void)
{
	/* Also run from the SMP command hook: a gateway reads the image state
	 * and confirms right after (milliseconds apart), and should not have
	 * to wait for the main loop's next tick. */
	self_check_step(k_uptime_get());
	return app_self_check_passed();
}

/* Every condition under which we would rather be reset than keep going. */
static bool healthy(int64_t now)
{
	atomic_val_t busy = atomic_get(&smp_busy_since);
	atomic_val_t secs = uptime_s();

	if (!ble_up) {
		return false;
	}
	if (secs - atomic_get(&workq_beat) > WORKQ_STALL_S) {
		return false;
	}
	if (busy && secs - busy > SMP_HANDLER_MAX_S) {
		return false;
	}
	if (unconfirmed && !app_self_check_passed() && now > SELF_CHECK_DEADLINE_MS) {
		return false;
	}
	return true;
}

int main(void)
{
	bool fed_last = true;
	int err;

	uint8_t rec[SMPGW_ADV_RECORD_LEN];

	(void)settings_subsys_init();
	read_image_info();
	mgmt_hooks_init();
	(void)health_init();
	err = security_init(health_boot_count() == 1);
	if (err) {
		LOG_ERR("pairing callbacks: %d", err);
	}
	refresh_pending();
	/* The very first advertisement already carries the record: a central
	 * that connects at once (the gateway after a reboot) has seen it. */
	if (adv_encode(rec)) {
		memcpy(mfg_data + 2, rec, sizeof(rec));
	}
	err = ble_start();
	if (err) {
		/* Nothing useful runs without BLE: let the watchdog decide. */
		LOG_ERR("BLE did not start; the watchdog will reset the watch");
	}
	atomic_set(&workq_beat, uptime_s());
	(void)k_work_schedule(&workq_beat_work, K_MSEC(TICK_MS));
	err = watchdog_start();
	if (err == -ENODEV) {
		LOG_WRN("no watchdog on this board: a hung image is not reset");
	} else if (err) {
		LOG_ERR("watchdog: %d (no automatic revert of a hung image)", err);
	}

	for (uint32_t tick = 0;; tick++) {
		int64_t now = k_uptime_get();
		bool ok;

		self_check_step(now);
		ok = healthy(now);
		if (ok && wdt_channel >= 0) {
			(void)wdt_feed(wdt, wdt_channel);
		}
		if (!ok && fed_last) {
			LOG_ERR("unhealthy: no longer feeding the watchdog");
		}
		fed_last = ok;
		if (tick % BATTERY_PERIOD_TICKS == 0) {
			(void)health_sample_battery();
		}
		if (tick % PENDING_PERIOD_TICKS == 0) {
			refresh_pending();
		}
		if (atomic_get(&adv_wanted)) {
			(void)k_work_submit(&adv_start_work);
		}
		security_tick();
		app_adv_refresh();
		k_sleep(K_MSEC(TICK_MS));
	}
	return 0;
}
