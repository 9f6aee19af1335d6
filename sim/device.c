/* SPDX-License-Identifier: MIT */
/*
 * One simulated watch: lifetime, the SMP request queue (buf_count buffers,
 * one request processed at a time like Zephyr's SMP work queue, the reply
 * due after the simulated processing and flash time), SMP dispatch by group
 * tables, reply faults, observers, and MCUboot's decisions across resets.
 * The group handlers live in grp-*.c, the flash slots in slot.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec/cbor-util.h"
#include "device-int.h"
#include "smpgw/adv.h"
#include "util/util.h"

#define SIM_OS_RESET_MS 250      /* CONFIG_MCUMGR_GRP_OS_RESET_MS */

static const struct sim_group *const groups[] = {
	&sim_grp_os, &sim_grp_img, &sim_grp_stat, &sim_grp_user,
};

void sim_device_config_default(struct sim_device_config *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->name = "PineTime";
	ret->address = "C0:FF:EE:00:00:01";
	ret->rssi = -60;
	ret->in_range = true;
	sim_link_model_default(&ret->link);
	ret->flash.erase_sector_us = 70000;
	ret->flash.program_page_us = 400;
	ret->boot_ms = 1500;
	ret->proc_us = 200;
	ret->battery_mv = 4034; /* 80 % on the firmware's curve (smpgw_battery_percent) */
	ret->battery_pct = 80;
}

void sim_faults_default(struct sim_faults *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->disconnect_at_offset = -1;
	ret->disconnect_after_frames = -1;
	ret->flash_slow_factor = 1;
	ret->lossy_burst = -1;
}

static void work_cb(evutil_socket_t fd, short what, void *arg);
static void reset_cb(evutil_socket_t fd, short what, void *arg);
static void boot_cb(evutil_socket_t fd, short what, void *arg);

struct sim_device *sim_device_new(struct event_base *base, const struct sim_device_config *cfg)
{
	struct sim_device *dev;
	struct sim_image *img;

	if (!base || !cfg || sim_link_model_validate(&cfg->link, NULL) < 0)
		return NULL;
	dev = xnew(struct sim_device);
	dev->base = base;
	dev->name = xstrdup(cfg->name ? cfg->name : "PineTime");
	dev->address = xstrdup(cfg->address ? cfg->address : "C0:FF:EE:00:00:01");
	dev->rssi = cfg->rssi;
	dev->adapter = cfg->adapter;
	dev->in_range = cfg->in_range;
	dev->no_primary = cfg->no_primary;
	dev->image_check = cfg->image_check;
	dev->link = cfg->link;
	dev->flash = cfg->flash;
	dev->boot_ms = cfg->boot_ms;
	dev->self_check_ms = cfg->self_check_ms;
	dev->proc_us = cfg->proc_us;
	dev->battery_mv = (uint16_t)MIN(cfg->battery_mv, 65535u);
	dev->battery_pct = cfg->battery_pct;
	dev->rng = cfg->seed ? cfg->seed : 0x5eed;
	sim_faults_default(&dev->faults);
	if (!dev->no_primary) {
		img = cfg->initial ? sim_image_ref(cfg->initial) :
		      sim_image_synthesize(1, 0, 0, 0, 4096, cfg->seed);
		slot_init_shared(&dev->slot[0], img);
		sim_image_unref(img);
	}
	dev->work_ev = evtimer_new(base, work_cb, dev);
	dev->reset_ev = evtimer_new(base, reset_cb, dev);
	dev->boot_ev = evtimer_new(base, boot_cb, dev);
	dev->state = SIM_DEV_UP;
	dev->boot_count = 1;
	dev->reset_cause = SMPGW_RESET_POWER_ON;
	dev->boot_usec = now_usec();
	return dev;
}

static void queue_flush(struct sim_device *dev)
{
	struct sim_pending *p, *next;

	for (p = dev->head; p; p = next) {
		next = p->next;
		free(p->frame);
		free(p);
	}
	dev->head = dev->tail = NULL;
	dev->queued = 0;
	dev->busy = false;
	free(dev->rsp);
	dev->rsp = NULL;
	if (dev->work_ev)
		evtimer_del(dev->work_ev);
}

