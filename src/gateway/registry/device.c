/* SPDX-License-Identifier: MIT */
/*
 * The device registry and the per-device request queue (device.h,
 * registry.h). Owns struct gw_device, its queued and in-flight requests,
 * their timers, the sequence-number rewriting, and the link callbacks of
 * every managed device.
 *
 * A request lives in exactly one of two lists: dev->queue (waiting for the
 * link or for its turn) or dev->inflight (sent, waiting for the response
 * that carries its wire sequence number). Sending happens only from a
 * deferred "pump" event, never from inside a caller or a link callback,
 * so callbacks may queue or cancel freely.
 */
#include "gateway/registry/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <cbor.h>
#include <event2/event.h>

#include "codec/cbor-util.h"
#include "gateway/config.h"
#include "gateway/devmodel.h"
#include "gateway/events.h"
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store.h"
#include "links/ble.h"
#include "util/util.h"

/* After this many consecutive timeouts the link is torn down, so the next
 * request reconnects (a BLE link that stopped answering usually needs it).
 * A watch that was sent a frame spanning several writes on this connection
 * gets one: its SMP reassembly may hold part of a frame whose other writes
 * were lost, and then swallows every later request until the link drops
 * (Zephyr's smp_bt keeps the partial frame until disconnect; seen with
 * smp_svr short of ACL buffers, docs/ble.md "Lost writes"). */
#define MAX_CONSECUTIVE_TIMEOUTS 3
#define MAX_TIMEOUTS_REASSEMBLING 1
/* The params read must not hold the user's first request back for long. */
#define PARAMS_TIMEOUT_MS 3000
#define RECONNECT_DELAY_MS 500
#define RETRY_SEND_MS 20
#define STORE_SEEN_INTERVAL_MS 60000
/* After a failed params read, do not ask again (before the user's
 * requests) for this long: a flaky link must not starve them. */
#define PARAMS_RETRY_MS 30000

enum params_state {
	PARAMS_UNKNOWN = 0, /* not asked on this connection */
	PARAMS_ASKING,
	PARAMS_DONE,        /* asked on this connection (answered or not) */
};

struct gw_req {
	TAILQ_ENTRY(gw_req) entry;
	struct gw_device *dev;
	int64_t id;
	uint8_t *frame;
	size_t len;
	struct smp_hdr hdr; /* as the caller sent it: hdr.seq is theirs */
	uint8_t wire_seq;
	bool sent;
	bool internal;      /* the registry's own params read */
	bool pipelined;
	bool extended;      /* waiting: the response time was added */
	uint64_t sent_us;   /* monotonic: request latency metric */
	uint32_t timeout_ms, connect_timeout_ms;
	struct event *timer;
	gw_rsp_cb cb;
	void *user_data;
};
TAILQ_HEAD(req_list, gw_req);

struct gw_device_counters {
	uint64_t requests, responses, timeouts, link_resets, not_connected;
	uint64_t dropped_rsp, malformed_rsp, malformed_req, too_big, connects;
	uint64_t timeout_resets;  /* links reset because requests timed out */
};

struct gw_device {
	TAILQ_ENTRY(gw_device) entry;
	struct gw_registry *reg;
	char *id, *name;
	struct link *link;
	bool owns_link;
	bool dying;
	uint16_t udp_port;
	uint32_t buf_size, buf_count;
	bool params_known;
	enum params_state params;
	uint64_t params_failed_ms;
	struct req_list queue, inflight;
	unsigned n_queued, n_inflight;
	uint8_t next_seq;
	unsigned consecutive_timeouts;
	bool split_sent;         /* a frame spanning writes went out on this link */
	bool bad_input_logged;   /* on this connection */
	int holds;
	bool present;            /* BLE: currently advertising / known */
	int rssi;
	uint64_t last_seen_ms, last_store_ms;
	uint64_t heard_ms;       /* BLE presence: last advertisement, frame or connected */
	json_t *slots, *adv;     /* slots: typed (devmodel.h) */
	uint64_t slots_ms;       /* when the slots were read */
	struct smpgw_adv rec;    /* the advertising record, when has_rec */
	bool has_rec;
	uint64_t rec_ms;         /* when it was last advertised */
	struct event *pump_ev, *reconnect_ev;
	struct gw_req *sending; /* the request inside link_send(), if any */
	struct gw_device_counters c;
	unsigned bonds_logged;   /* BLE: ble_link_bonds_made() at the last UP */
};
TAILQ_HEAD(dev_list, gw_device);

struct gw_registry {
	struct gw *gw;
	struct dev_list devices;
	size_t count;
	int64_t next_req_id;
	struct gw_registry_observer obs;
	void *obs_data;
	struct event *presence_ev; /* the [ble] presence_timeout sweep, once a watch is seen */
};


/* The BLE connection budget lends an unused link to waiting watches and
 * makes busy ones take turns: tell it what this device has going on. */
static void report_use(struct gw_device *dev)
{
	ble_link_set_use(dev->link, dev->n_inflight, dev->n_queued,
			 dev->holds > 0 && !dev->dying);
}

static void req_free(struct gw_req *req)
{
	if (req->timer)
		event_free(req->timer);
	free(req->frame);
	free(req);
}

static void dev_unlink_req(struct gw_device *dev, struct gw_req *req)
{
	if (req->sent) {
		TAILQ_REMOVE(&dev->inflight, req, entry);
		dev->n_inflight--;
	} else {
		TAILQ_REMOVE(&dev->queue, req, entry);
		dev->n_queued--;
	}
	report_use(dev);
}

static void schedule_pump(struct gw_device *dev)
{
	if (!dev->dying)
		event_active(dev->pump_ev, 0, 0);
}

static void params_done(struct gw_device *dev, int err, const uint8_t *frame,
			size_t len);

