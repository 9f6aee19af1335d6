/* SPDX-License-Identifier: MIT */
/*
 * GATT objects of a simulated watch and its SMP characteristic: WriteValue
 * ("command"), StartNotify/StopNotify with Value in PropertiesChanged,
 * AcquireWrite/AcquireNotify over AF_UNIX SOCK_SEQPACKET socket pairs (one
 * message = one ATT write / one notification), and the BLE link timing
 * model: writes reach the watch after their air time, are reassembled into
 * SMP frames by the header length when the watch has reassembly, replies
 * leave as back-to-back notifications of MTU-3 bytes paced by the link model
 * and by the adapter's shared air time.
 */
#include "bluez-int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "codec/smp.h"
#include "device.h"
#include "util/util.h"

#define UP_QUEUE_MAX 32 /* ATT writes in flight in the controller */
#define DN_QUEUE_MAX 4096

static const char *const flags_smp[] = { "write-without-response", "notify", NULL };
static const char *const flags_indicate[] = { "indicate", NULL };
static const char *const flags_rw[] = { "read", "write", NULL };
static const char *const flags_r[] = { "read", NULL };

/* The GATT database of Zephyr's smp_svr as bluetoothd exports it (GAP hidden). */
const struct bz_gatt_desc bz_gatt_table[BZ_N_GATT] = {
	{ "service0001", 0, "00001801-0000-1000-8000-00805f9b34fb", -1, NULL, NULL, false },
	{ "service0001/char0002", 1, "00002a05-0000-1000-8000-00805f9b34fb", 0,
	  flags_indicate, "", false },
	{ "service0001/char0002/desc0004", 2, "00002902-0000-1000-8000-00805f9b34fb", 1,
	  NULL, "", false },
	{ "service0001/char0005", 1, "00002b29-0000-1000-8000-00805f9b34fb", 0, flags_rw,
	  "", false },
	{ "service0001/char0007", 1, "00002b2a-0000-1000-8000-00805f9b34fb", 0, flags_r,
	  "067b39b89acd9a68a5335461ffd39342", false },
	{ "service0010", 0, BZ_SMP_SERVICE_UUID, -1, NULL, NULL, true },
	{ "service0010/char0011", 1, BZ_SMP_CHAR_UUID, 5, flags_smp, "", true },
	{ "service0010/char0011/desc0013", 2, "00002902-0000-1000-8000-00805f9b34fb", 6,
	  NULL, "", true },
};

static bool has_flag(const struct bz_gatt_desc *g, const char *flag)
{
	for (const char *const *f = g->flags; f && *f; f++)
		if (!strcmp(*f, flag))
			return true;
	return false;
}

static bool is_smp_char(const struct bz_gatt *g)
{
	return g->desc->smp && g->desc->kind == 1;
}

static bool linked(const struct bz_dev *d)
{
	return d->state == BZ_CONN_CONNECTED;
}

static uint16_t att_mtu(const struct bz_dev *d)
{
	return sim_device_link_model(d->sim)->att_mtu;
}

static void char_changed(struct bz_dev *d, const char *prop)
{
	struct bz_object *o = bz_dev_smp_char(d);

	if (o)
		bz_prop_changed(o, "org.bluez.GattCharacteristic1", prop);
}

/* ---- properties ---------------------------------------------------------------- */

static void put_str(DBusMessageIter *it, const char *s)
{
	dbus_message_iter_append_basic(it, DBUS_TYPE_STRING, &s);
}

static void put_bool(DBusMessageIter *it, bool v)
{
	dbus_bool_t b = v;

	dbus_message_iter_append_basic(it, DBUS_TYPE_BOOLEAN, &b);
}

static void put_bytes(DBusMessageIter *it, const uint8_t *buf, size_t len)
{
	DBusMessageIter a;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "y", &a);
	if (len)
		dbus_message_iter_append_fixed_array(&a, DBUS_TYPE_BYTE, &buf, (int)len);
	dbus_message_iter_close_container(it, &a);
}

static void put_parent(struct bz_gatt *g, DBusMessageIter *it)
{
	const char *p = bz_object_path(g->dev->gatt[g->desc->parent].obj);

	dbus_message_iter_append_basic(it, DBUS_TYPE_OBJECT_PATH, &p);
}

static void g_uuid(void *data, DBusMessageIter *it) { put_str(it, ((struct bz_gatt *)data)->desc->uuid); }
static void g_parent(void *data, DBusMessageIter *it) { put_parent(data, it); }
static void g_true(void *data, DBusMessageIter *it) { put_bool(it, true); }

static void g_device(void *data, DBusMessageIter *it)
{
	const char *p = ((struct bz_gatt *)data)->dev->path;

	dbus_message_iter_append_basic(it, DBUS_TYPE_OBJECT_PATH, &p);
}

