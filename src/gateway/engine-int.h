/* SPDX-License-Identifier: MIT */
/*
 * Internals of the upload engine shared by engine.c (jobs and the update
 * flow), upload.c (one pipelined image upload) and update-smp.c (the SMP
 * frames the engine sends and the answers it reads). Not a public API.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <jansson.h>
#include "gateway/store.h"

#include "gateway/jobs.h"

struct event_base;
struct gw;
struct gw_device;
struct gw_upload;

/* ---- update-smp.c: frames and answers ---- */

#define GW_IMG_HASH_LEN 32
#define GW_IMG_MAX_SLOTS 4

struct gw_img_slot {
	unsigned image, slot;
	bool has_hash;
	uint8_t hash[GW_IMG_HASH_LEN];
	bool active, pending, confirmed, permanent, bootable;
	char version[32];
};

struct gw_img_state {
	size_t n;
	struct gw_img_slot slots[GW_IMG_MAX_SLOTS];
};

/* What a response frame said: a transport-level success can still carry
 * an SMP error ({"rc"} or {"err"}). */
struct gw_smp_result {
	bool smp_error;
	int64_t rc;
	bool v2;
	uint16_t group;
	char rsn[64];
};

/* Whole request frames (caller frees *ret). 0 or negative errno. */
int gw_smp_img_state_read(uint8_t **ret, size_t *ret_len);
/* hash NULL with confirm: confirm the running image (slot 0). */
int gw_smp_img_state_write(const uint8_t *hash, bool confirm, uint8_t **ret,
			   size_t *ret_len);
int gw_smp_os_reset(uint8_t **ret, size_t *ret_len);
/* os echo of text_len 'x' characters (the reassembly probe). */
int gw_smp_os_echo(size_t text_len, uint8_t **ret, size_t *ret_len);

/*
 * One upload chunk: first (off 0) carries image 0, len, sha; others only
 * off and data. The frame is exactly 8 + gw_upload_chunk_cbor_len() bytes.
 */
int gw_smp_img_upload(size_t off, size_t total, const uint8_t *sha,
		      size_t sha_len, const uint8_t *data, size_t data_len,
		      uint8_t **ret, size_t *ret_len);
/* Exact CBOR payload length of that chunk's map. */
size_t gw_upload_chunk_cbor_len(size_t off, size_t total, size_t sha_len,
				size_t data_len);
/* The most data bytes a chunk at off may carry so the whole frame (header
 * included) fits in frame_max; at most total - off. 0 if nothing fits. */
size_t gw_upload_chunk_max(size_t off, size_t total, size_t sha_len,
			   size_t frame_max);

/* Parses a response frame's error. -EBADMSG when not a CBOR map. */
int gw_smp_result(const uint8_t *frame, size_t len, struct gw_smp_result *ret);
/* "images" of an img state response; *ret_json (optional) gets the array as
 * JSON (new reference) for the device's cached slots. */
int gw_img_state_parse(const uint8_t *frame, size_t len,
		       struct gw_img_state *ret, json_t **ret_json);
/* "off" (and "match" when present: *ret_match 1/0, else -1) of an upload
 * response. */
int gw_img_upload_parse(const uint8_t *frame, size_t len, uint64_t *ret_off,
			int *ret_match);
/* The slot holding hash, or NULL. */
const struct gw_img_slot *gw_img_state_find(const struct gw_img_state *st,
					    const uint8_t *hash);
/* Describes an SMP error into buf ("img rc 6 (...)"). */
void gw_smp_result_str(const struct gw_smp_result *r, char *buf, size_t size);

/* ---- upload.c: one pipelined upload ---- */

/*
 * What the link has proven it carries: frames in flight and frame size,
 * adapted by upload.c (additive increase, multiplicative decrease; the rule
 * and its numbers are in upload.c and docs/updates.md). Owned by the job so
 * that it outlives the link resets and upload attempts of that job. All
 * zero: not started (the upload fills it in).
 */
struct gw_upload_ctl {
	unsigned window;      /* frames in flight allowed now, >= 1 */
	size_t frame;         /* whole-frame size now (header included) */
	unsigned good;        /* chunks acknowledged since the last change */
	unsigned grow_after;  /* acknowledged chunks that earn one step up */
	unsigned losses;      /* lost or unanswered frames */
	unsigned max_window;  /* the largest window used */
	unsigned min_window;  /* the smallest window after a loss */
	size_t max_frame, min_frame; /* frame sizes used */
	/* where frames were lost: reached again only after probe_at_us */
	unsigned ceil_window; /* 0: none */
	size_t ceil_frame;    /* 0: none */
	uint64_t hold_us;     /* how long the last loss keeps a ceiling */
	uint64_t probe_at_us; /* monotonic */
};

