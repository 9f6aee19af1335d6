/* SPDX-License-Identifier: MIT */
/*
 * Reachability probes of configured UDP and serial devices (reach.h).
 */
#include "gateway/reach.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/engine-int.h" /* gw_smp_os_echo */
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "links/serial.h"
#include "links/udp.h"
#include "util/util.h"

#define PROBE_TIMEOUT_MS 2000

struct reach_probe {
	struct gw_reach *r;
	char *name;
	enum gw_transport transport;
	char *where;          /* UDP host:port or serial path */
	struct link *link;    /* UDP, not in the registry: a link of our own */
	int fd;               /* serial, not held here: the port, kept open, -1 none */
	int64_t req;          /* in the registry: the echo in its queue, 0 none */
	bool waiting;         /* this round's probe not answered yet */
	unsigned misses;
	bool reachable;
	bool gone;            /* no longer in the config */
};

struct gw_reach {
	struct gw *gw;
	gw_reach_cb cb;
	void *user_data;
	uint32_t every_ms;
	unsigned misses;
	struct event *timer;
	struct reach_probe **v;
	size_t n;
	uint8_t *echo;
	size_t echo_len;
};

static void answered(struct reach_probe *p)
{
	p->waiting = false;
	p->misses = 0;
	if (!p->reachable)
		log_info("reach: device \"%s\" (%s %s) is reachable from here", p->name,
			 p->transport == GW_TRANSPORT_UDP ? "udp" : "serial", p->where);
	p->reachable = true;
	p->r->cb(p->name, true, p->r->user_data);
}

static void probe_link_frame(struct link *link, const uint8_t *frame, size_t len, void *user_data)
{
	struct reach_probe *p = user_data;

	if (p->waiting)
		answered(p);
}

static void probe_link_state(struct link *link, enum link_state state, int err, void *user_data)
{
}

static const struct link_callbacks probe_cbs = { .frame = probe_link_frame, .state = probe_link_state };

static void rsp_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct reach_probe *p = user_data;

	p->req = 0;
	if (err == 0 && p->waiting)
		answered(p);
}

