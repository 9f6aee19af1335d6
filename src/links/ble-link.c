/* SPDX-License-Identifier: MIT */
/*
 * One BLE link (struct link_ops "ble") to one watch through BlueZ:
 * Device1.Connect, wait for ServicesResolved and the SMP characteristic,
 * then AcquireWrite + AcquireNotify (fds: the fast path) or StartNotify +
 * WriteValue(type "command") as the fallback. Owns the write queue (frames
 * split into ATT MTU - 3 byte writes when the watch reassembles), the
 * reassembly of notifications into whole SMP frames by the header length,
 * pairing through Device1.Pair on security errors, and reconnects with
 * exponential backoff and jitter while the gateway wants the link.
 *
 * The connection slot (the adapter's budget) is granted by the manager
 * (ble_link_start) and released here whenever the attempt ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "codec/smp.h"
#include "links/ble-internal.h"
#include "util/util.h"

#define RX_BURST 64 /* notifications read per wakeup */
#define TX_BURST 64 /* writes per wakeup */
#define DISCONNECT_TIMEOUT_MS 5000

static const struct link_ops ble_ops;

static void link_fail(struct ble_link *bl, int err);
static void acquire(struct ble_link *bl);
static void send_connect(struct ble_link *bl);

static struct ble_link *bl_of(const struct link *link)
{
	return link_priv(link);
}

/* ---- slot, queue, timers ---- */

static void release_slot(struct ble_link *bl)
{
	bl->yield = false;
	if (!bl->slot)
		return;
	bl->slot->active--;
	bl->slot = NULL;
	ble_mgr_kick(bl->mgr);
}

static void enqueue(struct ble_link *bl)
{
	bl->phase = BLE_PHASE_QUEUED;
	TAILQ_INSERT_TAIL(&bl->mgr->waitq, bl, qentry);
	ble_mgr_kick(bl->mgr);
}

static void dequeue(struct ble_link *bl)
{
	if (bl->phase == BLE_PHASE_QUEUED)
		TAILQ_REMOVE(&bl->mgr->waitq, bl, qentry);
}

static void timer_arm(struct ble_link *bl, uint32_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(bl->timer_ev, &tv);
}

static uint32_t next_random(struct ble_link *bl)
{
	/* xorshift32: jitter only, no need for quality. */
	uint32_t x = bl->rand_state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	bl->rand_state = x;
	return x;
}

/* Exponential backoff with jitter: a random point in [d/2, d]. */
static uint32_t backoff_ms(struct ble_link *bl)
{
	const struct ble_manager_opts *o = &bl->mgr->opts;
	uint64_t d = o->backoff_min_ms;
	unsigned n = MIN(bl->attempts, 20u);

	d <<= n;
	if (d > o->backoff_max_ms)
		d = o->backoff_max_ms;
	bl->attempts++;
	return (uint32_t)(d / 2 + next_random(bl) % (d / 2 + 1));
}

/* ---- I/O teardown ---- */

static void txq_clear(struct ble_link *bl)
{
	struct ble_chunk *c;

	while ((c = STAILQ_FIRST(&bl->txq))) {
		STAILQ_REMOVE_HEAD(&bl->txq, entry);
		free(c);
	}
	bl->txq_bytes = 0;
}

static void close_fd(int *fd, struct event **ev)
{
	if (*ev)
		event_free(*ev);
	*ev = NULL;
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void close_io(struct ble_link *bl)
{
	close_fd(&bl->wfd, &bl->wev);
	close_fd(&bl->nfd, &bl->nev);
	ble_call_cancel(&bl->wpc);
	txq_clear(bl);
	ble_rx_reset(&bl->rx);
}

/* Sends m (consumed) to bluetoothd without waiting for an answer. */
static void send_noreply(struct ble_link *bl, DBusMessage *m)
{
	struct ble_manager *mgr = bl->mgr;

	if (mgr->owner && mgr->conn) {
		dbus_message_set_no_reply(m, TRUE);
		dbus_connection_send(mgr->conn, m, NULL);
	}
	dbus_message_unref(m);
}

static void char_call_noreply(struct ble_link *bl, const char *method)
{
	if (bl->char_path)
		send_noreply(bl, ble_method(bl->char_path, BLUEZ_CHAR, method));
}

/* Ends whatever the attempt had in flight; keeps the slot. */
static void stop_attempt(struct ble_link *bl)
{
	/* A subscription given up on (e.g. waiting on bluetoothd's own
	 * pairing) is not dropped by bluetoothd 5.66: it answers every later
	 * AcquireNotify/StartNotify of ours "Notify acquired", even after a
	 * reconnect (seen in tests/vm). Tell it. */
	if (bl->pc && bl->notify_pending)
		char_call_noreply(bl, "StopNotify");
	bl->notify_pending = false;
	ble_call_cancel(&bl->pc);
	evtimer_del(bl->timer_ev);
	close_io(bl);
	free(bl->char_path);
	bl->char_path = NULL;
}

static bool phase_active(enum ble_link_phase p)
{
	switch (p) {
	case BLE_PHASE_CONNECTING:
	case BLE_PHASE_PAIRING:
	case BLE_PHASE_ACQUIRING:
	case BLE_PHASE_UP:
		return true;
	case BLE_PHASE_IDLE:
	case BLE_PHASE_QUEUED:
	case BLE_PHASE_BACKOFF:
	case BLE_PHASE_DISCONNECTING:
		return false;
	}
	return false;
}

static void device_call_noreply(struct ble_link *bl, const char *method)
{
	if (bl->dev_path)
		send_noreply(bl, ble_method(bl->dev_path, BLUEZ_DEVICE, method));
}

/* ---- failure, backoff, disconnect ---- */

static bool attempt_phase(enum ble_link_phase p)
{
	return p == BLE_PHASE_CONNECTING || p == BLE_PHASE_PAIRING ||
	       p == BLE_PHASE_ACQUIRING;
}

/* Tells BlueZ to forget the watch's bond (Adapter1.RemoveDevice): the
 * device object goes away and comes back with the next advertisement,
 * unpaired; the link then pairs first. */
static void remove_bond(struct ble_link *bl)
{
	struct ble_dev *dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);
	const char *path = bl->dev_path;
	DBusMessage *m;

	if (!dev || !path)
		return;
	m = ble_method(dev->adapter_path, BLUEZ_ADAPTER, "RemoveDevice");
	dbus_message_append_args(m, DBUS_TYPE_OBJECT_PATH, &path, DBUS_TYPE_INVALID);
	send_noreply(bl, m);
}

