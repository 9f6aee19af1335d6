/* SPDX-License-Identifier: MIT */
/*
 * The one table that turns a negative errno into an HTTP status and an
 * RFC 7807 problem document (application/problem+json). Every error the
 * REST API returns goes through here, so a given errno always means the
 * same status and the same problem "type" wherever it comes from.
 */
#pragma once

#include <jansson.h>

#define HTTP_PROBLEM_CTYPE "application/problem+json"
#define HTTP_PROBLEM_TYPE_BASE "urn:smpgw:problem:"

struct http_error {
	int err;            /* positive errno */
	unsigned status;    /* HTTP status */
	const char *slug;   /* problem type suffix: HTTP_PROBLEM_TYPE_BASE + slug */
	const char *title;  /* short, the same for every occurrence */
};

/* Entry for err (negative or positive); the 500 "internal" entry for any
 * errno the table does not know. Never NULL. */
const struct http_error *http_error_lookup(int err);

/* The whole table, for docs and tests. */
const struct http_error *http_errors(size_t *n);

/*
 * New problem object {"type","title","status","detail","instance"}.
 * detail (may be NULL: the title is used) says what was wrong in words a
 * user can act on; instance (may be NULL) is the request path.
 */
json_t *http_problem_new(int err, const char *instance, const char *detail);