static void g_includes(void *data, DBusMessageIter *it)
{
	DBusMessageIter a;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "o", &a);
	dbus_message_iter_close_container(it, &a);
}

static void g_value(void *data, DBusMessageIter *it)
{
	struct bz_gatt *g = data;
	uint8_t buf[64];
	int n;

	if (is_smp_char(g)) {
		put_bytes(it, g->dev->value, g->dev->value_len);
		return;
	}
	n = hex_decode(g->desc->value_hex, buf, sizeof(buf));
	put_bytes(it, buf, n > 0 ? (size_t)n : 0);
}

static bool g_can_notify(void *data)
{
	const struct bz_gatt_desc *g = ((struct bz_gatt *)data)->desc;

	return has_flag(g, "notify") || has_flag(g, "indicate");
}

static void g_notifying(void *data, DBusMessageIter *it)
{
	struct bz_gatt *g = data;

	put_bool(it, is_smp_char(g) && g->dev->notify_clients);
}

static void g_flags(void *data, DBusMessageIter *it)
{
	DBusMessageIter a;

	dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "s", &a);
	for (const char *const *f = ((struct bz_gatt *)data)->desc->flags; f && *f; f++)
		dbus_message_iter_append_basic(&a, DBUS_TYPE_STRING, f);
	dbus_message_iter_close_container(it, &a);
}

static bool g_has_wwr(void *data) { return has_flag(((struct bz_gatt *)data)->desc, "write-without-response"); }
static bool g_has_notify(void *data) { return has_flag(((struct bz_gatt *)data)->desc, "notify"); }
static void g_write_acq(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_gatt *)data)->dev->wfd >= 0); }
static void g_notify_acq(void *data, DBusMessageIter *it) { put_bool(it, ((struct bz_gatt *)data)->dev->nfd >= 0); }

static void g_mtu(void *data, DBusMessageIter *it)
{
	uint16_t m = att_mtu(((struct bz_gatt *)data)->dev);

	dbus_message_iter_append_basic(it, DBUS_TYPE_UINT16, &m);
}

/* ---- options ------------------------------------------------------------------- */

/* Parses a{sv} options as gatt-client.c does; type is "" when absent. */
static bool parse_options(DBusMessageIter *it, char type[16], uint16_t *offset)
{
	DBusMessageIter dict;

	type[0] = 0;
	*offset = 0;
	dbus_message_iter_recurse(it, &dict);
	while (dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY) {
		DBusMessageIter e, v;
		const char *key;
		int t;

		dbus_message_iter_recurse(&dict, &e);
		dbus_message_iter_get_basic(&e, &key);
		dbus_message_iter_next(&e);
		dbus_message_iter_recurse(&e, &v);
		t = dbus_message_iter_get_arg_type(&v);
		if (!strcmp(key, "type")) {
			const char *s;

			if (t != DBUS_TYPE_STRING)
				return false;
			dbus_message_iter_get_basic(&v, &s);
			if (strcmp(s, "command") && strcmp(s, "request") && strcmp(s, "reliable"))
				return false;
			snprintf(type, 16, "%s", s);
		} else if (!strcmp(key, "offset")) {
			if (t != DBUS_TYPE_UINT16)
				return false;
			dbus_message_iter_get_basic(&v, offset);
		} else if (!strcmp(key, "mtu")) {
			if (t != DBUS_TYPE_UINT16)
				return false;
		} else if (!strcmp(key, "device")) {
			if (t != DBUS_TYPE_OBJECT_PATH)
				return false;
		} else if (!strcmp(key, "link")) {
			if (t != DBUS_TYPE_STRING)
				return false;
		} else if (!strcmp(key, "prepare-authorize")) {
			if (t != DBUS_TYPE_BOOLEAN)
				return false;
		}
		dbus_message_iter_next(&dict);
	}
	return true;
}

/* ---- the link: up (central -> watch) ------------------------------------------- */

static uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/*
 * The link layer: connection events every conn_interval_us from the link's
 * anchor, run as a controller runs them (sim_link_event_add(): each exchange
 * carries one packet each way, a write's packet and an answer's share it).
 * Writes and notifications wait in their queues with their ATT and L2CAP
 * headers (+3 +4 octets), split in LL packets of ll_payload; a PDU is
 * through (due_us) at the end of the exchange that carried its last packet.
 * An event carries only what was queued before its anchor point. The
 * adapter's radio serves all its links: an event starts when the radio is
 * free (air_busy_us) and still ends before its next anchor point, so links
 * on a busy radio get shorter events.
 */
static void trace(const struct bz_dev *d, uint64_t e, unsigned ex, unsigned up, unsigned dn,
		  uint32_t used_us, bool up_waiting, bool dn_waiting);

