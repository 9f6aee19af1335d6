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

#include <arpa/inet.h>
#include <event2/event.h>
#include <libpq-fe.h>

#include "gateway/cluster.h" /* several gateways: registry, events, views */
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/jobs.h" /* upload engine */
#include "gateway/lease.h" /* leases on watches between gateways */
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/reach.h" /* leases of configured UDP/serial devices */
#include "gateway/registry/registry.h"
#include "gateway/rollouts.h" /* rollout scheduler */
#include "gateway/store.h"
#include "gateway/udpface.h"
#include "util/util.h"
#include "smpgw/adv.h"

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
	struct gw_cluster *cluster; /* several gateways on PostgreSQL; NULL: one */
	struct gw_metrics *metrics; /* before any device: frames from the start */
	int64_t time_offset_ms;  /* --time-offset-ms: shifts gw_now_ms() */
	char *config_path;
	char *ports_path;
	struct event *sig_term, *sig_int, *sig_hup;
#ifdef SMPGW_HAVE_BLE
	struct ble_manager *ble;
	/* The bus was unreachable: ble_manager_new() again after a backoff. */
	struct event *ble_retry;
	uint32_t ble_retry_ms;
	int ble_err;             /* the last attempt's error (logged on change) */
	unsigned ble_attempts;
	/* Watches seen advertising but not managed (allowlist): a SIGHUP that
	 * admits them picks them up without waiting for new advertising. */
	struct ble_unmanaged *unmanaged;
	size_t n_unmanaged;
#endif
	/* [gateway] id: a watch (and a configured UDP/serial device) is
	 * managed only while this gateway holds its lease (lease.h,
	 * docs/multi-gateway.md); NULL: no leases. */
	struct gw_lease *lease;
	struct gw_reach *reach; /* what configured devices this gateway reaches */
	struct event *leftover_ev; /* every lease round: leftover links */
	/* Lease changes of one round, applied together (lease_apply_cb): one
	 * reload for all of them, not one each (a reload walks every device
	 * and the store's list: O(n^2) per round when many leases move). */
	struct event *lease_ev;
	char **adopt;    /* now held here: their jobs adopted after the reload */
	size_t n_adopt;
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

/* The smpgw advertising record in the manufacturer data, decoded into
 * *rec; NULL when there is none or it is malformed (the raw bytes stay in
 * the advertising JSON). */
static const struct smpgw_adv *adv_record(const struct ble_device_info *info,
					  struct smpgw_adv *rec)
{
	if (!info->mfr_data || info->mfr_id != SMPGW_ADV_COMPANY_ID ||
	    smpgw_adv_decode(info->mfr_data, info->mfr_len, rec) < 0)
		return NULL;
	return rec;
}

/* Bounded: a crowd of foreign watches must not grow the daemon forever. */
#define MAX_UNMANAGED 1024

struct ble_unmanaged {
	char *address, *name;
	int rssi;
};

static struct ble_unmanaged *unmanaged_find(struct daemon *d, const char *address)
{
	for (size_t i = 0; i < d->n_unmanaged; i++)
		if (!strcasecmp(d->unmanaged[i].address, address))
			return &d->unmanaged[i];
	return NULL;
}

static void unmanaged_note(struct daemon *d, const char *address,
			   const char *name, int rssi)
{
	struct ble_unmanaged *u = unmanaged_find(d, address);

	if (!u) {
		if (d->n_unmanaged == MAX_UNMANAGED)
			return;
		log_debug("ble: %s (%s) seen, not managed ([ble] manage/allow)",
			  address, name ? name : "no name");
		d->unmanaged = xrealloc(d->unmanaged,
					(d->n_unmanaged + 1) * sizeof(*d->unmanaged));
		u = &d->unmanaged[d->n_unmanaged++];
		u->address = xstrdup(address);
		u->name = NULL;
	}
	if (name) {
		free(u->name);
		u->name = xstrdup(name);
	}
	u->rssi = rssi;
}

static void unmanaged_drop(struct daemon *d, const char *address)
{
	struct ble_unmanaged *u = unmanaged_find(d, address);

	if (!u)
		return;
	free(u->address);
	free(u->name);
	*u = d->unmanaged[--d->n_unmanaged];
}

static void unmanaged_clear(struct daemon *d)
{
	while (d->n_unmanaged)
		unmanaged_drop(d, d->unmanaged[0].address);
	free(d->unmanaged);
	d->unmanaged = NULL;
}

