/* SPDX-License-Identifier: MIT */
/* json-cbor: the JSON form of CBOR against the conformance records, exact
 * encodings of every special form, round trips and refusals. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec/cbor-util.h"
#include "codec/json-cbor.h"
#include "tap.h"

#define JFLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

static char *dump(const json_t *j)
{
	return j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : strdup("(null)");
}

/* Every edge-case response converts to exactly the recorded rsp_body. */
static void test_edge_cases(void)
{
	json_t *root = json_load_file(CONFORMANCE_DIR "/zephyr-edge-cases.json", 0, NULL);
	json_t *e;
	size_t i;

	ok(root && json_array_size(root) == 35, "35 edge cases load");
	json_array_foreach(root, i, e) {
		const char *name = json_string_value(json_object_get(e, "name"));
		size_t len;
		uint8_t *buf = tap_unhex(json_string_value(json_object_get(e, "rsp")), &len);
		cbor_item_t *item = NULL;
		json_t *got = NULL;

		ok(len >= 8 && smp_cbor_decode(buf + 8, len - 8, &item) == 0,
		   "%s: decodes", name);
		ok(item && smp_cbor_to_json(item, &got) == 0, "%s: to json", name);
		if (!ok(json_equal(got, json_object_get(e, "rsp_body")),
			"%s: equals rsp_body", name)) {
			char *s = dump(got);

			tap_diag("got %s", s);
			free(s);
		}
		json_decref(got);
		if (item)
			cbor_decref(&item);
		free(buf);
	}
	json_decref(root);
}

/* Requests (definite, shortest encodings, as smpclient sends them) survive
 * CBOR -> JSON -> CBOR byte for byte: key order and integer widths kept. */
static void test_requests_bytes(void)
{
	json_t *root = json_load_file(CONFORMANCE_DIR "/zephyr-smp-vectors.json", 0, NULL);
	const char *transport, *name;
	json_t *t, *v;

	json_object_foreach(root, transport, t) {
		json_object_foreach(t, name, v) {
			size_t len, n = 0;
			uint8_t *buf = tap_unhex(json_string_value(
				json_object_get(v, "req")), &len), *enc = NULL;
			cbor_item_t *item = NULL, *back = NULL;
			json_t *j = NULL;

			smp_cbor_decode(buf + 8, len - 8, &item);
			ok(item && smp_cbor_to_json(item, &j) == 0 &&
			   smp_json_to_cbor(j, &back) == 0 &&
			   smp_cbor_encode(back, &enc, &n) == 0 && n == len - 8 &&
			   !memcmp(enc, buf + 8, n), "%s %s: request via JSON byte for byte",
			   transport, name);
			free(enc);
			json_decref(j);
			if (back)
				cbor_decref(&back);
			if (item)
				cbor_decref(&item);
			free(buf);
		}
	}
	json_decref(root);
}

/* Repeated keys in taskstat come out in the "$map" form, nothing lost. */
static void test_taskstat(void)
{
	json_t *root = json_load_file(CONFORMANCE_DIR "/zephyr-smp-vectors.json", 0, NULL);
	const char *hex = json_string_value(json_object_get(json_object_get(
		json_object_get(root, "udp"), "os taskstat"), "rsp"));
	size_t len;
	uint8_t *buf = tap_unhex(hex, &len);
	cbor_item_t *item = NULL;
	json_t *got = NULL, *pairs, *first;

	smp_cbor_decode(buf + 8, len - 8, &item);
	ok(smp_cbor_to_json(item, &got) == 0, "taskstat to json");
	pairs = json_object_get(json_object_get(got, "tasks"), "$map");
	ok(json_array_size(pairs) == 8, "tasks: $map with all 8 pairs");
	first = json_array_get(pairs, 1);
	ok(!strcmp(json_string_value(json_array_get(first, 0)), "0") &&
	   json_integer_value(json_object_get(json_array_get(first, 1), "tid")) == 1,
	   "second pair is \"0\" -> tid 1");
	json_decref(got);
	cbor_decref(&item);
	free(buf);
	json_decref(root);
}

