/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gateway/events.h"
#include "tap.h"

struct seen {
	uint64_t ids[16];
	int n;
};

static void record(const struct gw_event *ev, void *user_data)
{
	struct seen *s = user_data;

	if (s->n < 16)
		s->ids[s->n++] = ev->id;
}

struct seen_gw {
	int local, all;
	char gateway[16];
	bool remote;
};

static void count_local(const struct gw_event *ev, void *user_data)
{
	((struct seen_gw *)user_data)->local++;
}

static void count_all(const struct gw_event *ev, void *user_data)
{
	struct seen_gw *s = user_data;

	s->all++;
	snprintf(s->gateway, sizeof(s->gateway), "%s", ev->gateway ? ev->gateway : "-");
	s->remote = ev->remote;
}

/* Several gateways (cluster.h): remote events reach only the subscribers
 * that asked for them; every event says where it happened. */
static void test_remote(void)
{
	struct gw_events *bus = gw_events_new(8);
	struct seen_gw s = { 0 };

	gw_events_subscribe(bus, count_local, &s);
	gw_events_subscribe_all(bus, count_all, &s);
	gw_events_emit(bus, "device.seen", NULL);
	is_str(s.gateway, "-", "one gateway: no gateway id");
	gw_events_set_gateway(bus, "g1");
	gw_events_emit(bus, "device.seen", NULL);
	ok(s.local == 2 && s.all == 2 && !s.remote, "local events go to both");
	is_str(s.gateway, "g1", "a local event carries this gateway's id");
	is_int(gw_events_emit_remote(bus, "g2", "job.result", json_pack("{s:i}", "id", 7),
				     1234), 3, "a remote event gets a local id");
	ok(s.local == 2 && s.all == 3 && s.remote, "only subscribe_all sees it");
	is_str(s.gateway, "g2", "with the gateway it happened on");
	gw_events_free(bus);
}

int main(void)
{
	struct gw_events *bus = gw_events_new(3);
	struct seen live = { 0 }, replay = { 0 };
	unsigned sub = gw_events_subscribe(bus, record, &live);

	is_int(gw_events_first_id(bus), 0, "empty history: no first id");
	is_int(gw_events_emit(bus, "a", NULL), 1, "first id is 1");
	is_int(gw_events_emit(bus, "b", json_pack("{s:i}", "x", 1)), 2, "second id");
	is_int(live.n, 2, "subscriber saw both");
	gw_events_unsubscribe(bus, sub);
	gw_events_emit(bus, "c", NULL);
	gw_events_emit(bus, "d", NULL);
	is_int(live.n, 2, "no delivery after unsubscribe");
	is_int(gw_events_last_id(bus), 4, "last id");
	is_int(gw_events_first_id(bus), 2, "first id: the oldest of 3 held");
	is_int(gw_events_replay(bus, 2, record, &replay), 0, "replay after 2");
	is_int(replay.n, 2, "replayed 3 and 4");
	is_int(replay.ids[0], 3, "oldest first");
	is_int(gw_events_replay(bus, 0, record, &replay), -ERANGE,
	       "history lost is reported");
	gw_events_free(bus);
	test_remote();
	return tap_done();
}