struct sim_device *sim_device_free(struct sim_device *dev)
{
	if (!dev)
		return NULL;
	queue_flush(dev);
	event_free(dev->work_ev);
	event_free(dev->reset_ev);
	event_free(dev->boot_ev);
	slot_clear(&dev->slot[0]);
	slot_clear(&dev->slot[1]);
	free(dev->obs);
	free(dev->name);
	free(dev->address);
	free(dev);
	return NULL;
}

/* ---- observers ------------------------------------------------------------ */

unsigned sim_device_observe(struct sim_device *dev, const struct sim_device_observer *ops,
			    void *user_data)
{
	dev->obs = xrealloc(dev->obs, (dev->nobs + 1) * sizeof(*dev->obs));
	dev->obs[dev->nobs] = (struct sim_observer_ent){ ++dev->next_obs_id, ops, user_data };
	dev->nobs++;
	return dev->next_obs_id;
}

static void obs_compact(struct sim_device *dev)
{
	size_t j = 0;

	if (dev->obs_iterating)
		return;
	for (size_t i = 0; i < dev->nobs; i++)
		if (dev->obs[i].ops)
			dev->obs[j++] = dev->obs[i];
	dev->nobs = j;
}

void sim_device_unobserve(struct sim_device *dev, unsigned id)
{
	for (size_t i = 0; i < dev->nobs; i++)
		if (dev->obs[i].id == id)
			dev->obs[i].ops = NULL;
	obs_compact(dev);
}

enum obs_event { OBS_RESET, OBS_BOOTED, OBS_RANGE, OBS_DISCONNECT };

static void notify(struct sim_device *dev, enum obs_event ev, bool arg)
{
	dev->obs_iterating++;
	/* observers added during the walk are not called this time */
	size_t n = dev->nobs;
	for (size_t i = 0; i < n; i++) {
		const struct sim_device_observer *o = dev->obs[i].ops;
		void *ud = dev->obs[i].user_data;

		if (!o)
			continue;
		switch (ev) {
		case OBS_RESET: if (o->reset) o->reset(dev, ud); break;
		case OBS_BOOTED: if (o->booted) o->booted(dev, ud); break;
		case OBS_RANGE: if (o->range) o->range(dev, arg, ud); break;
		case OBS_DISCONNECT: if (o->disconnect) o->disconnect(dev, ud); break;
		}
	}
	dev->obs_iterating--;
	obs_compact(dev);
}

/* ---- SMP dispatch ------------------------------------------------------- */

int sim_req_group_err(struct sim_req *req, uint16_t group, int rc, int legacy_rc)
{
	req->err_group = group;
	req->err_rc = rc;
	req->legacy_rc = legacy_rc;
	return SIM_RC_GROUP;
}

static const struct sim_handler *find_handler(const struct smp_hdr *h)
{
	for (size_t i = 0; i < ARRAY_SIZE(groups); i++) {
		const struct sim_group *g = groups[i];

		if (g->id != h->group)
			continue;
		if (h->id >= g->count)
			return NULL;
		return &g->handlers[h->id];
	}
	return NULL;
}

/* Runs the handler; returns 0 (req->rsp filled) or an rc / SIM_RC_GROUP. */
static int dispatch(struct sim_req *req, const uint8_t *payload, size_t plen)
{
	const struct smp_hdr *h = req->hdr;
	const struct sim_handler *hd;
	sim_handler_fn fn;
	cbor_item_t *body = NULL;
	int rc;

	if (h->ver > SMP_VER_2)
		return SMP_RC_UNSUPPORTED_TOO_NEW;
	if (!smp_op_is_request(h->op))
		return SMP_RC_EINVAL;
	hd = find_handler(h);
	fn = !hd ? NULL : h->op == SMP_OP_READ ? hd->read : hd->write;
	if (!fn)
		return SMP_RC_ENOTSUP;
	if (plen == 0)
		body = cbor_new_definite_map(0);
	else if (smp_cbor_decode(payload, plen, &body) < 0 || !cbor_isa_map(body)) {
		if (body)
			cbor_decref(&body);
		return SMP_RC_EINVAL;
	}
	req->body = body;
	rc = fn(req);
	cbor_decref(&body);
	req->body = NULL;
	return rc;
}