/*
 * A paired watch whose connection ends before the link is up, twice in a
 * row, has lost its bond (a real watch: its keys were erased or kept in
 * RAM; BlueZ's encryption with the old key fails, reason 0x05, and Connect
 * fails with "le-connection-abort-by-local"). Out of range is a timeout
 * instead, and does not count. Returns the error to report.
 */
static int check_bond_lost(struct ble_link *bl, int err)
{
	bool suspect = attempt_phase(bl->phase) && bl->paired_at_start &&
		       (err == -ECONNABORTED || err == -ECONNRESET ||
			err == -ECONNREFUSED || err == -EACCES);

	if (!suspect) {
		if (attempt_phase(bl->phase))
			bl->bond_suspects = 0;
		return err;
	}
	bl->suspect_us = now_usec();
	if (++bl->bond_suspects < BLE_BOND_SUSPECTS)
		return err;
	bl->bond_suspects = 0;
	bl->needs_bond = true;
	if (!bl->rebond || !bl->pair_allowed) {
		bl->pairing = BLE_PAIRING_BOND_LOST;
		return -EKEYREVOKED;
	}
	remove_bond(bl);
	bl->pairing = BLE_PAIRING_NONE;
	bl->paired_at_start = false;
	bl->attempts = 0; /* pair again soon */
	return -ECONNRESET;
}

/* The attempt or the connection ended with err: release everything, then
 * back off and retry if the gateway still wants the link. Reports DOWN. */
static void link_fail(struct ble_link *bl, int err)
{
	err = check_bond_lost(bl, err);
	if (bl->pairing == BLE_PAIRING_PAIRING)
		bl->pairing = BLE_PAIRING_NONE;
	/* Cancel BlueZ's side too: a pending Connect (Disconnect aborts the
	 * LE connection attempt) or a connection we will not use. Not after
	 * BlueZ answered Connect with an error: nothing is left to abort
	 * (and bluetoothd 5.66 was seen to crash on a Disconnect right after
	 * a Connect that failed for a lost bond, in tests/vm). */
	if (phase_active(bl->phase) && !bl->connect_failed)
		device_call_noreply(bl, "Disconnect");
	bl->connect_failed = false;
	stop_attempt(bl);
	release_slot(bl);
	if (bl->want) {
		bl->phase = BLE_PHASE_BACKOFF;
		timer_arm(bl, backoff_ms(bl));
	} else {
		bl->phase = BLE_PHASE_IDLE;
	}
	link_set_state(bl->link, LINK_STATE_DOWN, err);
}

static void finish_disconnect(struct ble_link *bl)
{
	ble_call_cancel(&bl->pc);
	release_slot(bl);
	bl->phase = BLE_PHASE_IDLE;
	if (bl->want) {
		enqueue(bl);
		link_set_state(bl->link, LINK_STATE_CONNECTING, 0);
	}
}

static void disconnect_reply(DBusPendingCall *pc, void *data)
{
	struct ble_link *bl = data;

	dbus_message_unref(ble_call_reply(&bl->pc));
	finish_disconnect(bl);
}

/* Polite disconnect holding the slot until BlueZ answers. */
static void begin_disconnect(struct ble_link *bl)
{
	stop_attempt(bl);
	bl->phase = BLE_PHASE_DISCONNECTING;
	if (bl->dev_path && bl->mgr->owner)
		bl->pc = ble_call(bl->mgr,
				  ble_method(bl->dev_path, BLUEZ_DEVICE, "Disconnect"),
				  DISCONNECT_TIMEOUT_MS, disconnect_reply, bl);
	if (!bl->pc) {
		release_slot(bl);
		bl->phase = BLE_PHASE_IDLE;
	}
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ble_link *bl = arg;
	struct ble_dev *dev;

	switch (bl->phase) {
	case BLE_PHASE_BACKOFF:
		enqueue(bl);
		link_set_state(bl->link, LINK_STATE_CONNECTING, 0);
		break;
	case BLE_PHASE_CONNECTING:
		dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);
		/* Resolved without the SMP characteristic: not a watch we
		 * can talk to (or BlueZ's cache is stale). */
		link_fail(bl, dev && dev->connected && dev->resolved &&
				      !dev->char_path ? -ENOENT : -ETIMEDOUT);
		break;
	case BLE_PHASE_PAIRING:
	case BLE_PHASE_ACQUIRING:
		link_fail(bl, -ETIMEDOUT);
		break;
	case BLE_PHASE_IDLE:
	case BLE_PHASE_QUEUED:
	case BLE_PHASE_UP:
	case BLE_PHASE_DISCONNECTING:
		break;
	}
}

/* ---- connect, resolve, pair ---- */

