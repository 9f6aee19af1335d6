/* SPDX-License-Identifier: MIT */
/* Tests for the MCUboot parser/verifier: the imgtool-made conformance
 * images with their shipped public keys (RSA-2048, ECDSA P-256, Ed25519),
 * the key hashes, images signed here with fresh keys (RSA-3072, protected
 * TLVs), and one distinct error per kind of damage. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "codec/mcuboot.h"
#include "tap.h"
#include "util/util.h"

#define IMG_DIR CONFORMANCE_DIR "/images/"

static const char *const key_files[] = {
	"pub-rsa-2048.pem", "pub-ecdsa-p256.pem", "pub-ed25519.pem",
};
static const char *const key_sig[] = { "RSA2048_PSS", "ECDSA_P256", "ED25519" };

static uint8_t *read_image(const char *name, size_t *len)
{
	char *path = xasprintf(IMG_DIR "%s", name);
	uint8_t *buf = tap_read_file(path, len);

	free(path);
	return buf;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted TLV names joined by ',' (the manifest lists them sorted). */
static void tlv_list(const struct mcuboot_image *img, char *out, size_t size)
{
	const char *names[MCUBOOT_MAX_TLVS];

	for (size_t i = 0; i < img->ntlvs; i++)
		names[i] = mcuboot_tlv_name(img->tlvs[i].type) ?: "?";
	qsort(names, img->ntlvs, sizeof(names[0]), cmp_str);
	out[0] = 0;
	for (size_t i = 0; i < img->ntlvs; i++)
		snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "", names[i]);
}

static void manifest_tlvs(json_t *a, char *out, size_t size)
{
	size_t i;
	json_t *v;

	out[0] = 0;
	json_array_foreach(a, i, v)
		snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "",
			 json_string_value(v));
}

static void check_image(const char *name, json_t *m, struct mcuboot_keyring **single)
{
	size_t len;
	uint8_t *buf = read_image(name, &len);
	struct mcuboot_image img;
	char s[256], want[256], hex[65];
	json_t *kh = json_object_get(m, "keyhash");
	const char *signed_with = json_string_value(json_object_get(m, "signed_with"));
	enum mcuboot_status st;

	if (!is_int(mcuboot_image_parse(buf, len, &img), 0, name)) {
		free(buf);
		return;
	}
	is_int(img.total_size, json_integer_value(json_object_get(m, "size")), "total size");
	is_int(img.hdr_size, json_integer_value(json_object_get(m, "hdr_size")), "hdr_size");
	is_int(img.img_size, json_integer_value(json_object_get(m, "img_size")), "img_size");
	mcuboot_version_str(&img.version, s, sizeof(s));
	is_str(s, json_string_value(json_object_get(m, "version")), "version");
	mcuboot_hash_hex(&img, hex);
	is_str(hex, json_string_value(json_object_get(m, "sha256_tlv")), "SHA-256 TLV");
	tlv_list(&img, s, sizeof(s));
	manifest_tlvs(json_object_get(m, "tlvs"), want, sizeof(want));
	is_str(s, want, "TLV list");
	if (json_is_string(kh)) {
		hex_encode(img.keyhash, sizeof(img.keyhash), hex);
		ok(img.has_keyhash, "has key hash");
		is_str(hex, json_string_value(kh), "key hash");
	} else {
		ok(!img.has_keyhash, "no key hash");
	}

	/* Each key alone: only the signer's verifies. */
	for (size_t k = 0; k < ARRAY_SIZE(key_files); k++) {
		size_t idx = 99;
		int r;

		if (!single[k])
			continue;
		r = mcuboot_image_verify(&img, buf, len, single[k], &idx, &st);
		if (!signed_with)
			ok(r == -ENODATA && st == MCUBOOT_STATUS_UNSIGNED, "%s: unsigned", key_files[k]);
		else if (strcmp(signed_with, key_sig[k]) == 0)
			ok(r == 0 && idx == 0, "verifies with %s", key_files[k]);
		else
			ok(r == -ENOKEY && st == MCUBOOT_STATUS_NO_KEY, "no key: %s", key_files[k]);
	}
	free(buf);
}

