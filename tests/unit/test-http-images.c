/* SPDX-License-Identifier: MIT */
/* The image store: validation, duplicates, signature policy, metadata in
 * the SQLite store across a restart, deletion. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#include "gateway/images.h"
#include "gateway/store.h"
#include "tap.h"
#include "util/util.h"

#define IMAGES CONFORMANCE_DIR "/images/"

static char dir[64];

/* Copies a conformance image (or a prefix of it) to dir/upload. */
static char *stage(const char *name, size_t cut, bool corrupt)
{
	size_t len;
	uint8_t *buf = tap_read_file(name, &len);
	char *path = xasprintf("%s/upload", dir);
	FILE *f = fopen(path, "w");

	if (corrupt)
		buf[600] ^= 0xff;
	fwrite(buf, 1, len - cut, f);
	fclose(f);
	free(buf);
	return path;
}

static int add(struct gw_images *im, const char *path, json_t **ret,
	       bool *created, char **msg)
{
	*ret = NULL;
	*msg = NULL;
	return gw_images_add_file(im, path, "app.bin", ret, created, msg);
}

static void test_basic(struct gw_store *store)
{
	int err = 0;
	char *msg = NULL, *path, *p;
	struct gw_images *im = gw_images_new(dir, store, NULL, &err, &msg);
	json_t *d;
	bool created;

	ok(im != NULL, "store opens");
	path = stage(IMAGES "app-1.2.3+4-ecdsa-p256.bin", 0, false);
	is_int(add(im, path, &d, &created, &msg), 0, "valid image added");
	ok(created, "created");
	is_str(json_string_value(json_object_get(d, "id")),
	       "b3d335f636f901591380c46c5ba8da01938862e162ff335a847acd6e1374cd3b",
	       "id is the SHA-256 TLV");
	is_str(json_string_value(json_object_get(d, "version")), "1.2.3+4", "version");
	is_str(json_string_value(json_object_get(d, "filename")), "app.bin", "filename");
	ok(access(path, F_OK) != 0, "upload moved into the store");
	json_decref(d);
	free(path);

	path = stage(IMAGES "app-1.2.3+4-ecdsa-p256.bin", 0, false);
	is_int(add(im, path, &d, &created, &msg), 0, "duplicate accepted");
	ok(!created, "duplicate detected");
	ok(access(path, F_OK) != 0, "duplicate upload removed");
	json_decref(d);
	free(path);

	path = stage(IMAGES "app-1.0.0-hash.bin", 100, false);
	is_int(add(im, path, &d, &created, &msg), -ENOEXEC, "truncated image refused");
	ok(msg && strstr(msg, "MCUboot"), "reason: %s", msg ? msg : "");
	ok(access(path, F_OK) == 0, "refused upload left for the caller");
	free(msg);
	free(path);

	path = stage(IMAGES "app-1.0.0-hash.bin", 0, true);
	is_int(add(im, path, &d, &created, &msg), -ENOEXEC, "corrupt payload refused");
	free(msg);
	free(path);

	is_int(gw_images_count(im), 1, "one image");
	p = gw_images_path(im, "b3d335f636f901591380c46c5ba8da01938862e162ff335a847acd6e1374cd3b");
	ok(p && access(p, R_OK) == 0, "path of a stored image");
	free(p);
	ok(gw_images_path(im, "nope") == NULL, "no path for an unknown id");
	gw_images_free(im);
}

static void test_reopen(struct gw_store *store)
{
	int err = 0;
	char *msg = NULL;
	struct gw_images *im = gw_images_new(dir, store, NULL, &err, &msg);
	const char *id = "b3d335f636f901591380c46c5ba8da01938862e162ff335a847acd6e1374cd3b";
	json_t *d = gw_images_get(im, id);

	ok(d != NULL, "image found after a restart");
	is_str(json_string_value(json_object_get(d, "filename")), "app.bin",
	       "metadata kept in the store");
	json_decref(d);
	struct gw_stmt *st = gw_store_prepare(store,
		"SELECT filename FROM images WHERE id = ?1");
	ok(st != NULL, "images table exists");
	gw_stmt_bind_text(st, 1, id);
	ok(st && gw_stmt_step(st) == 1 && gw_stmt_text(st, 0) &&
	   !strcmp(gw_stmt_text(st, 0), "app.bin"), "row in SQLite");
	gw_stmt_finalize(st);
	d = gw_images_list(im);
	is_int(json_array_size(d), 1, "list");
	json_decref(d);
	is_int(gw_images_delete(im, id), 0, "delete");
	is_int(gw_images_delete(im, id), -ENOENT, "delete again");
	ok(gw_images_get(im, id) == NULL, "gone");
	gw_images_free(im);
}

static void test_policy(void)
{
	const char *keys[] = { IMAGES "pub-ecdsa-p256.pem" };
	struct gw_images_policy pol = { true, keys, 1, NULL };
	const char *bad_keys[] = { IMAGES "missing.pem" };
	struct gw_images_policy bad = { true, bad_keys, 1, NULL };
	int err = 0;
	char *msg = NULL, *path;
	struct gw_images *im;
	json_t *d;
	bool created;

	ok(gw_images_new(dir, NULL, &bad, &err, &msg) == NULL, "missing key file fails");
	ok(err < 0 && msg, "with a reason: %s", msg ? msg : "");
	free(msg);
	msg = NULL;
	im = gw_images_new(dir, NULL, &pol, &err, &msg);
	ok(im != NULL, "store with a key");
	path = stage(IMAGES "app-1.2.3+4-ecdsa-p256.bin", 0, false);
	is_int(add(im, path, &d, &created, &msg), 0, "signed by the key: accepted");
	ok(json_is_true(json_object_get(json_object_get(d, "signature"), "verified")),
	   "verified");
	json_decref(d);
	free(path);
	path = stage(IMAGES "app-1.0.0-hash.bin", 0, false);
	is_int(add(im, path, &d, &created, &msg), -ENODATA, "unsigned refused");
	free(msg);
	free(path);
	path = stage(IMAGES "app-2.0.0-ed25519.bin", 0, false);
	ok(add(im, path, &d, &created, &msg) < 0, "signed by another key refused");
	ok(msg != NULL, "reason: %s", msg ? msg : "");
	free(msg);
	free(path);
	gw_images_free(im);
}

int main(void)
{
	int err = 0;
	char *msg = NULL;
	struct gw_store *store;
	char *cmd;

	snprintf(dir, sizeof(dir), "/tmp/test-images-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	store = gw_store_open(dir, &err, &msg);
	ok(store != NULL, "SQLite store opens (%s)", msg ? msg : "ok");
	free(msg);
	test_basic(store);
	test_reopen(store);
	gw_store_free(store);
	test_policy();
	cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("cleanup failed");
	free(cmd);
	return tap_done();
}