/* Unlinks req, runs its callback once, frees it. */
static void req_finish(struct gw_req *req, int err, const uint8_t *frame,
		       size_t len)
{
	struct gw_device *dev = req->dev;

	dev_unlink_req(dev, req);
	if (dev->sending == req)
		dev->sending = NULL; /* finished from inside link_send() */
	if (req->internal)
		params_done(dev, err, frame, len);
	else if (req->cb)
		req->cb(err, frame, len, req->user_data);
	req_free(req);
	schedule_pump(dev);
}

static void emit(struct gw_device *dev, const char *type, json_t *extra)
{
	json_t *data = json_pack("{s:s, s:s?}", "id", dev->id, "name", dev->name);

	if (extra) {
		json_object_update(data, extra);
		json_decref(extra);
	}
	gw_events_emit(gw_events(dev->reg->gw), type, data);
}

static void store_device(struct gw_device *dev)
{
	struct gw_store *store = gw_store(dev->reg->gw);
	char *adv = dev->adv ? json_dumps(dev->adv, JSON_COMPACT) : NULL;
	char *slots = dev->slots ? json_dumps(dev->slots, JSON_COMPACT) : NULL;
	struct gw_store_device d = {
		.id = dev->id, .name = dev->name,
		.transport = gw_device_transport(dev),
		.last_seen_ms = dev->last_seen_ms, .rssi = dev->rssi,
		.adv_json = adv, .rec_ms = dev->has_rec ? dev->rec_ms : 0,
		.slots_json = slots, .slots_ms = dev->slots_ms,
	};

	if (store && gw_store_device_put(store, &d) < 0)
		log_warn("%s: could not record the device in the store", dev->id);
	dev->last_store_ms = dev->last_seen_ms;
	free(adv);
	free(slots);
}

/* The smpgw record inside stored advertising JSON (as the daemon's
 * adv_json() writes it: manufacturer {company, data hex}). */
static bool record_of(const json_t *adv, struct smpgw_adv *rec)
{
	const json_t *m = json_object_get(adv, "manufacturer");
	const char *hex = json_string_value(json_object_get(m, "data"));
	uint8_t buf[64];
	int n;

	if (!hex || json_integer_value(json_object_get(m, "company")) != SMPGW_ADV_COMPANY_ID)
		return false;
	n = hex_decode(hex, buf, sizeof(buf));
	return n >= 0 && smpgw_adv_decode(buf, (size_t)n, rec) == 0;
}

/* What the store kept of a device from before a restart: the advertised
 * record and the slots with the times they were heard and read (so age_s
 * and source stay true), and when it was last seen. Newer state wins. */
static void restore_row(const struct gw_store_device *sd, uint16_t udp_port,
			void *user_data)
{
	struct gw_device *dev = user_data;
	json_t *v;

	if (!dev->last_seen_ms)
		dev->last_seen_ms = sd->last_seen_ms;
	if (!dev->slots && sd->slots_json && sd->slots_ms &&
	    (v = json_loads(sd->slots_json, 0, NULL))) {
		if (json_is_array(v)) {
			dev->slots = json_incref(v);
			dev->slots_ms = sd->slots_ms;
		}
		json_decref(v);
	}
	if (!dev->adv && sd->adv_json && (v = json_loads(sd->adv_json, 0, NULL))) {
		if (json_is_object(v)) {
			dev->adv = json_incref(v);
			dev->has_rec = sd->rec_ms && record_of(v, &dev->rec);
			dev->rec_ms = dev->has_rec ? sd->rec_ms : 0;
		}
		json_decref(v);
	}
}

static void restore_device(struct gw_device *dev)
{
	struct gw_store *store = gw_store(dev->reg->gw);

	if (store)
		gw_store_device_get(store, dev->id, restore_row, dev);
}

static void touch(struct gw_device *dev)
{
	dev->last_seen_ms = gw_now_ms(dev->reg->gw);
	dev->heard_ms = dev->last_seen_ms;
}

/* ---- metrics (GET /metrics): counted here, at the link, so frames,
 * bytes and latency are what the watches really saw, whoever asked ---- */

static void metric_frame(struct gw_device *dev, const char *dir, size_t len)
{
	struct gw_metrics *m = gw_metrics(dev->reg->gw);
	char l[80];

	if (!m)
		return;
	snprintf(l, sizeof(l), "transport=\"%s\",dir=\"%s\"",
		 gw_device_transport(dev), dir);
	gw_metrics_inc(m, GW_M_FRAMES, l);
	gw_metrics_add(m, GW_M_BYTES, l, (double)len);
}

/* kind: the per-device counter's name in gw_device_to_json(). */
static void metric_error(struct gw_device *dev, const char *kind)
{
	char l[96];

	snprintf(l, sizeof(l), "kind=\"%s\",transport=\"%s\"", kind,
		 gw_device_transport(dev));
	gw_metrics_inc(gw_metrics(dev->reg->gw), GW_M_ERRORS, l);
}

#define COUNT_ERR(dev, field, kind) \
	do { (dev)->c.field++; metric_error((dev), (kind)); } while (0)

static void metric_latency(struct gw_device *dev, const struct gw_req *req)
{
	char l[48];

	snprintf(l, sizeof(l), "transport=\"%s\"", gw_device_transport(dev));
	gw_metrics_observe(gw_metrics(dev->reg->gw), GW_M_REQ_LATENCY, l,
			   (double)(now_usec() - req->sent_us) / 1e6);
}

/* ---- timers ---- */

static void arm_timer(struct gw_req *req, uint32_t ms);

/* A request in flight timed out: reset the link after enough of them in a
 * row (MAX_TIMEOUTS_REASSEMBLING above for why one can be enough). */
