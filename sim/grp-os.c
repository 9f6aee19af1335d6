/* SPDX-License-Identifier: MIT */
/*
 * The simulated os_mgmt group (0), as Zephyr 3.4 smp_svr answers it: echo,
 * taskstat, datetime, reset, mcumgr params, info. mpstat (3) and bootloader
 * info (8) are not built into that Zephyr: they answer rc 8 (no handler).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "codec/cbor-util.h"
#include "device-int.h"
#include "util/util.h"

static int os_echo(struct sim_req *req)
{
	char *d = NULL;
	size_t n = 0;
	int r = smp_cbor_get_text_dup(req->body, "d", &d, &n);

	if (r == -EBADMSG)
		return SMP_RC_EINVAL;
	smp_cbor_map_put_textn(req->rsp, "r", d ? d : "", d ? n : 0);
	free(d);
	return 0;
}

/* Threads keyed by priority, a key repeated when priorities repeat, like
 * the recorded Zephyr 3.4 (its taskstat keyed the map that way). */
static int os_taskstat(struct sim_req *req)
{
	static const struct { int prio; unsigned state; } th[] = {
		{ -14, 16 }, { 3, 128 }, { -1, 2 }, { 15, 0 }, { 0, 16 },
	};
	cbor_item_t *tasks = smp_cbor_map_new_indefinite();

	for (size_t i = 0; i < ARRAY_SIZE(th); i++) {
		cbor_item_t *t = smp_cbor_map_new_indefinite();
		char key[16];

		snprintf(key, sizeof(key), "%d", th[i].prio);
		smp_cbor_map_put_int(t, "prio", th[i].prio);
		smp_cbor_map_put_uint(t, "tid", i);
		smp_cbor_map_put_uint(t, "state", th[i].state);
		smp_cbor_map_put_item(tasks, key, t);
	}
	smp_cbor_map_put_item(req->rsp, "tasks", tasks);
	return 0;
}

static int64_t wall_us(const struct sim_device *dev)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec + dev->clock_offset_us;
}

static int os_datetime_get(struct sim_req *req)
{
	int64_t us = wall_us(req->dev);
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	char buf[40];

	gmtime_r(&t, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	smp_cbor_map_put_text(req->rsp, "datetime", buf);
	return 0;
}

/* "YYYY-MM-DDTHH:MM:SS" with optional ".frac" and "Z"/"+hh:mm"/"-hh:mm". */
static int parse_datetime(const char *s, int64_t *ret_us)
{
	struct tm tm = { 0 };
	int y, mo, d, h, mi, sec, n = 0;
	long frac_us = 0, tz_s = 0;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
		return -EINVAL;
	s += n;
	if (*s == '.') {
		long scale = 100000;
		for (s++; *s >= '0' && *s <= '9'; s++, scale /= 10)
			frac_us += (*s - '0') * scale;
	}
	if (*s == '+' || *s == '-') {
		int th, tm_ = 0;
		if (sscanf(s + 1, "%2d:%2d", &th, &tm_) < 1)
			return -EINVAL;
		tz_s = (*s == '-' ? -1 : 1) * (th * 3600L + tm_ * 60L);
		s += strlen(s);
	} else if (*s == 'Z') {
		s++;
	}
	if (*s)
		return -EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*ret_us = ((int64_t)timegm(&tm) - tz_s) * 1000000 + frac_us;
	return 0;
}

static int os_datetime_set(struct sim_req *req)
{
	char buf[64];
	int64_t target;

	if (smp_cbor_get_text(req->body, "datetime", buf, sizeof(buf), NULL) < 0 ||
	    parse_datetime(buf, &target) < 0)
		return SMP_RC_EINVAL;
	req->dev->clock_offset_us = 0;
	req->dev->clock_offset_us = target - wall_us(req->dev);
	return 0;
}

static int os_reset(struct sim_req *req)
{
	bool force;

	if (smp_cbor_get_bool(req->body, "force", &force) == -EBADMSG)
		return SMP_RC_EINVAL;
	sim_device_schedule_reset(req->dev);
	return 0;
}

static int os_params(struct sim_req *req)
{
	smp_cbor_map_put_uint(req->rsp, "buf_size", req->dev->link.buf_size);
	smp_cbor_map_put_uint(req->rsp, "buf_count", req->dev->link.buf_count);
	return 0;
}

/* uname-like fields in Zephyr's fixed output order; 'b' (build date) is not
 * configured in the recorded build and prints nothing. */
static int os_info(struct sim_req *req)
{
	static const struct { char c; const char *v; } parts[] = {
		{ 's', "Zephyr" }, { 'n', "unknown" }, { 'r', "" }, { 'v', "3.4.99" },
		{ 'm', "arm" }, { 'p', "nrf52832" }, { 'i', "pinetime_devkit0" }, { 'o', "Zephyr" },
	};
	char fmt[32] = "s", out[160] = "";
	bool want[ARRAY_SIZE(parts)] = { false }, first = true;
	int r = smp_cbor_get_text(req->body, "format", fmt, sizeof(fmt), NULL);

	if (r < 0 && r != -ENOENT)
		return SMP_RC_EINVAL;
	for (const char *c = fmt; *c; c++) {
		bool known = *c == 'a' || *c == 'b';
		for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
			if (*c == 'a' || *c == parts[i].c) {
				want[i] = true;
				known = true;
			}
		if (!known)
			return SMP_RC_EINVAL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
		if (!want[i])
			continue;
		size_t l = strlen(out);
		snprintf(out + l, sizeof(out) - l, "%s%s", first ? "" : " ", parts[i].v);
		first = false;
	}
	smp_cbor_map_put_text(req->rsp, "output", out);
	return 0;
}

static const struct sim_handler os_handlers[] = {
	[SMP_OS_ECHO] = { NULL, os_echo },
	[SMP_OS_TASKSTAT] = { os_taskstat, NULL },
	[SMP_OS_DATETIME] = { os_datetime_get, os_datetime_set },
	[SMP_OS_RESET] = { NULL, os_reset },
	[SMP_OS_PARAMS] = { os_params, NULL },
	[SMP_OS_INFO] = { os_info, NULL },
};

const struct sim_group sim_grp_os = { SMP_GROUP_OS, os_handlers, ARRAY_SIZE(os_handlers) };
