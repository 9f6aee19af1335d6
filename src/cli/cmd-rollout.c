/* SPDX-License-Identifier: MIT */
/*
 * smpgw rollout create | show | pause | resume | cancel | retry-failed:
 * the rollout API (docs/rollouts.md) from the command line. `create`
 * builds the rollout document from options (or takes one with --spec);
 * `show` prints the daemon's text report (or the list of rollouts);
 * --follow polls the rollout until it completes, is canceled or paused,
 * with a bar over its devices and a line per device outcome.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "cli/rest.h"
#include "util/util.h"

#define POLL_MS 1000

struct ro_opts {
	json_t *doc;       /* create: the rollout document */
	json_t *target;    /* create: target object, or NULL */
	const char *image; /* create: IMAGE argument */
	const char *spec;
	const char *id;
	bool follow, json;
};

static const char *const unfinished[] = { "pending", "submitting", "running" };
static const char *const failures[] = { "failed", "rolled_back", "lost" };

static long long total_of(json_t *totals, const char *const *keys, size_t n)
{
	long long sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += (long long)json_integer_value(json_object_get(totals, keys[i]));
	return sum;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

/* "18 updated, 2 up_to_date": the nonzero totals. */
static char *totals_text(json_t *totals)
{
	char *s = xstrdup(""), *t;
	const char *k;
	json_t *v;

	json_object_foreach(totals, k, v) {
		if (strcmp(k, "total") == 0 || !json_integer_value(v))
			continue;
		t = xasprintf("%s%s%lld %s", s, *s ? ", " : "", (long long)json_integer_value(v), k);
		free(s);
		s = t;
	}
	return s;
}

/* {device id: name} of the fleet, so that the lines name watches as
 * `smpgw devices` does (a BLE watch's id is its address); empty when the
 * daemon does not answer (the lines then show ids). */
static json_t *device_names(void)
{
	json_t *names = json_object(), *l, *d;
	size_t i;
	int code;

	rest_set_quiet(true); /* cli_poll() speaks for an unreachable daemon */
	l = rest_json("GET", "/api/v1/devices", NULL, NULL, &code);
	rest_set_quiet(false);
	json_array_foreach(json_object_get(l, "devices"), i, d)
		if (cli_str(d, "name", NULL))
			json_object_set_new(names, cli_str(d, "id", ""),
					    json_string(cli_str(d, "name", "")));
	json_decref(l);
	return names;
}

/* A line per device whose state changed since the last look (started,
 * reached an outcome). */
static void device_lines(struct progress *p, json_t *ro, json_t *seen, json_t *names)
{
	json_t *d;
	size_t i;

	json_array_foreach(json_object_get(ro, "device_list"), i, d) {
		const char *id = cli_str(d, "device", "?"), *st = cli_str(d, "state", "?");
		const char *was = json_string_value(json_object_get(seen, id));
		const char *err = cli_str(d, "error", NULL);

		if (was && strcmp(was, st) == 0)
			continue;
		if (was || strcmp(st, "pending") != 0)
			progress_line(p, "%s %s%s%s", cli_str(names, id, id), st, err ? ": " : "",
				      err ? err : "");
		json_object_set_new(seen, id, json_string(st));
	}
}

static void show_bar(struct progress *p, json_t *ro)
{
	json_t *totals = json_object_get(ro, "totals");
	double total = (double)json_integer_value(json_object_get(totals, "total"));
	double done = total - (double)total_of(totals, unfinished, ARRAY_SIZE(unfinished));
	double started = (double)json_integer_value(json_object_get(ro, "started_ms"));
	double rate = started > 0 && now_ms() > started + 1000 ?
		      done * 1000 / (now_ms() - started) : 0;
	char *label = xasprintf("%s %s", cli_str(ro, "id", "?"), cli_str(ro, "state", "?"));

	progress_update(p, label, done, total, rate, false);
	free(label);
}

static int final_line(json_t *ro)
{
	const char *state = cli_str(ro, "state", "?"), *reason = cli_str(ro, "reason", NULL);
	json_t *totals = json_object_get(ro, "totals");
	char *t = totals_text(totals);
	bool ok = strcmp(state, "completed") == 0 &&
		  !total_of(totals, failures, ARRAY_SIZE(failures));

	printf("%s %s%s%s%s: %s\n", cli_str(ro, "id", "?"), state, reason ? " (" : "",
	       reason ? reason : "", reason ? ")" : "", t);
	free(t);
	return ok ? 0 : EXIT_FAILED;
}

static int follow(const char *id)
{
	struct progress *p = progress_new(stdout, isatty(STDOUT_FILENO));
	char *esc = rest_escape(id), *path = xasprintf("/api/v1/rollouts/%s", esc);
	json_t *seen = json_object(), *names = device_names(), *ro;
	struct timespec ts = { .tv_sec = POLL_MS / 1000, .tv_nsec = POLL_MS % 1000 * 1000000L };
	int code = 0;

	for (;;) {
		const char *state;

		ro = cli_poll(path, p, &code);
		if (!ro)
			break;
		device_lines(p, ro, seen, names);
		show_bar(p, ro);
		state = cli_str(ro, "state", "?");
		if (strcmp(state, "completed") == 0 || strcmp(state, "canceled") == 0 ||
		    strcmp(state, "paused") == 0) {
			progress_done(p);
			code = final_line(ro);
			json_decref(ro);
			break;
		}
		json_decref(ro);
		nanosleep(&ts, NULL);
	}
	progress_free(p);
	json_decref(seen);
	json_decref(names);
	free(path);
	free(esc);
	return code;
}

/* The rollout as it now is, one line. */
static void summary_line(json_t *ro)
{
	char *t = totals_text(json_object_get(ro, "totals"));
	const char *reason = cli_str(ro, "reason", NULL);

	const char *name = cli_str(ro, "name", NULL);

	printf("%s %s%s%s%s: image %s%s%s%s, %lld devices: %s\n", cli_str(ro, "id", "?"),
	       cli_str(ro, "state", "?"), reason ? " (" : "", reason ? reason : "",
	       reason ? ")" : "", cli_str(ro, "image_version", "?"), name ? " \"" : "",
	       name ? name : "", name ? "\"" : "",
	       (long long)json_integer_value(json_object_get(ro, "devices")), t);
	free(t);
}

static void print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
}