static size_t pdu_octets(const struct bz_pdu *p)
{
	return p->len + 3 + 4; /* ATT opcode + handle, L2CAP header */
}

/* Octets of the next LL packet of a direction queued before at_us, 0 when none. */
static size_t next_packet(const struct bz_dev *d, const struct bz_pdu *p, size_t left,
			  uint64_t at_us)
{
	size_t ll = sim_device_link_model(d->sim)->ll_payload;

	if (!p || p->queued_us > at_us)
		return 0;
	return left < ll ? left : ll;
}

/* One packet of n octets went: the PDU is through when its last one did. */
static void sent_packet(struct bz_pdu **send, size_t *left, size_t n, uint64_t t_us)
{
	*left -= n;
	if (*left)
		return;
	(*send)->due_us = t_us;
	*send = (*send)->next;
	*left = *send ? pdu_octets(*send) : 0;
}

static void run_event(struct bz_dev *d, uint64_t e)
{
	const struct sim_link_model *m = sim_device_link_model(d->sim);
	uint64_t anchor = d->anchor_us + e * m->conn_interval_us;
	uint64_t start = max64(anchor, d->ad->air_busy_us);
	struct sim_link_event ev = { 0 };
	unsigned n_up = 0, n_dn = 0;

	if (start >= anchor + m->conn_interval_us)
		return; /* the radio is busy with other links for the whole event */
	ev.avail_us = (uint32_t)(anchor + m->conn_interval_us - start);
	for (;;) {
		size_t up = next_packet(d, d->up_send, d->up_left, anchor);
		size_t dn = next_packet(d, d->dn_send, d->dn_left, anchor);

		if (!up && !dn)
			break;
		if (!sim_link_event_add(m, &ev, up, dn))
			break;
		if (up) {
			sent_packet(&d->up_send, &d->up_left, up, start + ev.used_us);
			n_up++;
		}
		if (dn) {
			sent_packet(&d->dn_send, &d->dn_left, dn, start + ev.used_us);
			n_dn++;
		}
	}
	if (ev.exchanges)
		d->ad->air_busy_us = start + ev.used_us;
	trace(d, e, ev.exchanges, n_up, n_dn, ev.used_us,
	      next_packet(d, d->up_send, d->up_left, anchor) > 0,
	      next_packet(d, d->dn_send, d->dn_left, anchor) > 0);
}

static void arm_at(struct event *ev, uint64_t due_us);

/* Index of the first connection event whose anchor is at or after t_us. */
static uint64_t event_at(const struct bz_dev *d, uint64_t t_us)
{
	uint64_t ci = sim_device_link_model(d->sim)->conn_interval_us;

	return t_us <= d->anchor_us ? 0 : (t_us - d->anchor_us + ci - 1) / ci;
}

static void arm_delivery(struct bz_dev *d)
{
	if (d->up_head && d->up_head->due_us != UINT64_MAX)
		arm_at(d->up_ev, d->up_head->due_us);
	if (d->dn_head && d->dn_head->due_us != UINT64_MAX)
		arm_at(d->dn_ev, d->dn_head->due_us);
}

/* Runs every connection event due by now (a late timer catches up: air
 * time does not depend on how late the simulator wakes), then waits for the
 * next one while anything is left to send. */
static void ce_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;
	uint64_t now = now_usec(), ci = sim_device_link_model(d->sim)->conn_interval_us;

	while (d->up_send || d->dn_send) {
		uint64_t first = UINT64_MAX;

		if (d->up_send)
			first = d->up_send->queued_us;
		if (d->dn_send && d->dn_send->queued_us < first)
			first = d->dn_send->queued_us;
		d->ce_next = max64(d->ce_next, event_at(d, first));
		if (d->anchor_us + d->ce_next * ci > now)
			break;
		run_event(d, d->ce_next++);
	}
	arm_delivery(d);
	if (d->up_send || d->dn_send)
		arm_at(d->ce_ev, d->anchor_us + d->ce_next * ci);
}

/* A PDU for the controller: it leaves in the next connection events. */
static void link_queue(struct bz_dev *d, struct bz_pdu *p, bool up)
{
	p->queued_us = now_usec();
	p->due_us = UINT64_MAX;
	if (up && !d->up_send) {
		d->up_send = p;
		d->up_left = pdu_octets(p);
	} else if (!up && !d->dn_send) {
		d->dn_send = p;
		d->dn_left = pdu_octets(p);
	}
	if (!event_pending(d->ce_ev, EV_TIMEOUT, NULL)) {
		uint64_t ci = sim_device_link_model(d->sim)->conn_interval_us;

		d->ce_next = max64(d->ce_next, event_at(d, p->queued_us));
		arm_at(d->ce_ev, d->anchor_us + d->ce_next * ci);
	}
}

