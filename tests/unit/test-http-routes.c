/* SPDX-License-Identifier: MIT */
/* Route matching and the errno -> HTTP status/problem table. */
#include <errno.h>
#include <string.h>

#include "http/errors.h"
#include "http/handlers.h"
#include "http/http.h"
#include "tap.h"

static void check_match(const char *path, unsigned method, int want,
			http_handler h, const char *p1, const char *v1)
{
	struct http_match m = { 0 };
	unsigned allow = 0;
	int r = http_route_match(path, method, &m, &allow);

	is_int(r, want, path);
	if (r == 0) {
		ok(m.route->handler == h, "%s: handler", path);
		if (p1) {
			ok(m.nparams >= 1 && !strncmp(m.names[0], p1, strlen(p1)),
			   "%s: param name %s", path, p1);
			is_str(m.nparams ? m.values[0] : NULL, v1, "param value");
		}
	}
	http_match_clear(&m);
}

static void test_routes(void)
{
	struct http_match m = { 0 };
	unsigned allow = 0;

	check_match("/api/v1/devices", HTTP_GET, 0, devices_list, NULL, NULL);
	check_match("/api/v1/devices/AA:BB:CC:DD:EE:FF", HTTP_GET, 0, devices_get,
		    "id", "AA:BB:CC:DD:EE:FF");
	check_match("/api/v1/devices/w1/echo", HTTP_POST, 0, dev_echo, "id", "w1");
	check_match("/api/v1/devices/w1/image-state/test", HTTP_POST, 0,
		    dev_image_test, "id", "w1");
	check_match("/api/v1/devices/w1/datetime", HTTP_GET, 0, dev_datetime_get,
		    NULL, NULL);
	check_match("/api/v1/devices/w1/datetime", HTTP_POST, 0, dev_datetime_set,
		    NULL, NULL);
	check_match("/api/v1/images", HTTP_PUT, 0, images_upload, NULL, NULL);
	check_match("/metrics", HTTP_GET, 0, metrics_get, NULL, NULL);
	check_match("/", HTTP_GET, 0, static_index, NULL, NULL);
	check_match("/static/app.js", HTTP_GET, 0, static_file, "file", "app.js");
	check_match("/api/v1/devices/", HTTP_GET, -ENOENT, NULL, NULL, NULL);
	check_match("/api/v1/devices//echo", HTTP_POST, -ENOENT, NULL, NULL, NULL);
	check_match("/api/v1/devices/w1/echo/more", HTTP_POST, -ENOENT, NULL, NULL, NULL);
	check_match("/api/v1/device", HTTP_GET, -ENOENT, NULL, NULL, NULL);
	check_match("", HTTP_GET, -ENOENT, NULL, NULL, NULL);
	check_match("api/v1/devices", HTTP_GET, -ENOENT, NULL, NULL, NULL);
	check_match("/static/a/b", HTTP_GET, -ENOENT, NULL, NULL, NULL);

	is_int(http_route_match("/api/v1/devices/w1/echo", HTTP_GET, &m, &allow),
	       -EOPNOTSUPP, "wrong method");
	is_int(allow, HTTP_POST, "allowed methods reported");
	is_int(http_route_match("/api/v1/images/abc", HTTP_POST, &m, &allow),
	       -EOPNOTSUPP, "POST on an image");
	is_int(allow, HTTP_GET | HTTP_PUT | HTTP_DELETE, "GET, PUT and DELETE allowed");
	/* curl -T app.bin .../images/ sends PUT /api/v1/images/app.bin. */
	check_match("/api/v1/images/app.bin", HTTP_PUT, 0, images_put, "id", "app.bin");

	struct http_match s = { 0 };
	is_int(http_route_match("/api/v1/devices/w1/stats/smp_svr", HTTP_GET, &s,
				NULL), 0, "two params");
	is_int(s.nparams, 2, "nparams");
	is_str(s.values[1], "smp_svr", "second value");
	http_match_clear(&s);

	/* Every route: a path starting with '/', a handler, known methods, and
	 * no two rows for the same path+method. */
	for (size_t i = 0; i < http_routes_len; i++) {
		const struct route *r = &http_routes[i];

		ok(r->path[0] == '/' && r->handler && r->methods &&
		   !(r->methods & ~(unsigned)(HTTP_GET | HTTP_POST | HTTP_PUT | HTTP_DELETE)) &&
		   r->summary, "route %s well-formed", r->path);
		for (size_t j = i + 1; j < http_routes_len; j++)
			ok(strcmp(r->path, http_routes[j].path) ||
			   !(r->methods & http_routes[j].methods),
			   "%s: no duplicate method", r->path);
	}
}

static void test_errors(void)
{
	size_t n;
	const struct http_error *t = http_errors(&n);
	json_t *p;

	is_int(http_error_lookup(-ENOENT)->status, 404, "ENOENT 404");
	is_int(http_error_lookup(ENOENT)->status, 404, "positive errno too");
	is_int(http_error_lookup(-ENODEV)->status, 404, "unknown device 404");
	is_int(http_error_lookup(-EACCES)->status, 401, "EACCES 401");
	is_int(http_error_lookup(-EINVAL)->status, 400, "EINVAL 400");
	is_int(http_error_lookup(-EBADMSG)->status, 400, "EBADMSG 400");
	is_int(http_error_lookup(-EFBIG)->status, 413, "EFBIG 413");
	is_int(http_error_lookup(-EOPNOTSUPP)->status, 405, "EOPNOTSUPP 405");
	is_int(http_error_lookup(-ENOEXEC)->status, 422, "bad image 422");
	is_int(http_error_lookup(-EREMOTEIO)->status, 422, "SMP error 422");
	is_int(http_error_lookup(-ETIMEDOUT)->status, 504, "timeout 504");
	is_int(http_error_lookup(-ENOTCONN)->status, 503, "unreachable 503");
	is_int(http_error_lookup(-ECONNRESET)->status, 502, "link lost 502");
	is_int(http_error_lookup(-ENOSPC)->status, 507, "no space 507");
	is_int(http_error_lookup(-12345)->status, 500, "unknown errno 500");
	is_str(http_error_lookup(-12345)->slug, "internal", "unknown slug");

	for (size_t i = 0; i < n; i++) {
		ok(t[i].status >= 400 && t[i].status < 600 && t[i].slug[0] &&
		   t[i].title[0], "entry %zu sane", i);
		for (size_t j = i + 1; j < n; j++) {
			ok(t[i].err != t[j].err, "errno %d listed once", t[i].err);
			ok(strcmp(t[i].slug, t[j].slug), "slug %s unique", t[i].slug);
		}
	}

	p = http_problem_new(-ENODEV, "/api/v1/devices/x", "no device 'x'");
	is_str(json_string_value(json_object_get(p, "type")),
	       "urn:smpgw:problem:unknown-device", "type");
	is_str(json_string_value(json_object_get(p, "title")), "Unknown device", "title");
	is_int(json_integer_value(json_object_get(p, "status")), 404, "status");
	is_str(json_string_value(json_object_get(p, "detail")), "no device 'x'", "detail");
	is_str(json_string_value(json_object_get(p, "instance")), "/api/v1/devices/x",
	       "instance");
	json_decref(p);
	p = http_problem_new(-EINVAL, "/bad\xff", "bad \xfe utf-8");
	is_str(json_string_value(json_object_get(p, "detail")), "Invalid request",
	       "invalid UTF-8 detail falls back to the title");
	ok(!json_object_get(p, "instance"), "invalid UTF-8 instance left out");
	json_decref(p);
}

int main(void)
{
	test_routes();
	test_errors();
	return tap_done();
}
