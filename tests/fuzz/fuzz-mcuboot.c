/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the MCUboot image parser and verifier. Keys: the
 * conformance RSA-2048 and ECDSA P-256 public keys, embedded so the target
 * needs no files.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/mcuboot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char pem_ec[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfZNXHtpjPhd9PkQl29Io1qMi8WE2\n"
	"FveJFb6svOhq4FWcZ+NJHS/daZ+hPTkTEak7JNPnQXNmj1u3cvz10vJZsw==\n"
	"-----END PUBLIC KEY-----\n";

static const char pem_rsa[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA4hR894lXMMfamO1W6i8G\n"
	"nLVbR7eShKk5DgLTBg70sYJP1CncjPIP4EKA9bKa0tLyhOQsgY79vg3sfcsPySrd\n"
	"cY9r5MAXreva3sRrcaUWAkSZKiBX6EYwjoGLlzZKw7Gwh0FWrbdkAv9zOxfHryvw\n"
	"5M21A6TLxRyuElEULmSQWTtGdl2rVN7xy2+Wy+bJ+MsRma0AIcRtmSufxmfZ5yMz\n"
	"313NHZ83z4uQcV56nPOWyeOrQzQpsodQ0+bGPNGwg6K7GJ6e0VHqa6jfc1qzm8hB\n"
	"UtNk1D9kQ0gd7fL0AT2dc46gR+utd0oKm45r34iaP/z7/weQKysabkIvaH5Wbjea\n"
	"7wIDAQAB\n"
	"-----END PUBLIC KEY-----\n";

static struct mcuboot_keyring *keyring(void)
{
	static struct mcuboot_keyring *kr;

	if (!kr) {
		kr = mcuboot_keyring_new();
		if (mcuboot_keyring_add_pem(kr, pem_ec, sizeof(pem_ec) - 1) < 0 ||
		    mcuboot_keyring_add_pem(kr, pem_rsa, sizeof(pem_rsa) - 1) < 0)
			abort();
	}
	return kr;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mcuboot_image img;
	enum mcuboot_status st;
	char v[MCUBOOT_VERSION_STR_LEN], hex[65];
	size_t key;

	if (mcuboot_image_parse_status(data, size, &img, &st) != 0) {
		if (st == MCUBOOT_STATUS_OK)
			abort();
		return 0;
	}
	if (img.total_size > size || img.ntlvs > MCUBOOT_MAX_TLVS)
		abort();
	for (size_t i = 0; i < img.ntlvs; i++)
		if (img.tlvs[i].off + img.tlvs[i].len > img.total_size)
			abort();
	mcuboot_version_str(&img.version, v, sizeof(v));
	mcuboot_hash_hex(&img, hex);
	mcuboot_image_verify(&img, data, size, keyring(), &key, &st);
	return 0;
}
