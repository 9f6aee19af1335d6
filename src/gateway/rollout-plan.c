/* SPDX-License-Identifier: MIT */
/* Pure rollout planning: waves, thresholds, stop rules, windows (see
 * rollout-plan.h). */
#include "gateway/rollout-plan.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/mcuboot.h"
#include "util/util.h"

/* ---- names ---- */

static const char *const rollout_state_names[] = {
	[ROLLOUT_STATE_WAITING] = "waiting",
	[ROLLOUT_STATE_RUNNING] = "running",
	[ROLLOUT_STATE_PAUSED] = "paused",
	[ROLLOUT_STATE_COMPLETED] = "completed",
	[ROLLOUT_STATE_CANCELED] = "canceled",
};

static const char *const dev_state_names[] = {
	[ROLLOUT_DEV_PENDING] = "pending",
	[ROLLOUT_DEV_SUBMITTING] = "submitting",
	[ROLLOUT_DEV_RUNNING] = "running",
	[ROLLOUT_DEV_UPDATED] = "updated",
	[ROLLOUT_DEV_UP_TO_DATE] = "up_to_date",
	[ROLLOUT_DEV_FAILED] = "failed",
	[ROLLOUT_DEV_ROLLED_BACK] = "rolled_back",
	[ROLLOUT_DEV_LOST] = "lost",
	[ROLLOUT_DEV_CANCELED] = "canceled",
	[ROLLOUT_DEV_EXCLUDED] = "excluded",
	[ROLLOUT_DEV_NOT_SEEN] = "not_seen",
};

static int name_parse(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (names[i] && !strcmp(names[i], s))
			return (int)i;
	return -EINVAL;
}

const char *rollout_state_str(enum rollout_state s)
{
	return (unsigned)s < ARRAY_SIZE(rollout_state_names) ?
	       rollout_state_names[s] : "?";
}

int rollout_state_parse(const char *s, enum rollout_state *ret)
{
	int i = name_parse(rollout_state_names, ARRAY_SIZE(rollout_state_names), s);

	if (i < 0)
		return i;
	*ret = (enum rollout_state)i;
	return 0;
}

const char *rollout_dev_state_str(enum rollout_dev_state s)
{
	return (unsigned)s < ARRAY_SIZE(dev_state_names) ? dev_state_names[s] : "?";
}

int rollout_dev_state_parse(const char *s, enum rollout_dev_state *ret)
{
	int i = name_parse(dev_state_names, ARRAY_SIZE(dev_state_names), s);

	if (i < 0)
		return i;
	*ret = (enum rollout_dev_state)i;
	return 0;
}

bool rollout_dev_state_final(enum rollout_dev_state s)
{
	return s != ROLLOUT_DEV_PENDING && s != ROLLOUT_DEV_SUBMITTING &&
	       s != ROLLOUT_DEV_RUNNING;
}

bool rollout_dev_state_failure(enum rollout_dev_state s)
{
	return s == ROLLOUT_DEV_FAILED || s == ROLLOUT_DEV_ROLLED_BACK ||
	       s == ROLLOUT_DEV_LOST;
}

bool rollout_dev_state_success(enum rollout_dev_state s)
{
	return s == ROLLOUT_DEV_UPDATED || s == ROLLOUT_DEV_UP_TO_DATE;
}

/* ---- waves ---- */

void rollout_policy_default(struct rollout_policy *ret)
{
	*ret = (struct rollout_policy){
		.canary = 0, .wave_size = 0, .success_pct = 100,
		.max_failures = ROLLOUT_NO_LIMIT, .max_failure_pct = 101,
		.max_concurrent = 4,
	};
}

int rollout_policy_check(const struct rollout_policy *p, const char **why)
{
	const char *w = NULL;

	if (p->success_pct > 100)
		w = "success threshold must be 0..100 %";
	else if (p->max_concurrent == 0 || p->max_concurrent > 10000)
		w = "max_concurrent must be 1..10000";
	if (w && why)
		*why = w;
	return w ? -EINVAL : 0;
}

uint32_t rollout_wave_of(const struct rollout_policy *p, size_t index)
{
	size_t w;

	if (p->canary) {
		if (index < p->canary)
			return 0;
		index -= p->canary;
		w = 1 + (p->wave_size ? index / p->wave_size : 0);
	} else {
		w = p->wave_size ? index / p->wave_size : 0;
	}
	return w > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)w;
}

uint32_t rollout_wave_count(const struct rollout_policy *p, size_t n)
{
	return n ? rollout_wave_of(p, n - 1) + 1 : 0;
}

static void count_device(const struct rollout_dev_view *d,
			 struct rollout_wave_stats *s, struct rollout_eval *ev)
{
	if (d->busy || d->state == ROLLOUT_DEV_SUBMITTING ||
	    d->state == ROLLOUT_DEV_RUNNING)
		ev->active++;
	if (d->state == ROLLOUT_DEV_EXCLUDED)
		return;
	s->size++;
	if (rollout_dev_state_success(d->state))
		s->succeeded++;
	if (rollout_dev_state_failure(d->state)) {
		s->failed++;
		if (!d->acked) {
			s->unacked_failed++;
			ev->unacked_failures++;
		}
	}
	if (rollout_dev_state_final(d->state))
		s->final++;
	else
		s->open++;
}

