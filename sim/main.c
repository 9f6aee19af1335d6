/* SPDX-License-Identifier: MIT */
/*
 * smpgw-sim: a simulated fleet of PineTimes running Zephyr's smp_svr under
 * MCUboot. Builds the fleet from a fleet file or --count, opens the faces
 * asked for (UDP ports, ptys, the fake org.bluez on --bus), the control
 * socket, prints what it opened and its link capacity, then runs the loop
 * until SIGINT/SIGTERM. `smpgw-sim ctl SOCKET JSON` is the control client.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "bluez.h"
#include "control.h"
#include "device.h"
#include "fleet.h"
#include "peripheral.h" /* --peripheral (tests/vm owner) */
#include "transport.h"
#include "util/util.h"

#define MAX_FLEET_FILE (16u << 20)

struct bus_opt {
	char *name;          /* NULL: plain --bus ADDRESS */
	const char *address;
};

struct opts {
	const char *fleet, *control, *image_dir;
	struct bus_opt bus[SIM_FLEET_MAX_BUSES];
	size_t nbus;
	const char *peripheral; /* --peripheral hci1[,hci2...] (tests/vm owner) */
	unsigned count;
	long udp_base;
	bool serial;
	uint64_t seed;
	bool seed_set;
};

struct sim {
	struct event_base *base;
	struct sim_fleet *fleet;
	struct sim_udp **udp;
	struct sim_serial **ser;
	struct sim_control *ctl;
	struct sim_bluez *bluez[SIM_FLEET_MAX_BUSES]; /* one per --bus */
	size_t nbluez;
	struct sim_peripheral **periph; /* --peripheral (tests/vm owner) */
	size_t n_periph;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: smpgw-sim (--fleet FILE | --count N) [options]\n"
		"       smpgw-sim ctl SOCKET '{\"cmd\":\"list\"}'\n"
		"  --fleet FILE      fleet file (JSON, see docs/simulator.md)\n"
		"  --count N         N default watches (PineTime-1 ...)\n"
		"  --control PATH    control socket (JSON lines)\n"
		"  --udp-base PORT   device i listens on 127.0.0.1:PORT+i (0: OS-chosen ports)\n"
		"  --serial          give every device a pty (paths printed)\n"
		"  --bus ADDRESS     own org.bluez on this D-Bus bus (fake BlueZ face)\n"
		"  --bus NAME=ADDRESS  repeatable: one fake org.bluez per gateway bus, with\n"
		"                    per-bus hearing (fleet keys heard, adapters[].bus)\n"
		"  --peripheral LIST serve device i through the REAL bluetoothd (system bus)\n"
		"                    on the i-th adapter of LIST (\"hci1,hci2\")\n"
		"  --image-dir DIR   where relative image paths are looked up\n"
		"  --seed N          seed for the devices' pseudo-random choices\n"
		"one-command 50-watch fleet: smpgw-sim --count 50 --udp-base 17001 "
		"--control /tmp/smpgw-sim.sock\n");
}

static int ctl_main(int argc, char **argv)
{
	char *rsp = NULL;
	int r;

	if (argc != 3) {
		usage(stderr);
		return 2;
	}
	r = sim_control_request(argv[1], argv[2], 10000, &rsp);
	if (r < 0) {
		fprintf(stderr, "smpgw-sim ctl: %s: %s\n", argv[1], strerror(-r));
		return 1;
	}
	printf("%s\n", rsp);
	r = strstr(rsp, "\"ok\":true") ? 0 : 1;
	free(rsp);
	return r;
}

/* --bus ADDRESS or --bus NAME=ADDRESS (a D-Bus address has a ':' before
 * its first '=', a NAME has none). */
