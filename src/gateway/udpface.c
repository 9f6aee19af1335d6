/* SPDX-License-Identifier: MIT */
/*
 * UDP endpoints (see udpface.h). Owns the per-device sockets and the
 * bookkeeping of requests forwarded for UDP clients (who asked, from
 * where), so each response goes back to its sender.
 */
#include "gateway/udpface.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "codec/smp.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "gateway/registry/registry.h"
#include "links/udp.h"
#include "util/util.h"

#define MAX_DATAGRAM 65536
/* Rate limit of the "dropped datagram" log line. */
#define DROP_LOG_BURST 5
#define DROP_LOG_INTERVAL_US (10 * 1000000ull)
/* Datagrams handled per wakeup, so one busy port cannot starve others. */
#define READ_BATCH 16

struct endpoint;

struct pending {
	TAILQ_ENTRY(pending) entry;
	struct endpoint *ep;
	int64_t id;
	struct sockaddr_storage addr;
	socklen_t alen;
};
TAILQ_HEAD(pending_list, pending);

struct endpoint {
	LIST_ENTRY(endpoint) entry;
	struct gw_udpface *face;
	struct gw_device *dev;
	int fd;
	uint16_t port;
	struct event *rd;
	struct pending_list pending;
};

struct gw_udpface {
	struct gw *gw;
	LIST_HEAD(, endpoint) endpoints;
	uint8_t buf[MAX_DATAGRAM];
	uint64_t dropped;
	uint64_t drop_window_start;
	unsigned drop_logged;
	void (*changed)(struct gw_udpface *face, void *ud);
	void *changed_data;
};

int gw_udpface_errno_to_rc(int err)
{
	switch (-err) {
	case ETIMEDOUT:
		return SMP_RC_ETIMEOUT;
	case ENOTCONN:
	case ECONNRESET:
		return SMP_RC_EBADSTATE;
	case EMSGSIZE:
		return SMP_RC_EMSGSIZE;
	case EBUSY:
		return SMP_RC_EBUSY;
	case EKEYEXPIRED: /* BLE pairing refused, not allowed, bond lost */
	case ENOLINK:
	case EKEYREVOKED:
		return SMP_RC_EACCESSDENIED;
	default:
		return SMP_RC_EUNKNOWN;
	}
}

static void drop(struct endpoint *ep, const char *why,
		 const struct sockaddr_storage *from)
{
	struct gw_udpface *face = ep->face;
	uint64_t now = now_usec();
	char host[INET6_ADDRSTRLEN] = "?";

	face->dropped++;
	gw_device_count_malformed(ep->dev);
	if (now - face->drop_window_start > DROP_LOG_INTERVAL_US) {
		if (face->drop_logged > DROP_LOG_BURST)
			log_warn("udp: %u more datagrams dropped",
				 face->drop_logged - DROP_LOG_BURST);
		face->drop_window_start = now;
		face->drop_logged = 0;
	}
	if (face->drop_logged++ >= DROP_LOG_BURST)
		return;
	if (from->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)from)->sin_addr,
			  host, sizeof(host));
	else if (from->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)from)->sin6_addr,
			  host, sizeof(host));
	log_warn("udp %s (port %u): dropped a datagram from %s: %s",
		 gw_device_id(ep->dev), ep->port, host, why);
}

static void reply(struct endpoint *ep, const uint8_t *frame, size_t len,
		  const struct sockaddr_storage *addr, socklen_t alen)
{
	if (sendto(ep->fd, frame, len, 0, (const struct sockaddr *)addr, alen) < 0)
		log_debug("udp %s: sendto: %m", gw_device_id(ep->dev));
}

static void reply_error(struct endpoint *ep, const struct smp_hdr *req,
			int rc, const struct sockaddr_storage *addr,
			socklen_t alen)
{
	uint8_t out[64];
	int n = smp_build_error_rsp(req, rc, out, sizeof(out));

	if (n > 0)
		reply(ep, out, (size_t)n, addr, alen);
}

