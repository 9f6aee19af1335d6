/* SPDX-License-Identifier: MIT */
/* SMP header and error extraction, against frames from a real Zephyr server. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec/smp.h"
#include "tap.h"

static void test_header_roundtrip(void)
{
	static const uint8_t raw[] = { 0x0a, 0x00, 0x00, 0x11, 0x00, 0x00, 0x01, 0x00 };
	struct smp_hdr h;
	uint8_t out[8];

	is_int(smp_hdr_decode(raw, sizeof(raw), &h), 0, "decode echo header");
	is_int(h.op, SMP_OP_WRITE, "op write");
	is_int(h.ver, SMP_VER_2, "ver 2");
	is_int(h.len, 0x11, "len");
	is_int(h.group, SMP_GROUP_OS, "group");
	is_int(h.seq, 1, "seq");
	is_int(h.id, SMP_OS_ECHO, "id");
	smp_hdr_encode(&h, out);
	is_mem(out, raw, 8, "re-encode identical");
	is_int(smp_hdr_decode(raw, 7, &h), -EBADMSG, "short header rejected");

	struct smp_hdr all = { .op = 7, .ver = 3, .res = 5, .flags = 0xa5,
			       .len = 0xbeef, .group = 0xcafe, .seq = 0xff, .id = 0x42 };
	struct smp_hdr back;

	smp_hdr_encode(&all, out);
	smp_hdr_decode(out, 8, &back);
	ok(memcmp(&all, &back, sizeof(all)) == 0, "all fields survive");
}

static void test_vectors(void)
{
	json_error_t jerr;
	json_t *root = json_load_file(CONFORMANCE_DIR "/zephyr-smp-vectors.json", 0, &jerr);
	const char *transport;
	json_t *set;

	ok(root != NULL, "load vectors: %s", root ? "ok" : jerr.text);
	json_object_foreach(root, transport, set) {
		const char *name;
		json_t *v;

		json_object_foreach(set, name, v) {
			size_t qlen, rlen;
			uint8_t *q = tap_unhex(json_string_value(json_object_get(v, "req")), &qlen);
			uint8_t *r = tap_unhex(json_string_value(json_object_get(v, "rsp")), &rlen);
			struct smp_hdr qh, rh;
			uint8_t enc[8];

			ok(smp_frame_check(q, qlen, &qh) == (int)qlen,
			   "%s %s: request is one whole frame", transport, name);
			ok(smp_frame_check(r, rlen, &rh) == (int)rlen,
			   "%s %s: response is one whole frame", transport, name);
			is_int(rh.op, smp_rsp_op(qh.op), "response op matches request");
			is_int(rh.seq, qh.seq, "sequence echoed");
			is_int(rh.group, qh.group, "group echoed");
			smp_hdr_encode(&rh, enc);
			is_mem(enc, r, 8, "response header re-encodes byte for byte");
			ok(smp_frame_check(r, rlen - 1, NULL) == -EAGAIN, "truncated frame wants more");
			free(q);
			free(r);
		}
	}
	json_decref(root);
}

static void test_edge_case_errors(void)
{
	json_t *root = json_load_file(CONFORMANCE_DIR "/zephyr-edge-cases.json", 0, NULL);
	size_t i;
	json_t *v;

	ok(json_is_array(root), "load edge cases");
	json_array_foreach(root, i, v) {
		json_t *body = json_object_get(v, "rsp_body");
		const char *name = json_string_value(json_object_get(v, "name"));
		size_t rlen;
		uint8_t *r = tap_unhex(json_string_value(json_object_get(v, "rsp")), &rlen);
		struct smp_err err;
		json_t *rc = json_object_get(body, "rc");
		json_t *e = json_object_get(body, "err");
		int want_rc = 0;
		bool want_v2 = false;

		if (rc)
			want_rc = (int)json_integer_value(rc);
		if (e) {
			want_rc = (int)json_integer_value(json_object_get(e, "rc"));
			want_v2 = true;
		}
		is_int(smp_err_extract(r + 8, rlen - 8, &err), 0, name);
		is_int(err.present, want_rc != 0, "error presence");
		if (want_rc) {
			is_int(err.rc, want_rc, "rc value");
			is_int(err.v2, want_v2, "error form");
			if (want_v2)
				is_int(err.group,
				       json_integer_value(json_object_get(e, "group")),
				       "error group as the device says");
		}
		free(r);
	}
	json_decref(root);
}

static void test_error_rsp(void)
{
	struct smp_hdr v1 = { .op = SMP_OP_READ, .ver = SMP_VER_1, .group = 1, .seq = 9 };
	struct smp_hdr v2 = { .op = SMP_OP_WRITE, .ver = SMP_VER_2, .group = 300, .seq = 7 };
	uint8_t out[64];
	struct smp_err err;
	struct smp_hdr h;
	int n;

	n = smp_build_error_rsp(&v1, SMP_RC_EBUSY, out, sizeof(out));
	ok(n > 8 && smp_frame_check(out, (size_t)n, &h) == n, "v1 error is a frame");
	is_int(h.op, SMP_OP_READ_RSP, "v1 op");
	is_int(h.seq, 9, "v1 seq");
	smp_err_extract(out + 8, (size_t)n - 8, &err);
	ok(err.present && !err.v2 && err.rc == SMP_RC_EBUSY, "v1 {rc}");

	n = smp_build_error_rsp(&v2, SMP_RC_ETIMEOUT, out, sizeof(out));
	smp_frame_check(out, (size_t)n, &h);
	is_int(h.op, SMP_OP_WRITE_RSP, "v2 op");
	smp_err_extract(out + 8, (size_t)n - 8, &err);
	ok(err.present && err.v2 && err.rc == SMP_RC_ETIMEOUT && err.group == 300,
	   "v2 {err:{group,rc}}");
	is_int(smp_build_error_rsp(&v2, 1, out, 10), -ENOBUFS, "small buffer");
	is_int(smp_err_extract((const uint8_t *)"\x01", 1, &err), -EBADMSG,
	       "non-map payload rejected");
	is_int(smp_err_extract((const uint8_t *)"\xbf", 1, &err), -EBADMSG,
	       "truncated payload rejected");
}

int main(void)
{
	test_header_roundtrip();
	test_vectors();
	test_edge_case_errors();
	test_error_rsp();
	return tap_done();
}
