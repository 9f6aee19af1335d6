/* SPDX-License-Identifier: MIT */
/*
 * Daemon logging: leveled lines on stderr. When stderr is the journal
 * (JOURNAL_STREAM set) each line carries a "<N>" syslog priority prefix so
 * journald keeps the level; otherwise a short level name is printed.
 * Only src/gateway/ and src/http/ log.
 */
#pragma once

#include <stdbool.h>

enum gw_log_level {
	GW_LOG_ERR = 3,
	GW_LOG_WARNING = 4,
	GW_LOG_NOTICE = 5,
	GW_LOG_INFO = 6,
	GW_LOG_DEBUG = 7,
};

/* Parses "err", "warning", "notice", "info", "debug" (or 3..7). Returns the
 * level or -EINVAL. */
int gw_log_level_parse(const char *s);
const char *gw_log_level_str(enum gw_log_level level);
void gw_log_set_level(enum gw_log_level level);
enum gw_log_level gw_log_get_level(void);
bool gw_log_enabled(enum gw_log_level level);

void gw_log(enum gw_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_err(...) gw_log(GW_LOG_ERR, __VA_ARGS__)
#define log_warn(...) gw_log(GW_LOG_WARNING, __VA_ARGS__)
#define log_notice(...) gw_log(GW_LOG_NOTICE, __VA_ARGS__)
#define log_info(...) gw_log(GW_LOG_INFO, __VA_ARGS__)
#define log_debug(...) gw_log(GW_LOG_DEBUG, __VA_ARGS__)