/* Failures a person acknowledged (by resuming) leave the wave's count: a
 * resume means "go on without them", as hawkBit's resume starts the next
 * group. */
static bool threshold_met(const struct rollout_policy *p,
			  const struct rollout_wave_stats *s)
{
	uint32_t counted = s->size - (s->failed - s->unacked_failed);

	return counted == 0 ||
	       (uint64_t)s->succeeded * 100 >= (uint64_t)p->success_pct * counted;
}

static void check_stop(const struct rollout_policy *p,
		       const struct rollout_wave_stats *st, uint32_t n_waves,
		       struct rollout_eval *ev)
{
	if (p->max_failures != ROLLOUT_NO_LIMIT &&
	    ev->unacked_failures > p->max_failures) {
		ev->stop = true;
		snprintf(ev->reason, sizeof(ev->reason),
			 "%u failures, more than the %u allowed",
			 ev->unacked_failures, p->max_failures);
		return;
	}
	for (uint32_t w = 0; p->max_failure_pct <= 100 && w < n_waves; w++) {
		const struct rollout_wave_stats *s = &st[w];

		if ((uint64_t)s->unacked_failed * 100 >
		    (uint64_t)p->max_failure_pct * s->size) {
			ev->stop = true;
			snprintf(ev->reason, sizeof(ev->reason),
				 "wave %u: %u of %u devices failed, more than %u %%",
				 w, s->unacked_failed, s->size, p->max_failure_pct);
			return;
		}
	}
}

static void open_waves(const struct rollout_policy *p,
		       const struct rollout_wave_stats *st, uint32_t n_waves,
		       struct rollout_eval *ev)
{
	uint32_t w;

	ev->open_waves = n_waves ? 1 : 0;
	for (w = 0; w + 1 < n_waves && threshold_met(p, &st[w]); w++)
		ev->open_waves = w + 2;
	/* The last open wave is over but missed its threshold: nothing more
	 * can happen without a person (retry-failed, or cancel). */
	w = ev->open_waves;
	if (w && w < n_waves && st[w - 1].open == 0) {
		ev->stuck = true;
		if (!ev->stop)
			snprintf(ev->reason, sizeof(ev->reason),
				 "wave %u ended with %u of %u devices updated, "
				 "below the %u %% needed for wave %u",
				 w - 1, st[w - 1].succeeded, st[w - 1].size,
				 p->success_pct, w);
	}
}

int rollout_evaluate(const struct rollout_policy *p,
		     const struct rollout_dev_view *devs, size_t n,
		     struct rollout_eval *ret,
		     struct rollout_wave_stats *stats, size_t max_stats)
{
	struct rollout_eval ev = { 0 };
	struct rollout_wave_stats *st;
	uint32_t n_waves;

	if (rollout_policy_check(p, NULL) < 0)
		return -EINVAL;
	n_waves = rollout_wave_count(p, n);
	for (size_t i = 0; i < n; i++)
		if (devs[i].wave >= n_waves)
			n_waves = devs[i].wave + 1;
	st = xnew_array(struct rollout_wave_stats, n_waves ? n_waves : 1);
	for (size_t i = 0; i < n; i++)
		count_device(&devs[i], &st[devs[i].wave], &ev);
	ev.n_waves = n_waves;
	ev.finished = true;
	for (uint32_t w = 0; w < n_waves; w++)
		if (st[w].open)
			ev.finished = false;
	check_stop(p, st, n_waves, &ev);
	open_waves(p, st, n_waves, &ev);
	if (stats)
		memcpy(stats, st, MIN((size_t)n_waves, max_stats) * sizeof(*st));
	free(st);
	*ret = ev;
	return 0;
}

size_t rollout_pick(const struct rollout_policy *p,
		    const struct rollout_dev_view *devs, size_t n,
		    const struct rollout_eval *ev, size_t *out, size_t max)
{
	size_t room, k = 0;

	if (ev->stop || ev->active >= p->max_concurrent)
		return 0;
	room = p->max_concurrent - ev->active;
	for (size_t i = 0; i < n && k < room && k < max; i++) {
		const struct rollout_dev_view *d = &devs[i];

		if (d->state == ROLLOUT_DEV_PENDING && !d->busy && !d->later &&
		    d->wave < ev->open_waves)
			out[k++] = i;
	}
	return k;
}

/* ---- windows ---- */