static void timeout_strike(struct gw_device *dev)
{
	unsigned max = dev->split_sent ? MAX_TIMEOUTS_REASSEMBLING :
		       MAX_CONSECUTIVE_TIMEOUTS;

	if (dev->consecutive_timeouts < max || dev->dying ||
	    link_state(dev->link) == LINK_STATE_DOWN)
		return;
	if (dev->split_sent)
		log_info("%s: a request timed out after frames spanning several "
			 "writes: the watch's reassembly may be out of step, "
			 "resetting the link", dev->id);
	else
		log_info("%s: %u requests timed out in a row, resetting the link",
			 dev->id, dev->consecutive_timeouts);
	COUNT_ERR(dev, timeout_resets, "timeout_resets");
	dev->consecutive_timeouts = 0;
	link_disconnect(dev->link);
}

static void req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_req *req = arg;
	struct gw_device *dev = req->dev;
	bool up = link_state(dev->link) == LINK_STATE_UP;

	if (req->sent) {
		COUNT_ERR(dev, timeouts, "timeouts");
		dev->consecutive_timeouts++;
		log_debug("%s: request %lld (group %u id %u) timed out", dev->id,
			  (long long)req->id, req->hdr.group, req->hdr.id);
		req_finish(req, -ETIMEDOUT, NULL, 0);
		timeout_strike(dev);
		return;
	}
	/* Still queued. The link came up late: one response time more, once
	 * (the request may sit behind the params read or another request). */
	if (up && !req->extended) {
		req->extended = true;
		arm_timer(req, req->timeout_ms);
		return;
	}
	if (!up)
		COUNT_ERR(dev, not_connected, "not_connected");
	req_finish(req, up ? -ETIMEDOUT : -ENOTCONN, NULL, 0);
}

static void arm_timer(struct gw_req *req, uint32_t ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	evtimer_add(req->timer, &tv);
}

/* Waiting requests get their connect budget, plus one response time when
 * the link is up (they may sit behind a request in flight or the params
 * read); see req_timeout_cb() for a link that comes up late. */
static void arm_wait_timer(struct gw_req *req)
{
	bool up = link_state(req->dev->link) == LINK_STATE_UP;

	req->extended = up;
	arm_timer(req, req->connect_timeout_ms + (up ? req->timeout_ms : 0));
}

/* ---- sending ---- */

static bool seq_in_flight(struct gw_device *dev, uint8_t seq)
{
	struct gw_req *r;

	TAILQ_FOREACH(r, &dev->inflight, entry)
		if (r->wire_seq == seq)
			return true;
	return false;
}

static uint8_t next_wire_seq(struct gw_device *dev)
{
	/* At most 256 in flight is far beyond any buf_count; the loop ends. */
	for (int i = 0; i < 256; i++) {
		uint8_t seq = dev->next_seq++;

		if (!seq_in_flight(dev, seq))
			return seq;
	}
	return dev->next_seq++;
}

static unsigned max_inflight(const struct gw_device *dev)
{
	return dev->buf_count > 1 ? dev->buf_count - 1 : 1;
}

static bool may_send(struct gw_device *dev, const struct gw_req *head)
{
	struct gw_req *r;

	if (dev->n_inflight == 0)
		return true;
	if (!head->pipelined || dev->n_inflight >= max_inflight(dev))
		return false;
	TAILQ_FOREACH(r, &dev->inflight, entry)
		if (!r->pipelined)
			return false;
	return true;
}

/* Returns 0 when sent, 1 when it must wait, <0 when req was failed. */
static int send_one(struct gw_device *dev, struct gw_req *req)
{
	int r;

	if (dev->params_known && req->len > dev->buf_size) {
		COUNT_ERR(dev, too_big, "too_big");
		req_finish(req, -EMSGSIZE, NULL, 0);
		return -EMSGSIZE;
	}
	req->wire_seq = next_wire_seq(dev);
	req->frame[6] = req->wire_seq;
	/* Move to in flight before sending: a link may answer synchronously. */
	TAILQ_REMOVE(&dev->queue, req, entry);
	dev->n_queued--;
	TAILQ_INSERT_TAIL(&dev->inflight, req, entry);
	dev->n_inflight++;
	report_use(dev);
	req->sent = true;
	arm_timer(req, req->timeout_ms);
	dev->sending = req;
	req->sent_us = now_usec();
	r = link_send(dev->link, req->frame, req->len);
	if (r == 0)
		metric_frame(dev, "tx", req->len);
	if (r == 0 && link_mtu(dev->link) && req->len > link_mtu(dev->link))
		dev->split_sent = true;
	if (!dev->sending)
		return r == 0 ? 0 : -ECONNRESET; /* answered or failed already */
	dev->sending = NULL;
	if (r == 0)
		return 0;
	/* Not sent: back to the head of the queue, or fail it. */
	TAILQ_REMOVE(&dev->inflight, req, entry);
	dev->n_inflight--;
	req->sent = false;
	TAILQ_INSERT_HEAD(&dev->queue, req, entry);
	dev->n_queued++;
	report_use(dev);
	if (r == -EAGAIN || r == -ENOTCONN) {
		arm_wait_timer(req);
		return 1;
	}
	req_finish(req, r, NULL, 0);
	return r;
}

static void queue_params_read(struct gw_device *dev);

/*
 * A BLE watch the link cannot use until something changes (the watch
 * refused pairing, pairing with it is not allowed, or its bond is lost and
 * not replaced): the request error that says so, 0 otherwise. Requests
 * then fail at once instead of waiting their connect timeout.
 */
int gw_device_pairing_errno(const struct gw_device *dev)
{
	switch (ble_link_pairing(dev->link)) {
	case BLE_PAIRING_REFUSED:
		return -EKEYEXPIRED;
	case BLE_PAIRING_NOT_ALLOWED:
		return -ENOLINK;
	case BLE_PAIRING_BOND_LOST:
		return -EKEYREVOKED;
	case BLE_PAIRING_NONE:
	case BLE_PAIRING_PAIRING:
	case BLE_PAIRING_PAIRED:
		break;
	}
	return 0;
}