struct gw_upload_params {
	struct event_base *base;
	struct gw_device *dev;
	const uint8_t *image;   /* borrowed; lives until the upload is freed */
	size_t len;
	uint8_t sha[32];        /* SHA-256 of the whole file: the session id */
	size_t start_off;       /* where we believe the device is (resume) */
	size_t frame_max;       /* whole SMP frame limit (header included) */
	size_t write_len;       /* one link write (BLE: ATT MTU - 3) when frames
				 * span several; frames shrink in whole writes.
				 * 0: frames do not shrink (UDP, serial) */
	unsigned max_inflight;  /* pipeline depth, >= 1 */
	struct gw_upload_ctl *ctl; /* adapted in place; NULL: the upload's own */
	uint32_t chunk_timeout_ms;
	bool state_checked;     /* a state read just showed the image absent */
	uint8_t hash[GW_IMG_HASH_LEN]; /* MCUboot SHA-256 TLV: slot check */
};

/*
 * Result of an upload (called once):
 *   0              every byte acknowledged by the device;
 *   -ECONNRESET / -ENOTCONN / -ETIMEDOUT   the link failed: resumable;
 *   -EPROTO        the device refused (msg says how);
 *   -EEXIST        a state read found the image complete already.
 */
struct gw_upload_stats {
	size_t acked;           /* device offset */
	uint64_t bytes_sent;    /* data bytes sent, resends included */
	unsigned timeouts, mismatches, restarts;
};
struct gw_upload_cbs {
	void (*progress)(const struct gw_upload_stats *st, void *user_data);
	void (*done)(int err, const char *msg, const struct gw_upload_stats *st,
		     void *user_data);
};

struct gw_upload *gw_upload_start(const struct gw_upload_params *p,
				  const struct gw_upload_cbs *cbs,
				  void *user_data);
/* Cancels every request; no callback afterwards. Accepts NULL. Not to be
 * called from the done callback: the upload frees itself after it. */
struct gw_upload *gw_upload_free(struct gw_upload *up);

/* ---- engine.c and engine-db.c: the job record ---- */

struct event;
struct gw_upload_stats;

enum phase {
	PHASE_QUEUED = 0,
	PHASE_STATE,    /* reading image state */
	PHASE_UPLOAD,
	PHASE_VERIFY,   /* reading state: is the slot hash the image hash? */
	PHASE_TEST,     /* test written (or about to be) */
	PHASE_RESET,    /* reset sent (or about to be) */
	PHASE_WAIT,     /* waiting for the watch to come back */
	PHASE_CONFIRM,  /* confirm sent (or about to be) */
	PHASE_DONE,
};

extern const char *const engine_phase_names[];
#define ENGINE_FINISHED_KEPT 1000

struct image {
	LIST_ENTRY(image) entry;
	char *id;
	uint8_t *buf;
	size_t len;
	uint8_t hash[GW_IMG_HASH_LEN]; /* SHA-256 TLV */
	uint8_t sha[32];               /* SHA-256 of the file */
	unsigned refs;
};

struct job {
	TAILQ_ENTRY(job) entry;
	struct gw_engine *eng;
	int64_t id;
	char *device_id, *image_id, *rollout_id, *error;
	enum gw_job_mode mode;
	enum gw_job_state state;
	enum phase phase;
	bool did_reset;      /* phase reached RESET at some point (persisted via phase) */
	bool up_to_date;     /* the watch already ran the image */
	bool skipped_upload; /* the image was already in a slot */
	uint8_t hash[GW_IMG_HASH_LEN];
	uint64_t created_ms, started_ms, finished_ms, updated_ms;
	size_t size, offset;
	uint64_t bytes_sent, sent_base;
	gw_job_done_cb done;
	void *user_data;
	/* while running */
	struct image *img;
	struct gw_device *dev;
	bool held;
	int64_t req;
	struct gw_upload *up;
	struct event *timer;
	void (*timer_fn)(struct job *job);
	uint64_t wait_deadline_ms, retry_deadline_ms;
	uint64_t self_check_deadline_ms; /* first confirm refusal + self_check_timeout */
	uint64_t reset_sent_ms;  /* 0 after a restart: long ago */
	unsigned resets;
	uint32_t retry_ms;
	char *radio_key;     /* adapter whose token the job holds; NULL: none shared */
	bool radio_held;
	uint64_t up_start_ms, last_progress_ms, last_persist_ms;
	size_t up_start_off;
	unsigned last_pct;
	double rate;
	/* loss recovery and the stall bound (docs/updates.md) */
	struct gw_upload_ctl ctl; /* window and frame size, across attempts */
	unsigned ctl_losses_seen; /* ctl.losses already counted in metrics */
	struct event *stall_ev;
	uint64_t advanced_ms;     /* last progress: phase, or a chunk acknowledged */
	unsigned link_errors;     /* attempts that ended in a link error */
	char *last_link_error;    /* the last one ("what: strerror"), or NULL */
	int64_t resets_base;      /* device's timeout_resets at start */
	/* several gateways (docs/multi-gateway.md): the job's claim */
	char *runner;             /* gateway whose claim the row has, or NULL */
	char *runners;            /* gateways that claimed it, in order ("g1,g2") */
	uint64_t runner_expires;  /* the claim is live until then */
	bool cancel_req;          /* a cancel asked on another gateway */
	bool claim_lost;          /* another gateway claimed the row: stop */
	bool renewed;             /* in the claim round */
};
TAILQ_HEAD(job_list, job);