/* The pairing policy of a managed watch ([ble] pairing, pair_allow,
 * pair_first, rebond); name globs match the name it advertises. */
static void apply_pairing(struct daemon *d, struct link *link,
			  const char *address, const char *name)
{
	const struct gw_config *cfg = gw_config(d->gw);
	bool allowed, first;

	gw_config_ble_pairing(cfg, address, name, &allowed, &first);
	ble_link_set_pairing(link, allowed, first, cfg->ble.rebond);
}

/* The allowlist admits the watch and, with leases, this gateway holds it. */
static bool ble_admitted(struct daemon *d, const char *address, const char *name)
{
	return gw_config_ble_allowed(gw_config(d->gw), address, name) &&
	       (!d->lease || gw_lease_held(d->lease, address));
}

/* Registers a BLE watch the allowlist admits; NULL when it may not be. */
static struct gw_device *manage_ble(struct daemon *d, const char *address,
				    const char *name)
{
	struct gw_device *dev;
	struct link *link;

	if (!ble_admitted(d, address, name))
		return NULL;
	link = ble_manager_link(d->ble, address);
	if (!link)
		return NULL;
	apply_pairing(d, link, address, name);
	dev = gw_registry_add(gw_registry_of(d->gw), address, name, link, false,
			      pinned_ble_port(gw_config(d->gw), address));
	if (dev)
		unmanaged_drop(d, address);
	return dev;
}

static void ble_seen(struct ble_manager *mgr, const struct ble_device_info *info,
		     void *user_data)
{
	struct daemon *d = user_data;
	struct gw_device *dev = gw_device_find(d->gw, info->address);
	struct smpgw_adv rec;

	if (gw_config_ble_allowed(gw_config(d->gw), info->address, info->name)) {
		/* Only fresh hearings count (docs/multi-gateway.md): the RSSI
		 * of this advertisement, or this gateway's own link to it. */
		gw_lease_heard(d->lease, info->address, info->rssi_fresh ? info->rssi : 127);
		gw_lease_linked(d->lease, info->address,
				info->connected && gw_lease_held(d->lease, info->address));
	}
	if (!dev) {
		dev = manage_ble(d, info->address, info->name);
		if (!dev) {
			unmanaged_note(d, info->address, info->name, info->rssi);
			return;
		}
		log_info("ble: managing %s (%s)", info->address,
			 info->name ? info->name : "no name");
	} else if (info->name) {
		apply_pairing(d, gw_device_link(dev), info->address, info->name);
	}
	gw_device_seen(dev, info->name, info->rssi, adv_json(info),
		       adv_record(info, &rec));
}

