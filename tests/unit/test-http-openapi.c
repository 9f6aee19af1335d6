/* SPDX-License-Identifier: MIT */
/* docs/openapi.json (as built into the daemon) and the route table describe
 * the same API: every route+method is in the document and vice versa. */
#include <ctype.h>
#include <string.h>

#include <jansson.h>

#include "http/embedded.h"
#include "http/http.h"
#include "tap.h"

static const unsigned methods[] = { HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_DELETE };

static void lower(const char *in, char *out)
{
	while (*in)
		*out++ = (char)tolower((unsigned char)*in++);
	*out = '\0';
}

static bool in_table(const char *path, const char *method)
{
	for (size_t i = 0; i < http_routes_len; i++) {
		if (strcmp(http_routes[i].path, path))
			continue;
		for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
			char lm[16];

			lower(http_method_str(methods[m]), lm);
			if ((http_routes[i].methods & methods[m]) && !strcmp(lm, method))
				return true;
		}
	}
	return false;
}

int main(void)
{
	const struct http_embedded *f = http_embedded_find("openapi.json");
	json_error_t jerr;
	json_t *doc, *paths, *item, *op;
	const char *path, *method;

	ok(f != NULL, "openapi.json is embedded");
	if (!f)
		return tap_done();
	doc = json_loadb((const char *)f->data, f->len, 0, &jerr);
	ok(doc != NULL, "openapi.json parses (%s)", doc ? "ok" : jerr.text);
	if (!doc)
		return tap_done();
	ok(!strncmp(json_string_value(json_object_get(doc, "openapi")) ?: "", "3.", 2),
	   "OpenAPI 3");
	paths = json_object_get(doc, "paths");

	for (size_t i = 0; i < http_routes_len; i++) {
		const struct route *r = &http_routes[i];

		for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
			char lm[16];

			if (!(r->methods & methods[m]))
				continue;
			lower(http_method_str(methods[m]), lm);
			op = json_object_get(json_object_get(paths, r->path), lm);
			ok(json_is_object(op), "route %s %s is documented",
			   http_method_str(methods[m]), r->path);
			ok(json_is_object(json_object_get(op, "responses")),
			   "%s %s has responses", lm, r->path);
		}
	}
	json_object_foreach(paths, path, item) {
		json_object_foreach(item, method, op) {
			if (!strcmp(method, "parameters") || !strcmp(method, "summary"))
				continue;
			ok(in_table(path, method), "documented %s %s is a route", method, path);
		}
	}
	json_decref(doc);
	return tap_done();
}