static cbor_item_t *error_map(const struct sim_req *req, int rc)
{
	cbor_item_t *m = smp_cbor_map_new_indefinite();

	if (rc == SIM_RC_GROUP && req->hdr->ver == SMP_VER_2) {
		cbor_item_t *e = smp_cbor_map_new_indefinite();
		smp_cbor_map_put_uint(e, "group", req->err_group);
		smp_cbor_map_put_uint(e, "rc", (uint64_t)req->err_rc);
		smp_cbor_map_put_item(m, "err", e);
	} else {
		smp_cbor_map_put_uint(m, "rc", (uint64_t)(rc == SIM_RC_GROUP ? req->legacy_rc : rc));
	}
	return m;
}

/* Builds the reply frame to the head request; returns the cost in us. */
static uint64_t process(struct sim_device *dev, const uint8_t *frame, size_t len)
{
	struct smp_hdr h, rh;
	struct sim_req req = { .dev = dev, .hdr = &h, .cost_us = dev->proc_us };
	int rc;

	smp_hdr_decode(frame, len, &h);
	req.rsp = smp_cbor_map_new_indefinite();
	rc = dispatch(&req, frame + SMP_HDR_LEN, len - SMP_HDR_LEN);
	if (rc != 0) {
		cbor_decref(&req.rsp);
		req.rsp = error_map(&req, rc);
	}
	rh = h;
	rh.op = smp_rsp_op(h.op == SMP_OP_READ ? SMP_OP_READ : SMP_OP_WRITE);
	rh.ver = h.ver > SMP_VER_2 ? SMP_VER_2 : h.ver;
	rh.flags = 0;
	free(dev->rsp);
	dev->rsp = NULL;
	if (smp_frame_build(&rh, req.rsp, &dev->rsp, &dev->rsp_len) < 0 ||
	    dev->rsp_len > dev->link.buf_size) {
		/* does not fit the SMP buffer: Zephyr answers MGMT_ERR_EMSGSIZE */
		cbor_decref(&req.rsp);
		free(dev->rsp);
		dev->rsp = NULL;
		req.hdr = &h;
		req.rsp = error_map(&req, SMP_RC_EMSGSIZE);
		smp_frame_build(&rh, req.rsp, &dev->rsp, &dev->rsp_len);
	}
	cbor_decref(&req.rsp);
	return req.cost_us;
}

/* ---- queue --------------------------------------------------------------- */

static void kick(struct sim_device *dev)
{
	uint64_t cost;

	if (dev->busy || !dev->head || dev->state != SIM_DEV_UP || dev->faults.hang)
		return;
	dev->busy = true;
	dev->drop_reply = false;
	cost = process(dev, dev->head->frame, dev->head->len);
	struct timeval tv = { (time_t)(cost / 1000000), (suseconds_t)(cost % 1000000) };
	evtimer_add(dev->work_ev, &tv);
}

static void next_rand(struct sim_device *dev)
{
	dev->rng ^= dev->rng << 13;
	dev->rng ^= dev->rng >> 7;
	dev->rng ^= dev->rng << 17;
}

/* Applies one-shot reply faults and hands the reply to the transport. */
static void deliver(struct sim_device *dev, struct sim_pending *p)
{
	struct sim_faults *f = &dev->faults;
	uint8_t *out = dev->rsp;
	size_t len = dev->rsp_len;
	unsigned times = 1;

	if (!p->cb || !out || f->hang)
		return; /* cancelled, or hung while this one was in progress */
	if (f->wrong_seq) {
		f->wrong_seq--;
		out[6]++;
	}
	if (f->corrupt_notifications && len > SMP_HDR_LEN) {
		f->corrupt_notifications--;
		next_rand(dev);
		out[SMP_HDR_LEN + dev->rng % (len - SMP_HDR_LEN)] ^= 0x5a;
	}
	if (f->truncate_notifications) {
		f->truncate_notifications--;
		len = len > SMP_HDR_LEN + 1 ? SMP_HDR_LEN + (len - SMP_HDR_LEN) / 2 : len / 2;
	}
	if (f->answer_twice) {
		f->answer_twice--;
		times = 2;
	}
	for (unsigned i = 0; i < times && p->cb; i++) {
		dev->ctr.frames_tx++;
		dev->ctr.bytes_tx += len;
		p->cb(dev, out, len, p->user_data);
	}
}

