/* SPDX-License-Identifier: MIT */
/*
 * The REST/JSON API server: libmicrohttpd driven from the daemon's
 * libevent loop (no thread, no second loop). smpgwd's main creates one
 * after the gateway context and frees it before.
 */
#pragma once

#include <stdint.h>

struct gw;
struct http_server;

/*
 * Starts listening as the [http] section of gw_config(gw) says (listen,
 * token_file, tls_cert, tls_key, max_body, max_connections). Registers the
 * metrics registry with the gateway if none is set yet, and opens the image
 * store under the state directory. NULL and *err (negative errno) on
 * failure, after logging why.
 */
struct http_server *http_server_new(struct gw *gw, int *err);
/* Closes every connection (pending device requests are canceled, event
 * streams end). Accepts NULL; returns NULL. */
struct http_server *http_server_free(struct http_server *srv);
/* The bound TCP port (useful with port 0). */
uint16_t http_server_port(const struct http_server *srv);
/* The URL this server is reached at ("http://127.0.0.1:8080"), from the
 * bound address and port; NULL when it listens on a wildcard address
 * (0.0.0.0, ::), which names no host another machine could use. */
const char *http_server_url(const struct http_server *srv);
