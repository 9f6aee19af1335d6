/* SPDX-License-Identifier: MIT */
/*
 * UDP transport (see udp.h). Owns one connected datagram socket per
 * device and its read event.
 */
#include "links/udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "codec/smp.h"
#include "util/util.h"

struct udp_link {
	struct link *link;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	int fd;
	struct event *rd;
	uint8_t buf[UDP_LINK_MTU];
};

static int parse_port(const char *s, uint16_t *ret)
{
	char *end;
	unsigned long v;

	if (!*s)
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

int udp_parse_address(const char *s, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	const char *colon = strrchr(s, ':');
	char host[64];
	size_t hlen;
	uint16_t port;

	if (!colon || parse_port(colon + 1, &port) < 0)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		s++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		*len = sizeof(*in4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof(*in6);
		return 0;
	}
	return -EINVAL;
}

static void close_socket(struct udp_link *u)
{
	if (u->rd) {
		event_free(u->rd);
		u->rd = NULL;
	}
	if (u->fd >= 0) {
		close(u->fd);
		u->fd = -1;
	}
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct udp_link *u = arg;

	/* Bounded: drain at most a few datagrams per wakeup. */
	for (int i = 0; i < 16; i++) {
		ssize_t n = recv(fd, u->buf, sizeof(u->buf), 0);
		struct smp_hdr hdr;

		if (n < 0) {
			/* ICMP port unreachable: nothing listens there. Say
			 * so now rather than letting requests time out; the
			 * next request reconnects. */
			if (errno == ECONNREFUSED) {
				close_socket(u);
				link_set_state(u->link, LINK_STATE_DOWN, -ECONNREFUSED);
			}
			return;
		}
		/* Whole frames only; anything else is not SMP. */
		if (smp_frame_check(u->buf, (size_t)n, &hdr) == n)
			link_deliver_frame(u->link, u->buf, (size_t)n);
	}
}

static int udp_connect(struct link *link)
{
	struct udp_link *u = link_priv(link);
	int fd;

	if (u->fd >= 0)
		return 0;
	fd = socket(u->peer.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&u->peer, u->peer_len) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	u->fd = fd;
	u->rd = event_new(link_base(link), fd, EV_READ | EV_PERSIST, read_cb, u);
	event_add(u->rd, NULL);
	link_set_state(link, LINK_STATE_UP, 0);
	return 0;
}

static void udp_disconnect(struct link *link)
{
	struct udp_link *u = link_priv(link);

	if (u->fd < 0)
		return;
	close_socket(u);
	link_set_state(link, LINK_STATE_DOWN, 0);
}

static int udp_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct udp_link *u = link_priv(link);
	ssize_t n;

	if (u->fd < 0)
		return -ENOTCONN;
	if (len > UDP_LINK_MTU)
		return -EMSGSIZE;
	n = send(u->fd, frame, len, 0);
	if (n < 0 && errno == ECONNREFUSED)
		n = send(u->fd, frame, len, 0); /* stale ICMP error, retry once */
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return 0;
}

static size_t udp_mtu(const struct link *link)
{
	return UDP_LINK_MTU;
}

static void udp_destroy(struct link *link)
{
	struct udp_link *u = link_priv(link);

	close_socket(u);
	free(u);
}

static const struct link_ops udp_ops = {
	.name = "udp",
	.connect = udp_connect,
	.disconnect = udp_disconnect,
	.send = udp_send,
	.mtu = udp_mtu,
	.destroy = udp_destroy,
};

struct link *udp_link_new(struct event_base *base, const char *host_port,
			  int *err)
{
	struct udp_link *u = xnew(struct udp_link);
	int r = udp_parse_address(host_port, &u->peer, &u->peer_len);

	if (r < 0) {
		free(u);
		if (err)
			*err = r;
		return NULL;
	}
	u->fd = -1;
	u->link = link_new(&udp_ops, base, u);
	return u->link;
}