/* Paired now; a pairing this link saw through (Pair() or bluetoothd's
 * own, authorized by the agent) counts as a new bond. */
static void set_paired(struct ble_link *bl)
{
	if (bl->pairing == BLE_PAIRING_PAIRING)
		bl->bonds_made++;
	bl->pairing = BLE_PAIRING_PAIRED;
}

static void go_up(struct ble_link *bl)
{
	struct ble_dev *dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);

	evtimer_del(bl->timer_ev);
	bl->bond_suspects = 0;
	if (dev && dev->paired)
		set_paired(bl);
	else
		bl->pairing = BLE_PAIRING_NONE;
	bl->phase = BLE_PHASE_UP;
	bl->attempts = 0;
	bl->yield = false;
	ble_rx_reset(&bl->rx);
	bl->last_activity_us = bl->up_us = now_usec();
	link_set_state(bl->link, LINK_STATE_UP, 0);
}

static void check_ready(struct ble_link *bl)
{
	struct ble_dev *dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);

	if (bl->phase != BLE_PHASE_CONNECTING || !dev)
		return;
	/* Ready: go on even if Connect has not answered yet (a slow reply
	 * must not hold a working connection back). */
	if (dev->connected && dev->resolved && dev->char_path) {
		ble_call_cancel(&bl->pc);
		acquire(bl);
	}
}

static void pair_failed(struct ble_link *bl, int err)
{
	/* Authentication* errors: the watch said no (outside its pairing
	 * window); anything else: the connection Pair() made failed. */
	if (err == -EACCES) {
		bl->pairing = BLE_PAIRING_REFUSED;
	} else {
		if (err == -ETIMEDOUT) /* do not leave bluetoothd pairing */
			device_call_noreply(bl, "CancelPairing");
		bl->pairing = BLE_PAIRING_NONE;
		if (err != -ETIMEDOUT && err != -ENODEV)
			err = -ECONNREFUSED;
	}
	link_fail(bl, err);
}

static void pair_reply(DBusPendingCall *pc, void *data)
{
	struct ble_link *bl = data;
	DBusMessage *reply = ble_call_reply(&bl->pc);
	int err = ble_error_errno(reply);

	if (ble_error_is(reply, "org.bluez.Error.AlreadyExists"))
		err = 0;
	dbus_message_unref(reply);
	if (err) {
		pair_failed(bl, err);
		return;
	}
	set_paired(bl);
	bl->needs_bond = true;
	/* Paired: start over (Connect on a connected device returns at once). */
	send_connect(bl);
}

static void pair(struct ble_link *bl)
{
	/* An acquired write fd is kept: BlueZ releases it asynchronously, so
	 * acquiring it again right away would fail with "Write acquired". */
	bl->paired_once = true;
	bl->phase = BLE_PHASE_PAIRING;
	bl->pairing = BLE_PAIRING_PAIRING;
	evtimer_del(bl->timer_ev);
	timer_arm(bl, BLE_PAIR_TIMEOUT_MS + 1000);
	bl->pc = ble_call(bl->mgr, ble_method(bl->dev_path, BLUEZ_DEVICE, "Pair"),
			  BLE_PAIR_TIMEOUT_MS, pair_reply, bl);
	if (!bl->pc)
		link_fail(bl, -ECONNRESET);
}

/* A security error: pair once per attempt when allowed, else give up:
 * -EPERM (not allowed), -EACCES (paired and still refused). */
static bool maybe_pair(struct ble_link *bl, DBusMessage *reply)
{
	if (!ble_error_is_auth(reply))
		return false;
	bl->needs_bond = true;
	if (!bl->pair_allowed) {
		bl->pairing = BLE_PAIRING_NOT_ALLOWED;
		link_fail(bl, -EPERM);
	} else if (bl->paired_once) {
		link_fail(bl, -EACCES);
	} else {
		pair(bl);
	}
	return true;
}

bool ble_link_agent_request(struct ble_link *bl)
{
	bl->needs_bond = true;
	if (bl->pair_allowed) {
		if (bl->pairing != BLE_PAIRING_PAIRED)
			bl->pairing = BLE_PAIRING_PAIRING;
		return true;
	}
	bl->pairing = BLE_PAIRING_NOT_ALLOWED;
	/* bluetoothd's pairing fails locally now, and the GATT call that
	 * started it would hang until the ATT timeout (30 s): give up now. */
	if (phase_active(bl->phase))
		link_fail(bl, -EPERM);
	return false;
}

static void connect_reply(DBusPendingCall *pc, void *data)
{
	struct ble_link *bl = data;
	DBusMessage *reply = ble_call_reply(&bl->pc);
	int err = ble_error_errno(reply);
	struct ble_dev *dev;

	/* InProgress / AlreadyConnected: someone else connects; wait for the
	 * properties as after a successful call. */
	if (err == -EINPROGRESS || err == -EALREADY)
		err = 0;
	if (err && maybe_pair(bl, reply)) {
		dbus_message_unref(reply);
		return;
	}
	dbus_message_unref(reply);
	if (err == -EMLINK && bl->slot && bl->slot->active > 1) {
		/* The controller is full (other programs' links, or a budget
		 * above what it holds): wait at the head of the queue for a
		 * slot instead of failing. */
		struct ble_adapter *ad = bl->slot;

		stop_attempt(bl);
		ble_mgr_adapter_full(bl->mgr, ad);
		release_slot(bl);
		ble_mgr_requeue_first(bl->mgr, bl);
		return;
	}
	if (err) {
		/* EMLINK with no link of ours there: others hold the
		 * controller; back off like any failure. */
		bl->connect_failed = true;
		link_fail(bl, err == -ETIMEDOUT || err == -ENODEV || err == -EMLINK ?
				      err : -ECONNREFUSED);
		return;
	}
	dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);
	/* Already connected before this attempt: a later Connected false is
	 * then a drop as well. */
	if (dev && dev->connected)
		bl->connect_seen = true;
	/* BlueZ answers Connect only once the LE link is up, yet the real
	 * bluetoothd 5.66 may never signal Connected true: when the ATT socket
	 * completes before mgmt's Device Connected event, device_add_connection()
	 * logs "already connected" and emits nothing (seen in tests/vm). Trust
	 * the reply; a later Connected false still reports the drop. */
	if (dev && !dev->connected) {
		dev->connected = true;
		bl->connect_seen = true;
	}
	check_ready(bl);
}

