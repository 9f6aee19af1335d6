/* SPDX-License-Identifier: MIT */
/*
 * Helpers the smpgw tool's commands share: the connection settings and
 * their options, the token, and finding a stored image from what a person
 * typed. (Text formats are format.c.)
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "cli/rest.h"
#include "util/util.h"

#define DEFAULT_URL "http://127.0.0.1:8080"

struct cli cli = { .url = DEFAULT_URL };

int cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("smpgw: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (smpgw --help)\n", stderr);
	return EXIT_USAGE;
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *opts,
	       int *longindex)
{
	int c;

	while ((c = getopt_long(argc, argv, shortopts, opts, longindex)) != -1) {
		switch (c) {
		case 'U':
			cli.url = optarg;
			break;
		case 'T':
			cli.token_file = optarg;
			break;
		case 'C':
			cli.cacert = optarg;
			break;
		case 'h':
			fputs(cli_usage_text, stdout);
			return CLI_OPT_HELP;
		default:
			return c;
		}
	}
	return -1;
}

static int check_url(void)
{
	static char *trimmed;
	size_t n = strlen(cli.url);

	if (strncmp(cli.url, "http://", 7) != 0 && strncmp(cli.url, "https://", 8) != 0) {
		fprintf(stderr, "smpgw: bad URL '%s': it starts with http:// or https://\n",
			cli.url);
		return EXIT_USAGE;
	}
	if (n && cli.url[n - 1] == '/') {
		free(trimmed);
		trimmed = xstrndup(cli.url, n - 1);
		cli.url = trimmed;
	}
	return 0;
}

int cli_load_token(void)
{
	const char *env = getenv("SMPGW_TOKEN");
	char line[512];
	FILE *f;

	if (check_url())
		return EXIT_USAGE;
	if (!cli.cacert && getenv("SMPGW_CACERT") && *getenv("SMPGW_CACERT"))
		cli.cacert = getenv("SMPGW_CACERT");
	if (!cli.token_file) {
		if (env && *env)
			cli.token = xstrdup(env);
		return 0;
	}
	f = fopen(cli.token_file, "r");
	if (!f) {
		fprintf(stderr, "smpgw: token file %s: %s\n", cli.token_file, strerror(errno));
		return EXIT_USAGE;
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	if (!line[0]) {
		fprintf(stderr, "smpgw: token file %s is empty\n", cli.token_file);
		return EXIT_USAGE;
	}
	free(cli.token);
	cli.token = xstrdup(line);
	return 0;
}

const char *cli_str(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : dflt;
}

bool cli_is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool image_matches(json_t *im, const char *arg, bool *exact)
{
	const char *id = json_string_value(json_object_get(im, "id"));
	const char *fn = json_string_value(json_object_get(im, "filename"));
	const char *ver = json_string_value(json_object_get(im, "version"));
	size_t n = strlen(arg);

	*exact = id && strcasecmp(id, arg) == 0;
	if (*exact)
		return true;
	if (id && n >= 6 && strncasecmp(id, arg, n) == 0)
		return true;
	return (fn && strcmp(fn, arg) == 0) || (ver && strcmp(ver, arg) == 0);
}

/* A stored image by id, id prefix (6+ hex digits), file name or version. */
static json_t *find_stored(const char *arg, int *code)
{
	json_t *list = rest_json("GET", "/api/v1/images", NULL, NULL, code), *im, *found = NULL;
	size_t i, matches = 0;
	bool exact;

	if (!list)
		return NULL;
	json_array_foreach(json_object_get(list, "images"), i, im) {
		if (!image_matches(im, arg, &exact))
			continue;
		if (exact) {
			found = im;
			matches = 1;
			break;
		}
		found = im;
		matches++;
	}
	if (matches == 1) {
		json_incref(found);
	} else {
		if (matches)
			fprintf(stderr, "smpgw: '%s' names %zu stored images: give the hash\n",
				arg, matches);
		else
			fprintf(stderr, "smpgw: no stored image and no file '%s' (smpgw image "
				"list shows the stored images)\n", arg);
		*code = EXIT_FAILED;
		found = NULL;
	}
	json_decref(list);
	return found;
}

json_t *cli_poll(const char *path, struct progress *p, int *code)
{
	struct timespec second = { .tv_sec = 1 };
	json_t *j;
	int tries = 0;

	rest_set_quiet(true);
	while (!(j = rest_json("GET", path, NULL, NULL, code)) && *code == EXIT_UNREACHABLE &&
	       tries < FOLLOW_RETRY_S) {
		if (!tries++)
			progress_line(p, "smpgw: %s; trying again for %d s", rest_last_error(),
				      FOLLOW_RETRY_S);
		nanosleep(&second, NULL);
	}
	rest_set_quiet(false);
	if (!j && *code == EXIT_UNREACHABLE)
		fprintf(stderr, "smpgw: %s\n", rest_last_error());
	else if (j && tries)
		progress_line(p, "smpgw: smpgwd answers again");
	return j;
}

json_t *cli_resolve_image(const char *arg, int *code)
{
	json_t *im;
	char *path, *name;
	const char *slash;

	*code = 0;
	if (!cli_is_file(arg))
		return find_stored(arg, code);
	slash = strrchr(arg, '/');
	name = rest_escape(slash ? slash + 1 : arg);
	path = xasprintf("/api/v1/images?filename=%s", name);
	im = rest_upload(path, arg, NULL, code);
	free(path);
	free(name);
	return im;
}
