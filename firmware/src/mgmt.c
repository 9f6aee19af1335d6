/* SPDX-License-Identifier: MIT */
/*
 * The smpgw SMP group (id 64, "smpgw" group; command 0 "health", fields in
 * smpgw/usergroup.h) and the MCUmgr hooks that make updates safe:
 *  - img state commands that could confirm (or re-test) are refused with
 *    {"err": {"group": 64, "rc": SMPGW_MGMT_RC_SELF_CHECK_PENDING}} while
 *    an unconfirmed image has not passed its self-check;
 *  - without an encrypted (bonded) link every command is refused with
 *    MGMT_ERR_EACCESSDENIED (security.c; SMPGW_SMP_REQUIRE_BOND);
 *  - every SMP request is reported to main.c (self-check "SMP answered",
 *    hung-handler detection for the watchdog);
 *  - DFU start/stop drive the "update in progress" advertising flag.
 */
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/mgmt/mcumgr/grp/img_mgmt/img_mgmt.h>
#include <zephyr/mgmt/mcumgr/mgmt/callbacks.h>
#include <zephyr/mgmt/mcumgr/mgmt/handlers.h>
#include <zephyr/mgmt/mcumgr/mgmt/mgmt.h>
#include <zephyr/mgmt/mcumgr/smp/smp.h>
#include <zcbor_common.h>
#include <zcbor_encode.h>

#include "app.h"

static bool put_uint(zcbor_state_t *zse, const char *key, uint32_t v)
{
	return zcbor_tstr_encode_ptr(zse, key, strlen(key)) && zcbor_uint32_put(zse, v);
}

static bool put_bool(zcbor_state_t *zse, const char *key, bool v)
{
	return zcbor_tstr_encode_ptr(zse, key, strlen(key)) && zcbor_bool_put(zse, v);
}

/* The SMP layer has opened the response map; we add the fields. */
static int smpgw_health_read(struct smp_streamer *ctxt)
{
	zcbor_state_t *zse = ctxt->writer->zs;
	struct smpgw_health h;
	const char *cause;
	bool ok;

	health_fill(&h);
	cause = smpgw_reset_cause_name(h.reset_cause);
	ok = put_uint(zse, SMPGW_HEALTH_KEY_BATTERY_PCT, h.battery_pct) &&
	     put_uint(zse, SMPGW_HEALTH_KEY_BATTERY_MV, h.battery_mv) &&
	     zcbor_tstr_encode_ptr(zse, SMPGW_HEALTH_KEY_RESET_CAUSE,
				   strlen(SMPGW_HEALTH_KEY_RESET_CAUSE)) &&
	     zcbor_tstr_encode_ptr(zse, cause, strlen(cause)) &&
	     put_uint(zse, SMPGW_HEALTH_KEY_BOOT_COUNT, h.boot_count) &&
	     put_uint(zse, SMPGW_HEALTH_KEY_UPTIME, h.uptime_s) &&
	     put_bool(zse, SMPGW_HEALTH_KEY_CONFIRMED, h.confirmed) &&
	     put_bool(zse, SMPGW_HEALTH_KEY_SELF_CHECK, h.self_check);
	return ok ? MGMT_ERR_EOK : MGMT_ERR_EMSGSIZE;
}

static const struct mgmt_handler smpgw_handlers[] = {
	[SMPGW_MGMT_ID_HEALTH] = { .mh_read = smpgw_health_read, .mh_write = NULL },
};

#ifdef CONFIG_MCUMGR_SMP_SUPPORT_ORIGINAL_PROTOCOL
/* SMP v1 clients only understand the legacy "rc": map ours onto it. */
static int smpgw_translate_error(uint16_t err)
{
	switch (err) {
	case SMPGW_MGMT_RC_OK:
		return MGMT_ERR_EOK;
	case SMPGW_MGMT_RC_SELF_CHECK_PENDING:
		return MGMT_ERR_EBUSY;
	default:
		return MGMT_ERR_EUNKNOWN;
	}
}
#endif

