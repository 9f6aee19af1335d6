/* SPDX-License-Identifier: MIT */
/*
 * smpgw image info: inspects an MCUboot image offline, with the same parser
 * and verifier the gateway uses before it sends an image to a watch.
 *
 * Exit status: 0 ok, 1 bad image or unreadable file, 2 usage error,
 * 3 signature not verified although keys were given.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "codec/mcuboot.h"
#include "util/util.h"

#define EXIT_BAD_IMAGE EXIT_FAILED
#define MAX_FILE_SIZE (64u << 20)

struct info_opts {
	const char *file;
	const char **keys;
	size_t nkeys;
	bool json;
};

/* Signature outcome, as printed. */
struct sig_result {
	const char *status; /* verified, unsigned, not_checked, bad, no_key, unsupported */
	const char *key;    /* path of the verifying key */
	const char *reason;
	int exit_code;
};

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	uint8_t *buf;
	size_t n;

	if (!f)
		return -errno;
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) ||
	    (unsigned long long)st.st_size > MAX_FILE_SIZE) {
		int err = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;

		fclose(f);
		return err;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	n = fread(buf, 1, (size_t)st.st_size, f);
	if (ferror(f)) {
		fclose(f);
		free(buf);
		return -EIO;
	}
	fclose(f);
	*ret = buf;
	*ret_len = n;
	return 0;
}

static struct sig_result check_signature(const struct mcuboot_image *img, const uint8_t *buf,
					 size_t len, const struct info_opts *o,
					 const struct mcuboot_keyring *kr)
{
	struct sig_result r = { .status = "verified" };
	enum mcuboot_status st;
	size_t idx = 0;

	if (!img->sig_type) {
		r.status = "unsigned";
		r.exit_code = o->nkeys ? EXIT_UNVERIFIED : 0;
		return r;
	}
	if (!o->nkeys) {
		r.status = "not_checked";
		r.reason = "no key given";
		return r;
	}
	if (mcuboot_image_verify(img, buf, len, kr, &idx, &st) == 0) {
		r.key = o->keys[idx];
		return r;
	}
	r.reason = mcuboot_status_str(st);
	r.exit_code = EXIT_UNVERIFIED;
	r.status = st == MCUBOOT_STATUS_NO_KEY ? "no_key" :
		   st == MCUBOOT_STATUS_UNSUPPORTED_SIG ? "unsupported" : "bad";
	return r;
}

static json_t *tlvs_json(const struct mcuboot_image *img)
{
	json_t *a = json_array();

	for (size_t i = 0; i < img->ntlvs; i++) {
		const char *name = mcuboot_tlv_name(img->tlvs[i].type);

		json_array_append_new(a, json_pack("{s:i, s:s?, s:i, s:b}",
			"type", img->tlvs[i].type, "name", name,
			"len", img->tlvs[i].len, "protected", img->tlvs[i].protected_));
	}
	return a;
}

static void print_json(const struct info_opts *o, const struct mcuboot_image *img,
		       const struct sig_result *sig)
{
	char version[MCUBOOT_VERSION_STR_LEN], hash[65], keyhash[65];
	json_t *j;

	mcuboot_version_str(&img->version, version, sizeof(version));
	mcuboot_hash_hex(img, hash);
	hex_encode(img->keyhash, sizeof(img->keyhash), keyhash);
	j = json_pack("{s:s, s:b, s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:s, s:o, s:s?, s:{s:s?, s:s, s:s?, s:s?}}",
		"file", o->file, "valid", 1, "version", version,
		"hdr_size", img->hdr_size, "protect_tlv_size", img->protect_tlv_size,
		"img_size", (json_int_t)img->img_size, "total_size", (json_int_t)img->total_size,
		"load_addr", (json_int_t)img->load_addr, "flags", (json_int_t)img->flags,
		"hash", hash, "tlvs", tlvs_json(img),
		"keyhash", img->has_keyhash ? keyhash : NULL,
		"signature", "type", img->sig_type ? mcuboot_tlv_name(img->sig_type) : NULL,
		"status", sig->status, "key", sig->key, "reason", sig->reason);
	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
	json_decref(j);
}

static void print_json_error(const char *file, const char *error)
{
	json_t *j = json_pack("{s:s, s:b, s:s}", "file", file, "valid", 0, "error", error);

	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
	json_decref(j);
}

