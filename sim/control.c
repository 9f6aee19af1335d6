/* SPDX-License-Identifier: MIT */
/*
 * Control socket of the simulator: JSON lines over a Unix stream socket.
 * Commands dispatch through one const table; every answer is one object
 * with "ok" and either the result fields or "error". Owns the listening
 * socket and its clients; changes devices only through device.h.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>

#include "bluez.h"
#include "control.h"
#include "device.h"
#include "fleet.h"
#include "util/util.h"

#define CTL_MAX_LINE (64 * 1024)
#define CTL_MAX_CLIENTS 64

struct ctl_client {
	struct sim_control *ctl;
	struct bufferevent *bev;
};

struct transport_info {
	uint16_t udp;
	char *pty;
};

struct sim_control {
	struct sim_fleet *fleet;
	struct evconnlistener *lis;
	char *path;
	struct ctl_client *clients[CTL_MAX_CLIENTS];
	struct transport_info *tr;
	struct sim_bluez **buses; /* borrowed: the fake org.bluez of each --bus */
	size_t nbuses;
};

/* Named buses (--bus NAME=ADDRESS): per-bus state is reported and steered. */
static bool named_buses(const struct sim_control *ctl)
{
	return ctl->nbuses && sim_bluez_name(ctl->buses[0]);
}

/* ---- JSON views ----------------------------------------------------------------- */

static json_t *slot_json(const struct sim_device *dev, unsigned n)
{
	struct sim_slot_info s;
	char hex[65];

	sim_device_slot_info(dev, n, &s);
	hex_encode(s.hash, 32, hex);
	return json_pack("{s:I, s:b, s:s, s:s, s:b, s:b, s:b, s:b, s:b, s:I}", "slot", (json_int_t)n,
			 "present", s.present, "version", s.present ? s.version : "",
			 "hash", s.present ? hex : "", "bootable", s.bootable, "pending", s.pending,
			 "confirmed", s.confirmed, "active", s.active, "permanent", s.permanent,
			 "len", (json_int_t)s.len);
}

static json_t *device_json(struct sim_control *ctl, size_t i)
{
	const struct sim_device *d = sim_fleet_device(ctl->fleet, i);
	json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:i, s:b, s:b, s:I}", "index", (json_int_t)i,
			      "name", sim_device_name(d), "address", sim_device_address(d),
			      "adapter", (json_int_t)sim_device_adapter(d), "rssi", sim_device_rssi(d),
			      "in_range", sim_device_in_range(d), "up", sim_device_is_up(d),
			      "boot_count", (json_int_t)sim_device_boot_count(d));

	json_object_set_new(o, "links", json_integer(sim_fleet_links(ctl->fleet, i)));
	if (named_buses(ctl)) {
		json_t *heard = json_object(), *conn = json_array();

		for (size_t b = 0; b < ctl->nbuses; b++) {
			const char *name = sim_bluez_name(ctl->buses[b]);
			int rssi;

			if (sim_bluez_heard(ctl->buses[b], i, &rssi))
				json_object_set_new(heard, name, json_integer(rssi));
			if (sim_bluez_connected(ctl->buses[b], i))
				json_array_append_new(conn, json_string(name));
		}
		json_object_set_new(o, "heard", heard);
		json_object_set_new(o, "connected", conn);
	}
	json_object_set_new(o, "udp_port", json_integer(ctl->tr[i].udp));
	json_object_set_new(o, "pty", ctl->tr[i].pty ? json_string(ctl->tr[i].pty) : json_null());
	json_object_set_new(o, "slots", json_pack("[o, o]", slot_json(d, 0), slot_json(d, 1)));
	return o;
}

static json_t *counters_json(const struct sim_counters *c)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "frames_rx", (json_int_t)c->frames_rx, "frames_tx", (json_int_t)c->frames_tx,
			 "bytes_rx", (json_int_t)c->bytes_rx, "bytes_tx", (json_int_t)c->bytes_tx,
			 "drops", (json_int_t)c->drops, "erases", (json_int_t)c->erases,
			 "programs", (json_int_t)c->programs, "resets", (json_int_t)c->resets,
			 "upload_bytes", (json_int_t)c->upload_bytes, "confirms", (json_int_t)c->confirms,
			 "confirms_unbooted", (json_int_t)c->confirms_unbooted);
}