static void drop_link(struct reach_probe *p)
{
	p->link = link_free(p->link);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

/* Whether the serial port kept open is still the port at p->where and not
 * hung up (unplugged; a pty whose other side closed). */
static bool port_alive(const struct reach_probe *p)
{
	struct pollfd pfd = { .fd = p->fd, .events = 0 };
	struct stat a, b;

	return poll(&pfd, 1, 0) >= 0 && !(pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) &&
	       fstat(p->fd, &a) == 0 && stat(p->where, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* One probe: through the holder's queue, a link of our own (UDP), or by
 * opening the port (serial, not held here). The port stays open between
 * rounds (nothing read or written, termios untouched): closing it every
 * round is the last close whenever no holder has it open (dead, or between
 * opens), and on a tty with HUPCL set that drops DTR, which resets some
 * boards. It is closed when this gateway holds the device (its link has
 * the port open by then) or when it hung up. */
static void probe_send(struct reach_probe *p)
{
	struct gw_reach *r = p->r;
	struct gw_device *dev = gw_device_find(r->gw, p->name);
	int err = 0;

	p->waiting = true;
	if (dev && strcmp(gw_device_transport(dev), "ble")) {
		const struct gw_req_opts opts = { .timeout_ms = PROBE_TIMEOUT_MS };
		int64_t id;

		drop_link(p); /* held: the device's own link talks to it */
		if (p->req)
			return; /* the last one still queued behind other work */
		id = gw_device_request(dev, r->echo, r->echo_len, &opts, rsp_cb, p);
		if (id > 0)
			p->req = id;
		return;
	}
	if (p->transport == GW_TRANSPORT_SERIAL) {
		if (p->fd >= 0 && !port_alive(p))
			drop_link(p);
		if (p->fd < 0)
			p->fd = open(p->where, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
		if (p->fd >= 0)
			answered(p);
		return;
	}
	if (!p->link) {
		p->link = udp_link_new(gw_base(r->gw), p->where, &err);
		if (!p->link)
			return;
		link_set_callbacks(p->link, &probe_cbs, p);
		if (link_connect(p->link) < 0) {
			drop_link(p);
			return;
		}
	}
	if (link_send(p->link, r->echo, r->echo_len) < 0)
		drop_link(p); /* e.g. ICMP unreachable: a new socket next round */
}

static void round_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_reach *r = arg;

	for (size_t i = 0; i < r->n; i++) {
		struct reach_probe *p = r->v[i];

		if (p->waiting && ++p->misses >= r->misses && p->reachable) {
			p->reachable = false;
			log_notice("reach: device \"%s\" did not answer for %u rounds: "
				   "unreachable from here", p->name, p->misses);
			r->cb(p->name, false, r->user_data);
		}
		probe_send(p);
	}
}

static void probe_free(struct gw_reach *r, struct reach_probe *p)
{
	struct gw_device *dev = p->req ? gw_device_find(r->gw, p->name) : NULL;

	if (dev)
		gw_device_cancel(dev, p->req);
	drop_link(p);
	free(p->name);
	free(p->where);
	free(p);
}

void gw_reach_reload(struct gw_reach *r)
{
	const struct gw_config *cfg;
	size_t keep = 0;

	if (!r)
		return;
	cfg = gw_config(r->gw);
	for (size_t i = 0; i < r->n; i++)
		r->v[i]->gone = true;
	for (size_t k = 0; k < cfg->n_devices; k++) {
		const struct gw_device_conf *d = &cfg->devices[k];
		const char *where = d->transport == GW_TRANSPORT_UDP ? d->address : d->path;
		struct reach_probe *p = NULL;

		if (d->transport == GW_TRANSPORT_BLE || !where)
			continue;
		for (size_t i = 0; i < r->n && !p; i++)
			if (!strcmp(r->v[i]->name, d->name) && r->v[i]->transport == d->transport &&
			    !strcmp(r->v[i]->where, where))
				p = r->v[i];
		if (p) {
			p->gone = false;
			continue;
		}
		p = xnew(struct reach_probe);
		p->r = r;
		p->name = xstrdup(d->name);
		p->transport = d->transport;
		p->where = xstrdup(where);
		p->fd = -1;
		r->v = xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
		r->v[r->n++] = p;
	}
	for (size_t i = 0; i < r->n; i++) {
		struct reach_probe *p = r->v[i];

		if (!p->gone) {
			r->v[keep++] = p;
			continue;
		}
		if (p->reachable)
			r->cb(p->name, false, r->user_data);
		probe_free(r, p);
	}
	r->n = keep;
}

struct gw_reach *gw_reach_new(struct gw *gw, uint32_t every_ms, unsigned misses,
			      gw_reach_cb cb, void *user_data)
{
	struct gw_reach *r = xnew(struct gw_reach);
	struct timeval tv = { every_ms / 1000, (every_ms % 1000) * 1000 };

	r->gw = gw;
	r->cb = cb;
	r->user_data = user_data;
	r->every_ms = every_ms ? every_ms : 1000;
	r->misses = misses ? misses : 1;
	if (gw_smp_os_echo(4, &r->echo, &r->echo_len) < 0)
		return gw_reach_free(r);
	gw_reach_reload(r);
	r->timer = event_new(gw_base(gw), -1, EV_PERSIST, round_cb, r);
	event_add(r->timer, &tv);
	event_active(r->timer, EV_TIMEOUT, 0); /* the first round at once */
	return r;
}

struct gw_reach *gw_reach_free(struct gw_reach *r)
{
	if (!r)
		return NULL;
	if (r->timer)
		event_free(r->timer);
	for (size_t i = 0; i < r->n; i++)
		probe_free(r, r->v[i]);
	free(r->v);
	free(r->echo);
	free(r);
	return NULL;
}