/* JSON -> CBOR encoding only (forms libcbor 0.8 cannot decode back). */
static void check_encoding(const char *json, const char *hex)
{
	json_t *j = json_loads(json, JFLAGS, NULL);
	cbor_item_t *item = NULL;
	uint8_t *enc = NULL, *want;
	size_t len = 0, want_len;

	ok(j && smp_json_to_cbor(j, &item) == 0, "%s to cbor", json);
	if (item)
		smp_cbor_encode(item, &enc, &len);
	want = tap_unhex(hex, &want_len);
	ok(enc && len == want_len && !memcmp(enc, want, len), "%s encodes as %s", json, hex);
	free(want);
	free(enc);
	if (item)
		cbor_decref(&item);
	json_decref(j);
}

/* JSON text -> CBOR must encode to hex, decode and convert back equal. */
static void check_form(const char *json, const char *hex)
{
	json_t *j = json_loads(json, JFLAGS, NULL), *back = NULL;
	cbor_item_t *item = NULL, *dec = NULL;
	uint8_t *enc = NULL, *want;
	size_t len = 0, want_len;

	if (!ok(j != NULL, "parse %s", json))
		return;
	ok(smp_json_to_cbor(j, &item) == 0, "%s to cbor", json);
	if (item)
		smp_cbor_encode(item, &enc, &len);
	if (hex) {
		want = tap_unhex(hex, &want_len);
		ok(enc && len == want_len && !memcmp(enc, want, len), "%s encodes as %s",
		   json, hex);
		free(want);
	}
	ok(enc && smp_cbor_decode(enc, len, &dec) == 0, "%s decodes", json);
	ok(dec && smp_cbor_to_json(dec, &back) == 0, "%s back to json", json);
	if (!ok(json_equal(back, j), "%s round trips", json)) {
		char *s = dump(back);

		tap_diag("got %s", s);
		free(s);
	}
	json_decref(back);
	if (dec)
		cbor_decref(&dec);
	if (item)
		cbor_decref(&item);
	free(enc);
	json_decref(j);
}

static void test_forms(void)
{
	check_form("0", "00");
	check_form("-1", "20");
	check_form("24", "1818");
	check_form("-25", "3818");
	check_form("9007199254740993", "1b0020000000000001");
	check_form("9223372036854775807", "1b7fffffffffffffff");
	check_form("-9223372036854775808", "3b7fffffffffffffff");
	check_form("{\"$uint\": \"9223372036854775808\"}", "1b8000000000000000");
	check_form("{\"$uint\": \"18446744073709551615\"}", "1bffffffffffffffff");
	check_form("{\"$negint\": \"-9223372036854775809\"}", "3b8000000000000000");
	check_form("{\"$negint\": \"-10000000000000000000\"}", "3b8ac7230489e7ffff");
	check_form("{\"$negint\": \"-18446744073709551616\"}", "3bffffffffffffffff");
	check_form("{\"$bytes\": \"00ff10\"}", "4300ff10");
	check_form("{\"$bytes\": \"\"}", "40");
	check_form("\"h\\u00e9llo \\u2603\"", "6a68c3a96c6c6f20e29883");
	check_form("\"a\\u0000b\"", "63610062");
	check_form("1.5", "f93e00");
	check_form("-0.0", "f98000");
	check_form("65504.0", "f97bff");
	check_form("100000.0", "fa47c35000");
	check_form("0.1", "fb3fb999999999999a");
	check_form("1e300", "fb7e37e43c8800759c");
	check_form("{\"$float\": \"nan\"}", "f97e00");
	check_form("{\"$float\": \"inf\"}", "f97c00");
	check_form("{\"$float\": \"-inf\"}", "f9fc00");
	check_form("null", "f6");
	check_form("true", "f5");
	check_form("false", "f4");
	check_form("{\"$undefined\": true}", "f7");
	check_encoding("{\"$simple\": 16}", "f0");
	check_encoding("{\"$simple\": 255}", "f8ff");
	check_form("{\"$tag\": 1, \"value\": 1700000000}", "c11a6553f100");
	check_form("{\"$tag\": \"18446744073709551615\", \"value\": \"x\"}",
		   "dbffffffffffffffff6178");
	check_form("{\"a\": 1, \"b\": []}", "a2616101616280");
	check_form("{}", "a0");
	check_form("{\"$map\": [[1, \"a\"], [{\"$bytes\": \"01\"}, [1, 2]]]}",
		   "a20161614101820102");
	check_form("{\"$map\": [[\"a\", 1], [\"a\", 2]]}", "a2616101616102");
	check_form("{\"$map\": [[\"$x\", 1]]}", "a162247801");
	check_form("{\"images\": [{\"slot\": 1, \"hash\": {\"$bytes\": \"3df4\"},"
		   " \"nested\": {\"deep\": [[{\"x\": [-1.25, null]}]]}}]}", NULL);
}