/* The BlueZ face's link-level counters (c NULL: no --bus). */
static json_t *bluez_counters_json(const struct sim_bluez_counters *c)
{
	if (!c)
		return json_null();
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "writes", (json_int_t)c->writes,
			 "notifications", (json_int_t)c->notifications,
			 "frames", (json_int_t)c->frames,
			 "drops_busy", (json_int_t)c->drops_busy,
			 "drops_link", (json_int_t)c->drops_link,
			 "drops_notify", (json_int_t)c->drops_notify,
			 "drops_lossy", (json_int_t)c->drops_lossy,
			 "lossy_desyncs", (json_int_t)c->lossy_desyncs,
			 "connects", (json_int_t)c->connects,
			 "disconnects", (json_int_t)c->disconnects,
			 "connect_failures", (json_int_t)c->connect_failures,
			 "pairings", (json_int_t)c->pairings);
}

static json_t *faults_json(const struct sim_faults *f)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "corrupt_notifications", (json_int_t)f->corrupt_notifications,
			 "truncate_notifications", (json_int_t)f->truncate_notifications,
			 "answer_twice", (json_int_t)f->answer_twice,
			 "wrong_seq", (json_int_t)f->wrong_seq, "hang", f->hang,
			 "refuse_pairing", f->refuse_pairing, "pairing_required", f->pairing_required,
			 "volatile_bonds", f->volatile_bonds,
			 "disconnect_at_offset", (json_int_t)f->disconnect_at_offset,
			 "disconnect_after_frames", (json_int_t)f->disconnect_after_frames,
			 "flash_slow_factor", (json_int_t)f->flash_slow_factor,
			 "lossy_burst", (json_int_t)f->lossy_burst,
			 "garbage_notifications", (json_int_t)f->garbage_notifications,
			 "unsolicited_answers", (json_int_t)f->unsolicited_answers);
}

static json_t *link_json(const struct sim_link_model *m)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:f, s:f}",
			 "conn_interval_us", (json_int_t)m->conn_interval_us, "phy", (json_int_t)m->phy,
			 "ll_payload", (json_int_t)m->ll_payload,
			 "pkts_per_event", (json_int_t)m->pkts_per_event,
			 "att_mtu", (json_int_t)m->att_mtu, "reassembly", m->reassembly,
			 "buf_size", (json_int_t)m->buf_size, "buf_count", (json_int_t)m->buf_count,
			 "capacity_up", sim_link_model_capacity_up(m),
			 "capacity_down", sim_link_model_capacity_down(m));
}

/* ---- device selection -------------------------------------------------------------- */

struct sel {
	size_t first, end; /* [first, end) */
};

/* "device": index, address, name, or "*" (all, when allowed). */
static int select_devices(struct sim_control *ctl, const json_t *req, bool allow_all,
			  struct sel *ret, char *err, size_t esz)
{
	const json_t *d = json_object_get(req, "device");
	size_t n = sim_fleet_count(ctl->fleet);

	if (json_is_integer(d) && json_integer_value(d) >= 0 && (size_t)json_integer_value(d) < n) {
		ret->first = (size_t)json_integer_value(d);
		ret->end = ret->first + 1;
		return 0;
	}
	if (json_is_string(d) && allow_all && !strcmp(json_string_value(d), "*")) {
		ret->first = 0;
		ret->end = n;
		return 0;
	}
	if (json_is_string(d)) {
		struct sim_device *dev = sim_fleet_find(ctl->fleet, json_string_value(d));
		if (dev) {
			ret->first = (size_t)sim_fleet_index(ctl->fleet, dev);
			ret->end = ret->first + 1;
			return 0;
		}
	}
	snprintf(err, esz, "\"device\": give an index 0..%zu, an address or a name%s", n - 1,
		 allow_all ? " (or \"*\")" : "");
	return -ENOENT;
}