static void send_connect(struct ble_link *bl)
{
	bl->phase = BLE_PHASE_CONNECTING;
	bl->pc = ble_call(bl->mgr, ble_method(bl->dev_path, BLUEZ_DEVICE, "Connect"),
			  (int)bl->mgr->opts.connect_timeout_ms, connect_reply, bl);
	if (!bl->pc)
		link_fail(bl, -ECONNRESET);
}

void ble_link_start(struct ble_link *bl, struct ble_adapter *ad)
{
	struct ble_dev *dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);

	bl->slot = ad;
	ad->active++;
	bl->paired_once = false;
	bl->connect_seen = false;
	bl->fallback = !bl->mgr->opts.prefer_acquire;
	bl->paired_at_start = dev->paired;
	if (dev->paired && bl->pairing == BLE_PAIRING_NONE)
		bl->pairing = BLE_PAIRING_PAIRED;
	free(bl->dev_path);
	bl->dev_path = xstrdup(dev->path);
	timer_arm(bl, bl->mgr->opts.connect_timeout_ms);
	if (bl->remove_first && dev->paired) {
		/* See ble_link_service_lost(): no Connect with the old key. */
		bl->remove_first = false;
		bl->bond_suspects = BLE_BOND_SUSPECTS - 1;
		bl->paired_at_start = true;
		bl->phase = BLE_PHASE_CONNECTING;
		bl->connect_failed = true; /* nothing to abort */
		link_fail(bl, -ECONNABORTED);
		return;
	}
	bl->remove_first = false;
	if (bl->pairing == BLE_PAIRING_BOND_LOST && dev->paired) {
		/* Known lost and not to be replaced: no attempt with the old
		 * key (each would fail, and crash bluetoothd 5.66) until the
		 * bond is removed by hand or the policy allows rebonding. */
		link_fail(bl, -EKEYREVOKED);
		return;
	}
	if (!dev->paired && !bl->pair_allowed && bl->needs_bond) {
		/* Known to need a bond we may not make: no radio traffic,
		 * no pairing attempt for the agent to refuse. A policy
		 * change (SIGHUP) or a daemon restart tries again. */
		bl->pairing = BLE_PAIRING_NOT_ALLOWED;
		link_fail(bl, -EPERM);
		return;
	}
	if (!dev->paired && bl->pair_allowed && (bl->pair_first || bl->needs_bond)) {
		/* A watch that needs a bond: pair before subscribing, so that
		 * a refusal is a clear Pair() error rather than a subscription
		 * bluetoothd leaves hanging. Pair() connects first. */
		pair(bl);
		return;
	}
	if (dev->connected && dev->resolved && dev->char_path) {
		/* Connected already (kept by BlueZ across our restart, or by
		 * another program): no Connect needed. */
		bl->phase = BLE_PHASE_CONNECTING;
		bl->connect_seen = true;
		acquire(bl);
		return;
	}
	send_connect(bl);
}

/* ---- acquire (fast path) or notify (fallback) ---- */

static void nev_cb(evutil_socket_t fd, short what, void *arg);
static void wev_cb(evutil_socket_t fd, short what, void *arg);

