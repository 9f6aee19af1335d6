/* SPDX-License-Identifier: MIT */
/*
 * MCUboot image parser and verifier (see mcuboot.h). Parsing never trusts a
 * size field before checking it against the buffer; offsets are size_t so
 * header fields cannot overflow them.
 */
#include "codec/mcuboot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "util/util.h"

const char *mcuboot_status_str(enum mcuboot_status st)
{
	switch (st) {
	case MCUBOOT_STATUS_OK: return "ok";
	case MCUBOOT_STATUS_TRUNCATED: return "image truncated";
	case MCUBOOT_STATUS_BAD_MAGIC: return "not an MCUboot image (bad magic)";
	case MCUBOOT_STATUS_BAD_SIZE: return "header or image size out of range";
	case MCUBOOT_STATUS_BAD_TLV: return "malformed TLV area";
	case MCUBOOT_STATUS_NO_HASH: return "no SHA-256 TLV";
	case MCUBOOT_STATUS_HASH_MISMATCH: return "SHA-256 mismatch";
	case MCUBOOT_STATUS_UNSIGNED: return "image is not signed";
	case MCUBOOT_STATUS_NO_KEY: return "no matching key";
	case MCUBOOT_STATUS_BAD_SIGNATURE: return "bad signature";
	case MCUBOOT_STATUS_UNSUPPORTED_SIG: return "unsupported signature type";
	}
	return "unknown";
}

static const struct {
	uint16_t type;
	const char *name;
} tlv_names[] = {
	{ MCUBOOT_TLV_KEYHASH, "KEYHASH" },
	{ MCUBOOT_TLV_PUBKEY, "PUBKEY" },
	{ MCUBOOT_TLV_SHA256, "SHA256" },
	{ MCUBOOT_TLV_SHA384, "SHA384" },
	{ MCUBOOT_TLV_SHA512, "SHA512" },
	{ MCUBOOT_TLV_RSA2048_PSS, "RSA2048_PSS" },
	{ MCUBOOT_TLV_ECDSA224, "ECDSA224" },
	{ MCUBOOT_TLV_ECDSA_P256, "ECDSA_P256" },
	{ MCUBOOT_TLV_RSA3072_PSS, "RSA3072_PSS" },
	{ MCUBOOT_TLV_ED25519, "ED25519" },
	{ MCUBOOT_TLV_SIG_PURE, "SIG_PURE" },
	{ MCUBOOT_TLV_ENC_RSA2048, "ENC_RSA2048" },
	{ MCUBOOT_TLV_ENC_KW, "ENC_KW" },
	{ MCUBOOT_TLV_ENC_EC256, "ENC_EC256" },
	{ MCUBOOT_TLV_ENC_X25519, "ENC_X25519" },
	{ MCUBOOT_TLV_DEPENDENCY, "DEPENDENCY" },
	{ MCUBOOT_TLV_SEC_CNT, "SEC_CNT" },
	{ MCUBOOT_TLV_BOOT_RECORD, "BOOT_RECORD" },
};

const char *mcuboot_tlv_name(uint16_t type)
{
	for (size_t i = 0; i < ARRAY_SIZE(tlv_names); i++)
		if (tlv_names[i].type == type)
			return tlv_names[i].name;
	return NULL;
}

static bool is_sig_type(uint16_t type)
{
	return type == MCUBOOT_TLV_RSA2048_PSS || type == MCUBOOT_TLV_ECDSA224 ||
	       type == MCUBOOT_TLV_ECDSA_P256 || type == MCUBOOT_TLV_RSA3072_PSS ||
	       type == MCUBOOT_TLV_ED25519 || type == MCUBOOT_TLV_SIG_PURE;
}

static int fail(enum mcuboot_status st, enum mcuboot_status *ret_status)
{
	if (ret_status)
		*ret_status = st;
	switch (st) {
	case MCUBOOT_STATUS_OK: return 0;
	case MCUBOOT_STATUS_UNSIGNED: return -ENODATA;
	case MCUBOOT_STATUS_NO_KEY: return -ENOKEY;
	case MCUBOOT_STATUS_BAD_SIGNATURE: return -EKEYREJECTED;
	case MCUBOOT_STATUS_UNSUPPORTED_SIG: return -EOPNOTSUPP;
	case MCUBOOT_STATUS_TRUNCATED:
	case MCUBOOT_STATUS_BAD_MAGIC:
	case MCUBOOT_STATUS_BAD_SIZE:
	case MCUBOOT_STATUS_BAD_TLV:
	case MCUBOOT_STATUS_NO_HASH:
	case MCUBOOT_STATUS_HASH_MISMATCH:
		break;
	}
	return -EBADMSG;
}

