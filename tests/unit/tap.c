/* SPDX-License-Identifier: MIT */
#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static int tap_count, tap_failed;

static bool report(bool cond, const char *file, int line, const char *name)
{
	tap_count++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tap_count, name);
	if (!cond) {
		tap_failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
	fflush(stdout);
	return cond;
}

bool tap_ok(bool cond, const char *file, int line, const char *fmt, ...)
{
	char name[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	return report(cond, file, line, name);
}

bool tap_is_int(long long got, long long want, const char *file, int line,
		const char *name)
{
	if (!report(got == want, file, line, name)) {
		printf("#   got:  %lld\n#   want: %lld\n", got, want);
		return false;
	}
	return true;
}

bool tap_is_str(const char *got, const char *want, const char *file, int line,
		const char *name)
{
	bool eq = (got && want) ? strcmp(got, want) == 0 : got == want;

	if (!report(eq, file, line, name)) {
		printf("#   got:  %s\n#   want: %s\n", got ? got : "(null)",
		       want ? want : "(null)");
		return false;
	}
	return true;
}

static void print_hex(const char *label, const void *p, size_t len)
{
	const uint8_t *b = p;

	printf("#   %s", label);
	for (size_t i = 0; i < len && i < 64; i++)
		printf("%02x", b[i]);
	printf("%s\n", len > 64 ? "..." : "");
}

bool tap_is_mem(const void *got, const void *want, size_t len,
		const char *file, int line, const char *name)
{
	bool eq = got && want && memcmp(got, want, len) == 0;

	if (!report(eq, file, line, name)) {
		if (got)
			print_hex("got:  ", got, len);
		if (want)
			print_hex("want: ", want, len);
		return false;
	}
	return true;
}

void tap_diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

int tap_done(void)
{
	printf("1..%d\n", tap_count);
	return tap_failed ? 1 : 0;
}

uint8_t *tap_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (!f) {
		printf("Bail out! cannot open %s\n", path);
		exit(1);
	}
	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			buf = xrealloc(buf, cap + 1);
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

uint8_t *tap_unhex(const char *hex, size_t *len)
{
	size_t n = strlen(hex) / 2;
	uint8_t *buf = xmalloc(n + 1);
	int r = hex_decode(hex, buf, n + 1);

	if (r < 0) {
		printf("Bail out! bad hex: %.40s\n", hex);
		exit(1);
	}
	*len = (size_t)r;
	return buf;
}
