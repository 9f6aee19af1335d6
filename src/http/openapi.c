/* SPDX-License-Identifier: MIT */
/*
 * GET /api/v1/openapi.json: docs/openapi.json as built into the daemon.
 * The unit test test-http-openapi keeps it and the route table in step.
 */
#include <errno.h>

#include "http/embedded.h"
#include "http/handlers.h"
#include "http/http.h"

int openapi_get(struct http_req *req)
{
	const struct http_embedded *f = http_embedded_find("openapi.json");

	if (!f)
		return -ENOENT;
	http_reply_static(req, 200, "application/json", f->data, f->len, "no-cache");
	return 0;
}