static int list(bool json)
{
	int code;
	json_t *l = rest_json("GET", "/api/v1/rollouts", NULL, NULL, &code), *ro;
	size_t i;

	if (l && json)
		print_json(l);
	else if (l)
		json_array_foreach(json_object_get(l, "rollouts"), i, ro)
			summary_line(ro);
	json_decref(l);
	return code;
}

static int show(const struct ro_opts *o)
{
	char *esc, *path, *text;
	json_t *ro;
	int code;

	if (!o->id)
		return list(o->json);
	esc = rest_escape(o->id);
	if (o->json) {
		path = xasprintf("/api/v1/rollouts/%s", esc);
		ro = rest_json("GET", path, NULL, NULL, &code);
		if (ro)
			print_json(ro);
		json_decref(ro);
	} else {
		path = xasprintf("/api/v1/rollouts/%s/report.txt", esc);
		text = rest_text(path, &code);
		if (text)
			fputs(text, stdout);
		free(text);
	}
	free(path);
	free(esc);
	if (!code && o->follow)
		code = follow(o->id);
	return code;
}

static int action(const char *verb, const struct ro_opts *o)
{
	char *esc = rest_escape(o->id);
	char *path = xasprintf("/api/v1/rollouts/%s/%s", esc, verb);
	int code;
	json_t *ro = rest_json("POST", path, NULL, NULL, &code);

	if (ro && o->json)
		print_json(ro);
	else if (ro)
		summary_line(ro);
	json_decref(ro);
	free(path);
	free(esc);
	if (!code && o->follow)
		code = follow(o->id);
	return code;
}

