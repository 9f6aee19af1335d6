/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the UDP link's "host:port" / "[v6]:port" parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "links/udp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char *s;

	if (size > 256)
		return 0;
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	udp_parse_address(s, &ss, &len);
	free(s);
	return 0;
}
