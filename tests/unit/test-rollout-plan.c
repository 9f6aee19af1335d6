/* SPDX-License-Identifier: MIT */
/* Unit tests of the pure rollout planner: waves, thresholds, stop rules,
 * picking, windows across midnight and daylight saving changes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/rollout-plan.h"
#include "tap.h"
#include "util/util.h"

#define N 50

static void fleet(const struct rollout_policy *p, struct rollout_dev_view *d,
		  size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] = (struct rollout_dev_view){ .state = ROLLOUT_DEV_PENDING,
						  .wave = rollout_wave_of(p, i) };
}

static struct rollout_policy canary5_waves10(void)
{
	struct rollout_policy p;

	rollout_policy_default(&p);
	p.canary = 5;
	p.wave_size = 10;
	p.success_pct = 80;
	p.max_failures = 2;
	p.max_concurrent = 10;
	return p;
}

static void test_waves(void)
{
	struct rollout_policy p = canary5_waves10();
	struct rollout_policy flat;

	is_int(rollout_wave_of(&p, 0), 0, "canary first");
	is_int(rollout_wave_of(&p, 4), 0, "canary last");
	is_int(rollout_wave_of(&p, 5), 1, "wave 1 first");
	is_int(rollout_wave_of(&p, 14), 1, "wave 1 last");
	is_int(rollout_wave_of(&p, 15), 2, "wave 2 first");
	is_int(rollout_wave_count(&p, 50), 6, "5 + 4*10 + 5 = 6 waves");
	is_int(rollout_wave_count(&p, 3), 1, "small fleet: canary only");
	is_int(rollout_wave_count(&p, 0), 0, "no devices, no waves");
	rollout_policy_default(&flat);
	is_int(rollout_wave_count(&flat, 50), 1, "default: one wave");
	flat.wave_size = 20;
	is_int(rollout_wave_count(&flat, 50), 3, "no canary, waves of 20");
	is_int(rollout_wave_of(&flat, 20), 1, "no canary: 20 is wave 1");
}

static void set_range(struct rollout_dev_view *d, size_t from, size_t to,
		      enum rollout_dev_state s)
{
	for (size_t i = from; i < to; i++)
		d[i].state = s;
}

static void test_canary_gate(void)
{
	struct rollout_policy p = canary5_waves10();
	struct rollout_dev_view d[N];
	struct rollout_eval ev;
	size_t pick[N], k;

	fleet(&p, d, N);
	ok(rollout_evaluate(&p, d, N, &ev, NULL, 0) == 0, "evaluate");
	is_int(ev.open_waves, 1, "only the canary is open");
	k = rollout_pick(&p, d, N, &ev, pick, N);
	is_int(k, 5, "the 5 canary devices are picked");
	is_int(pick[4], 4, "in order");
	ok(!ev.finished && !ev.stop && !ev.stuck, "nothing to report");

	set_range(d, 0, 4, ROLLOUT_DEV_UPDATED);
	d[4].state = ROLLOUT_DEV_RUNNING;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	is_int(ev.open_waves, 2, "4/5 = 80 %: wave 1 opens");
	is_int(ev.active, 1, "one running");
	k = rollout_pick(&p, d, N, &ev, pick, N);
	is_int(k, 9, "room for 9 beside the running one");
	is_int(pick[0], 5, "wave 1 starts at 5");

	d[4].state = ROLLOUT_DEV_UP_TO_DATE;
	d[5].busy = true;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	k = rollout_pick(&p, d, N, &ev, pick, N);
	is_int(ev.active, 1, "busy probe counts as active");
	is_int(pick[0], 6, "busy device skipped");
	d[6].later = true;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	k = rollout_pick(&p, d, N, &ev, pick, N);
	is_int(ev.active, 1, "a deferred device is not active");
	is_int(pick[0], 7, "deferred device skipped");
}

static void test_stop_rules(void)
{
	struct rollout_policy p = canary5_waves10();
	struct rollout_dev_view d[N];
	struct rollout_wave_stats st[8];
	struct rollout_eval ev;
	size_t pick[N];

	fleet(&p, d, N);
	set_range(d, 0, 15, ROLLOUT_DEV_UPDATED);
	d[15].state = ROLLOUT_DEV_FAILED;
	d[16].state = ROLLOUT_DEV_ROLLED_BACK;
	rollout_evaluate(&p, d, N, &ev, st, 8);
	ok(!ev.stop, "2 failures: not more than 2");
	is_int(st[2].failed, 2, "wave 2 counted");
	d[17].state = ROLLOUT_DEV_LOST;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(ev.stop, "3rd failure stops");
	ok(strstr(ev.reason, "3 failures") != NULL, "reason: %s", ev.reason);
	is_int(rollout_pick(&p, d, N, &ev, pick, N), 0, "nothing picked once stopped");

	/* Resume acknowledges the failures seen so far. */
	d[15].acked = d[16].acked = d[17].acked = true;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(!ev.stop, "acknowledged failures do not stop again");
	ok(rollout_pick(&p, d, N, &ev, pick, N) > 0, "work continues after resume");

	/* Percentage rule, per wave. */
	p.max_failures = ROLLOUT_NO_LIMIT;
	p.max_failure_pct = 20;
	fleet(&p, d, N);
	set_range(d, 0, 5, ROLLOUT_DEV_UPDATED);
	d[5].state = ROLLOUT_DEV_FAILED;
	d[6].state = ROLLOUT_DEV_FAILED;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(!ev.stop, "2 of 10 = 20 %%: not more");
	d[7].state = ROLLOUT_DEV_FAILED;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(ev.stop, "3 of 10 stops");
	ok(strstr(ev.reason, "wave 1") != NULL, "reason names the wave: %s", ev.reason);
}