static void test_conformance_images(json_t *manifest)
{
	struct mcuboot_keyring *single[ARRAY_SIZE(key_files)];
	const char *name;
	json_t *m;

	for (size_t k = 0; k < ARRAY_SIZE(key_files); k++) {
		char *path = xasprintf(IMG_DIR "%s", key_files[k]);
		int r;

		single[k] = mcuboot_keyring_new();
		r = mcuboot_keyring_add_pem_file(single[k], path);
		is_int(r, 0, key_files[k]);
		free(path);
	}
	json_object_foreach(manifest, name, m)
		check_image(name, m, single);
	for (size_t k = 0; k < ARRAY_SIZE(key_files); k++)
		mcuboot_keyring_free(single[k]);
}

/* The key hash TLV is the SHA-256 of the signer's public key as DER:
 * the SubjectPublicKeyInfo for ECDSA and Ed25519, the PKCS#1 RSAPublicKey
 * for RSA (imgtool's choice). Computed here with OpenSSL from the shipped
 * PEM, and compared with the key ring's hash and with every image that key
 * signed. */
static void test_keyhashes(json_t *manifest)
{
	for (size_t k = 0; k < ARRAY_SIZE(key_files); k++) {
		char *path = xasprintf(IMG_DIR "%s", key_files[k]);
		FILE *f = fopen(path, "r");
		EVP_PKEY *key = f ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
		struct mcuboot_keyring *kr = mcuboot_keyring_new();
		uint8_t want[32], got[32], *der = NULL;
		char want_hex[65], got_hex[65], what[160];
		const char *name;
		json_t *m;
		int n;

		if (f)
			fclose(f);
		if (!ok(key != NULL, "%s: a public key", key_files[k])) {
			free(path);
			mcuboot_keyring_free(kr);
			continue;
		}
		n = EVP_PKEY_is_a(key, "RSA") ? i2d_PublicKey(key, &der) : i2d_PUBKEY(key, &der);
		ok(n > 0, "%s: DER", key_files[k]);
		EVP_Digest(der, (size_t)n, want, NULL, EVP_sha256(), NULL);
		hex_encode(want, sizeof(want), want_hex);
		ok(mcuboot_keyring_add_pem_file(kr, path) == 0, "%s: added", key_files[k]);
		mcuboot_keyring_keyhash(kr, 0, got);
		hex_encode(got, sizeof(got), got_hex);
		snprintf(what, sizeof(what), "%s: key ring's key hash", key_files[k]);
		is_str(got_hex, want_hex, what);
		json_object_foreach(manifest, name, m) {
			const char *by = json_string_value(json_object_get(m, "signed_with"));

			if (!by || strcmp(by, key_sig[k]) != 0)
				continue;
			snprintf(what, sizeof(what), "%s: KEYHASH TLV is the hash of %s", name,
				 key_files[k]);
			is_str(json_string_value(json_object_get(m, "keyhash")), want_hex, what);
		}
		OPENSSL_free(der);
		EVP_PKEY_free(key);
		mcuboot_keyring_free(kr);
		free(path);
	}
}

/* The imgtool-signed Ed25519 image against the shipped pub-ed25519.pem:
 * it verifies; a flipped signature or payload byte, or a key hash naming
 * another key, does not. */
static void test_ed25519(void)
{
	size_t len, idx = 9;
	uint8_t *b = read_image("app-2.0.0-ed25519.bin", &len);
	struct mcuboot_keyring *kr = mcuboot_keyring_new();
	struct mcuboot_image img, other;
	enum mcuboot_status st;

	is_int(mcuboot_keyring_add_pem_file(kr, IMG_DIR "pub-ed25519.pem"), 0, "Ed25519 key");
	if (!is_int(mcuboot_image_parse(b, len, &img), 0, "Ed25519 image parses")) {
		mcuboot_keyring_free(kr);
		free(b);
		return;
	}
	is_int(img.sig_type, MCUBOOT_TLV_ED25519, "signature type ED25519");
	is_int(img.sig_len, 64, "64-byte signature");
	ok(mcuboot_image_verify(&img, b, len, kr, &idx, &st) == 0 && st == MCUBOOT_STATUS_OK &&
	   idx == 0, "Ed25519 image verifies with pub-ed25519.pem");
	b[img.sig_off + 5] ^= 0x10;
	ok(mcuboot_image_verify(&img, b, len, kr, NULL, &st) == -EKEYREJECTED &&
	   st == MCUBOOT_STATUS_BAD_SIGNATURE, "Ed25519 signature flipped: bad signature");
	b[img.sig_off + 5] ^= 0x10;
	other = img;
	other.keyhash[31] ^= 1;
	ok(mcuboot_image_verify(&other, b, len, kr, NULL, &st) == -ENOKEY &&
	   st == MCUBOOT_STATUS_NO_KEY, "Ed25519 key hash of another key: no key");
	b[img.hdr_size + 7] ^= 1;
	ok(mcuboot_image_parse_status(b, len, &other, &st) == -EBADMSG &&
	   st == MCUBOOT_STATUS_HASH_MISMATCH, "Ed25519 image payload flipped: hash mismatch");
	mcuboot_keyring_free(kr);
	free(b);
}