static int number(const char *opt, const char *arg, json_int_t *ret)
{
	char *end;
	long long v = strtoll(arg, &end, 10);

	if (!*arg || *end || v < 0)
		return cli_usage_error("rollout create: %s takes a number, not '%s'", opt, arg);
	*ret = (json_int_t)v;
	return 0;
}

static void set_in(json_t *doc, const char *obj, const char *key, json_t *v)
{
	json_t *o = json_object_get(doc, obj);

	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(doc, obj, o);
	}
	json_object_set_new(o, key, v);
}

/* --window now | HH:MM-HH:MM[@Area/City] */
static int window(json_t *doc, const char *arg)
{
	char start[6], end[6], tz[64] = "";

	if (strcmp(arg, "now") == 0) {
		json_object_set_new(doc, "window", json_string("now"));
		return 0;
	}
	if (sscanf(arg, "%5[0-9:]-%5[0-9:]@%63s", start, end, tz) < 2)
		return cli_usage_error("rollout create: --window is now or HH:MM-HH:MM[@Area/City], "
				       "not '%s'", arg);
	set_in(doc, "window", "start", json_string(start));
	set_in(doc, "window", "end", json_string(end));
	if (tz[0])
		set_in(doc, "window", "timezone", json_string(tz));
	return 0;
}

static json_t *target(struct ro_opts *o)
{
	if (!o->target)
		o->target = json_object();
	return o->target;
}

static json_t *id_list(const char *arg)
{
	json_t *a = json_array();
	char *copy = xstrdup(arg), *save = NULL;

	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_array_append_new(a, json_string(t));
	free(copy);
	return a;
}

/* An option of `create` only; 0 or an exit status. */
static int create_opt(struct ro_opts *o, int c, const char *arg)
{
	static const char *const num_keys[][2] = {
		['c'] = { "waves", "canary" }, ['w'] = { "waves", "size" },
		['P'] = { "waves", "success_percent" }, ['F'] = { "stop", "max_failures" },
		['R'] = { "stop", "max_failure_percent" }, ['C'] = { NULL, "max_concurrent" },
	};
	json_int_t v = 0;

	switch (c) {
	case 'n': json_object_set_new(o->doc, "name", json_string(arg)); return 0;
	case 'm': json_object_set_new(o->doc, "mode", json_string(arg)); return 0;
	case 't': json_object_set_new(o->doc, "target", json_string(arg)); return 0;
	case 'd': json_object_set_new(target(o), "devices", id_list(arg)); return 0;
	case 'g': json_object_set_new(target(o), "name", json_string(arg)); return 0;
	case 'v': json_object_set_new(target(o), "version", json_string(arg)); return 0;
	case 'o': json_object_set_new(target(o), "outdated", json_true()); return 0;
	case 'W': return window(o->doc, arg);
	case 's': o->spec = arg; return 0;
	case 'c': case 'w': case 'P': case 'F': case 'R': case 'C':
		if (number(num_keys[c][1], arg, &v))
			return EXIT_USAGE;
		if (num_keys[c][0])
			set_in(o->doc, num_keys[c][0], num_keys[c][1], json_integer(v));
		else
			json_object_set_new(o->doc, num_keys[c][1], json_integer(v));
		return 0;
	default:
		return EXIT_USAGE;
	}
}

