/* SPDX-License-Identifier: MIT */
/* The watch's pairing window (firmware/host/pairing-window.c): when a new
 * central may pair, driven the way the firmware drives it (uptime seconds,
 * one button sample per second). */
#include <stdint.h>

#include "smpgw/pairing-window.h"
#include "tap.h"

static const struct smpgw_pairing_config cfg = {
	.boot_window_s = 300, .button_window_s = 60, .hold_s = 3,
};

static void test_first_boot(void)
{
	struct smpgw_pairing_window w;

	smpgw_pairing_init(&w, &cfg, true, 2);
	ok(smpgw_pairing_open(&w, 2), "open right after the first boot");
	ok(smpgw_pairing_open(&w, 301), "open at 301 s (boot at 2 s, 300 s window)");
	is_int(smpgw_pairing_left_s(&w, 100), 202, "seconds left");
	ok(!smpgw_pairing_open(&w, 302), "closed at 302 s");
	is_int(smpgw_pairing_left_s(&w, 400), 0, "nothing left once closed");

	smpgw_pairing_init(&w, &cfg, true, 0);
	smpgw_pairing_done(&w);
	ok(!smpgw_pairing_open(&w, 1), "the first bond closes the boot window");
}

static void test_later_boot(void)
{
	struct smpgw_pairing_window w;

	smpgw_pairing_init(&w, &cfg, false, 0);
	ok(!smpgw_pairing_open(&w, 0), "closed after a later boot");
	ok(!smpgw_pairing_open(&w, 10), "still closed without the button");
}

static void test_button(void)
{
	struct smpgw_pairing_window w;
	uint32_t t;

	smpgw_pairing_init(&w, &cfg, false, 0);
	/* Pressed at 10, 11, 12: held 2 s at the third sample, not enough. */
	for (t = 10; t <= 12; t++)
		ok(!smpgw_pairing_button(&w, true, t), "sample %u: held, not yet", (unsigned)t);
	ok(!smpgw_pairing_open(&w, 12), "closed while the hold is short");
	ok(smpgw_pairing_button(&w, true, 13), "held 3 s opens the window");
	ok(smpgw_pairing_open(&w, 13), "open");
	ok(!smpgw_pairing_button(&w, true, 14), "holding on does not reopen it");
	ok(smpgw_pairing_open(&w, 72), "open until 72 s");
	ok(!smpgw_pairing_open(&w, 73), "closed at 73 s (13 + 60)");

	/* A stuck button never opens a second window. */
	for (t = 14; t < 500; t++)
		(void)smpgw_pairing_button(&w, true, t);
	ok(!smpgw_pairing_open(&w, 500), "stuck button: closed");

	/* Release, short press, release: nothing. */
	(void)smpgw_pairing_button(&w, false, 501);
	(void)smpgw_pairing_button(&w, true, 502);
	(void)smpgw_pairing_button(&w, true, 503);
	(void)smpgw_pairing_button(&w, false, 504);
	(void)smpgw_pairing_button(&w, true, 505);
	ok(!smpgw_pairing_open(&w, 505), "short presses do not add up");
	(void)smpgw_pairing_button(&w, true, 506);
	(void)smpgw_pairing_button(&w, true, 507);
	ok(smpgw_pairing_button(&w, true, 508), "a new 3 s hold after release opens it again");
	smpgw_pairing_done(&w);
	ok(!smpgw_pairing_open(&w, 509), "pairing closes the button window");
}

static void test_config_edges(void)
{
	struct smpgw_pairing_config none = { 0 };
	struct smpgw_pairing_config nowrap = { .boot_window_s = 100, .button_window_s = 10 };
	struct smpgw_pairing_window w;

	smpgw_pairing_init(&w, &none, true, 0);
	ok(!smpgw_pairing_open(&w, 0), "no boot window configured");
	ok(!smpgw_pairing_button(&w, true, 0) && !smpgw_pairing_button(&w, true, 5),
	   "no button window configured");
	ok(!smpgw_pairing_open(&w, 5), "still closed");

	/* hold_s 0 means 1: a single sample is not a hold. */
	smpgw_pairing_init(&w, &nowrap, false, 0);
	ok(!smpgw_pairing_button(&w, true, 7), "one sample is no hold");
	ok(smpgw_pairing_button(&w, true, 8), "two samples 1 s apart are");

	/* Uptime near the top of uint32: the window clamps, never wraps. */
	smpgw_pairing_init(&w, &nowrap, true, UINT32_MAX - 10);
	ok(smpgw_pairing_open(&w, UINT32_MAX - 1), "open near UINT32_MAX");
}

int main(void)
{
	test_first_boot();
	test_later_boot();
	test_button();
	test_config_edges();
	return tap_done();
}
