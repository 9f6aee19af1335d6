/* SPDX-License-Identifier: MIT */
/*
 * The BLE link model against the figures DESIGN.md quotes: with 251-byte LL
 * packets at a 7.5 ms interval the on-air ceiling is about 98 KB/s on the 1M
 * PHY and 163 KB/s on 2M; smaller packets and MTUs cost what they should.
 */
#include <errno.h>
#include <string.h>

#include "linkmodel.h"
#include "tap.h"

static struct sim_link_model fast(uint8_t phy)
{
	struct sim_link_model m;

	sim_link_model_default(&m);
	m.conn_interval_us = 7500;
	m.phy = phy;
	m.pkts_per_event = 64; /* as many as fit */
	m.att_mtu = 247;       /* one ATT PDU per 251-byte LL packet */
	return m;
}

int main(void)
{
	struct sim_link_model m = fast(SIM_PHY_1M), d;
	double c1 = sim_link_model_capacity_up(&m);
	const char *why = NULL;
	char desc[256];

	ok(c1 > 90000 && c1 < 105000, "1M, 7.5 ms, 251 B: %.0f B/s (~98 KB/s)", c1);
	m = fast(SIM_PHY_2M);
	double c2 = sim_link_model_capacity_down(&m);
	ok(c2 > 150000 && c2 < 175000, "2M, 7.5 ms, 251 B: %.0f B/s (~163 KB/s)", c2);

	m = fast(SIM_PHY_1M);
	m.ll_payload = 27;
	m.att_mtu = 23;
	double c3 = sim_link_model_capacity_up(&m);
	ok(c3 < c1 / 3, "27-byte packets, MTU 23: %.0f B/s, far slower", c3);

	sim_link_model_default(&d);
	is_int(sim_link_model_validate(&d, &why), 0, "defaults valid");
	ok(d.att_mtu == 498 && d.buf_size == 2475 && d.buf_count == 4 && d.reassembly,
	   "defaults follow firmware/prj.conf");
	ok(sim_link_model_capacity_up(&d) > 20000, "defaults: %.0f B/s", sim_link_model_capacity_up(&d));

	/* one packet of 251 bytes at 1M: 2088 us on air + IFS + empty + IFS */
	is_int(sim_link_model_packet_us(&d, 251), 2088 + 150 + 80 + 150, "packet air time");
	/* an ATT PDU needing 3 packets with 4 per event fits one event */
	ok(sim_link_model_pdu_us(&d, 498) < d.conn_interval_us, "one MTU PDU within an event");
	d.pkts_per_event = 1;
	ok(sim_link_model_pdu_us(&d, 498) >= d.conn_interval_us, "one packet per event: spans events");

	d.phy = 3;
	int r = sim_link_model_validate(&d, &why);
	ok(r == -EINVAL && why && strstr(why, "phy"), "bad phy: %s", why ? why : "");
	sim_link_model_default(&d);
	d.ll_payload = 300;
	ok(sim_link_model_validate(&d, &why) == -EINVAL && strstr(why, "ll_payload"), "bad ll_payload");
	sim_link_model_default(&d);
	sim_link_model_describe(&d, desc, sizeof(desc));
	ok(strstr(desc, "KB/s") != NULL, "describe: %s", desc);
	return tap_done();
}
