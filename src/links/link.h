/* SPDX-License-Identifier: MIT */
/*
 * A link carries whole SMP frames between the gateway and one device.
 * Each transport (ble.c, udp.c, serial.c) implements struct link_ops; the
 * gateway core only ever sees struct link and never knows the transport.
 *
 * A link delivers whole frames up (reassembled by the SMP header length),
 * takes whole frames down (splitting them over writes as the transport
 * needs), reports its MTU and state, and owns reconnects with backoff.
 * Links never log: they report errors as negative errno through the state
 * callback and return values.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct link;

enum link_state {
	LINK_STATE_DOWN = 0,     /* not connected, no attempt in progress */
	LINK_STATE_CONNECTING,   /* connect (or reconnect) in progress */
	LINK_STATE_UP,           /* frames can be sent */
};

struct link_ops {
	const char *name; /* "ble", "udp", "serial" */
	/* Start connecting; completion is reported through the state callback. */
	int (*connect)(struct link *link);
	/* Drop the connection (no automatic reconnect until connect again). */
	void (*disconnect)(struct link *link);
	/* Send one whole SMP frame. -ENOTCONN when down, -EMSGSIZE when too big,
	 * -EAGAIN when the transport's queue is full. The buffer is borrowed. */
	int (*send)(struct link *link, const uint8_t *frame, size_t len);
	/* Largest payload of one transport write (BLE: ATT MTU - 3). */
	size_t (*mtu)(const struct link *link);
	/* Frees the transport's private state; called once by link_free(). */
	void (*destroy)(struct link *link);
};

struct link_callbacks {
	/* A whole SMP frame arrived (borrowed buffer). */
	void (*frame)(struct link *link, const uint8_t *frame, size_t len,
		      void *user_data);
	/* State changed; err is 0 or the negative errno that caused DOWN. */
	void (*state)(struct link *link, enum link_state state, int err,
		      void *user_data);
	/* Bytes that are no frame were dropped (what: a short reason, static);
	 * the owner counts and logs them. Optional. */
	void (*bad_input)(struct link *link, const char *what, void *user_data);
};

/* For transports: create the generic part around private state. */
struct link *link_new(const struct link_ops *ops, struct event_base *base,
		      void *priv);
void *link_priv(const struct link *link);
struct event_base *link_base(const struct link *link);
/* For transports: report a frame / a state change to the owner. */
void link_deliver_frame(struct link *link, const uint8_t *frame, size_t len);
void link_set_state(struct link *link, enum link_state state, int err);
void link_report_bad_input(struct link *link, const char *what);

/* For the gateway. */
void link_set_callbacks(struct link *link, const struct link_callbacks *cbs,
			void *user_data);
int link_connect(struct link *link);
void link_disconnect(struct link *link);
int link_send(struct link *link, const uint8_t *frame, size_t len);
size_t link_mtu(const struct link *link);
enum link_state link_state(const struct link *link);
const char *link_transport(const struct link *link);
const char *link_state_str(enum link_state state);
/* Accepts NULL; returns NULL. */
struct link *link_free(struct link *link);
