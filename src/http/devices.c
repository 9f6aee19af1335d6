/* SPDX-License-Identifier: MIT */
/*
 * /api/v1/devices: the registry as JSON (with filters), and the typed
 * device operations (echo, reset, image state/test/confirm, erase, params,
 * info, datetime, stats). Each typed operation validates its JSON body,
 * builds the SMP request data and shapes the response: byte strings come
 * back as plain hex strings (hashes) and image versions in the canonical
 * "1.2.3+4" form with the watch's text as "version_text" (devmodel.h),
 * unlike the passthrough which keeps the lossless {"$bytes": ...} form.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec/smp.h"
#include "gateway/cluster.h"
#include "gateway/config.h"
#include "gateway/devmodel.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "http/devfilter.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

/* ---- registry ---- */

struct list_ctx {
	struct gw *gw;
	struct devices_filter f;
	json_t *out;
};

/* A device managed here; with several gateways, "held_by" is this one. */
static json_t *local_json(struct gw *gw, struct gw_device *dev)
{
	json_t *j = gw_device_to_json(dev);
	const char *me = gw_cluster_id(gw_cluster(gw));

	if (j && me)
		json_object_set_new(j, "held_by", json_string(me));
	return j;
}

static void list_one(struct gw_device *dev, void *user_data)
{
	struct list_ctx *c = user_data;
	json_t *j = local_json(c->gw, dev);

	if (j && devices_filter_match(&c->f, j))
		json_array_append(c->out, j);
	json_decref(j);
}

/* Most query parameters looked at; more is a client bug anyway. */
#define MAX_QUERY 16

int devices_list(struct http_req *req)
{
	const char *keys[MAX_QUERY], *values[MAX_QUERY];
	size_t n = http_req_query_all(req, keys, values, MAX_QUERY);
	struct list_ctx c;
	char err[256];

	if (n > MAX_QUERY)
		return http_reply_problem(req, -EDOM, "too many query parameters "
					  "(%zu, at most %d)", n, MAX_QUERY), 0;
	if (devices_filter_parse(keys, values, n, &c.f, err, sizeof(err)) < 0)
		return http_reply_problem(req, -EDOM, "%s", err), 0;
	c.out = json_array();
	c.gw = http_req_gw(req);
	gw_device_foreach(c.gw, list_one, &c);
	/* Several gateways: the rest of the fleet, as their holders see it. */
	http_fleet_remote(req, &c.f, c.out);
	http_reply_json(req, 200, json_pack("{s:o, s:I}", "devices", c.out,
					    "count", (json_int_t)json_array_size(c.out)));
	return 0;
}

/* Several gateways (docs/multi-gateway.md): a watch this gateway does not
 * manage but another holds is answered 421 with "held_by" (503 while the
 * store cannot say). True when it replied. */
bool http_reply_held_elsewhere(struct http_req *req, const char *id)
{
	struct gw *gw = http_req_gw(req);
	const char *me = gw_config(gw)->gateway.id;
	char *holder = NULL, *detail;
	int r = me ? http_fleet_holder(req, id, &holder) : -ENOENT;

	if (r == -ENOTCONN || r == -ETIMEDOUT) {
		http_reply_problem(req, -EHOSTDOWN, "'%s' is not managed here and the store "
				   "that says which gateway holds it is unreachable", id);
		return true;
	}
	if (r < 0)
		return false;
	if (!strcmp(holder, me)) {
		free(holder);
		return false;
	}
	detail = xasprintf("the watch is held by gateway '%s' (ask it; "
			   "docs/multi-gateway.md)", holder);
	http_reply_problem_ext(req, -EREMOTE, json_pack("{s:s}", "held_by", holder), detail);
	free(detail);
	free(holder);
	return true;
}