static void queue_push(struct bz_pdu **head, struct bz_pdu **tail, struct bz_pdu *p)
{
	p->next = NULL;
	if (*tail)
		(*tail)->next = p;
	else
		*head = p;
	*tail = p;
}

static struct bz_pdu *queue_pop(struct bz_pdu **head, struct bz_pdu **tail)
{
	struct bz_pdu *p = *head;

	if (p) {
		*head = p->next;
		if (!*head)
			*tail = NULL;
	}
	return p;
}

static void queue_clear(struct bz_pdu **head, struct bz_pdu **tail)
{
	struct bz_pdu *p;

	while ((p = queue_pop(head, tail)))
		free(p);
}

static void arm_at(struct event *ev, uint64_t due_us)
{
	uint64_t now = now_usec();
	uint64_t us = due_us > now ? due_us - now : 0;
	struct timeval tv = { (time_t)(us / 1000000), (suseconds_t)(us % 1000000) };

	event_add(ev, &tv);
}

/*
 * SMPGW_SIM_LINK_TRACE=FILE: one line per connection event that carried
 * something, to study the link model (bench/README.md): time, link, event
 * index, exchanges, LL packets up and down, air time used (us), and whether
 * a write / notification queued before the anchor was left over.
 */
static void trace(const struct bz_dev *d, uint64_t e, unsigned ex, unsigned up, unsigned dn,
		  uint32_t used_us, bool up_waiting, bool dn_waiting)
{
	static FILE *f;
	static bool tried;

	if (!tried) {
		const char *path = getenv("SMPGW_SIM_LINK_TRACE");

		tried = true;
		f = path && *path ? fopen(path, "w") : NULL;
		if (f)
			setvbuf(f, NULL, _IOLBF, 0);
	}
	if (f)
		fprintf(f, "%llu %s %llu %u %u %u %u %d %d\n", (unsigned long long)now_usec(),
			d->path, (unsigned long long)e, ex, up, dn, used_us, up_waiting,
			dn_waiting);
}

static void reply_cb(struct sim_device *dev, const uint8_t *frame, size_t len, void *user_data);

static void deliver_frame(struct bz_dev *d, const uint8_t *frame, size_t len)
{
	int r = sim_device_rx_frame(d->sim, frame, len, reply_cb, d);

	d->bz->counters.frames++;
	if (r == 0)
		d->smp_pending++;
	if (r == -ENOBUFS)
		d->bz->counters.drops_busy++; /* Zephyr drops it silently */
	else if (r < 0)
		d->bz->counters.drops_link++;
}

/* Zephyr's SMP reassembly: the first write's header says how long the frame is. */
static void reassemble(struct bz_dev *d, const uint8_t *buf, size_t len)
{
	const struct sim_link_model *m = sim_device_link_model(d->sim);
	/* a frame, header included, must fit one SMP net_buf of buf_size */
	size_t cap = m->buf_size > SMP_HDR_LEN ? m->buf_size : SMP_HDR_LEN;

	if (!m->reassembly) {
		deliver_frame(d, buf, len);
		return;
	}
	if (d->rx_len == 0) {
		if (len < SMP_HDR_LEN) {
			d->bz->counters.drops_link++;
			return;
		}
		d->rx_want = SMP_HDR_LEN + ((size_t)buf[2] << 8 | buf[3]);
		if (d->rx_want > cap) {
			d->bz->counters.drops_link++; /* larger than the SMP buffer */
			return;
		}
		if (!d->rx || d->rx_cap < d->rx_want) {
			free(d->rx);
			d->rx_cap = cap;
			d->rx = xmalloc(cap);
		}
	}
	if (d->rx_len + len > d->rx_want) {
		d->rx_len = 0; /* overrun: Zephyr drops the frame being built */
		d->bz->counters.drops_link++;
		return;
	}
	memcpy(d->rx + d->rx_len, buf, len);
	d->rx_len += len;
	if (d->rx_len == d->rx_want) {
		d->rx_len = 0;
		deliver_frame(d, d->rx, d->rx_want);
	}
}

/*
 * The lossy_burst fault: a Zephyr smp_svr with few ACL RX buffers behind a
 * controller that ignores host flow control (docs/simulator.md). Its
 * buffers come free only when it has caught up: a write arriving when more
 * than lossy_burst came since it was last idle (no frame being reassembled
 * or processed) is lost. A lost write that belonged to a frame spanning
 * several writes leaves smp_bt's reassembly holding a partial frame, and
 * from then on every write is swallowed until the link drops. True when
 * this write is lost.
 */