static int parse(int argc, char **argv, struct ro_opts *o, bool create)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "follow", no_argument, NULL, 'f' },
		{ "name", required_argument, NULL, 'n' },
		{ "mode", required_argument, NULL, 'm' },
		{ "target", required_argument, NULL, 't' },
		{ "devices", required_argument, NULL, 'd' },
		{ "match", required_argument, NULL, 'g' },
		{ "from-version", required_argument, NULL, 'v' },
		{ "outdated", no_argument, NULL, 'o' },
		{ "window", required_argument, NULL, 'W' },
		{ "canary", required_argument, NULL, 'c' },
		{ "wave-size", required_argument, NULL, 'w' },
		{ "success-percent", required_argument, NULL, 'P' },
		{ "max-failures", required_argument, NULL, 'F' },
		{ "max-failure-percent", required_argument, NULL, 'R' },
		{ "max-concurrent", required_argument, NULL, 'C' },
		{ "spec", required_argument, NULL, 's' },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	int c, r, li = 0;

	optind = 0;
	while ((c = cli_getopt(argc, argv, "jf", opts, &li)) != -1) {
		if (c == CLI_OPT_HELP)
			return -1;
		if (c == 'j' || c == 'f') {
			*(c == 'j' ? &o->json : &o->follow) = true;
			continue;
		}
		if (c == '?')
			return EXIT_USAGE;
		if (!create)
			return cli_usage_error("rollout: --%s is an option of rollout create",
					       opts[li].name);
		if ((r = create_opt(o, c, optarg)))
			return r;
	}
	if (optind < argc - 1)
		return cli_usage_error("rollout: one %s at most", create ? "IMAGE" : "ID");
	if (optind == argc - 1)
		*(create ? &o->image : &o->id) = argv[optind];
	return cli_load_token();
}

static int load_spec(struct ro_opts *o)
{
	json_error_t e;
	json_t *spec = strcmp(o->spec, "-") == 0 ? json_loadf(stdin, 0, &e) :
		       json_load_file(o->spec, 0, &e);

	if (!json_is_object(spec)) {
		fprintf(stderr, "smpgw: %s: %s\n", o->spec, spec ? "not a JSON object" : e.text);
		json_decref(spec);
		return EXIT_USAGE;
	}
	/* The options given beside the file win. */
	json_object_update(spec, o->doc);
	json_decref(o->doc);
	o->doc = spec;
	return 0;
}

static int create(struct ro_opts *o)
{
	json_t *im, *ro;
	int code;

	if (o->spec && (code = load_spec(o)))
		return code;
	if (!o->image && !json_object_get(o->doc, "image"))
		return cli_usage_error("rollout create takes IMAGE (or --spec with an image)");
	if (o->image) {
		im = cli_resolve_image(o->image, &code);
		if (!im)
			return code;
		json_object_set(o->doc, "image", json_object_get(im, "id"));
		json_decref(im);
	}
	if (o->target)
		json_object_set(o->doc, "target", o->target);
	else if (!json_object_get(o->doc, "target"))
		json_object_set_new(o->doc, "target", json_string("outdated"));
	ro = rest_json("POST", "/api/v1/rollouts", o->doc, NULL, &code);
	if (ro && o->json)
		print_json(ro);
	else if (ro)
		summary_line(ro);
	if (ro && o->follow)
		code = follow(cli_str(ro, "id", ""));
	json_decref(ro);
	return code;
}

int cmd_rollout(int argc, char **argv)
{
	static const char *const verbs[] = { "pause", "resume", "cancel", "retry-failed" };
	struct ro_opts o = { .doc = json_object() };
	const char *verb = argc > 1 ? argv[1] : "";
	int code;

	if (argc < 2) {
		json_decref(o.doc);
		return cli_usage_error("rollout takes create, show, pause, resume, cancel or "
				       "retry-failed");
	}
	code = parse(argc - 1, argv + 1, &o, strcmp(verb, "create") == 0);
	if (code)
		goto out;
	if (strcmp(verb, "create") == 0) {
		code = create(&o);
		goto out;
	}
	if (strcmp(verb, "show") == 0) {
		code = show(&o);
		goto out;
	}
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
		if (strcmp(verb, verbs[i]) == 0) {
			code = o.id ? action(verb, &o) :
			       cli_usage_error("rollout %s takes the rollout's ID", verb);
			goto out;
		}
	code = cli_usage_error("unknown rollout command '%s'", verb);
out:
	json_decref(o.doc);
	json_decref(o.target);
	return code < 0 ? 0 : code;
}
