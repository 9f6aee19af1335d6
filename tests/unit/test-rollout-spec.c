/* SPDX-License-Identifier: MIT */
/* Unit tests of the rollout document (parse, validate, normalize) and of
 * the report (JSON outcomes, text) built from an in-memory rollout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/rollouts-int.h"
#include "tap.h"
#include "util/util.h"

static int parse(const char *text, struct ro_spec *s, json_t **norm, char **err)
{
	json_t *j = json_loads(text, 0, NULL);
	int r;

	*err = NULL;
	*norm = NULL;
	if (!j)
		return -EBADMSG;
	r = ro_spec_parse(j, s, norm, err);
	json_decref(j);
	return r;
}

static void test_defaults(void)
{
	struct ro_spec s, s2;
	json_t *norm, *norm2;
	char *err = NULL;

	ok(parse("{\"target\": \"all\"}", &s, &norm, &err) == 0, "minimal document");
	ok(s.mode == GW_JOB_MODE_TEST_CONFIRM, "test-confirm by default");
	ok(s.window.always, "start now by default");
	is_int(s.policy.success_pct, 100, "100 %% by default");
	is_int(s.policy.max_concurrent, 4, "4 at once");
	ok(s.policy.max_failures == ROLLOUT_NO_LIMIT, "no failure limit");
	is_int(s.retry_interval_ms, 60000, "retry every 60 s");
	ok(json_is_true(json_object_get(json_object_get(norm, "target"), "all")),
	   "normalized target all");
	ok(json_is_null(json_object_get(json_object_get(norm, "stop"), "max_failures")),
	   "no limit is null");
	ok(ro_spec_parse(norm, &s2, &norm2, &err) == 0 && json_equal(norm, norm2),
	   "the normalized document parses to itself");
	ro_spec_clear(&s);
	ro_spec_clear(&s2);
	json_decref(norm);
	json_decref(norm2);
}

static void test_full(void)
{
	struct ro_spec s;
	json_t *norm;
	char *err = NULL;
	int r;

	r = parse("{\"name\": \"n\", \"mode\": \"test\", \"target\": {\"devices\": [\"a\", \"b\"],"
		 " \"name\": \"P-*\", \"version\": \"1.*\", \"outdated\": true},"
		 " \"window\": {\"start\": \"22:30\", \"end\": \"04:15\", \"timezone\": \"UTC\"},"
		 " \"waves\": {\"canary\": 2, \"size\": 3, \"success_percent\": 50},"
		 " \"stop\": {\"max_failures\": 0, \"max_failure_percent\": 10},"
		 " \"max_concurrent\": 7, \"retry_interval_s\": 5, \"probe_timeout_ms\": 250,"
		 " \"expire_after_windows\": 2}", &s, &norm, &err);

	ok(r == 0, "every member (%s)", err ? err : "ok");
	ok(s.mode == GW_JOB_MODE_TEST && !s.window.always && s.window.start_min == 1350 &&
	   s.window.end_min == 255, "mode and window");
	ok(s.policy.canary == 2 && s.policy.wave_size == 3 && s.policy.success_pct == 50 &&
	   s.policy.max_failures == 0 && s.policy.max_failure_pct == 10 &&
	   s.policy.max_concurrent == 7, "policy");
	ok(json_array_size(s.devices) == 2 && !strcmp(s.name_glob, "P-*") &&
	   !strcmp(s.version_glob, "1.*") && s.outdated, "target");
	ok(s.retry_interval_ms == 5000 && s.probe_timeout_ms == 250 && s.expire_windows == 2,
	   "timing");
	is_str(json_string_value(json_object_get(json_object_get(norm, "window"), "end")),
	       "04:15", "window end normalized");
	ro_spec_clear(&s);
	json_decref(norm);
}

static void test_refused(void)
{
	static const char *const bad[] = {
		"[]",
		"{}",
		"{\"target\": \"some\"}",
		"{\"target\": 5}",
		"{\"target\": \"all\", \"typo\": 1}",
		"{\"target\": {\"devices\": []}}",
		"{\"target\": {\"devices\": [\"a\", \"a\"]}}",
		"{\"target\": {\"devices\": [1]}}",
		"{\"target\": {\"all\": false}}",
		"{\"target\": {\"outdated\": 1}}",
		"{\"target\": {\"nmae\": \"x\"}}",
		"{\"target\": \"all\", \"mode\": \"confirm\"}",
		"{\"target\": \"all\", \"mode\": \"yolo\"}",
		"{\"target\": \"all\", \"window\": \"tonight\"}",
		"{\"target\": \"all\", \"window\": {\"start\": \"02:00\"}}",
		"{\"target\": \"all\", \"window\": {\"start\": \"02:00\", \"end\": \"02:00\"}}",
		"{\"target\": \"all\", \"window\": {\"start\": \"2:00\", \"end\": \"03:00\"}}",
		"{\"target\": \"all\", \"window\": {\"start\": \"02:00\", \"end\": \"03:00\","
		" \"timezone\": \"Nowhere/Atlantis\"}}",
		"{\"target\": \"all\", \"waves\": {\"canary\": -1}}",
		"{\"target\": \"all\", \"waves\": {\"success_percent\": 101}}",
		"{\"target\": \"all\", \"waves\": 3}",
		"{\"target\": \"all\", \"stop\": {\"max_failure_percent\": 200}}",
		"{\"target\": \"all\", \"max_concurrent\": 0}",
		"{\"target\": \"all\", \"retry_interval_s\": 0}",
		"{\"target\": \"all\", \"expire_after_windows\": 1}",
		"{\"target\": \"all\", \"name\": \"\"}",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct ro_spec s;
		json_t *norm;
		char *err = NULL;
		int r = parse(bad[i], &s, &norm, &err);

		ok(r == -EINVAL && err && *err, "refused %s: %s", bad[i], err ? err : "-");
		ok(norm == NULL, "nothing normalized");
		free(err);
	}
}

/* A rollout as the store would load it, without the runtime. */
static struct rollout *fake_rollout(void)
{
	static const struct { const char *id; enum rollout_dev_state st; const char *err; } d[] = {
		{ "PineTime-1", ROLLOUT_DEV_UPDATED, NULL },
		{ "PineTime-2", ROLLOUT_DEV_UP_TO_DATE, NULL },
		{ "PineTime-3", ROLLOUT_DEV_FAILED, "device unreachable" },
		{ "PineTime-4", ROLLOUT_DEV_PENDING, NULL },
		{ "PineTime-5", ROLLOUT_DEV_PENDING, NULL },
		{ "PineTime-6", ROLLOUT_DEV_RUNNING, NULL },
	};
	struct rollout *r = xnew(struct rollout);
	json_t *spec = json_loads("{\"target\": \"all\", \"name\": \"night\", \"waves\":"
				  " {\"canary\": 2}}", 0, NULL);
	char *err = NULL;