static void rsp_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct pending *p = user_data;
	struct endpoint *ep = p->ep;

	if (err == 0) {
		reply(ep, frame, len, &p->addr, p->alen);
	} else {
		/* The request is gone from the queue; its header is in the
		 * first bytes we kept. */
		struct smp_hdr hdr;

		smp_hdr_decode((const uint8_t *)(p + 1), SMP_HDR_LEN, &hdr);
		log_debug("udp %s: request failed: %s", gw_device_id(ep->dev),
			  strerror(-err));
		reply_error(ep, &hdr, gw_udpface_errno_to_rc(err), &p->addr,
			    p->alen);
	}
	TAILQ_REMOVE(&ep->pending, p, entry);
	free(p);
}

static void handle_datagram(struct endpoint *ep, size_t n,
			    const struct sockaddr_storage *from,
			    socklen_t alen)
{
	const uint8_t *buf = ep->face->buf;
	struct smp_hdr hdr;
	struct pending *p;
	uint32_t buf_size;
	int64_t id;
	int r = smp_frame_check(buf, n, &hdr);

	if (r < 0 || (size_t)r != n) {
		drop(ep, r == -EAGAIN ? "truncated SMP frame" :
		     "length does not match the SMP header", from);
		return;
	}
	if (!smp_op_is_request(hdr.op)) {
		drop(ep, "not an SMP request", from);
		return;
	}
	gw_device_params(ep->dev, &buf_size, NULL);
	if (gw_device_params_known(ep->dev) && n > buf_size) {
		reply_error(ep, &hdr, SMP_RC_EMSGSIZE, from, alen);
		return;
	}
	/* The pending record keeps the request header for error replies. */
	p = xzalloc(sizeof(*p) + SMP_HDR_LEN);
	memcpy(p + 1, buf, SMP_HDR_LEN);
	p->ep = ep;
	memcpy(&p->addr, from, sizeof(*from));
	p->alen = alen;
	TAILQ_INSERT_TAIL(&ep->pending, p, entry);
	id = gw_device_request(ep->dev, buf, n, NULL, rsp_cb, p);
	if (id < 0) {
		TAILQ_REMOVE(&ep->pending, p, entry);
		free(p);
		reply_error(ep, &hdr, gw_udpface_errno_to_rc((int)id), from, alen);
		return;
	}
	p->id = id;
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct endpoint *ep = arg;

	for (int i = 0; i < READ_BATCH; i++) {
		struct sockaddr_storage from;
		socklen_t alen = sizeof(from);
		ssize_t n = recvfrom(fd, ep->face->buf, sizeof(ep->face->buf),
				     MSG_TRUNC, (struct sockaddr *)&from, &alen);

		if (n < 0)
			return;
		if ((size_t)n > sizeof(ep->face->buf)) {
			drop(ep, "datagram too large", &from);
			continue;
		}
		handle_datagram(ep, (size_t)n, &from, alen);
	}
}