/* CBOR (hex) -> JSON (text), for forms JSON input cannot produce. */
static void check_to_json(const char *hex, const char *json, int want_r)
{
	size_t len;
	uint8_t *buf = tap_unhex(hex, &len);
	cbor_item_t *item = NULL;
	json_t *got = (json_t *)1, *want = json ? json_loads(json, JFLAGS, NULL) : NULL;
	int r;

	ok(smp_cbor_decode(buf, len, &item) == 0, "decode %s", hex);
	r = item ? smp_cbor_to_json(item, &got) : -1;
	is_int(r, want_r, hex);
	if (r == 0) {
		ok(json_equal(got, want), "%s is %s", hex, json);
		json_decref(got);
	} else {
		ok(got == (json_t *)1, "%s: ret untouched", hex);
	}
	json_decref(want);
	if (item)
		cbor_decref(&item);
	free(buf);
}

/* libcbor 0.8 itself refuses invalid UTF-8 when decoding; items built by
 * hand can still hold it and must be refused, not passed on. */
static void check_bad_utf8(void)
{
	static const char *const enc[] = { "62c328", "a162c32801", "a10162c328",
					   "8162ff61", "7f61616180ff" };
	cbor_item_t *item = (cbor_item_t *)1, *m;
	json_t *j = (json_t *)1;

	for (size_t i = 0; i < sizeof(enc) / sizeof(enc[0]); i++) {
		size_t len;
		uint8_t *buf = tap_unhex(enc[i], &len);

		is_int(smp_cbor_decode(buf, len, &item), -EBADMSG, enc[i]);
		free(buf);
	}
	item = cbor_build_stringn("\xc3\x28", 2);
	is_int(smp_cbor_to_json(item, &j), -EBADMSG, "bad UTF-8 text");
	m = smp_cbor_map_new();
	smp_cbor_map_put_pair(m, item, smp_cbor_build_uint(1));
	is_int(smp_cbor_to_json(m, &j), -EBADMSG, "bad UTF-8 key");
	cbor_decref(&m);
	m = smp_cbor_array_new();
	smp_cbor_array_push(m, cbor_build_stringn("\xed\xa0\x80", 3));
	is_int(smp_cbor_to_json(m, &j), -EBADMSG, "surrogate in text");
	ok(j == (json_t *)1, "ret untouched");
	cbor_decref(&m);
	m = cbor_build_ctrl(16);
	ok(smp_cbor_to_json(m, &j) == 0 &&
	   json_integer_value(json_object_get(j, "$simple")) == 16, "hand-built simple 16");
	json_decref(j);
	cbor_decref(&m);
}

static void test_cbor_side(void)
{
	check_to_json("f93c00", "1.0", 0);
	check_to_json("fa3fc00000", "1.5", 0);
	check_to_json("fb3ff8000000000000", "1.5", 0);
	check_to_json("f90001", "5.960464477539063e-08", 0);
	check_to_json("fb7ff8000000000000", "{\"$float\": \"nan\"}", 0);
	check_to_json("fa7f800000", "{\"$float\": \"inf\"}", 0);
	check_to_json("5f41014102ff", "{\"$bytes\": \"0102\"}", 0);
	check_to_json("7f61616162ff", "\"ab\"", 0);
	check_to_json("9f01bf6161f6ffff", "[1, {\"a\": null}]", 0);
	check_to_json("a201020304", "{\"$map\": [[1, 2], [3, 4]]}", 0);
	check_to_json("a2616101616102", "{\"$map\": [[\"a\", 1], [\"a\", 2]]}", 0);
	check_to_json("a162247801", "{\"$map\": [[\"$x\", 1]]}", 0);
	check_to_json("bf7f6161ff01ff", "{\"a\": 1}", 0);
	check_to_json("c24101", "{\"$tag\": 2, \"value\": {\"$bytes\": \"01\"}}", 0);
	check_to_json("3b8ac7230489e7ffff", "{\"$negint\": \"-10000000000000000000\"}", 0);
	check_to_json("1a00010000", "65536", 0);
	check_bad_utf8();
}

