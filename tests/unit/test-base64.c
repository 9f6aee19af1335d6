/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "codec/base64.h"
#include "tap.h"

int main(void)
{
	static const struct { const char *raw, *enc; } v[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	char enc[32];
	uint8_t dec[32];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n = base64_encode((const uint8_t *)v[i].raw, strlen(v[i].raw), enc);

		is_str(enc, v[i].enc, "RFC 4648 encode vector");
		is_int(n, strlen(v[i].enc), "encoded length");
		is_int(base64_decode(v[i].enc, n, dec, sizeof(dec)),
		       (long long)strlen(v[i].raw), "decode length");
		ok(memcmp(dec, v[i].raw, strlen(v[i].raw)) == 0, "decode bytes");
	}
	is_int(base64_decode("Zm9", 3, dec, sizeof(dec)), -EBADMSG, "bad length");
	is_int(base64_decode("Zm9*", 4, dec, sizeof(dec)), -EBADMSG, "bad char");
	is_int(base64_decode("Z===", 4, dec, sizeof(dec)), -EBADMSG, "too much padding");
	is_int(base64_decode("Zg==Zm9v", 8, dec, sizeof(dec)), -EBADMSG, "padding mid-string");
	is_int(base64_decode("Zm9vYmFy", 8, dec, 5), -ENOBUFS, "output too small");
	return tap_done();
}