static struct mgmt_group smpgw_group = {
	.mg_handlers = smpgw_handlers,
	.mg_handlers_count = ARRAY_SIZE(smpgw_handlers),
	.mg_group_id = SMPGW_MGMT_GROUP_ID,
#ifdef CONFIG_MCUMGR_SMP_SUPPORT_ORIGINAL_PROTOCOL
	.mg_translate_error = smpgw_translate_error,
#endif
#ifdef CONFIG_MCUMGR_GRP_ENUM_DETAILS_NAME
	/* Newer Zephyr lists group names through the enum group (10). */
	.mg_group_name = SMPGW_MGMT_GROUP_NAME,
#endif
};

static void smpgw_group_register(void)
{
	mgmt_register_group(&smpgw_group);
}

MCUMGR_HANDLER_DEFINE(smpgw_mgmt, smpgw_group_register);

/* Would this request be able to confirm or re-test an image? */
static bool is_guarded(const struct mgmt_evt_op_cmd_arg *arg)
{
	if (arg->group != MGMT_GROUP_ID_IMAGE || arg->id != IMG_MGMT_ID_STATE) {
		return false;
	}
#ifdef SMPGW_CMD_ARG_HAS_OP
	return arg->op == MGMT_OP_WRITE;
#else
	/* Zephyr 3.4 does not tell reads from writes here: hold both, only
	 * for the few seconds an unconfirmed image needs for its check. */
	return true;
#endif
}

static enum mgmt_cb_return smp_cmd_hook(uint32_t event, enum mgmt_cb_return prev_status,
					int32_t *rc, uint16_t *group, bool *abort_more,
					void *data, size_t data_size)
{
	const struct mgmt_evt_op_cmd_arg *arg = data;

	if (data_size < sizeof(*arg)) {
		return MGMT_CB_OK;
	}
	if (event == MGMT_EVT_OP_CMD_DONE) {
		app_smp_request_done();
		return MGMT_CB_OK;
	}
	if (!security_smp_allowed()) {
		/* Zephyr 3.x: the SMP characteristic cannot demand encryption
		 * without MITM, so the refusal comes here (4.x: ATT refuses
		 * first). Not encrypted = no bond = no SMP. Checked before the
		 * request counts as started: SMP sends no "done" for it. */
		*rc = MGMT_ERR_EACCESSDENIED;
		return MGMT_CB_ERROR_RC;
	}
	app_smp_request_started();
	if (is_guarded(arg) && app_image_unconfirmed() && !app_self_check_poll()) {
		*group = SMPGW_MGMT_GROUP_ID;
		*rc = SMPGW_MGMT_RC_SELF_CHECK_PENDING;
		return MGMT_CB_ERROR_ERR;
	}
	return MGMT_CB_OK;
}

static enum mgmt_cb_return img_hook(uint32_t event, enum mgmt_cb_return prev_status,
				    int32_t *rc, uint16_t *group, bool *abort_more,
				    void *data, size_t data_size)
{
	switch (event) {
	case MGMT_EVT_OP_IMG_MGMT_DFU_STARTED:
		app_set_updating(true);
		break;
	case MGMT_EVT_OP_IMG_MGMT_DFU_STOPPED:
	case MGMT_EVT_OP_IMG_MGMT_DFU_PENDING:
	case MGMT_EVT_OP_IMG_MGMT_DFU_CONFIRMED:
		app_set_updating(false);
		break;
	default:
		break;
	}
	return MGMT_CB_OK;
}

/* One callback per event group: MCUmgr matches event_id within a group. */
static struct mgmt_callback smp_cmd_cb = {
	.callback = smp_cmd_hook,
	.event_id = MGMT_EVT_OP_CMD_RECV | MGMT_EVT_OP_CMD_DONE,
};

static struct mgmt_callback img_cb = {
	.callback = img_hook,
	.event_id = MGMT_EVT_OP_IMG_MGMT_DFU_STARTED | MGMT_EVT_OP_IMG_MGMT_DFU_STOPPED |
		    MGMT_EVT_OP_IMG_MGMT_DFU_PENDING | MGMT_EVT_OP_IMG_MGMT_DFU_CONFIRMED,
};

void mgmt_hooks_init(void)
{
	mgmt_callback_register(&smp_cmd_cb);
	mgmt_callback_register(&img_cb);
}