/* Fails every queued request with err (pairing: see above). */
static void fail_queued(struct gw_device *dev, int err)
{
	/* Bounded by n_queued; callbacks only add to the tail after the
	 * ones failed here, and those are failed by the next pump. */
	for (unsigned n = dev->n_queued; n && !TAILQ_EMPTY(&dev->queue); n--) {
		COUNT_ERR(dev, not_connected, "not_connected");
		req_finish(TAILQ_FIRST(&dev->queue), err, NULL, 0);
	}
}

static void ensure_connecting(struct gw_device *dev)
{
	int r;

	if (link_state(dev->link) != LINK_STATE_DOWN ||
	    evtimer_pending(dev->reconnect_ev, NULL))
		return;
	dev->c.connects++;
	r = link_connect(dev->link);
	if (r < 0) {
		struct timeval tv = { 0, RECONNECT_DELAY_MS * 1000 };

		log_debug("%s: connect failed: %s", dev->id, strerror(-r));
		evtimer_add(dev->reconnect_ev, &tv);
	}
}

static void pump(struct gw_device *dev)
{
	if (dev->dying)
		return;
	if (link_state(dev->link) != LINK_STATE_UP) {
		int perr = link_state(dev->link) == LINK_STATE_DOWN ?
			   gw_device_pairing_errno(dev) : 0;

		/* The link retries by itself (with its backoff); requests
		 * do not wait for that. */
		if (perr && dev->n_queued)
			fail_queued(dev, perr);
		if (dev->n_queued || dev->holds)
			ensure_connecting(dev);
		return;
	}
	if (dev->params == PARAMS_UNKNOWN && dev->n_queued) {
		if (!dev->params_failed_ms || gw_now_ms(dev->reg->gw) -
		    dev->params_failed_ms >= PARAMS_RETRY_MS)
			queue_params_read(dev);
		else
			dev->params = PARAMS_DONE;
	}
	/* Bounded: each pass sends or fails one request, or stops. */
	while (!TAILQ_EMPTY(&dev->queue)) {
		struct gw_req *head = TAILQ_FIRST(&dev->queue);

		if (!may_send(dev, head))
			break;
		if (send_one(dev, head) > 0) {
			struct timeval tv = { 0, RETRY_SEND_MS * 1000 };

			event_add(dev->pump_ev, &tv);
			break;
		}
	}
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
	pump(arg);
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	pump(arg);
}

/* ---- requests ---- */

static bool is_first_upload_chunk(const struct smp_hdr *hdr,
				  const uint8_t *payload, size_t len)
{
	cbor_item_t *map = NULL;
	const cbor_item_t *off;
	bool first = false;

	if (hdr->group != SMP_GROUP_IMG || hdr->id != SMP_IMG_UPLOAD ||
	    hdr->op != SMP_OP_WRITE)
		return false;
	if (smp_cbor_decode(payload, len, &map) < 0)
		return false;
	off = smp_cbor_map_get(map, "off");
	if (off && cbor_isa_uint(off) && cbor_get_int(off) == 0)
		first = true;
	cbor_decref(&map);
	return first;
}

static struct gw_req *req_new(struct gw_device *dev, const uint8_t *frame,
			      size_t len, const struct smp_hdr *hdr)
{
	struct gw_req *req = xnew(struct gw_req);

	req->dev = dev;
	req->id = dev->reg->next_req_id++;
	req->frame = xmemdup(frame, len);
	req->len = len;
	req->hdr = *hdr;
	req->timer = evtimer_new(gw_base(dev->reg->gw), req_timeout_cb, req);
	return req;
}

static void enqueue(struct gw_device *dev, struct gw_req *req, bool front)
{
	if (front)
		TAILQ_INSERT_HEAD(&dev->queue, req, entry);
	else
		TAILQ_INSERT_TAIL(&dev->queue, req, entry);
	dev->n_queued++;
	report_use(dev);
	arm_wait_timer(req);
	schedule_pump(dev);
}

int64_t gw_device_request(struct gw_device *dev, const uint8_t *frame,
			  size_t len, const struct gw_req_opts *opts,
			  gw_rsp_cb cb, void *user_data)
{
	const struct gw_config *cfg = gw_config(dev->reg->gw);
	struct gw_req_opts none = { 0 };
	struct smp_hdr hdr;
	struct gw_req *req;
	int r;

	if (!opts)
		opts = &none;
	r = smp_frame_check(frame, len, &hdr);
	if (r < 0 || (size_t)r != len || !smp_op_is_request(hdr.op)) {
		COUNT_ERR(dev, malformed_req, "malformed_requests");
		return -EBADMSG;
	}
	if (dev->dying)
		return -ECANCELED;
	if (cfg->request.queue_max && dev->n_queued >= cfg->request.queue_max)
		return -EBUSY;
	req = req_new(dev, frame, len, &hdr);
	req->cb = cb;
	req->user_data = user_data;
	req->pipelined = opts->pipelined;
	req->timeout_ms = opts->timeout_ms ? opts->timeout_ms : cfg->request.timeout_ms;
	req->connect_timeout_ms = opts->connect_timeout_ms ?
		opts->connect_timeout_ms : cfg->request.connect_timeout_ms;
	/* The first upload chunk waits for the slot erase: seconds. */
	if (is_first_upload_chunk(&hdr, frame + SMP_HDR_LEN, hdr.len))
		req->timeout_ms = MAX(req->timeout_ms,
				      cfg->request.first_chunk_timeout_ms);
	dev->c.requests++;
	enqueue(dev, req, false);
	return req->id;
}

static struct gw_req *find_req(struct gw_device *dev, int64_t id)
{
	struct gw_req *r;

	TAILQ_FOREACH(r, &dev->queue, entry)
		if (r->id == id)
			return r;
	TAILQ_FOREACH(r, &dev->inflight, entry)
		if (r->id == id)
			return r;
	return NULL;
}

