/* SPDX-License-Identifier: MIT */
/*
 * SMP over HTTP: the generic passthrough POST /devices/{id}/smp and the
 * request helper every typed device operation uses. Request data is JSON
 * translated to CBOR by codec/json-cbor (byte strings as {"$bytes": hex});
 * the response CBOR comes back as JSON the same way. An SMP error in the
 * response (v1 {"rc"} or v2 {"err"}) is a 422 problem that names the rc,
 * so a client never mistakes a refusal for success.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/cbor-util.h"
#include "codec/json-cbor.h"
#include "codec/smp.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

struct smp_call {
	struct http_req *req;
	struct gw_device *dev;
	int64_t id;
	http_smp_shape shape;
	struct smp_hdr hdr;
};

static void call_abort(struct http_req *req, void *data)
{
	struct smp_call *call = data;

	gw_device_cancel(call->dev, call->id);
	free(call);
}

static json_t *smp_error_json(const struct smp_err *e, uint16_t group)
{
	json_t *j = json_pack("{s:I, s:s, s:I, s:b}", "rc", (json_int_t)e->rc,
			      "rc_name", smp_rc_str(e->rc), "group",
			      (json_int_t)(e->v2 ? e->group : group), "v2", e->v2);

	if (e->has_rsn)
		json_object_set_new(j, "rsn", json_string(e->rsn));
	return j;
}

/* Replies for one response frame. */
static void reply_frame(struct smp_call *call, const uint8_t *frame, size_t len)
{
	struct http_req *req = call->req;
	const char *dev_id = gw_device_id(call->dev);
	struct smp_hdr hdr;
	struct smp_err e;
	cbor_item_t *item = NULL;
	json_t *data = NULL, *out;
	int err = 0;

	if (smp_frame_check(frame, len, &hdr) < 0 ||
	    hdr.op != smp_rsp_op(call->hdr.op) || hdr.group != call->hdr.group ||
	    hdr.id != call->hdr.id ||
	    smp_cbor_decode(frame + SMP_HDR_LEN, hdr.len, &item) < 0 ||
	    smp_err_extract(frame + SMP_HDR_LEN, hdr.len, &e) < 0 ||
	    smp_cbor_to_json(item, &data) < 0) {
		if (item)
			cbor_decref(&item);
		http_reply_problem(req, -EPROTO, "device %s sent a response that "
				   "is not a valid SMP frame for this request", dev_id);
		return;
	}
	cbor_decref(&item);
	if (e.present) {
		json_t *ext = json_pack("{s:o, s:O}", "smp",
					smp_error_json(&e, hdr.group), "data", data);
		char *d = xasprintf("device %s answered group %u command %u with "
				    "rc %lld (%s)%s%s", dev_id, hdr.group, hdr.id,
				    (long long)e.rc, smp_rc_str(e.rc),
				    e.has_rsn ? ": " : "", e.has_rsn ? e.rsn : "");

		http_reply_problem_ext(req, -EREMOTEIO, ext, d);
		free(d);
		json_decref(data);
		return;
	}
	out = call->shape ? call->shape(req, data, &err) : json_incref(data);
	json_decref(data);
	if (!out)
		http_reply_problem(req, err ? err : -EPROTO, "device %s sent an "
				   "unexpected response", dev_id);
	else
		http_reply_json(req, 200, out);
}

static void on_rsp(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct smp_call *call = user_data;
	const char *id = gw_device_id(call->dev);

	/* The request latency metric is the registry's (the link's round
	 * trip, whoever asked); the HTTP side has its own. */

	switch (err) {
	case 0:
		reply_frame(call, frame, len);
		break;
	case -ETIMEDOUT:
		http_reply_problem(call->req, err, "device %s did not answer in time", id);
		break;
	case -ENOTCONN:
		http_reply_problem(call->req, err, "could not connect to device %s "
				   "(out of range or switched off?)", id);
		break;
	case -ECONNRESET:
		http_reply_problem(call->req, err, "the link to device %s was lost "
				   "while the request was in flight", id);
		break;
	case -EMSGSIZE:
		http_reply_problem(call->req, err, "the request is larger than "
				   "device %s's SMP buffer", id);
		break;
	case -EKEYEXPIRED:
		http_reply_problem(call->req, err, "watch %s refused to pair: open "
				   "its pairing window; the gateway retries with backoff", id);
		break;
	case -ENOLINK:
		http_reply_problem(call->req, err, "watch %s needs a bond and the "
				   "configuration does not allow pairing with it "
				   "([ble] pairing, pair_allow)", id);
		break;
	case -EKEYREVOKED:
		http_reply_problem(call->req, err, "watch %s lost its bond and the "
				   "gateway may not pair again ([ble] rebond, pairing); "
				   "remove the bond (bluetoothctl remove) to retry", id);
		break;
	default:
		http_reply_problem(call->req, err, "request to device %s failed: %s",
				   id, strerror(-err));
		break;
	}
	free(call);
}

/* The route's {id} device, or NULL after replying 404. */
static struct gw_device *find_device(struct http_req *req)
{
	const char *id = http_req_param(req, "id");
	struct gw_device *dev = id ? gw_device_find(http_req_gw(req), id) : NULL;