static int take_fd(DBusMessage *reply, uint16_t *mtu)
{
	int fd = -1;

	if (!dbus_message_get_args(reply, NULL, DBUS_TYPE_UNIX_FD, &fd,
				   DBUS_TYPE_UINT16, mtu, DBUS_TYPE_INVALID))
		return -EBADMSG;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

/* A stale session of ours in bluetoothd: drop it, retry after the backoff. */
static bool stale_session(struct ble_link *bl, DBusMessage *reply)
{
	if (!ble_error_is_stale_session(reply))
		return false;
	char_call_noreply(bl, "StopNotify");
	link_fail(bl, -EBUSY);
	return true;
}

static void notify_reply(DBusPendingCall *pc, void *data)
{
	struct ble_link *bl = data;
	DBusMessage *reply;
	int err;

	bl->notify_pending = false;
	reply = ble_call_reply(&bl->pc);
	err = ble_error_errno(reply);
	if (err && (stale_session(bl, reply) || maybe_pair(bl, reply))) {
		dbus_message_unref(reply);
		return;
	}
	dbus_message_unref(reply);
	if (err && err != -EINPROGRESS && err != -EALREADY) {
		link_fail(bl, err);
		return;
	}
	go_up(bl);
}

static void start_notify(struct ble_link *bl)
{
	close_io(bl);
	bl->fallback = true;
	bl->notify_pending = true;
	bl->pc = ble_call(bl->mgr, ble_method(bl->char_path, BLUEZ_CHAR, "StartNotify"),
			  BLE_CALL_TIMEOUT_MS, notify_reply, bl);
	if (!bl->pc)
		link_fail(bl, -ECONNRESET);
}

/* Errors after which the fallback is worth trying. */
static bool acquire_unsupported(int err)
{
	return err == -EPERM || err == -EOPNOTSUPP || err == -ENODEV ||
	       err == -EIO || err == -EBADMSG;
}

/* The fd and MTU of an AcquireWrite/AcquireNotify reply. A negative return
 * means the reply was handled here: pairing took over, or the link fell
 * back to StartNotify/WriteValue, or it failed. */
static int acquire_reply(struct ble_link *bl, uint16_t *mtu)
{
	DBusMessage *reply;
	int err, fd;
	bool handled;

	bl->notify_pending = false;
	reply = ble_call_reply(&bl->pc);
	err = ble_error_errno(reply);
	fd = err ? err : take_fd(reply, mtu);
	handled = fd < 0 && err && (stale_session(bl, reply) || maybe_pair(bl, reply));
	dbus_message_unref(reply);
	if (fd >= 0 || handled)
		return handled ? -EINPROGRESS : fd;
	if (acquire_unsupported(fd))
		start_notify(bl);
	else
		link_fail(bl, fd);
	return fd;
}

static void acquire_notify_reply(DBusPendingCall *pc, void *data)
{
	struct ble_link *bl = data;
	uint16_t mtu = 0;
	int fd = acquire_reply(bl, &mtu);

	if (fd < 0)
		return;
	bl->nfd = fd;
	if (mtu > BLE_DEFAULT_ATT_MTU && (!bl->att_mtu || mtu < bl->att_mtu))
		bl->att_mtu = mtu;
	bl->nev = event_new(link_base(bl->link), fd, EV_READ | EV_PERSIST,
			    nev_cb, bl);
	bl->wev = event_new(link_base(bl->link), bl->wfd, EV_WRITE, wev_cb, bl);
	event_add(bl->nev, NULL);
	go_up(bl);
}

static void acquire_notify(struct ble_link *bl);

static void acquire_write_reply(DBusPendingCall *pc, void *data)
{
	struct ble_link *bl = data;
	uint16_t mtu = 0;
	int fd = acquire_reply(bl, &mtu);

	if (fd < 0)
		return;
	bl->wfd = fd;
	if (mtu > BLE_DEFAULT_ATT_MTU)
		bl->att_mtu = mtu;
	acquire_notify(bl);
}

static void acquire_notify(struct ble_link *bl)
{
	DBusMessage *m;
	DBusMessageIter it;

	m = ble_method(bl->char_path, BLUEZ_CHAR, "AcquireNotify");
	dbus_message_iter_init_append(m, &it);
	ble_append_empty_dict(&it);
	bl->notify_pending = true;
	bl->pc = ble_call(bl->mgr, m, BLE_CALL_TIMEOUT_MS, acquire_notify_reply, bl);
	if (!bl->pc)
		link_fail(bl, -ECONNRESET);
}

static void acquire(struct ble_link *bl)
{
	struct ble_dev *dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);
	DBusMessage *m;
	DBusMessageIter it;

	bl->phase = BLE_PHASE_ACQUIRING;
	free(bl->char_path);
	bl->char_path = xstrdup(dev->char_path);
	bl->att_mtu = dev->char_mtu > BLE_DEFAULT_ATT_MTU ? dev->char_mtu : 0;
	if (bl->fallback) {
		start_notify(bl);
		return;
	}
	if (bl->wfd >= 0) { /* kept across Pair() */
		acquire_notify(bl);
		return;
	}
	m = ble_method(bl->char_path, BLUEZ_CHAR, "AcquireWrite");
	dbus_message_iter_init_append(m, &it);
	ble_append_empty_dict(&it);
	bl->pc = ble_call(bl->mgr, m, BLE_CALL_TIMEOUT_MS, acquire_write_reply, bl);
	if (!bl->pc)
		link_fail(bl, -ECONNRESET);
}

/* ---- receive: notifications to whole frames ---- */

static bool rx_frame(const uint8_t *frame, size_t len, void *user_data)
{
	struct ble_link *bl = user_data;

	link_deliver_frame(bl->link, frame, len);
	/* The callback may have taken the link down. */
	return bl->phase == BLE_PHASE_UP;
}

static void rx_chunk(struct ble_link *bl, const uint8_t *buf, size_t len)
{
	uint64_t now = now_usec();

	uint64_t partials = bl->rx.partials_dropped;
	bool up = bl->phase == BLE_PHASE_UP;
	int r;

	bl->last_activity_us = now;
	r = ble_rx_push(&bl->rx, buf, len, now, rx_frame, bl);
	/* Reported after the frames: the link may have gone down in them. */
	if (!up || bl->phase != BLE_PHASE_UP)
		return;
	if (bl->rx.partials_dropped != partials)
		link_report_bad_input(bl->link, "a response cut short or missing a "
				      "notification");
	if (r == -EBADMSG && bl->phase == BLE_PHASE_UP)
		link_report_bad_input(bl->link, "a notification that is no SMP response");
}

static void nev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ble_link *bl = arg;
	uint8_t buf[4096];

	for (int i = 0; i < RX_BURST; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < 0 && errno == ENOTSOCK)
			n = read(fd, buf, sizeof(buf));
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
			      errno == EINTR))
			return;
		if (n <= 0) {
			/* EOF or error: the link dropped (BlueZ closes the
			 * notify fd on disconnect). */
			link_fail(bl, -ECONNRESET);
			return;
		}
		rx_chunk(bl, buf, (size_t)n);
		if (bl->phase != BLE_PHASE_UP || bl->nfd != fd)
			return;
	}
}

void ble_link_char_value(struct ble_link *bl, const uint8_t *buf, size_t len)
{
	if (bl->phase == BLE_PHASE_UP && bl->fallback)
		rx_chunk(bl, buf, len);
}