static bool lossy_drop(struct bz_dev *d, const uint8_t *buf, size_t len)
{
	int32_t n = sim_device_faults(d->sim)->lossy_burst;
	bool partial;

	if (n < 0)
		return false;
	if (d->desync) {
		d->bz->counters.drops_lossy++;
		return true;
	}
	if (d->smp_pending == 0 && d->rx_len == 0)
		d->burst = 0;
	if (++d->burst <= (unsigned)n)
		return false;
	partial = d->rx_len > 0 ||
		  (len >= SMP_HDR_LEN && SMP_HDR_LEN + ((size_t)buf[2] << 8 | buf[3]) > len);
	d->bz->counters.drops_lossy++;
	if (partial) {
		d->desync = true;
		d->bz->counters.lossy_desyncs++;
	}
	return true;
}

static void fd_watch(struct bz_dev *d);

static void up_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;
	uint64_t now = now_usec();
	struct bz_pdu *p;

	while (d->up_head && d->up_head->due_us != UINT64_MAX && d->up_head->due_us <= now) {
		p = queue_pop(&d->up_head, &d->up_tail);
		d->up_n--;
		/* a watch that demands encryption ignores unencrypted writes */
		if (sim_device_faults(d->sim)->pairing_required && !d->paired)
			d->bz->counters.drops_link++;
		else if (!lossy_drop(d, p->data, p->len))
			reassemble(d, p->data, p->len);
		free(p);
		if (!linked(d))
			return; /* the frame's fault dropped the link */
	}
	arm_delivery(d);
	fd_watch(d);
}

/* One ATT Write Command arrives from the client (fd or WriteValue). */
static void write_cmd(struct bz_dev *d, const uint8_t *buf, size_t len)
{
	struct bz_pdu *p = xmalloc(sizeof(*p) + len);

	d->bz->counters.writes++;
	memcpy(p->data, buf, len);
	p->len = len;
	queue_push(&d->up_head, &d->up_tail, p);
	d->up_n++;
	link_queue(d, p, true);
}

/* ---- the link: down (watch -> central) ---------------------------------------- */

static void notify_one(struct bz_dev *d, const uint8_t *buf, size_t len)
{
	struct bz_object *o = bz_dev_smp_char(d);

	d->bz->counters.notifications++;
	if (d->nfd >= 0) {
		if (send(d->nfd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			d->bz->counters.drops_notify++; /* client not reading: lost */
		return;
	}
	if (!d->notify_clients || !o) {
		d->bz->counters.drops_notify++;
		return;
	}
	memcpy(d->value, buf, len);
	d->value_len = len;
	/* BlueZ flushes Value at once: one signal per notification */
	bz_prop_changed(o, "org.bluez.GattCharacteristic1", "Value");
	bz_bus_flush(d->bz->bus);
}

static void dn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;
	uint64_t now = now_usec();
	struct bz_pdu *p;

	while (d->dn_head && d->dn_head->due_us != UINT64_MAX && d->dn_head->due_us <= now) {
		p = queue_pop(&d->dn_head, &d->dn_tail);
		d->dn_n--;
		notify_one(d, p->data, p->len);
		free(p);
	}
	arm_delivery(d);
}

static void queue_notifications(struct bz_dev *d, const uint8_t *frame, size_t len);

/* Bad input for the client, before a reply (faults garbage_notification,
 * unsolicited_answer): a notification that cannot start an SMP response,
 * and a well-formed copy of the reply under a sequence number nobody used. */
static void inject_before_reply(struct bz_dev *d, const uint8_t *frame, size_t len)
{
	static const uint8_t garbage[] = { 0xde, 0xad, 0xbe, 0xef, 0x07, 0x00, 0xff, 0xff,
					   0x55, 0xaa, 0x00, 0x13 };
	struct sim_faults f = *sim_device_faults(d->sim);

	if (f.garbage_notifications) {
		f.garbage_notifications--;
		queue_notifications(d, garbage, sizeof(garbage));
	}
	if (f.unsolicited_answers && len >= SMP_HDR_LEN) {
		uint8_t *copy = xmemdup(frame, len);

		f.unsolicited_answers--;
		copy[6] ^= 0x80;
		queue_notifications(d, copy, len);
		free(copy);
	}
	sim_device_set_faults(d->sim, &f);
}

static void reply_cb(struct sim_device *dev, const uint8_t *frame, size_t len, void *user_data)
{
	struct bz_dev *d = user_data;

	if (!linked(d))
		return;
	if (d->smp_pending)
		d->smp_pending--;
	inject_before_reply(d, frame, len);
	queue_notifications(d, frame, len);
}

static void queue_notifications(struct bz_dev *d, const uint8_t *frame, size_t len)
{
	size_t chunk = att_mtu(d) - 3u;

	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		struct bz_pdu *p;

		if (d->dn_n >= DN_QUEUE_MAX) {
			d->bz->counters.drops_notify++;
			return;
		}
		p = xmalloc(sizeof(*p) + n);
		memcpy(p->data, frame + off, n);
		p->len = n;
		queue_push(&d->dn_head, &d->dn_tail, p);
		d->dn_n++;
		link_queue(d, p, false);
	}
}

