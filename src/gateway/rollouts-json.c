/* SPDX-License-Identifier: MIT */
/*
 * Rollouts as JSON and text: the spec a client POSTs (parsed, validated
 * and normalized so the stored copy says everything explicitly), the views
 * the REST API shows, and the morning report (JSON and plain text).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/rollouts-int.h"
#include "util/util.h"

#define DEFAULT_RETRY_S 60
#define DEFAULT_PROBE_TIMEOUT_MS 5000

void ro_spec_clear(struct ro_spec *s)
{
	free(s->name);
	free(s->name_glob);
	free(s->version_glob);
	json_decref(s->devices);
	memset(s, 0, sizeof(*s));
}

/* ---- spec parsing ---- */

struct parse {
	char **errmsg;
	int err;
};

static int fail(struct parse *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fail(struct parse *p, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	if (p->err)
		return p->err;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (p->errmsg && !*p->errmsg)
		*p->errmsg = msg ? msg : xstrdup("invalid rollout");
	else
		free(msg);
	p->err = -EINVAL;
	return p->err;
}

/* Refuses keys outside allowed (NULL-terminated): a typo must not silently
 * become a default. */
static void only_keys(struct parse *p, const json_t *o, const char *where,
		      const char *const *allowed)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)o, k, v) {
		bool known = false;

		for (size_t i = 0; allowed[i]; i++)
			known = known || !strcmp(allowed[i], k);
		if (!known)
			fail(p, "%s: unknown member \"%s\"", where, k);
	}
}

static uint32_t get_uint(struct parse *p, const json_t *o, const char *key,
			 uint32_t def, uint32_t min, uint32_t max)
{
	const json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v))
		return def;
	if (!json_is_integer(v) || json_integer_value(v) < min ||
	    json_integer_value(v) > max) {
		fail(p, "\"%s\" must be an integer %" PRIu32 "..%" PRIu32, key, min, max);
		return def;
	}
	return (uint32_t)json_integer_value(v);
}

static char *get_str(struct parse *p, const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v))
		return NULL;
	if (!json_is_string(v) || !json_string_length(v) ||
	    json_string_length(v) > 256) {
		fail(p, "\"%s\" must be a non-empty string (at most 256 bytes)", key);
		return NULL;
	}
	return xstrdup(json_string_value(v));
}

static void parse_devices(struct parse *p, const json_t *list, struct ro_spec *s)
{
	size_t i, j;
	json_t *v;

	if (!json_is_array(list) || !json_array_size(list) ||
	    json_array_size(list) > 100000) {
		fail(p, "target.devices must be a non-empty array of device ids");
		return;
	}
	json_array_foreach(list, i, v) {
		if (!json_is_string(v) || !json_string_length(v)) {
			fail(p, "target.devices[%zu] must be a device id", i);
			return;
		}
		for (j = 0; j < i; j++)
			if (json_equal(v, json_array_get(list, j))) {
				fail(p, "target.devices: \"%s\" listed twice",
				     json_string_value(v));
				return;
			}
	}
	s->devices = json_deep_copy(list);
}

static void parse_target(struct parse *p, const json_t *t, struct ro_spec *s)
{
	static const char *const keys[] = { "all", "devices", "name", "version",
					    "outdated", NULL };
	const json_t *v;

	if (json_is_string(t) && !strcmp(json_string_value(t), "all"))
		return;
	if (json_is_string(t) && !strcmp(json_string_value(t), "outdated")) {
		s->outdated = true;
		return;
	}
	if (!json_is_object(t)) {
		fail(p, "\"target\" is required: \"all\", \"outdated\", or an object "
		     "with devices, name, version, outdated");
		return;
	}
	only_keys(p, t, "target", keys);
	if ((v = json_object_get(t, "devices")))
		parse_devices(p, v, s);
	s->name_glob = get_str(p, t, "name");
	s->version_glob = get_str(p, t, "version");
	v = json_object_get(t, "outdated");
	if (v && !json_is_boolean(v))
		fail(p, "target.outdated must be true or false");
	s->outdated = json_is_true(v);
	v = json_object_get(t, "all");
	if (v && !json_is_true(v))
		fail(p, "target.all can only be true");
}