/* ---- send: frames to writes ---- */

static void wv_start(struct ble_link *bl);

static void wv_reply(DBusPendingCall *pc, void *data)
{
	struct ble_link *bl = data;
	DBusMessage *reply = ble_call_reply(&bl->wpc);
	int err = ble_error_errno(reply);
	struct ble_chunk *c = STAILQ_FIRST(&bl->txq);

	if (err && ble_error_is_auth(reply)) {
		err = -EACCES;
		bl->needs_bond = true; /* the retry pairs first */
	}
	dbus_message_unref(reply);
	if (err) {
		link_fail(bl, err);
		return;
	}
	if (c) {
		STAILQ_REMOVE_HEAD(&bl->txq, entry);
		bl->txq_bytes -= c->len;
		free(c);
	}
	wv_start(bl);
}

static void wv_start(struct ble_link *bl)
{
	struct ble_chunk *c = STAILQ_FIRST(&bl->txq);
	const uint8_t *p;
	DBusMessage *m;
	DBusMessageIter it, arr, dict, e, v;
	const char *key = "type", *type = "command";

	if (!c || bl->wpc)
		return;
	p = c->data;
	m = ble_method(bl->char_path, BLUEZ_CHAR, "WriteValue");
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "y", &arr);
	dbus_message_iter_append_fixed_array(&arr, DBUS_TYPE_BYTE, &p, (int)c->len);
	dbus_message_iter_close_container(&it, &arr);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict);
	dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &e);
	dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key);
	dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "s", &v);
	dbus_message_iter_append_basic(&v, DBUS_TYPE_STRING, &type);
	dbus_message_iter_close_container(&e, &v);
	dbus_message_iter_close_container(&dict, &e);
	dbus_message_iter_close_container(&it, &dict);
	bl->wpc = ble_call(bl->mgr, m, BLE_CALL_TIMEOUT_MS, wv_reply, bl);
	if (!bl->wpc)
		link_fail(bl, -ECONNRESET);
}

static void wev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ble_link *bl = arg;
	struct ble_chunk *c;

	for (int i = 0; i < TX_BURST && (c = STAILQ_FIRST(&bl->txq)); i++) {
		ssize_t n = send(fd, c->data, c->len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, c->data, c->len);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
			      errno == EINTR)) {
			/* BlueZ's socket is full: wait until it drains. */
			event_add(bl->wev, NULL);
			return;
		}
		if (n < 0) {
			link_fail(bl, -ECONNRESET); /* EPIPE: link dropped */
			return;
		}
		STAILQ_REMOVE_HEAD(&bl->txq, entry);
		bl->txq_bytes -= c->len;
		free(c);
	}
	if (!STAILQ_EMPTY(&bl->txq))
		event_add(bl->wev, NULL);
}

static size_t write_payload(const struct ble_link *bl)
{
	return (bl->att_mtu > BLE_DEFAULT_ATT_MTU ? bl->att_mtu : BLE_DEFAULT_ATT_MTU) - 3;
}

static int op_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct ble_link *bl = bl_of(link);
	size_t max = write_payload(bl);

	if (bl->phase != BLE_PHASE_UP)
		return -ENOTCONN;
	/* Giving the slot to a waiter: the next request waits for the next
	 * turn (the gateway keeps it queued). */
	if (bl->yield)
		return -EAGAIN;
	if (!len || len > BLE_FRAME_MAX || (len > max && !bl->reassembly))
		return -EMSGSIZE;
	if (bl->txq_bytes + len > BLE_TXQ_MAX)
		return -EAGAIN;
	for (size_t off = 0; off < len; off += max) {
		size_t n = MIN(max, len - off);
		struct ble_chunk *c = xmalloc(sizeof(*c) + n);

		c->len = n;
		memcpy(c->data, frame + off, n);
		STAILQ_INSERT_TAIL(&bl->txq, c, entry);
		bl->txq_bytes += n;
	}
	bl->last_activity_us = now_usec();
	/* Written from the loop, never from inside send(): a failing write
	 * then reports DOWN outside the caller's stack. */
	if (bl->fallback) {
		if (!bl->wpc && bl->mgr->conn)
			wv_start(bl);
	} else {
		event_add(bl->wev, NULL);
	}
	return 0;
}

/* ---- manager events ---- */

void ble_link_dev_changed(struct ble_link *bl, struct ble_dev *dev)
{
	switch (bl->phase) {
	case BLE_PHASE_CONNECTING:
		check_ready(bl);
		break;
	case BLE_PHASE_ACQUIRING:
	case BLE_PHASE_UP:
		if (dev->paired && bl->pairing == BLE_PAIRING_PAIRING)
			set_paired(bl);
		if (dev->connected)
			break;
		/* Dropped while bluetoothd paired on its own (the agent said
		 * yes): the watch refused, and the kernel disconnected. */
		if (bl->phase == BLE_PHASE_ACQUIRING &&
		    bl->pairing == BLE_PAIRING_PAIRING) {
			bl->pairing = BLE_PAIRING_REFUSED;
			link_fail(bl, -EACCES);
		} else {
			link_fail(bl, -ECONNRESET);
		}
		break;
	case BLE_PHASE_IDLE:
	case BLE_PHASE_QUEUED:
	case BLE_PHASE_BACKOFF:
	case BLE_PHASE_PAIRING:
	case BLE_PHASE_DISCONNECTING:
		break;
	}
	/* Connected false while waiting for ServicesResolved after Connect. */
	if (bl->phase == BLE_PHASE_CONNECTING && !bl->pc && !dev->connected &&
	    bl->connect_seen)
		link_fail(bl, -ECONNRESET);
	else if (bl->phase == BLE_PHASE_CONNECTING && dev->connected)
		bl->connect_seen = true;
}