static void test_stuck_and_finished(void)
{
	struct rollout_policy p = canary5_waves10();
	struct rollout_dev_view d[N];
	struct rollout_eval ev;

	p.max_failures = ROLLOUT_NO_LIMIT;
	fleet(&p, d, N);
	set_range(d, 0, 3, ROLLOUT_DEV_UPDATED);
	set_range(d, 3, 5, ROLLOUT_DEV_FAILED);
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(ev.stuck && !ev.stop, "canary ended at 60 %%: stuck");
	ok(strstr(ev.reason, "below") != NULL, "reason: %s", ev.reason);
	is_int(ev.open_waves, 1, "wave 1 stays closed");

	d[3].acked = d[4].acked = true; /* resume */
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(!ev.stuck && ev.open_waves == 2, "acknowledged failures leave the count: 3 of 3");
	d[3].acked = d[4].acked = false;
	d[4].state = ROLLOUT_DEV_PENDING; /* retry-failed */
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(!ev.stuck, "a pending device: not stuck yet");

	set_range(d, 0, N, ROLLOUT_DEV_UPDATED);
	d[20].state = ROLLOUT_DEV_EXCLUDED;
	d[21].state = ROLLOUT_DEV_NOT_SEEN;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	ok(ev.finished, "all final: finished");
	is_int(ev.open_waves, 6, "all waves open");

	/* Excluded devices do not count in a wave's size. */
	fleet(&p, d, N);
	set_range(d, 0, 4, ROLLOUT_DEV_EXCLUDED);
	d[4].state = ROLLOUT_DEV_UPDATED;
	rollout_evaluate(&p, d, N, &ev, NULL, 0);
	is_int(ev.open_waves, 2, "1 of 1 counted device: 100 %");
	rollout_evaluate(&p, d, 0, &ev, NULL, 0);
	ok(ev.finished && ev.open_waves == 0, "empty rollout is finished");
}

static void test_policy_check(void)
{
	struct rollout_policy p;
	const char *why = NULL;

	rollout_policy_default(&p);
	ok(rollout_policy_check(&p, &why) == 0, "default ok");
	p.success_pct = 101;
	ok(rollout_policy_check(&p, &why) == -EINVAL && why, "pct > 100: %s", why ? why : "");
	rollout_policy_default(&p);
	p.max_concurrent = 0;
	ok(rollout_policy_check(&p, &why) == -EINVAL, "concurrency 0 refused");
}

/* ---- windows ---- */

