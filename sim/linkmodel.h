/* SPDX-License-Identifier: MIT */
/*
 * BLE link timing model of one simulated watch: connection interval, PHY,
 * link-layer payload, packets per connection event, ATT MTU, SMP buffers.
 * Turns those figures into air times and a capacity (bytes/s each way) that
 * the BLE face uses for its delays and that benchmarks compare against.
 * Pure arithmetic: no I/O.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sim_phy {
	SIM_PHY_1M = 1,
	SIM_PHY_2M = 2,
};

struct sim_link_model {
	uint32_t conn_interval_us; /* 7500 .. 4000000 */
	uint8_t phy;               /* enum sim_phy */
	uint16_t ll_payload;       /* LL data payload octets, 27 .. 251 */
	uint16_t pkts_per_event;   /* LL packets per direction per event, >= 1 */
	uint16_t att_mtu;          /* 23 .. 517; notifications carry att_mtu - 3 */
	bool reassembly;           /* SMP reassembly: a frame may span writes */
	uint16_t buf_size;         /* mcumgr params buf_size */
	uint16_t buf_count;        /* mcumgr params buf_count */
};

/* Defaults follow firmware/prj.conf: 30 ms interval, 1M PHY, 251-byte LL
 * payload, 4 packets per event, ATT MTU 498, reassembly on, SMP buffers
 * 2475 bytes x 4. */
void sim_link_model_default(struct sim_link_model *ret);

/* 0 or -EINVAL when a field is out of range; *why names the field. */
int sim_link_model_validate(const struct sim_link_model *m, const char **why);

/* Air time of one LL packet carrying n payload octets (us), incl. IFS + empty ack. */
uint32_t sim_link_model_packet_us(const struct sim_link_model *m, size_t n);

/*
 * Time (us) to move an ATT PDU of len bytes (ATT header included) in one
 * direction: split in LL packets of ll_payload (+4 byte L2CAP header on
 * the first), pkts_per_event per connection interval.
 */
uint64_t sim_link_model_pdu_us(const struct sim_link_model *m, size_t len);

/*
 * One connection event as the link layer runs it (Core spec Vol 6 Part B
 * 4.5.1, 4.5.6): the central opens it at the anchor point, then every
 * exchange is one central->peripheral packet, T_IFS, one
 * peripheral->central packet, T_IFS; a side with nothing to send sends an
 * empty packet. So data flows both ways in the same exchanges: an answer
 * (notification) rides in the peripheral's half of an exchange whose
 * central half carries a write, costing only its own octets over the empty
 * packet it replaces. The event ends after pkts_per_event exchanges or when
 * the next exchange would not end (trailing T_IFS included, as in the
 * capacity) before the next anchor point.
 */
struct sim_link_event {
	uint32_t avail_us;   /* time the event may use: the interval, less when late */
	uint32_t used_us;    /* time its exchanges took so far */
	uint16_t exchanges;
};

/* Air time of one exchange carrying up and dn LL payload octets (0: empty packet). */
uint32_t sim_link_model_exchange_us(const struct sim_link_model *m, size_t up, size_t dn);

/* Adds one exchange to ev when it fits (true), else leaves ev alone (false). */
bool sim_link_event_add(const struct sim_link_model *m, struct sim_link_event *ev,
			size_t up, size_t dn);

/*
 * Sustained SMP bytes/s each way: central->peripheral (writes of up to
 * att_mtu - 3 bytes) and peripheral->central (notifications of att_mtu - 3),
 * with the other direction idle (empty packets): full exchanges per event
 * as sim_link_event_add() packs them. Answers going the other way are not
 * counted as free: they lengthen the exchanges they ride in, and an event
 * that no longer fits its last exchange carries one packet less.
 */
double sim_link_model_capacity_up(const struct sim_link_model *m);
double sim_link_model_capacity_down(const struct sim_link_model *m);

/* One-line human description with both capacities, into out. */
void sim_link_model_describe(const struct sim_link_model *m, char *out, size_t size);
