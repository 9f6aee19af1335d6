/* SPDX-License-Identifier: MIT */
/*
 * A device's SMP UDP face on loopback, like Zephyr's smp_udp: one datagram
 * is one SMP frame, the reply goes to the address the request came from.
 * Requests in flight remember their sender in a small ring (never more in
 * flight than the device has SMP buffers), so a reply the device drops
 * (reset, fault) leaks nothing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "device.h"
#include "transport.h"
#include "util/util.h"

#define UDP_RING 128 /* > the largest buf_count (64) */
#define UDP_MAX_DATAGRAM 65535

struct udp_req {
	struct sim_udp *u;
	struct sockaddr_in6 addr;
	socklen_t alen;
};

struct sim_udp {
	struct sim_device *dev;
	int fd;
	uint16_t port;
	struct event *ev;
	struct udp_req ring[UDP_RING];
	unsigned next;
};

/* One receive buffer for all faces: the loop is single-threaded and the
 * device copies the frame, so 1000 devices do not cost 64 MB of buffers. */
static uint8_t rx_buf[UDP_MAX_DATAGRAM];

static void reply_cb(struct sim_device *dev, const uint8_t *frame, size_t len, void *ud)
{
	struct udp_req *r = ud;

	/* loopback datagrams: a failed send is a lost reply, as on a real net */
	(void)sendto(r->u->fd, frame, len, MSG_DONTWAIT, (struct sockaddr *)&r->addr, r->alen);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim_udp *u = arg;

	/* bounded: at most a few datagrams per wakeup, the loop stays fair */
	for (int i = 0; i < 16; i++) {
		struct udp_req *r = &u->ring[u->next];
		socklen_t alen = sizeof(r->addr);
		struct sockaddr_in6 addr;
		ssize_t n = recvfrom(fd, rx_buf, sizeof(rx_buf), MSG_DONTWAIT,
				     (struct sockaddr *)&addr, &alen);
		if (n < 0)
			return;
		sim_device_cancel_replies(u->dev, r); /* slot reused: oldest is long gone */
		r->addr = addr;
		r->alen = alen;
		if (sim_device_rx_frame(u->dev, rx_buf, (size_t)n, reply_cb, r) == 0)
			u->next = (u->next + 1) % UDP_RING;
	}
}

struct sim_udp *sim_udp_new(struct event_base *base, struct sim_device *dev, uint16_t port,
			    int *ret_err)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sim_udp *u;
	socklen_t slen = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &slen) < 0) {
		*ret_err = -errno;
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	u = xnew(struct sim_udp);
	u->dev = dev;
	u->fd = fd;
	u->port = ntohs(sin.sin_port);
	for (unsigned i = 0; i < UDP_RING; i++)
		u->ring[i].u = u;
	u->ev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, u);
	event_add(u->ev, NULL);
	return u;
}

struct sim_udp *sim_udp_free(struct sim_udp *u)
{
	if (!u)
		return NULL;
	for (unsigned i = 0; i < UDP_RING; i++)
		sim_device_cancel_replies(u->dev, &u->ring[i]);
	event_free(u->ev);
	close(u->fd);
	free(u);
	return NULL;
}

uint16_t sim_udp_port(const struct sim_udp *u)
{
	return u->port;
}
