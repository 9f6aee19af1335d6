/* SPDX-License-Identifier: MIT */
/*
 * What the smpgw tool's commands share: exit codes, the connection settings
 * (URL, token) and the helpers every REST command uses. Each command lives in
 * its own cmd-*.c file and is listed in smpgw.c's table.
 */
#pragma once

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>

#include "cli/format.h"

/* Exit status, documented in `smpgw --help`, docs/cli.md and smpgw(1). */
#define EXIT_FAILED 1      /* the operation ran and failed (job, bad image file) */
#define EXIT_USAGE 2       /* bad command line */
#define EXIT_UNVERIFIED 3  /* image info: signature not verified */
#define EXIT_UNREACHABLE 4 /* cannot reach smpgwd (refused, DNS, TLS, timeout) */
#define EXIT_REFUSED 5     /* smpgwd answered with an error (problem+json) */

/* Options every REST command takes (also accepted before the command). */
#define CLI_COMMON_OPTS \
	{ "url", required_argument, NULL, 'U' }, \
	{ "token-file", required_argument, NULL, 'T' }, \
	{ "cacert", required_argument, NULL, 'C' }, \
	{ "help", no_argument, NULL, 'h' }

struct cli {
	const char *url;   /* without the trailing slash */
	char *token;       /* NULL: none */
	const char *token_file;
	const char *cacert; /* PEM CA bundle for https (a self-signed daemon) */
};

extern struct cli cli;
extern const char cli_usage_text[];

/* getopt_long for a command whose options include CLI_COMMON_OPTS: those
 * are handled here. The next option of the command's own, -1 at the end,
 * or CLI_OPT_HELP when --help was printed (exit 0). The first call of a
 * command sets optind = 0 before (glibc then re-reads the ordering: the
 * options before the command stop at the first word, the command's do
 * not). */
#define CLI_OPT_HELP 0x100
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *opts,
	       int *longindex);
/* Reads the token file named by --token-file (or the SMPGW_TOKEN
 * variable); 0 or an exit status. */
int cli_load_token(void);
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* o's string member key, or dflt. */
const char *cli_str(const json_t *o, const char *key, const char *dflt);
/* True when the file exists and is a regular file. */
bool cli_is_file(const char *path);
/* The image argument (stored id, id prefix, file name or version; or a
 * local file, uploaded first) to a stored image (new reference) or NULL
 * with the error printed and *code set. */
json_t *cli_resolve_image(const char *arg, int *code);

/* GET path while following something (--follow): when smpgwd cannot be
 * reached (restarted, upgraded) it says so once on p and tries again every
 * second for up to FOLLOW_RETRY_S; the answer, or NULL with the error
 * printed and *code set. */
#define FOLLOW_RETRY_S 120
struct progress;
json_t *cli_poll(const char *path, struct progress *p, int *code);

int cmd_image_info(int argc, char **argv);
int cmd_image_upload(int argc, char **argv);
int cmd_image_list(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_update(int argc, char **argv);
int cmd_rollout(int argc, char **argv);
int cmd_events(int argc, char **argv);