/* ---- acquired fds ----------------------------------------------------------------- */

static void close_wfd(struct bz_dev *d)
{
	if (d->wfd < 0)
		return;
	event_free(d->wfd_ev);
	d->wfd_ev = NULL;
	close(d->wfd);
	d->wfd = -1;
	char_changed(d, "WriteAcquired");
}

static void close_nfd(struct bz_dev *d)
{
	if (d->nfd < 0)
		return;
	event_free(d->nfd_ev);
	d->nfd_ev = NULL;
	close(d->nfd);
	d->nfd = -1;
	char_changed(d, "NotifyAcquired");
}

/* recv() gives 0 both for an empty SEQPACKET message and at EOF. */
static bool peer_gone(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP));
}

static void wfd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;
	uint8_t buf[1024];

	for (int i = 0; i < 16 && d->up_n < UP_QUEUE_MAX; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);

		if ((n == 0 && peer_gone(fd)) || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			close_wfd(d); /* the client released the write side */
			return;
		}
		if (n < 0)
			break;
		if (n == 0) {
			d->bz->counters.drops_link++; /* an empty message: no ATT write */
			continue;
		}
		if ((size_t)n > att_mtu(d) - 3u) {
			d->bz->counters.drops_link++; /* bt_att refuses PDUs over the MTU */
			continue;
		}
		write_cmd(d, buf, (size_t)n);
	}
	fd_watch(d);
}

static void nfd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bz_dev *d = arg;
	uint8_t buf[64];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if ((n == 0 && peer_gone(fd)) || (n < 0 && errno != EAGAIN && errno != EINTR))
		close_nfd(d); /* the client released the notify side */
}

/* Backpressure: stop reading the write fd while the controller queue is full. */
static void fd_watch(struct bz_dev *d)
{
	if (!d->wfd_ev)
		return;
	if (d->up_n < UP_QUEUE_MAX)
		event_add(d->wfd_ev, NULL);
	else
		event_del(d->wfd_ev);
}

static DBusMessage *acquire(struct bz_gatt *g, DBusMessage *msg, bool write)
{
	struct bz_dev *d = g->dev;
	char type[16];
	uint16_t off, mtu;
	DBusMessageIter it;
	DBusMessage *r;
	int fds[2];

	dbus_message_iter_init(msg, &it);
	if (!parse_options(&it, type, &off))
		return bz_error_invalid_args(msg);
	if (write ? !g_has_wwr(g) : !g_has_notify(g))
		return bz_error_not_supported(msg);
	if (write ? d->wfd >= 0 : d->nfd >= 0)
		return bz_error(msg, "org.bluez.Error.NotPermitted",
				write ? "Write acquired" : "Notify acquired");
	if (!is_smp_char(g) || !linked(d))
		return bz_error_failed(msg, "Not connected");
	if (!write && d->notify_clients)
		return bz_error(msg, "org.bluez.Error.InProgress", "In Progress");
	if (!write && sim_device_faults(d->sim)->pairing_required && !d->paired)
		return bz_dev_auto_pair(d, g, msg, true); /* the CCC write is refused */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
		return bz_error_failed(msg, "Failed to create socket pair");
	if (write) {
		d->wfd = fds[1];
		d->wfd_ev = event_new(d->bz->base, d->wfd, EV_READ | EV_PERSIST, wfd_cb, d);
		fd_watch(d);
		char_changed(d, "WriteAcquired");
	} else {
		d->nfd = fds[1];
		d->nfd_ev = event_new(d->bz->base, d->nfd, EV_READ | EV_PERSIST, nfd_cb, d);
		event_add(d->nfd_ev, NULL);
		char_changed(d, "NotifyAcquired");
	}
	mtu = att_mtu(d);
	r = dbus_message_new_method_return(msg);
	dbus_message_append_args(r, DBUS_TYPE_UNIX_FD, &fds[0], DBUS_TYPE_UINT16, &mtu,
				 DBUS_TYPE_INVALID);
	close(fds[0]); /* libdbus duplicated it into the message */
	return r;
}

static DBusMessage *acquire_write(void *data, DBusMessage *msg)
{
	return acquire(data, msg, true);
}

static DBusMessage *acquire_notify(void *data, DBusMessage *msg)
{
	return acquire(data, msg, false);
}

/* ---- methods ------------------------------------------------------------------ */

