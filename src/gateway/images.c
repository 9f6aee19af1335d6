/* SPDX-License-Identifier: MIT */
/*
 * The image store (see images.h). The files are the truth: at start every
 * images/<hash>.bin is parsed again (a file that no longer parses is moved
 * aside, never served); the store's "images" table (or a <hash>.json
 * sidecar without a store) keeps what the file cannot say (original file
 * name, upload time), and rows without a file are dropped. Nothing is held
 * in memory but the descriptions; files are read through mmap.
 */
#include "gateway/images.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "codec/mcuboot.h"
#include "gateway/log.h"
#include "gateway/store.h"
#include "util/util.h"

struct entry {
	char id[2 * MCUBOOT_HASH_LEN + 1];
	json_t *desc;
};

struct gw_images {
	char *dir;
	struct gw_store *db; /* borrowed; NULL: sidecar files */
	bool require_signature;
	struct mcuboot_keyring *keys;
	struct entry *v;
	size_t n;
};

static uint64_t wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* A read-only mapping of a whole file. */
struct map {
	const uint8_t *buf;
	size_t len;
};

static int map_file(const char *path, struct map *m)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	void *p;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return -ENOEXEC;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -EIO;
	m->buf = p;
	m->len = (size_t)st.st_size;
	return 0;
}

static void unmap_file(struct map *m)
{
	if (m->buf)
		munmap((void *)m->buf, m->len);
	m->buf = NULL;
}

static int verify_policy(struct gw_images *im, const struct mcuboot_image *img,
			 const struct map *m, json_t *sig, char **errmsg)
{
	enum mcuboot_status st = MCUBOOT_STATUS_OK;
	size_t key = 0;
	int r;

	if (!img->sig_type && !im->require_signature)
		return 0;
	if (!mcuboot_keyring_count(im->keys)) {
		if (!im->require_signature)
			return 0;
		*errmsg = xstrdup("signatures are required but no key is configured");
		return -ENOKEY;
	}
	r = mcuboot_image_verify(img, m->buf, m->len, im->keys, &key, &st);
	json_object_set_new(sig, "verified", json_boolean(r == 0));
	if (r == 0) {
		json_object_set_new(sig, "key", json_integer((json_int_t)key));
		return 0;
	}
	if (!im->require_signature)
		return 0; /* recorded as unverified, accepted by policy */
	*errmsg = xasprintf("signature check failed: %s", mcuboot_status_str(st));
	return r == -EBADMSG ? -ENOEXEC : r;
}

static json_t *describe(const struct mcuboot_image *img, const struct map *m)
{
	char hash[2 * MCUBOOT_HASH_LEN + 1], ver[MCUBOOT_VERSION_STR_LEN];
	char kh[2 * MCUBOOT_HASH_LEN + 1], fsha_hex[65];
	uint8_t fsha[32];
	unsigned n = 0;
	json_t *tlvs = json_array(), *sig;

	mcuboot_hash_hex(img, hash);
	mcuboot_version_str(&img->version, ver, sizeof(ver));
	for (size_t i = 0; i < img->ntlvs; i++) {
		const char *name = mcuboot_tlv_name(img->tlvs[i].type);

		json_array_append_new(tlvs, name ? json_string(name) :
					    json_integer(img->tlvs[i].type));
	}
	EVP_Digest(m->buf, m->len, fsha, &n, EVP_sha256(), NULL);
	hex_encode(fsha, 32, fsha_hex);
	sig = json_pack("{s:s?, s:b}", "type",
			img->sig_type ? mcuboot_tlv_name(img->sig_type) : NULL,
			"verified", false);
	if (img->has_keyhash) {
		hex_encode(img->keyhash, MCUBOOT_HASH_LEN, kh);
		json_object_set_new(sig, "keyhash", json_string(kh));
	}
	return json_pack("{s:s, s:s, s:s, s:I, s:I, s:i, s:I, s:I, s:o, s:o, s:s}",
			 "id", hash, "hash", hash, "version", ver,
			 "size", (json_int_t)m->len, "img_size", (json_int_t)img->img_size,
			 "hdr_size", (int)img->hdr_size, "load_addr",
			 (json_int_t)img->load_addr, "flags", (json_int_t)img->flags,
			 "tlvs", tlvs, "signature", sig, "file_sha256", fsha_hex);
}