int gw_device_cancel(struct gw_device *dev, int64_t id)
{
	struct gw_req *req = find_req(dev, id);

	if (!req || req->internal)
		return -ENOENT;
	/* A late response to it is dropped as unsolicited. */
	dev_unlink_req(dev, req);
	req_free(req);
	schedule_pump(dev);
	return 0;
}

/* ---- mcumgr params ---- */

static void queue_params_read(struct gw_device *dev)
{
	/* os group, command 6, SMP v2 read with an empty map. */
	static const uint8_t frame[] = { 0x08, 0, 0, 1, 0, SMP_GROUP_OS, 0,
					 SMP_OS_PARAMS, 0xa0 };
	struct smp_hdr hdr;
	struct gw_req *req;

	smp_frame_check(frame, sizeof(frame), &hdr);
	req = req_new(dev, frame, sizeof(frame), &hdr);
	req->internal = true;
	req->timeout_ms = MIN(PARAMS_TIMEOUT_MS,
			      gw_config(dev->reg->gw)->request.timeout_ms);
	req->connect_timeout_ms = gw_config(dev->reg->gw)->request.connect_timeout_ms;
	dev->params = PARAMS_ASKING;
	enqueue(dev, req, true);
}

static bool get_uint(const cbor_item_t *map, const char *key, uint32_t *ret)
{
	const cbor_item_t *v = smp_cbor_map_get(map, key);

	if (!v || !cbor_isa_uint(v) || cbor_get_int(v) == 0 ||
	    cbor_get_int(v) > UINT32_MAX)
		return false;
	*ret = (uint32_t)cbor_get_int(v);
	return true;
}

static void params_done(struct gw_device *dev, int err, const uint8_t *frame,
			size_t len)
{
	cbor_item_t *map = NULL;
	struct smp_err e;
	uint32_t size, count;

	dev->params = PARAMS_DONE;
	if (err || !frame) {
		log_debug("%s: mcumgr params: %s", dev->id, strerror(-err));
		if (err != -ECANCELED)
			dev->params_failed_ms = gw_now_ms(dev->reg->gw);
		return;
	}
	dev->params_failed_ms = 0;
	if (smp_err_extract(frame + SMP_HDR_LEN, len - SMP_HDR_LEN, &e) < 0 ||
	    e.present) {
		log_debug("%s: mcumgr params not supported, using defaults", dev->id);
		return;
	}
	if (smp_cbor_decode(frame + SMP_HDR_LEN, len - SMP_HDR_LEN, &map) < 0)
		return;
	if (get_uint(map, "buf_size", &size) && get_uint(map, "buf_count", &count)) {
		gw_device_set_params(dev, size, count);
		log_info("%s: buf_size %u, buf_count %u", dev->id, size, count);
	}
	cbor_decref(&map);
}

/* ---- link callbacks ---- */

static struct gw_req *match_rsp(struct gw_device *dev, const struct smp_hdr *h)
{
	struct gw_req *r;

	TAILQ_FOREACH(r, &dev->inflight, entry)
		if (r->wire_seq == h->seq && r->hdr.group == h->group &&
		    r->hdr.id == h->id && smp_rsp_op(r->hdr.op) == h->op)
			return r;
	return NULL;
}

/* Bad input from the watch: counted always, logged at info once per
 * connection (a watch sending garbage must not flood the log), then at
 * debug level. */
static void bad_input(struct gw_device *dev, const char *what)
{
	COUNT_ERR(dev, malformed_rsp, "malformed_responses");
	if (!dev->bad_input_logged)
		log_info("%s: dropped %s (counted in malformed_responses; further ones "
			 "on this connection at debug level)", dev->id, what);
	else
		log_debug("%s: dropped %s", dev->id, what);
	dev->bad_input_logged = true;
}

static void on_bad_input(struct link *link, const char *what, void *user_data)
{
	bad_input(user_data, what);
}

static void on_frame(struct link *link, const uint8_t *frame, size_t len,
		     void *user_data)
{
	struct gw_device *dev = user_data;
	struct smp_hdr hdr;
	struct gw_req *req;
	uint8_t *copy;
	int r = smp_frame_check(frame, len, &hdr);

	metric_frame(dev, "rx", len);
	if (r < 0 || (size_t)r != len || smp_op_is_request(hdr.op)) {
		bad_input(dev, "a malformed frame");
		return;
	}
	touch(dev);
	req = match_rsp(dev, &hdr);
	if (!req) {
		/* Duplicate, late (timed out/cancelled) or unsolicited. */
		COUNT_ERR(dev, dropped_rsp, "dropped_responses");
		log_debug("%s: dropped a response to no request in flight (late, "
			  "duplicate or unsolicited): seq %u group %u id %u",
			  dev->id, hdr.seq, hdr.group, hdr.id);
		return;
	}
	dev->c.responses++;
	metric_latency(dev, req);
	dev->consecutive_timeouts = 0;
	copy = xmemdup(frame, len);
	copy[6] = req->hdr.seq;
	evtimer_del(req->timer);
	req_finish(req, 0, copy, len);
	free(copy);
}

static void fail_inflight(struct gw_device *dev, int err)
{
	/* Bounded by n_inflight; callbacks cannot add to inflight (sending
	 * happens only from the pump). */
	while (!TAILQ_EMPTY(&dev->inflight))
		req_finish(TAILQ_FIRST(&dev->inflight), err, NULL, 0);
}

