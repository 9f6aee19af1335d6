/* SPDX-License-Identifier: MIT */
/*
 * smpgw devices: the managed watches as a table (name, link state,
 * firmware, battery, RSSI, last seen) in natural order, or the daemon's
 * JSON. Filters are the REST API's query parameters, passed through:
 * the daemon checks them (an unknown one is its 400, shown as such).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/rest.h"
#include "util/util.h"

struct query {
	char *text; /* "?a=b&c=d" or "" */
};

static void query_add(struct query *q, const char *key, const char *value)
{
	char *k = rest_escape(key), *v = rest_escape(value);
	char *t = xasprintf("%s%c%s=%s", q->text ? q->text : "", q->text ? '&' : '?', k, v);

	free(q->text);
	q->text = t;
	free(k);
	free(v);
}

static int by_name(const void *a, const void *b)
{
	json_t *const *x = a, *const *y = b;
	int r = cli_natcmp(cli_str(*x, "name", ""), cli_str(*y, "name", ""));

	if (r)
		return r;
	return cli_natcmp(cli_str(*x, "id", ""), cli_str(*y, "id", ""));
}

/* The running firmware: what a connection read (the device model's
 * "firmware", or the active slot of older daemons), else what the watch
 * advertises. */
static const char *firmware(json_t *d)
{
	json_t *fw = json_object_get(d, "firmware"), *slot;
	const char *v = json_string_value(json_object_get(fw, "version"));
	size_t i;

	if (v)
		return v;
	json_array_foreach(json_object_get(d, "slots"), i, slot)
		if (json_is_true(json_object_get(slot, "active")) &&
		    json_string_value(json_object_get(slot, "version")))
			return json_string_value(json_object_get(slot, "version"));
	v = json_string_value(json_object_get(json_object_get(d, "advertised"), "version"));
	return v ? v : "-";
}

static void battery(json_t *d, char *buf, size_t size)
{
	json_t *adv = json_object_get(d, "advertised");
	json_t *b = json_object_get(d, "battery");

	if (!json_is_integer(b))
		b = json_object_get(adv, "battery");
	if (!json_is_integer(b)) {
		snprintf(buf, size, "-");
		return;
	}
	snprintf(buf, size, "%lld%%%s", (long long)json_integer_value(b),
		 json_is_true(json_object_get(adv, "charging")) ? " chg" : "");
}

/* Several gateways (docs/multi-gateway.md): a GATEWAY column, the holder. */
static void print_row(json_t *d, bool cluster)
{
	const char *name = json_string_value(json_object_get(d, "name"));
	json_t *rssi = json_object_get(d, "rssi");
	char bat[24], rs[16], seen[32];

	if (!name)
		name = json_string_value(json_object_get(d, "id"));
	battery(d, bat, sizeof(bat));
	if (json_is_integer(rssi))
		snprintf(rs, sizeof(rs), "%lld", (long long)json_integer_value(rssi));
	else
		snprintf(rs, sizeof(rs), "-");
	cli_age((long long)json_integer_value(json_object_get(d, "last_seen")), seen,
		sizeof(seen));
	printf("%-20s %-10s %-16s %-8s %5s  ", name ? name : "?",
	       cli_str(d, "link_state", "?"), firmware(d), bat, rs);
	if (cluster)
		printf("%-12s ", cli_str(d, "held_by", "-"));
	printf("%s\n", seen);
}

static void print_table(json_t *list)
{
	json_t *devs = json_object_get(list, "devices");
	size_t n = json_array_size(devs);
	json_t **v = xnew_array(json_t *, n + 1);
	bool cluster = false;

	for (size_t i = 0; i < n; i++) {
		v[i] = json_array_get(devs, i);
		cluster |= json_object_get(v[i], "held_by") != NULL;
	}
	qsort(v, n, sizeof(*v), by_name);
	printf("%-20s %-10s %-16s %-8s %5s  ", "NAME", "LINK", "FIRMWARE", "BATTERY", "RSSI");
	if (cluster)
		printf("%-12s ", "GATEWAY");
	printf("LAST SEEN\n");
	for (size_t i = 0; i < n; i++)
		print_row(v[i], cluster);
	free(v);
}

static int parse(int argc, char **argv, struct query *q, bool *json)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "state", required_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'n' },
		{ "version", required_argument, NULL, 'v' },
		{ "battery-below", required_argument, NULL, 'b' },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	int c;

	optind = 0;
	while ((c = cli_getopt(argc, argv, "j", opts, NULL)) != -1) {
		switch (c) {
		case CLI_OPT_HELP: return -1;
		case 'j': *json = true; break;
		case 's': query_add(q, "state", optarg); break;
		case 'n': query_add(q, "name", optarg); break;
		case 'v': query_add(q, "version", optarg); break;
		case 'b': query_add(q, "battery_below", optarg); break;
		default: return EXIT_USAGE;
		}
	}
	for (int i = optind; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		if (!eq || eq == argv[i])
			return cli_usage_error("devices: a filter is KEY=VALUE, not '%s'", argv[i]);
		*eq = '\0';
		query_add(q, argv[i], eq + 1);
		*eq = '=';
	}
	return 0;
}

int cmd_devices(int argc, char **argv)
{
	struct query q = { 0 };
	bool json = false;
	char *path;
	json_t *list;
	int code = parse(argc, argv, &q, &json);

	if (code)
		goto out;
	if ((code = cli_load_token()))
		goto out;
	path = xasprintf("/api/v1/devices%s", q.text ? q.text : "");
	list = rest_json("GET", path, NULL, NULL, &code);
	free(path);
	if (list && json) {
		json_dumpf(list, stdout, JSON_INDENT(2));
		putchar('\n');
	} else if (list) {
		print_table(list);
	}
	json_decref(list);
out:
	free(q.text);
	return code < 0 ? 0 : code;
}
