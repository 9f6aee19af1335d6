/* SPDX-License-Identifier: MIT */
/*
 * Test host for the fake org.bluez: a fleet (fleet file or --count) behind
 * sim_bluez on a private bus, steered through stdin lines so D-Bus tests can
 * inject the watch-side events (range, reset, faults) without the control
 * interface:
 *   range ADDR 0|1 | reset ADDR | rssi ADDR N | fault ADDR KEY N | counters | quit
 * Prints "READY" once org.bluez is owned, one "OK ..." or "ERR ..." per line.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "bluez.h"
#include "device.h"
#include "fleet.h"
#include "util/util.h"

struct host {
	struct event_base *base;
	struct sim_fleet *fleet;
	struct sim_bluez *bz;
	char line[512];
	size_t len;
};

static int set_fault(struct sim_device *dev, const char *key, long v)
{
	struct sim_faults f = *sim_device_faults(dev);

	if (!strcmp(key, "refuse_pairing"))
		f.refuse_pairing = v;
	else if (!strcmp(key, "pairing_required"))
		f.pairing_required = v;
	else if (!strcmp(key, "hang"))
		f.hang = v;
	else if (!strcmp(key, "disconnect_after_frames"))
		f.disconnect_after_frames = v;
	else if (!strcmp(key, "corrupt"))
		f.corrupt_notifications = (uint32_t)v;
	else if (!strcmp(key, "truncate"))
		f.truncate_notifications = (uint32_t)v;
	else
		return -1;
	sim_device_set_faults(dev, &f);
	return 0;
}

static void command(struct host *h, char *line)
{
	char cmd[32] = "", addr[64] = "", key[64] = "";
	long v = 0;
	int n = sscanf(line, "%31s %63s %63s %ld", cmd, addr, key, &v);
	struct sim_device *dev = n >= 2 ? sim_fleet_find(h->fleet, addr) : NULL;

	if (!strcmp(cmd, "quit")) {
		event_base_loopbreak(h->base);
		return;
	}
	if (!strcmp(cmd, "counters")) {
		const struct sim_bluez_counters *c = sim_bluez_counters(h->bz);

		printf("OK writes=%llu notifications=%llu frames=%llu drops_busy=%llu "
		       "drops_link=%llu drops_notify=%llu\n",
		       (unsigned long long)c->writes, (unsigned long long)c->notifications,
		       (unsigned long long)c->frames, (unsigned long long)c->drops_busy,
		       (unsigned long long)c->drops_link, (unsigned long long)c->drops_notify);
	} else if (!dev) {
		printf("ERR no such device\n");
	} else if (!strcmp(cmd, "range")) {
		sim_device_set_in_range(dev, atoi(key));
		printf("OK\n");
	} else if (!strcmp(cmd, "reset")) {
		sim_device_reset(dev);
		printf("OK\n");
	} else if (!strcmp(cmd, "rssi")) {
		sim_device_set_rssi(dev, atoi(key));
		printf("OK\n");
	} else if (!strcmp(cmd, "fault") && n == 4 && !set_fault(dev, key, v)) {
		printf("OK\n");
	} else {
		printf("ERR bad command\n");
	}
	fflush(stdout);
}

static void stdin_cb(evutil_socket_t fd, short what, void *arg)
{
	struct host *h = arg;
	ssize_t n = read(fd, h->line + h->len, sizeof(h->line) - 1 - h->len);
	char *nl;

	if (n <= 0) {
		event_base_loopbreak(h->base); /* the test went away */
		return;
	}
	h->len += (size_t)n;
	h->line[h->len] = 0;
	while ((nl = strchr(h->line, '\n'))) {
		*nl = 0;
		command(h, h->line);
		memmove(h->line, nl + 1, h->len - (size_t)(nl + 1 - h->line) + 1);
		h->len -= (size_t)(nl + 1 - h->line);
	}
	if (h->len == sizeof(h->line) - 1)
		h->len = 0; /* overlong line: forget it */
}

static void signal_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static struct sim_fleet_spec *load_spec(const char *file, unsigned count)
{
	struct sim_fleet_spec *spec = NULL;
	char err[256];
	uint8_t *buf;
	FILE *f;
	long len;

	if (!file)
		return sim_fleet_spec_new_count(count ? count : 1);
	f = fopen(file, "rb");
	if (!f || fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		perror(file);
		if (f)
			fclose(f);
		return NULL;
	}
	buf = xmalloc((size_t)len + 1);
	if (fread(buf, 1, (size_t)len, f) != (size_t)len ||
	    sim_fleet_spec_parse(buf, (size_t)len, &spec, err, sizeof(err)) < 0)
		fprintf(stderr, "%s: %s\n", file, err);
	fclose(f);
	free(buf);
	return spec;
}

int main(int argc, char **argv)
{
	const char *bus = NULL, *file = NULL;
	unsigned count = 0;
	struct host h = { 0 };
	struct sim_fleet_spec *spec;
	struct event *in_ev, *sig_ev;
	char err[256], *berr = NULL;
	int rc = 1;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--bus"))
			bus = argv[i + 1];
		else if (!strcmp(argv[i], "--fleet"))
			file = argv[i + 1];
		else if (!strcmp(argv[i], "--count"))
			count = (unsigned)atoi(argv[i + 1]);
	}
	h.base = event_base_new();
	spec = load_spec(file, count);
	if (!spec)
		goto out;
	h.fleet = sim_fleet_new(h.base, spec, NULL, err, sizeof(err));
	if (!h.fleet) {
		fprintf(stderr, "fleet: %s\n", err);
		goto out;
	}
	h.bz = sim_bluez_new(h.base, h.fleet, bus, &berr);
	if (!h.bz) {
		fprintf(stderr, "bluez: %s\n", berr);
		free(berr);
		goto out;
	}
	in_ev = event_new(h.base, 0, EV_READ | EV_PERSIST, stdin_cb, &h);
	sig_ev = evsignal_new(h.base, SIGTERM, signal_cb, h.base);
	event_add(in_ev, NULL);
	event_add(sig_ev, NULL);
	printf("READY\n");
	fflush(stdout);
	event_base_dispatch(h.base);
	event_free(in_ev);
	event_free(sig_ev);
	rc = 0;
out:
	sim_bluez_free(h.bz);
	sim_fleet_free(h.fleet);
	sim_fleet_spec_free(spec);
	event_base_free(h.base);
	return rc;
}
