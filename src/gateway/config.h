/* SPDX-License-Identifier: MIT */
/*
 * smpgwd configuration: an INI file (etc/smpgwd.conf documents every key)
 * parsed into a public struct that every module reads. Every key has a
 * default (gw_config_new_default()); command-line flags override after
 * parsing. Durations accept "ms", "s", "m" suffixes (bare numbers are
 * seconds).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_transport {
	GW_TRANSPORT_BLE = 0,
	GW_TRANSPORT_UDP,
	GW_TRANSPORT_SERIAL,
};

/* A [device "name"] section. */
struct gw_device_conf {
	char *name;
	enum gw_transport transport;
	char *address;     /* UDP "host:port" / "[v6]:port"; BLE "AA:BB:..." */
	char *path;        /* serial device path */
	unsigned baud;     /* serial; default 115200 */
	uint16_t udp_port; /* pinned local UDP port; 0: from the port map */
};

enum gw_ble_pairing {
	GW_BLE_PAIRING_ALL = 0,     /* any managed watch that asks for it */
	GW_BLE_PAIRING_ALLOWLIST,   /* only pair_allow / pair_first matches */
	GW_BLE_PAIRING_OFF,         /* never */
};

struct gw_config {
	struct {
		char *state_dir;   /* default /var/lib/smpgw */
		int log_level;     /* enum gw_log_level; default info */
	} general;
	struct {
		bool enabled;               /* default true */
		char *bus;                  /* D-Bus address; NULL: system bus */
		char *adapters;             /* "hci0,hci1"; NULL: all */
		unsigned max_connections_per_adapter; /* default 7 */
		/* The connection budget (docs/ble.md): when others wait, an
		 * unused link is released after idle_timeout_ms of quiet, a
		 * link in use after time_slice_ms connected. */
		uint32_t idle_timeout_ms;   /* default 2 s */
		uint32_t time_slice_ms;     /* default 5 s */
		uint32_t connect_timeout_ms; /* default 10 s */
		/* A watch not heard (advertising, or a frame) for this long,
		 * and not connected, is out of range (present false); 0 off. */
		uint32_t presence_timeout_ms; /* default 30 s */
		bool prefer_acquire;        /* AcquireWrite/Notify fast path; default true */
		bool manage_all;            /* manage = all (default) | allowlist */
		char **allow;               /* addresses or name globs */
		size_t n_allow;
		/* Pairing (docs/ble.md "Pairing"): with which managed watches
		 * the agent may bond, which to pair before subscribing, and
		 * whether a bond the watch lost is replaced. */
		int pairing;                /* enum gw_ble_pairing; default ALL */
		char **pair_allow;          /* pairing = allowlist: addresses or name globs */
		size_t n_pair_allow;
		char **pair_first;          /* pair before subscribing (bond required) */
		size_t n_pair_first;
		bool rebond;                /* bond lost: remove it and pair again; default true */
	} ble;
	struct {
		char *bind;         /* default 127.0.0.1 */
		uint16_t base_port; /* default 17001; 0: the OS picks per device */
	} udp;
	struct {
		char *listen;       /* default 127.0.0.1:8080 */
		char *token_file;   /* NULL: no token */
		char *tls_cert;     /* NULL: plain HTTP */
		char *tls_key;
		size_t max_body;    /* default 16 MiB */
		unsigned max_connections; /* default 64 */
	} http;
	struct {
		uint32_t timeout_ms;             /* default 5 s */
		uint32_t first_chunk_timeout_ms; /* default 30 s */
		uint32_t connect_timeout_ms;     /* default 30 s (a turn of the BLE budget) */
		unsigned queue_max;              /* default 64 per device */
	} request;
	/* [update]: the upload engine (src/gateway/engine.c, docs/updates.md). */
	struct {
		unsigned max_per_adapter;   /* concurrent uploads per BLE adapter; default 4 */
		unsigned max_concurrent;    /* concurrent uploads in all; 0: no limit */
		unsigned pipeline_depth;    /* cap on chunks in flight (also <= buf_count - 1); default 8 */
		int reassembly;             /* -1 auto (default), 0 no, 1 yes */
		uint32_t chunk_timeout_ms;  /* 0: [request] timeout */
		uint32_t boot_timeout_ms;   /* reset -> back, else LOST; default 120 s */
		uint32_t self_check_timeout_ms; /* confirm refused (self-check) this long -> FAILED; 60 s */
		uint32_t retry_timeout_ms;  /* unreachable this long -> FAILED; default 300 s */
		uint32_t stall_timeout_ms;  /* no progress this long -> FAILED; default 180 s, 0 off */
	} update;
	/* [images]: the image store's signature policy (src/gateway/images.c). */
	struct {
		bool require_signature; /* refuse images not signed by a key; default no */
		char **keys;            /* PEM public key files */
		size_t n_keys;
		char *dir;              /* NULL: state_dir/images (shared: docs/multi-gateway.md) */
	} images;
	/* [gateway]: this gateway among several on one store (lease.h). */
	struct {
		char *id;               /* NULL: no leases (one gateway) */
		uint32_t lease_ttl_ms;  /* default 15 s */
		unsigned lease_hysteresis_db; /* default 8 */
		/* The URL of this gateway's REST API for the other gateways
		 * (cluster.h); NULL: the bound address when it is specific. */
		char *url;
		uint32_t forward_timeout_ms; /* a forwarded request; default 30 s */
	} gateway;
	/* [store]: where the durable state lives (src/gateway/store.h). */
	struct {
		int backend;            /* enum gw_store_backend; default sqlite */
		char *conninfo;         /* postgresql: libpq connection string */
		uint32_t timeout_ms;    /* one round trip; default 3 s */
	} store;
	struct gw_device_conf *devices;
	size_t n_devices;
};

struct gw_config *gw_config_new_default(void);
struct gw_config *gw_config_free(struct gw_config *cfg);

/*
 * Parses INI text over the defaults. On error returns a negative errno
 * (-EBADMSG for syntax, -EINVAL for a bad value) and, if errmsg is not
 * NULL, a new string "line N: what" (caller frees). *ret untouched on
 * failure; on success *ret is a new config.
 */
int gw_config_parse(const uint8_t *buf, size_t len, struct gw_config **ret,
		    char **errmsg);
/* Reads and parses a file; -errno when it cannot be read. */
int gw_config_load(const char *path, struct gw_config **ret, char **errmsg);

/* Helpers shared with the command line. */
int gw_config_parse_duration_ms(const char *s, uint32_t *ret);
int gw_config_parse_port(const char *s, uint16_t *ret);
/* Sets one key as if read in section (e.g. "udp", "base_port", "17001"). */
int gw_config_set(struct gw_config *cfg, const char *section, const char *key,
		  const char *value);
/* True when the BLE device (address, name may be NULL) is to be managed. */
bool gw_config_ble_allowed(const struct gw_config *cfg, const char *address,
			   const char *name);
/* Whether the gateway may pair with a managed BLE watch, and whether it
 * pairs before subscribing (the watch is configured as needing a bond). */
void gw_config_ble_pairing(const struct gw_config *cfg, const char *address,
			   const char *name, bool *allowed, bool *first);
const struct gw_device_conf *gw_config_find_device(const struct gw_config *cfg,
						   const char *name);