#define DEV(i) sim_fleet_device(ctl->fleet, (i))

/* "bus": a --bus NAME; *ret NULL when absent. */
static int select_bus(struct sim_control *ctl, const json_t *req, struct sim_bluez **ret,
		      char *err, size_t esz)
{
	const json_t *v = json_object_get(req, "bus");

	*ret = NULL;
	if (!v)
		return 0;
	for (size_t b = 0; json_is_string(v) && named_buses(ctl) && b < ctl->nbuses; b++)
		if (!strcmp(sim_bluez_name(ctl->buses[b]), json_string_value(v))) {
			*ret = ctl->buses[b];
			return 0;
		}
	snprintf(err, esz, "\"bus\": not a --bus NAME of this simulator");
	return -ENOENT;
}

/* ---- commands ------------------------------------------------------------------------- */

typedef json_t *(*cmd_fn)(struct sim_control *ctl, const json_t *req, char *err, size_t esz);

static json_t *cmd_list(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	json_t *a = json_array();

	for (size_t i = 0; i < sim_fleet_count(ctl->fleet); i++)
		json_array_append_new(a, device_json(ctl, i));
	return json_pack("{s:o}", "devices", a);
}

static json_t *cmd_show(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	struct sel s;
	json_t *o;

	if (select_devices(ctl, req, false, &s, err, esz) < 0)
		return NULL;
	o = device_json(ctl, s.first);
	json_object_set_new(o, "counters", counters_json(sim_device_counters(DEV(s.first))));
	json_object_set_new(o, "faults", faults_json(sim_device_faults(DEV(s.first))));
	json_object_set_new(o, "link", link_json(sim_device_link_model(DEV(s.first))));
	return o;
}

static json_t *cmd_range(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	const json_t *v = json_object_get(req, "in_range");
	struct sel s;

	struct sim_bluez *bz;

	if (!json_is_boolean(v)) {
		snprintf(err, esz, "\"in_range\" must be true or false");
		return NULL;
	}
	if (select_devices(ctl, req, true, &s, err, esz) < 0 ||
	    select_bus(ctl, req, &bz, err, esz) < 0)
		return NULL;
	for (size_t i = s.first; i < s.end; i++) {
		int rssi = sim_device_rssi(DEV(i));

		if (!bz)
			sim_device_set_in_range(DEV(i), json_is_true(v));
		else if (!json_is_true(v) || !sim_bluez_heard(bz, i, &rssi))
			sim_bluez_set_heard(bz, i, json_is_true(v), rssi);
	}
	return json_object();
}

static json_t *cmd_rssi(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	const json_t *v = json_object_get(req, "rssi");
	struct sel s;

	struct sim_bluez *bz;

	if (!json_is_integer(v) || json_integer_value(v) < -127 || json_integer_value(v) > 20) {
		snprintf(err, esz, "\"rssi\" must be an integer -127..20");
		return NULL;
	}
	if (select_devices(ctl, req, true, &s, err, esz) < 0 ||
	    select_bus(ctl, req, &bz, err, esz) < 0)
		return NULL;
	for (size_t i = s.first; i < s.end; i++) {
		if (bz)
			sim_bluez_set_heard(bz, i, true, (int)json_integer_value(v));
		else
			sim_device_set_rssi(DEV(i), (int)json_integer_value(v));
	}
	return json_object();
}

/* Walking to another room: {"heard": {"g1": -85, "g2": -50, "g3": null}}
 * sets what each named bus hears (null: out of its range); buses not named
 * keep theirs. Checked whole before anything changes. */
