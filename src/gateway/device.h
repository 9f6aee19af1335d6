/* SPDX-License-Identifier: MIT */
/*
 * Devices as the rest of the daemon sees them: the registry of managed
 * watches (whatever their transport), and the per-device request queue.
 *
 * Requests are whole SMP frames. The queue rewrites the sequence number on
 * the way out (so several clients can share one device) and restores the
 * caller's own sequence number in the response it hands back. One request
 * is in flight per device unless the caller asks for pipelining and the
 * device's buf_count allows it. A device that is not connected is
 * connected on demand; the request waits up to its connect timeout.
 *
 * This header is the contract between the gateway core, the UDP face, the
 * REST API and the upload engine.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "codec/smp.h"
#include "links/link.h"

struct gw;
struct gw_device;

/* Per-request options; zero means the configured default. */
struct gw_req_opts {
	uint32_t timeout_ms;         /* response timeout once sent */
	uint32_t connect_timeout_ms; /* how long to wait for the link */
	bool pipelined;              /* may be in flight beside others */
};

/*
 * Called exactly once per request, never after gw_device_cancel().
 * err: 0, or -ETIMEDOUT (no response), -ENOTCONN (link could not be
 * brought up in time), -ECONNRESET (link lost while in flight),
 * -EMSGSIZE (frame larger than the device's buffer), -ECANCELED (device
 * removed / daemon shutting down).
 * On success frame/len is the whole response frame (header + CBOR) with the
 * caller's sequence number restored; borrowed for the call's duration.
 */
typedef void (*gw_rsp_cb)(int err, const uint8_t *frame, size_t len,
			  void *user_data);

/* Queues one whole SMP request frame (borrowed). Returns a request id > 0,
 * or a negative errno (-EBADMSG: not one whole SMP request frame; -EBUSY:
 * the device's queue is full ([request] queue_max); -ECANCELED: the device
 * is being removed). On a negative return the callback is never called. */
int64_t gw_device_request(struct gw_device *dev, const uint8_t *frame,
			  size_t len, const struct gw_req_opts *opts,
			  gw_rsp_cb cb, void *user_data);
/* Cancels a queued or in-flight request; its callback will not run. */
int gw_device_cancel(struct gw_device *dev, int64_t id);

/* Lookup by id (the stable device id: BLE address "AA:BB:CC:DD:EE:FF", or
 * the name given in the config for UDP/serial devices) or by name. */
struct gw_device *gw_device_find(struct gw *gw, const char *id_or_name);
typedef void (*gw_device_iter_cb)(struct gw_device *dev, void *user_data);
void gw_device_foreach(struct gw *gw, gw_device_iter_cb cb, void *user_data);
size_t gw_device_count(struct gw *gw);

const char *gw_device_id(const struct gw_device *dev);
const char *gw_device_name(const struct gw_device *dev);
const char *gw_device_transport(const struct gw_device *dev);
enum link_state gw_device_link_state(const struct gw_device *dev);
uint16_t gw_device_udp_port(const struct gw_device *dev);
size_t gw_device_mtu(const struct gw_device *dev);
/* SMP buffer parameters (from os "mcumgr params", or safe defaults:
 * GW_DEVICE_DEFAULT_BUF_SIZE / _BUF_COUNT until the device answered). */
#define GW_DEVICE_DEFAULT_BUF_SIZE 384u
#define GW_DEVICE_DEFAULT_BUF_COUNT 1u
/* True once the device itself reported its parameters. */
bool gw_device_params_known(const struct gw_device *dev);
void gw_device_params(const struct gw_device *dev, uint32_t *buf_size,
		      uint32_t *buf_count);
void gw_device_set_params(struct gw_device *dev, uint32_t buf_size,
			  uint32_t buf_count);
/* BLE pairing trouble as a request error (0: none): -EKEYEXPIRED the watch
 * refused pairing, -ENOLINK pairing with it is not allowed, -EKEYREVOKED
 * its bond is lost and not replaced. Requests fail with it at once while
 * the link is down for that reason. */
int gw_device_pairing_errno(const struct gw_device *dev);
/* Asks the link to connect now (e.g. before an upload) / allows the idle
 * policy to close it again. */
void gw_device_hold(struct gw_device *dev);
void gw_device_release(struct gw_device *dev);

/* Full JSON description for the REST API. New reference. Keys: id, name,
 * address (BLE address, UDP host:port or tty), transport, link_state
 * ("down"/"connecting"/"up"), present (BLE: advertising), rssi (null when
 * unknown), mtu, udp_port, last_seen (ms since epoch or null), pairing (BLE:
 * "none", "pairing", "paired", "pairing_refused", "not_allowed",
 * "bond_lost"; null otherwise), buf_size,
 * buf_count, params_from_device, queued, in_flight, slots (null or the
 * cached "images" array), advertising (null or {adapter, manufacturer:
 * {company, data hex}, service_data hex}), counters {requests, responses,
 * timeouts, link_resets, not_connected, dropped_responses,
 * malformed_responses, malformed_requests, too_big, connects,
 * timeout_resets (links reset because requests went unanswered),
 * pairings (BLE: bonds made since the daemon started)}; and the
 * typed model of devmodel.h: slots (typed), slots_age_s, advertised (null
 * or the decoded record), battery (from advertising, null when unknown),
 * firmware (null or the freshest of connection and advertising). */
json_t *gw_device_to_json(const struct gw_device *dev);
/* Caches the last image state read (the "images" array of an img state
 * response, converted to JSON, hashes as {"$bytes"} or hex; borrowed) in
 * the typed form (gw_slots_typed()); shown in gw_device_to_json(). */
void gw_device_set_slots(struct gw_device *dev, json_t *images);
/* The cached typed slots (borrowed) or NULL. */
const json_t *gw_device_slots(const struct gw_device *dev);
/* The last advertising record (borrowed) and when it was seen, or NULL
 * when the watch never advertised one. */
struct smpgw_adv;
const struct smpgw_adv *gw_device_adv_record(const struct gw_device *dev,
					     uint64_t *seen_ms);
/* RSSI in dBm (127 when unknown) and last_seen (ms epoch, 0 unknown). */
int gw_device_rssi(const struct gw_device *dev);
uint64_t gw_device_last_seen(const struct gw_device *dev);
