/* SPDX-License-Identifier: MIT */
/*
 * One simulated PineTime: Zephyr 3.4 smp_svr (os, img, stat and user group
 * 64) under MCUboot, with its flash (slot 0/1), boot state, SMP buffers,
 * flash timing, counters and injectable faults. Transports (the fake BlueZ
 * face, UDP, serial) hand it whole SMP request frames and get replies back
 * through a callback, later, after the simulated flash time.
 *
 * The device owns its state; it never knows which transport it talks to.
 * Runs on the libevent loop passed in; no threads.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "linkmodel.h"

struct event_base;
struct sim_device;
struct sim_image;

#define SIM_SLOT_SIZE 0x74000u /* PineTime MCUboot slot size */
#define SIM_SECTOR_SIZE 4096u

/* ---- configuration ---------------------------------------------------- */

struct sim_flash_timing {
	uint32_t erase_sector_us;  /* per 4 KiB sector, default 70000 */
	uint32_t program_page_us;  /* per 256 B page, default 400 */
	bool progressive_erase;    /* erase sector by sector as data comes,
	                            * instead of the whole slot on the first chunk */
};

struct sim_device_config {
	const char *name;          /* borrowed, copied */
	const char *address;       /* "AA:BB:CC:DD:EE:FF", borrowed, copied */
	int rssi;                  /* dBm */
	unsigned adapter;          /* adapter index (hci0 = 0) */
	bool in_range;
	struct sim_link_model link;
	struct sim_flash_timing flash;
	uint32_t boot_ms;          /* time from reset to booted, default 1500 */
	/* the firmware's self-check: an unconfirmed image's confirm is refused
	 * (group 64 rc 2) until this long after boot; default 0 */
	uint32_t self_check_ms;
	uint32_t proc_us;          /* CPU time to handle one request, default 200 */
	uint32_t battery_mv;       /* user group: battery voltage */
	uint8_t battery_pct;       /* user group: battery percent */
	struct sim_image *initial; /* borrowed (a reference is taken); NULL: synthesized 1.0.0 */
	uint64_t seed;             /* per-device pseudo-random seed */
	bool no_primary;           /* no MCUboot, empty slot 0 (as the recorded native_sim) */
	bool image_check;          /* CONFIG_IMG_ENABLE_IMAGE_CHECK: "match" on the last chunk */
};

/* Fills defaults (name "PineTime", in range, default link + flash). */
void sim_device_config_default(struct sim_device_config *ret);

/* ---- shared, immutable image blobs (copy-on-write slot contents) -------- */

/* Reference-counted copy of an image buffer. len <= SIM_SLOT_SIZE. */
struct sim_image *sim_image_new(const uint8_t *buf, size_t len);
/* Synthesizes a valid hash-only MCUboot image (hdr 0x200, SHA-256 TLV). */
struct sim_image *sim_image_synthesize(uint8_t major, uint8_t minor, uint16_t rev,
				       uint32_t build, size_t payload_len, uint64_t seed);
/* Reads a file; NULL and errno set on failure (ENOENT, EFBIG, ...). */
struct sim_image *sim_image_load(const char *path);
struct sim_image *sim_image_ref(struct sim_image *img);
struct sim_image *sim_image_unref(struct sim_image *img); /* returns NULL */
const uint8_t *sim_image_data(const struct sim_image *img);
size_t sim_image_len(const struct sim_image *img);

/* ---- lifetime ---------------------------------------------------------- */

struct sim_device *sim_device_new(struct event_base *base, const struct sim_device_config *cfg);
/* Cancels every pending reply (callbacks are not called). Returns NULL. */
struct sim_device *sim_device_free(struct sim_device *dev);

/* ---- transport API ------------------------------------------------------ */

typedef void (*sim_reply_cb)(struct sim_device *dev, const uint8_t *frame, size_t len,
			     void *user_data);

/*
 * A whole SMP request frame (borrowed). The device answers later through cb
 * (after flash timing); faults may make it answer twice, with a wrong seq,
 * corrupted, truncated, or never. Returns 0, -ENOBUFS when all buf_count
 * SMP buffers are busy (the transport must then drop the write silently,
 * as Zephyr does), -ENETDOWN when the device is off, rebooting, hung or out
 * of range, -EMSGSIZE when the frame exceeds buf_size, -EBADMSG when len is
 * not header + its payload length (Zephyr drops those too; counted as drops).
 * Replies come in request order. Do not free the device from cb.
 */
int sim_device_rx_frame(struct sim_device *dev, const uint8_t *frame, size_t len,
			sim_reply_cb cb, void *user_data);

/* Cancel pending replies for this user_data (link dropped). cb never runs for them. */
void sim_device_cancel_replies(struct sim_device *dev, void *user_data);

struct sim_device_observer {
	/* rebooting: drop links; the device comes back after boot_ms */
	void (*reset)(struct sim_device *dev, void *user_data);
	void (*booted)(struct sim_device *dev, void *user_data);
	void (*range)(struct sim_device *dev, bool in_range, void *user_data);
	/* fault: drop the link now */
	void (*disconnect)(struct sim_device *dev, void *user_data);
};