static enum mcuboot_status parse_header(const uint8_t *buf, size_t len,
					struct mcuboot_image *img)
{
	if (len < MCUBOOT_HEADER_LEN)
		return len >= 4 && get_le32(buf) != MCUBOOT_IMAGE_MAGIC ?
		       MCUBOOT_STATUS_BAD_MAGIC : MCUBOOT_STATUS_TRUNCATED;
	if (get_le32(buf) != MCUBOOT_IMAGE_MAGIC)
		return MCUBOOT_STATUS_BAD_MAGIC;
	img->load_addr = get_le32(buf + 4);
	img->hdr_size = get_le16(buf + 8);
	img->protect_tlv_size = get_le16(buf + 10);
	img->img_size = get_le32(buf + 12);
	img->flags = get_le32(buf + 16);
	img->version.major = buf[20];
	img->version.minor = buf[21];
	img->version.revision = get_le16(buf + 22);
	img->version.build = get_le32(buf + 24);
	if (img->hdr_size < MCUBOOT_HEADER_LEN || img->hdr_size > MCUBOOT_MAX_HDR_SIZE ||
	    img->img_size > MCUBOOT_MAX_IMG_SIZE)
		return MCUBOOT_STATUS_BAD_SIZE;
	return MCUBOOT_STATUS_OK;
}

/* Reads one TLV area (info header + entries) at *off, advancing it. */
static enum mcuboot_status parse_tlv_area(const uint8_t *buf, size_t len, size_t *off,
					  uint16_t magic, struct mcuboot_image *img)
{
	size_t o = *off, end;
	uint16_t tot;

	if (len - o < 4)
		return MCUBOOT_STATUS_TRUNCATED;
	if (get_le16(buf + o) != magic)
		return MCUBOOT_STATUS_BAD_TLV;
	tot = get_le16(buf + o + 2);
	if (tot < 4)
		return MCUBOOT_STATUS_BAD_TLV;
	if (magic == MCUBOOT_TLV_PROT_INFO_MAGIC && tot != img->protect_tlv_size)
		return MCUBOOT_STATUS_BAD_TLV;
	if (len - o < tot)
		return MCUBOOT_STATUS_TRUNCATED;
	end = o + tot;
	for (o += 4; o < end;) {
		struct mcuboot_tlv t;

		if (end - o < 4)
			return MCUBOOT_STATUS_BAD_TLV;
		t.type = get_le16(buf + o);
		t.len = get_le16(buf + o + 2);
		t.off = o + 4;
		t.protected_ = magic == MCUBOOT_TLV_PROT_INFO_MAGIC;
		if (end - t.off < t.len || img->ntlvs == MCUBOOT_MAX_TLVS)
			return MCUBOOT_STATUS_BAD_TLV;
		img->tlvs[img->ntlvs++] = t;
		o = t.off + t.len;
	}
	*off = end;
	return MCUBOOT_STATUS_OK;
}

/* Picks out the hash, key hash and signature TLVs and checks the hash. */
static enum mcuboot_status check_tlvs(const uint8_t *buf, struct mcuboot_image *img,
				      size_t hashed_len)
{
	bool has_hash = false;
	uint8_t digest[MCUBOOT_HASH_LEN];

	for (size_t i = 0; i < img->ntlvs; i++) {
		const struct mcuboot_tlv *t = &img->tlvs[i];

		if (t->type == MCUBOOT_TLV_SHA256 && t->len == MCUBOOT_HASH_LEN && !has_hash) {
			memcpy(img->hash, buf + t->off, MCUBOOT_HASH_LEN);
			has_hash = true;
		} else if (t->type == MCUBOOT_TLV_KEYHASH && t->len == MCUBOOT_HASH_LEN &&
			   !img->has_keyhash) {
			memcpy(img->keyhash, buf + t->off, MCUBOOT_HASH_LEN);
			img->has_keyhash = true;
		} else if (is_sig_type(t->type) && !img->sig_type) {
			img->sig_type = t->type;
			img->sig_off = t->off;
			img->sig_len = t->len;
		}
	}
	if (!has_hash)
		return MCUBOOT_STATUS_NO_HASH;
	if (!EVP_Digest(buf, hashed_len, digest, NULL, EVP_sha256(), NULL))
		abort(); /* only on allocation failure, as xmalloc */
	if (memcmp(digest, img->hash, MCUBOOT_HASH_LEN) != 0)
		return MCUBOOT_STATUS_HASH_MISMATCH;
	return MCUBOOT_STATUS_OK;
}