static void on_state(struct link *link, enum link_state state, int err,
		     void *user_data)
{
	struct gw_device *dev = user_data;

	switch (state) {
	case LINK_STATE_UP:
		log_info("%s: connected (%s, mtu %zu%s%s%s)", dev->id,
			 link_transport(link), link_mtu(link),
			 ble_link_pairing(link) == BLE_PAIRING_PAIRED ? ", paired" : "",
			 ble_link_bonds_made(link) > dev->bonds_logged ? ": new bond" : "",
			 ble_link_bonds_made(link) > dev->bonds_logged &&
			 ble_link_bonds_made(link) > 1 ? " (paired again)" : "");
		dev->bonds_logged = ble_link_bonds_made(link);
		touch(dev);
		dev->params = PARAMS_UNKNOWN;
		dev->consecutive_timeouts = 0;
		dev->split_sent = false; /* a new link: the watch's reassembly is empty */
		dev->bad_input_logged = false;
		emit(dev, "device.connected", json_pack("{s:s}", "transport",
							 link_transport(link)));
		store_device(dev);
		break;
	case LINK_STATE_DOWN:
		if (dev->n_inflight)
			COUNT_ERR(dev, link_resets, "link_resets");
		log_info("%s: disconnected%s%s%s%s", dev->id, err ? ": " : "",
			 err ? strerror(-err) : "", gw_device_pairing_errno(dev) ?
			 ", pairing: " : "", gw_device_pairing_errno(dev) ?
			 ble_pairing_str(ble_link_pairing(link)) : "");
		emit(dev, "device.disconnected",
		     json_pack("{s:s?, s:s?}", "error", err ? strerror(-err) : NULL,
			       "pairing", strcmp(link_transport(link), "ble") ? NULL :
			       ble_pairing_str(ble_link_pairing(link))));
		fail_inflight(dev, -ECONNRESET);
		if (dev->n_queued) {
			struct timeval tv = { 0, RECONNECT_DELAY_MS * 1000 };

			evtimer_add(dev->reconnect_ev, &tv);
		}
		break;
	case LINK_STATE_CONNECTING:
		break;
	}
	schedule_pump(dev);
}

/* ---- registry ---- */

struct gw_registry *gw_registry_new(struct gw *gw)
{
	struct gw_registry *reg = xnew(struct gw_registry);

	reg->gw = gw;
	reg->next_req_id = 1;
	TAILQ_INIT(&reg->devices);
	return reg;
}

static void device_free(struct gw_device *dev)
{
	dev->dying = true;
	while (!TAILQ_EMPTY(&dev->queue))
		req_finish(TAILQ_FIRST(&dev->queue), -ECANCELED, NULL, 0);
	fail_inflight(dev, -ECANCELED);
	report_use(dev);
	if (dev->owns_link) {
		link_free(dev->link);
	} else {
		static const struct link_callbacks none = { 0 };

		link_set_callbacks(dev->link, &none, NULL);
	}
	event_free(dev->pump_ev);
	event_free(dev->reconnect_ev);
	json_decref(dev->slots);
	json_decref(dev->adv);
	free(dev->id);
	free(dev->name);
	free(dev);
}

struct gw_registry *gw_registry_free(struct gw_registry *reg)
{
	struct gw_device *dev;

	if (!reg)
		return NULL;
	/* The record's and the slots' times as they are now, for the next start. */
	TAILQ_FOREACH(dev, &reg->devices, entry)
		if (dev->has_rec || dev->slots)
			store_device(dev);
	while (!TAILQ_EMPTY(&reg->devices))
		gw_registry_remove(reg, TAILQ_FIRST(&reg->devices));
	if (reg->presence_ev)
		event_free(reg->presence_ev);
	free(reg);
	return NULL;
}

void gw_registry_set_observer(struct gw_registry *reg,
			      const struct gw_registry_observer *obs,
			      void *user_data)
{
	reg->obs = *obs;
	reg->obs_data = user_data;
}

static uint16_t pick_port(struct gw_registry *reg, const char *id,
			  uint16_t pinned)
{
	const struct gw_config *cfg = gw_config(reg->gw);
	struct gw_store *store = gw_store(reg->gw);
	uint16_t reserved[64], port = 0;
	size_t n = 0;
	int r;

	/* Base 0: ephemeral ports chosen by the OS, nothing to remember. */
	if (!pinned && cfg->udp.base_port == 0)
		return 0;
	for (size_t i = 0; i < cfg->n_devices && n < ARRAY_SIZE(reserved); i++)
		if (cfg->devices[i].udp_port && strcmp(cfg->devices[i].name, id))
			reserved[n++] = cfg->devices[i].udp_port;
	if (!store)
		return pinned;
	r = gw_store_port_assign(store, id, pinned, cfg->udp.base_port, reserved,
				 n, &port);
	if (r < 0) {
		log_err("%s: no UDP port available: %s", id, strerror(-r));
		return pinned;
	}
	return port;
}

struct gw_device *gw_registry_add(struct gw_registry *reg, const char *id,
				  const char *name, struct link *link,
				  bool owns_link, uint16_t pinned_port)
{
	static const struct link_callbacks cbs = { .frame = on_frame,
						   .state = on_state,
						   .bad_input = on_bad_input };
	struct event_base *base = gw_base(reg->gw);
	struct gw_device *dev;

	if (gw_device_find(reg->gw, id))
		return NULL;
	dev = xnew(struct gw_device);
	dev->reg = reg;
	dev->id = xstrdup(id);
	dev->name = name ? xstrdup(name) : NULL;
	dev->link = link;
	dev->owns_link = owns_link;
	dev->buf_size = GW_DEVICE_DEFAULT_BUF_SIZE;
	dev->buf_count = GW_DEVICE_DEFAULT_BUF_COUNT;
	dev->rssi = 127;
	dev->present = true;
	TAILQ_INIT(&dev->queue);
	TAILQ_INIT(&dev->inflight);
	dev->pump_ev = event_new(base, -1, 0, pump_cb, dev);
	dev->reconnect_ev = evtimer_new(base, reconnect_cb, dev);
	dev->udp_port = pick_port(reg, id, pinned_port);
	restore_device(dev);
	link_set_callbacks(link, &cbs, dev);
	TAILQ_INSERT_TAIL(&reg->devices, dev, entry);
	reg->count++;
	store_device(dev);
	if (reg->obs.added)
		reg->obs.added(dev, reg->obs_data);
	emit(dev, "device.added", json_pack("{s:s, s:i}", "transport",
					    link_transport(link), "udp_port",
					    dev->udp_port));
	return dev;
}

