/* SPDX-License-Identifier: MIT */
/*
 * MCUboot image parser and signature verifier.
 *
 * Image layout (little-endian): a header (magic 0x96f3b83d, load address,
 * hdr_size, protect_tlv_size, img_size, flags, version), padded to hdr_size;
 * img_size bytes of payload; an optional protected TLV area (info magic
 * 0x6908, covered by the hash); the TLV area (info magic 0x6907). The SHA-256
 * TLV covers header + payload + protected TLV area; it is the hash img_mgmt
 * reports for a slot. Signatures sign that 32-byte digest.
 *
 * This module owns the parse (structure + hash check) and a key ring of
 * public keys matched to images by the KEYHASH TLV. Pure code over caller
 * buffers: no I/O except reading PEM files for the key ring, no logging.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCUBOOT_IMAGE_MAGIC 0x96f3b83du
#define MCUBOOT_TLV_INFO_MAGIC 0x6907u
#define MCUBOOT_TLV_PROT_INFO_MAGIC 0x6908u
#define MCUBOOT_HEADER_LEN 32
#define MCUBOOT_HASH_LEN 32
#define MCUBOOT_MAX_TLVS 32
/* Sanity limits: larger than any flash slot or vector-table offset. */
#define MCUBOOT_MAX_IMG_SIZE (32u << 20)
#define MCUBOOT_MAX_HDR_SIZE 0x4000u

enum mcuboot_tlv_type {
	MCUBOOT_TLV_KEYHASH = 0x01,
	MCUBOOT_TLV_PUBKEY = 0x02,
	MCUBOOT_TLV_SHA256 = 0x10,
	MCUBOOT_TLV_SHA384 = 0x11,
	MCUBOOT_TLV_SHA512 = 0x12,
	MCUBOOT_TLV_RSA2048_PSS = 0x20,
	MCUBOOT_TLV_ECDSA224 = 0x21,
	MCUBOOT_TLV_ECDSA_P256 = 0x22,
	MCUBOOT_TLV_RSA3072_PSS = 0x23,
	MCUBOOT_TLV_ED25519 = 0x24,
	MCUBOOT_TLV_SIG_PURE = 0x25,
	MCUBOOT_TLV_ENC_RSA2048 = 0x30,
	MCUBOOT_TLV_ENC_KW = 0x31,
	MCUBOOT_TLV_ENC_EC256 = 0x32,
	MCUBOOT_TLV_ENC_X25519 = 0x33,
	MCUBOOT_TLV_DEPENDENCY = 0x40,
	MCUBOOT_TLV_SEC_CNT = 0x50,
	MCUBOOT_TLV_BOOT_RECORD = 0x60,
};

/* Why a parse or a verification failed; each maps to one errno. */
enum mcuboot_status {
	MCUBOOT_STATUS_OK = 0,
	MCUBOOT_STATUS_TRUNCATED,       /* -EBADMSG: file shorter than it says */
	MCUBOOT_STATUS_BAD_MAGIC,       /* -EBADMSG: not an MCUboot image */
	MCUBOOT_STATUS_BAD_SIZE,        /* -EBADMSG: hdr_size/img_size absurd */
	MCUBOOT_STATUS_BAD_TLV,         /* -EBADMSG: TLV info magic or entry overrun */
	MCUBOOT_STATUS_NO_HASH,         /* -EBADMSG: no 32-byte SHA-256 TLV */
	MCUBOOT_STATUS_HASH_MISMATCH,   /* -EBADMSG: payload does not match TLV */
	MCUBOOT_STATUS_UNSIGNED,        /* -ENODATA: verify asked, no signature */
	MCUBOOT_STATUS_NO_KEY,          /* -ENOKEY: no configured key matches */
	MCUBOOT_STATUS_BAD_SIGNATURE,   /* -EKEYREJECTED */
	MCUBOOT_STATUS_UNSUPPORTED_SIG, /* -EOPNOTSUPP: e.g. ECDSA-224, pure sig */
};

const char *mcuboot_status_str(enum mcuboot_status st);
/* Upper-case TLV name as imgtool spells it ("SHA256", "ECDSA_P256"), or
 * NULL for an unknown type. */
const char *mcuboot_tlv_name(uint16_t type);

struct mcuboot_version {
	uint8_t major, minor;
	uint16_t revision;
	uint32_t build;
};

struct mcuboot_tlv {
	uint16_t type;
	uint16_t len;
	size_t off;      /* of the value, in the parsed buffer */
	bool protected_; /* in the protected (hashed) area */
};

