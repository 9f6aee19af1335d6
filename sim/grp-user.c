/* SPDX-License-Identifier: MIT */
/*
 * The smpgw user group (64, smpgw/usergroup.h) as the firmware implements
 * it: "health" with battery, reset cause, boot count, uptime, confirmed and
 * self-check. Encoded with the shared host encoder, then copied into the
 * indefinite-length root map every Zephyr response has.
 */
#include <errno.h>

#include "codec/cbor-util.h"
#include "device-int.h"
#include "smpgw/usergroup-cbor.h"
#include "util/util.h"

static int user_health(struct sim_req *req)
{
	const struct sim_device *dev = req->dev;
	struct smpgw_health h = {
		.battery_pct = dev->battery_pct <= 100 ? dev->battery_pct : SMPGW_BATTERY_PCT_UNKNOWN,
		.battery_mv = (uint16_t)MIN(dev->battery_mv, SMPGW_BATTERY_MV_MAX),
		.reset_cause = dev->reset_cause,
		.boot_count = dev->boot_count,
		.uptime_s = (uint32_t)(sim_device_uptime_us(dev) / 1000000),
		.confirmed = dev->swap != SIM_SWAP_REVERT,
		.self_check = sim_device_self_check_passed(dev),
	};
	cbor_item_t *m = smpgw_health_to_cbor(&h);

	if (!m)
		return SMP_RC_EUNKNOWN;
	struct cbor_pair *p = cbor_map_handle(m);
	for (size_t i = 0; i < cbor_map_size(m); i++)
		smp_cbor_map_put_pair(req->rsp, cbor_incref(p[i].key), cbor_incref(p[i].value));
	cbor_decref(&m);
	return 0;
}

static const struct sim_handler user_handlers[] = {
	[SMPGW_MGMT_ID_HEALTH] = { user_health, NULL },
};

const struct sim_group sim_grp_user = { SMPGW_MGMT_GROUP_ID, user_handlers,
					ARRAY_SIZE(user_handlers) };