/* 2026-03-28 12:00:00 UTC: the Saturday before Europe's spring change. */
#define T_0328_1200Z 1774699200000LL
#define HOUR 3600000LL
#define MIN_ 60000LL

static struct rollout_window win(const char *start, const char *end,
				 const char *tz)
{
	struct rollout_window w = { 0 };

	rollout_parse_hhmm(start, &w.start_min);
	rollout_parse_hhmm(end, &w.end_min);
	snprintf(w.tz, sizeof(w.tz), "%s", tz);
	return w;
}

static void test_hhmm(void)
{
	int m = -1;

	ok(rollout_parse_hhmm("02:00", &m) == 0 && m == 120, "02:00");
	ok(rollout_parse_hhmm("23:59", &m) == 0 && m == 1439, "23:59");
	ok(rollout_parse_hhmm("24:00", &m) == -EINVAL, "24:00 refused");
	ok(rollout_parse_hhmm("2:00", &m) == -EINVAL, "2:00 refused");
	ok(rollout_parse_hhmm("02:60", &m) == -EINVAL, "02:60 refused");
	ok(rollout_parse_hhmm(NULL, &m) == -EINVAL, "NULL refused");
}

static void test_window_utc(void)
{
	struct rollout_window w = win("02:00", "05:00", "UTC");
	bool in;
	int64_t next, start;

	ok(rollout_window_locate(&w, T_0328_1200Z, &in, &next, &start) == 0, "locate");
	ok(!in, "noon is outside");
	is_int(next, T_0328_1200Z + 14 * HOUR, "next start: tomorrow 02:00");
	ok(rollout_window_locate(&w, T_0328_1200Z - 9 * HOUR, &in, &next, &start) == 0 && in,
	   "03:00 inside");
	is_int(next, T_0328_1200Z - 7 * HOUR, "ends at 05:00");
	is_int(start, T_0328_1200Z - 10 * HOUR, "started at 02:00");
	rollout_window_locate(&w, T_0328_1200Z - 7 * HOUR, &in, &next, &start);
	ok(!in, "05:00 itself is outside (end exclusive)");

	/* Across midnight. */
	w = win("22:00", "05:00", "UTC");
	rollout_window_locate(&w, T_0328_1200Z - 11 * HOUR, &in, &next, &start);
	ok(in, "01:00 inside 22:00-05:00");
	is_int(start, T_0328_1200Z - 14 * HOUR, "began yesterday 22:00");
	is_int(next, T_0328_1200Z - 7 * HOUR, "ends 05:00");
	rollout_window_locate(&w, T_0328_1200Z + 11 * HOUR, &in, &next, &start);
	ok(in, "23:00 inside");
	is_int(next, T_0328_1200Z + 17 * HOUR, "ends tomorrow 05:00");

	w.always = true;
	rollout_window_locate(&w, T_0328_1200Z, &in, &next, NULL);
	ok(in && next == INT64_MAX, "always: inside, never ends");
}

static void test_window_dst(void)
{
	struct rollout_window w = win("02:00", "05:00", "Europe/Berlin");
	bool in;
	int64_t next, start;
	const char *tz = getenv("TZ");
	char *saved = tz ? xstrdup(tz) : NULL;

	/* Saturday noon UTC = 13:00 CET. Sunday 29 March: 02:00 CET does not
	 * exist; mktime moves it one hour on, to 03:00 CEST = 01:00 UTC. The
	 * end, 05:00 CEST, is 03:00 UTC. */
	rollout_window_locate(&w, T_0328_1200Z, &in, &next, &start);
	ok(!in, "13:00 CET outside");
	is_int(next, T_0328_1200Z + 13 * HOUR, "next start 03:00 CEST = 01:00Z");
	rollout_window_locate(&w, T_0328_1200Z + 14 * HOUR, &in, &next, &start);
	ok(in, "02:00Z = 04:00 CEST inside");
	is_int(next, T_0328_1200Z + 15 * HOUR, "ends 05:00 CEST = 03:00Z");
	/* The night before: 02:00-05:00 CET = 01:00-04:00Z. */
	rollout_window_locate(&w, T_0328_1200Z - 10 * HOUR - 30 * MIN_, &in, &next, &start);
	ok(in, "01:30Z Saturday = 02:30 CET inside");
	is_int(start, T_0328_1200Z - 11 * HOUR, "began 01:00Z");
	/* Autumn: 25 October 2026, 02:00-03:00 CEST happens twice. A window
	 * 01:00-04:00 local lasts 4 real hours that night. */
	w = win("01:00", "04:00", "Europe/Berlin");
	/* 2026-10-24 12:00Z */
	rollout_window_locate(&w, 1792843200000LL, &in, &next, &start);
	ok(!in, "noon outside");
	is_int(next, 1792843200000LL + 11 * HOUR, "01:00 CEST = 23:00Z");
	rollout_window_locate(&w, 1792843200000LL + 12 * HOUR, &in, &next, &start);
	ok(in, "midnight UTC inside");
	is_int(next, 1792843200000LL + 15 * HOUR, "04:00 CET = 03:00Z: four hours");
	ok((tz == NULL) == (getenv("TZ") == NULL) &&
	   (!tz || !strcmp(saved, getenv("TZ"))), "process TZ restored");
	free(saved);
}