void gw_registry_remove(struct gw_registry *reg, struct gw_device *dev)
{
	if (reg->obs.removed)
		reg->obs.removed(dev, reg->obs_data);
	TAILQ_REMOVE(&reg->devices, dev, entry);
	reg->count--;
	emit(dev, "device.removed", NULL);
	device_free(dev);
}

struct gw_device *gw_device_find(struct gw *gw, const char *id_or_name)
{
	struct gw_registry *reg = gw_registry_of(gw);
	struct gw_device *dev;

	if (!id_or_name)
		return NULL;
	TAILQ_FOREACH(dev, &reg->devices, entry)
		if (!strcasecmp(dev->id, id_or_name))
			return dev;
	TAILQ_FOREACH(dev, &reg->devices, entry)
		if (dev->name && !strcmp(dev->name, id_or_name))
			return dev;
	return NULL;
}

void gw_device_foreach(struct gw *gw, gw_device_iter_cb cb, void *user_data)
{
	struct gw_registry *reg = gw_registry_of(gw);
	struct gw_device *dev, *next;

	for (dev = TAILQ_FIRST(&reg->devices); dev; dev = next) {
		next = TAILQ_NEXT(dev, entry);
		cb(dev, user_data);
	}
}

size_t gw_device_count(struct gw *gw)
{
	return gw_registry_of(gw)->count;
}

/* ---- accessors ---- */

const char *gw_device_id(const struct gw_device *dev)
{
	return dev->id;
}

const char *gw_device_name(const struct gw_device *dev)
{
	return dev->name ? dev->name : dev->id;
}

const char *gw_device_transport(const struct gw_device *dev)
{
	return link_transport(dev->link);
}

enum link_state gw_device_link_state(const struct gw_device *dev)
{
	return link_state(dev->link);
}

uint16_t gw_device_udp_port(const struct gw_device *dev)
{
	return dev->udp_port;
}

void gw_device_set_udp_port(struct gw_device *dev, uint16_t port)
{
	dev->udp_port = port;
}

size_t gw_device_mtu(const struct gw_device *dev)
{
	return link_mtu(dev->link);
}

struct link *gw_device_link(const struct gw_device *dev)
{
	return dev->link;
}

void gw_device_params(const struct gw_device *dev, uint32_t *buf_size,
		      uint32_t *buf_count)
{
	if (buf_size)
		*buf_size = dev->buf_size;
	if (buf_count)
		*buf_count = dev->buf_count;
}

void gw_device_set_params(struct gw_device *dev, uint32_t buf_size,
			  uint32_t buf_count)
{
	/* Below the SMP header plus a small map nothing works: ignore. */
	if (buf_size < 32 || buf_count == 0)
		return;
	dev->buf_size = buf_size;
	dev->buf_count = buf_count;
	dev->params_known = true;
	schedule_pump(dev);
}

bool gw_device_params_known(const struct gw_device *dev)
{
	return dev->params_known;
}

void gw_device_hold(struct gw_device *dev)
{
	dev->holds++;
	report_use(dev);
	schedule_pump(dev);
}

void gw_device_release(struct gw_device *dev)
{
	if (dev->holds > 0)
		dev->holds--;
	report_use(dev);
}

void gw_device_count_malformed(struct gw_device *dev)
{
	COUNT_ERR(dev, malformed_req, "malformed_requests");
}

void gw_device_set_slots(struct gw_device *dev, json_t *images)
{
	json_decref(dev->slots);
	dev->slots = images ? gw_slots_typed(images) : NULL;
	dev->slots_ms = dev->slots ? gw_now_ms(dev->reg->gw) : 0;
	if (dev->slots)
		store_device(dev); /* kept for the next start */
}

const json_t *gw_device_slots(const struct gw_device *dev)
{
	return dev->slots;
}

const struct smpgw_adv *gw_device_adv_record(const struct gw_device *dev,
					     uint64_t *seen_ms)
{
	if (!dev->has_rec)
		return NULL;
	if (seen_ms)
		*seen_ms = dev->rec_ms;
	return &dev->rec;
}

int gw_device_rssi(const struct gw_device *dev)
{
	return dev->rssi;
}

uint64_t gw_device_last_seen(const struct gw_device *dev)
{
	return dev->last_seen_ms;
}

/* A new record (first, or different from the last): worth a store write
 * and an event at once, unlike the same record seen again. */
static bool note_record(struct gw_device *dev, const struct smpgw_adv *rec)
{
	bool changed;

	if (!rec)
		return false;
	/* Field by field: the struct has padding. */
	changed = !dev->has_rec || dev->rec.fw.major != rec->fw.major ||
		  dev->rec.fw.minor != rec->fw.minor ||
		  dev->rec.fw.revision != rec->fw.revision ||
		  dev->rec.fw.build != rec->fw.build ||
		  memcmp(dev->rec.hash, rec->hash, sizeof(rec->hash)) ||
		  dev->rec.battery != rec->battery || dev->rec.flags != rec->flags;
	dev->rec = *rec;
	dev->has_rec = true;
	dev->rec_ms = gw_now_ms(dev->reg->gw);
	return changed;
}

/* ---- BLE presence: a watch that stopped advertising (out of range,
 * switched off) keeps its Device1 object in bluetoothd while bonded or
 * until TemporaryTimeout; discovery reports every advertisement
 * (DuplicateData), so silence for [ble] presence_timeout means gone. A
 * connected watch does not advertise but is in range. ---- */

static void presence_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct gw_registry *reg = arg;
	uint64_t now = gw_now_ms(reg->gw);
	uint64_t limit = gw_config(reg->gw)->ble.presence_timeout_ms;
	struct gw_device *dev;

	/* gw_device_lost() only emits an event: the list stays as it is. */
	TAILQ_FOREACH(dev, &reg->devices, entry) {
		if (!dev->present || strcmp(link_transport(dev->link), "ble"))
			continue;
		if (link_state(dev->link) == LINK_STATE_UP)
			dev->heard_ms = now;
		else if (now - dev->heard_ms >= limit)
			gw_device_lost(dev);
	}
}