static json_t *cmd_move(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	const json_t *h = json_object_get(req, "heard");
	struct sim_bluez *bz[SIM_FLEET_MAX_BUSES];
	size_t n = 0;
	struct sel s;
	const char *key;
	json_t *v;

	if (!json_is_object(h) || !named_buses(ctl)) {
		snprintf(err, esz, "\"heard\" must be an object of --bus NAME to RSSI or null "
			 "(needs --bus NAME=ADDRESS)");
		return NULL;
	}
	if (select_devices(ctl, req, true, &s, err, esz) < 0)
		return NULL;
	json_object_foreach((json_t *)h, key, v) {
		json_t *one = json_pack("{s:s}", "bus", key);
		int r = n < SIM_FLEET_MAX_BUSES ? select_bus(ctl, one, &bz[n], err, esz) : -E2BIG;

		json_decref(one);
		if (r < 0)
			return NULL;
		if (!json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < -127 ||
					 json_integer_value(v) > 20)) {
			snprintf(err, esz, "\"heard\".%s: an integer -127..20 or null", key);
			return NULL;
		}
		n++;
	}
	n = 0;
	json_object_foreach((json_t *)h, key, v) {
		for (size_t i = s.first; i < s.end; i++)
			sim_bluez_set_heard(bz[n], i, !json_is_null(v), (int)json_integer_value(v));
		n++;
	}
	return json_pack("{s:o}", "device", device_json(ctl, s.first));
}

/* A gateway host going dark (or back): its adapters powered off/on. */
static json_t *cmd_power(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	const json_t *on = json_object_get(req, "on");
	struct sim_bluez *bz;

	if (!json_is_boolean(on)) {
		snprintf(err, esz, "\"on\" must be true or false");
		return NULL;
	}
	if (select_bus(ctl, req, &bz, err, esz) < 0)
		return NULL;
	if (!bz) {
		snprintf(err, esz, "\"bus\" must name a --bus NAME");
		return NULL;
	}
	sim_bluez_set_powered(bz, json_is_true(on));
	return json_object();
}

static json_t *cmd_reboot(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	struct sel s;

	if (select_devices(ctl, req, true, &s, err, esz) < 0)
		return NULL;
	for (size_t i = s.first; i < s.end; i++)
		sim_device_reset(DEV(i));
	return json_object();
}

/* An optional non-negative integer argument. */
static int arg_uint(const json_t *req, const char *key, int64_t def, int64_t max, int64_t *ret,
		    char *err, size_t esz)
{
	const json_t *v = json_object_get(req, key);

	if (!v) {
		*ret = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max) {
		snprintf(err, esz, "\"%s\" must be an integer 0..%lld", key, (long long)max);
		return -EINVAL;
	}
	*ret = json_integer_value(v);
	return 0;
}

/* Applies one named fault to f; the names are the documented ones. */
static int apply_fault(const char *name, const json_t *req, struct sim_faults *f, bool *range,
		       bool *reboot, char *err, size_t esz)
{
	int64_t v;
	const json_t *on = json_object_get(req, "on");
	bool b = on ? json_is_true(on) : true;

	if (!strcmp(name, "out_of_range") || !strcmp(name, "in_range"))
		*range = !strcmp(name, "in_range");
	else if (!strcmp(name, "reboot"))
		*reboot = true;
	else if (!strcmp(name, "hang") || !strcmp(name, "unhang"))
		f->hang = !strcmp(name, "hang");
	else if (!strcmp(name, "refuse_pairing"))
		f->refuse_pairing = b;
	else if (!strcmp(name, "pairing_required"))
		f->pairing_required = b;
	else if (!strcmp(name, "volatile_bonds"))
		f->volatile_bonds = b;
	else if (!strcmp(name, "clear"))
		sim_faults_default(f);
	else if (!strcmp(name, "disconnect_at_offset")) {
		if (arg_uint(req, "offset", -2, INT32_MAX, &v, err, esz) < 0)
			return -EINVAL;
		if (v == -2) {
			snprintf(err, esz, "disconnect_at_offset needs \"offset\"");
			return -EINVAL;
		}
		f->disconnect_at_offset = v;
	} else if (!strcmp(name, "disconnect_after_frames")) {
		if (arg_uint(req, "frames", 1, INT32_MAX, &v, err, esz) < 0)
			return -EINVAL;
		f->disconnect_after_frames = v ? v : 1;
	} else if (!strcmp(name, "lossy_burst")) {
		if (arg_uint(req, "writes", 3, 1000, &v, err, esz) < 0)
			return -EINVAL;
		f->lossy_burst = b ? (int32_t)v : -1;
	} else if (!strcmp(name, "slow_flash")) {
		if (arg_uint(req, "factor", 10, 1000, &v, err, esz) < 0)
			return -EINVAL;
		f->flash_slow_factor = (uint32_t)(v ? v : 1);
	} else {
		uint32_t *cnt = !strcmp(name, "corrupt_notification") ? &f->corrupt_notifications :
				!strcmp(name, "truncate_notification") ? &f->truncate_notifications :
				!strcmp(name, "answer_twice") ? &f->answer_twice :
				!strcmp(name, "wrong_seq") ? &f->wrong_seq :
				!strcmp(name, "garbage_notification") ? &f->garbage_notifications :
				!strcmp(name, "unsolicited_answer") ? &f->unsolicited_answers : NULL;
		if (!cnt) {
			snprintf(err, esz, "unknown fault \"%s\" (see docs/simulator.md)", name);
			return -EINVAL;
		}
		if (arg_uint(req, "count", 1, 1000000, &v, err, esz) < 0)
			return -EINVAL;
		*cnt = (uint32_t)v;
	}
	return 0;
}