static void fault_disconnect(struct sim_device *dev)
{
	/* the link is gone: every reply still queued is lost */
	for (struct sim_pending *p = dev->head; p; p = p->next)
		p->cb = NULL;
	notify(dev, OBS_DISCONNECT, false);
}

static void work_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_device *dev = arg;
	struct sim_pending *p = dev->head;
	bool disc;

	dev->busy = false;
	if (!p)
		return;
	dev->head = p->next;
	if (!dev->head)
		dev->tail = NULL;
	dev->queued--;
	disc = p->disconnect_after || dev->drop_reply;
	if (!dev->drop_reply)
		deliver(dev, p);
	free(dev->rsp);
	dev->rsp = NULL;
	free(p->frame);
	free(p);
	if (disc)
		fault_disconnect(dev);
	kick(dev);
}

int sim_device_rx_frame(struct sim_device *dev, const uint8_t *frame, size_t len,
			sim_reply_cb cb, void *user_data)
{
	struct smp_hdr h;
	struct sim_pending *p;

	if (dev->state != SIM_DEV_UP || dev->faults.hang || !dev->in_range) {
		dev->ctr.drops++;
		return -ENETDOWN;
	}
	if (len > dev->link.buf_size) {
		dev->ctr.drops++;
		return -EMSGSIZE;
	}
	if (dev->queued >= dev->link.buf_count) {
		dev->ctr.drops++;
		return -ENOBUFS;
	}
	if (smp_frame_check(frame, len, &h) != (int)len) {
		dev->ctr.drops++;
		return -EBADMSG;
	}
	p = xnew(struct sim_pending);
	p->frame = xmemdup(frame, len);
	p->len = len;
	p->cb = cb;
	p->user_data = user_data;
	if (dev->faults.disconnect_after_frames > 0 && --dev->faults.disconnect_after_frames == 0) {
		dev->faults.disconnect_after_frames = -1;
		p->disconnect_after = true;
	}
	if (dev->tail)
		dev->tail->next = p;
	else
		dev->head = p;
	dev->tail = p;
	dev->queued++;
	dev->ctr.frames_rx++;
	dev->ctr.bytes_rx += len;
	kick(dev);
	return 0;
}

void sim_device_cancel_replies(struct sim_device *dev, void *user_data)
{
	for (struct sim_pending *p = dev->head; p; p = p->next)
		if (p->user_data == user_data)
			p->cb = NULL;
}

/* ---- reset and MCUboot ------------------------------------------------------ */

static void swap_slots(struct sim_device *dev)
{
	struct sim_slot t = dev->slot[0];

	dev->slot[0] = dev->slot[1];
	dev->slot[1] = t;
}

/* MCUboot swap time: every sector of both images is erased and written
 * about twice (swap using scratch/move). */
static uint64_t swap_cost(struct sim_device *dev)
{
	size_t a, b;

	slot_bytes(&dev->slot[0], &a);
	slot_bytes(&dev->slot[1], &b);
	size_t sectors = (MAX(a, b) + SIM_SECTOR_SIZE - 1) / SIM_SECTOR_SIZE;
	return 2 * (sim_device_erase_cost(dev, sectors) +
		    sim_device_program_cost(dev, sectors * SIM_SECTOR_SIZE));
}

/* What MCUboot does at boot; returns the time it takes. */
static uint64_t mcuboot_boot(struct sim_device *dev)
{
	uint64_t cost = 0;

	switch (dev->swap) {
	case SIM_SWAP_TEST:
	case SIM_SWAP_PERM:
		slot_scan(&dev->slot[1]);
		if (dev->slot[1].meta_verified && !dev->slot[1].meta_flags_nb) {
			cost = swap_cost(dev);
			swap_slots(dev);
			dev->swap = dev->swap == SIM_SWAP_PERM ? SIM_SWAP_NONE : SIM_SWAP_REVERT;
		} else {
			/* image does not validate: MCUboot erases it, boots the old one */
			slot_clear(&dev->slot[1]);
			dev->swap = SIM_SWAP_NONE;
		}
		break;
	case SIM_SWAP_REVERT:
		/* tested image not confirmed: swap back */
		cost = swap_cost(dev);
		swap_slots(dev);
		dev->swap = SIM_SWAP_NONE;
		break;
	case SIM_SWAP_NONE:
		break;
	}
	return cost;
}