/* ---- images built and signed here ---- */

static size_t put_tlv(uint8_t *p, uint16_t type, const uint8_t *v, size_t n)
{
	put_le16(p, type);
	put_le16(p + 2, (uint16_t)n);
	memcpy(p + 4, v, n);
	return 4 + n;
}

static size_t sign_hash(EVP_PKEY *key, uint16_t type, const uint8_t *hash, uint8_t *sig)
{
	size_t n = 512;

	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);

	EVP_PKEY_sign_init(ctx);
	EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256());
	if (type != MCUBOOT_TLV_ECDSA_P256) {
		EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING);
		EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256());
		EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32);
	}
	EVP_PKEY_sign(ctx, sig, &n, hash, 32);
	EVP_PKEY_CTX_free(ctx);
	return n;
}

/* Header + 1000-byte payload [+ protected SEC_CNT TLV] + SHA256, KEYHASH,
 * signature. Returns a new buffer of *len bytes. */
static uint8_t *build_image(EVP_PKEY *key, uint16_t type, bool prot,
			    const uint8_t keyhash[32], size_t *len)
{
	uint8_t *b = xzalloc(4096), hash[32], sig[512];
	size_t off = 0x200 + 1000, start, n;
	uint8_t cnt[4] = { 7, 0, 0, 0 };

	put_le32(b, MCUBOOT_IMAGE_MAGIC);
	put_le16(b + 8, 0x200);
	put_le16(b + 10, prot ? 4 + 8 : 0);
	put_le32(b + 12, 1000);
	b[20] = 4, b[21] = 5, put_le16(b + 22, 6), put_le32(b + 24, 7);
	for (size_t i = 0x200; i < off; i++)
		b[i] = (uint8_t)(i * 31);
	if (prot) {
		put_le16(b + off, MCUBOOT_TLV_PROT_INFO_MAGIC);
		put_le16(b + off + 2, 12);
		off += 4 + put_tlv(b + off + 4, MCUBOOT_TLV_SEC_CNT, cnt, 4);
	}
	EVP_Digest(b, off, hash, NULL, EVP_sha256(), NULL);
	start = off;
	off += 4;
	off += put_tlv(b + off, MCUBOOT_TLV_SHA256, hash, 32);
	off += put_tlv(b + off, MCUBOOT_TLV_KEYHASH, keyhash, 32);
	n = sign_hash(key, type, hash, sig);
	off += put_tlv(b + off, type, sig, n);
	put_le16(b + start, MCUBOOT_TLV_INFO_MAGIC);
	put_le16(b + start + 2, (uint16_t)(off - start));
	*len = off;
	return b;
}

static struct mcuboot_keyring *ring_of(EVP_PKEY *key)
{
	struct mcuboot_keyring *kr = mcuboot_keyring_new();
	BIO *bio = BIO_new(BIO_s_mem());
	char *pem;
	long n;

	PEM_write_bio_PUBKEY(bio, key);
	n = BIO_get_mem_data(bio, &pem);
	is_int(mcuboot_keyring_add_pem(kr, pem, (size_t)n), 0, "add generated key");
	BIO_free(bio);
	return kr;
}