static int bind_socket(const char *bind_addr, uint16_t port, uint16_t *ret_port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char buf[80];
	int fd, r;

	snprintf(buf, sizeof(buf), strchr(bind_addr, ':') ? "[%s]:1" : "%s:1",
		 bind_addr);
	if (udp_parse_address(buf, &ss, &len) < 0)
		return -EINVAL;
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
	fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_port = ntohs(ss.ss_family == AF_INET ?
			  ((struct sockaddr_in *)&ss)->sin_port :
			  ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

static struct endpoint *find_ep(struct gw_udpface *face, struct gw_device *dev)
{
	struct endpoint *ep;

	LIST_FOREACH(ep, &face->endpoints, entry)
		if (ep->dev == dev)
			return ep;
	return NULL;
}

static void notify_changed(struct gw_udpface *face)
{
	if (face->changed)
		face->changed(face, face->changed_data);
}

static void on_added(struct gw_device *dev, void *user_data)
{
	struct gw_udpface *face = user_data;
	const char *bind_addr = gw_config(face->gw)->udp.bind;
	struct endpoint *ep;
	uint16_t port = 0;
	int fd = bind_socket(bind_addr, gw_device_udp_port(dev), &port);

	if (fd < 0) {
		log_err("udp %s: cannot bind %s port %u: %s", gw_device_id(dev),
			bind_addr, gw_device_udp_port(dev), strerror(-fd));
		return;
	}
	ep = xnew(struct endpoint);
	ep->face = face;
	ep->dev = dev;
	ep->fd = fd;
	ep->port = port;
	TAILQ_INIT(&ep->pending);
	ep->rd = event_new(gw_base(face->gw), fd, EV_READ | EV_PERSIST, read_cb, ep);
	event_add(ep->rd, NULL);
	gw_device_set_udp_port(dev, port);
	LIST_INSERT_HEAD(&face->endpoints, ep, entry);
	log_notice("udp endpoint %s %s port %u", gw_device_id(dev), bind_addr, port);
	notify_changed(face);
}

static void endpoint_free(struct endpoint *ep)
{
	/* Cancel first: their callbacks must not run on a freed endpoint. The
	 * clients still get an answer (device removed / daemon stopping). */
	while (!TAILQ_EMPTY(&ep->pending)) {
		struct pending *p = TAILQ_FIRST(&ep->pending);
		struct smp_hdr hdr;

		smp_hdr_decode((const uint8_t *)(p + 1), SMP_HDR_LEN, &hdr);
		reply_error(ep, &hdr, gw_udpface_errno_to_rc(-ECANCELED), &p->addr,
			    p->alen);
		gw_device_cancel(ep->dev, p->id);
		TAILQ_REMOVE(&ep->pending, p, entry);
		free(p);
	}
	LIST_REMOVE(ep, entry);
	event_free(ep->rd);
	close(ep->fd);
	free(ep);
}

static void on_removed(struct gw_device *dev, void *user_data)
{
	struct gw_udpface *face = user_data;
	struct endpoint *ep = find_ep(face, dev);

	if (ep) {
		endpoint_free(ep);
		notify_changed(face);
	}
}

static void add_existing(struct gw_device *dev, void *user_data)
{
	on_added(dev, user_data);
}


struct gw_udpface *gw_udpface_new(struct gw *gw)
{
	static const struct gw_registry_observer obs = { .added = on_added,
							 .removed = on_removed };
	struct gw_udpface *face = xnew(struct gw_udpface);

	face->gw = gw;
	LIST_INIT(&face->endpoints);
	gw_device_foreach(gw, add_existing, face);
	gw_registry_set_observer(gw_registry_of(gw), &obs, face);
	return face;
}

struct gw_udpface *gw_udpface_free(struct gw_udpface *face)
{
	static const struct gw_registry_observer none = { 0 };

	if (!face)
		return NULL;
	gw_registry_set_observer(gw_registry_of(face->gw), &none, NULL);
	while (!LIST_EMPTY(&face->endpoints))
		endpoint_free(LIST_FIRST(&face->endpoints));
	free(face);
	return NULL;
}

void gw_udpface_set_changed_cb(struct gw_udpface *face,
			       void (*cb)(struct gw_udpface *face, void *ud),
			       void *user_data)
{
	face->changed = cb;
	face->changed_data = user_data;
}

int gw_udpface_write_ports(struct gw_udpface *face, const char *path)
{
	json_t *devs = json_object(), *root;
	struct endpoint *ep;
	char *tmp = xasprintf("%s.tmp", path);
	int r = 0;

	LIST_FOREACH(ep, &face->endpoints, entry)
		json_object_set_new(devs, gw_device_id(ep->dev),
				    json_integer(ep->port));
	root = json_pack("{s:s, s:o}", "bind", gw_config(face->gw)->udp.bind,
			 "devices", devs);
	if (json_dump_file(root, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
		r = -EIO;
	else if (rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	json_decref(root);
	free(tmp);
	return r;
}