static void ble_lost(struct ble_manager *mgr, const char *address, void *user_data)
{
	struct daemon *d = user_data;
	struct gw_device *dev = gw_device_find(d->gw, address);

	unmanaged_drop(d, address);
	gw_lease_unheard(d->lease, address);
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

	if (gw_device_find(d->gw, id))
		return;
	dev = manage_ble(d, id, name);
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

#define BLE_RETRY_MIN_MS 500
#define BLE_RETRY_MAX_MS 30000

static void ble_bus_lost(struct ble_manager *mgr, void *user_data);

/* Discovery that never starts is silent otherwise: say why, once per
 * failed call (the manager retries power-on and start by itself). */
static void ble_adapter_error(struct ble_manager *mgr, const char *adapter,
			      const char *what, int err, void *user_data)
{
	log_warn("ble: %s: %s failed: %s", adapter, what,
		 err == -EINPROGRESS ? "bluetoothd answered InProgress" : strerror(-err));
}

static int ble_connect(struct daemon *d)
{
	const struct gw_config *cfg = gw_config(d->gw);
	const struct ble_manager_opts opts = {
		.bus_address = cfg->ble.bus,
		.adapters = cfg->ble.adapters,
		.max_conn_per_adapter = cfg->ble.max_connections_per_adapter,
		.idle_timeout_ms = cfg->ble.idle_timeout_ms,
		.time_slice_ms = cfg->ble.time_slice_ms,
		.connect_timeout_ms = cfg->ble.connect_timeout_ms,
		.prefer_acquire = cfg->ble.prefer_acquire,
	};
	static const struct ble_manager_callbacks cbs = {
		.device_seen = ble_seen, .device_lost = ble_lost,
		.service = ble_service, .bus_lost = ble_bus_lost,
		.adapter_error = ble_adapter_error,
	};
	int err = -EIO;

	d->ble_attempts++;
	d->ble = ble_manager_new(d->base, &opts, &cbs, d, &err);
	if (!d->ble)
		return err;
	restore_ble_devices(d);
	return 0;
}

static const char *bus_name(const struct daemon *d)
{
	const char *bus = gw_config(d->gw)->ble.bus;

	return bus && strcmp(bus, "system") ? bus : "the system bus";
}

static void ble_schedule_retry(struct daemon *d)
{
	struct timeval tv;

	d->ble_retry_ms = d->ble_retry_ms ? MIN(d->ble_retry_ms * 2, BLE_RETRY_MAX_MS) :
					    BLE_RETRY_MIN_MS;
	tv.tv_sec = d->ble_retry_ms / 1000;
	tv.tv_usec = (d->ble_retry_ms % 1000) * 1000;
	evtimer_add(d->ble_retry, &tv);
}

/* The bus was unreachable: try again, logging only when the reason
 * changes or the bus appears (not at every attempt). */
static void ble_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	int err;

	/* The bus went away after start: the same manager (its links and
	 * the devices on them kept) reconnects; else one is created. */
	if (d->ble) {
		d->ble_attempts++;
		err = ble_manager_reconnect(d->ble);
	} else {
		err = ble_connect(d);
	}
	if (err == 0) {
		log_notice("ble: %s is reachable after %u attempts; Bluetooth is on",
			   bus_name(d), d->ble_attempts);
		d->ble_retry_ms = 0;
		return;
	}
	if (err != d->ble_err) {
		log_warn("ble: %s still unreachable, now: %s; retrying with backoff",
			 bus_name(d), strerror(-err));
		d->ble_err = err;
	} else {
		log_debug("ble: attempt %u: %s", d->ble_attempts, strerror(-err));
	}
	ble_schedule_retry(d);
}

static int start_ble(struct daemon *d)
{
	int err;

	if (!gw_config(d->gw)->ble.enabled)
		return 0;
	err = ble_connect(d);
	if (err == 0)
		return 0;
	log_warn("ble: cannot reach %s (%s); Bluetooth is off until it appears "
		 "(retrying with backoff up to %d s)", bus_name(d), strerror(-err),
		 BLE_RETRY_MAX_MS / 1000);
	d->ble_err = err;
	d->ble_retry = evtimer_new(d->base, ble_retry_cb, d);
	ble_schedule_retry(d);
	return 0;
}

/* The bus daemon itself went away (not only bluetoothd): reconnect through
 * the same backoff as an unreachable bus at start. Only schedules: this
 * runs inside the connection's dispatch. */
static void ble_bus_lost(struct ble_manager *mgr, void *user_data)
{
	struct daemon *d = user_data;

	log_warn("ble: lost the connection to %s; reconnecting with backoff up to %d s",
		 bus_name(d), BLE_RETRY_MAX_MS / 1000);
	d->ble_err = -ECONNRESET;
	d->ble_attempts = 0;
	d->ble_retry_ms = 0;
	if (!d->ble_retry)
		d->ble_retry = evtimer_new(d->base, ble_retry_cb, d);
	ble_schedule_retry(d);
}

static void release_ble(struct gw_device *dev, void *user_data)
{
	struct daemon *d = user_data;
	const struct gw_config *cfg = gw_config(d->gw);
	char *id, *name;

	if (strcmp(gw_device_transport(dev), "ble"))
		return;
	if (ble_admitted(d, gw_device_id(dev), gw_device_name(dev))) {
		apply_pairing(d, gw_device_link(dev), gw_device_id(dev),
			      gw_device_name(dev));
		return;
	}
	id = xstrdup(gw_device_id(dev));
	name = xstrdup(gw_device_name(dev));
	if (gw_config_ble_allowed(cfg, id, name))
		log_notice("ble: %s (%s) is held by another gateway: released", id, name);
	else
		log_notice("ble: %s (%s) is no longer allowed: released", id, name);
	/* The registry first: it detaches from the link the manager frees. */
	gw_registry_remove(gw_registry_of(d->gw), dev);
	ble_manager_forget(d->ble, id);
	unmanaged_note(d, id, name, 127);
	free(id);
	free(name);
}