static int add_bus(struct opts *o, const char *arg)
{
	const char *eq = strchr(arg, '=');
	struct bus_opt *b = &o->bus[o->nbus];

	if (o->nbus == SIM_FLEET_MAX_BUSES) {
		fprintf(stderr, "smpgw-sim: at most %d --bus\n", SIM_FLEET_MAX_BUSES);
		return -EINVAL;
	}
	b->address = arg;
	if (eq && !memchr(arg, ':', (size_t)(eq - arg))) {
		b->name = xstrndup(arg, (size_t)(eq - arg));
		b->address = eq + 1;
		if (!sim_fleet_bus_name_valid(b->name) || !*b->address) {
			fprintf(stderr, "smpgw-sim: --bus %s: NAME is 1..%d of [A-Za-z0-9_.-], then "
				"=ADDRESS\n", arg, SIM_FLEET_BUS_NAME_MAX);
			free(b->name);
			b->name = NULL;
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < o->nbus; i++)
		if (!o->bus[i].name || !b->name || !strcmp(o->bus[i].name, b->name)) {
			fprintf(stderr, "smpgw-sim: several --bus need distinct NAME=ADDRESS each\n");
			free(b->name);
			b->name = NULL;
			return -EINVAL;
		}
	o->nbus++;
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "fleet", required_argument, NULL, 'f' }, { "count", required_argument, NULL, 'n' },
		{ "control", required_argument, NULL, 'c' }, { "udp-base", required_argument, NULL, 'u' },
		{ "serial", no_argument, NULL, 's' }, { "bus", required_argument, NULL, 'b' },
		{ "image-dir", required_argument, NULL, 'i' }, { "seed", required_argument, NULL, 'S' },
		{ "peripheral", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' }, { 0 },
	};
	char *end;
	int c;

	o->udp_base = -1;
	while ((c = getopt_long(argc, argv, "f:n:c:u:sb:i:S:P:h", lo, NULL)) != -1) {
		switch (c) {
		case 'f': o->fleet = optarg; break;
		case 'c': o->control = optarg; break;
		case 's': o->serial = true; break;
		case 'b':
			if (add_bus(o, optarg) < 0)
				return -EINVAL;
			break;
		case 'i': o->image_dir = optarg; break;
		case 'P': o->peripheral = optarg; break;
		case 'n':
			o->count = (unsigned)strtoul(optarg, &end, 10);
			if (*end || o->count == 0 || o->count > SIM_FLEET_MAX_DEVICES) {
				fprintf(stderr, "smpgw-sim: --count must be 1..%d\n", SIM_FLEET_MAX_DEVICES);
				return -EINVAL;
			}
			break;
		case 'u':
			o->udp_base = strtol(optarg, &end, 10);
			if (*end || o->udp_base < 0 || o->udp_base > 65535) {
				fprintf(stderr, "smpgw-sim: --udp-base must be 0..65535\n");
				return -EINVAL;
			}
			break;
		case 'S':
			o->seed = strtoull(optarg, &end, 10);
			o->seed_set = !*end;
			if (*end)
				return -EINVAL;
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -EINVAL;
		}
	}
	if (optind != argc || !!o->fleet == !!o->count) {
		fprintf(stderr, "smpgw-sim: give exactly one of --fleet FILE or --count N\n");
		usage(stderr);
		return -EINVAL;
	}
	return 0;
}

static struct sim_fleet_spec *load_spec(const struct opts *o)
{
	struct sim_fleet_spec *spec = NULL;
	char err[256];
	size_t len;
	uint8_t *buf;
	FILE *f;

	if (!o->fleet)
		return sim_fleet_spec_new_count(o->count);
	f = fopen(o->fleet, "rb");
	if (!f) {
		fprintf(stderr, "smpgw-sim: %s: %s\n", o->fleet, strerror(errno));
		return NULL;
	}
	buf = xmalloc(MAX_FLEET_FILE);
	len = fread(buf, 1, MAX_FLEET_FILE, f);
	fclose(f);
	if (len == MAX_FLEET_FILE)
		fprintf(stderr, "smpgw-sim: %s: larger than 16 MiB\n", o->fleet);
	else if (sim_fleet_spec_parse(buf, len, &spec, err, sizeof(err)) < 0)
		fprintf(stderr, "smpgw-sim: %s: %s\n", o->fleet, err);
	free(buf);
	return spec;
}

static void print_capacity(const struct sim_fleet *fleet)
{
	const struct sim_link_model *seen[8];
	size_t nseen = 0;
	char desc[256];

	for (size_t i = 0; i < sim_fleet_count(fleet) && nseen < ARRAY_SIZE(seen); i++) {
		const struct sim_link_model *m = sim_device_link_model(sim_fleet_device(fleet, i));
		bool dup = false;
		for (size_t j = 0; j < nseen; j++)
			dup |= !memcmp(seen[j], m, sizeof(*m));
		if (dup)
			continue;
		seen[nseen++] = m;
		sim_link_model_describe(m, desc, sizeof(desc));
		printf("link %s\n", desc);
	}
	for (unsigned a = 0; a < sim_fleet_adapter_count(fleet); a++)
		printf("adapter hci%u %s max_connections %u\n", a, sim_fleet_adapter_address(fleet, a),
		       sim_fleet_adapter_max_connections(fleet, a));
}

