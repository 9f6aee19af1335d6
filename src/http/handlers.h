/* SPDX-License-Identifier: MIT */
/*
 * Handlers of every resource file, listed for the route table in routes.c.
 * One block per file; a new resource adds its block here.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "http/http.h"

/* devices.c */
int devices_list(struct http_req *req);
int devices_get(struct http_req *req);
/* A watch another gateway holds (docs/multi-gateway.md): replies 421
 * "held-elsewhere" with "held_by" and returns true; false otherwise. */
bool http_reply_held_elsewhere(struct http_req *req, const char *id);
int dev_echo(struct http_req *req);
int dev_reset(struct http_req *req);
int dev_image_state(struct http_req *req);
int dev_image_test(struct http_req *req);
int dev_image_confirm(struct http_req *req);
int dev_erase(struct http_req *req);
int dev_params(struct http_req *req);
int dev_info(struct http_req *req);
int dev_datetime_get(struct http_req *req);
int dev_datetime_set(struct http_req *req);
int dev_stats_list(struct http_req *req);
int dev_stats_get(struct http_req *req);

/* forward.c: a request for a watch another gateway holds goes to that
 * gateway. HTTP_PENDING when forwarded (or 0 after a reply); 0 without a
 * reply: the route's handler answers. */
int http_forward(struct http_req *req);
/* Frees the connections of finished forwards not freed yet (the server's
 * teardown, after every request completed). Accepts NULL; returns NULL. */
struct http_forwarder *http_forwarder_free(struct http_forwarder *fw);

/* cluster.c (several gateways: cluster.h) */
int gateways_list(struct http_req *req);
/* Appends the watches of the shared store this gateway does not manage
 * (their holder's last view, "held_by", "view") that pass f to out. */
struct devices_filter;
void http_fleet_remote(struct http_req *req, const struct devices_filter *f, json_t *out);
/* The gateway holding the watch id_or_name (its id or name) in a new
 * string, -ENOENT when none does, or another negative errno. */
int http_fleet_holder(struct http_req *req, const char *id_or_name, char **holder);
/* The store's view of one watch not managed here (by id or name), or NULL. */
json_t *http_fleet_view(struct http_req *req, const char *id);

/* smp.c: the generic passthrough, and the request helper the typed
 * operations share. */
int dev_smp(struct http_req *req);
/*
 * Turns the decoded response data (borrowed) into the reply body (new
 * reference), or returns NULL and sets *err to fail the request.
 */
typedef json_t *(*http_smp_shape)(struct http_req *req, json_t *data, int *err);
/* Sends one SMP request to the route's {id} device and replies: 200 with
 * shape(data) (or data itself when shape is NULL), 422 with the SMP error,
 * or the transport's errno. data is consumed (NULL: empty map). */
int http_smp_request(struct http_req *req, uint8_t op, uint16_t group,
		     uint8_t id, json_t *data, http_smp_shape shape);

/* images.c */
int images_upload(struct http_req *req);
int images_put(struct http_req *req);
int images_list(struct http_req *req);
int images_get(struct http_req *req);
int images_delete(struct http_req *req);

/* jobs.c (update jobs: the upload engine) */
int dev_update(struct http_req *req);
int jobs_list(struct http_req *req);
int jobs_get(struct http_req *req);
int jobs_cancel(struct http_req *req);

/* rollouts.c (fleet rollouts: gateway/rollouts.h) */
int rollouts_create(struct http_req *req);
int rollouts_list(struct http_req *req);
int rollouts_get(struct http_req *req);
int rollouts_pause(struct http_req *req);
int rollouts_resume(struct http_req *req);
int rollouts_cancel(struct http_req *req);
int rollouts_retry_failed(struct http_req *req);
int rollouts_report(struct http_req *req);
int rollouts_report_txt(struct http_req *req);

/* events.c (server-sent events) */
int events_stream(struct http_req *req);
int events_recent(struct http_req *req);

/* metrics.c */
int metrics_get(struct http_req *req);

/* openapi.c */
int openapi_get(struct http_req *req);

/* static.c (dashboard) */
int static_index(struct http_req *req);
int static_file(struct http_req *req);
