/* SPDX-License-Identifier: MIT */
/*
 * The dashboard: GET / and GET /static/{file}, served from the files
 * embedded at build time (src/http/static/). Only names in that table are
 * served, so there is no path to traverse.
 */
#include <errno.h>
#include <string.h>

#include "http/embedded.h"
#include "http/handlers.h"
#include "http/http.h"

const struct http_embedded *http_embedded_find(const char *name)
{
	for (size_t i = 0; i < http_embedded_count; i++)
		if (!strcmp(http_embedded_files[i].name, name))
			return &http_embedded_files[i];
	return NULL;
}

static int serve(struct http_req *req, const char *name, const char *cache)
{
	const struct http_embedded *f = http_embedded_find(name);

	if (!f || !strcmp(name, "openapi.json"))
		return http_reply_problem(req, -ENOENT, "no dashboard file '%s'",
					  name), 0;
	http_reply_static(req, 200, f->ctype, f->data, f->len, cache);
	return 0;
}

int static_index(struct http_req *req)
{
	return serve(req, "index.html", "no-cache");
}

int static_file(struct http_req *req)
{
	return serve(req, http_req_param(req, "file"), "no-cache");
}