static DBusMessage *read_value(void *data, DBusMessage *msg)
{
	struct bz_gatt *g = data;
	char type[16];
	uint16_t off;
	DBusMessageIter it;
	DBusMessage *r;

	dbus_message_iter_init(msg, &it);
	if (!parse_options(&it, type, &off))
		return bz_error_invalid_args(msg);
	if (!linked(g->dev))
		return bz_error_failed(msg, "Not connected");
	if (g->desc->kind == 1 && !has_flag(g->desc, "read"))
		return bz_error(msg, "org.bluez.Error.NotPermitted", "Read not permitted");
	r = dbus_message_new_method_return(msg);
	dbus_message_iter_init_append(r, &it);
	g_value(g, &it);
	return r;
}

static DBusMessage *write_value(void *data, DBusMessage *msg)
{
	struct bz_gatt *g = data;
	struct bz_dev *d = g->dev;
	DBusMessageIter it, a;
	const uint8_t *buf = NULL;
	int len = 0;
	char type[16];
	uint16_t off;

	dbus_message_iter_init(msg, &it);
	dbus_message_iter_recurse(&it, &a);
	dbus_message_iter_get_fixed_array(&a, &buf, &len);
	dbus_message_iter_next(&it);
	if (!parse_options(&it, type, &off))
		return bz_error_invalid_args(msg);
	if (!linked(d))
		return bz_error_failed(msg, "Not connected");
	if (!is_smp_char(g) || g->desc->kind != 1)
		return bz_error(msg, "org.bluez.Error.NotPermitted", "Write not permitted");
	if (d->wfd >= 0)
		return bz_error(msg, "org.bluez.Error.NotPermitted", "Write acquired");
	if (!strcmp(type, "request") || !strcmp(type, "reliable") || off)
		return bz_error_not_supported(msg); /* no "write" flag: commands only */
	if ((size_t)len > att_mtu(d) - 3u)
		return bz_error_failed(msg, "Failed to initiate write");
	write_cmd(d, buf, (size_t)len);
	return dbus_message_new_method_return(msg);
}

static struct bz_notify_client **notify_find(struct bz_dev *d, const char *owner)
{
	for (struct bz_notify_client **p = &d->notify_clients; *p; p = &(*p)->next)
		if (!strcmp((*p)->owner, owner))
			return p;
	return NULL;
}

static void notify_drop(struct bz_dev *d, struct bz_notify_client **p)
{
	struct bz_notify_client *c = *p;

	*p = c->next;
	free(c->owner);
	free(c);
	if (!d->notify_clients)
		char_changed(d, "Notifying");
}

static DBusMessage *start_notify(void *data, DBusMessage *msg)
{
	struct bz_gatt *g = data;
	struct bz_dev *d = g->dev;
	const char *sender = dbus_message_get_sender(msg);
	struct bz_notify_client *c;

	if (!g_can_notify(g))
		return bz_error_not_supported(msg);
	if (!linked(d))
		return bz_error_failed(msg, "Not connected");
	if (is_smp_char(g) && d->nfd >= 0)
		return bz_error(msg, "org.bluez.Error.NotPermitted", "Notify acquired");
	if (!is_smp_char(g) || notify_find(d, sender))
		return dbus_message_new_method_return(msg);
	if (sim_device_faults(d->sim)->pairing_required && !d->paired)
		return bz_dev_auto_pair(d, g, msg, false); /* the CCC write is refused */
	c = xnew(struct bz_notify_client);
	c->owner = xstrdup(sender);
	c->next = d->notify_clients;
	if (!d->notify_clients)
		char_changed(d, "Notifying");
	d->notify_clients = c;
	return dbus_message_new_method_return(msg);
}

DBusMessage *bz_gatt_secured(struct bz_gatt *g, DBusMessage *msg, bool acquire_fd)
{
	return acquire_fd ? acquire(g, msg, false) : start_notify(g, msg);
}

static DBusMessage *stop_notify(void *data, DBusMessage *msg)
{
	struct bz_gatt *g = data;
	struct bz_notify_client **p = notify_find(g->dev, dbus_message_get_sender(msg));

	if (is_smp_char(g) && g->dev->nfd >= 0) {
		close_nfd(g->dev); /* as gatt-client.c: an acquired session ends too */
		return dbus_message_new_method_return(msg);
	}
	if (!p || !is_smp_char(g))
		return bz_error_failed(msg, "No notify session started");
	notify_drop(g->dev, p);
	return dbus_message_new_method_return(msg);
}

void bz_dev_client_gone(struct bz_dev *d, const char *name)
{
	struct bz_notify_client **p = notify_find(d, name);

	if (p)
		notify_drop(d, p);
}

/* ---- link up/down ---------------------------------------------------------------- */