void ble_link_dev_gone(struct ble_link *bl, int err)
{
	if (bl->phase == BLE_PHASE_DISCONNECTING)
		finish_disconnect(bl);
	else if (phase_active(bl->phase))
		link_fail(bl, err == -ENODEV && bl->phase == BLE_PHASE_UP ?
			      -ECONNRESET : err);
}

void ble_link_service_lost(struct ble_link *bl)
{
	/* bluetoothd 5.66 dies right after answering a Connect that failed
	 * because the watch lost its bond (seen in tests/vm), and would die
	 * again on every new attempt: the bond goes before the next one. */
	if (bl->bond_suspects > 0 && now_usec() - bl->suspect_us < BLE_CRASH_WINDOW_US)
		bl->remove_first = true;
	if (bl->phase == BLE_PHASE_DISCONNECTING) {
		finish_disconnect(bl);
		return;
	}
	if (phase_active(bl->phase))
		link_fail(bl, -ECONNRESET);
	free(bl->dev_path);
	bl->dev_path = NULL;
}

void ble_link_evict(struct ble_link *bl)
{
	/* Parked: the gateway connects again on demand. */
	bl->want = false;
	bl->yield = false;
	begin_disconnect(bl);
	link_set_state(bl->link, LINK_STATE_DOWN, 0);
}

bool ble_link_between_requests(const struct ble_link *bl)
{
	return bl->phase == BLE_PHASE_UP && !bl->use_inflight &&
	       STAILQ_EMPTY(&bl->txq) && bl->rx.len == 0 && !bl->wpc;
}

enum ble_release ble_link_releasable(const struct ble_link *bl, uint64_t now_us,
				     uint64_t idle_us, uint64_t slice_us)
{
	if (bl->phase != BLE_PHASE_UP || bl->held || bl->yield)
		return BLE_RELEASE_NO;
	/* Unused: nothing of the gateway's in flight or queued, and quiet
	 * (no frame either way) for the idle time. */
	if (!bl->use_queued && ble_link_between_requests(bl) &&
	    now_us - bl->last_activity_us >= idle_us)
		return BLE_RELEASE_IDLE;
	/* In use (or not yet quiet long enough): its turn is over after the
	 * time slice, so that busy watches take turns too. */
	if (now_us - bl->up_us >= slice_us)
		return BLE_RELEASE_SLICE;
	return BLE_RELEASE_NO;
}

/* ---- link_ops ---- */

static int op_connect(struct link *link)
{
	struct ble_link *bl = bl_of(link);

	bl->want = true;
	switch (bl->phase) {
	case BLE_PHASE_IDLE:
		enqueue(bl);
		link_set_state(link, LINK_STATE_CONNECTING, 0);
		break;
	case BLE_PHASE_BACKOFF: /* the backoff stands: retries are paced */
	case BLE_PHASE_QUEUED:
	case BLE_PHASE_CONNECTING:
	case BLE_PHASE_PAIRING:
	case BLE_PHASE_ACQUIRING:
	case BLE_PHASE_UP:
	case BLE_PHASE_DISCONNECTING: /* queued again when it ends */
		break;
	}
	return 0;
}

static void op_disconnect(struct link *link)
{
	struct ble_link *bl = bl_of(link);

	bl->want = false;
	bl->attempts = 0;
	switch (bl->phase) {
	case BLE_PHASE_QUEUED:
		dequeue(bl);
		bl->phase = BLE_PHASE_IDLE;
		break;
	case BLE_PHASE_BACKOFF:
		evtimer_del(bl->timer_ev);
		bl->phase = BLE_PHASE_IDLE;
		break;
	case BLE_PHASE_CONNECTING:
	case BLE_PHASE_PAIRING:
	case BLE_PHASE_ACQUIRING:
	case BLE_PHASE_UP:
		begin_disconnect(bl);
		break;
	case BLE_PHASE_IDLE:
	case BLE_PHASE_DISCONNECTING:
		break;
	}
	link_set_state(link, LINK_STATE_DOWN, 0);
}

static size_t op_mtu(const struct link *link)
{
	return write_payload(bl_of(link));
}

void ble_link_shutdown(struct ble_link *bl)
{
	bool connected = phase_active(bl->phase) ||
			 bl->phase == BLE_PHASE_DISCONNECTING;

	bl->want = false;
	dequeue(bl);
	stop_attempt(bl);
	if (connected)
		device_call_noreply(bl, "Disconnect");
	release_slot(bl);
	bl->phase = BLE_PHASE_IDLE;
}

static void op_destroy(struct link *link)
{
	struct ble_link *bl = bl_of(link);

	ble_link_shutdown(bl);
	event_free(bl->timer_ev);
	ble_rx_fini(&bl->rx);
	free(bl->dev_path);
	free(bl->address);
	free(bl);
}

static const struct link_ops ble_ops = {
	.name = "ble",
	.connect = op_connect,
	.disconnect = op_disconnect,
	.send = op_send,
	.mtu = op_mtu,
	.destroy = op_destroy,
};

struct ble_link *ble_link_create(struct ble_manager *mgr, const char *address)
{
	struct ble_link *bl = xnew(struct ble_link);