static void parse_window(struct parse *p, const json_t *w, struct ro_spec *s)
{
	static const char *const keys[] = { "start", "end", "timezone", NULL };
	const char *why = NULL;
	const json_t *tz;

	if (!w || json_is_null(w) ||
	    (json_is_string(w) && !strcmp(json_string_value(w), "now"))) {
		s->window.always = true;
		return;
	}
	if (!json_is_object(w)) {
		fail(p, "\"window\" must be \"now\" or {\"start\": \"HH:MM\", "
		     "\"end\": \"HH:MM\", \"timezone\": \"Area/City\"}");
		return;
	}
	only_keys(p, w, "window", keys);
	if (rollout_parse_hhmm(json_string_value(json_object_get(w, "start")),
			       &s->window.start_min) < 0 ||
	    rollout_parse_hhmm(json_string_value(json_object_get(w, "end")),
			       &s->window.end_min) < 0) {
		fail(p, "window.start and window.end must be \"HH:MM\" (24 h)");
		return;
	}
	tz = json_object_get(w, "timezone");
	if (tz && (!json_is_string(tz) ||
		   json_string_length(tz) >= sizeof(s->window.tz))) {
		fail(p, "window.timezone must be a zone name such as \"Europe/Berlin\"");
		return;
	}
	snprintf(s->window.tz, sizeof(s->window.tz), "%s",
		 tz ? json_string_value(tz) : "");
	if (rollout_window_check(&s->window, &why) < 0)
		fail(p, "window: %s", why);
}

static void parse_policy(struct parse *p, const json_t *spec, struct ro_spec *s)
{
	static const char *const wkeys[] = { "canary", "size", "success_percent", NULL };
	static const char *const skeys[] = { "max_failures", "max_failure_percent", NULL };
	const json_t *waves = json_object_get(spec, "waves");
	const json_t *stop = json_object_get(spec, "stop");
	struct rollout_policy *pol = &s->policy;
	const char *why = NULL;

	rollout_policy_default(pol);
	if (waves && !json_is_object(waves))
		fail(p, "\"waves\" must be an object {canary, size, success_percent}");
	if (stop && !json_is_object(stop))
		fail(p, "\"stop\" must be an object {max_failures, max_failure_percent}");
	if (p->err)
		return;
	if (waves)
		only_keys(p, waves, "waves", wkeys);
	if (stop)
		only_keys(p, stop, "stop", skeys);
	pol->canary = get_uint(p, waves, "canary", 0, 0, 100000);
	pol->wave_size = get_uint(p, waves, "size", 0, 0, 100000);
	pol->success_pct = get_uint(p, waves, "success_percent", 100, 0, 100);
	pol->max_failures = get_uint(p, stop, "max_failures", ROLLOUT_NO_LIMIT, 0,
				     ROLLOUT_NO_LIMIT - 1);
	pol->max_failure_pct = get_uint(p, stop, "max_failure_percent", 101, 0, 100);
	pol->max_concurrent = get_uint(p, spec, "max_concurrent", 4, 1, 10000);
	if (!p->err && rollout_policy_check(pol, &why) < 0)
		fail(p, "%s", why);
}

static void parse_mode(struct parse *p, const json_t *spec, struct ro_spec *s)
{
	const json_t *m = json_object_get(spec, "mode");

	s->mode = GW_JOB_MODE_TEST_CONFIRM;
	if (!m)
		return;
	if (!json_is_string(m) || gw_job_mode_parse(json_string_value(m), &s->mode) < 0)
		fail(p, "\"mode\": unknown mode (\"%s\", \"%s\" or \"%s\")",
		     gw_job_mode_str(GW_JOB_MODE_TEST_CONFIRM),
		     gw_job_mode_str(GW_JOB_MODE_TEST),
		     gw_job_mode_str(GW_JOB_MODE_UPLOAD));
	else if (s->mode == GW_JOB_MODE_CONFIRM)
		fail(p, "\"mode\": \"%s\" does not fit a rollout",
		     gw_job_mode_str(GW_JOB_MODE_CONFIRM));
}