static void print_text(const struct info_opts *o, const struct mcuboot_image *img,
		       const struct sig_result *sig)
{
	char version[MCUBOOT_VERSION_STR_LEN], hex[65];

	mcuboot_version_str(&img->version, version, sizeof(version));
	mcuboot_hash_hex(img, hex);
	printf("file:        %s\nversion:     %s\n", o->file, version);
	printf("header size: %u\nimage size:  %u\ntotal size:  %zu\n",
	       img->hdr_size, img->img_size, img->total_size);
	if (img->protect_tlv_size)
		printf("protected:   %u bytes of TLVs\n", img->protect_tlv_size);
	printf("load addr:   0x%08x\nflags:       0x%08x\n", img->load_addr, img->flags);
	printf("hash:        %s\n", hex);
	if (img->has_keyhash) {
		hex_encode(img->keyhash, sizeof(img->keyhash), hex);
		printf("key hash:    %s\n", hex);
	}
	printf("TLVs:       ");
	for (size_t i = 0; i < img->ntlvs; i++) {
		const char *name = mcuboot_tlv_name(img->tlvs[i].type);

		if (name)
			printf(" %s(%u)%s", name, img->tlvs[i].len, img->tlvs[i].protected_ ? "*" : "");
		else
			printf(" 0x%02x(%u)", img->tlvs[i].type, img->tlvs[i].len);
	}
	printf("\nsignature:   %s%s%s%s%s\n",
	       img->sig_type ? mcuboot_tlv_name(img->sig_type) : "none",
	       img->sig_type ? ", " : "", img->sig_type ? sig->status : "",
	       sig->key ? " with " : "", sig->key ? sig->key : "");
	if (sig->reason)
		printf("             (%s)\n", sig->reason);
}

static int image_info(const struct info_opts *o)
{
	struct mcuboot_keyring *kr = mcuboot_keyring_new();
	struct mcuboot_image img;
	enum mcuboot_status st;
	struct sig_result sig;
	uint8_t *buf = NULL;
	size_t len = 0;
	int r, code = EXIT_USAGE;

	for (size_t i = 0; i < o->nkeys; i++) {
		r = mcuboot_keyring_add_pem_file(kr, o->keys[i]);
		if (r < 0) {
			fprintf(stderr, "smpgw: %s: %s\n", o->keys[i],
				r == -EBADMSG ? "no supported public key (RSA-2048/3072, "
						"EC P-256, Ed25519) in PEM" : strerror(-r));
			goto out;
		}
	}
	r = read_file(o->file, &buf, &len);
	if (r < 0) {
		fprintf(stderr, "smpgw: %s: %s\n", o->file, strerror(-r));
		code = EXIT_BAD_IMAGE;
		goto out;
	}
	if (mcuboot_image_parse_status(buf, len, &img, &st) < 0) {
		fprintf(stderr, "smpgw: %s: not a valid MCUboot image: %s\n", o->file,
			mcuboot_status_str(st));
		if (o->json)
			print_json_error(o->file, mcuboot_status_str(st));
		code = EXIT_BAD_IMAGE;
		goto out;
	}
	sig = check_signature(&img, buf, len, o, kr);
	if (o->json)
		print_json(o, &img, &sig);
	else
		print_text(o, &img, &sig);
	if (sig.exit_code)
		fprintf(stderr, "smpgw: %s: signature not verified: %s\n", o->file,
			sig.reason ? sig.reason : sig.status);
	code = sig.exit_code;
out:
	free(buf);
	mcuboot_keyring_free(kr);
	return code;
}

int cmd_image_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct info_opts o = { .keys = xnew_array(const char *, (size_t)argc) };
	int c, code;

	optind = 0; /* 0: glibc re-reads the ordering (the global options used "+") */
	while ((c = getopt_long(argc, argv, "k:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'k': o.keys[o.nkeys++] = optarg; break;
		case 'j': o.json = true; break;
		case 'h': fputs(cli_usage_text, stdout); free(o.keys); return 0;
		default: free(o.keys); return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		cli_usage_error("image info takes one FILE");
		free(o.keys);
		return EXIT_USAGE;
	}
	o.file = argv[optind];
	code = image_info(&o);
	free(o.keys);
	return code;
}
