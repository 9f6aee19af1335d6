/* SPDX-License-Identifier: MIT */
/* Files compiled into the daemon (dashboard, OpenAPI document): see embed.py. */
#pragma once

#include <stddef.h>

struct http_embedded {
	const char *name;   /* "index.html", "app.js", "openapi.json" */
	const char *ctype;
	const unsigned char *data;
	size_t len;
};

extern const struct http_embedded http_embedded_files[];
extern const size_t http_embedded_count;

/* Lookup by exact name, NULL when absent. */
const struct http_embedded *http_embedded_find(const char *name);
