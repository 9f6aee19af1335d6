/* SPDX-License-Identifier: MIT */
/*
 * The simulated stat_mgmt group (2): the three groups the recorded smp_svr
 * lists, with values taken from the device's own counters. The error for an
 * unknown name reports group 63 in "err", exactly as the recorded Zephyr.
 */
#include <errno.h>
#include <string.h>

#include "codec/cbor-util.h"
#include "device-int.h"
#include "util/util.h"

#define STAT_ERR_GROUP 63    /* what the recorded device says (sic) */
#define STAT_ERR_INVALID_NAME 3

struct stat_field {
	const char *name;
	uint64_t (*get)(const struct sim_device *dev);
};

static uint64_t st_ticks(const struct sim_device *d) { return sim_device_uptime_us(d) / 1000000; }
static uint64_t st_zero(const struct sim_device *d) { return 0; }
static uint64_t st_written(const struct sim_device *d) { return d->ctr.programs * 256; }
static uint64_t st_writes(const struct sim_device *d) { return d->ctr.programs; }
static uint64_t st_write_us(const struct sim_device *d)
{
	return d->ctr.programs * d->flash.program_page_us;
}
static uint64_t st_erases(const struct sim_device *d) { return d->ctr.erases; }
static uint64_t st_erase_us(const struct sim_device *d)
{
	return d->ctr.erases * d->flash.erase_sector_us;
}

static const struct stat_field smp_svr_fields[] = { { "ticks", st_ticks } };
static const struct stat_field flash_fields[] = {
	{ "bytes_read", st_zero }, { "bytes_written", st_written },
	{ "double_writes", st_zero }, { "flash_read_calls", st_zero },
	{ "flash_read_time_us", st_zero }, { "flash_write_calls", st_writes },
	{ "flash_write_time_us", st_write_us }, { "flash_erase_calls", st_erases },
	{ "flash_erase_time_us", st_erase_us },
};
static const struct stat_field threshold_fields[] = {
	{ "max_write_calls", st_zero }, { "max_erase_calls", st_zero }, { "max_len", st_zero },
};

static const struct {
	const char *name;
	const struct stat_field *fields;
	size_t n;
} stat_groups[] = {
	{ "flash_sim_stats", flash_fields, ARRAY_SIZE(flash_fields) },
	{ "flash_sim_thresholds", threshold_fields, ARRAY_SIZE(threshold_fields) },
	{ "smp_svr_stats", smp_svr_fields, ARRAY_SIZE(smp_svr_fields) },
};

static int stat_read(struct sim_req *req)
{
	char name[64];

	if (smp_cbor_get_text(req->body, "name", name, sizeof(name), NULL) < 0)
		return SMP_RC_EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(stat_groups); i++) {
		if (strcmp(stat_groups[i].name, name) != 0)
			continue;
		cbor_item_t *f = smp_cbor_map_new_indefinite();
		for (size_t j = 0; j < stat_groups[i].n; j++)
			smp_cbor_map_put_uint(f, stat_groups[i].fields[j].name,
					      stat_groups[i].fields[j].get(req->dev));
		smp_cbor_map_put_text(req->rsp, "name", name);
		smp_cbor_map_put_item(req->rsp, "fields", f);
		return 0;
	}
	/* no error translation for group 63: v1 clients get MGMT_ERR_EUNKNOWN */
	return sim_req_group_err(req, STAT_ERR_GROUP, STAT_ERR_INVALID_NAME, SMP_RC_EUNKNOWN);
}

static int stat_list(struct sim_req *req)
{
	cbor_item_t *a = smp_cbor_array_new_indefinite();

	for (size_t i = 0; i < ARRAY_SIZE(stat_groups); i++)
		smp_cbor_array_push(a, cbor_build_string(stat_groups[i].name));
	smp_cbor_map_put_uint(req->rsp, "rc", 0);
	smp_cbor_map_put_item(req->rsp, "stat_list", a);
	return 0;
}

static const struct sim_handler stat_handlers[] = {
	[SMP_STAT_READ] = { stat_read, NULL },
	[SMP_STAT_LIST] = { stat_list, NULL },
};

const struct sim_group sim_grp_stat = { SMP_GROUP_STAT, stat_handlers, ARRAY_SIZE(stat_handlers) };