static void test_generated(const char *alg, const char *param, uint16_t type, bool prot)
{
	EVP_PKEY *key = !param ? EVP_PKEY_Q_keygen(NULL, NULL, alg)
		      : strcmp(alg, "RSA") == 0
		      ? EVP_PKEY_Q_keygen(NULL, NULL, alg, (size_t)atoi(param))
		      : EVP_PKEY_Q_keygen(NULL, NULL, alg, param);
	struct mcuboot_keyring *kr = ring_of(key);
	struct mcuboot_image img;
	enum mcuboot_status st;
	uint8_t kh[32], *b;
	size_t len, idx = 9;
	char v[MCUBOOT_VERSION_STR_LEN];

	mcuboot_keyring_keyhash(kr, 0, kh);
	b = build_image(key, type, prot, kh, &len);
	is_int(mcuboot_image_parse(b, len, &img), 0, mcuboot_tlv_name(type));
	mcuboot_version_str(&img.version, v, sizeof(v));
	is_str(v, "4.5.6+7", "version");
	is_int(img.ntlvs, prot ? 4 : 3, "TLV count");
	is_int(mcuboot_image_verify(&img, b, len, kr, &idx, &st), 0, "verifies");
	is_int(idx, 0, "key index");
	b[img.sig_off + 5] ^= 0x10;
	ok(mcuboot_image_verify(&img, b, len, kr, NULL, &st) == -EKEYREJECTED &&
	   st == MCUBOOT_STATUS_BAD_SIGNATURE, "flipped signature: bad signature");
	b[img.sig_off + 5] ^= 0x10;
	if (prot) {
		b[img.tlvs[0].off] ^= 1; /* protected TLVs are hashed */
		ok(mcuboot_image_parse_status(b, len, &img, &st) == -EBADMSG &&
		   st == MCUBOOT_STATUS_HASH_MISMATCH, "protected TLV is covered by the hash");
	}
	free(b);
	mcuboot_keyring_free(kr);
	EVP_PKEY_free(key);
}

static void expect(const uint8_t *b, size_t len, enum mcuboot_status want, const char *name)
{
	struct mcuboot_image img;
	enum mcuboot_status st = MCUBOOT_STATUS_OK;
	int r = mcuboot_image_parse_status(b, len, &img, &st);

	ok(r == -EBADMSG && st == want, "%s: %s (got %d, %s)", name, mcuboot_status_str(want),
	   r, mcuboot_status_str(st));
}

