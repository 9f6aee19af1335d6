/* SPDX-License-Identifier: MIT */
/*
 * smpgw events [--json] [--count N] [--timeout S] [--history N |
 * --no-history] [TYPE...]: the daemon's recent events (GET
 * /api/v1/events/recent), then its server-sent event stream joined where
 * that history ended (?last_event_id=), one line per event: the local
 * time, the type and the event's members as key=value (or each event's
 * JSON with --json). TYPE arguments keep the events whose type starts with
 * one of them. When the stream breaks (smpgwd restarted) it connects again
 * for up to FOLLOW_RETRY_S, from the last event seen: the daemon replays
 * what was missed, or says "stream.reset" when it no longer holds it.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/rest.h"
#include "util/util.h"

#define HISTORY_DEFAULT 20
#define HISTORY_MAX 1000 /* the daemon's limit for /events/recent */
/* libcurl's time limit may end the stream a little before our clock says
 * --timeout is over: that is the limit, not a broken stream to report. */
#define TIMEOUT_SLACK_S 0.05

struct events {
	char **types;
	int ntypes;
	bool json;
	long count;   /* stop after this many live events; 0: never */
	long printed;
	long history; /* recent events printed first; 0: none */
	uint64_t shown; /* the newest event id printed from the history */
	long seen;      /* stream events received, printed or not */
	uint64_t last;  /* the id the stream continues after (0: its start) */
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
	/* 6 significant digits: rate=19532.8, not 19532.763532763533. */
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
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
	/* Several gateways: where it happened (docs/multi-gateway.md). */
	if (json_is_string(json_object_get(e, "gateway")))
		print_value("gateway", json_object_get(e, "gateway"));
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
	char *end;

	ev->seen++;
	if (id && *id && strtoull(id, &end, 10) > 0 && !*end)
		ev->last = strtoull(id, NULL, 10);

	/* With several type prefixes the history comes from one request per
	 * prefix: the stream starts at the oldest answer, so skip what the
	 * history already printed. */
	if (e && (uint64_t)json_integer_value(json_object_get(e, "id")) <= ev->shown &&
	    json_integer_value(json_object_get(e, "id")) > 0) {
		json_decref(e);
		return 0;
	}
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

static int by_id(const void *a, const void *b)
{
	json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "id"));
	json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "id"));

	return (x > y) - (x < y);
}

/* The recent events matching one prefix (or all, prefix NULL) into out;
 * *last the smallest last_id answered. 0 or an exit status. */
static int fetch_recent(const struct events *ev, const char *prefix, json_t *out,
			uint64_t *last)
{
	char *esc = prefix ? rest_escape(prefix) : NULL;
	char *path = xasprintf("/api/v1/events/recent?limit=%ld%s%s", ev->history,
			       esc ? "&type=" : "", esc ? esc : "");
	int code = 0;
	json_t *ans = rest_json("GET", path, NULL, NULL, &code);
	uint64_t id;

	free(path);
	free(esc);
	if (!ans)
		return code;
	json_array_extend(out, json_object_get(ans, "events"));
	id = (uint64_t)json_integer_value(json_object_get(ans, "last_id"));
	if (*last == UINT64_MAX || id < *last)
		*last = id;
	json_decref(ans);
	return 0;
}

/* Prints the newest ev->history events (of every prefix, oldest first,
 * each once); *last: the id the stream continues after. */
static int print_history(struct events *ev, uint64_t *last)
{
	json_t *all = json_array();
	size_t n, first;
	int r = 0;

	*last = UINT64_MAX;
	for (int i = 0; i < (ev->ntypes ? ev->ntypes : 1) && !r; i++)
		r = fetch_recent(ev, ev->ntypes ? ev->types[i] : NULL, all, last);
	n = json_array_size(all);
	if (!r && n) {
		json_t **v = xnew_array(json_t *, n);

		for (size_t i = 0; i < n; i++)
			v[i] = json_array_get(all, i);
		qsort(v, n, sizeof(*v), by_id);
		first = n > (size_t)ev->history ? n - (size_t)ev->history : 0;
		for (size_t i = first; i < n; i++) {
			uint64_t id = (uint64_t)json_integer_value(json_object_get(v[i], "id"));

			if (id <= ev->shown)
				continue; /* the same event under two prefixes */
			if (ev->json) {
				char *s = json_dumps(v[i], JSON_COMPACT);

				puts(s ? s : "{}");
				free(s);
			} else {
				print_event(v[i]);
			}
			ev->shown = id;
		}
		fflush(stdout);
		free(v);
	}
	json_decref(all);
	return r;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The stream from ev->last until --count or --timeout; when it breaks,
 * connected again (quietly) for up to FOLLOW_RETRY_S. */
static int stream(struct events *ev, double timeout_s)
{
	struct timespec second = { .tv_sec = 1 };
	double start = now_s(), lost = 0;
	int r;

	for (int attempt = 0;; attempt++) {
		char *path = ev->last ? xasprintf("/api/v1/events?last_event_id=%" PRIu64, ev->last) :
			     xstrdup("/api/v1/events");
		double left = timeout_s ? timeout_s - (now_s() - start) : 0;
		long seen = ev->seen;
		bool was_up;

		if (timeout_s && left <= 0) {
			free(path);
			return 0;
		}
		rest_set_quiet(attempt > 0);
		r = rest_stream(path, (long)ceil(left * 1000), on_event, ev);
		rest_set_quiet(false);
		free(path);
		was_up = !r || ev->seen > seen; /* connected, then the stream ended */
		if ((r && r != EXIT_UNREACHABLE) || (ev->count && ev->printed >= ev->count) ||
		    (timeout_s && now_s() - start >= timeout_s - TIMEOUT_SLACK_S) ||
		    (r && !was_up && !attempt))
			return r;
		if (was_up)
			lost = 0;
		if (lost && now_s() - lost > FOLLOW_RETRY_S) {
			fprintf(stderr, "smpgw: %s\n", rest_last_error());
			return r;
		}
		if (!lost) {
			lost = now_s();
			fprintf(stderr, "smpgw: the event stream of %s ended; connecting again "
				"for up to %d s\n", cli.url, FOLLOW_RETRY_S);
		}
		nanosleep(&second, NULL);
	}
}

static int events_run(struct events *ev, double timeout_s)
{
	int r;

	/* last 0: nothing happened yet, the stream from its start */
	if (ev->history && (r = print_history(ev, &ev->last)))
		return r;
	return stream(ev, timeout_s);
}

int cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "count", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "history", required_argument, NULL, 'H' },
		{ "no-history", no_argument, NULL, 'N' },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	struct events ev = { .history = HISTORY_DEFAULT };
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
		case 'H':
			ev.history = strtol(optarg, &end, 10);
			if (*end || !*optarg || ev.history < 0 || ev.history > HISTORY_MAX)
				return cli_usage_error("events: --history takes a number from 0 to %d",
						       HISTORY_MAX);
			break;
		case 'N': ev.history = 0; break;
		default: return EXIT_USAGE;
		}
	}
	ev.types = argv + optind;
	ev.ntypes = argc - optind;
	if ((r = cli_load_token()))
		return r;
	return events_run(&ev, timeout_s);
}
