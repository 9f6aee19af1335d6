/* SPDX-License-Identifier: MIT */
/*
 * How the smpgw client writes things for people: natural order of names,
 * ages, sizes and durations (see format.h). Pure functions, unit-tested.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "cli/format.h"

int cli_natcmp(const char *a, const char *b)
{
	while (*a && *b) {
		if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
			const char *ea = a, *eb = b;

			while (*a == '0')
				a++;
			while (*b == '0')
				b++;
			for (ea = a; isdigit((unsigned char)*ea); ea++)
				;
			for (eb = b; isdigit((unsigned char)*eb); eb++)
				;
			if (ea - a != eb - b)
				return ea - a < eb - b ? -1 : 1;
			for (; a < ea; a++, b++)
				if (*a != *b)
					return *a < *b ? -1 : 1;
			continue;
		}
		if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
			return tolower((unsigned char)*a) < tolower((unsigned char)*b) ? -1 : 1;
		a++;
		b++;
	}
	return *a ? 1 : *b ? -1 : 0;
}

void cli_age(long long ms, char *buf, size_t size)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	cli_age_at(ms, (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, buf, size);
}

void cli_age_at(long long ms, long long now, char *buf, size_t size)
{
	long long s;

	if (ms <= 0) {
		snprintf(buf, size, "-");
		return;
	}
	s = now > ms ? (now - ms) / 1000 : 0;
	if (s < 120)
		snprintf(buf, size, "%llds ago", s);
	else if (s < 7200)
		snprintf(buf, size, "%lldm ago", s / 60);
	else if (s < 172800)
		snprintf(buf, size, "%lldh ago", s / 3600);
	else
		snprintf(buf, size, "%lldd ago", s / 86400);
}

void cli_size(double b, char *buf, size_t size)
{
	if (b < 1024)
		snprintf(buf, size, "%.0f B", b);
	else if (b < 1024 * 1024)
		snprintf(buf, size, "%.1f KiB", b / 1024);
	else
		snprintf(buf, size, "%.1f MiB", b / (1024 * 1024));
}

void cli_duration(double s, char *buf, size_t size)
{
	long t = s < 0 ? 0 : lround(s);

	if (t < 60)
		snprintf(buf, size, "%lds", t);
	else if (t < 3600)
		snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
	else
		snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
}
