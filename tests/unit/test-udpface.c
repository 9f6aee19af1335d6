/* SPDX-License-Identifier: MIT */
/*
 * The UDP face (gateway/udpface.c) over loopback, with fake transports
 * behind it: replies reach the sender with its own seq, errors come back in
 * the request's SMP version, malformed datagrams are dropped and counted.
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
#include "tap.h"
#include "util/util.h"

/* A transport that answers every request with an empty map, or never
 * connects at all. */
struct fake {
	struct link *link;
	bool connects;
};

static void up_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;

	link_set_state(f->link, LINK_STATE_UP, 0);
}

static int fake_connect(struct link *link)
{
	struct fake *f = link_priv(link);

	link_set_state(link, LINK_STATE_CONNECTING, 0);
	if (f->connects)
		event_base_once(link_base(link), -1, EV_TIMEOUT, up_cb, f, NULL);
	return 0;
}

static void fake_disconnect(struct link *link)
{
	link_set_state(link, LINK_STATE_DOWN, 0);
}

struct answer {
	struct link *link;
	uint8_t frame[64];
	size_t len;
};

static void answer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct answer *a = arg;

	link_deliver_frame(a->link, a->frame, a->len);
	free(a);
}

static int fake_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct answer *a = xnew(struct answer);
	struct smp_hdr h;

	smp_hdr_decode(frame, len, &h);
	h.op = smp_rsp_op(h.op);
	if (h.group == SMP_GROUP_OS && h.id == SMP_OS_PARAMS) {
		/* {"buf_size": 64, "buf_count": 2} */
		static const uint8_t body[] = { 0xa2, 0x68, 'b', 'u', 'f', '_', 's', 'i', 'z', 'e',
						0x18, 64, 0x69, 'b', 'u', 'f', '_', 'c', 'o', 'u',
						'n', 't', 0x02 };

		h.len = sizeof(body);
		memcpy(a->frame + SMP_HDR_LEN, body, sizeof(body));
	} else {
		h.len = 1;
		a->frame[SMP_HDR_LEN] = 0xa0;
	}
	smp_hdr_encode(&h, a->frame);
	a->len = SMP_HDR_LEN + h.len;
	a->link = link;
	event_base_once(link_base(link), -1, EV_TIMEOUT, answer_cb, a, NULL);
	return 0;
}

static size_t fake_mtu(const struct link *link)
{
	return 244;
}

static void fake_destroy(struct link *link)
{
	free(link_priv(link));
}

static const struct link_ops fake_ops = {
	.name = "fake", .connect = fake_connect, .disconnect = fake_disconnect,
	.send = fake_send, .mtu = fake_mtu, .destroy = fake_destroy,
};

static struct gw_device *add_device(struct gw *gw, const char *id, bool connects)
{
	struct fake *f = xnew(struct fake);

	f->connects = connects;
	f->link = link_new(&fake_ops, gw_base(gw), f);
	return gw_registry_add(gw_registry_of(gw), id, id, f->link, true, 0);
}

/* ---- a UDP client on loopback ---- */

static int client_socket(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		abort();
	return fd;
}

static void send_to(int fd, uint16_t port, const uint8_t *buf, size_t len)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	if (sendto(fd, buf, len, 0, (struct sockaddr *)&a, sizeof(a)) != (ssize_t)len)
		abort();
}

/* Runs the loop until a datagram arrives on fd or max_ms pass. */
static ssize_t recv_reply(struct event_base *base, int fd, uint8_t *buf,
			  size_t size, unsigned max_ms)
{
	uint64_t end = now_usec() + max_ms * 1000ull;

	while (now_usec() < end) {
		ssize_t n = recv(fd, buf, size, 0);

		if (n >= 0)
			return n;
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(500);
	}
	return -1;
}

static size_t request(uint8_t *out, uint8_t ver, uint8_t seq, size_t pad)
{
	struct smp_hdr h = { .op = SMP_OP_WRITE, .ver = ver, .group = SMP_GROUP_OS,
			     .seq = seq, .id = SMP_OS_ECHO };

	/* {"d": "xxx..."} with pad characters (pad < 24) */
	out[8] = 0xa1;
	out[9] = 0x61;
	out[10] = 'd';
	out[11] = (uint8_t)(0x60 + pad);
	memset(out + 12, 'x', pad);
	h.len = (uint16_t)(4 + pad);
	smp_hdr_encode(&h, out);
	return SMP_HDR_LEN + h.len;
}

