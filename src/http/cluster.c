/* SPDX-License-Identifier: MIT */
/*
 * Several gateways, one fleet (cluster.h, docs/multi-gateway.md):
 * GET /api/v1/gateways (the registry), and the watches of the shared store
 * this gateway does not manage, for GET /api/v1/devices and
 * GET /api/v1/devices/{id}: their holder's last published view with
 * "held_by" (the live lease's holder, null when nobody holds the watch)
 * and "view" (which gateway published it, when, how old it is).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cluster.h"
#include "gateway/device.h"
#include "gateway/gateway.h"
#include "gateway/lease.h"
#include "http/devfilter.h"
#include "http/handlers.h"
#include "http/http.h"
#include "util/util.h"

static void gateway_one(const struct gw_cluster_gateway *g, void *user_data)
{
	json_array_append_new(user_data, json_pack("{s:s, s:s?, s:I, s:I, s:b, s:b}",
		"id", g->id, "url", g->url, "started_ms", (json_int_t)g->started_ms,
		"last_seen_ms", (json_int_t)g->last_seen_ms, "alive", g->alive,
		"self", g->self));
}

int gateways_list(struct http_req *req)
{
	struct gw_cluster *c = gw_cluster(http_req_gw(req));
	json_t *out = json_array();
	int r = c ? gw_cluster_gateways(c, NULL, gateway_one, out) : 0;

	if (r < 0) {
		json_decref(out);
		if (r == -ENOTCONN || r == -ETIMEDOUT)
			r = -EHOSTDOWN; /* 503 store-unavailable */
		return http_reply_problem(req, r, "cannot read the gateway registry "
					  "from the store"), 0;
	}
	http_reply_json(req, 200, json_pack("{s:o, s:I, s:s?}", "gateways", out, "count",
					    (json_int_t)json_array_size(out), "self",
					    gw_cluster_id(c)));
	return 0;
}

/* A view larger than this is not one a gateway wrote (a corrupted row). */
#define VIEW_MAX (64u * 1024u)

/* A watch as the store knows it: the holder's view, or the device row (a
 * view that is not a JSON object, or too large, is ignored). */
static json_t *watch_json(struct gw *gw, const struct gw_cluster_watch *w)
{
	json_t *j = w->view_json && strlen(w->view_json) <= VIEW_MAX ?
		    json_loads(w->view_json, 0, NULL) : NULL;
	uint64_t now = gw_now_ms(gw);

	if (json_is_object(j)) {
		/* The row's id is the watch's, whatever the view says. */
		json_object_set_new(j, "id", json_string(w->id));
	} else {
		json_decref(j);
		j = json_pack("{s:s, s:s?, s:s?, s:n}", "id", w->id, "name", w->name,
			      "transport", w->transport, "link_state");
		json_object_set_new(j, "rssi", w->rssi == 127 ? json_null() :
				    json_integer(w->rssi));
		json_object_set_new(j, "last_seen", w->last_seen_ms ?
				    json_integer((json_int_t)w->last_seen_ms) : json_null());
	}
	json_object_set_new(j, "held_by", w->held_by ? json_string(w->held_by) : json_null());
	json_object_set_new(j, "view", !w->view_json ? json_null() :
		json_pack("{s:s?, s:I, s:I}", "gateway", w->view_by, "time_ms",
			  (json_int_t)w->view_ms, "age_ms",
			  (json_int_t)(now > w->view_ms ? now - w->view_ms : 0)));
	return j;
}

struct remote_ctx {
	struct gw *gw;
	const struct devices_filter *f;
	json_t *out;
};

static void remote_one(const struct gw_cluster_watch *w, void *user_data)
{
	struct remote_ctx *c = user_data;
	json_t *j;

	if (gw_device_find(c->gw, w->id))
		return; /* managed here: listed from the registry */
	j = watch_json(c->gw, w);
	if (j && (!c->f || devices_filter_match(c->f, j)))
		json_array_append(c->out, j);
	json_decref(j);
}

void http_fleet_remote(struct http_req *req, const struct devices_filter *f, json_t *out)
{
	struct remote_ctx c = { http_req_gw(req), f, out };
	struct gw_cluster *cl = gw_cluster(c.gw);

	if (cl)
		gw_cluster_watches(cl, NULL, remote_one, &c);
}

json_t *http_fleet_view(struct http_req *req, const char *id)
{
	json_t *out = json_array(), *j;
	struct remote_ctx c = { http_req_gw(req), NULL, out };
	struct gw_cluster *cl = gw_cluster(c.gw);

	if (cl && id)
		gw_cluster_watches(cl, id, remote_one, &c);
	j = json_incref(json_array_get(out, 0));
	json_decref(out);
	return j;
}

struct holder_ctx {
	char *holder;
	bool found;
};

static void holder_one(const struct gw_cluster_watch *w, void *user_data)
{
	struct holder_ctx *h = user_data;

	if (h->found)
		return; /* the id's own row comes first; then a name's */
	h->found = true;
	h->holder = w->held_by ? xstrdup(w->held_by) : NULL;
}

int http_fleet_holder(struct http_req *req, const char *id_or_name, char **holder)
{
	struct gw *gw = http_req_gw(req);
	struct gw_cluster *c = gw_cluster(gw);
	struct holder_ctx h = { 0 };

	int r = c ? gw_cluster_watches(c, id_or_name, holder_one, &h) : -ENOENT;

	if (r == -ENOTCONN || r == -ETIMEDOUT)
		return r; /* the store is away: nobody to ask */
	/* A watch whose row the holder did not write yet: its lease. */
	if (r < 0 || !h.found)
		return gw_lease_holder(gw, id_or_name, holder);
	if (!h.holder)
		return -ENOENT;
	*holder = h.holder;
	return 0;
}