int mcuboot_image_parse_status(const uint8_t *buf, size_t len,
			       struct mcuboot_image *ret,
			       enum mcuboot_status *ret_status)
{
	struct mcuboot_image *img = xnew(struct mcuboot_image);
	enum mcuboot_status st;
	size_t off;

	st = parse_header(buf, len, img);
	if (st != MCUBOOT_STATUS_OK)
		goto out;
	off = (size_t)img->hdr_size + img->img_size;
	if (off > len) {
		st = MCUBOOT_STATUS_TRUNCATED;
		goto out;
	}
	if (img->protect_tlv_size) {
		st = parse_tlv_area(buf, len, &off, MCUBOOT_TLV_PROT_INFO_MAGIC, img);
		if (st != MCUBOOT_STATUS_OK)
			goto out;
	}
	size_t hashed_len = off;

	st = parse_tlv_area(buf, len, &off, MCUBOOT_TLV_INFO_MAGIC, img);
	if (st != MCUBOOT_STATUS_OK)
		goto out;
	img->total_size = off;
	st = check_tlvs(buf, img, hashed_len);
	if (st == MCUBOOT_STATUS_OK)
		*ret = *img;
out:
	free(img);
	return fail(st, ret_status);
}

int mcuboot_image_parse(const uint8_t *buf, size_t len, struct mcuboot_image *ret)
{
	return mcuboot_image_parse_status(buf, len, ret, NULL);
}

void mcuboot_version_str(const struct mcuboot_version *v, char *out, size_t size)
{
	snprintf(out, size, "%u.%u.%u+%u", v->major, v->minor, v->revision, v->build);
}

void mcuboot_version_text(const struct mcuboot_version *v, char *out, size_t size)
{
	if (v->build)
		snprintf(out, size, "%u.%u.%u.%u", v->major, v->minor, v->revision,
			 v->build);
	else
		snprintf(out, size, "%u.%u.%u", v->major, v->minor, v->revision);
}

/* One decimal part of at most 10 digits, no sign, no leading blanks. */
static int version_part(const char *s, size_t len, size_t *pos, uint64_t max,
			uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = *pos, start = i;

	while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 10)
		v = v * 10 + (uint64_t)(s[i++] - '0');
	if (i == start || v > max || (i < len && s[i] >= '0' && s[i] <= '9'))
		return -EBADMSG;
	*pos = i;
	*ret = v;
	return 0;
}

int mcuboot_version_parse(const char *s, size_t len, struct mcuboot_version *ret)
{
	static const uint64_t max[4] = { UINT8_MAX, UINT8_MAX, UINT16_MAX, UINT32_MAX };
	uint64_t p[4] = { 0 };
	size_t pos = 0;
	int n;

	if (!s)
		return -EBADMSG;
	for (n = 0; n < 4; n++) {
		if (version_part(s, len, &pos, max[n], &p[n]) < 0)
			return -EBADMSG;
		if (pos == len)
			break;
		/* '.' between parts; before the build also MCUboot's '+' */
		if (n == 3 || !(s[pos] == '.' || (n == 2 && s[pos] == '+')))
			return -EBADMSG;
		if (++pos == len)
			return -EBADMSG;
	}
	if (n < 2)
		return -EBADMSG;
	*ret = (struct mcuboot_version){ .major = (uint8_t)p[0], .minor = (uint8_t)p[1],
					 .revision = (uint16_t)p[2],
					 .build = (uint32_t)p[3] };
	return 0;
}

bool mcuboot_version_equal(const struct mcuboot_version *a,
			   const struct mcuboot_version *b)
{
	return a->major == b->major && a->minor == b->minor &&
	       a->revision == b->revision && a->build == b->build;
}

