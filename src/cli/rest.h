/* SPDX-License-Identifier: MIT */
/*
 * The smpgw tool's REST client (libcurl, blocking): one call per request,
 * JSON in and out, the token added, and every failure turned into one
 * readable line on stderr plus an exit status (cli.h): EXIT_UNREACHABLE
 * when smpgwd cannot be reached, EXIT_REFUSED when it answered with an
 * error (its problem+json title and detail), EXIT_USAGE for a bad URL.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "cli/sse.h"

/* Once, before any call; rest_cleanup() at exit. */
void rest_init(void);
void rest_cleanup(void);

/* method path [body]: the decoded 2xx answer (a new reference; JSON null
 * for an empty body) or NULL with the error printed and *code set. body is
 * sent as application/json and not consumed. *status gets the HTTP status
 * when the daemon answered (status may be NULL). */
json_t *rest_json(const char *method, const char *path, const json_t *body, long *status,
		  int *code);
/* GET path: the 2xx body as text (caller frees) or NULL, *code set. */
char *rest_text(const char *path, int *code);
/* POST path with the file's bytes as the body (streamed, not held in
 * memory): the decoded answer or NULL, *code set. */
json_t *rest_upload(const char *path, const char *file, long *status, int *code);

/* GET path as a server-sent event stream (sse.h): event_cb gets each
 * event and returns nonzero to stop. timeout_ms 0: no limit (the stream
 * ending at the limit is not an error). Returns 0 (stopped by the callback,
 * the limit or the end of the stream) or an exit status with the error
 * printed. */
int rest_stream(const char *path, long timeout_ms, sse_event_fn event_cb, void *ud);

/* With quiet set, transport failures (EXIT_UNREACHABLE) are not printed:
 * the caller retries and speaks for itself. */
void rest_set_quiet(bool quiet);
/* The last transport failure, as it would have been printed. */
const char *rest_last_error(void);

/* A path segment or query value escaped for a URL (caller frees). */
char *rest_escape(const char *s);
