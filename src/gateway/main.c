/* SPDX-License-Identifier: MIT */
/*
 * smpgwd: the gateway daemon. Parses the command line and the config,
 * wires the modules together on one libevent loop (store, gateway
 * context, registry, BLE manager, UDP face, REST API), handles signals
 * (SIGTERM/SIGINT: clean shutdown, SIGHUP: reload the device list) and
 * tears everything down in reverse order.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/jobs.h" /* upload engine */
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/registry/registry.h"
#include "gateway/rollouts.h" /* rollout scheduler */
#include "gateway/store.h"
#include "gateway/udpface.h"
#include "util/util.h"

#ifdef SMPGW_HAVE_BLE
#include "links/ble.h"
#endif
#ifdef SMPGW_HAVE_HTTP
#include "http/server.h"
#endif

struct daemon {
	struct event_base *base;
	struct gw *gw;
	struct gw_udpface *udp;
	struct gw_engine *engine; /* upload engine: jobs (engine.c) */
	struct gw_rollouts *rollouts; /* rollout scheduler (rollouts.c) */
	struct gw_metrics *metrics; /* before any device: frames from the start */
	int64_t time_offset_ms;  /* --time-offset-ms: shifts gw_now_ms() */
	char *config_path;
	char *ports_path;
	struct event *sig_term, *sig_int, *sig_hup;
#ifdef SMPGW_HAVE_BLE
	struct ble_manager *ble;
#endif
#ifdef SMPGW_HAVE_HTTP
	struct http_server *http;
#endif
};

struct options {
	const char *config;
	const char *state_dir;
	const char *log_level;
	const char *udp_base;
	const char *http;
	const char *bluez_bus;
	bool no_ble;
	const char *time_offset; /* --time-offset-ms */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: smpgwd [OPTIONS]\n"
		"  -c, --config FILE        configuration file (INI)\n"
		"  -s, --state-dir DIR      state directory (database, ports.json)\n"
		"  -l, --log-level LEVEL    err, warning, notice, info, debug\n"
		"      --udp-base PORT      first UDP endpoint port (0: OS picks)\n"
		"      --http ADDR:PORT     REST API listen address (port 0: OS picks)\n"
		"      --bluez-bus ADDRESS  D-Bus address of bluetoothd (default: system bus)\n"
		"      --no-ble             do not use Bluetooth\n"
		"      --time-offset-ms MS  shift the daemon's wall clock (rollout windows;\n"
		"                           for tests and rehearsals)\n"
		"  -h, --help               this text\n"
		"  -V, --version            print the version\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_UDP_BASE = 256, OPT_HTTP, OPT_BUS, OPT_NO_BLE, OPT_TIME_OFFSET };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "udp-base", required_argument, NULL, OPT_UDP_BASE },
		{ "http", required_argument, NULL, OPT_HTTP },
		{ "bluez-bus", required_argument, NULL, OPT_BUS },
		{ "no-ble", no_argument, NULL, OPT_NO_BLE },
		{ "time-offset-ms", required_argument, NULL, OPT_TIME_OFFSET },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:s:l:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': o->config = optarg; break;
		case 's': o->state_dir = optarg; break;
		case 'l': o->log_level = optarg; break;
		case OPT_UDP_BASE: o->udp_base = optarg; break;
		case OPT_HTTP: o->http = optarg; break;
		case OPT_BUS: o->bluez_bus = optarg; break;
		case OPT_NO_BLE: o->no_ble = true; break;
		case OPT_TIME_OFFSET: o->time_offset = optarg; break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("smpgwd %s\n", SMPGW_VERSION); exit(0);
		default: usage(stderr); return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "smpgwd: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static int apply_overrides(struct gw_config *cfg, const struct options *o)
{
	static const struct { const char *sect, *key; size_t off; } map[] = {
		{ "general", "state_dir", offsetof(struct options, state_dir) },
		{ "general", "log_level", offsetof(struct options, log_level) },
		{ "udp", "base_port", offsetof(struct options, udp_base) },
		{ "http", "listen", offsetof(struct options, http) },
		{ "ble", "bus", offsetof(struct options, bluez_bus) },
	};

	for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
		const char *v = *(const char *const *)((const char *)o + map[i].off);

		if (v && gw_config_set(cfg, map[i].sect, map[i].key, v) < 0) {
			fprintf(stderr, "smpgwd: bad value for --%s: %s\n",
				map[i].key, v);
			return -EINVAL;
		}
	}
	if (o->no_ble)
		cfg->ble.enabled = false;
	return 0;
}

