/* SPDX-License-Identifier: MIT */
/* Standard base64 (RFC 4648, with '=' padding). Pure code. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)

/* Writes BASE64_ENCODED_LEN(len) characters plus a NUL to out; returns the
 * number of characters (without the NUL). */
size_t base64_encode(const uint8_t *buf, size_t len, char *out);
/* Decodes len characters (padding required when len % 4 != 0 is an
 * error). Returns bytes written, -EBADMSG on a bad character or length,
 * -ENOBUFS when out_size is too small. */
int base64_decode(const char *in, size_t len, uint8_t *out, size_t out_size);
