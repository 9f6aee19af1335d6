/* SPDX-License-Identifier: MIT */
#include "codec/base64.h"

#include <errno.h>

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encode(const uint8_t *buf, size_t len, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)buf[i] << 16;
		size_t rem = len - i;

		if (rem > 1)
			v |= (uint32_t)buf[i + 1] << 8;
		if (rem > 2)
			v |= buf[i + 2];
		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = rem > 1 ? alphabet[(v >> 6) & 63] : '=';
		out[o++] = rem > 2 ? alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

static int value_of(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *in, size_t len, uint8_t *out, size_t out_size)
{
	size_t o = 0;

	if (len % 4)
		return -EBADMSG;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;
		uint32_t w;

		for (int k = 0; k < 4; k++) {
			char c = in[i + k];

			if (c == '=' && i + 4 == len && k >= 2) {
				/* "x=" then "y" is invalid; "==" or "=" at the end only */
				if (k == 2 && in[i + 3] != '=')
					return -EBADMSG;
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad)
				return -EBADMSG;
			v[k] = value_of(c);
			if (v[k] < 0)
				return -EBADMSG;
		}
		w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
		    (uint32_t)v[2] << 6 | (uint32_t)v[3];
		if (o + 3 - (size_t)pad > out_size)
			return -ENOBUFS;
		out[o++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out[o++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out[o++] = (uint8_t)w;
	}
	return (int)o;
}