int devices_get(struct http_req *req)
{
	const char *id = http_req_param(req, "id");
	struct gw_device *dev = gw_device_find(http_req_gw(req), id);
	json_t *j = dev ? local_json(http_req_gw(req), dev) : NULL;

	/* Not managed here and not forwarded (forward.c): the store's view. */
	if (!j)
		j = http_fleet_view(req, id);
	if (!j) {
		if (!http_reply_held_elsewhere(req, id))
			http_reply_problem(req, -ENODEV, "no device '%s' (GET /api/v1/devices "
					   "lists them)", id);
		return 0;
	}
	http_reply_json(req, 200, j);
	return 0;
}

/* ---- shaping ---- */

/* {"$bytes": hex} -> "hex", recursively, in place. */
static json_t *unbytes(json_t *j)
{
	const char *k;
	json_t *v;
	size_t i;

	if (json_is_object(j)) {
		json_t *b = json_object_get(j, "$bytes");

		if (b && json_object_size(j) == 1)
			return json_incref(b);
		json_object_foreach(j, k, v)
			json_object_set_new(j, k, unbytes(v));
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			json_array_set_new(j, i, unbytes(v));
	}
	return json_incref(j);
}

static json_t *plain_shape(struct http_req *req, json_t *data, int *err)
{
	return unbytes(data);
}

static json_t *image_state_shape(struct http_req *req, json_t *data, int *err)
{
	json_t *out = unbytes(data);
	json_t *images = json_object_get(out, "images");
	struct gw_device *dev = gw_device_find(http_req_gw(req),
					       http_req_param(req, "id"));

	if (!json_is_array(images)) {
		json_decref(out);
		*err = -EPROTO;
		return NULL;
	}
	if (dev)
		gw_device_set_slots(dev, images); /* keeps a typed copy */
	/* The typed model: canonical version beside the watch's text. */
	json_object_set_new(out, "images", gw_slots_typed(images));
	return out;
}

static json_t *params_shape(struct http_req *req, json_t *data, int *err)
{
	json_t *bs = json_object_get(data, "buf_size");
	json_t *bc = json_object_get(data, "buf_count");
	struct gw_device *dev = gw_device_find(http_req_gw(req),
					       http_req_param(req, "id"));

	if (!json_is_integer(bs) || !json_is_integer(bc) ||
	    json_integer_value(bs) <= 0 || json_integer_value(bc) <= 0) {
		*err = -EPROTO;
		return NULL;
	}
	if (dev)
		gw_device_set_params(dev, (uint32_t)json_integer_value(bs),
				     (uint32_t)json_integer_value(bc));
	return json_incref(data);
}

/* ---- body helpers ---- */

/* Gets an optional member of the body with a type check; replies 400 and
 * returns false when it has the wrong type. */
static bool body_get(struct http_req *req, const char *key, json_type type,
		     const char *what, json_t **ret)
{
	json_t *v = json_object_get(http_req_json(req), key);

	if (v && json_typeof(v) != type &&
	    !(type == JSON_TRUE && json_is_boolean(v))) {
		http_reply_problem(req, -EINVAL, "\"%s\" must be %s", key, what);
		return false;
	}
	*ret = v;
	return true;
}

/* A 32-byte hash as 64 hex digits -> {"$bytes": hex}; NULL after 400. */
static json_t *hash_arg(struct http_req *req, json_t *v)
{
	const char *h = json_string_value(v);
	uint8_t tmp[32];

	if (!h || strlen(h) != 64 || hex_decode(h, tmp, sizeof(tmp)) != 32) {
		http_reply_problem(req, -EINVAL, "\"hash\" must be the image's "
				   "SHA-256 as 64 hex digits (see image-state)");
		return NULL;
	}
	char lower[65];

	hex_encode(tmp, 32, lower);
	return json_pack("{s:s}", "$bytes", lower);
}

/* ---- typed operations ---- */

/* An os write whose request is one required string member, key; example
 * is its value in the problem that says it is missing. */
static int os_write_string(struct http_req *req, uint8_t id, const char *key,
			   const char *example)
{
	json_t *v;

	if (!body_get(req, key, JSON_STRING, "a string", &v))
		return 0;
	if (!v)
		return http_reply_problem(req, -EINVAL, "send {\"%s\": \"%s\"}",
					  key, example), 0;
	return http_smp_request(req, SMP_OP_WRITE, SMP_GROUP_OS, id,
				json_pack("{s:O}", key, v), plain_shape);
}