static void test_window_check(void)
{
	struct rollout_window w = win("02:00", "02:00", "UTC");
	const char *why = NULL;

	ok(rollout_window_check(&w, &why) == -EINVAL && why, "equal ends: %s", why ? why : "");
	w = win("02:00", "05:00", "Mars/Olympus_Mons");
	ok(rollout_window_check(&w, &why) == -EINVAL, "unknown zone: %s", why ? why : "");
	w = win("02:00", "05:00", "../../etc/passwd");
	ok(rollout_window_check(&w, &why) == -EINVAL, "path refused");
	w = win("02:00", "05:00", "CET-1CEST,M3.5.0,M10.5.0/3");
	ok(rollout_window_check(&w, &why) == 0, "POSIX rule accepted");
	w = win("02:00", "05:00", "");
	ok(rollout_window_check(&w, &why) == 0, "daemon's zone");
}

static void test_names_and_globs(void)
{
	enum rollout_dev_state s;
	enum rollout_state rs;

	for (int i = 0; i < ROLLOUT_DEV_STATE_COUNT; i++) {
		ok(rollout_dev_state_parse(rollout_dev_state_str((enum rollout_dev_state)i), &s) == 0 &&
		   (int)s == i, "round trip %s", rollout_dev_state_str((enum rollout_dev_state)i));
	}
	ok(rollout_dev_state_parse("bogus", &s) == -EINVAL, "unknown device state");
	ok(rollout_state_parse("paused", &rs) == 0 && rs == ROLLOUT_STATE_PAUSED, "paused");
	ok(rollout_glob_match("PineTime-*", "PineTime-12"), "name glob");
	ok(!rollout_glob_match("PineTime-*", "Bangle"), "name glob miss");
	ok(rollout_glob_match("1.0.*", "1.0.0"), "version glob");
	ok(rollout_glob_match(NULL, "x"), "no pattern matches");
	ok(!rollout_glob_match("*", NULL), "no string never matches");
	ok(rollout_version_equal("0.9.0+0", "0.9.0"), "zero build left out");
	ok(rollout_version_equal("1.2.3+4", "1.2.3.4"), "store vs img state");
	ok(!rollout_version_equal("1.2.3+4", "1.2.3"), "builds differ");
	ok(!rollout_version_equal("1.2.3", "1.2.30"), "revisions differ");
	ok(!rollout_version_equal("1.2", "1.2"), "too short");
	ok(!rollout_version_equal("1.2.3.4.5", "1.2.3.4.5"), "too long");
	ok(!rollout_version_equal("1.2.3+4.5", "1.2.3+4.5"), "junk after the build");
	ok(!rollout_version_equal("1.2.x", "1.2.x"), "not decimal");
	ok(!rollout_version_equal(NULL, "1.2.3"), "NULL");
}

int main(void)
{
	test_waves();
	test_canary_gate();
	test_stop_rules();
	test_stuck_and_finished();
	test_policy_check();
	test_hhmm();
	test_window_utc();
	test_window_dst();
	test_window_check();
	test_names_and_globs();
	return tap_done();
}
