/* SPDX-License-Identifier: MIT */
/* errno -> HTTP status + RFC 7807 problem (see errors.h). */
#include "http/errors.h"

#include <errno.h>
#include <stdlib.h>

#include "util/util.h"

/*
 * Some errnos are borrowed for HTTP-only meanings so that one table covers
 * everything: EMEDIUMTYPE is "unsupported media type", ENOEXEC "not an
 * image we accept", EREMOTEIO "the device answered with an SMP error",
 * and for BLE pairing (gw_device_pairing_errno) EKEYEXPIRED "the watch
 * refused pairing", ENOLINK "pairing with it is not allowed", EKEYREVOKED
 * "the watch lost its bond"; for forwarding to another gateway
 * (forward.c) EHOSTUNREACH "the holder cannot be reached" and ETIME "the
 * holder did not answer in time".
 */
static const struct http_error table[] = {
	{ EINVAL, 400, "invalid-request", "Invalid request" },
	{ EBADMSG, 400, "malformed-body", "Malformed request body" },
	{ EDOM, 400, "invalid-parameter", "Invalid parameter" },
	{ EACCES, 401, "unauthorized", "Missing or invalid bearer token" },
	{ EPERM, 403, "forbidden", "Forbidden" },
	{ ENOENT, 404, "not-found", "Not found" },
	{ ENODEV, 404, "unknown-device", "Unknown device" },
	{ EREMOTE, 421, "held-elsewhere", "The watch is held by another gateway" },
	{ EOPNOTSUPP, 405, "method-not-allowed", "Method not allowed" },
	{ EEXIST, 409, "conflict", "Already exists" },
	{ EBUSY, 409, "busy", "Busy" },
	{ EFBIG, 413, "body-too-large", "Request body too large" },
	{ EMSGSIZE, 413, "frame-too-large", "SMP frame larger than the device accepts" },
	{ EMEDIUMTYPE, 415, "unsupported-media-type", "Unsupported media type" },
	{ ENOEXEC, 422, "invalid-image", "Not a valid MCUboot image" },
	{ EKEYREJECTED, 422, "bad-signature", "Image signature rejected" },
	{ ENOKEY, 422, "unknown-signing-key", "Image not signed by a configured key" },
	{ ENODATA, 422, "unsigned-image", "Image is not signed" },
	{ EREMOTEIO, 422, "smp-error", "The device refused the request" },
	{ ENOSYS, 501, "not-implemented", "Not implemented" },
	{ ECONNRESET, 502, "link-lost", "Link to the device lost" },
	{ EHOSTUNREACH, 502, "holder-unreachable", "The gateway holding the watch cannot be reached" },
	{ ETIME, 504, "holder-timeout", "The gateway holding the watch did not answer in time" },
	{ EHOSTDOWN, 503, "store-unavailable", "The store is unavailable (database server unreachable or not answering, or the database refuses the write)" },
	{ EPROTO, 502, "bad-device-response", "Malformed response from the device" },
	{ ENOLINK, 403, "pairing-not-allowed", "The watch needs a bond and pairing with it is not allowed" },
	{ EKEYEXPIRED, 503, "pairing-refused", "The watch refused pairing" },
	{ EKEYREVOKED, 503, "bond-lost", "The watch lost its bond with the gateway" },
	{ ENOTCONN, 503, "device-unreachable", "Device unreachable" },
	{ EAGAIN, 503, "overloaded", "Too many requests, try again" },
	{ ECANCELED, 503, "canceled", "Request canceled (device removed or shutting down)" },
	{ ETIMEDOUT, 504, "device-timeout", "The device did not answer in time" },
	{ ENOSPC, 507, "no-space", "Insufficient storage" },
	{ EIO, 500, "io-error", "I/O error" },
};

static const struct http_error internal = { 0, 500, "internal", "Internal error" };

const struct http_error *http_error_lookup(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < ARRAY_SIZE(table); i++)
		if (table[i].err == err)
			return &table[i];
	return &internal;
}

const struct http_error *http_errors(size_t *n)
{
	*n = ARRAY_SIZE(table);
	return table;
}

json_t *http_problem_new(int err, const char *instance, const char *detail)
{
	const struct http_error *e = http_error_lookup(err);
	char *type = xasprintf("%s%s", HTTP_PROBLEM_TYPE_BASE, e->slug);
	json_t *p = json_object();
	json_t *d = detail ? json_string(detail) : NULL; /* NULL if not UTF-8 */
	json_t *inst = instance ? json_string(instance) : NULL;

	json_object_set_new(p, "type", json_string(type));
	json_object_set_new(p, "title", json_string(e->title));
	json_object_set_new(p, "status", json_integer(e->status));
	json_object_set_new(p, "detail", d ? d : json_string(e->title));
	if (inst)
		json_object_set_new(p, "instance", inst);
	free(type);
	return p;
}