int dev_echo(struct http_req *req)
{
	return os_write_string(req, SMP_OS_ECHO, "d", "text to echo");
}

int dev_reset(struct http_req *req)
{
	json_t *force, *data = json_object();

	if (!body_get(req, "force", JSON_TRUE, "a boolean", &force)) {
		json_decref(data);
		return 0;
	}
	if (json_is_true(force))
		json_object_set_new(data, "force", json_integer(1));
	return http_smp_request(req, SMP_OP_WRITE, SMP_GROUP_OS, SMP_OS_RESET,
				data, plain_shape);
}

int dev_image_state(struct http_req *req)
{
	return http_smp_request(req, SMP_OP_READ, SMP_GROUP_IMG, SMP_IMG_STATE,
				NULL, image_state_shape);
}

static int image_state_write(struct http_req *req, bool confirm)
{
	json_t *h, *data = json_object(), *b;

	if (!body_get(req, "hash", JSON_STRING, "a string of 64 hex digits", &h))
		goto done;
	if (!h && !confirm) {
		http_reply_problem(req, -EINVAL, "send {\"hash\": \"<64 hex "
				   "digits>\"}: the image to test");
		goto done;
	}
	if (h) {
		b = hash_arg(req, h);
		if (!b)
			goto done;
		json_object_set_new(data, "hash", b);
	}
	json_object_set_new(data, "confirm", json_boolean(confirm));
	return http_smp_request(req, SMP_OP_WRITE, SMP_GROUP_IMG, SMP_IMG_STATE,
				data, image_state_shape);
done:
	json_decref(data);
	return 0;
}

int dev_image_test(struct http_req *req)
{
	return image_state_write(req, false);
}

int dev_image_confirm(struct http_req *req)
{
	return image_state_write(req, true);
}

int dev_erase(struct http_req *req)
{
	json_t *slot, *data = json_object();

	if (!body_get(req, "slot", JSON_INTEGER, "an integer", &slot)) {
		json_decref(data);
		return 0;
	}
	if (slot)
		json_object_set(data, "slot", slot);
	return http_smp_request(req, SMP_OP_WRITE, SMP_GROUP_IMG, SMP_IMG_ERASE,
				data, plain_shape);
}

int dev_params(struct http_req *req)
{
	return http_smp_request(req, SMP_OP_READ, SMP_GROUP_OS, SMP_OS_PARAMS,
				NULL, params_shape);
}

int dev_info(struct http_req *req)
{
	const char *fmt = http_req_query(req, "format");
	json_t *data = json_object();

	if (fmt) {
		if (!*fmt || strspn(fmt, "abcdefghijklmnopqrstuvwxyz*") != strlen(fmt)) {
			json_decref(data);
			return http_reply_problem(req, -EDOM, "format must be letters "
						  "as in 'uname' (e.g. a, svrm)"), 0;
		}
		json_object_set_new(data, "format", json_string(fmt));
	}
	return http_smp_request(req, SMP_OP_READ, SMP_GROUP_OS, SMP_OS_INFO,
				data, plain_shape);
}

int dev_datetime_get(struct http_req *req)
{
	return http_smp_request(req, SMP_OP_READ, SMP_GROUP_OS, SMP_OS_DATETIME,
				NULL, plain_shape);
}

int dev_datetime_set(struct http_req *req)
{
	return os_write_string(req, SMP_OS_DATETIME, "datetime", "2026-01-31T12:00:00");
}

int dev_stats_list(struct http_req *req)
{
	return http_smp_request(req, SMP_OP_READ, SMP_GROUP_STAT, SMP_STAT_LIST,
				NULL, plain_shape);
}

int dev_stats_get(struct http_req *req)
{
	return http_smp_request(req, SMP_OP_READ, SMP_GROUP_STAT, SMP_STAT_READ,
				json_pack("{s:s}", "name", http_req_param(req, "name")),
				plain_shape);
}