/* Parses and checks the policy; on success *ret is the description. */
static int validate(struct gw_images *im, const char *path, json_t **ret,
		    char **errmsg)
{
	struct mcuboot_image img;
	enum mcuboot_status st = MCUBOOT_STATUS_OK;
	struct map m = { 0 };
	json_t *desc;
	int r = map_file(path, &m);

	if (r == -ENOEXEC) {
		*errmsg = xstrdup("the file is empty");
		return r;
	}
	if (r < 0) {
		*errmsg = xasprintf("cannot read the upload: %s", strerror(-r));
		return r;
	}
	if (mcuboot_image_parse_status(m.buf, m.len, &img, &st) < 0) {
		*errmsg = xasprintf("not a valid MCUboot image: %s",
				    mcuboot_status_str(st));
		unmap_file(&m);
		return -ENOEXEC;
	}
	desc = describe(&img, &m);
	r = verify_policy(im, &img, &m, json_object_get(desc, "signature"), errmsg);
	unmap_file(&m);
	if (r < 0) {
		json_decref(desc);
		return r;
	}
	*ret = desc;
	return 0;
}

static struct entry *find(const struct gw_images *im, const char *id)
{
	for (size_t i = 0; id && i < im->n; i++)
		if (!strcmp(im->v[i].id, id))
			return &im->v[i];
	return NULL;
}

static void add_entry(struct gw_images *im, json_t *desc)
{
	im->v = xrealloc(im->v, (im->n + 1) * sizeof(*im->v));
	snprintf(im->v[im->n].id, sizeof(im->v[im->n].id), "%s",
		 json_string_value(json_object_get(desc, "id")));
	im->v[im->n++].desc = desc;
}

static char *bin_path(const struct gw_images *im, const char *id)
{
	return xasprintf("%s/%s.bin", im->dir, id);
}

static char *meta_path(const struct gw_images *im, const char *id)
{
	return xasprintf("%s/%s.json", im->dir, id);
}

/* ---- metadata: SQLite table, or sidecar files without a store ---- */

static void meta_load_file(struct gw_images *im, json_t *desc, const char *id)
{
	char *p = meta_path(im, id);
	json_t *meta = json_load_file(p, 0, NULL);

	if (json_is_object(meta))
		json_object_update_missing(desc, meta);
	json_decref(meta);
	free(p);
}