/* SIGHUP, after the new allowlist is in place: watches it no longer admits
 * are released (endpoint closed, link closed, device.removed); watches it
 * now admits are managed, whether seen advertising or known from the
 * store. */
static void reload_ble(struct daemon *d)
{
	struct ble_unmanaged *list;
	size_t n;

	if (!d->ble)
		return;
	gw_device_foreach(d->gw, release_ble, d);
	/* A copy: managing a watch drops it from the list. */
	n = d->n_unmanaged;
	list = xmemdup(d->unmanaged, n * sizeof(*list));
	for (size_t i = 0; i < n; i++) {
		struct gw_device *dev = gw_device_find(d->gw, list[i].address) ? NULL :
					manage_ble(d, list[i].address, list[i].name);

		if (!dev)
			continue;
		log_notice("ble: managing %s (%s): allowed by the reload", gw_device_id(dev),
			   gw_device_name(dev));
		if (list[i].rssi != 127)
			gw_device_seen(dev, NULL, list[i].rssi, NULL, NULL);
		else
			gw_device_set_absent(dev);
	}
	free(list);
	restore_ble_devices(d);
}

static void stop_ble(struct daemon *d)
{
	if (d->ble_retry)
		event_free(d->ble_retry);
	d->ble_retry = NULL;
	d->ble = ble_manager_free(d->ble);
	unmanaged_clear(d);
}
#else
static int start_ble(struct daemon *d)
{
	if (gw_config(d->gw)->ble.enabled)
		log_notice("ble: this smpgwd was built without the BLE transport");
	return 0;
}

static void reload_ble(struct daemon *d)
{
}

static void stop_ble(struct daemon *d)
{
}
#endif

/* ---- several gateways (cluster.h) ---- */

static void start_cluster(struct daemon *d)
{
	const struct gw_config *cfg = gw_config(d->gw);
	struct gw_cluster_params p = {
		.gateway_id = cfg->gateway.id,
		.ttl_ms = cfg->gateway.lease_ttl_ms,
	};

	d->cluster = gw_cluster_new(d->gw, &p);
	if (d->cluster)
		log_notice("cluster: gateway %s shares its events and devices with the "
			   "other gateways of the store", cfg->gateway.id);
}

/* The URL the other gateways forward requests for this gateway's watches
 * to: [gateway] url, else the REST API's bound address when it names one. */
static void set_cluster_url(struct daemon *d)
{
	const char *url = gw_config(d->gw)->gateway.url;

	if (!d->cluster)
		return;
#ifdef SMPGW_HAVE_HTTP
	if (!url && d->http)
		url = http_server_url(d->http);
#endif
	if (url)
		log_notice("cluster: the other gateways reach this one at %s", url);
	else
		log_warn("cluster: no [gateway] url and the REST API listens on no "
			 "specific address: the other gateways cannot forward requests "
			 "for the watches held here (they answer 421 held-elsewhere); "
			 "set [gateway] url");
	gw_cluster_set_url(d->cluster, url);
}

/* ---- leases (watches and configured devices) ---- */

/* A configured UDP/serial device is registered only while held here. */
static bool config_admitted(const char *name, void *user_data)
{
	struct daemon *d = user_data;

	return gw_lease_held(d->lease, name);
}

static void reach_changed(const char *name, bool reachable, void *user_data)
{
	struct daemon *d = user_data;

	if (reachable) {
		gw_lease_heard(d->lease, name, GW_REACH_RSSI);
		gw_lease_linked(d->lease, name, true); /* heard until unreachable */
	} else
		gw_lease_unheard(d->lease, name);
}

/* This gateway gained or lost a lease: for a watch the same passes as a
 * reload (release what is no longer admitted, manage what now is); a
 * configured device is registered or released. */
static void lease_apply_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	char **adopt = d->adopt;
	size_t n = d->n_adopt;

	d->adopt = NULL;
	d->n_adopt = 0;
	reload_ble(d);
	if (n)
		gw_add_config_devices(d->gw);
	for (size_t i = 0; i < n; i++) {
		/* Still held (a later change of the round may have let it go). */
		if (d->engine && gw_lease_held(d->lease, adopt[i]))
			gw_engine_adopt(d->engine, adopt[i]);
		free(adopt[i]);
	}
	free(adopt);
}