static json_t *window_json(const struct rollout_window *w)
{
	char a[32], b[32];

	if (w->always)
		return json_string("now");
	snprintf(a, sizeof(a), "%02d:%02d", w->start_min / 60, w->start_min % 60);
	snprintf(b, sizeof(b), "%02d:%02d", w->end_min / 60, w->end_min % 60);
	return json_pack("{s:s, s:s, s:s}", "start", a, "end", b, "timezone", w->tz);
}

static json_t *limit_json(uint32_t v, uint32_t none)
{
	return v >= none ? json_null() : json_integer(v);
}

static json_t *normalized(const struct ro_spec *s)
{
	json_t *target = json_object();

	if (s->devices)
		json_object_set(target, "devices", s->devices);
	if (s->name_glob)
		json_object_set_new(target, "name", json_string(s->name_glob));
	if (s->version_glob)
		json_object_set_new(target, "version", json_string(s->version_glob));
	if (s->outdated)
		json_object_set_new(target, "outdated", json_true());
	if (!json_object_size(target))
		json_object_set_new(target, "all", json_true());
	return json_pack("{s:s?, s:s, s:o, s:o, s:{s:i, s:i, s:i}, s:{s:o, s:o},"
			 " s:i, s:i, s:i, s:i}",
			 "name", s->name, "mode", gw_job_mode_str(s->mode),
			 "target", target, "window", window_json(&s->window),
			 "waves", "canary", (json_int_t)s->policy.canary,
			 "size", (json_int_t)s->policy.wave_size,
			 "success_percent", (json_int_t)s->policy.success_pct,
			 "stop", "max_failures",
			 limit_json(s->policy.max_failures, ROLLOUT_NO_LIMIT),
			 "max_failure_percent", limit_json(s->policy.max_failure_pct, 101),
			 "max_concurrent", (json_int_t)s->policy.max_concurrent,
			 "retry_interval_s", (json_int_t)(s->retry_interval_ms / 1000),
			 "probe_timeout_ms", (json_int_t)s->probe_timeout_ms,
			 "expire_after_windows", (json_int_t)s->expire_windows);
}

int ro_spec_parse(const json_t *spec, struct ro_spec *ret, json_t **ret_json,
		  char **errmsg)
{
	static const char *const keys[] = {
		"name", "image", "mode", "target", "window", "waves", "stop",
		"max_concurrent", "retry_interval_s", "probe_timeout_ms",
		"expire_after_windows", NULL,
	};
	struct parse p = { .errmsg = errmsg };
	struct ro_spec s = { 0 };

	if (!json_is_object(spec))
		return fail(&p, "the body must be a JSON object describing the rollout");
	only_keys(&p, spec, "rollout", keys);
	s.name = get_str(&p, spec, "name");
	parse_mode(&p, spec, &s);
	parse_target(&p, json_object_get(spec, "target"), &s);
	parse_window(&p, json_object_get(spec, "window"), &s);
	parse_policy(&p, spec, &s);
	s.retry_interval_ms = 1000 * get_uint(&p, spec, "retry_interval_s",
					      DEFAULT_RETRY_S, 1, 86400);
	s.probe_timeout_ms = get_uint(&p, spec, "probe_timeout_ms",
				      DEFAULT_PROBE_TIMEOUT_MS, 100, 120000);
	s.expire_windows = get_uint(&p, spec, "expire_after_windows", 0, 0, 10000);
	if (!p.err && s.expire_windows && s.window.always)
		fail(&p, "expire_after_windows needs a nightly window");
	if (p.err) {
		ro_spec_clear(&s);
		return p.err;
	}
	*ret_json = normalized(&s);
	*ret = s;
	return 0;
}