static json_t *cmd_fault(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	const char *name = json_string_value(json_object_get(req, "fault"));
	struct sel s;

	if (!name) {
		snprintf(err, esz, "\"fault\" must name a fault");
		return NULL;
	}
	if (select_devices(ctl, req, true, &s, err, esz) < 0)
		return NULL;
	for (size_t i = s.first; i < s.end; i++) {
		struct sim_faults f = *sim_device_faults(DEV(i));
		bool range = sim_device_in_range(DEV(i)), reboot = false;

		if (apply_fault(name, req, &f, &range, &reboot, err, esz) < 0)
			return NULL;
		sim_device_set_faults(DEV(i), &f);
		sim_device_set_in_range(DEV(i), range);
		if (reboot)
			sim_device_reset(DEV(i));
	}
	return json_pack("{s:o}", "faults", faults_json(sim_device_faults(DEV(s.first))));
}

static json_t *cmd_counters(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	struct sim_counters total = { 0 };
	struct sim_bluez_counters bz_total = { 0 };
	struct sel s = { 0, sim_fleet_count(ctl->fleet) };
	json_t *per = json_object(), *buses = named_buses(ctl) ? json_object() : NULL;

	for (size_t b = 0; b < ctl->nbuses; b++) {
		const struct sim_bluez_counters *c = sim_bluez_counters(ctl->buses[b]);

		/* every field is a uint64_t counter: sum them all */
		for (size_t k = 0; k < sizeof(*c) / sizeof(uint64_t); k++)
			((uint64_t *)&bz_total)[k] += ((const uint64_t *)c)[k];
		if (buses)
			json_object_set_new(buses, sim_bluez_name(ctl->buses[b]),
					    bluez_counters_json(c));
	}

	if (json_object_get(req, "device") && select_devices(ctl, req, true, &s, err, esz) < 0) {
		json_decref(per);
		json_decref(buses);
		return NULL;
	}
	for (size_t i = s.first; i < s.end; i++) {
		const struct sim_counters *c = sim_device_counters(DEV(i));
		total.frames_rx += c->frames_rx;
		total.frames_tx += c->frames_tx;
		total.bytes_rx += c->bytes_rx;
		total.bytes_tx += c->bytes_tx;
		total.drops += c->drops;
		total.erases += c->erases;
		total.programs += c->programs;
		total.upload_bytes += c->upload_bytes;
		total.confirms += c->confirms;
		total.confirms_unbooted += c->confirms_unbooted;
		total.resets += c->resets;
		if (s.end - s.first <= 100) /* keep answers to big fleets short */
			json_object_set_new(per, sim_device_address(DEV(i)), counters_json(c));
	}
	return json_pack("{s:o, s:o, s:o, s:o*}", "total", counters_json(&total), "devices", per,
			 "bluez", bluez_counters_json(ctl->nbuses ? &bz_total : NULL),
			 "buses", buses);
}