	if (!dev && !(id && http_reply_held_elsewhere(req, id)))
		http_reply_problem(req, -ENODEV, "no device '%s' (GET /api/v1/devices "
				   "lists them)", id ? id : "");
	return dev;
}

static uint32_t op_timeout(struct http_req *req, uint16_t group, uint8_t id)
{
	const struct gw_config *cfg = gw_config(http_req_gw(req));

	/* Erasing a slot (and an upload's first chunk) can take seconds. */
	if (group == SMP_GROUP_IMG && (id == SMP_IMG_ERASE || id == SMP_IMG_UPLOAD))
		return cfg->request.first_chunk_timeout_ms;
	return 0;
}

int http_smp_request(struct http_req *req, uint8_t op, uint16_t group,
		     uint8_t id, json_t *data, http_smp_shape shape)
{
	struct gw_device *dev = find_device(req);
	struct gw_req_opts opts = { 0 };
	struct smp_call *call;
	cbor_item_t *body = NULL;
	uint8_t *frame = NULL;
	size_t len = 0;
	int64_t rid;
	int r;

	if (!dev) {
		json_decref(data);
		return 0;
	}
	if (!data)
		data = json_object();
	r = smp_json_to_cbor(data, &body);
	json_decref(data);
	if (r < 0) {
		http_reply_problem(req, -EINVAL, "\"data\" cannot be encoded as CBOR: "
				   "a \"$\" form is malformed or it nests too deep");
		return 0;
	}
	if (!cbor_isa_map(body)) {
		cbor_decref(&body);
		http_reply_problem(req, -EINVAL, "\"data\" must be a JSON object "
				   "(SMP payloads are CBOR maps)");
		return 0;
	}
	call = xnew(struct smp_call);
	call->hdr = (struct smp_hdr){ .op = op, .ver = SMP_VER_2, .group = group,
				      .id = id };
	r = smp_frame_build(&call->hdr, body, &frame, &len);
	cbor_decref(&body);
	if (r < 0) {
		free(call);
		http_reply_problem(req, -EFBIG, "the encoded request exceeds the "
				   "65535-byte SMP payload limit");
		return 0;
	}
	call->req = req;
	call->dev = dev;
	call->shape = shape;
	opts.timeout_ms = op_timeout(req, group, id);
	rid = gw_device_request(dev, frame, len, &opts, on_rsp, call);
	free(frame);
	if (rid < 0) {
		free(call);
		if (rid == -EBUSY)
			rid = -EAGAIN; /* queue full: retry later, not a conflict */
		http_reply_problem(req, (int)rid, "device %s cannot take the request "
				   "now: %s", gw_device_id(dev), strerror((int)-rid));
		return 0;
	}
	call->id = rid;
	http_req_on_abort(req, call_abort, call);
	return HTTP_PENDING;
}

/* "read"/"write" or 0/2. */
static int parse_op(json_t *v, uint8_t *ret)
{
	if (json_is_string(v)) {
		if (!strcmp(json_string_value(v), "read"))
			*ret = SMP_OP_READ;
		else if (!strcmp(json_string_value(v), "write"))
			*ret = SMP_OP_WRITE;
		else
			return -EINVAL;
		return 0;
	}
	if (json_is_integer(v) && (json_integer_value(v) == SMP_OP_READ ||
				   json_integer_value(v) == SMP_OP_WRITE)) {
		*ret = (uint8_t)json_integer_value(v);
		return 0;
	}
	return -EINVAL;
}

static json_t *passthrough_shape(struct http_req *req, json_t *data, int *err)
{
	json_t *body = http_req_json(req);

	return json_pack("{s:O, s:O, s:O}", "group", json_object_get(body, "group"),
			 "id", json_object_get(body, "id"), "data", data);
}

int dev_smp(struct http_req *req)
{
	json_t *body = http_req_json(req), *g, *i, *d;
	uint8_t op;

	if (!body)
		return http_reply_problem(req, -EINVAL, "send {\"group\": n, \"id\": n, "
					  "\"op\": \"read\"|\"write\", \"data\": {...}}"), 0;
	g = json_object_get(body, "group");
	i = json_object_get(body, "id");
	d = json_object_get(body, "data");
	if (!json_is_integer(g) || json_integer_value(g) < 0 ||
	    json_integer_value(g) > 0xffff)
		return http_reply_problem(req, -EINVAL, "\"group\" must be an integer "
					  "0..65535"), 0;
	if (!json_is_integer(i) || json_integer_value(i) < 0 ||
	    json_integer_value(i) > 0xff)
		return http_reply_problem(req, -EINVAL, "\"id\" must be an integer "
					  "0..255"), 0;
	if (parse_op(json_object_get(body, "op"), &op) < 0)
		return http_reply_problem(req, -EINVAL, "\"op\" must be \"read\" or "
					  "\"write\""), 0;
	if (d && !json_is_object(d))
		return http_reply_problem(req, -EINVAL, "\"data\" must be an object "
					  "(SMP payloads are CBOR maps)"), 0;
	return http_smp_request(req, op, (uint16_t)json_integer_value(g),
				(uint8_t)json_integer_value(i), json_incref(d),
				passthrough_shape);
}