	bl->mgr = mgr;
	bl->address = xstrdup(address);
	bl->reassembly = true;
	bl->pair_allowed = bl->rebond = true;
	bl->wfd = bl->nfd = -1;
	bl->hci_rssi = 127;
	bl->rand_state = (uint32_t)now_usec() ^ (uint32_t)(uintptr_t)bl;
	if (!bl->rand_state)
		bl->rand_state = 0x9e3779b9u;
	STAILQ_INIT(&bl->txq);
	ble_rx_init(&bl->rx);
	bl->timer_ev = evtimer_new(mgr->base, timer_cb, bl);
	bl->link = link_new(&ble_ops, mgr->base, bl);
	return bl;
}

/* ---- public link facts ---- */

static struct ble_link *ble_of(const struct link *link)
{
	if (!link || strcmp(link_transport(link), "ble"))
		return NULL;
	return bl_of(link);
}

int ble_link_rssi(const struct link *link)
{
	struct ble_link *bl = ble_of(link);
	struct ble_dev *dev;

	if (!bl)
		return -1;
	if (bl->hci_rssi != 127 && bl->phase == BLE_PHASE_UP)
		return bl->hci_rssi;
	dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);
	return dev && dev->rssi != 127 ? dev->rssi : -1;
}

bool ble_link_reassembly(const struct link *link)
{
	struct ble_link *bl = ble_of(link);

	return bl && bl->reassembly;
}

void ble_link_set_reassembly(struct link *link, bool on)
{
	struct ble_link *bl = ble_of(link);

	if (bl)
		bl->reassembly = on;
}

const char *ble_link_address(const struct link *link)
{
	struct ble_link *bl = ble_of(link);

	return bl ? bl->address : NULL;
}

void ble_link_set_use(struct link *link, unsigned in_flight, unsigned queued,
		      bool held)
{
	struct ble_link *bl = ble_of(link);

	if (!bl)
		return;
	/* Quiet counts from the end of the last request (answered or not). */
	if ((bl->use_inflight || bl->use_queued) && !in_flight && !queued)
		bl->last_activity_us = now_usec();
	bl->use_inflight = in_flight;
	bl->use_queued = queued;
	bl->held = held;
	if (held)
		bl->yield = false;
	/* A yielding link leaves as soon as its last answer came; a link no
	 * longer held may be released. The manager decides, from the loop. */
	if (!TAILQ_EMPTY(&bl->mgr->waitq) &&
	    ((bl->yield && ble_link_between_requests(bl)) || !held))
		ble_mgr_kick(bl->mgr);
}

bool ble_link_fast_path(const struct link *link)
{
	struct ble_link *bl = ble_of(link);

	return bl && bl->phase == BLE_PHASE_UP && !bl->fallback;
}

static const char *adapter_name(struct ble_link *bl)
{
	struct ble_dev *dev = ble_mgr_dev_by_addr(bl->mgr, bl->address);
	struct ble_adapter *ad = dev ? ble_mgr_adapter(bl->mgr, dev->adapter_path) : NULL;

	return ad ? ad->name : NULL;
}

int ble_link_read_rssi(struct link *link)
{
	struct ble_link *bl = ble_of(link);
	const char *ad;
	int8_t rssi;
	int r;

	if (!bl || bl->phase != BLE_PHASE_UP)
		return -ENOTCONN;
	ad = adapter_name(bl);
	if (!ad)
		return -ENODEV;
	r = ble_hci_read_rssi(ad, bl->address, &rssi);
	if (r < 0)
		return r;
	bl->hci_rssi = rssi;
	return rssi;
}

int ble_link_set_fast(struct link *link, bool fast)
{
	struct ble_link *bl = ble_of(link);
	const char *ad;

	if (!bl || bl->phase != BLE_PHASE_UP)
		return -ENOTCONN;
	ad = adapter_name(bl);
	if (!ad)
		return -ENODEV;
	/* Units of 1.25 ms; supervision timeout in 10 ms. Fast: 7.5-15 ms
	 * (what Zephyr's smp_bt asks for itself); slow: 30-50 ms. */
	return fast ? ble_hci_conn_update(ad, bl->address, 6, 12, 0, 400)
		    : ble_hci_conn_update(ad, bl->address, 24, 40, 0, 400);
}

/* ---- pairing ---- */

void ble_link_set_pairing(struct link *link, bool allowed, bool first,
			  bool rebond)
{
	struct ble_link *bl = ble_of(link);

	if (!bl)
		return;
	/* Allowed now (SIGHUP): the next retry may pair or rebond (a lost
	 * bond is removed before connecting with it). */
	if ((allowed && bl->pairing == BLE_PAIRING_NOT_ALLOWED) ||
	    (allowed && rebond && bl->pairing == BLE_PAIRING_BOND_LOST)) {
		bl->remove_first = bl->pairing == BLE_PAIRING_BOND_LOST;
		bl->pairing = BLE_PAIRING_NONE;
		bl->attempts = 0;
	}
	bl->pair_allowed = allowed;
	bl->pair_first = first;
	bl->rebond = rebond;
}

unsigned ble_link_bonds_made(const struct link *link)
{
	struct ble_link *bl = ble_of(link);

	return bl ? bl->bonds_made : 0;
}

enum ble_pairing ble_link_pairing(const struct link *link)
{
	struct ble_link *bl = ble_of(link);

	return bl ? bl->pairing : BLE_PAIRING_NONE;
}

const char *ble_pairing_str(enum ble_pairing p)
{
	switch (p) {
	case BLE_PAIRING_NONE: return "none";
	case BLE_PAIRING_PAIRING: return "pairing";
	case BLE_PAIRING_PAIRED: return "paired";
	case BLE_PAIRING_REFUSED: return "pairing_refused";
	case BLE_PAIRING_NOT_ALLOWED: return "not_allowed";
	case BLE_PAIRING_BOND_LOST: return "bond_lost";
	}
	return "none";
}