struct mcuboot_image {
	uint32_t load_addr;
	uint16_t hdr_size;
	uint16_t protect_tlv_size;
	uint32_t img_size;
	uint32_t flags;
	struct mcuboot_version version;
	size_t total_size;              /* header + payload + TLV areas */
	uint8_t hash[MCUBOOT_HASH_LEN]; /* SHA-256 TLV (checked) */
	bool has_keyhash;
	uint8_t keyhash[MCUBOOT_HASH_LEN];
	uint16_t sig_type;              /* first signature TLV; 0 = unsigned */
	size_t sig_off, sig_len;
	size_t ntlvs;
	struct mcuboot_tlv tlvs[MCUBOOT_MAX_TLVS]; /* in file order */
};

/* Parses and checks the hash. Returns 0, or -EBADMSG (*ret untouched). */
int mcuboot_image_parse(const uint8_t *buf, size_t len, struct mcuboot_image *ret);
/* Same, and tells why in *ret_status (may be NULL; written on failure too). */
int mcuboot_image_parse_status(const uint8_t *buf, size_t len,
			       struct mcuboot_image *ret,
			       enum mcuboot_status *ret_status);

/* "1.2.3+4" into out (at least MCUBOOT_VERSION_STR_LEN bytes): the one
 * canonical form of a version in every typed REST answer (build 0 is
 * written too: "1.2.3+0"). */
#define MCUBOOT_VERSION_STR_LEN 32
void mcuboot_version_str(const struct mcuboot_version *v, char *out, size_t size);
/* Zephyr img_mgmt's text: "1.2.3.4", or "1.2.3" when the build is 0. */
void mcuboot_version_text(const struct mcuboot_version *v, char *out, size_t size);
/* Parses a version in any form people and watches write it: "1.2.3",
 * "1.2.3+4" (MCUboot, imgtool) or "1.2.3.4" (Zephyr img_mgmt); decimal,
 * each part within its field's range (u8.u8.u16, build u32). len is the
 * text's length (no terminator needed). Returns 0, or -EBADMSG (*ret
 * untouched). */
int mcuboot_version_parse(const char *s, size_t len, struct mcuboot_version *ret);
bool mcuboot_version_equal(const struct mcuboot_version *a,
			   const struct mcuboot_version *b);
/* Canonical form of a version text into out (MCUBOOT_VERSION_STR_LEN):
 * 0, or -EBADMSG when s does not parse (out then untouched). */
int mcuboot_version_canonical(const char *s, char *out, size_t size);
/* Lower-case hex of the SHA-256 TLV into out (65 bytes). */
void mcuboot_hash_hex(const struct mcuboot_image *img, char out[2 * MCUBOOT_HASH_LEN + 1]);

/* A set of public keys (RSA-2048/3072, EC P-256, Ed25519) with their key
 * hashes, as imgtool computes them. */
struct mcuboot_keyring;

struct mcuboot_keyring *mcuboot_keyring_new(void);
struct mcuboot_keyring *mcuboot_keyring_free(struct mcuboot_keyring *kr);
/* Adds the public key in a PEM file. Returns its index, -errno when the file
 * cannot be read, -EBADMSG when it holds no public key. */
int mcuboot_keyring_add_pem_file(struct mcuboot_keyring *kr, const char *path);
/* Adds PEM text (borrowed). Index or -EBADMSG. */
int mcuboot_keyring_add_pem(struct mcuboot_keyring *kr, const char *pem, size_t len);
size_t mcuboot_keyring_count(const struct mcuboot_keyring *kr);
/* The key hash an image carries for key i (SHA-256 of the DER that imgtool
 * embeds: PKCS#1 RSAPublicKey for RSA, SubjectPublicKeyInfo otherwise). */
int mcuboot_keyring_keyhash(const struct mcuboot_keyring *kr, size_t i,
			    uint8_t out[MCUBOOT_HASH_LEN]);

/*
 * Verifies the signature of a parsed image (buf/len: the buffer it was
 * parsed from) against the key ring. The KEYHASH TLV, when present, picks
 * the key; otherwise every key of the right type is tried. Returns 0 and the
 * key's index in *ret_key (may be NULL), or -ENODATA (unsigned), -ENOKEY,
 * -EKEYREJECTED, -EOPNOTSUPP, -EBADMSG; *ret_status (may be NULL) says why.
 */
int mcuboot_image_verify(const struct mcuboot_image *img, const uint8_t *buf,
			 size_t len, const struct mcuboot_keyring *kr,
			 size_t *ret_key, enum mcuboot_status *ret_status);