static json_t *cmd_link(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	const json_t *l = json_object_get(req, "link");
	struct sel s;

	if (select_devices(ctl, req, true, &s, err, esz) < 0)
		return NULL;
	for (size_t i = s.first; l && i < s.end; i++) {
		struct sim_link_model m = *sim_device_link_model(DEV(i));
		if (sim_fleet_parse_link(l, &m, err, esz) < 0)
			return NULL;
		sim_device_set_link_model(DEV(i), &m);
	}
	return json_pack("{s:o}", "link", link_json(sim_device_link_model(DEV(s.first))));
}

static json_t *cmd_help(struct sim_control *ctl, const json_t *req, char *err, size_t esz);

static const struct {
	const char *name;
	cmd_fn fn;
	const char *help;
} commands[] = {
	{ "help", cmd_help, "this list" },
	{ "list", cmd_list, "devices, their transports and slots" },
	{ "show", cmd_show, "one device with counters, faults and link model: {device}" },
	{ "range", cmd_range, "move in or out of range (of one bus): {device|*, in_range, bus?}" },
	{ "rssi", cmd_rssi, "set the advertised RSSI (heard by one bus): {device|*, rssi, bus?}" },
	{ "move", cmd_move, "walk to another room: {device|*, heard: {BUS: rssi|null, ...}}" },
	{ "power", cmd_power, "a gateway's adapters off/on: {bus, on}" },
	{ "reboot", cmd_reboot, "reset now (MCUboot runs): {device|*}" },
	{ "fault", cmd_fault, "inject a fault: {device|*, fault, count|offset|frames|factor|writes|on}" },
	{ "counters", cmd_counters, "frames, bytes, drops, erases: {device|* optional}; "
	  "bluez: the fake org.bluez's writes, notifications, drops, connects (null without --bus; "
	  "buses: per --bus NAME)" },
	{ "link", cmd_link, "read or set the link model: {device|*, link: {...}}" },
};

static json_t *cmd_help(struct sim_control *ctl, const json_t *req, char *err, size_t esz)
{
	json_t *o = json_object();

	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		json_object_set_new(o, commands[i].name, json_string(commands[i].help));
	return json_pack("{s:o}", "commands", o);
}

char *sim_control_handle(struct sim_control *ctl, const char *line, size_t len)
{
	char err[256] = "";
	json_error_t jerr;
	json_t *req = json_loadb(line, len, 0, &jerr), *rsp = NULL;
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	char *out;

	if (!req)
		snprintf(err, sizeof(err), "bad JSON: %s", jerr.text);
	else if (!cmd)
		snprintf(err, sizeof(err), "\"cmd\" missing (try {\"cmd\":\"help\"})");
	for (size_t i = 0; cmd && i < ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, cmd))
			rsp = commands[i].fn(ctl, req, err, sizeof(err));
	if (cmd && !rsp && !err[0])
		snprintf(err, sizeof(err), "unknown command \"%.64s\" (try help)", cmd);
	if (rsp)
		json_object_set_new(rsp, "ok", json_true());
	else
		rsp = json_pack("{s:b, s:s}", "ok", 0, "error", err);
	out = json_dumps(rsp, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(rsp);
	json_decref(req);
	return out;
}

/* ---- socket ---------------------------------------------------------------------------- */

static void client_free(struct ctl_client *c)
{
	for (size_t i = 0; i < CTL_MAX_CLIENTS; i++)
		if (c->ctl->clients[i] == c)
			c->ctl->clients[i] = NULL;
	bufferevent_free(c->bev);
	free(c);
}

static void client_read(struct bufferevent *bev, void *ud)
{
	struct ctl_client *c = ud;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF))) {
		char *rsp = sim_control_handle(c->ctl, line, n);
		bufferevent_write(bev, rsp, strlen(rsp));
		bufferevent_write(bev, "\n", 1);
		free(rsp);
		free(line);
	}
	if (evbuffer_get_length(in) > CTL_MAX_LINE)
		client_free(c); /* no newline in 64 KiB: not a client of ours */
}