static int load_config(const struct options *o, struct gw_config **ret)
{
	struct gw_config *cfg = NULL;
	char *err = NULL;
	int r = 0;

	if (o->config)
		r = gw_config_load(o->config, &cfg, &err);
	else
		cfg = gw_config_new_default();
	if (r < 0) {
		fprintf(stderr, "smpgwd: %s: %s\n", o->config, err ? err : strerror(-r));
		free(err);
		return r;
	}
	r = apply_overrides(cfg, o);
	if (r < 0) {
		gw_config_free(cfg);
		return r;
	}
	*ret = cfg;
	return 0;
}

/* ---- ports.json: where tests and tools find the endpoints ---- */

static void ports_changed(struct gw_udpface *face, void *user_data)
{
	struct daemon *d = user_data;
	int r = gw_udpface_write_ports(face, d->ports_path);

	if (r < 0)
		log_warn("cannot write %s: %s", d->ports_path, strerror(-r));
}

/* ---- BLE discovery -> registry ---- */

#ifdef SMPGW_HAVE_BLE
static uint16_t pinned_ble_port(const struct gw_config *cfg, const char *address)
{
	for (size_t i = 0; i < cfg->n_devices; i++)
		if (cfg->devices[i].transport == GW_TRANSPORT_BLE &&
		    !strcasecmp(cfg->devices[i].address, address))
			return cfg->devices[i].udp_port;
	return 0;
}

static json_t *adv_json(const struct ble_device_info *info)
{
	json_t *o = json_pack("{s:s?}", "adapter", info->adapter);
	char *hex;

	if (info->mfr_data) {
		hex = xmalloc(info->mfr_len * 2 + 1);
		hex_encode(info->mfr_data, info->mfr_len, hex);
		json_object_set_new(o, "manufacturer",
				    json_pack("{s:i, s:s}", "company", info->mfr_id,
					      "data", hex));
		free(hex);
	}
	if (info->svc_data) {
		hex = xmalloc(info->svc_len * 2 + 1);
		hex_encode(info->svc_data, info->svc_len, hex);
		json_object_set_new(o, "service_data", json_string(hex));
		free(hex);
	}
	return o;
}

static void ble_seen(struct ble_manager *mgr, const struct ble_device_info *info,
		     void *user_data)
{
	struct daemon *d = user_data;
	struct gw_device *dev = gw_device_find(d->gw, info->address);

	if (!dev) {
		struct link *link;

		if (!gw_config_ble_allowed(gw_config(d->gw), info->address, info->name))
			return;
		link = ble_manager_link(mgr, info->address);
		if (!link)
			return;
		dev = gw_registry_add(gw_registry_of(d->gw), info->address,
				      info->name, link, false,
				      pinned_ble_port(gw_config(d->gw), info->address));
		if (!dev)
			return;
		log_info("ble: managing %s (%s)", info->address,
			 info->name ? info->name : "no name");
	}
	gw_device_seen(dev, info->name, info->rssi, adv_json(info));
}

static void ble_lost(struct ble_manager *mgr, const char *address, void *user_data)
{
	struct daemon *d = user_data;
	struct gw_device *dev = gw_device_find(d->gw, address);

	if (dev)
		gw_device_lost(dev);
}

static void ble_service(struct ble_manager *mgr, bool up, void *user_data)
{
	if (up)
		log_notice("ble: bluetoothd is available");
	else
		log_warn("ble: bluetoothd went away; waiting for it to come back");
}

struct restore {
	char **ids, **names;
	size_t n;
};

