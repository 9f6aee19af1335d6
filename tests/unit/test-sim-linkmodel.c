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

/*
 * An upload stream through sim_link_event_add(): frames of 10 full LL
 * packets (a 2475-byte SMP frame in MTU-498 writes), always data queued
 * (three frames in flight), each frame answered by a 29-octet notification
 * (SMP answer + ATT + L2CAP) that is ready for the event after the frame's
 * last packet. Returns events used for `frames` frames; *up_with_answer
 * gets the uplink packets of the event that carried the first answer.
 */
static unsigned stream(const struct sim_link_model *m, unsigned frames, unsigned *up_with_answer)
{
	unsigned events = 0, sent = 0, answers_due = 0, answered = 0;

	while (answered < frames) {
		struct sim_link_event ev = { .avail_us = m->conn_interval_us };
		unsigned up = 0, ready = answers_due, completed = 0;
		bool answer = false;

		for (;;) {
			bool has_up = sent < frames * 10, has_dn = ready > answered;

			if (!has_up && !has_dn)
				break;
			if (!sim_link_event_add(m, &ev, has_up ? 251 : 0, has_dn ? 29 : 0))
				break;
			if (has_up) {
				up++;
				if (++sent % 10 == 0)
					completed++;
			}
			if (has_dn) {
				answered++;
				answer = true;
			}
		}
		if (answer && answered == 1 && up_with_answer)
			*up_with_answer = up;
		answers_due += completed;
		events++;
	}
	return events;
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

	/* Both ways in one exchange: an answer rides in the peripheral's half
	 * of an exchange that carries a write, costing its octets over the
	 * empty packet it replaces (the simulator used to book it as one more
	 * whole exchange on the radio, after every write already queued). */
	m = fast(SIM_PHY_1M);
	m.pkts_per_event = 4;
	is_int(sim_link_model_exchange_us(&m, 251, 29) - sim_link_model_packet_us(&m, 251), 29 * 8,
	       "an answer in a write's exchange costs its own octets");
	struct sim_link_event ev = { .avail_us = m.conn_interval_us };
	unsigned n = 0, up_ans = 0;

	while (sim_link_event_add(&m, &ev, 251, 0))
		n++;
	ok(n == 3, "1M, 7.5 ms: three full exchanges per event (%u us)", ev.used_us);
	ok(ev.used_us <= m.conn_interval_us, "the event ends before the next anchor");
	is_int(sim_link_event_add(&m, &ev, 0, 29), false, "no room left for an answer");
	ev = (struct sim_link_event){ .avail_us = m.conn_interval_us };
	ok(sim_link_event_add(&m, &ev, 251, 29) && sim_link_event_add(&m, &ev, 251, 0) &&
	   !sim_link_event_add(&m, &ev, 251, 0),
	   "1M, 7.5 ms: an event with an answer carries two full writes");
	ev = (struct sim_link_event){ .avail_us = 1000 };
	ok(!sim_link_event_add(&m, &ev, 251, 0), "a late event's first exchange must fit");
	ev = (struct sim_link_event){ .avail_us = m.conn_interval_us };
	ok(sim_link_event_add(&m, &ev, 0, 0), "an empty exchange (keep-alive) fits");

	/* Streams: 30 frames of 10 packets, each answered. At 2M the answer
	 * shares an event with four writes, nothing lost (capacity counts
	 * four per event); at 1M, 7.5 ms the answer's event holds two writes:
	 * one slot in eleven goes to answers, the honest ceiling is 10/11. */
	m = fast(SIM_PHY_2M);
	m.pkts_per_event = 4;
	n = stream(&m, 30, &up_ans);
	is_int(up_ans, 4, "2M, 7.5 ms: an answer shares its event with 4 writes");
	ok(n <= 30 * 10 / 4 + 2, "2M, 7.5 ms: %u events for 300 packets (75 + answer tail)", n);
	m = fast(SIM_PHY_1M);
	m.pkts_per_event = 4;
	n = stream(&m, 30, &up_ans);
	is_int(up_ans, 2, "1M, 7.5 ms: an answer's event carries 2 writes");
	ok(n >= 30 * 11 / 3 - 1 && n <= 30 * 11 / 3 + 2,
	   "1M, 7.5 ms: %u events for 300 packets + 30 answers (~110, not 100)", n);
	return tap_done();
}