static void check_bad_json(const char *json, int want_r)
{
	json_t *j = json_loads(json, JFLAGS, NULL);
	cbor_item_t *item = (cbor_item_t *)1;

	if (!ok(j != NULL, "parse %s", json))
		return;
	is_int(smp_json_to_cbor(j, &item), want_r, json);
	ok(item == (cbor_item_t *)1, "%s: ret untouched", json);
	json_decref(j);
}

static void test_refusals(void)
{
	static const char *const bad[] = {
		"{\"$bytes\": \"abc\"}", "{\"$bytes\": \"zz\"}", "{\"$bytes\": 1}",
		"{\"$bytes\": \"0\\u00001\"}", "{\"$base64\": \"A\"}", "{\"$base64\": 5}",
		"{\"$uint\": \"-1\"}", "{\"$uint\": -1}", "{\"$uint\": \"18446744073709551616\"}",
		"{\"$uint\": \"12a\"}", "{\"$uint\": \"\"}", "{\"$uint\": \"+1\"}",
		"{\"$negint\": \"5\"}", "{\"$negint\": \"-0\"}", "{\"$negint\": \"-\"}",
		"{\"$negint\": \"-18446744073709551617\"}", "{\"$negint\": \"--1\"}",
		"{\"$negint\": \"-1x\"}", "{\"$negint\": -5}",
		"{\"$float\": \"foo\"}", "{\"$float\": null}", "{\"$undefined\": false}",
		"{\"$simple\": 24}", "{\"$simple\": 256}", "{\"$simple\": -1}",
		"{\"$tag\": -1, \"value\": 1}", "{\"$tag\": 1}", "{\"$tag\": 1.5, \"value\": 1}",
		"{\"$tag\": 1, \"value\": 1, \"x\": 2}", "{\"$tag\": 11, \"value\": 1}", "{\"$map\": [[1]]}", "{\"$map\": {}}",
		"{\"$map\": [1]}", "{\"$foo\": 1}", "{\"$bytes\": \"00\", \"x\": 1}",
		"{\"a\": [{\"$bytes\": \"0\"}]}", "{\"$map\": [[1, {\"$nope\": 0}]]}",
		"{\"x\": 1, \"$bytes\": \"00\"}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_bad_json(bad[i], -EINVAL);
	ok(smp_json_to_cbor(NULL, &(cbor_item_t *){ NULL }) == -EINVAL, "NULL json");
}

static void test_depth(void)
{
	char text[200] = "";
	json_t *j;
	cbor_item_t *item = NULL, *inner;

	for (int d = 0; d < 32; d++)
		strcat(text, "[");
	strcat(text, "1");
	for (int d = 0; d < 32; d++)
		strcat(text, "]");
	j = json_loads(text, 0, NULL);
	ok(smp_json_to_cbor(j, &item) == 0, "json depth 32 converts");
	json_decref(j);
	if (item)
		cbor_decref(&item);

	memmove(text + 1, text, strlen(text) + 1);
	text[0] = '[';
	strcat(text, "]");
	j = json_loads(text, 0, NULL);
	check_bad_json(text, -E2BIG);
	json_decref(j);
	check_bad_json("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{\"$map\": [[1, [2]]]}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
		       -E2BIG);

	/* a hand-built CBOR item 33 deep */
	item = smp_cbor_build_uint(1);
	for (int d = 0; d < 33; d++) {
		inner = item;
		item = smp_cbor_array_new();
		smp_cbor_array_push(item, inner);
	}
	j = (json_t *)1;
	is_int(smp_cbor_to_json(item, &j), -E2BIG, "cbor depth 33 refused");
	ok(j == (json_t *)1, "ret untouched");
	cbor_decref(&item);
}

int main(void)
{
	test_edge_cases();
	test_taskstat();
	test_requests_bytes();
	test_forms();
	test_cbor_side();
	test_refusals();
	test_depth();
	return tap_done();
}