static void collect_ble_device(const struct gw_store_device *sd,
			       uint16_t udp_port, void *user_data)
{
	struct restore *r = user_data;

	if (!sd->transport || strcmp(sd->transport, "ble"))
		return;
	r->ids = xrealloc(r->ids, (r->n + 1) * sizeof(char *));
	r->names = xrealloc(r->names, (r->n + 1) * sizeof(char *));
	r->ids[r->n] = xstrdup(sd->id);
	r->names[r->n++] = sd->name ? xstrdup(sd->name) : NULL;
}

static void restore_ble_device(struct daemon *d, const char *id, const char *name)
{
	struct gw_device *dev;
	struct link *link;

	if (gw_device_find(d->gw, id) ||
	    !gw_config_ble_allowed(gw_config(d->gw), id, name))
		return;
	link = ble_manager_link(d->ble, id);
	if (!link)
		return;
	dev = gw_registry_add(gw_registry_of(d->gw), id, name, link, false,
			      pinned_ble_port(gw_config(d->gw), id));
	if (dev)
		gw_device_set_absent(dev);
}

/* Watches managed before keep their endpoints from the start, before they
 * are seen again: a client may use the port at once (the link connects
 * when the watch shows up). Collected first: adding writes to the store. */
static void restore_ble_devices(struct daemon *d)
{
	struct restore r = { 0 };

	if (!gw_store(d->gw))
		return;
	gw_store_device_foreach(gw_store(d->gw), collect_ble_device, &r);
	for (size_t i = 0; i < r.n; i++) {
		restore_ble_device(d, r.ids[i], r.names[i]);
		free(r.ids[i]);
		free(r.names[i]);
	}
	free(r.ids);
	free(r.names);
}

static int start_ble(struct daemon *d)
{
	const struct gw_config *cfg = gw_config(d->gw);
	const struct ble_manager_opts opts = {
		.bus_address = cfg->ble.bus,
		.adapters = cfg->ble.adapters,
		.max_conn_per_adapter = cfg->ble.max_connections_per_adapter,
		.idle_timeout_ms = cfg->ble.idle_timeout_ms,
		.connect_timeout_ms = cfg->ble.connect_timeout_ms,
		.prefer_acquire = cfg->ble.prefer_acquire,
	};
	static const struct ble_manager_callbacks cbs = {
		.device_seen = ble_seen, .device_lost = ble_lost,
		.service = ble_service,
	};
	int err = 0;

	if (!cfg->ble.enabled)
		return 0;
	d->ble = ble_manager_new(d->base, &opts, &cbs, d, &err);
	if (!d->ble) {
		log_err("ble: cannot start (%s); continuing without Bluetooth",
			strerror(-err));
		return 0;
	}
	restore_ble_devices(d);
	return 0;
}
#else
static int start_ble(struct daemon *d)
{
	if (gw_config(d->gw)->ble.enabled)
		log_notice("ble: this smpgwd was built without the BLE transport");
	return 0;
}
#endif

/* ---- signals ---- */

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	log_notice("signal %d: shutting down", (int)sig);
	event_base_loopexit(d->base, NULL);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct gw_config *cfg = NULL;
	char *err = NULL;
	int r;

	if (!d->config_path) {
		log_notice("SIGHUP: no config file to reload");
		return;
	}
	r = gw_config_load(d->config_path, &cfg, &err);
	if (r < 0) {
		log_err("SIGHUP: %s: %s; keeping the current devices", d->config_path,
			err ? err : strerror(-r));
		free(err);
		return;
	}
	log_notice("SIGHUP: reloading the device list from %s", d->config_path);
	gw_reload_devices(d->gw, cfg);
}

static void add_signals(struct daemon *d)
{
	d->sig_term = evsignal_new(d->base, SIGTERM, on_stop, d);
	d->sig_int = evsignal_new(d->base, SIGINT, on_stop, d);
	d->sig_hup = evsignal_new(d->base, SIGHUP, on_hup, d);
	event_add(d->sig_term, NULL);
	event_add(d->sig_int, NULL);
	event_add(d->sig_hup, NULL);
	/* A UDP client or HTTP peer that went away must not kill us. */
	signal(SIGPIPE, SIG_IGN);
}

/* ---- setup / teardown ---- */

