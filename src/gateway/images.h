/* SPDX-License-Identifier: MIT */
/*
 * The image store: MCUboot images validated on the way in (structure,
 * SHA-256 TLV, signature policy) and kept as state_dir/images/<hash>.bin,
 * where <hash> is the image's SHA-256 TLV in lower-case hex: the hash a
 * watch reports for a slot, and the image id everywhere in the API.
 * Duplicates (same TLV hash) are detected and stored once. What a file
 * cannot say about itself (original file name, upload time) lives in the
 * SQLite store's "images" table, or in a <hash>.json sidecar when the
 * daemon runs without a store.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

struct gw_images;
struct gw_store;

struct gw_images_policy {
	bool require_signature;      /* refuse unsigned / unverifiable images */
	const char *const *key_files; /* PEM public keys */
	size_t n_key_files;
	const char *dir;              /* NULL: state_dir/images */
};

/* Opens (creating) policy->dir or state_dir/images; store (borrowed, may be NULL) keeps
 * the metadata. NULL with *err and *errmsg (new string) on failure:
 * unreadable key file, unwritable directory. */
struct gw_images *gw_images_new(const char *state_dir, struct gw_store *store,
				const struct gw_images_policy *policy, int *err,
				char **errmsg);
struct gw_images *gw_images_free(struct gw_images *im);

/*
 * Validates the file at path and moves it into the store. On success
 * returns 0, *ret (new reference: the image's description) and
 * *ret_created (false: the image was already stored, path is removed).
 * On failure path is left alone and *errmsg (new string) says why:
 * -ENOEXEC not a valid MCUboot image; -ENODATA unsigned, -ENOKEY no
 * configured key, -EKEYREJECTED bad signature, -EOPNOTSUPP unsupported
 * signature type (policy); -EIO/-ENOSPC on disk errors.
 */
int gw_images_add_file(struct gw_images *im, const char *path,
		       const char *filename, json_t **ret, bool *ret_created,
		       char **errmsg);
/* New references. get returns NULL when id is unknown. */
json_t *gw_images_list(struct gw_images *im);
json_t *gw_images_get(struct gw_images *im, const char *id);
/* -ENOENT when unknown. */
int gw_images_delete(struct gw_images *im, const char *id);
/* Whether id has the form of the ids this store makes (64 lowercase hex
 * digits): safe to put in a file name. */
bool gw_images_id_valid(const char *id);
/* Path of the stored file (new string), or NULL when unknown. */
char *gw_images_path(struct gw_images *im, const char *id);
size_t gw_images_count(const struct gw_images *im);
