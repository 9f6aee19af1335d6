/* SPDX-License-Identifier: MIT */
/*
 * smpgw: the command-line tool. `image info` inspects an MCUboot image
 * offline; every other command talks to smpgwd's REST API (rest.c). The
 * options before the command (--url, --token-file) hold for it; commands
 * are dispatched from a const table, each in its own cmd-*.c file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/rest.h"
#include "util/util.h"

#ifndef SMPGW_VERSION
#define SMPGW_VERSION "unknown"
#endif

const char cli_usage_text[] =
	"Usage: smpgw [--url URL] [--token-file FILE] [--cacert FILE] COMMAND ...\n"
	"       smpgw --help | --version\n"
	"\n"
	"Commands:\n"
	"  devices [--json] [--state S] [--name GLOB] [--version V] [--battery-below N]\n"
	"          [KEY=VALUE ...]\n"
	"        The managed watches: name, link state, firmware, battery, RSSI, last\n"
	"        seen, in natural order. Filters are the REST API's query parameters.\n"
	"  image upload FILE [--json]\n"
	"        Store an MCUboot image in smpgwd (it checks it); prints its hash.\n"
	"  image list [--json]\n"
	"        The stored images.\n"
	"  image info FILE [--key PUB.pem ...] [--json]\n"
	"        Parse an MCUboot image offline: version, sizes, the SHA-256 TLV (the\n"
	"        hash img_mgmt reports), TLVs, key hash; with --key, verify the\n"
	"        signature against those public keys.\n"
	"  update DEVICE IMAGE [--mode test-confirm|test|upload|confirm] [--follow]\n"
	"        Put an image on a watch. IMAGE is a stored image (hash, hash prefix,\n"
	"        file name or version) or a local file, uploaded first. --follow\n"
	"        shows the job until it ends (a progress bar on a terminal).\n"
	"  rollout create IMAGE [--name N] [--target all|outdated] [--devices A,B]\n"
	"          [--match GLOB] [--from-version GLOB] [--outdated] [--mode M]\n"
	"          [--window now|HH:MM-HH:MM[@Area/City]] [--canary N] [--wave-size N]\n"
	"          [--success-percent P] [--max-failures N] [--max-failure-percent P]\n"
	"          [--max-concurrent N] [--spec FILE|-] [--json] [--follow]\n"
	"  rollout show [ID] [--json] [--follow]\n"
	"  rollout pause|resume|cancel|retry-failed ID [--json] [--follow]\n"
	"        Update a fleet in waves (docs/rollouts.md); show without ID lists\n"
	"        the rollouts, with ID prints its report.\n"
	"  events [--json] [--count N] [--timeout SECONDS] [--history N | --no-history]\n"
	"         [TYPE-PREFIX ...]\n"
	"        The recent events (20, or N), then the live stream joined where\n"
	"        they end, one line per event.\n"
	"\n"
	"Options (before or after the command):\n"
	"  --url URL          smpgwd's address (default: $SMPGW_URL, else\n"
	"                     http://127.0.0.1:8080)\n"
	"  --token-file FILE  file whose first line is the bearer token (default:\n"
	"                     the token in $SMPGW_TOKEN)\n"
	"  --cacert FILE      PEM certificate(s) to trust for an https URL (default:\n"
	"                     $SMPGW_CACERT, else the system's CAs)\n"
	"\n"
	"Exit status:\n"
	"  0  success\n"
	"  1  the operation failed: the job or rollout did not succeed, bad image\n"
	"     file, no such stored image\n"
	"  2  usage error (bad option, bad URL, unreadable token file)\n"
	"  3  image info: the signature was not verified\n"
	"  4  cannot reach smpgwd (not running, wrong URL, TLS, timeout)\n"
	"  5  smpgwd refused the request (unknown device, bad input, token...):\n"
	"     its problem report is printed\n";

static const struct command {
	const char *group, *name; /* name NULL: the group is the command */
	int (*run)(int argc, char **argv); /* argv[0] is the command's last word */
} commands[] = {
	{ "image", "info", cmd_image_info },
	{ "image", "upload", cmd_image_upload },
	{ "image", "list", cmd_image_list },
	{ "devices", NULL, cmd_devices },
	{ "update", NULL, cmd_update },
	{ "rollout", NULL, cmd_rollout },
	{ "events", NULL, cmd_events },
};

/* The options before the command; the index of the command word, or
 * -1 - exit status. */
static int global_opts(int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_COMMON_OPTS,
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	int c;

	optind = 0;
	while ((c = cli_getopt(argc, argv, "+h", opts, NULL)) != -1) {
		if (c == CLI_OPT_HELP)
			return -1;
		if (c == 'V') {
			printf("smpgw %s\n", SMPGW_VERSION);
			return -1;
		}
		return -1 - EXIT_USAGE;
	}
	if (optind >= argc) {
		fputs(cli_usage_text, stderr);
		return -1 - EXIT_USAGE;
	}
	return optind;
}

static int dispatch(int argc, char **argv)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		const struct command *c = &commands[i];

		if (strcmp(argv[0], c->group) != 0)
			continue;
		if (!c->name)
			return c->run(argc, argv);
		if (argc >= 2 && strcmp(argv[1], c->name) == 0)
			return c->run(argc - 1, argv + 1);
	}
	return cli_usage_error("unknown command '%s%s%s'", argv[0], argc >= 2 ? " " : "",
			       argc >= 2 ? argv[1] : "");
}

int main(int argc, char **argv)
{
	const char *env = getenv("SMPGW_URL");
	int first, code;

	if (env && *env)
		cli.url = env;
	first = global_opts(argc, argv);
	if (first < 0)
		return -1 - first;
	rest_init();
	code = dispatch(argc - first, argv + first);
	rest_cleanup();
	free(cli.token);
	return code;
}
