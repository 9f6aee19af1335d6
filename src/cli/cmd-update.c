/* SPDX-License-Identifier: MIT */
/*
 * smpgw update DEVICE IMAGE [--mode M] [--follow]: queues an update job
 * (uploading IMAGE first when it is a local file) and, with --follow,
 * shows it until it ends: a progress bar on a terminal, plain lines
 * otherwise, then the final state ("confirmed 1.2.3+4 on PineTime-3").
 * Following polls GET /jobs/{id}: the job's own record, so nothing is
 * missed between queueing it and watching it.
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

#define POLL_MS 250

struct update_opts {
	const char *device, *image, *mode;
	bool follow;
};

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L };

	nanosleep(&ts, NULL);
}

static bool job_finished(const char *state)
{
	return strcmp(state, "queued") != 0 && strcmp(state, "running") != 0;
}

/* The last line: what the watch now runs, or why not. */
static int final_state(json_t *job, const char *dev, const char *version)
{
	const char *state = cli_str(job, "state", "?"), *mode = cli_str(job, "mode", "");
	const char *err = cli_str(job, "error", NULL);

	if (strcmp(state, "done") != 0) {
		printf("%s%s%s (job %lld on %s)\n", strcmp(state, "rolled_back") == 0 ?
		       "rolled back" : state, err ? ": " : "", err ? err : "",
		       (long long)json_integer_value(json_object_get(job, "id")), dev);
		return EXIT_FAILED;
	}
	if (strcmp(mode, "test") == 0)
		printf("testing %s on %s (booted, not confirmed: MCUboot reverts it at the "
		       "next reset)\n", version, dev);
	else if (strcmp(mode, "upload") == 0)
		printf("uploaded %s to %s (secondary slot, not marked for test)\n", version, dev);
	else
		printf("confirmed %s on %s%s\n", version, dev,
		       json_is_true(json_object_get(job, "up_to_date")) ?
		       " (it already ran it: nothing sent)" : "");
	return 0;
}

/* dev: the device as the user named it (the job names it by its id, a
 * BLE address for watches found by discovery). */
static void show_progress(struct progress *p, json_t *job, const char *dev)
{
	json_t *pr = json_object_get(job, "progress");
	const char *phase = cli_str(job, "phase", "?");
	double total = (double)json_integer_value(json_object_get(pr, "total"));
	double done = (double)json_integer_value(json_object_get(pr, "bytes"));
	double rate = json_number_value(json_object_get(pr, "rate"));
	char *label = xasprintf("%s %-7s", dev, phase);

	/* The rate and ETA belong to the upload; other phases show where the
	 * bar stopped. */
	progress_update(p, label, done, total, strcmp(phase, "upload") == 0 ? rate : 0, true);
	free(label);
}

static int follow_job(long long id, const char *dev, const char *version)
{
	struct progress *p = progress_new(stdout, isatty(STDOUT_FILENO));
	char *path = xasprintf("/api/v1/jobs/%lld", id);
	json_t *job;
	int code = 0;

	for (;;) {
		job = cli_poll(path, p, &code);
		if (!job)
			break;
		if (job_finished(cli_str(job, "state", "queued"))) {
			show_progress(p, job, dev);
			progress_done(p);
			code = final_state(job, dev, version);
			json_decref(job);
			break;
		}
		show_progress(p, job, dev);
		json_decref(job);
		sleep_ms(POLL_MS);
	}
	progress_free(p);
	free(path);
	return code;
}

static int parse(int argc, char **argv, struct update_opts *o)
{
	static const struct option opts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "follow", no_argument, NULL, 'f' },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	int c;

	optind = 0;
	while ((c = cli_getopt(argc, argv, "m:f", opts, NULL)) != -1) {
		switch (c) {
		case CLI_OPT_HELP: return -1;
		case 'm': o->mode = optarg; break;
		case 'f': o->follow = true; break;
		default: return EXIT_USAGE;
		}
	}
	if (optind != argc - 2)
		return cli_usage_error("update takes DEVICE and IMAGE");
	o->device = argv[optind];
	o->image = argv[optind + 1];
	return cli_load_token();
}

int cmd_update(int argc, char **argv)
{
	struct update_opts o = { .mode = "test-confirm" };
	int code = parse(argc, argv, &o);
	json_t *im, *job = NULL, *body;
	char *dev, *path;
	char *version = NULL;
	long long id;

	if (code)
		return code < 0 ? 0 : code;
	im = cli_resolve_image(o.image, &code);
	if (!im)
		return code;
	version = xstrdup(cli_str(im, "version", "?"));
	body = json_pack("{s:s, s:s}", "image", cli_str(im, "id", ""), "mode", o.mode);
	dev = rest_escape(o.device);
	path = xasprintf("/api/v1/devices/%s/update", dev);
	job = rest_json("POST", path, body, NULL, &code);
	json_decref(body);
	free(path);
	free(dev);
	if (job) {
		id = (long long)json_integer_value(json_object_get(job, "id"));
		printf("job %lld: %s to %s (%s), %s\n", id, version, o.device, o.mode,
		       cli_str(job, "state", "queued"));
		fflush(stdout);
		if (o.follow)
			code = follow_job(id, o.device, version);
	}
	json_decref(job);
	json_decref(im);
	free(version);
	return code;
}
