/* SPDX-License-Identifier: MIT */
/*
 * BLE link-layer arithmetic for the simulator. One LL data packet costs its
 * air time (preamble, access address, header, payload, CRC at 1 or 2 Mbit/s),
 * the inter-frame space, the peer's empty packet and another IFS; a
 * connection event carries at most pkts_per_event such exchanges and never
 * more than fit the interval. An ATT PDU travels with a 4-byte L2CAP header,
 * split into LL packets of ll_payload octets. With 251-byte packets at 7.5 ms
 * this gives 97.6 KB/s on 1M and 162.7 KB/s on 2M, the known ceilings.
 */
#include <errno.h>
#include <stdio.h>

#include "linkmodel.h"

#define T_IFS_US 150
#define LL_OVERHEAD 9 /* access address 4, header 2, CRC 3 */
#define L2CAP_HDR 4

void sim_link_model_default(struct sim_link_model *ret)
{
	*ret = (struct sim_link_model){
		.conn_interval_us = 30000,
		.phy = SIM_PHY_1M,
		.ll_payload = 251,
		.pkts_per_event = 4,
		.att_mtu = 498,
		.reassembly = true,
		.buf_size = 2475,
		.buf_count = 4,
	};
}

int sim_link_model_validate(const struct sim_link_model *m, const char **why)
{
	const char *w = NULL;

	if (m->conn_interval_us < 7500 || m->conn_interval_us > 4000000)
		w = "conn_interval_us must be 7500..4000000";
	else if (m->phy != SIM_PHY_1M && m->phy != SIM_PHY_2M)
		w = "phy must be 1 or 2";
	else if (m->ll_payload < 27 || m->ll_payload > 251)
		w = "ll_payload must be 27..251";
	else if (m->pkts_per_event < 1 || m->pkts_per_event > 64)
		w = "pkts_per_event must be 1..64";
	else if (m->att_mtu < 23 || m->att_mtu > 517)
		w = "att_mtu must be 23..517";
	else if (m->buf_size < 64)
		w = "buf_size must be at least 64";
	else if (m->buf_count < 1 || m->buf_count > 64)
		w = "buf_count must be 1..64";
	if (why)
		*why = w;
	return w ? -EINVAL : 0;
}

static uint32_t octets_us(const struct sim_link_model *m, size_t octets)
{
	size_t preamble = m->phy == SIM_PHY_2M ? 2 : 1;

	return (uint32_t)((preamble + octets) * 8 / m->phy);
}

uint32_t sim_link_model_exchange_us(const struct sim_link_model *m, size_t up, size_t dn)
{
	return octets_us(m, LL_OVERHEAD + up) + T_IFS_US + octets_us(m, LL_OVERHEAD + dn) + T_IFS_US;
}

uint32_t sim_link_model_packet_us(const struct sim_link_model *m, size_t n)
{
	return sim_link_model_exchange_us(m, n, 0);
}

bool sim_link_event_add(const struct sim_link_model *m, struct sim_link_event *ev,
			size_t up, size_t dn)
{
	uint32_t us = sim_link_model_exchange_us(m, up, dn);

	if (ev->exchanges >= m->pkts_per_event)
		return false;
	/* the first exchange of an event on time always goes (an interval
	 * shorter than one exchange still moves one packet per event) */
	if (ev->used_us + us > ev->avail_us &&
	    (ev->exchanges > 0 || ev->avail_us < m->conn_interval_us))
		return false;
	ev->used_us += us;
	ev->exchanges++;
	return true;
}

/* Full-size packets one connection event carries. */
static uint32_t pkts_per_interval(const struct sim_link_model *m)
{
	uint32_t fit = m->conn_interval_us / sim_link_model_packet_us(m, m->ll_payload);

	if (fit < 1)
		fit = 1;
	return fit < m->pkts_per_event ? fit : m->pkts_per_event;
}

uint64_t sim_link_model_pdu_us(const struct sim_link_model *m, size_t len)
{
	size_t n = (len + L2CAP_HDR + m->ll_payload - 1) / m->ll_payload;
	uint32_t ppi = pkts_per_interval(m);

	if (n == 0)
		n = 1;
	return (uint64_t)((n - 1) / ppi) * m->conn_interval_us +
	       ((n - 1) % ppi + 1) * (uint64_t)sim_link_model_packet_us(m, m->ll_payload);
}

/* SMP bytes per second when every PDU is a full att_mtu - 3 write/notify. */
static double capacity(const struct sim_link_model *m)
{
	size_t pdu = m->att_mtu; /* ATT opcode + handle (3) + att_mtu - 3 */
	double pkts = (double)(pdu + L2CAP_HDR + m->ll_payload - 1) / m->ll_payload;

	pkts = (double)(size_t)pkts;
	return (m->att_mtu - 3) * (pkts_per_interval(m) / pkts) * 1e6 / m->conn_interval_us;
}

double sim_link_model_capacity_up(const struct sim_link_model *m)
{
	return capacity(m);
}

double sim_link_model_capacity_down(const struct sim_link_model *m)
{
	return capacity(m);
}

void sim_link_model_describe(const struct sim_link_model *m, char *out, size_t size)
{
	snprintf(out, size,
		 "interval %.2f ms, %uM PHY, LL %u B x %u/event, ATT MTU %u, reassembly %s, "
		 "SMP buf %u x %u: up %.1f KB/s, down %.1f KB/s",
		 m->conn_interval_us / 1000.0, m->phy, m->ll_payload, m->pkts_per_event,
		 m->att_mtu, m->reassembly ? "on" : "off", m->buf_size, m->buf_count,
		 sim_link_model_capacity_up(m) / 1000, sim_link_model_capacity_down(m) / 1000);
}