int main(void)
{
	struct gw_config *cfg = gw_config_new_default();
	struct event_base *base = event_base_new();
	struct gw *gw;
	struct gw_udpface *face;
	struct gw_device *ok_dev, *down_dev;
	uint8_t req[64], rsp[128];
	struct smp_hdr h;
	int c1 = client_socket(), c2 = client_socket();
	ssize_t n;
	json_t *j;

	gw_log_set_level(GW_LOG_ERR);
	cfg->udp.base_port = 0;
	cfg->request.timeout_ms = 300;
	cfg->request.connect_timeout_ms = 300;
	gw = gw_new(base, cfg, NULL);
	ok_dev = add_device(gw, "ok", true);
	face = gw_udpface_new(gw); /* endpoints for devices already there */
	down_dev = add_device(gw, "down", false); /* and for those added later */
	ok(gw_device_udp_port(ok_dev) != 0, "OS-chosen port reported to the device");
	ok(gw_device_udp_port(down_dev) != 0, "port for a device added later");

	/* Two clients, same seq: each gets its own answer. */
	send_to(c1, gw_device_udp_port(ok_dev), req, request(req, SMP_VER_2, 9, 1));
	send_to(c2, gw_device_udp_port(ok_dev), req, request(req, SMP_VER_2, 9, 2));
	n = recv_reply(base, c1, rsp, sizeof(rsp), 2000);
	ok(n > SMP_HDR_LEN && smp_hdr_decode(rsp, (size_t)n, &h) == 0 && h.seq == 9 &&
	   h.op == SMP_OP_WRITE_RSP, "client 1 answered with its seq");
	n = recv_reply(base, c2, rsp, sizeof(rsp), 2000);
	ok(n > SMP_HDR_LEN && smp_hdr_decode(rsp, (size_t)n, &h) == 0 && h.seq == 9,
	   "client 2 answered with its seq");

	/* buf_size 64 is known now: a bigger frame gets rc 7. */
	{
		uint8_t big[80] = { 0 };
		struct smp_hdr bh = { .op = SMP_OP_WRITE, .ver = SMP_VER_1, .len = 72,
				      .group = 0, .seq = 4, .id = 0 };

		smp_hdr_encode(&bh, big);
		send_to(c1, gw_device_udp_port(ok_dev), big, sizeof(big));
		n = recv_reply(base, c1, rsp, sizeof(rsp), 2000);
		is_int(n, 14, "v1 error response length");
		is_mem(rsp + 8, "\xa1\x62rc\x18\x07", 6, "oversized frame: {\"rc\": 7}");
	}

	/* Not connected: rc 6, in the request's form. */
	send_to(c1, gw_device_udp_port(down_dev), req, request(req, SMP_VER_2, 77, 0));
	n = recv_reply(base, c1, rsp, sizeof(rsp), 3000);
	ok(n > 0 && rsp[6] == 77, "error carries the client seq");
	ok(n > 0 && memmem(rsp + 8, (size_t)n - 8, "err", 3) &&
	   rsp[n - 1] == SMP_RC_EBADSTATE, "v2 request: {\"err\": {..., \"rc\": 6}}");

	/* Garbage: no answer, counted. */
	send_to(c1, gw_device_udp_port(ok_dev), (const uint8_t *)"\x01\x02\x03", 3);
	request(req, SMP_VER_2, 1, 0);
	req[0] = 0x0b; /* a response op */
	send_to(c1, gw_device_udp_port(ok_dev), req, 12);
	n = recv_reply(base, c1, rsp, sizeof(rsp), 300);
	is_int(n, -1, "malformed datagrams get no answer");
	j = gw_device_to_json(ok_dev);
	is_int(json_integer_value(json_object_get(json_object_get(j, "counters"),
						  "malformed_requests")), 2,
	       "malformed datagrams counted");
	json_decref(j);

	is_int(gw_udpface_errno_to_rc(-ETIMEDOUT), SMP_RC_ETIMEOUT, "timeout -> 4");
	is_int(gw_udpface_errno_to_rc(-ENOTCONN), SMP_RC_EBADSTATE, "not connected -> 6");
	is_int(gw_udpface_errno_to_rc(-ECONNRESET), SMP_RC_EBADSTATE, "reset -> 6");
	is_int(gw_udpface_errno_to_rc(-EMSGSIZE), SMP_RC_EMSGSIZE, "too big -> 7");
	is_int(gw_udpface_errno_to_rc(-EBUSY), SMP_RC_EBUSY, "queue full -> 10");
	is_int(gw_udpface_errno_to_rc(-ECANCELED), SMP_RC_EUNKNOWN, "cancelled -> 1");

	/* A request pending while everything shuts down: no callback on a
	 * freed endpoint (checked by ASan/valgrind). */
	send_to(c1, gw_device_udp_port(down_dev), req, request(req, SMP_VER_1, 5, 0));
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	gw_udpface_free(face);
	n = recv_reply(base, c1, rsp, sizeof(rsp), 500);
	ok(n == 14 && rsp[6] == 5 && rsp[13] == SMP_RC_EUNKNOWN,
	   "a request pending at shutdown is answered with rc 1, not silence");
	gw_free(gw);
	event_base_free(base);
	close(c1);
	close(c2);
	return tap_done();
}