static int start(struct daemon *d, struct gw_config *cfg)
{
	struct gw_store *store;
	char *err = NULL;
	int r = 0;

	gw_log_set_level(cfg->general.log_level);
	store = gw_store_open(cfg->general.state_dir, &r, &err);
	if (!store) {
		log_err("store in %s: %s", cfg->general.state_dir,
			err ? err : strerror(-r));
		free(err);
		gw_config_free(cfg);
		return r;
	}
	d->ports_path = xasprintf("%s/ports.json", cfg->general.state_dir);
	d->gw = gw_new(d->base, cfg, store);
	gw_set_time_offset(d->gw, d->time_offset_ms); /* --time-offset-ms */
	d->metrics = gw_metrics_new();
	gw_set_metrics(d->gw, d->metrics);
	d->udp = gw_udpface_new(d->gw);
	gw_udpface_set_changed_cb(d->udp, ports_changed, d);
	gw_add_config_devices(d->gw);
	ports_changed(d->udp, d);
	r = start_ble(d);
	if (r < 0)
		return r;
	/* Upload engine: loads unfinished jobs from the store and resumes them. */
	d->engine = gw_engine_new(d->gw, &r);
	if (!d->engine)
		return r;
	/* Rollout scheduler: reconciles its devices with the engine's jobs,
	 * then continues the unfinished rollouts (rollouts.c). */
	d->rollouts = gw_rollouts_new(d->gw, &r);
	if (!d->rollouts)
		return r;

	/*
	 * REST API: the http engineer's http_server_new(gw, &err) goes here
	 * (built when SMPGW_HAVE_HTTP is defined by src/gateway/meson.build).
	 */
#ifdef SMPGW_HAVE_HTTP
	d->http = http_server_new(d->gw, &r);
	if (!d->http)
		return r;
#endif
	add_signals(d);
	log_notice("smpgwd %s running: %zu devices, state in %s", SMPGW_VERSION,
		   gw_device_count(d->gw), cfg->general.state_dir);
	return 0;
}

static void stop(struct daemon *d)
{
#ifdef SMPGW_HAVE_HTTP
	d->http = http_server_free(d->http);
#endif
	/* Rollouts before the engine: they cancel their probes; jobs stay. */
	d->rollouts = gw_rollouts_free(d->rollouts);
	/* The engine before the devices: it cancels its own requests. */
	d->engine = gw_engine_free(d->engine);
	/* The face first: it cancels its requests before devices go. */
	d->udp = gw_udpface_free(d->udp);
	d->gw = gw_free(d->gw);
	d->metrics = gw_metrics_free(d->metrics);
#ifdef SMPGW_HAVE_BLE
	d->ble = ble_manager_free(d->ble);
#endif
	if (d->sig_term)
		event_free(d->sig_term);
	if (d->sig_int)
		event_free(d->sig_int);
	if (d->sig_hup)
		event_free(d->sig_hup);
	free(d->ports_path);
	free(d->config_path);
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct daemon d = { 0 };
	struct gw_config *cfg;
	int r;

	if (parse_args(argc, argv, &o) < 0 || load_config(&o, &cfg) < 0)
		return 2;
	if (o.time_offset) { /* --time-offset-ms: whole milliseconds, may be negative */
		char *end = NULL;

		errno = 0;
		d.time_offset_ms = strtoll(o.time_offset, &end, 10);
		if (errno || !*o.time_offset || *end) {
			fprintf(stderr, "smpgwd: bad value for --time-offset-ms: %s\n",
				o.time_offset);
			gw_config_free(cfg);
			return 2;
		}
	}
	d.config_path = o.config ? realpath(o.config, NULL) : NULL;
	d.base = event_base_new();
	if (!d.base) {
		fprintf(stderr, "smpgwd: cannot create the event loop\n");
		gw_config_free(cfg);
		return 1;
	}
	r = start(&d, cfg);
	if (r == 0)
		event_base_dispatch(d.base);
	stop(&d);
	event_base_free(d.base);
	if (r == 0)
		log_notice("stopped");
	return r < 0 ? 1 : 0;
}