/* Any member may be NULL. ops is borrowed and must outlive the registration.
 * Returns an id > 0. Observers may unobserve themselves from a callback. */
unsigned sim_device_observe(struct sim_device *dev, const struct sim_device_observer *ops,
			    void *user_data);
void sim_device_unobserve(struct sim_device *dev, unsigned id);

/* ---- link model and faults --------------------------------------------- */

const struct sim_link_model *sim_device_link_model(const struct sim_device *dev);
/* -EINVAL when invalid (see sim_link_model_validate). */
int sim_device_set_link_model(struct sim_device *dev, const struct sim_link_model *m);

struct sim_faults {
	/* one-shot counters: each pending reply consumes one */
	uint32_t corrupt_notifications;  /* flip a byte in the next N replies' payload */
	uint32_t truncate_notifications; /* cut the next N replies short (BLE: a short notification) */
	uint32_t answer_twice;           /* send the next N replies twice */
	uint32_t wrong_seq;              /* next N replies carry seq + 1 */
	bool hang;                       /* accepts nothing, answers nothing (-ENETDOWN) */
	bool refuse_pairing;             /* BLE face: Pair() fails with org.bluez.Error.AuthenticationFailed */
	bool pairing_required;           /* BLE face: SMP characteristic needs an encrypted link */
	bool volatile_bonds;             /* BLE face: a reset loses the watch's bonds (keys in RAM) */
	int64_t disconnect_at_offset;    /* >= 0: observers' disconnect once an upload reaches it */
	int64_t disconnect_after_frames; /* >= 0: disconnect after N more request frames */
	uint32_t flash_slow_factor;      /* multiplies flash times, 1 = normal */
	/* BLE face only (sim/bluez-link.c): */
	int32_t lossy_burst;             /* >= 0: a write arriving when more than this many
	                                  * came since the watch was last idle is lost; a
	                                  * frame that lost a write leaves the reassembly
	                                  * swallowing every write until the link drops */
	uint32_t garbage_notifications;  /* the next N replies follow a garbage notification */
	uint32_t unsolicited_answers;    /* the next N replies follow one to a request never sent */
};

const struct sim_faults *sim_device_faults(const struct sim_device *dev);
void sim_device_set_faults(struct sim_device *dev, const struct sim_faults *f);
void sim_faults_default(struct sim_faults *ret); /* all off, offsets and lossy -1, factor 1 */

/* ---- actions (control interface, tests) --------------------------------- */

/* Reboot now (like os reset): observers' reset, MCUboot swap logic, booted after boot_ms. */
void sim_device_reset(struct sim_device *dev);
/* Moving out of range drops links (observers' range(false)). */
void sim_device_set_in_range(struct sim_device *dev, bool in_range);
void sim_device_set_rssi(struct sim_device *dev, int rssi);

/* ---- accessors ---------------------------------------------------------- */

const char *sim_device_address(const struct sim_device *dev);
const char *sim_device_name(const struct sim_device *dev);
int sim_device_rssi(const struct sim_device *dev);
unsigned sim_device_adapter(const struct sim_device *dev);
bool sim_device_in_range(const struct sim_device *dev);
/* true while booted (not rebooting, not hung). */
bool sim_device_is_up(const struct sim_device *dev);
uint32_t sim_device_boot_count(const struct sim_device *dev);

/*
 * Advertising record (see firmware/include/smpgw/adv.h): manufacturer data
 * (company id + bytes) and service data (UUID string + bytes). The pointers
 * stay valid until the next call on this device. Returns 0 or -ENOENT.
 */
int sim_device_manufacturer_data(struct sim_device *dev, uint16_t *ret_company,
				 const uint8_t **ret_data, size_t *ret_len);
int sim_device_service_data(struct sim_device *dev, const char **ret_uuid,
			    const uint8_t **ret_data, size_t *ret_len);

struct sim_counters {
	uint64_t frames_rx, frames_tx; /* SMP frames in / replies out */
	uint64_t bytes_rx, bytes_tx;
	uint64_t drops;                /* frames dropped: buffers full, too big, down */
	uint64_t erases;               /* sectors erased */
	uint64_t programs;             /* pages programmed */
	uint64_t resets;
	uint64_t upload_bytes;         /* image bytes written into slot 1 (overlaps counted) */
	uint64_t confirms;             /* confirms of the running image (slot 0) */
	uint64_t confirms_unbooted;    /* confirms of the slot-1 image: never booted yet */
};
const struct sim_counters *sim_device_counters(const struct sim_device *dev);

struct sim_slot_info {
	bool present;        /* a valid-looking MCUboot header sits in the slot */
	bool bootable;       /* SHA-256 TLV verifies */
	bool pending, confirmed, active, permanent;
	char version[32];    /* "1.2.3" or "1.2.3.4" when build != 0 */
	uint8_t hash[32];    /* SHA-256 TLV */
	size_t len;          /* bytes written (upload progress) / image size */
};
/* slot 0 or 1; -EINVAL otherwise. */
int sim_device_slot_info(const struct sim_device *dev, unsigned slot, struct sim_slot_info *ret);
