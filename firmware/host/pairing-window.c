/* SPDX-License-Identifier: MIT */
/* The pairing window (smpgw/pairing-window.h): plain C, firmware and host. */
#include <string.h>

#include "smpgw/pairing-window.h"

static void open_for(struct smpgw_pairing_window *w, uint32_t now_s, uint32_t secs)
{
	uint32_t until = now_s + secs;

	if (secs == 0)
		return;
	if (until < now_s) /* uptime near UINT32_MAX: clamp, never wrap to closed */
		until = UINT32_MAX;
	if (until > w->open_until_s)
		w->open_until_s = until;
}

void smpgw_pairing_init(struct smpgw_pairing_window *w, const struct smpgw_pairing_config *cfg,
			bool first_boot, uint32_t now_s)
{
	memset(w, 0, sizeof(*w));
	w->cfg = *cfg;
	if (w->cfg.hold_s == 0)
		w->cfg.hold_s = 1;
	if (first_boot)
		open_for(w, now_s, w->cfg.boot_window_s);
}

bool smpgw_pairing_button(struct smpgw_pairing_window *w, bool pressed, uint32_t now_s)
{
	if (!pressed) {
		w->held = false;
		w->hold_used = false;
		return false;
	}
	if (!w->held) {
		w->held = true;
		w->held_since_s = now_s;
	}
	/* A press held on keeps the window it opened; opening again needs a
	 * release, so a stuck button cannot hold the window open forever. */
	if (w->hold_used || w->cfg.button_window_s == 0 ||
	    now_s - w->held_since_s < w->cfg.hold_s)
		return false;
	w->hold_used = true;
	open_for(w, now_s, w->cfg.button_window_s);
	return true;
}

bool smpgw_pairing_open(const struct smpgw_pairing_window *w, uint32_t now_s)
{
	return now_s < w->open_until_s;
}

uint32_t smpgw_pairing_left_s(const struct smpgw_pairing_window *w, uint32_t now_s)
{
	return smpgw_pairing_open(w, now_s) ? w->open_until_s - now_s : 0;
}

void smpgw_pairing_done(struct smpgw_pairing_window *w)
{
	w->open_until_s = 0;
}