int rollout_parse_hhmm(const char *s, int *ret)
{
	int h, m;

	if (!s || strlen(s) != 5 || !isdigit((unsigned char)s[0]) ||
	    !isdigit((unsigned char)s[1]) || s[2] != ':' ||
	    !isdigit((unsigned char)s[3]) || !isdigit((unsigned char)s[4]))
		return -EINVAL;
	h = (s[0] - '0') * 10 + (s[1] - '0');
	m = (s[3] - '0') * 10 + (s[4] - '0');
	if (h > 23 || m > 59)
		return -EINVAL;
	*ret = h * 60 + m;
	return 0;
}

/* A zone name the C library will understand: a tzdata file, or a POSIX
 * rule ("CET-1CEST,M3.5.0,M10.5.0/3", "UTC0"). glibc silently takes an
 * unknown name for UTC, which would shift a window by hours. */
static bool tz_known(const char *tz)
{
	const char *dir = getenv("TZDIR");
	char path[512];

	if (!*tz || !strcmp(tz, "UTC"))
		return true;
	if (strstr(tz, "..") || tz[0] == '/' || strlen(tz) > 60)
		return false;
	for (const char *c = tz; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr("/_+-:,.<>", *c))
			return false;
	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", tz);
	if (access(path, R_OK) == 0)
		return true;
	for (const char *c = tz; *c; c++)
		if (isdigit((unsigned char)*c))
			return true;
	return false;
}

int rollout_window_check(const struct rollout_window *w, const char **why)
{
	const char *m = NULL;

	if (w->always)
		return 0;
	if (w->start_min < 0 || w->start_min >= 1440 || w->end_min < 0 ||
	    w->end_min >= 1440)
		m = "window times must be HH:MM";
	else if (w->start_min == w->end_min)
		m = "window start and end must differ";
	else if (!tz_known(w->tz))
		m = "unknown time zone";
	if (m && why)
		*why = m;
	return m ? -EINVAL : 0;
}

struct tz_saved {
	char *old;
	bool had;
	bool switched;
};

static void tz_enter(const char *tz, struct tz_saved *s)
{
	const char *old = getenv("TZ");

	s->had = old != NULL;
	s->old = old ? xstrdup(old) : NULL;
	s->switched = *tz != '\0';
	if (s->switched)
		setenv("TZ", tz, 1);
	tzset();
}

static void tz_leave(struct tz_saved *s)
{
	if (s->switched) {
		if (s->had)
			setenv("TZ", s->old, 1);
		else
			unsetenv("TZ");
	}
	tzset();
	free(s->old);
}

/* Local time minute_of_day on the day `day` days after base's date. */
static int64_t local_ms(const struct tm *base, int day, int minute_of_day)
{
	struct tm t = *base;
	time_t r;

	t.tm_mday += day;
	t.tm_hour = minute_of_day / 60;
	t.tm_min = minute_of_day % 60;
	t.tm_sec = 0;
	t.tm_isdst = -1; /* let the zone's rules decide */
	r = mktime(&t);
	return (int64_t)r * 1000;
}

static void locate(const struct rollout_window *w, int64_t now_ms,
		   bool *inside, int64_t *next, int64_t *wstart)
{
	time_t now_s = (time_t)(now_ms / 1000);
	int64_t best_start = INT64_MAX;
	struct tm tm;

	localtime_r(&now_s, &tm);
	*inside = false;
	/* A window that began yesterday may still be open; tomorrow's is the
	 * latest the next one can start. */
	for (int d = -1; d <= 2; d++) {
		int64_t s = local_ms(&tm, d, w->start_min);
		int64_t e = local_ms(&tm, d + (w->end_min <= w->start_min), w->end_min);

		if (s <= now_ms && now_ms < e) {
			*inside = true;
			*next = e;
			*wstart = s;
			return;
		}
		if (s > now_ms && s < best_start)
			best_start = s;
	}
	*next = best_start;
	*wstart = best_start;
}

int rollout_window_locate(const struct rollout_window *w, int64_t now_ms,
			  bool *ret_inside, int64_t *ret_next_ms,
			  int64_t *ret_window_start_ms)
{
	struct tz_saved saved;
	bool inside;
	int64_t next, wstart;

	if (rollout_window_check(w, NULL) < 0)
		return -EINVAL;
	if (w->always) {
		*ret_inside = true;
		*ret_next_ms = INT64_MAX;
		if (ret_window_start_ms)
			*ret_window_start_ms = 0;
		return 0;
	}
	tz_enter(w->tz, &saved);
	locate(w, now_ms, &inside, &next, &wstart);
	tz_leave(&saved);
	*ret_inside = inside;
	*ret_next_ms = next;
	if (ret_window_start_ms)
		*ret_window_start_ms = wstart;
	return 0;
}

bool rollout_glob_match(const char *pattern, const char *s)
{
	if (!pattern)
		return true;
	return s && fnmatch(pattern, s, 0) == 0;
}

bool rollout_version_equal(const char *a, const char *b)
{
	struct mcuboot_version x, y;

	return a && b && mcuboot_version_parse(a, strlen(a), &x) == 0 &&
	       mcuboot_version_parse(b, strlen(b), &y) == 0 &&
	       mcuboot_version_equal(&x, &y);
}
