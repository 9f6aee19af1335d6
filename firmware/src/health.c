/* SPDX-License-Identifier: MIT */
/*
 * Health facts the smpgw group reports: battery (SAADC + charger pins),
 * why the watch last reset (hwinfo), how often it booted (a counter in
 * settings on the external flash's storage partition), uptime, image state.
 */
#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/adc.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/drivers/hwinfo.h>
#include <zephyr/dfu/mcuboot.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/settings/settings.h>

#include "app.h"

LOG_MODULE_REGISTER(smpgw_health, LOG_LEVEL_INF);

#define USER_NODE DT_PATH(zephyr_user)
/* The cell sits behind a 1:2 resistor divider on P0.31. */
#define VBAT_DIVIDER 2

/* boards/pinetime_devkit0.overlay wires these up. A board without them
 * (native_sim) reports the battery as unknown and never charging. */
#if DT_NODE_HAS_PROP(USER_NODE, io_channels)
#define HAVE_VBAT 1
static const struct adc_dt_spec vbat = ADC_DT_SPEC_GET(USER_NODE);
#else
#define HAVE_VBAT 0
#endif
#if DT_NODE_HAS_PROP(USER_NODE, charging_gpios) && DT_NODE_HAS_PROP(USER_NODE, power_gpios)
#define HAVE_CHARGER 1
static const struct gpio_dt_spec charging_pin = GPIO_DT_SPEC_GET(USER_NODE, charging_gpios);
static const struct gpio_dt_spec power_pin = GPIO_DT_SPEC_GET(USER_NODE, power_gpios);
#else
#define HAVE_CHARGER 0
#endif

static enum smpgw_reset_cause reset_cause = SMPGW_RESET_UNKNOWN;
static uint32_t boot_count;
static bool adc_ok;
/* Written by the main thread, read by the SMP work queue: word-sized
 * values, a torn read is impossible on Cortex-M4. */
static uint16_t battery_mv;
static uint8_t battery_pct = SMPGW_BATTERY_PCT_UNKNOWN;
static bool charging;

/* Several bits can be set at once (e.g. pin reset during a brownout):
 * report the one that matters most for a fleet operator. */
static enum smpgw_reset_cause map_reset_cause(uint32_t hw)
{
	static const struct {
		uint32_t bit;
		enum smpgw_reset_cause cause;
	} order[] = {
		{ RESET_WATCHDOG, SMPGW_RESET_WATCHDOG },
		{ RESET_CPU_LOCKUP, SMPGW_RESET_LOCKUP },
		{ RESET_BROWNOUT, SMPGW_RESET_BROWNOUT },
		{ RESET_SOFTWARE, SMPGW_RESET_SOFTWARE },
		{ RESET_PIN, SMPGW_RESET_PIN },
		{ RESET_DEBUG, SMPGW_RESET_DEBUG },
		{ RESET_POR, SMPGW_RESET_POWER_ON },
	};

	for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
		if (hw & order[i].bit) {
			return order[i].cause;
		}
	}
	/* nRF52 reports no bit at all after a plain power-on. */
	return hw ? SMPGW_RESET_OTHER : SMPGW_RESET_POWER_ON;
}

static int boot_count_set(const char *key, size_t len, settings_read_cb read_cb, void *cb_arg)
{
	const char *next;

	if (settings_name_steq(key, "boot_count", &next) && !next) {
		if (len != sizeof(boot_count)) {
			return -EINVAL;
		}
		return read_cb(cb_arg, &boot_count, sizeof(boot_count)) < 0 ? -EIO : 0;
	}
	return -ENOENT;
}

SETTINGS_STATIC_HANDLER_DEFINE(smpgw, "smpgw", NULL, boot_count_set, NULL, NULL);

static void pins_init(void)
{
#if HAVE_CHARGER
	if (device_is_ready(charging_pin.port)) {
		(void)gpio_pin_configure_dt(&charging_pin, GPIO_INPUT);
	}
	if (device_is_ready(power_pin.port)) {
		(void)gpio_pin_configure_dt(&power_pin, GPIO_INPUT);
	}
#endif
#if HAVE_VBAT
	adc_ok = device_is_ready(vbat.dev) && adc_channel_setup_dt(&vbat) == 0;
#endif
	if (!adc_ok) {
		LOG_WRN("battery ADC unavailable: battery reported as unknown");
	}
}

uint32_t health_boot_count(void)
{
	return boot_count;
}

int health_init(void)
{
	uint32_t hw = 0;
	int err;

	if (hwinfo_get_reset_cause(&hw) == 0) {
		reset_cause = map_reset_cause(hw);
		/* The register accumulates across resets until cleared. */
		(void)hwinfo_clear_reset_cause();
	}

	err = settings_load_subtree("smpgw");
	if (err) {
		LOG_WRN("settings load: %d", err);
	}
	boot_count++;
	err = settings_save_one("smpgw/boot_count", &boot_count, sizeof(boot_count));
	if (err) {
		LOG_WRN("boot counter not saved: %d", err);
	}
	pins_init();
	LOG_INF("boot %u, reset cause %s", boot_count, smpgw_reset_cause_name(reset_cause));
	return health_sample_battery();
}

int health_sample_battery(void)
{
#if HAVE_VBAT
	int16_t raw = 0;
	int32_t mv;
	struct adc_sequence seq = {
		.buffer = &raw,
		.buffer_size = sizeof(raw),
	};
	int err;
#endif

#if HAVE_CHARGER
	charging = gpio_pin_get_dt(&charging_pin) == 1 || gpio_pin_get_dt(&power_pin) == 1;
#endif
#if HAVE_VBAT
	if (!adc_ok) {
		return -ENODEV;
	}
	(void)adc_sequence_init_dt(&vbat, &seq);
	err = adc_read(vbat.dev, &seq);
	if (err) {
		return err;
	}
	mv = raw < 0 ? 0 : raw;
	err = adc_raw_to_millivolts_dt(&vbat, &mv);
	if (err) {
		return err;
	}
	mv *= VBAT_DIVIDER;
	battery_mv = (uint16_t)CLAMP(mv, 0, SMPGW_BATTERY_MV_MAX);
	battery_pct = smpgw_battery_percent(battery_mv);
	return 0;
#else
	return -ENODEV;
#endif
}

bool health_charging(void)
{
	return charging;
}

uint8_t health_battery_pct(void)
{
	return battery_pct;
}

void health_fill(struct smpgw_health *h)
{
	h->battery_pct = battery_pct;
	h->battery_mv = battery_mv;
	h->reset_cause = reset_cause;
	h->boot_count = boot_count;
	h->uptime_s = (uint32_t)(k_uptime_get() / MSEC_PER_SEC);
	h->confirmed = boot_is_img_confirmed();
	h->self_check = app_self_check_passed();
}