struct probe {
	char *id;
	bool reassembly;
};

struct radio {
	char *key;
	unsigned used;
};

struct gw_engine {
	struct gw *gw;
	struct gw_store *store; /* borrowed; NULL: jobs in memory only */
	struct job_list jobs;   /* by id */
	size_t n_jobs;          /* in memory: unfinished + at most
				 * ENGINE_FINISHED_KEPT finished (the store has all) */
	LIST_HEAD(, image) images;
	struct radio *radios;
	size_t n_radios;
	struct probe *probes;   /* reassembly per watch, this run */
	size_t n_probes;
	unsigned uploads;       /* radio tokens held in all */
	unsigned sub;           /* event bus subscription */
	int64_t next_mem_id;
	struct event *dispatch_ev;
	/* Several gateways ([gateway] id with a store): a job runs here only
	 * once this gateway claimed its row (runner = me), renewed every
	 * claim round; NULL: one gateway, every job in the store is ours. */
	char *me;
	uint32_t claim_ttl_ms;    /* [gateway] lease_ttl */
	struct event *claim_ev;   /* the claim round */
	struct gw_store_listener *listener; /* GW_JOBS_CHANNEL: a claim round now */
};

/* Sends GW_JOBS_CHANNEL (jobs.h) with several gateways on PostgreSQL. */
void engine_db_notify(struct gw_engine *eng);

static inline bool engine_job_final(const struct job *job)
{
	return job->state != GW_JOB_STATE_QUEUED && job->state != GW_JOB_STATE_RUNNING;
}

/* engine-db.c: names, the job table, the image cache. */
int engine_state_parse(const char *s, enum gw_job_state *ret);
enum phase engine_phase_parse(const char *s);
/* Writes the job's row (durable when it returns). */
void engine_job_persist(struct job *job);
/* Inserts a new row; the job id, or a negative errno. */
int64_t engine_db_insert(struct gw_engine *eng, struct job *job);
/* Loads unfinished jobs and the latest finished ones. */
int engine_db_adopt(struct gw_engine *eng, const char *device_id);
int engine_load_jobs(struct gw_engine *eng);
/* Several gateways: claims (FOR UPDATE SKIP LOCKED on PostgreSQL) the
 * unfinished rows of device_id that are free, expired or ours and not in
 * memory; they join memory in id order. How many, or negative errno. */
int engine_db_claim(struct gw_engine *eng, const char *device_id);
/* The devices with claimable unfinished rows (a new JSON array of ids). */
json_t *engine_db_claimable(struct gw_engine *eng);
/* Renews this gateway's live claims; cb gets each renewed job id and its
 * cancel request. 0 or negative errno (nothing renewed). */
int engine_db_renew(struct gw_engine *eng, void (*cb)(struct gw_engine *eng, int64_t id,
						      bool cancel_req));
/* Lets the claim of a job go (handed over with its watch). */
void engine_db_release(struct gw_engine *eng, int64_t id);
/* The store's rows as JSON: one job (NULL if none) or the list. */
struct job *engine_db_job(struct gw_engine *eng, int64_t id);
json_t *engine_db_jobs_json(struct gw_engine *eng, const char *device_id,
			    json_t *(*to_json)(const struct job *job));
/* A cancel of a job no gateway runs now (atomic: 1 done, 0 someone claimed
 * it meanwhile), or a cancel request to its runner. */
int engine_db_cancel_unclaimed(struct gw_engine *eng, struct job *job);
int engine_db_cancel_request(struct gw_engine *eng, int64_t id);
/* The canonical id of a device the store knows (new string) or NULL. */
char *engine_db_device(struct gw_engine *eng, const char *id);
struct image *engine_image_get(struct gw_engine *eng, const char *id, int *err);
void engine_image_put(struct image *im);
/* engine.c */
struct job *engine_job_new(struct gw_engine *eng);
void engine_job_free(struct job *job);
