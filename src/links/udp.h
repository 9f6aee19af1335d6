/* SPDX-License-Identifier: MIT */
/*
 * SMP over UDP (Zephyr's UDP transport, port 1337 by convention): one
 * datagram = one SMP frame, replies come from the device's address. The
 * link is "up" as soon as its socket is connected to the peer; a silent
 * peer shows as request timeouts, an ICMP port unreachable as an error
 * on the next send.
 */
#pragma once

#include <sys/socket.h>

#include "links/link.h"

struct event_base;

/* The largest SMP frame one UDP datagram carries here. */
#define UDP_LINK_MTU 65507u

/*
 * Parses a numeric "host:port", "[v6]:port" or "localhost:port" into ss.
 * Returns 0 or -EINVAL.
 */
int udp_parse_address(const char *s, struct sockaddr_storage *ss,
		      socklen_t *len);

/* NULL with *err = -EINVAL for a bad address. Nothing is opened until
 * link_connect(). */
struct link *udp_link_new(struct event_base *base, const char *host_port,
			  int *err);
