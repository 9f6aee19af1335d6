/* SPDX-License-Identifier: MIT */
/*
 * /api/v1/images: upload (raw body, e.g. curl --data-binary @f or -T f, or
 * multipart/form-data, e.g. curl -F image=@f, or PUT to /images/<file name>
 * as curl -T f .../images/ does), list, describe, delete.
 * The server has already streamed the body to a temp file and hashed it;
 * the image store validates it (MCUboot structure, SHA-256 TLV, signature
 * policy) and keeps it under its SHA-256 TLV hash, the image id.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/events.h"
#include "gateway/gateway.h"
#include "gateway/images.h"
#include "gateway/log.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

static struct gw_images *store(struct http_req *req)
{
	return http_server_images(http_req_server(req));
}

/* name: the client's file name (multipart, ?filename= or the PUT path),
 * kept in the image's metadata; may be NULL. */
static int upload(struct http_req *req, const char *name)
{
	const char *path;
	char *msg = NULL;
	json_t *desc = NULL, *out;
	bool created = false;
	size_t size;
	int r;

	path = http_req_file(req, &size, NULL);
	if (!size)
		return http_reply_problem(req, -ENOEXEC, "the body is empty: send the "
					  "image file (curl --data-binary @app.signed.bin)"), 0;
	r = gw_images_add_file(store(req), path, name, &desc, &created, &msg);
	if (r < 0) {
		http_reply_problem(req, r, "%s", msg ? msg : "cannot store the image");
		free(msg);
		return 0;
	}
	http_req_take_file(req); /* moved into the store, or removed */
	if (created) {
		log_info("http: image %s (%s) stored",
			 json_string_value(json_object_get(desc, "id")),
			 json_string_value(json_object_get(desc, "version")));
		gw_events_emit(gw_events(http_req_gw(req)), "image.added",
			       json_deep_copy(desc));
	}
	out = json_deep_copy(desc);
	json_decref(desc);
	json_object_set_new(out, "created", json_boolean(created));
	http_reply_json(req, created ? 201 : 200, out);
	return 0;
}

int images_upload(struct http_req *req)
{
	const char *name = http_req_filename(req);

	return upload(req, name ? name : http_req_query(req, "filename"));
}

/* PUT /api/v1/images/{name}: what `curl -T app.bin .../api/v1/images/`
 * sends (curl appends the file's name to a URL ending in '/'). */
int images_put(struct http_req *req)
{
	const char *name = http_req_param(req, "id");

	if (!name || !*name || strchr(name, '/') || !strcmp(name, ".") ||
	    !strcmp(name, ".."))
		return http_reply_problem(req, -EINVAL, "bad file name in the path: "
					  "PUT /api/v1/images/<file name>"), 0;
	return upload(req, name);
}

int images_list(struct http_req *req)
{
	json_t *a = gw_images_list(store(req));

	http_reply_json(req, 200, json_pack("{s:o, s:I}", "images", a, "count",
					    (json_int_t)json_array_size(a)));
	return 0;
}

int images_get(struct http_req *req)
{
	const char *id = http_req_param(req, "id");
	json_t *d = gw_images_get(store(req), id);

	if (!d)
		return http_reply_problem(req, -ENOENT, "no image '%s' (ids are the "
					  "64-hex-digit SHA-256 from GET /api/v1/images)",
					  id), 0;
	http_reply_json(req, 200, d);
	return 0;
}

int images_delete(struct http_req *req)
{
	const char *id = http_req_param(req, "id");

	if (gw_images_delete(store(req), id) < 0)
		return http_reply_problem(req, -ENOENT, "no image '%s'", id), 0;
	gw_events_emit(gw_events(http_req_gw(req)), "image.deleted",
		       json_pack("{s:s}", "id", id));
	http_reply_json(req, 200, json_pack("{s:s, s:b}", "id", id, "deleted", 1));
	return 0;
}