static void do_reset(struct sim_device *dev, enum smpgw_reset_cause cause)
{
	uint64_t us;

	queue_flush(dev);
	evtimer_del(dev->reset_ev);
	evtimer_del(dev->boot_ev);
	dev->state = SIM_DEV_REBOOTING;
	dev->faults.hang = false;
	memset(&dev->up, 0, sizeof(dev->up));
	dev->reset_cause = cause;
	dev->ctr.resets++;
	notify(dev, OBS_RESET, false);
	us = (uint64_t)dev->boot_ms * 1000 + mcuboot_boot(dev);
	struct timeval tv = { (time_t)(us / 1000000), (suseconds_t)(us % 1000000) };
	evtimer_add(dev->boot_ev, &tv);
}

void sim_device_reset(struct sim_device *dev)
{
	do_reset(dev, dev->faults.hang ? SMPGW_RESET_WATCHDOG : SMPGW_RESET_PIN);
}

static void reset_cb(evutil_socket_t fd, short what, void *arg)
{
	do_reset(arg, SMPGW_RESET_SOFTWARE);
}

static void boot_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_device *dev = arg;

	dev->state = SIM_DEV_UP;
	dev->boot_count++;
	dev->boot_usec = now_usec();
	notify(dev, OBS_BOOTED, false);
}

void sim_device_schedule_reset(struct sim_device *dev)
{
	struct timeval tv = { 0, SIM_OS_RESET_MS * 1000 };

	evtimer_add(dev->reset_ev, &tv);
}

/* ---- helpers for the groups ------------------------------------------------- */

uint64_t sim_device_erase_cost(const struct sim_device *dev, size_t sectors)
{
	return (uint64_t)sectors * dev->flash.erase_sector_us * MAX(dev->faults.flash_slow_factor, 1u);
}

uint64_t sim_device_program_cost(const struct sim_device *dev, size_t bytes)
{
	return (uint64_t)((bytes + 255) / 256) * dev->flash.program_page_us *
	       MAX(dev->faults.flash_slow_factor, 1u);
}

void sim_device_slot_flags(const struct sim_device *dev, unsigned slot, bool *pending,
			   bool *confirmed, bool *active, bool *permanent)
{
	*pending = *confirmed = *permanent = false;
	*active = slot == 0;
	switch (dev->swap) {
	case SIM_SWAP_NONE:
		*confirmed = slot == 0;
		break;
	case SIM_SWAP_TEST:
	case SIM_SWAP_PERM:
		*confirmed = slot == 0;
		*pending = slot == 1;
		*permanent = slot == 1 && dev->swap == SIM_SWAP_PERM;
		break;
	case SIM_SWAP_REVERT:
		*confirmed = slot == 1;
		break;
	}
}

uint64_t sim_device_uptime_us(const struct sim_device *dev)
{
	return dev->state == SIM_DEV_UP ? now_usec() - dev->boot_usec : 0;
}

bool sim_device_self_check_passed(const struct sim_device *dev)
{
	return dev->state == SIM_DEV_UP &&
	       sim_device_uptime_us(dev) >= (uint64_t)dev->self_check_ms * 1000;
}

void sim_device_upload_progress(struct sim_device *dev, size_t off)
{
	if (dev->faults.disconnect_at_offset >= 0 &&
	    (int64_t)off >= dev->faults.disconnect_at_offset) {
		dev->faults.disconnect_at_offset = -1;
		dev->drop_reply = true;
	}
}

/* ---- accessors and setters ---------------------------------------------------- */

const struct sim_link_model *sim_device_link_model(const struct sim_device *dev)
{
	return &dev->link;
}

int sim_device_set_link_model(struct sim_device *dev, const struct sim_link_model *m)
{
	if (sim_link_model_validate(m, NULL) < 0)
		return -EINVAL;
	dev->link = *m;
	return 0;
}

const struct sim_faults *sim_device_faults(const struct sim_device *dev)
{
	return &dev->faults;
}

