/* SPDX-License-Identifier: MIT */
/* Event bus with a ring-buffer history (see events.h). */
#include "gateway/events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "util/util.h"

struct sub {
	unsigned id;
	gw_event_cb cb;
	void *user_data;
	bool all; /* remote events too */
};

struct gw_events {
	struct gw_event *ring;
	unsigned cap, count, head; /* head: index of the oldest */
	uint64_t next_id;
	struct sub *subs;
	unsigned nsubs, next_sub;
	char *gateway;
};

struct gw_events *gw_events_new(unsigned history)
{
	struct gw_events *bus = xnew(struct gw_events);

	bus->cap = history ? history : 1;
	bus->ring = xnew_array(struct gw_event, bus->cap);
	bus->next_id = 1;
	bus->next_sub = 1;
	return bus;
}

static void event_clear(struct gw_event *ev)
{
	free((char *)ev->type);
	free((char *)ev->gateway);
	json_decref(ev->data);
	memset(ev, 0, sizeof(*ev));
}

struct gw_events *gw_events_free(struct gw_events *bus)
{
	if (!bus)
		return NULL;
	for (unsigned i = 0; i < bus->cap; i++)
		event_clear(&bus->ring[i]);
	free(bus->ring);
	free(bus->subs);
	free(bus->gateway);
	free(bus);
	return NULL;
}

static uint64_t wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

void gw_events_set_gateway(struct gw_events *bus, const char *gateway)
{
	free(bus->gateway);
	bus->gateway = gateway ? xstrdup(gateway) : NULL;
}

static uint64_t emit(struct gw_events *bus, const char *gateway, bool remote,
		     const char *type, json_t *data, uint64_t time_ms)
{
	struct gw_event *slot;

	if (bus->count == bus->cap) {
		slot = &bus->ring[bus->head];
		event_clear(slot);
		bus->head = (bus->head + 1) % bus->cap;
	} else {
		slot = &bus->ring[(bus->head + bus->count) % bus->cap];
		bus->count++;
	}
	slot->id = bus->next_id++;
	slot->type = xstrdup(type);
	slot->data = data ? data : json_object();
	slot->time_ms = time_ms;
	slot->gateway = gateway ? xstrdup(gateway) : NULL;
	slot->remote = remote;

	/* Subscribers may unsubscribe themselves from the callback: iterate
	 * over a snapshot of the count and re-check ids. */
	for (unsigned i = 0; i < bus->nsubs; i++) {
		struct sub s = bus->subs[i];

		if (!remote || s.all)
			s.cb(slot, s.user_data);
		if (i < bus->nsubs && bus->subs[i].id != s.id)
			i--; /* current entry removed; the next moved here */
	}
	return slot->id;
}

uint64_t gw_events_emit(struct gw_events *bus, const char *type, json_t *data)
{
	return emit(bus, bus->gateway, false, type, data, wall_ms());
}

uint64_t gw_events_emit_remote(struct gw_events *bus, const char *gateway,
			       const char *type, json_t *data, uint64_t time_ms)
{
	return emit(bus, gateway, true, type, data, time_ms);
}

static unsigned subscribe(struct gw_events *bus, gw_event_cb cb, void *user_data,
			  bool all)
{
	bus->subs = xrealloc(bus->subs, (bus->nsubs + 1) * sizeof(*bus->subs));
	bus->subs[bus->nsubs] = (struct sub){ bus->next_sub, cb, user_data, all };
	bus->nsubs++;
	return bus->next_sub++;
}

unsigned gw_events_subscribe(struct gw_events *bus, gw_event_cb cb,
			     void *user_data)
{
	return subscribe(bus, cb, user_data, false);
}

unsigned gw_events_subscribe_all(struct gw_events *bus, gw_event_cb cb,
				 void *user_data)
{
	return subscribe(bus, cb, user_data, true);
}

void gw_events_unsubscribe(struct gw_events *bus, unsigned id)
{
	for (unsigned i = 0; i < bus->nsubs; i++) {
		if (bus->subs[i].id != id)
			continue;
		memmove(&bus->subs[i], &bus->subs[i + 1],
			(bus->nsubs - i - 1) * sizeof(*bus->subs));
		bus->nsubs--;
		return;
	}
}

int gw_events_replay(struct gw_events *bus, uint64_t after_id, gw_event_cb cb,
		     void *user_data)
{
	if (bus->count && after_id + 1 < bus->ring[bus->head].id)
		return -ERANGE;
	for (unsigned i = 0; i < bus->count; i++) {
		struct gw_event *ev = &bus->ring[(bus->head + i) % bus->cap];

		if (ev->id > after_id)
			cb(ev, user_data);
	}
	return 0;
}

uint64_t gw_events_last_id(const struct gw_events *bus)
{
	return bus->next_id - 1;
}

uint64_t gw_events_first_id(const struct gw_events *bus)
{
	return bus->count ? bus->ring[bus->head].id : 0;
}
