/* SPDX-License-Identifier: MIT */
/*
 * smp-echo: the benchmarks' SMP client over loopback UDP, for microsecond
 * precision that a Python client cannot give. Written from the protocol
 * facts (8-byte big-endian header, one CBOR map, one datagram = one frame),
 * not from the gateway's code.
 *
 *   smp-echo latency GW_PORT DIRECT_PORT COUNT SIZE
 *       Alternates an os echo through the gateway's endpoint and the same
 *       echo straight to the simulator's UDP face, one at a time, and
 *       prints the round-trip percentiles of both and their differences.
 *   smp-echo throughput SECONDS CLIENTS_PER_PORT WINDOW SIZE PORT...
 *       CLIENTS_PER_PORT sockets per port, each keeping WINDOW echoes in
 *       flight, for SECONDS; prints exchanges per second.
 *
 * Output: "key value" lines (bench/run parses them). Every wait is bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 4096
#define MAX_SOCKS 4096
#define WARMUP 200

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* An SMP v2 os echo write request {"d": text of size bytes}. */
static size_t build_echo(uint8_t *out, size_t size, uint8_t seq)
{
	size_t n = 8, plen;

	if (size > 1000)
		size = 1000;
	out[n++] = 0xa1; /* map(1) */
	out[n++] = 0x61; /* text(1) */
	out[n++] = 'd';
	if (size < 24) {
		out[n++] = (uint8_t)(0x60 + size);
	} else if (size < 256) {
		out[n++] = 0x78;
		out[n++] = (uint8_t)size;
	} else {
		out[n++] = 0x79;
		out[n++] = (uint8_t)(size >> 8);
		out[n++] = (uint8_t)size;
	}
	memset(out + n, 'x', size);
	n += size;
	plen = n - 8;
	out[0] = (1 << 3) | 2; /* ver 1 (SMP v2), op write */
	out[1] = 0;
	out[2] = (uint8_t)(plen >> 8);
	out[3] = (uint8_t)plen;
	out[4] = 0; /* group os */
	out[5] = 0;
	out[6] = seq;
	out[7] = 0; /* echo */
	return n;
}

/* A whole echo response (op write rsp) with this seq and no error. */
static int rsp_seq(const uint8_t *buf, ssize_t n)
{
	if (n < 8 || (buf[0] & 7) != 3 || buf[4] || buf[5] || buf[7])
		return -1;
	if ((size_t)n != 8u + ((size_t)buf[2] << 8 | buf[3]))
		return -1;
	return buf[6];
}

static int udp_socket(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int sz = 1 << 20;

	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("smp-echo: socket");
		exit(2);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	return fd;
}