static int meta_save_file(struct gw_images *im, const char *id, json_t *meta)
{
	char *p = meta_path(im, id), *tmp = xasprintf("%s.tmp", p);
	int r = json_dump_file(meta, tmp, JSON_COMPACT) < 0 ? -EIO : 0;

	if (r == 0 && rename(tmp, p) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	free(tmp);
	free(p);
	return r;
}

static struct gw_stmt *db_prepare_id(struct gw_images *im, const char *sql,
				     const char *id)
{
	struct gw_stmt *st = gw_store_prepare(im->db, sql);

	if (st)
		gw_stmt_bind_text(st, 1, id);
	return st;
}

static int meta_save(struct gw_images *im, const char *id, json_t *desc,
		     json_t *meta)
{
	struct gw_stmt *st;
	json_t *fn = json_object_get(meta, "filename");

	if (!im->db)
		return meta_save_file(im, id, meta);
	st = db_prepare_id(im, "INSERT INTO images (id, version, size, filename,"
			   " uploaded_ms) VALUES (?1, ?2, ?3, ?4, ?5)"
			   " ON CONFLICT(id) DO UPDATE SET version = excluded.version,"
			   " size = excluded.size, filename = excluded.filename,"
			   " uploaded_ms = excluded.uploaded_ms", id);
	if (!st)
		return -EIO;
	gw_stmt_bind_text(st, 2, json_string_value(json_object_get(desc, "version")));
	gw_stmt_bind_int64(st, 3, json_integer_value(json_object_get(desc, "size")));
	gw_stmt_bind_text(st, 4, json_string_value(fn));
	gw_stmt_bind_int64(st, 5, json_integer_value(json_object_get(meta, "uploaded_ms")));
	return gw_stmt_run(st) < 0 ? -EIO : 0;
}

/* Adds the metadata row or sidecar to desc; a file without one gets one. */
static void meta_load(struct gw_images *im, json_t *desc, const char *id)
{
	struct gw_stmt *st;
	json_t *meta;

	if (!im->db) {
		meta_load_file(im, desc, id);
		return;
	}
	st = db_prepare_id(im, "SELECT filename, uploaded_ms FROM images WHERE id = ?1",
			   id);
	if (!st)
		return;
	if (gw_stmt_step(st) == 1) {
		if (!gw_stmt_is_null(st, 0)) {
			json_t *fn = json_string(gw_stmt_text(st, 0));

			if (fn)
				json_object_set_new(desc, "filename", fn);
		}
		json_object_set_new(desc, "uploaded_ms",
				    json_integer(gw_stmt_int64(st, 1)));
		gw_stmt_finalize(st);
		return;
	}
	gw_stmt_finalize(st);
	/* A file without a row (copied in by hand, or a crash between the
	 * rename and the insert): record it now. */
	meta = json_pack("{s:I}", "uploaded_ms", (json_int_t)0);
	meta_save(im, id, desc, meta);
	json_object_update_missing(desc, meta);
	json_decref(meta);
}

static void meta_delete(struct gw_images *im, const char *id)
{
	char *p;

	if (!im->db) {
		p = meta_path(im, id);
		unlink(p);
		free(p);
		return;
	}
	gw_stmt_run(db_prepare_id(im, "DELETE FROM images WHERE id = ?1", id));
}

/* Rows whose file is gone (deleted by hand, moved aside) are dropped. A
 * database several gateways share is left alone: another gateway's image
 * directory may have the file (the directory should be shared, see
 * docs/multi-gateway.md), so a missing file is only reported. */
static void meta_prune(struct gw_images *im)
{
	struct gw_stmt *st;
	char **gone = NULL;
	size_t n = 0;
	bool shared;

	if (!im->db || !(st = gw_store_prepare(im->db, "SELECT id FROM images")))
		return;
	shared = gw_store_backend(im->db) != GW_STORE_SQLITE;
	while (gw_stmt_step(st) == 1) {
		const char *id = gw_stmt_text(st, 0);

		if (id && !find(im, id)) {
			gone = xrealloc(gone, (n + 1) * sizeof(*gone));
			gone[n++] = xstrdup(id);
		}
	}
	gw_stmt_finalize(st);
	for (size_t i = 0; i < n; i++) {
		if (shared)
			log_warn("images: %s is recorded in the shared store but not in "
				 "%s (is [images] dir the same directory on every "
				 "gateway?)", gone[i], im->dir);
		else
			meta_delete(im, gone[i]);
		free(gone[i]);
	}
	free(gone);
}

/* The rule for the ids this store makes (mcuboot_hash_hex): 64 lowercase
 * hex digits, then ext ("" for a bare id). */
static bool is_hash_name(const char *name, const char *ext)
{
	size_t n = name ? strlen(name) : 0;

	return n == 64 + strlen(ext) && !strcmp(name + 64, ext) &&
	       strspn(name, "0123456789abcdef") == 64;
}

bool gw_images_id_valid(const char *id)
{
	return is_hash_name(id, "");
}

static void scan(struct gw_images *im)
{
	DIR *d = opendir(im->dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		char id[65], *path, *msg = NULL;
		json_t *desc = NULL;

		if (!is_hash_name(de->d_name, ".bin"))
			continue;
		memcpy(id, de->d_name, 64);
		id[64] = '\0';
		if (find(im, id))
			continue; /* known (another gateway may have added files since) */
		path = bin_path(im, id);
		if (validate(im, path, &desc, &msg) < 0 ||
		    strcmp(json_string_value(json_object_get(desc, "id")), id)) {
			char *aside = xasprintf("%s.invalid", path);

			log_warn("images: %s is no longer valid (%s), moved aside",
				 path, msg ? msg : "hash does not match name");
			rename(path, aside);
			free(aside);
			json_decref(desc);
		} else if (!find(im, id)) {
			meta_load(im, desc, id);
			add_entry(im, desc);
		} else {
			json_decref(desc);
		}
		free(msg);
		free(path);
	}
	if (d)
		closedir(d);
}

struct gw_images *gw_images_new(const char *state_dir, struct gw_store *store,
				const struct gw_images_policy *policy, int *err,
				char **errmsg)
{
	struct gw_images *im = xnew(struct gw_images);
	struct gw_stmt *st;

	im->dir = policy && policy->dir ? xstrdup(policy->dir) :
					     xasprintf("%s/images", state_dir);
	im->keys = mcuboot_keyring_new();
	im->require_signature = policy && policy->require_signature;
	if (mkdir(im->dir, 0700) < 0 && errno != EEXIST) {
		*err = -errno;
		*errmsg = xasprintf("cannot create %s: %s", im->dir, strerror(errno));
		return gw_images_free(im);
	}
	for (size_t i = 0; policy && i < policy->n_key_files; i++) {
		int r = mcuboot_keyring_add_pem_file(im->keys, policy->key_files[i]);

		if (r < 0) {
			*err = r;
			*errmsg = xasprintf("cannot load signing key %s: %s",
					    policy->key_files[i],
					    r == -EBADMSG ? "no public key in it" :
							    strerror(-r));
			return gw_images_free(im);
		}
	}
	im->db = store;
	/* A store without the images migration (older schema): sidecars. */
	st = store ? gw_store_prepare(store, "SELECT id FROM images LIMIT 1") : NULL;
	if (st && gw_stmt_step(st) < 0)
		im->db = NULL;
	else if (store && !st)
		im->db = NULL;
	gw_stmt_finalize(st);
	scan(im);
	meta_prune(im);
	return im;
}

struct gw_images *gw_images_free(struct gw_images *im)
{
	if (!im)
		return NULL;
	for (size_t i = 0; i < im->n; i++)
		json_decref(im->v[i].desc);
	free(im->v);
	mcuboot_keyring_free(im->keys);
	free(im->dir);
	free(im);
	return NULL;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int gw_images_add_file(struct gw_images *im, const char *path,
		       const char *filename, json_t **ret, bool *ret_created,
		       char **errmsg)
{
	json_t *desc = NULL, *meta, *fn;
	struct entry *e;
	char *dst;
	int r = validate(im, path, &desc, errmsg);

	if (r < 0)
		return r;
	e = find(im, json_string_value(json_object_get(desc, "id")));
	if (e) {
		json_decref(desc);
		unlink(path);
		*ret = json_incref(e->desc);
		*ret_created = false;
		return 0;
	}
	dst = bin_path(im, json_string_value(json_object_get(desc, "id")));
	if (rename(path, dst) < 0) {
		r = -errno;
		*errmsg = xasprintf("cannot store the image: %s", strerror(errno));
		free(dst);
		json_decref(desc);
		return r;
	}
	free(dst);
	meta = json_pack("{s:I}", "uploaded_ms", (json_int_t)wall_ms());
	fn = filename ? json_string(filename) : NULL; /* NULL if not UTF-8 */
	if (fn)
		json_object_set_new(meta, "filename", fn);
	r = meta_save(im, json_string_value(json_object_get(desc, "id")), desc, meta);
	if (r < 0)
		log_warn("images: cannot record the metadata of %s: %s",
			 json_string_value(json_object_get(desc, "id")), strerror(-r));
	fsync_dir(im->dir);
	json_object_update_missing(desc, meta);
	json_decref(meta);
	add_entry(im, desc);
	*ret = json_incref(desc);
	*ret_created = true;
	return 0;
}

json_t *gw_images_list(struct gw_images *im)
{
	json_t *a = json_array();

	/* Several gateways share the directory ([images] dir): what the
	 * others stored since is listed too. */
	if (im->db && gw_store_backend(im->db) == GW_STORE_POSTGRESQL)
		scan(im);
	for (size_t i = 0; i < im->n; i++)
		json_array_append(a, im->v[i].desc);
	return a;
}

json_t *gw_images_get(struct gw_images *im, const char *id)
{
	struct entry *e = find(im, id);

	if (!e && im->db && gw_store_backend(im->db) == GW_STORE_POSTGRESQL) {
		scan(im); /* stored by another gateway since the start */
		e = find(im, id);
	}

	return e ? json_incref(e->desc) : NULL;
}

int gw_images_delete(struct gw_images *im, const char *id)
{
	struct entry *e = find(im, id);
	char *p;

	if (!e)
		return -ENOENT;
	p = bin_path(im, id);
	unlink(p);
	free(p);
	meta_delete(im, id);
	json_decref(e->desc);
	*e = im->v[--im->n];
	return 0;
}

char *gw_images_path(struct gw_images *im, const char *id)
{
	return find(im, id) ? bin_path(im, id) : NULL;
}

size_t gw_images_count(const struct gw_images *im)
{
	return im->n;
}