static void client_event(struct bufferevent *bev, short what, void *ud)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_free(ud);
}

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
		      int socklen, void *ud)
{
	struct sim_control *ctl = ud;
	size_t i;

	for (i = 0; i < CTL_MAX_CLIENTS && ctl->clients[i]; i++)
		;
	if (i == CTL_MAX_CLIENTS) {
		close(fd);
		return;
	}
	struct ctl_client *c = xnew(struct ctl_client);
	c->ctl = ctl;
	c->bev = bufferevent_socket_new(evconnlistener_get_base(lis), fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, client_read, NULL, client_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	ctl->clients[i] = c;
}

struct sim_control *sim_control_new(struct event_base *base, struct sim_fleet *fleet,
				    const char *path, int *ret_err)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct sim_control *ctl;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		*ret_err = -ENAMETOOLONG;
		return NULL;
	}
	strcpy(sun.sun_path, path);
	unlink(path);
	ctl = xnew(struct sim_control);
	ctl->fleet = fleet;
	ctl->path = xstrdup(path);
	ctl->tr = xnew_array(struct transport_info, sim_fleet_count(fleet));
	ctl->lis = evconnlistener_new_bind(base, accept_cb, ctl,
					   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
					   (struct sockaddr *)&sun, sizeof(sun));
	if (!ctl->lis) {
		*ret_err = -errno;
		free(ctl->path);
		ctl->path = NULL; /* do not unlink what we did not create */
		return sim_control_free(ctl);
	}
	return ctl;
}

struct sim_control *sim_control_free(struct sim_control *ctl)
{
	if (!ctl)
		return NULL;
	for (size_t i = 0; i < CTL_MAX_CLIENTS; i++)
		if (ctl->clients[i])
			client_free(ctl->clients[i]);
	if (ctl->lis)
		evconnlistener_free(ctl->lis);
	if (ctl->path)
		unlink(ctl->path);
	for (size_t i = 0; ctl->tr && i < sim_fleet_count(ctl->fleet); i++)
		free(ctl->tr[i].pty);
	free(ctl->tr);
	free(ctl->buses);
	free(ctl->path);
	free(ctl);
	return NULL;
}

void sim_control_set_bluez(struct sim_control *ctl, struct sim_bluez *const *buses, size_t n)
{
	free(ctl->buses);
	ctl->buses = n ? xmemdup(buses, n * sizeof(*buses)) : NULL;
	ctl->nbuses = n;
}

void sim_control_set_transport(struct sim_control *ctl, size_t i, uint16_t udp_port,
			       const char *pty_path)
{
	if (i >= sim_fleet_count(ctl->fleet))
		return;
	ctl->tr[i].udp = udp_port;
	free(ctl->tr[i].pty);
	ctl->tr[i].pty = pty_path ? xstrdup(pty_path) : NULL;
}

/* ---- client ------------------------------------------------------------------------------ */

int sim_control_request(const char *path, const char *request, unsigned timeout_ms, char **ret)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	uint64_t deadline = now_usec() + (uint64_t)timeout_ms * 1000;
	size_t len = 0, cap = 4096;
	char *buf;
	int fd, r = 0;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    write(fd, request, strlen(request)) < 0 || write(fd, "\n", 1) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return r;
	}
	buf = xmalloc(cap);
	while (!memchr(buf, '\n', len)) {
		struct pollfd p = { fd, POLLIN, 0 };
		int64_t left = (int64_t)(deadline - now_usec()) / 1000;
		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		if (len + 1 >= cap)
			buf = xrealloc(buf, cap *= 2);
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n <= 0) {
			r = n < 0 ? -errno : -ECONNRESET;
			break;
		}
		len += (size_t)n;
	}
	close(fd);
	if (r < 0) {
		free(buf);
		return r;
	}
	*(char *)memchr(buf, '\n', len) = '\0';
	*ret = buf;
	return 0;
}