static void test_damage(void)
{
	size_t len;
	uint8_t *orig = read_image("app-1.2.3+4-ecdsa-p256.bin", &len);
	uint8_t *b = xmemdup(orig, len);
	struct mcuboot_image img;
	const size_t cuts[] = { 0, 3, 20, 31, 0x200, 0x200 + 102400 - 1, 0x200 + 102400 + 2,
				0x200 + 102400 + 40, len - 1 };

	mcuboot_image_parse(orig, len, &img);
	b[0x300] ^= 1;
	expect(b, len, MCUBOOT_STATUS_HASH_MISMATCH, "payload byte flipped");
	b[0x300] ^= 1;
	b[4] ^= 1; /* load_addr is hashed too */
	expect(b, len, MCUBOOT_STATUS_HASH_MISMATCH, "header byte flipped");
	b[4] ^= 1;
	for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
		char name[64];

		snprintf(name, sizeof(name), "truncated at %zu", cuts[i]);
		expect(b, cuts[i], MCUBOOT_STATUS_TRUNCATED, name);
	}
	b[0] ^= 0xff;
	expect(b, len, MCUBOOT_STATUS_BAD_MAGIC, "wrong magic");
	expect(b, 3 + 1, MCUBOOT_STATUS_BAD_MAGIC, "wrong magic, short");
	b[0] ^= 0xff;
	put_le16(b + 8, 0xffff);
	expect(b, len, MCUBOOT_STATUS_BAD_SIZE, "huge hdr_size");
	put_le16(b + 8, 8);
	expect(b, len, MCUBOOT_STATUS_BAD_SIZE, "hdr_size below header");
	put_le16(b + 8, 0x200);
	put_le32(b + 12, 0xffffffff);
	expect(b, len, MCUBOOT_STATUS_BAD_SIZE, "huge img_size");
	put_le32(b + 12, 102400);
	put_le16(b + 10, 16); /* claims a protected area that is not there */
	expect(b, len, MCUBOOT_STATUS_BAD_TLV, "missing protected area");
	put_le16(b + 10, 0);
	b[img.total_size - (len - 0x200 - 102400)] ^= 1; /* TLV info magic */
	expect(b, len, MCUBOOT_STATUS_BAD_TLV, "bad TLV info magic");
	memcpy(b, orig, len);
	put_le16(b + 0x200 + 102400 + 6, 0x2000); /* first TLV length overruns */
	expect(b, len, MCUBOOT_STATUS_BAD_TLV, "TLV overrun");
	memcpy(b, orig, len);
	for (size_t i = 0; i < img.ntlvs; i++)
		if (img.tlvs[i].type == MCUBOOT_TLV_SHA256)
			b[img.tlvs[i].off - 4] = 0x7f;
	expect(b, len, MCUBOOT_STATUS_NO_HASH, "no SHA-256 TLV");
	memcpy(b, orig, len);

	/* Signature-level damage on a structurally fine image. */
	struct mcuboot_keyring *kr = mcuboot_keyring_new();
	enum mcuboot_status st;

	mcuboot_keyring_add_pem_file(kr, IMG_DIR "pub-ecdsa-p256.pem");
	b[img.sig_off + 10] ^= 1;
	ok(mcuboot_image_verify(&img, b, len, kr, NULL, &st) == -EKEYREJECTED &&
	   st == MCUBOOT_STATUS_BAD_SIGNATURE, "ECDSA signature flipped: bad signature");
	b[img.sig_off + 10] ^= 1;
	struct mcuboot_image other = img;

	other.keyhash[0] ^= 1;
	ok(mcuboot_image_verify(&other, b, len, kr, NULL, &st) == -ENOKEY &&
	   st == MCUBOOT_STATUS_NO_KEY, "key hash unknown: no key");
	other = img;
	other.has_keyhash = false; /* without key hash every EC key is tried */
	is_int(mcuboot_image_verify(&other, b, len, kr, NULL, NULL), 0, "no key hash: tries keys");
	other.sig_type = MCUBOOT_TLV_ECDSA224;
	ok(mcuboot_image_verify(&other, b, len, kr, NULL, &st) == -EOPNOTSUPP &&
	   st == MCUBOOT_STATUS_UNSUPPORTED_SIG, "ECDSA-224: unsupported");
	is_int(mcuboot_image_verify(&img, b, len, NULL, NULL, NULL), -ENOKEY, "no key ring");

	/* Old imgtool zero-padded ECDSA signatures: the signature TLV is last
	 * in this image, so grow it by one zero byte. */
	uint8_t *p = xzalloc(len + 1);
	struct mcuboot_image padded;
	size_t info = 0x200 + 102400;

	memcpy(p, orig, len);
	put_le16(p + img.sig_off - 2, (uint16_t)(img.sig_len + 1));
	put_le16(p + info + 2, (uint16_t)(get_le16(p + info + 2) + 1));
	is_int(mcuboot_image_parse(p, len + 1, &padded), 0, "padded ECDSA signature parses");
	is_int(mcuboot_image_verify(&padded, p, len + 1, kr, NULL, NULL), 0,
	       "padded ECDSA signature verifies");
	free(p);
	is_int(mcuboot_keyring_add_pem(kr, "junk", 4), -EBADMSG, "bad PEM");
	is_int(mcuboot_keyring_add_pem_file(kr, "/nonexistent.pem"), -ENOENT, "missing PEM file");
	is_int(mcuboot_keyring_count(kr), 1, "key count");
	mcuboot_keyring_free(kr);
	free(b);
	free(orig);
}

int main(void)
{
	json_error_t jerr;
	json_t *manifest = json_load_file(IMG_DIR "manifest.json", 0, &jerr);

	if (!manifest) {
		tap_diag("cannot load manifest: %s", jerr.text);
		return 1;
	}
	test_conformance_images(manifest);
	test_keyhashes(manifest);
	test_ed25519();
	test_generated("EC", "P-256", MCUBOOT_TLV_ECDSA_P256, true);
	test_generated("RSA", "3072", MCUBOOT_TLV_RSA3072_PSS, false);
	test_generated("RSA", "2048", MCUBOOT_TLV_RSA2048_PSS, true);
	test_damage();
	is_str(mcuboot_tlv_name(0x99) ?: "(null)", "(null)", "unknown TLV name");
	ok(mcuboot_keyring_free(NULL) == NULL, "free(NULL)");
	json_decref(manifest);
	return tap_done();
}