/* ---- views ---- */

void ro_counts(const struct rollout *r, uint32_t counts[ROLLOUT_DEV_STATE_COUNT])
{
	memset(counts, 0, sizeof(uint32_t) * ROLLOUT_DEV_STATE_COUNT);
	for (size_t i = 0; i < r->n; i++)
		counts[r->devs[i].state]++;
}

json_t *ro_totals_json(const struct rollout *r)
{
	uint32_t c[ROLLOUT_DEV_STATE_COUNT];
	json_t *o = json_object();

	ro_counts(r, c);
	for (int i = 0; i < ROLLOUT_DEV_STATE_COUNT; i++)
		json_object_set_new(o, rollout_dev_state_str((enum rollout_dev_state)i),
				    json_integer(c[i]));
	json_object_set_new(o, "total", json_integer((json_int_t)r->n));
	return o;
}

static json_t *ms_json(int64_t ms)
{
	return ms ? json_integer(ms) : json_null();
}

json_t *ro_summary_json(const struct rollout *r)
{
	json_t *o = json_pack("{s:s, s:s?, s:s, s:s?, s:s, s:s?, s:O, s:o, s:o, s:o,"
			      " s:o, s:I, s:o}",
			      "id", r->id, "name", r->spec.name, "image", r->image_id,
			      "image_version", r->image_version,
			      "state", rollout_state_str(r->state), "reason", r->reason,
			      "spec", r->spec_json, "created_ms", ms_json(r->created_ms),
			      "started_ms", ms_json(r->started_ms),
			      "finished_ms", ms_json(r->finished_ms),
			      "totals", ro_totals_json(r),
			      "windows_done", (json_int_t)r->windows_done,
			      "devices", json_integer((json_int_t)r->n));

	return o;
}

json_t *ro_dev_json(const struct ro_dev *d)
{
	return json_pack("{s:s, s:s, s:I, s:I, s:s, s:o, s:I, s:s?, s:s?, s:o, s:o, s:o, s:b}",
			 "rollout", d->ro->id, "device", d->id,
			 "position", (json_int_t)d->position,
			 "wave", (json_int_t)d->wave,
			 "state", rollout_dev_state_str(d->state),
			 "job_id", d->job_id ? json_integer(d->job_id) : json_null(),
			 "attempts", (json_int_t)d->attempts, "error", d->error,
			 "from_version", d->from_version,
			 "started_ms", ms_json(d->started_ms),
			 "finished_ms", ms_json(d->finished_ms),
			 "last_try_ms", ms_json(d->last_try_ms),
			 "acknowledged", d->acked);
}

static json_t *waves_json(const struct rollout *r, struct rollout_eval *ev)
{
	struct rollout_dev_view *v = xnew_array(struct rollout_dev_view, r->n + 1);
	uint32_t nw = rollout_wave_count(&r->spec.policy, r->n);
	struct rollout_wave_stats *st;
	json_t *a = json_array();

	for (size_t i = 0; i < r->n; i++) {
		v[i] = (struct rollout_dev_view){ .state = r->devs[i].state,
						  .wave = r->devs[i].wave,
						  .acked = r->devs[i].acked };
		if (r->devs[i].wave >= nw)
			nw = r->devs[i].wave + 1;
	}
	st = xnew_array(struct rollout_wave_stats, nw + 1);
	rollout_evaluate(&r->spec.policy, v, r->n, ev, st, nw);
	for (uint32_t w = 0; w < nw; w++)
		json_array_append_new(a, json_pack("{s:I, s:b, s:I, s:I, s:I, s:I, s:I}",
			"wave", (json_int_t)w, "open", w < ev->open_waves,
			"size", (json_int_t)st[w].size,
			"succeeded", (json_int_t)st[w].succeeded,
			"failed", (json_int_t)st[w].failed,
			"in_progress", (json_int_t)st[w].open,
			"final", (json_int_t)st[w].final));
	free(st);
	free(v);
	return a;
}

