/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for SMP frames from UDP clients through the gateway's
 * UDP face (src/gateway/udpface.c: datagram checks, pending records, error
 * replies) and the device queue behind it (registry/device.c: request
 * checks, first-chunk detection, sequence rewriting, the mcumgr params
 * read, response matching), over real loopback sockets, with a fake watch
 * whose answers also come from the input.
 *
 * Input: records [op][len hi][len lo][len bytes] (len & 0x7ff):
 *   op & 3 == 0 / 1: a datagram from client A / B;
 *   op & 3 == 2: the watch answers the oldest frame it got: a header made
 *     from that request (response op, group, id, wire seq) + the bytes as
 *     payload, or (op & 4) the bytes verbatim as the whole frame;
 *   op & 3 == 3: (op & 4) the link drops; else nothing (the loop runs).
 * After each record the loop runs. Every datagram a client gets back must
 * be one whole SMP response frame.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "codec/smp.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "gateway/registry/registry.h"
#include "gateway/udpface.h"
#include "links/link.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SENT 16

struct fake {
	struct link *link;
	uint8_t hdr[MAX_SENT][SMP_HDR_LEN];
	unsigned n;
};

static void up_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;

	link_set_state(f->link, LINK_STATE_UP, 0);
}

static int fake_connect(struct link *link)
{
	link_set_state(link, LINK_STATE_CONNECTING, 0);
	event_base_once(link_base(link), -1, EV_TIMEOUT, up_cb, link_priv(link), NULL);
	return 0;
}

static void fake_disconnect(struct link *link)
{
	link_set_state(link, LINK_STATE_DOWN, 0);
}

static int fake_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct fake *f = link_priv(link);

	if (link_state(link) != LINK_STATE_UP)
		return -ENOTCONN;
	if (len < SMP_HDR_LEN)
		abort(); /* the queue sends whole frames only */
	if (f->n < MAX_SENT)
		memcpy(f->hdr[f->n++], frame, SMP_HDR_LEN);
	return 0;
}

static size_t fake_mtu(const struct link *link)
{
	return 65000;
}

static const struct link_ops fake_ops = {
	.name = "fake", .connect = fake_connect, .disconnect = fake_disconnect,
	.send = fake_send, .mtu = fake_mtu,
};

static void answer(struct fake *f, const uint8_t *d, size_t len, bool verbatim)
{
	uint8_t frame[SMP_HDR_LEN + 0x800];

	if (verbatim) {
		if (link_state(f->link) == LINK_STATE_UP)
			link_deliver_frame(f->link, d, len);
		return;
	}
	if (!f->n || link_state(f->link) != LINK_STATE_UP)
		return;
	memcpy(frame, f->hdr[0], SMP_HDR_LEN);
	memmove(f->hdr[0], f->hdr[1], (size_t)(--f->n) * SMP_HDR_LEN);
	frame[0] = (uint8_t)((frame[0] & ~7u) | ((frame[0] & 7u) | 1u));
	put_be16(frame + 2, (uint16_t)len);
	memcpy(frame + SMP_HDR_LEN, d, len);
	link_deliver_frame(f->link, frame, SMP_HDR_LEN + len);
}

static int client(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		abort();
	return fd;
}

static void drain(int fd)
{
	uint8_t buf[0x10000];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) >= 0) {
		struct smp_hdr h;

		if (smp_frame_check(buf, (size_t)n, &h) != (int)n || smp_op_is_request(h.op))
			abort(); /* a client got something that is no response */
	}
}

static void run(struct event_base *base)
{
	for (int i = 0; i < 3; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_config *cfg = gw_config_new_default();
	struct event_base *base = event_base_new();
	struct fake f = { 0 };
	struct gw *gw;
	struct gw_udpface *face;
	struct gw_device *dev;
	int a, b;

	gw_log_set_level(GW_LOG_ERR);
	cfg->udp.base_port = 0;
	cfg->request.queue_max = 8;
	gw = gw_new(base, cfg, NULL);
	f.link = link_new(&fake_ops, base, &f);
	dev = gw_registry_add(gw_registry_of(gw), "w0", "Watch", f.link, true, 0);
	face = gw_udpface_new(gw);
	a = client(gw_device_udp_port(dev));
	b = client(gw_device_udp_port(dev));
	while (size >= 3) {
		uint8_t op = data[0];
		size_t len = MIN((size_t)(get_be16(data + 1) & 0x7ff), size - 3);
		const uint8_t *d = data + 3;

		switch (op & 3) {
		case 0:
		case 1:
			if (send((op & 1) ? b : a, d, len, 0) < 0)
				break;
			break;
		case 2:
			answer(&f, d, len, op & 4);
			break;
		default:
			if ((op & 4) && link_state(f.link) != LINK_STATE_DOWN)
				link_set_state(f.link, LINK_STATE_DOWN, -ECONNRESET);
			break;
		}
		run(base);
		drain(a);
		drain(b);
		data += 3 + len;
		size -= 3 + len;
	}
	gw_udpface_free(face);
	gw_free(gw);
	run(base);
	close(a);
	close(b);
	event_base_free(base);
	return 0;
}
