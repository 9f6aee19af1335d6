/* SPDX-License-Identifier: MIT */
/* Leveled logging to stderr, journald-friendly. */
#include "gateway/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

/* The one process-wide logging state: the level is set once from the
 * config and the journal check is made once. */
static enum gw_log_level max_level = GW_LOG_INFO;
static int journal = -1;

static const char *const level_names[] = {
	[GW_LOG_ERR] = "err",       [GW_LOG_WARNING] = "warning",
	[GW_LOG_NOTICE] = "notice", [GW_LOG_INFO] = "info",
	[GW_LOG_DEBUG] = "debug",
};

int gw_log_level_parse(const char *s)
{
	if (!s)
		return -EINVAL;
	for (int l = GW_LOG_ERR; l <= GW_LOG_DEBUG; l++)
		if (!strcasecmp(s, level_names[l]))
			return l;
	if (!strcasecmp(s, "error"))
		return GW_LOG_ERR;
	if (!strcasecmp(s, "warn"))
		return GW_LOG_WARNING;
	if (s[0] >= '3' && s[0] <= '7' && s[1] == '\0')
		return s[0] - '0';
	return -EINVAL;
}

const char *gw_log_level_str(enum gw_log_level level)
{
	if (level >= GW_LOG_ERR && level <= GW_LOG_DEBUG)
		return level_names[level];
	return "?";
}

void gw_log_set_level(enum gw_log_level level)
{
	max_level = level;
}

enum gw_log_level gw_log_get_level(void)
{
	return max_level;
}

bool gw_log_enabled(enum gw_log_level level)
{
	return level <= max_level;
}

void gw_log(enum gw_log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!gw_log_enabled(level))
		return;
	if (journal < 0)
		journal = getenv("JOURNAL_STREAM") != NULL;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line so concurrent writers do not interleave. */
	if (journal)
		fprintf(stderr, "<%d>%s\n", (int)level, line);
	else
		fprintf(stderr, "smpgwd[%s]: %s\n", gw_log_level_str(level), line);
}
