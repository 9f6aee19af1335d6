/* SPDX-License-Identifier: MIT */
/*
 * A tiny TAP producer for unit tests. Each check prints one "ok"/"not ok"
 * line; tap_done() prints the plan and returns the exit status.
 *
 *   ok(cond, "what %d", x);   is_int(got, want, "name");
 *   is_str(got, want, "name"); is_mem(got, want, len, "name");
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

bool tap_ok(bool cond, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
bool tap_is_int(long long got, long long want, const char *file, int line,
		const char *name);
bool tap_is_str(const char *got, const char *want, const char *file, int line,
		const char *name);
bool tap_is_mem(const void *got, const void *want, size_t len,
		const char *file, int line, const char *name);
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int tap_done(void);

/* Reads a whole file (test data); aborts the test on failure. */
uint8_t *tap_read_file(const char *path, size_t *len);
/* Parses a hex string into a new buffer; aborts the test on bad hex. */
uint8_t *tap_unhex(const char *hex, size_t *len);

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, name) \
	tap_is_int((long long)(got), (long long)(want), __FILE__, __LINE__, name)
#define is_str(got, want, name) tap_is_str(got, want, __FILE__, __LINE__, name)
#define is_mem(got, want, len, name) \
	tap_is_mem(got, want, len, __FILE__, __LINE__, name)