/* One echo, waiting up to 1 s; the round trip in ns, or 0 when lost. */
static uint64_t one_echo(int fd, uint8_t seq, size_t size)
{
	uint8_t req[MAX_FRAME], rsp[MAX_FRAME];
	size_t len = build_echo(req, size, seq);
	uint64_t t0 = now_ns(), deadline = t0 + 1000000000ull;

	if (send(fd, req, len, 0) < 0)
		return 0;
	for (;;) {
		uint64_t t = now_ns();
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (t >= deadline || poll(&p, 1, (int)((deadline - t) / 1000000) + 1) <= 0)
			return 0;
		ssize_t n = recv(fd, rsp, sizeof(rsp), 0);

		if (n < 0)
			return 0;
		if (rsp_seq(rsp, n) == seq)
			return now_ns() - t0;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, size_t n, double p)
{
	size_t i;

	if (!n)
		return -1;
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

static int latency(int argc, char **argv)
{
	uint16_t gw_port, direct_port;
	size_t count, size, ng = 0, nd = 0, lost = 0;
	uint64_t *g, *d;
	int gfd, dfd;

	if (argc != 4)
		return 2;
	gw_port = (uint16_t)atoi(argv[0]);
	direct_port = (uint16_t)atoi(argv[1]);
	count = (size_t)atol(argv[2]);
	size = (size_t)atol(argv[3]);
	g = calloc(count, sizeof(*g));
	d = calloc(count, sizeof(*d));
	gfd = udp_socket(gw_port);
	dfd = udp_socket(direct_port);
	for (size_t i = 0; i < count + WARMUP; i++) {
		uint8_t seq = (uint8_t)i;
		/* Alternate which goes first, so drift hits both alike. */
		int first_gw = i & 1;
		uint64_t a = one_echo(first_gw ? gfd : dfd, seq, size);
		uint64_t b = one_echo(first_gw ? dfd : gfd, seq, size);
		uint64_t tg = first_gw ? a : b, td = first_gw ? b : a;

		if (!tg || !td) {
			lost++;
			continue;
		}
		if (i < WARMUP)
			continue;
		g[ng++] = tg;
		d[nd++] = td;
	}
	qsort(g, ng, sizeof(*g), cmp_u64);
	qsort(d, nd, sizeof(*d), cmp_u64);
	printf("samples %zu\nlost %zu\n", ng, lost);
	printf("direct_p50_us %.1f\ndirect_p99_us %.1f\n", pct_us(d, nd, 50), pct_us(d, nd, 99));
	printf("gw_p50_us %.1f\ngw_p99_us %.1f\n", pct_us(g, ng, 50), pct_us(g, ng, 99));
	printf("added_p50_us %.1f\nadded_p99_us %.1f\n",
	       pct_us(g, ng, 50) - pct_us(d, nd, 50), pct_us(g, ng, 99) - pct_us(d, nd, 99));
	free(g);
	free(d);
	close(gfd);
	close(dfd);
	return ng ? 0 : 1;
}

struct client {
	int fd;
	unsigned inflight;
	uint8_t seq;
	uint64_t last_ns; /* last reply or (re)start */
};

static void fill(struct client *c, unsigned window, size_t size, uint64_t *sent)
{
	uint8_t req[MAX_FRAME];

	while (c->inflight < window) {
		size_t len = build_echo(req, size, ++c->seq);

		if (send(c->fd, req, len, MSG_DONTWAIT) < 0)
			break;
		c->inflight++;
		(*sent)++;
	}
}

static int throughput(int argc, char **argv)
{
	static struct client cl[MAX_SOCKS];
	static struct pollfd pf[MAX_SOCKS];
	double seconds;
	unsigned per_port, window;
	size_t size, n = 0;
	uint64_t sent = 0, got = 0, stalls = 0, t0, end;
	uint8_t rsp[MAX_FRAME];

	if (argc < 5)
		return 2;
	seconds = atof(argv[0]);
	per_port = (unsigned)atoi(argv[1]);
	window = (unsigned)atoi(argv[2]);
	size = (size_t)atol(argv[3]);
	for (int i = 4; i < argc; i++)
		for (unsigned k = 0; k < per_port && n < MAX_SOCKS; k++, n++) {
			cl[n].fd = udp_socket((uint16_t)atoi(argv[i]));
			pf[n].fd = cl[n].fd;
			pf[n].events = POLLIN;
		}
	t0 = now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	for (size_t i = 0; i < n; i++) {
		cl[i].last_ns = t0;
		fill(&cl[i], window, size, &sent);
	}
	for (uint64_t t = t0; t < end; t = now_ns()) {
		int r = poll(pf, n, 100);

		if (r < 0 && errno != EINTR)
			break;
		t = now_ns();
		for (size_t i = 0; i < n; i++) {
			struct client *c = &cl[i];

			for (int k = 0; (pf[i].revents & POLLIN) && k < 64; k++) {
				ssize_t len = recv(c->fd, rsp, sizeof(rsp), MSG_DONTWAIT);

				if (len < 0)
					break;
				if (rsp_seq(rsp, len) < 0)
					continue;
				got++;
				if (c->inflight)
					c->inflight--;
				c->last_ns = t;
			}
			/* A lost datagram must not stall this client for good. */
			if (c->inflight && t - c->last_ns > 500000000ull) {
				stalls++;
				c->inflight = 0;
				c->last_ns = t;
			}
			fill(c, window, size, &sent);
		}
	}
	double el = (double)(now_ns() - t0) / 1e9;

	printf("clients %zu\nwindow %u\nseconds %.2f\nsent %llu\nexchanges %llu\nstalls %llu\n",
	       n, window, el, (unsigned long long)sent, (unsigned long long)got,
	       (unsigned long long)stalls);
	printf("exchanges_per_s %.0f\n", (double)got / el);
	for (size_t i = 0; i < n; i++)
		close(cl[i].fd);
	return got ? 0 : 1;
}

int main(int argc, char **argv)
{
	int r = 2;

	if (argc > 1 && !strcmp(argv[1], "latency"))
		r = latency(argc - 2, argv + 2);
	else if (argc > 1 && !strcmp(argv[1], "throughput"))
		r = throughput(argc - 2, argv + 2);
	if (r == 2)
		fprintf(stderr,
			"usage: smp-echo latency GW_PORT DIRECT_PORT COUNT SIZE\n"
			"       smp-echo throughput SECONDS CLIENTS_PER_PORT WINDOW SIZE PORT...\n");
	return r;
}
