/* SPDX-License-Identifier: MIT */
#include <errno.h>
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
	return tap_done();
}