static int open_faces(struct sim *s, const struct opts *o)
{
	size_t n = sim_fleet_count(s->fleet);
	int err;

	s->udp = xnew_array(struct sim_udp *, n);
	s->ser = xnew_array(struct sim_serial *, n);
	for (size_t i = 0; i < n; i++) {
		struct sim_device *d = sim_fleet_device(s->fleet, i);
		uint16_t port = sim_fleet_udp_port(s->fleet, i);
		bool want_udp = port || o->udp_base == 0;

		if (want_udp && !(s->udp[i] = sim_udp_new(s->base, d, port, &err))) {
			fprintf(stderr, "smpgw-sim: %s: UDP port %u: %s\n", sim_device_name(d), port,
				strerror(-err));
			return err;
		}
		if (sim_fleet_serial(s->fleet, i) && !(s->ser[i] = sim_serial_new(s->base, d, &err))) {
			fprintf(stderr, "smpgw-sim: %s: pty: %s\n", sim_device_name(d), strerror(-err));
			return err;
		}
		if (s->udp[i])
			printf("udp %s %s 127.0.0.1:%u\n", sim_device_address(d), sim_device_name(d),
			       sim_udp_port(s->udp[i]));
		if (s->ser[i])
			printf("pty %s %s %s\n", sim_device_address(d), sim_device_name(d),
			       sim_serial_path(s->ser[i]));
	}
	return 0;
}

static int open_control(struct sim *s, const char *path)
{
	int err;

	if (!path)
		return 0;
	s->ctl = sim_control_new(s->base, s->fleet, path, &err);
	if (!s->ctl) {
		fprintf(stderr, "smpgw-sim: control socket %s: %s\n", path, strerror(-err));
		return err;
	}
	for (size_t i = 0; i < sim_fleet_count(s->fleet); i++)
		sim_control_set_transport(s->ctl, i, s->udp[i] ? sim_udp_port(s->udp[i]) : 0,
					  s->ser[i] ? sim_serial_path(s->ser[i]) : NULL);
	printf("control %s\n", path);
	return 0;
}

/*
 * The fake org.bluez (sim/bluez*.c) hooks in here: one per --bus, created
 * after the fleet exists and freed before it.
 */
static int open_bluez(struct sim *s, const struct opts *o)
{
	const char *names[SIM_FLEET_MAX_BUSES];
	char *err = NULL, why[256];

	if (!o->nbus)
		return 0; /* hearing maps do not matter to UDP and serial faces */
	for (size_t i = 0; i < o->nbus; i++)
		names[i] = o->bus[i].name;
	if (sim_fleet_check_buses(s->fleet, names, o->nbus && o->bus[0].name ? o->nbus : 0, why,
				  sizeof(why)) < 0) {
		fprintf(stderr, "smpgw-sim: %s\n", why);
		return -EINVAL;
	}
	for (size_t i = 0; i < o->nbus; i++) {
		const struct bus_opt *b = &o->bus[i];
		struct sim_bluez *bz = sim_bluez_new_named(s->base, s->fleet, b->name, (unsigned)i,
							   b->address, &err);

		if (!bz) {
			fprintf(stderr, "smpgw-sim: --bus %s: %s\n", b->address, err);
			free(err);
			return -EIO;
		}
		s->bluez[s->nbluez++] = bz;
		if (!b->name) {
			printf("bluez org.bluez on %s\n", b->address);
			continue;
		}
		printf("bluez %s org.bluez on %s\n", b->name, b->address);
		for (unsigned a = 0; a < sim_bluez_adapter_count(bz); a++)
			printf("bus %s adapter hci%u %s\n", b->name, a, sim_bluez_adapter_address(bz, a));
	}
	if (s->ctl)
		sim_control_set_bluez(s->ctl, s->bluez, s->nbluez);
	return 0;
}

static void close_bluez(struct sim *s)
{
	if (s->ctl)
		sim_control_set_bluez(s->ctl, NULL, 0);
	for (size_t i = 0; i < s->nbluez; i++)
		sim_bluez_free(s->bluez[i]);
	s->nbluez = 0;
}