static void lease_changed(const char *device_id, bool held, void *user_data)
{
	struct daemon *d = user_data;

	/* Jobs follow the watch: handed over before it is released, adopted
	 * once it is managed. The reload is done once for the round's
	 * changes, right after the round (lease_apply_cb). */
	if (!held && d->engine)
		gw_engine_hand_over(d->engine, device_id);
	if (!held)
		gw_release_config_device(d->gw, device_id, "is held by another gateway");
	if (held) {
		d->adopt = xrealloc(d->adopt, (d->n_adopt + 1) * sizeof(*d->adopt));
		d->adopt[d->n_adopt++] = xstrdup(device_id);
	}
	if (!d->lease_ev)
		d->lease_ev = evtimer_new(d->base, lease_apply_cb, d);
	event_active(d->lease_ev, EV_TIMEOUT, 0);
}

#ifdef SMPGW_HAVE_BLE
/* A watch of the fleet connected on this gateway's adapter without a link
 * of this smpgwd, and not held here: a link a previous smpgwd left (killed
 * while its bluetoothd kept the connection). The watch does not advertise
 * while connected, so nobody else could hear or connect it: disconnect. */
static void leftover_link(const struct ble_device_info *info, void *user_data)
{
	struct daemon *d = user_data;
	const struct gw_config *cfg = gw_config(d->gw);
	char *holder = NULL;
	int r;

	if (!gw_config_ble_allowed(cfg, info->address, info->name) ||
	    gw_lease_held(d->lease, info->address))
		return;
	r = gw_lease_holder(d->gw, info->address, &holder);
	if (r == 0 && !strcmp(holder, cfg->gateway.id)) {
		free(holder); /* this gateway's lease: its round renews it */
		return;
	}
	if (r < 0 && r != -ENOENT)
		return; /* the store unreachable: decide next round */
	r = ble_manager_disconnect(d->ble, info->address);
	log_notice("ble: %s is connected on %s but not held here (%s%s): a leftover link,"
		   " disconnected%s%s", info->address, info->adapter ? info->adapter : "?",
		   holder ? "held by " : "held by nobody", holder ? holder : "",
		   r < 0 ? ": " : "", r < 0 ? strerror(-r) : "");
	free(holder);
}

static void leftover_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	if (d->ble && d->lease)
		ble_manager_foreach_unowned(d->ble, leftover_link, d);
}
#endif

static void start_lease(struct daemon *d)
{
	const struct gw_config *cfg = gw_config(d->gw);
	struct gw_lease_params p = {
		.gateway_id = cfg->gateway.id,
		.ttl_ms = cfg->gateway.lease_ttl_ms,
		.hysteresis_db = (int)cfg->gateway.lease_hysteresis_db,
	};
	uint32_t round_ms;

	if (!cfg->gateway.id)
		return;
	d->lease = gw_lease_new(d->gw, &p, lease_changed, d);
	if (!d->lease)
		return;
	log_notice("lease: gateway %s: watches and configured devices are managed while held "
		   "(ttl %u ms, hysteresis %u dB)", cfg->gateway.id,
		   cfg->gateway.lease_ttl_ms, cfg->gateway.lease_hysteresis_db);
	/* Configured devices: heard while reachable, probed every lease round;
	 * unreachable after a lease's worth of silence (3 rounds). */
	round_ms = (cfg->gateway.lease_ttl_ms ? cfg->gateway.lease_ttl_ms : 15000) / 3;
	gw_set_config_admit(d->gw, config_admitted, d);
	d->reach = gw_reach_new(d->gw, round_ms, 3, reach_changed, d);
#ifdef SMPGW_HAVE_BLE
	{
		struct timeval tv = { round_ms / 1000, (round_ms % 1000) * 1000 };

		d->leftover_ev = event_new(d->base, -1, EV_PERSIST, leftover_cb, d);
		event_add(d->leftover_ev, &tv);
	}
#endif
}

/* Before the store goes: a clean stop hands the watches over at once. */
static void stop_lease(struct daemon *d)
{
	if (d->leftover_ev)
		event_free(d->leftover_ev);
	d->leftover_ev = NULL;
	if (d->lease_ev)
		event_free(d->lease_ev);
	d->lease_ev = NULL;
	for (size_t i = 0; i < d->n_adopt; i++)
		free(d->adopt[i]);
	free(d->adopt);
	d->adopt = NULL;
	d->n_adopt = 0;
	d->reach = gw_reach_free(d->reach);
	d->lease = gw_lease_free(d->lease);
}

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
	gw_reach_reload(d->reach);
	reload_ble(d);
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