json_t *ro_detail_json(const struct rollout *r)
{
	json_t *o = ro_summary_json(r);
	json_t *devs = json_array();
	struct rollout_eval ev;

	json_object_set_new(o, "waves", waves_json(r, &ev));
	for (size_t i = 0; i < r->n; i++)
		json_array_append_new(devs, ro_dev_json(&r->devs[i]));
	json_object_set_new(o, "device_list", devs);
	return o;
}

/* ---- report ---- */

/* What a device's record means to a person reading the report. */
static const char *outcome(const struct ro_dev *d)
{
	switch (d->state) {
	case ROLLOUT_DEV_PENDING:
		return d->last_try_ms ? "not_seen" : "pending";
	case ROLLOUT_DEV_SUBMITTING:
	case ROLLOUT_DEV_RUNNING:
		return "running";
	case ROLLOUT_DEV_UPDATED:
	case ROLLOUT_DEV_UP_TO_DATE:
	case ROLLOUT_DEV_FAILED:
	case ROLLOUT_DEV_ROLLED_BACK:
	case ROLLOUT_DEV_LOST:
	case ROLLOUT_DEV_CANCELED:
	case ROLLOUT_DEV_EXCLUDED:
	case ROLLOUT_DEV_NOT_SEEN:
		return rollout_dev_state_str(d->state);
	}
	return "?";
}

static const char *const outcome_order[] = {
	"updated", "up_to_date", "failed", "rolled_back", "lost", "not_seen",
	"pending", "running", "canceled", "excluded",
};

static json_t *report_totals(const struct rollout *r)
{
	json_t *t = json_object();

	for (size_t i = 0; i < ARRAY_SIZE(outcome_order); i++)
		json_object_set_new(t, outcome_order[i], json_integer(0));
	for (size_t i = 0; i < r->n; i++) {
		const char *o = outcome(&r->devs[i]);

		json_object_set_new(t, o, json_integer(
			json_integer_value(json_object_get(t, o)) + 1));
	}
	json_object_set_new(t, "total", json_integer((json_int_t)r->n));
	return t;
}

static json_t *duration_json(int64_t from, int64_t to)
{
	return from && to >= from ? json_real((double)(to - from) / 1000.0) : json_null();
}

json_t *ro_report_json(const struct rollout *r, int64_t now_ms)
{
	json_t *devs = json_array();
	json_t *o;

	for (size_t i = 0; i < r->n; i++) {
		const struct ro_dev *d = &r->devs[i];
		bool done = rollout_dev_state_success(d->state);

		json_array_append_new(devs, json_pack(
			"{s:s, s:s, s:s?, s:I, s:I, s:s?, s:s?, s:o, s:o, s:o, s:o}",
			"device", d->id, "outcome", outcome(d), "reason", d->error,
			"wave", (json_int_t)d->wave, "attempts", (json_int_t)d->attempts,
			"from_version", d->from_version,
			"to_version", done ? r->image_version : NULL,
			"started_ms", ms_json(d->started_ms),
			"finished_ms", ms_json(d->finished_ms),
			"duration_s", duration_json(d->started_ms, d->finished_ms),
			"job_id", d->job_id ? json_integer(d->job_id) : json_null()));
	}
	o = ro_summary_json(r);
	json_object_set_new(o, "generated_ms", json_integer(now_ms));
	json_object_set_new(o, "duration_s", duration_json(r->started_ms,
				r->finished_ms ? r->finished_ms : now_ms));
	json_object_set_new(o, "outcomes", report_totals(r));
	json_object_set_new(o, "device_report", devs);
	return o;
}

/* ---- text ---- */

