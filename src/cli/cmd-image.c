/* SPDX-License-Identifier: MIT */
/*
 * smpgw image upload | list: stores an MCUboot image in the daemon (it
 * checks it: header, TLVs, hash, signature policy) and lists the stored
 * ones. `image info` (offline) is cmd-image-info.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/rest.h"
#include "util/util.h"

/* The getopt loop of these small commands: only --json and the common
 * options. 0, or -1 (help printed), or an exit status. */
static int parse_json_opt(int argc, char **argv, bool *json)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	int c;

	optind = 0;
	while ((c = cli_getopt(argc, argv, "j", opts, NULL)) != -1) {
		if (c == CLI_OPT_HELP)
			return -1;
		if (c != 'j')
			return EXIT_USAGE;
		*json = true;
	}
	return cli_load_token();
}

static void print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
}

int cmd_image_upload(int argc, char **argv)
{
	bool json = false;
	int code = parse_json_opt(argc, argv, &json);
	json_t *im;
	char size[32];

	if (code)
		return code < 0 ? 0 : code;
	if (optind != argc - 1)
		return cli_usage_error("image upload takes one FILE");
	if (!cli_is_file(argv[optind])) {
		fprintf(stderr, "smpgw: %s: no such file\n", argv[optind]);
		return EXIT_FAILED;
	}
	im = cli_resolve_image(argv[optind], &code);
	if (!im)
		return code;
	if (json) {
		print_json(im);
	} else {
		cli_size((double)json_integer_value(json_object_get(im, "size")), size, sizeof(size));
		printf("%s %s %s (%s, %s)\n",
		       json_is_false(json_object_get(im, "created")) ? "already stored" : "stored",
		       cli_str(im, "version", "?"), cli_str(im, "id", "?"),
		       cli_str(im, "filename", argv[optind]), size);
	}
	json_decref(im);
	return 0;
}

static int by_upload_time(const void *a, const void *b)
{
	json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "uploaded_ms"));
	json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "uploaded_ms"));

	return x < y ? 1 : x > y ? -1 : 0;
}

static void print_images(json_t *images)
{
	size_t n = json_array_size(images);
	json_t **v = xnew_array(json_t *, n + 1);
	char size[32], when[32];

	for (size_t i = 0; i < n; i++)
		v[i] = json_array_get(images, i);
	qsort(v, n, sizeof(*v), by_upload_time);
	printf("%-16s %-14s %10s  %-10s %s\n", "HASH", "VERSION", "SIZE", "UPLOADED", "FILE");
	for (size_t i = 0; i < n; i++) {
		cli_size((double)json_integer_value(json_object_get(v[i], "size")), size,
			 sizeof(size));
		cli_age((long long)json_integer_value(json_object_get(v[i], "uploaded_ms")), when,
			sizeof(when));
		printf("%-16.16s %-14s %10s  %-10s %s\n", cli_str(v[i], "id", "?"),
		       cli_str(v[i], "version", "?"), size, when, cli_str(v[i], "filename", "-"));
	}
	free(v);
}

int cmd_image_list(int argc, char **argv)
{
	bool json = false;
	int code = parse_json_opt(argc, argv, &json);
	json_t *list;

	if (code)
		return code < 0 ? 0 : code;
	if (optind != argc)
		return cli_usage_error("image list takes no argument");
	list = rest_json("GET", "/api/v1/images", NULL, NULL, &code);
	if (list && json)
		print_json(list);
	else if (list)
		print_images(json_object_get(list, "images"));
	json_decref(list);
	return code;
}