	ro_spec_parse(spec, &r->spec, &r->spec_json, &err);
	json_decref(spec);
	r->id = xstrdup("ro-7");
	r->image_id = xstrdup("ab12");
	r->image_version = xstrdup("1.1.0");
	r->state = ROLLOUT_STATE_PAUSED;
	r->reason = xstrdup("3 failures, more than the 2 allowed");
	r->created_ms = 1774699200000LL;
	r->started_ms = 1774699200000LL;
	r->n = ARRAY_SIZE(d);
	r->devs = xnew_array(struct ro_dev, r->n);
	for (size_t i = 0; i < r->n; i++) {
		r->devs[i] = (struct ro_dev){
			.ro = r, .id = xstrdup(d[i].id), .position = (uint32_t)i,
			.wave = rollout_wave_of(&r->spec.policy, i), .state = d[i].st,
			.error = d[i].err ? xstrdup(d[i].err) : NULL,
			.from_version = xstrdup("1.0.0"),
			.started_ms = i < 3 ? r->started_ms + 1000 : 0,
			.finished_ms = i < 3 ? r->started_ms + 13500 : 0,
			.attempts = i < 3 || i == 5,
		};
	}
	r->devs[3].last_try_ms = r->started_ms + 5000; /* tried: not seen */
	return r;
}

static void test_report(void)
{
	struct rollout *r = fake_rollout();
	json_t *rep = ro_report_json(r, r->started_ms + 60000);
	json_t *o = json_object_get(rep, "outcomes");
	json_t *first = json_array_get(json_object_get(rep, "device_report"), 0);
	char *text = ro_report_text(r, r->started_ms + 60000);
	json_t *detail = ro_detail_json(r);

	is_int(json_integer_value(json_object_get(o, "updated")), 1, "1 updated");
	is_int(json_integer_value(json_object_get(o, "up_to_date")), 1, "1 up to date");
	is_int(json_integer_value(json_object_get(o, "failed")), 1, "1 failed");
	is_int(json_integer_value(json_object_get(o, "not_seen")), 1, "tried, never seen");
	is_int(json_integer_value(json_object_get(o, "pending")), 1, "not tried yet");
	is_int(json_integer_value(json_object_get(o, "running")), 1, "1 running");
	is_int(json_integer_value(json_object_get(o, "total")), 6, "6 in all");
	is_str(json_string_value(json_object_get(first, "to_version")), "1.1.0", "to_version");
	ok(json_real_value(json_object_get(first, "duration_s")) == 12.5, "duration 12.5 s");
	is_int(json_real_value(json_object_get(rep, "duration_s")), 60, "rollout 60 s so far");
	ok(strstr(text, "Rollout ro-7 \"night\": paused - 3 failures") != NULL, "text header");
	ok(strstr(text, "Devices: 6: 1 updated, 1 up_to_date, 1 failed, 1 not_seen, 1 pending,"
		      " 1 running\n") != NULL, "text totals");
	ok(strstr(text, "PineTime-3                  1  failed       1.0.0           12.5s"
		      "  device unreachable") != NULL, "text device line");
	is_int(json_array_size(json_object_get(detail, "waves")), 2, "canary + one wave");
	is_int(json_integer_value(json_object_get(json_array_get(
		json_object_get(detail, "waves"), 0), "succeeded")), 2, "canary: 2 succeeded");
	if (!strstr(text, "Devices: 6"))
		tap_diag("%s", text);
	json_decref(detail);
	json_decref(rep);
	free(text);
	r->timer = NULL;
	ro_free(r);
}

int main(void)
{
	test_defaults();
	test_full();
	test_refused();
	test_report();
	return tap_done();
}
