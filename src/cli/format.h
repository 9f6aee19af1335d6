/* SPDX-License-Identifier: MIT */
/*
 * Text formats of the smpgw client's tables and progress lines.
 */
#pragma once

#include <stddef.h>

/* Natural order ("PineTime-2" before "PineTime-10"; letters without case). */
int cli_natcmp(const char *a, const char *b);
/* "3s ago", "5m ago", "2h ago", "4d ago" for a ms epoch time; "-" for 0. */
void cli_age(long long ms_epoch, char *buf, size_t size);
void cli_age_at(long long ms_epoch, long long now_ms, char *buf, size_t size);
/* 12 B, 320.0 KiB, 1.5 MiB */
void cli_size(double bytes, char *buf, size_t size);
/* 12s, 1:05, 2h03m */
void cli_duration(double seconds, char *buf, size_t size);