int mcuboot_version_canonical(const char *s, char *out, size_t size)
{
	struct mcuboot_version v;

	if (!s || mcuboot_version_parse(s, strlen(s), &v) < 0)
		return -EBADMSG;
	mcuboot_version_str(&v, out, size);
	return 0;
}

void mcuboot_hash_hex(const struct mcuboot_image *img, char out[2 * MCUBOOT_HASH_LEN + 1])
{
	hex_encode(img->hash, MCUBOOT_HASH_LEN, out);
}

/* ---- key ring and signatures ---- */

struct keyring_entry {
	EVP_PKEY *key;
	uint8_t hash_spki[MCUBOOT_HASH_LEN]; /* SHA-256 of SubjectPublicKeyInfo */
	uint8_t hash_raw[MCUBOOT_HASH_LEN];  /* of i2d_PublicKey (PKCS#1 for RSA) */
	bool has_raw;
};

struct mcuboot_keyring {
	struct keyring_entry *keys;
	size_t n;
};

struct mcuboot_keyring *mcuboot_keyring_new(void)
{
	return xnew(struct mcuboot_keyring);
}

struct mcuboot_keyring *mcuboot_keyring_free(struct mcuboot_keyring *kr)
{
	if (!kr)
		return NULL;
	for (size_t i = 0; i < kr->n; i++)
		EVP_PKEY_free(kr->keys[i].key);
	free(kr->keys);
	free(kr);
	return NULL;
}

size_t mcuboot_keyring_count(const struct mcuboot_keyring *kr)
{
	return kr->n;
}

/* SHA-256 of a DER encoding made by an i2d function; false if it fails. */
static bool hash_der(int (*i2d)(const EVP_PKEY *, unsigned char **), EVP_PKEY *key,
		     uint8_t out[MCUBOOT_HASH_LEN])
{
	unsigned char *der = NULL;
	int n = i2d(key, &der);
	bool ok = n > 0 && EVP_Digest(der, (size_t)n, out, NULL, EVP_sha256(), NULL);

	OPENSSL_free(der);
	return ok;
}

static int i2d_pubkey(const EVP_PKEY *key, unsigned char **der)
{
	return i2d_PUBKEY(key, der);
}

static int i2d_publickey(const EVP_PKEY *key, unsigned char **der)
{
	return i2d_PublicKey(key, der);
}

static bool key_supported(EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "RSA"))
		return EVP_PKEY_get_bits(key) == 2048 || EVP_PKEY_get_bits(key) == 3072;
	if (EVP_PKEY_is_a(key, "EC")) {
		char group[32];

		return EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME,
						      group, sizeof(group), NULL) &&
		       strcmp(group, "prime256v1") == 0;
	}
	return EVP_PKEY_is_a(key, "ED25519");
}

int mcuboot_keyring_add_pem(struct mcuboot_keyring *kr, const char *pem, size_t len)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)MIN(len, (size_t)INT32_MAX));
	EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	struct keyring_entry e = { .key = key };

	BIO_free(bio);
	if (!key || !key_supported(key) || !hash_der(i2d_pubkey, key, e.hash_spki)) {
		EVP_PKEY_free(key);
		return -EBADMSG;
	}
	/* imgtool embeds RSA keys as PKCS#1; EC keys are SPKI for it but
	 * i2d_PublicKey gives the bare point, which must not match. */
	e.has_raw = EVP_PKEY_is_a(key, "RSA") && hash_der(i2d_publickey, key, e.hash_raw);
	kr->keys = xrealloc(kr->keys, (kr->n + 1) * sizeof(*kr->keys));
	kr->keys[kr->n] = e;
	return (int)kr->n++;
}