/* Started with the first advertisement: a gateway without BLE has none. */
static void presence_start(struct gw_registry *reg)
{
	uint32_t limit = gw_config(reg->gw)->ble.presence_timeout_ms;
	/* A quarter of the timeout: out of range within 1.25 x the timeout. */
	uint32_t period = MIN(MAX(limit / 4, 100u), 5000u);
	struct timeval tv = { period / 1000, (period % 1000) * 1000 };

	if (reg->presence_ev || !limit)
		return;
	reg->presence_ev = event_new(gw_base(reg->gw), -1, EV_PERSIST, presence_sweep, reg);
	event_add(reg->presence_ev, &tv);
}

void gw_device_seen(struct gw_device *dev, const char *name, int rssi,
		    json_t *adv, const struct smpgw_adv *rec)
{
	bool was_present = dev->present;
	bool changed = note_record(dev, rec);

	presence_start(dev->reg);

	if (name && (!dev->name || strcmp(dev->name, name))) {
		free(dev->name);
		dev->name = xstrdup(name);
	}
	dev->rssi = rssi;
	if (adv) {
		json_decref(dev->adv);
		dev->adv = adv;
	}
	dev->present = true;
	touch(dev);
	/* Memory moves per advertisement; the store at most every
	 * STORE_SEEN_INTERVAL_MS per watch (or when the record changed). */
	if (!was_present || changed || dev->last_seen_ms - dev->last_store_ms >=
	    STORE_SEEN_INTERVAL_MS) {
		store_device(dev);
		emit(dev, "device.seen", json_pack("{s:i}", "rssi", rssi));
	}
}

void gw_device_lost(struct gw_device *dev)
{
	if (!dev->present)
		return;
	dev->present = false;
	emit(dev, "device.lost", NULL);
}

void gw_device_set_absent(struct gw_device *dev)
{
	dev->present = false;
}

static json_t *counters_json(const struct gw_device_counters *c)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "requests", (json_int_t)c->requests,
			 "responses", (json_int_t)c->responses,
			 "timeouts", (json_int_t)c->timeouts,
			 "link_resets", (json_int_t)c->link_resets,
			 "not_connected", (json_int_t)c->not_connected,
			 "dropped_responses", (json_int_t)c->dropped_rsp,
			 "malformed_responses", (json_int_t)c->malformed_rsp,
			 "malformed_requests", (json_int_t)c->malformed_req,
			 "too_big", (json_int_t)c->too_big,
			 "connects", (json_int_t)c->connects,
			 "timeout_resets", (json_int_t)c->timeout_resets);
}

/* BLE: the id is the address; config devices: their address or tty. */
static const char *device_address(const struct gw_device *dev)
{
	const struct gw_device_conf *d = gw_config_find_device(gw_config(dev->reg->gw),
							       dev->id);

	if (d && d->transport == GW_TRANSPORT_SERIAL && d->path)
		return d->path;
	if (d && d->address)
		return d->address;
	return dev->id;
}

/* What devmodel.h makes of the slots and the advertising record. */
static void typed_state(const struct gw_device *dev, json_t *o)
{
	uint64_t now = gw_now_ms(dev->reg->gw);
	json_t *fw = gw_firmware_typed(dev->slots, dev->slots_ms,
				       dev->has_rec ? &dev->rec : NULL, dev->rec_ms, now);

	json_object_set_new(o, "slots_age_s", dev->slots ?
			    json_real(now > dev->slots_ms ?
				      (double)(now - dev->slots_ms) / 1000.0 : 0.0) :
			    json_null());
	json_object_set_new(o, "advertised", dev->has_rec ?
			    gw_adv_typed(&dev->rec, dev->rec_ms, now) : json_null());
	json_object_set_new(o, "battery", dev->has_rec &&
			    dev->rec.battery != SMPGW_ADV_BATTERY_UNKNOWN ?
			    json_integer(dev->rec.battery) : json_null());
	json_object_set_new(o, "firmware", fw ? fw : json_null());
}

json_t *gw_device_to_json(const struct gw_device *dev)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:b, s:i, s:i, s:b, s:i, s:i}",
			      "id", dev->id,
			      "name", gw_device_name(dev),
			      "transport", gw_device_transport(dev),
			      "link_state", link_state_str(link_state(dev->link)),
			      "udp_port", dev->udp_port,
			      "mtu", (json_int_t)link_mtu(dev->link),
			      "present", dev->present,
			      "buf_size", (int)dev->buf_size,
			      "buf_count", (int)dev->buf_count,
			      "params_from_device", dev->params_known,
			      "queued", (int)dev->n_queued,
			      "in_flight", (int)dev->n_inflight);

	json_object_set_new(o, "address", json_string(device_address(dev)));
	json_object_set_new(o, "pairing", strcmp(gw_device_transport(dev), "ble") ?
			    json_null() :
			    json_string(ble_pairing_str(ble_link_pairing(dev->link))));
	json_object_set_new(o, "rssi", dev->rssi == 127 ? json_null() :
			    json_integer(dev->rssi));
	json_object_set_new(o, "last_seen", dev->last_seen_ms ?
			    json_integer((json_int_t)dev->last_seen_ms) : json_null());
	json_object_set_new(o, "slots", dev->slots ? json_incref(dev->slots) :
			    json_null());
	json_object_set_new(o, "advertising", dev->adv ? json_incref(dev->adv) :
			    json_null());
	json_object_set_new(o, "counters", counters_json(&dev->c));
	/* BLE: bonds made with the watch since the daemon started. */
	json_object_set_new(json_object_get(o, "counters"), "pairings",
			    json_integer(ble_link_bonds_made(dev->link)));
	typed_state(dev, o);
	return o;
}