/* ---- --peripheral: watches behind the real bluetoothd (tests/vm owner) ---- */
static void peripheral_log(struct sim_device *dev, const char *line, void *user_data)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	printf("[%5lld.%03ld] peripheral %s: %s\n", (long long)ts.tv_sec, ts.tv_nsec / 1000000,
	       sim_device_name(dev), line);
	fflush(stdout);
}

static int open_peripherals(struct sim *s, const char *list)
{
	char *copy, *save = NULL, *err = NULL;
	size_t i = 0;
	int r = 0;

	if (!list)
		return 0;
	copy = xstrdup(list);
	s->periph = xnew_array(struct sim_peripheral *, sim_fleet_count(s->fleet));
	for (char *a = strtok_r(copy, ",", &save); a && i < sim_fleet_count(s->fleet);
	     a = strtok_r(NULL, ",", &save), i++) {
		struct sim_device *d = sim_fleet_device(s->fleet, i);

		s->periph[i] = sim_peripheral_new(s->base, d, NULL, a, (unsigned)i, peripheral_log,
						  NULL, &err);
		if (!s->periph[i]) {
			fprintf(stderr, "smpgw-sim: --peripheral %s: %s\n", a, err);
			free(err);
			r = -EIO;
			break;
		}
		s->n_periph = i + 1;
		printf("peripheral %s %s on %s\n", sim_device_address(d), sim_device_name(d), a);
	}
	free(copy);
	return r;
}
/* ---- end --peripheral ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static void sim_close(struct sim *s)
{
	close_bluez(s);
	for (size_t i = 0; i < s->n_periph; i++) /* --peripheral (tests/vm owner) */
		sim_peripheral_free(s->periph[i]);
	free(s->periph);
	sim_control_free(s->ctl);
	for (size_t i = 0; s->fleet && i < sim_fleet_count(s->fleet); i++) {
		if (s->udp)
			sim_udp_free(s->udp[i]);
		if (s->ser)
			sim_serial_free(s->ser[i]);
	}
	free(s->udp);
	free(s->ser);
	sim_fleet_free(s->fleet);
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct sim s = { 0 };
	struct sim_fleet_spec *spec;
	char err[256] = "", *dir = NULL;
	int r = 1;

	if (argc > 1 && !strcmp(argv[1], "ctl"))
		return ctl_main(argc - 1, argv + 1);
	if (parse_opts(argc, argv, &o) < 0 || !(spec = load_spec(&o)))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	if (o.udp_base > 0)
		sim_fleet_spec_set_udp_base(spec, (uint16_t)o.udp_base);
	if (o.serial)
		sim_fleet_spec_set_serial(spec, true);
	if (o.seed_set)
		sim_fleet_spec_set_seed(spec, o.seed);
	if (!o.image_dir && o.fleet) {
		char *copy = xstrdup(o.fleet);
		dir = xstrdup(dirname(copy));
		free(copy);
	}
	s.base = event_base_new();
	s.fleet = sim_fleet_new(s.base, spec, o.image_dir ? o.image_dir : dir, err, sizeof(err));
	sim_fleet_spec_free(spec);
	if (!s.fleet) {
		fprintf(stderr, "smpgw-sim: %s\n", err);
		goto out;
	}
	printf("smpgw-sim: %zu devices\n", sim_fleet_count(s.fleet));
	print_capacity(s.fleet);
	if (open_faces(&s, &o) < 0 || open_control(&s, o.control) < 0 || open_bluez(&s, &o) < 0 ||
	    open_peripherals(&s, o.peripheral) < 0 /* tests/vm owner */)
		goto out;
	printf("ready\n");
	fflush(stdout);
	struct event *si = evsignal_new(s.base, SIGINT, on_signal, s.base);
	struct event *st = evsignal_new(s.base, SIGTERM, on_signal, s.base);
	event_add(si, NULL);
	event_add(st, NULL);
	event_base_dispatch(s.base);
	event_free(si);
	event_free(st);
	r = 0;
out:
	sim_close(&s);
	if (s.base)
		event_base_free(s.base);
	free(dir);
	for (size_t i = 0; i < o.nbus; i++)
		free(o.bus[i].name);
	return r;
}