void sim_device_set_faults(struct sim_device *dev, const struct sim_faults *f)
{
	bool was_hung = dev->faults.hang;

	dev->faults = *f;
	if (dev->faults.flash_slow_factor == 0)
		dev->faults.flash_slow_factor = 1;
	if (was_hung && !f->hang)
		kick(dev); /* queued requests proceed */
}

void sim_device_set_in_range(struct sim_device *dev, bool in_range)
{
	if (dev->in_range == in_range)
		return;
	dev->in_range = in_range;
	if (!in_range)
		for (struct sim_pending *p = dev->head; p; p = p->next)
			p->cb = NULL;
	notify(dev, OBS_RANGE, in_range);
}

void sim_device_set_rssi(struct sim_device *dev, int rssi)
{
	dev->rssi = rssi;
}

const char *sim_device_address(const struct sim_device *dev) { return dev->address; }
const char *sim_device_name(const struct sim_device *dev) { return dev->name; }
int sim_device_rssi(const struct sim_device *dev) { return dev->rssi; }
unsigned sim_device_adapter(const struct sim_device *dev) { return dev->adapter; }
bool sim_device_in_range(const struct sim_device *dev) { return dev->in_range; }
uint32_t sim_device_boot_count(const struct sim_device *dev) { return dev->boot_count; }
const struct sim_counters *sim_device_counters(const struct sim_device *dev) { return &dev->ctr; }

bool sim_device_is_up(const struct sim_device *dev)
{
	return dev->state == SIM_DEV_UP && !dev->faults.hang;
}

int sim_device_slot_info(const struct sim_device *dev, unsigned slot, struct sim_slot_info *ret)
{
	/* the parse cache is logically const */
	struct sim_slot *s = (struct sim_slot *)&dev->slot[slot < 2 ? slot : 0];
	struct sim_slot_info info = { 0 };

	if (slot > 1)
		return -EINVAL;
	slot_scan(s);
	slot_bytes(s, &info.len);
	if (slot == 1 && dev->up.active)
		info.len = dev->up.off;
	info.present = s->meta_present;
	info.bootable = s->meta_verified;
	if (info.present) {
		slot_version_str(s, info.version, sizeof(info.version));
		memcpy(info.hash, s->hash, 32);
		sim_device_slot_flags(dev, slot, &info.pending, &info.confirmed, &info.active,
				      &info.permanent);
	}
	*ret = info;
	return 0;
}

int sim_device_manufacturer_data(struct sim_device *dev, uint16_t *ret_company,
				 const uint8_t **ret_data, size_t *ret_len)
{
	struct smpgw_adv a = { 0 };
	struct sim_slot *s = &dev->slot[0];
	int n;

	slot_scan(s);
	if (s->meta_present) {
		a.fw.major = s->ver.major;
		a.fw.minor = s->ver.minor;
		a.fw.revision = s->ver.revision;
		a.fw.build = s->ver.build;
		memcpy(a.hash, s->hash, SMPGW_ADV_HASH_LEN);
	}
	a.battery = dev->battery_pct <= 100 ? dev->battery_pct : SMPGW_ADV_BATTERY_UNKNOWN;
	a.flags = (dev->swap == SIM_SWAP_REVERT ? SMPGW_ADV_F_UNCONFIRMED : 0) |
		  (dev->up.active ? SMPGW_ADV_F_UPDATING : 0) |
		  (dev->state == SIM_DEV_UP ? SMPGW_ADV_F_SELF_CHECK_OK : 0) |
		  (dev->swap == SIM_SWAP_TEST || dev->swap == SIM_SWAP_PERM ?
		   SMPGW_ADV_F_PENDING : 0);
	n = smpgw_adv_encode(&a, dev->adv, sizeof(dev->adv));
	if (n < 0)
		return -ENOENT;
	*ret_company = SMPGW_ADV_COMPANY_ID;
	*ret_data = dev->adv;
	*ret_len = (size_t)n;
	return 0;
}

int sim_device_service_data(struct sim_device *dev, const char **ret_uuid,
			    const uint8_t **ret_data, size_t *ret_len)
{
	/* the record travels as manufacturer data (see smpgw/adv.h) */
	return -ENOENT;
}
