/* SPDX-License-Identifier: MIT */
/*
 * The daemon context (gateway.h): owns the configuration, the event bus,
 * the store and the device registry; borrows the event base and metrics.
 */
#include "gateway/gateway.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/events.h"
#include "gateway/log.h"
#include "gateway/registry/registry.h"
#include "gateway/store.h"
#include "links/serial.h"
#include "links/udp.h"
#include "util/util.h"

#define EVENT_HISTORY 1024

struct gw {
	struct event_base *base;
	struct gw_config *cfg;
	struct gw_events *events;
	struct gw_store *store;
	struct gw_metrics *metrics;
	struct gw_engine *engine; /* borrowed: registered by engine.c */
	struct gw_cluster *cluster; /* borrowed: registered by cluster.c */
	struct gw_rollouts *rollouts; /* borrowed: registered by rollouts.c */
	struct gw_registry *reg;
	int64_t time_offset_ms;
	/* leases: a configured device is registered only while admitted */
	gw_admit_fn admit;
	void *admit_data;
};


struct gw *gw_new(struct event_base *base, struct gw_config *cfg,
		  struct gw_store *store)
{
	struct gw *gw = xnew(struct gw);

	gw->base = base;
	gw->cfg = cfg;
	gw->store = store;
	gw->events = gw_events_new(EVENT_HISTORY);
	gw->reg = gw_registry_new(gw);
	return gw;
}

struct gw *gw_free(struct gw *gw)
{
	if (!gw)
		return NULL;
	/* Devices first: their requests' callbacks may still use the bus. */
	gw->reg = gw_registry_free(gw->reg);
	gw_events_free(gw->events);
	gw_store_free(gw->store);
	gw_config_free(gw->cfg);
	free(gw);
	return NULL;
}

void gw_remove_devices(struct gw *gw)
{
	if (gw)
		gw->reg = gw_registry_free(gw->reg);
}

struct gw_registry *gw_registry_of(struct gw *gw)
{
	return gw->reg;
}

struct event_base *gw_base(struct gw *gw)
{
	return gw->base;
}

const struct gw_config *gw_config(struct gw *gw)
{
	return gw->cfg;
}

struct gw_events *gw_events(struct gw *gw)
{
	return gw->events;
}

struct gw_store *gw_store(struct gw *gw)
{
	return gw->store;
}

struct gw_metrics *gw_metrics(struct gw *gw)
{
	return gw->metrics;
}

void gw_set_metrics(struct gw *gw, struct gw_metrics *metrics)
{
	gw->metrics = metrics;
}

void gw_set_engine(struct gw *gw, struct gw_engine *engine)
{
	gw->engine = engine;
}

struct gw_engine *gw_engine(struct gw *gw)
{
	return gw->engine;
}

void gw_set_cluster(struct gw *gw, struct gw_cluster *cluster)
{
	gw->cluster = cluster;
}

struct gw_cluster *gw_cluster(struct gw *gw)
{
	return gw->cluster;
}

void gw_set_rollouts(struct gw *gw, struct gw_rollouts *rollouts)
{
	gw->rollouts = rollouts;
}

struct gw_rollouts *gw_rollouts(struct gw *gw)
{
	return gw->rollouts;
}

void gw_set_time_offset(struct gw *gw, int64_t offset_ms)
{
	gw->time_offset_ms = offset_ms;
}

uint64_t gw_now_ms(struct gw *gw)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (uint64_t)((int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 +
			  gw->time_offset_ms);
}

/* ---- devices declared in the config ---- */

static struct link *config_link(struct gw *gw, const struct gw_device_conf *d,
				int *err)
{
	switch (d->transport) {
	case GW_TRANSPORT_UDP:
		return udp_link_new(gw->base, d->address, err);
	case GW_TRANSPORT_SERIAL:
		return serial_link_new(gw->base, d->path, d->baud, err);
	case GW_TRANSPORT_BLE:
		break;
	}
	*err = -EOPNOTSUPP;
	return NULL;
}

static void add_config_device(struct gw *gw, const struct gw_device_conf *d)
{
	struct link *link;
	int err = 0;

	/* BLE devices come from discovery; their section only pins a port
	 * and admits them through the allowlist. */
	if (d->transport == GW_TRANSPORT_BLE || gw_device_find(gw, d->name))
		return;
	if (gw->admit && !gw->admit(d->name, gw->admit_data))
		return;
	link = config_link(gw, d, &err);
	if (!link) {
		log_err("device \"%s\": %s", d->name, strerror(-err));
		return;
	}
	if (!gw_registry_add(gw->reg, d->name, d->name, link, true, d->udp_port)) {
		log_err("device \"%s\": id already in use", d->name);
		link_free(link);
	}
}

void gw_set_config_admit(struct gw *gw, gw_admit_fn admit, void *user_data)
{
	gw->admit = admit;
	gw->admit_data = user_data;
}

void gw_release_config_device(struct gw *gw, const char *name, const char *why)
{
	struct gw_device *dev = gw_device_find(gw, name);

	if (!dev || !strcmp(gw_device_transport(dev), "ble") ||
	    !gw_config_find_device(gw->cfg, name))
		return;
	log_notice("device \"%s\" %s: released", gw_device_id(dev), why);
	gw_registry_remove(gw->reg, dev);
}

void gw_add_config_devices(struct gw *gw)
{
	for (size_t i = 0; i < gw->cfg->n_devices; i++)
		add_config_device(gw, &gw->cfg->devices[i]);
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static bool same_device(const struct gw_device_conf *a,
			const struct gw_device_conf *b)
{
	return a->transport == b->transport && same_str(a->address, b->address) &&
	       same_str(a->path, b->path) && a->baud == b->baud &&
	       a->udp_port == b->udp_port;
}

#define SWAP(a, b) do { __typeof__(a) tmp_ = (a); (a) = (b); (b) = tmp_; } while (0)

int gw_reload_devices(struct gw *gw, struct gw_config *new_cfg)
{
	struct gw_config *cfg = gw->cfg;

	for (size_t i = 0; i < cfg->n_devices; i++) {
		const struct gw_device_conf *old = &cfg->devices[i];
		const struct gw_device_conf *now = gw_config_find_device(new_cfg,
									 old->name);
		struct gw_device *dev = gw_device_find(gw, old->name);

		if (dev && old->transport != GW_TRANSPORT_BLE &&
		    (!now || !same_device(old, now))) {
			log_notice("device \"%s\" removed by reload", old->name);
			gw_registry_remove(gw->reg, dev);
		}
	}
	SWAP(cfg->devices, new_cfg->devices);
	SWAP(cfg->n_devices, new_cfg->n_devices);
	SWAP(cfg->ble.allow, new_cfg->ble.allow);
	SWAP(cfg->ble.n_allow, new_cfg->ble.n_allow);
	SWAP(cfg->ble.manage_all, new_cfg->ble.manage_all);
	SWAP(cfg->ble.pairing, new_cfg->ble.pairing);
	SWAP(cfg->ble.pair_allow, new_cfg->ble.pair_allow);
	SWAP(cfg->ble.n_pair_allow, new_cfg->ble.n_pair_allow);
	SWAP(cfg->ble.pair_first, new_cfg->ble.pair_first);
	SWAP(cfg->ble.n_pair_first, new_cfg->ble.n_pair_first);
	SWAP(cfg->ble.rebond, new_cfg->ble.rebond);
	gw_config_free(new_cfg);
	gw_add_config_devices(gw);
	return 0;
}