struct sbuf {
	char *buf;
	size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (int tries = 0; tries < 2; tries++) {
		va_start(ap, fmt);
		n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		b->cap = b->cap * 2 + (size_t)n + 1;
		b->buf = xrealloc(b->buf, b->cap);
	}
}

static const char *fmt_time(int64_t ms, char *buf, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!ms)
		return "-";
	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M:%SZ", &tm);
	return buf;
}

static const char *fmt_dur(int64_t ms, char *buf, size_t size)
{
	int64_t s = ms / 1000;

	if (ms < 0)
		return "-";
	if (s >= 3600)
		snprintf(buf, size, "%" PRId64 "h%02" PRId64 "m", s / 3600, s / 60 % 60);
	else if (s >= 60)
		snprintf(buf, size, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
	else
		snprintf(buf, size, "%" PRId64 ".%01" PRId64 "s", s, ms % 1000 / 100);
	return buf;
}

static void text_header(struct sbuf *b, const struct rollout *r, int64_t now_ms)
{
	char t1[32], t2[32], t3[32], d[32];
	const struct rollout_window *w = &r->spec.window;

	sb_printf(b, "Rollout %s%s%s%s: %s%s%s\n", r->id, r->spec.name ? " \"" : "",
		  r->spec.name ? r->spec.name : "", r->spec.name ? "\"" : "",
		  rollout_state_str(r->state), r->reason ? " - " : "",
		  r->reason ? r->reason : "");
	sb_printf(b, "Image %s (version %s), mode %s\n", r->image_id,
		  r->image_version ? r->image_version : "?", gw_job_mode_str(r->spec.mode));
	if (w->always)
		sb_printf(b, "Window: started at once, no end\n");
	else
		sb_printf(b, "Window: every night %02d:%02d-%02d:%02d %s (%u windows ended)\n",
			  w->start_min / 60, w->start_min % 60, w->end_min / 60,
			  w->end_min % 60, w->tz[0] ? w->tz : "local time",
			  r->windows_done);
	sb_printf(b, "Created %s, started %s, finished %s, took %s\n",
		  fmt_time(r->created_ms, t1, sizeof(t1)),
		  fmt_time(r->started_ms, t2, sizeof(t2)),
		  fmt_time(r->finished_ms, t3, sizeof(t3)),
		  r->started_ms ? fmt_dur((r->finished_ms ? r->finished_ms : now_ms) -
					  r->started_ms, d, sizeof(d)) : "-");
}

char *ro_report_text(const struct rollout *r, int64_t now_ms)
{
	struct sbuf b = { .cap = 4096 };
	json_t *tot = report_totals(r);
	char d[32];

	b.buf = xmalloc(b.cap);
	b.buf[0] = '\0';
	text_header(&b, r, now_ms);
	sb_printf(&b, "Devices: %zu:", r->n);
	for (size_t i = 0; i < ARRAY_SIZE(outcome_order); i++) {
		json_int_t n = json_integer_value(json_object_get(tot, outcome_order[i]));

		if (n)
			sb_printf(&b, " %lld %s,", (long long)n, outcome_order[i]);
	}
	if (b.buf[b.len - 1] == ',')
		b.len--;
	sb_printf(&b, "\n\n%-24s %4s  %-12s %-12s %8s  %s\n", "DEVICE", "WAVE",
		  "OUTCOME", "FROM", "TOOK", "REASON");
	for (size_t i = 0; i < r->n; i++) {
		const struct ro_dev *dv = &r->devs[i];

		sb_printf(&b, "%-24s %4u  %-12s %-12s %8s  %s\n", dv->id, dv->wave,
			  outcome(dv), dv->from_version ? dv->from_version : "-",
			  dv->started_ms && dv->finished_ms ?
			  fmt_dur(dv->finished_ms - dv->started_ms, d, sizeof(d)) : "-",
			  dv->error ? dv->error : "");
	}
	json_decref(tot);
	return b.buf;
}
