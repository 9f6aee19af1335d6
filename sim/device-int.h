/* SPDX-License-Identifier: MIT */
/*
 * Internals of a simulated device shared by device.c (lifetime, request
 * queue, faults, MCUboot boot logic), slot.c (flash slots) and the SMP group
 * handlers grp-*.c. Not for transports: they use device.h only.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cbor.h>
#include <event2/event.h>

#include "codec/smp.h"
#include "device.h"
#include "smpgw/usergroup.h"

/* ---- flash slots (slot.c) --------------------------------------------- */

/*
 * One MCUboot slot. Contents are either a shared image (copy-on-write: many
 * devices booted from the same file hold one copy) or a private buffer of
 * cap bytes; everything past the stored bytes reads as erased (0xff). A
 * private buffer grows only as far as data is written, so a fleet of 1000
 * idle watches costs no slot memory at all.
 */
struct sim_slot {
	struct sim_image *shared; /* reference, or NULL */
	uint8_t *buf;             /* private contents, or NULL */
	size_t cap;               /* bytes in buf */
	/* cached parse of the slot contents */
	bool meta_valid;
	bool meta_present;        /* header + TLV area with a SHA-256 readable */
	bool meta_verified;       /* MCUboot would boot it: hash checks */
	uint8_t meta_flags_nb;    /* header flags say non-bootable */
	struct {
		uint8_t major, minor;
		uint16_t revision;
		uint32_t build;
	} ver;
	uint8_t hash[32];
};

void slot_init_shared(struct sim_slot *s, struct sim_image *img);
void slot_clear(struct sim_slot *s);
/* Stored bytes (contents beyond read as 0xff). */
const uint8_t *slot_bytes(const struct sim_slot *s, size_t *ret_len);
/* Erase [off, off + len): 0xff. */
void slot_erase(struct sim_slot *s, size_t off, size_t len);
/* Program bytes at off (off + len <= SIM_SLOT_SIZE checked by caller). */
void slot_write(struct sim_slot *s, size_t off, const uint8_t *data, size_t len);
/* Fills the meta_* cache. */
void slot_scan(struct sim_slot *s);
/* "1.2.3" or "1.2.3.4" (Zephyr's img_mgmt_ver_str). */
void slot_version_str(const struct sim_slot *s, char *out, size_t size);
/* Memory held privately by this slot. */
size_t slot_private_bytes(const struct sim_slot *s);

/* ---- device ------------------------------------------------------------- */

enum sim_dev_state {
	SIM_DEV_UP = 0,
	SIM_DEV_REBOOTING,
};

/* MCUboot swap state as img_mgmt derives it from the trailers. */
enum sim_swap {
	SIM_SWAP_NONE = 0,  /* nothing pending */
	SIM_SWAP_TEST,      /* slot 1 marked for a test swap */
	SIM_SWAP_PERM,      /* slot 1 marked for a permanent swap */
	SIM_SWAP_REVERT,    /* running a tested image, not confirmed yet */
};

struct sim_pending {
	struct sim_pending *next;
	uint8_t *frame;
	size_t len;
	sim_reply_cb cb;      /* NULL once cancelled */
	void *user_data;
	bool disconnect_after; /* disconnect-after-frames fault fires after it */
};

struct sim_observer_ent {
	unsigned id;
	const struct sim_device_observer *ops; /* NULL: removed */
	void *user_data;
};

struct sim_upload {
	bool active;          /* a session is open (Zephyr: area_id >= 0) */
	size_t off, size;
	uint8_t sha[32];
	size_t sha_len;
	size_t erased_upto;   /* progressive erase: sectors erased so far */
};

struct sim_device {
	struct event_base *base;
	char *name, *address;
	int rssi;
	unsigned adapter;
	bool in_range;
	bool no_primary;       /* edge-case replay: no MCUboot, empty slot 0 */
	bool image_check;      /* answer "match" on the last upload chunk */
	struct sim_link_model link;
	struct sim_flash_timing flash;
	uint32_t boot_ms;
	uint32_t self_check_ms;
	uint32_t proc_us;
	uint16_t battery_mv;
	uint8_t battery_pct;
	uint64_t rng;

	enum sim_dev_state state;
	enum sim_swap swap;     /* REVERT also means: slot 0 unconfirmed */
	struct sim_slot slot[2];
	struct sim_upload up;
	uint32_t boot_count;
	enum smpgw_reset_cause reset_cause;
	uint64_t boot_usec;     /* now_usec() at the last boot */
	int64_t clock_offset_us; /* datetime set: wall clock correction */

	struct sim_faults faults;
	struct sim_counters ctr;

	/* request queue: head is being processed when busy */
	struct sim_pending *head, *tail;
	unsigned queued;
	bool busy;
	struct event *work_ev;   /* fires when the head's reply is due */
	uint8_t *rsp;            /* reply to the head, ready at work_ev */
	size_t rsp_len;
	bool drop_reply;         /* disconnect-at-offset fired: reply lost */
	struct event *reset_ev;  /* delayed reboot after os reset */
	struct event *boot_ev;   /* booted after boot_ms */

	struct sim_observer_ent *obs;
	size_t nobs;
	unsigned next_obs_id;
	unsigned obs_iterating;

	uint8_t adv[32];
};

/* ---- request handling (grp-*.c) ----------------------------------------- */

struct sim_req {
	struct sim_device *dev;
	const struct smp_hdr *hdr;
	const cbor_item_t *body; /* the request map */
	cbor_item_t *rsp;        /* indefinite response map to fill */
	uint64_t cost_us;        /* simulated time spent (flash) */
	uint16_t err_group;      /* group error: group reported in "err" */
	int err_rc;              /* group error: its rc */
	int legacy_rc;           /* group error: rc for SMP v1 requests */
};

/* Handler return: 0 success (rsp filled), > 0 an SMP-level rc ({"rc": n}),
 * SIM_RC_GROUP after sim_req_group_err(). */
#define SIM_RC_GROUP (-1)
typedef int (*sim_handler_fn)(struct sim_req *req);

struct sim_handler {
	sim_handler_fn read, write;
};

struct sim_group {
	uint16_t id;
	const struct sim_handler *handlers; /* indexed by command id */
	size_t count;
};

int sim_req_group_err(struct sim_req *req, uint16_t group, int rc, int legacy_rc);

extern const struct sim_group sim_grp_os;
extern const struct sim_group sim_grp_img;
extern const struct sim_group sim_grp_stat;
extern const struct sim_group sim_grp_user;

/* Called by grp-os for "reset": reboot after the reply has gone out. */
void sim_device_schedule_reset(struct sim_device *dev);
/* Flash time in us with the slow-flash fault applied. */
uint64_t sim_device_erase_cost(const struct sim_device *dev, size_t sectors);
uint64_t sim_device_program_cost(const struct sim_device *dev, size_t bytes);
/* img_mgmt flags of a slot (for state read, advertising). */
void sim_device_slot_flags(const struct sim_device *dev, unsigned slot, bool *pending,
			   bool *confirmed, bool *active, bool *permanent);
/* Microseconds since the last boot. */
uint64_t sim_device_uptime_us(const struct sim_device *dev);
/* The firmware's post-boot self-check: self_check_ms of uptime. */
bool sim_device_self_check_passed(const struct sim_device *dev);
/* Upload progress hook: the disconnect-at-offset fault. */
void sim_device_upload_progress(struct sim_device *dev, size_t off);
