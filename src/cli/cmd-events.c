/* SPDX-License-Identifier: MIT */
/*
 * smpgw events [--json] [--count N] [--timeout S] [TYPE...]: the daemon's
 * server-sent event stream, one line per event: the local time, the type
 * and the event's members as key=value (or each event's JSON with --json).
 * TYPE arguments keep the events whose type starts with one of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/rest.h"
#include "util/util.h"

struct events {
	char **types;
	int ntypes;
	bool json;
	long count;   /* stop after this many events; 0: never */
	long printed;
};

static bool wanted(const struct events *ev, const char *type)
{
	if (!ev->ntypes)
		return true;
	for (int i = 0; i < ev->ntypes; i++)
		if (strncmp(type, ev->types[i], strlen(ev->types[i])) == 0)
			return true;
	return false;
}

static void print_value(const char *key, json_t *v)
{
	char *s;

	if (json_is_null(v))
		return;
	if (json_is_string(v)) {
		printf(strpbrk(json_string_value(v), " \t\"") ? " %s=\"%s\"" : " %s=%s", key,
		       json_string_value(v));
		return;
	}
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	printf(" %s=%s", key, s ? s : "?");
	free(s);
}

static void print_event(json_t *e)
{
	long long ms = (long long)json_integer_value(json_object_get(e, "time_ms"));
	time_t secs = (time_t)(ms / 1000);
	json_t *data = json_object_get(e, "data"), *v;
	struct tm tm;
	char when[16];
	const char *k;

	localtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	printf("%s.%03lld %s", when, ms % 1000, cli_str(e, "type", "?"));
	if (json_is_object(data))
		json_object_foreach(data, k, v)
			print_value(k, v);
	else if (data)
		print_value("data", data);
	putchar('\n');
}

/* A complete event: printed if wanted. Nonzero when --count is reached. */
static int on_event(const char *type, const char *id, const char *data, void *ud)
{
	struct events *ev = ud;
	json_t *e = json_loads(data, 0, NULL);

	if (!e) {
		fprintf(stderr, "smpgw: an event that is not JSON: %s\n", data);
	} else if (wanted(ev, cli_str(e, "type", type))) {
		if (ev->json)
			puts(data);
		else
			print_event(e);
		fflush(stdout);
		ev->printed++;
	}
	json_decref(e);
	return ev->count && ev->printed >= ev->count;
}

int cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "count", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	struct events ev = { 0 };
	double timeout_s = 0;
	char *end;
	int c, r;

	optind = 0;
	while ((c = cli_getopt(argc, argv, "jn:t:", opts, NULL)) != -1) {
		switch (c) {
		case CLI_OPT_HELP: return 0;
		case 'j': ev.json = true; break;
		case 'n':
			ev.count = strtol(optarg, &end, 10);
			if (*end || ev.count <= 0)
				return cli_usage_error("events: --count takes a positive number");
			break;
		case 't':
			timeout_s = strtod(optarg, &end);
			if (*end || timeout_s <= 0)
				return cli_usage_error("events: --timeout takes seconds");
			break;
		default: return EXIT_USAGE;
		}
	}
	ev.types = argv + optind;
	ev.ntypes = argc - optind;
	if ((r = cli_load_token()))
		return r;
	return rest_stream("/api/v1/events", (long)(timeout_s * 1000), on_event, &ev);
}