/* Whether one entry of conninfo's host list is a name libpq must resolve
 * (not a socket directory, not an IPv4/IPv6 address). */
static bool pg_host_is_name(const char *h, size_t n)
{
	char buf[64];
	struct in6_addr a;

	if (!n || h[0] == '/' || h[0] == '@')
		return false;
	if (n >= sizeof(buf))
		return true;
	memcpy(buf, h, n);
	buf[n] = '\0';
	return inet_pton(AF_INET, buf, &a) != 1 && inet_pton(AF_INET6, buf, &a) != 1;
}

/* libpq resolves a host name blocking on each (re)connect, on the event
 * loop: warn when conninfo (or PGHOST) names the server without hostaddr. */
static void warn_pg_host_name(const char *conninfo)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", NULL);
	const char *host = NULL, *hostaddr = NULL;

	for (PQconninfoOption *o = opts; o && o->keyword; o++) {
		if (!strcmp(o->keyword, "host") && o->val && *o->val)
			host = o->val;
		else if (!strcmp(o->keyword, "hostaddr") && o->val && *o->val)
			hostaddr = o->val;
	}
	if (!host)
		host = getenv("PGHOST");
	if (!hostaddr)
		hostaddr = getenv("PGHOSTADDR");
	for (const char *h = host; opts && h && (!hostaddr || !*hostaddr) && *h;) {
		size_t n = strcspn(h, ",");

		if (pg_host_is_name(h, n)) {
			log_warn("store: conninfo names the server by host name (%.*s) without"
				 " hostaddr=: libpq resolves it blocking on every reconnect, so a"
				 " DNS outage can stall this gateway; give its IP address or add"
				 " hostaddr= (docs/multi-gateway.md)", (int)(n > 200 ? 200 : n), h);
			break;
		}
		h += n + (h[n] == ',');
	}
	PQconninfoFree(opts);
}

static int start(struct daemon *d, struct gw_config *cfg)
{
	struct gw_store *store;
	char *err = NULL;
	int r = 0;

	gw_log_set_level(cfg->general.log_level);
	if (cfg->store.backend == GW_STORE_POSTGRESQL) {
		warn_pg_host_name(cfg->store.conninfo);
		store = gw_store_open_pg(cfg->store.conninfo, &r, &err);
	} else
		store = gw_store_open(cfg->general.state_dir, &r, &err);
	if (!store) {
		if (cfg->store.backend == GW_STORE_POSTGRESQL)
			log_err("store: %s", err ? err : strerror(-r));
		else
			log_err("store in %s: %s", cfg->general.state_dir,
				err ? err : strerror(-r));
		free(err);
		gw_config_free(cfg);
		return r;
	}
	gw_store_set_timeout(store, cfg->store.timeout_ms);
	gw_store_set_loop(store, d->base); /* reconnects never block the loop */
	log_info("store: %s, schema version %d",
		 gw_store_backend_name(gw_store_backend(store)),
		 gw_store_schema_version(store));
	/* SQLite made the state directory; on PostgreSQL it may not exist yet
	 * (ports.json lives there) */
	if (mkdir(cfg->general.state_dir, 0750) < 0 && errno != EEXIST)
		log_warn("state directory %s: %s", cfg->general.state_dir, strerror(errno));
	d->ports_path = xasprintf("%s/ports.json", cfg->general.state_dir);
	d->gw = gw_new(d->base, cfg, store);
	gw_set_time_offset(d->gw, d->time_offset_ms); /* --time-offset-ms */
	d->metrics = gw_metrics_new();
	gw_set_metrics(d->gw, d->metrics);
	d->udp = gw_udpface_new(d->gw);
	gw_udpface_set_changed_cb(d->udp, ports_changed, d);
	start_lease(d); /* before the configured devices: they may be leased */
	gw_add_config_devices(d->gw);
	ports_changed(d->udp, d);
	start_cluster(d);
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
	set_cluster_url(d);
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
	/* Leases given up and devices removed while the cluster still shares
	 * events: it writes the last ones (device.disconnected/removed) to the
	 * store as it goes, in one transaction bounded by the store timeout
	 * (skipped at once when the store is known down). */
	stop_lease(d);
	gw_remove_devices(d->gw);
	d->cluster = gw_cluster_free(d->cluster);
	d->gw = gw_free(d->gw);
	d->metrics = gw_metrics_free(d->metrics);
	stop_ble(d);
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
