/* SPDX-License-Identifier: MIT */
/* libFuzzer target: version texts and GET /devices query parameters must
 * never crash, and a version that parses must survive its canonical form.
 * Input: "key\0value\0key\0value..." */
#include <stdlib.h>
#include <string.h>

#include "codec/mcuboot.h"
#include "http/devfilter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), canon[MCUBOOT_VERSION_STR_LEN], err[256];
	const char *keys[8], *values[8];
	struct mcuboot_version v, w;
	struct devices_filter f;
	size_t n = 0, off = 0;

	memcpy(buf, data, size);
	buf[size] = '\0';
	if (mcuboot_version_parse(buf, size, &v) == 0) {
		mcuboot_version_str(&v, canon, sizeof(canon));
		if (mcuboot_version_parse(canon, strlen(canon), &w) != 0 ||
		    !mcuboot_version_equal(&v, &w))
			abort();
	}
	while (off < size && n < 8) {
		keys[n] = buf + off;
		off += strlen(buf + off) + 1;
		values[n++] = off < size ? buf + off : NULL;
		if (off < size)
			off += strlen(buf + off) + 1;
	}
	(void)devices_filter_parse(keys, values, n, &f, err, sizeof(err));
	free(buf);
	return 0;
}