int mcuboot_keyring_add_pem_file(struct mcuboot_keyring *kr, const char *path)
{
	FILE *f = fopen(path, "re");
	char buf[16384];
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf), f);
	if (ferror(f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	return mcuboot_keyring_add_pem(kr, buf, n);
}

int mcuboot_keyring_keyhash(const struct mcuboot_keyring *kr, size_t i,
			    uint8_t out[MCUBOOT_HASH_LEN])
{
	if (i >= kr->n)
		return -ENOENT;
	memcpy(out, kr->keys[i].has_raw ? kr->keys[i].hash_raw : kr->keys[i].hash_spki,
	       MCUBOOT_HASH_LEN);
	return 0;
}

static bool key_fits_sig(EVP_PKEY *key, uint16_t sig_type)
{
	switch (sig_type) {
	case MCUBOOT_TLV_RSA2048_PSS:
		return EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_get_bits(key) == 2048;
	case MCUBOOT_TLV_RSA3072_PSS:
		return EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_get_bits(key) == 3072;
	case MCUBOOT_TLV_ECDSA_P256:
		return EVP_PKEY_is_a(key, "EC");
	case MCUBOOT_TLV_ED25519:
		return EVP_PKEY_is_a(key, "ED25519");
	default:
		return false;
	}
}

/* Ed25519 signs the 32-byte digest as its message (imgtool without
 * --pure); ECDSA and RSA-PSS sign the digest as a prehashed value. */
static bool verify_sig(EVP_PKEY *key, uint16_t sig_type, const uint8_t *hash,
		       const uint8_t *sig, size_t sig_len)
{
	bool ok = false;

	if (sig_type == MCUBOOT_TLV_ED25519) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();

		ok = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1 &&
		     EVP_DigestVerify(md, sig, sig_len, hash, MCUBOOT_HASH_LEN) == 1;
		EVP_MD_CTX_free(md);
		return ok;
	}
	/* Old imgtool versions zero-pad ECDSA signatures to 72 bytes;
	 * OpenSSL refuses bytes after the DER SEQUENCE, MCUboot ignores them. */
	if (sig_type == MCUBOOT_TLV_ECDSA_P256 && sig_len >= 2 && sig[0] == 0x30 &&
	    sig[1] < 0x80 && (size_t)sig[1] + 2 <= sig_len)
		sig_len = (size_t)sig[1] + 2;

	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);

	if (!ctx || EVP_PKEY_verify_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1)
		goto out;
	/* MCUboot wants the salt as long as the digest. */
	if (EVP_PKEY_is_a(key, "RSA") &&
	    (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	     EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1 ||
	     EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, MCUBOOT_HASH_LEN) != 1))
		goto out;
	ok = EVP_PKEY_verify(ctx, sig, sig_len, hash, MCUBOOT_HASH_LEN) == 1;
out:
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static bool keyhash_matches(const struct keyring_entry *e, const uint8_t *keyhash)
{
	return memcmp(e->hash_spki, keyhash, MCUBOOT_HASH_LEN) == 0 ||
	       (e->has_raw && memcmp(e->hash_raw, keyhash, MCUBOOT_HASH_LEN) == 0);
}

int mcuboot_image_verify(const struct mcuboot_image *img, const uint8_t *buf,
			 size_t len, const struct mcuboot_keyring *kr,
			 size_t *ret_key, enum mcuboot_status *ret_status)
{
	bool candidate = false;

	if (!img->sig_type)
		return fail(MCUBOOT_STATUS_UNSIGNED, ret_status);
	if (img->sig_type != MCUBOOT_TLV_RSA2048_PSS && img->sig_type != MCUBOOT_TLV_RSA3072_PSS &&
	    img->sig_type != MCUBOOT_TLV_ECDSA_P256 && img->sig_type != MCUBOOT_TLV_ED25519)
		return fail(MCUBOOT_STATUS_UNSUPPORTED_SIG, ret_status);
	if (img->sig_off > len || len - img->sig_off < img->sig_len)
		return fail(MCUBOOT_STATUS_TRUNCATED, ret_status);
	for (size_t i = 0; kr && i < kr->n; i++) {
		const struct keyring_entry *e = &kr->keys[i];

		if (img->has_keyhash && !keyhash_matches(e, img->keyhash))
			continue;
		if (!key_fits_sig(e->key, img->sig_type))
			continue;
		candidate = true;
		if (verify_sig(e->key, img->sig_type, img->hash, buf + img->sig_off,
			       img->sig_len)) {
			if (ret_key)
				*ret_key = i;
			return fail(MCUBOOT_STATUS_OK, ret_status);
		}
	}
	return fail(candidate ? MCUBOOT_STATUS_BAD_SIGNATURE : MCUBOOT_STATUS_NO_KEY,
		    ret_status);
}