void bz_link_up(struct bz_dev *d)
{
	if (!d->up_ev) {
		d->up_ev = event_new(d->bz->base, -1, 0, up_cb, d);
		d->dn_ev = event_new(d->bz->base, -1, 0, dn_cb, d);
		d->ce_ev = event_new(d->bz->base, -1, 0, ce_cb, d);
	}
	d->rx_len = 0;
	d->smp_pending = d->burst = 0;
	d->desync = false; /* smp_bt drops its partial frame at disconnect */
	d->anchor_us = now_usec();
	d->ce_next = 0;
	d->up_send = d->dn_send = NULL;
	d->up_left = d->dn_left = 0;
}

/* Link loss: hang up the fds (clients see POLLHUP, EOF, EPIPE), forget the
 * notification sessions and whatever was in flight. */
void bz_link_down(struct bz_dev *d)
{
	sim_device_cancel_replies(d->sim, d);
	close_wfd(d);
	close_nfd(d);
	while (d->notify_clients)
		notify_drop(d, &d->notify_clients);
	queue_clear(&d->up_head, &d->up_tail);
	queue_clear(&d->dn_head, &d->dn_tail);
	d->up_send = d->dn_send = NULL;
	d->up_left = d->dn_left = 0;
	d->up_n = d->dn_n = 0;
	d->rx_len = 0;
	d->smp_pending = d->burst = 0;
	d->desync = false;
	if (d->up_ev) {
		event_free(d->up_ev);
		event_free(d->dn_ev);
		event_free(d->ce_ev);
		d->up_ev = d->dn_ev = d->ce_ev = NULL;
	}
	free(d->rx);
	d->rx = NULL;
	d->rx_cap = 0;
}

/* ---- interfaces ----------------------------------------------------------------- */

static const struct bz_iface service1 = {
	.name = "org.bluez.GattService1",
	.props = (const struct bz_prop[]){
		{ "UUID", "s", NULL, g_uuid, NULL },
		{ "Device", "o", NULL, g_device, NULL },
		{ "Primary", "b", NULL, g_true, NULL },
		{ "Includes", "ao", NULL, g_includes, NULL },
		{ NULL, NULL, NULL, NULL, NULL },
	},
};

static const struct bz_iface characteristic1 = {
	.name = "org.bluez.GattCharacteristic1",
	.methods = (const struct bz_method[]){
		{ "ReadValue", "options:a{sv}", "value:ay", read_value },
		{ "WriteValue", "value:ay options:a{sv}", "", write_value },
		{ "AcquireWrite", "options:a{sv}", "fd:h mtu:q", acquire_write },
		{ "AcquireNotify", "options:a{sv}", "fd:h mtu:q", acquire_notify },
		{ "StartNotify", "", "", start_notify },
		{ "StopNotify", "", "", stop_notify },
		{ NULL, NULL, NULL, NULL },
	},
	.props = (const struct bz_prop[]){
		{ "UUID", "s", NULL, g_uuid, NULL },
		{ "Service", "o", NULL, g_parent, NULL },
		{ "Value", "ay", NULL, g_value, NULL },
		{ "Notifying", "b", g_can_notify, g_notifying, NULL },
		{ "Flags", "as", NULL, g_flags, NULL },
		{ "WriteAcquired", "b", g_has_wwr, g_write_acq, NULL },
		{ "NotifyAcquired", "b", g_has_notify, g_notify_acq, NULL },
		{ "MTU", "q", NULL, g_mtu, NULL },
		{ NULL, NULL, NULL, NULL, NULL },
	},
};

static DBusMessage *desc_write(void *data, DBusMessage *msg)
{
	return bz_error(msg, "org.bluez.Error.NotPermitted", "Write not permitted");
}

static const struct bz_iface descriptor1 = {
	.name = "org.bluez.GattDescriptor1",
	.methods = (const struct bz_method[]){
		{ "ReadValue", "options:a{sv}", "value:ay", read_value },
		{ "WriteValue", "value:ay options:a{sv}", "", desc_write },
		{ NULL, NULL, NULL, NULL },
	},
	.props = (const struct bz_prop[]){
		{ "UUID", "s", NULL, g_uuid, NULL },
		{ "Characteristic", "o", NULL, g_parent, NULL },
		{ "Value", "ay", NULL, g_value, NULL },
		{ NULL, NULL, NULL, NULL, NULL },
	},
};

const struct bz_iface *const bz_gatt_service_ifaces[] = {
	&bz_iface_introspectable, &service1, &bz_iface_properties, NULL,
};
const struct bz_iface *const bz_gatt_char_ifaces[] = {
	&bz_iface_introspectable, &characteristic1, &bz_iface_properties, NULL,
};
const struct bz_iface *const bz_gatt_desc_ifaces[] = {
	&bz_iface_introspectable, &descriptor1, &bz_iface_properties, NULL,
};
