/* SPDX-License-Identifier: MIT */
/*
 * The control interface's commands, through sim_control_handle() (the socket
 * itself is exercised by tests/integration/test-sim-faces.py): list, show,
 * every fault name, range, rssi, reboot, counters, link, and clear errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "control.h"
#include "fleet.h"
#include "tap.h"
#include "util/util.h"

static struct sim_control *ctl;

static json_t *call(const char *req)
{
	char *out = sim_control_handle(ctl, req, strlen(req));
	json_t *j = json_loads(out, 0, NULL);

	if (!j)
		tap_diag("not JSON: %s", out);
	free(out);
	return j;
}

static bool call_ok(const char *req)
{
	json_t *j = call(req);
	bool r = j && json_is_true(json_object_get(j, "ok"));

	json_decref(j);
	return r;
}

static bool error_has(const char *req, const char *want)
{
	json_t *j = call(req);
	const char *e = json_string_value(json_object_get(j, "error"));
	bool r = j && json_is_false(json_object_get(j, "ok")) && e && strstr(e, want);

	if (!r)
		tap_diag("%s -> %s", req, e ? e : "(no error)");
	json_decref(j);
	return r;
}

int main(void)
{
	struct event_base *base = event_base_new();
	struct sim_fleet_spec *spec = sim_fleet_spec_new_count(3);
	char err[256], path[64];
	int e = 0;
	struct sim_fleet *fleet = sim_fleet_new(base, spec, NULL, err, sizeof(err));
	struct sim_device *d0 = sim_fleet_device(fleet, 0);

	snprintf(path, sizeof(path), "/tmp/test-sim-control-%d.sock", (int)getpid());
	ctl = sim_control_new(base, fleet, path, &e);
	ok(ctl != NULL, "control socket bound (%d)", e);
	if (!ctl)
		return tap_done();
	sim_control_set_transport(ctl, 1, 17002, "/dev/pts/99");

	json_t *l = call("{\"cmd\":\"list\"}");
	json_t *devs = json_object_get(l, "devices");
	ok(json_array_size(devs) == 3, "list: 3 devices");
	json_t *d1 = json_array_get(devs, 1);
	ok(json_integer_value(json_object_get(d1, "udp_port")) == 17002 &&
	   !strcmp(json_string_value(json_object_get(d1, "pty")), "/dev/pts/99"), "list: transports");
	json_t *s0 = json_array_get(json_object_get(d1, "slots"), 0);
	ok(json_is_true(json_object_get(s0, "active")) &&
	   !strcmp(json_string_value(json_object_get(s0, "version")), "1.0.0"), "list: slot 0");
	json_decref(l);

	ok(call_ok("{\"cmd\":\"help\"}"), "help");
	ok(call_ok("{\"cmd\":\"show\",\"device\":\"PineTime-2\"}"), "show by name");
	ok(call_ok("{\"cmd\":\"show\",\"device\":\"c0:ff:ee:00:00:01\"}"), "show by address");
	ok(error_has("{\"cmd\":\"show\",\"device\":\"*\"}", "\"device\""), "show needs one device");
	ok(error_has("{\"cmd\":\"show\",\"device\":7}", "0..2"), "index out of range");

	static const char *const faults[] = {
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"corrupt_notification\",\"count\":2}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"truncate_notification\"}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"answer_twice\",\"count\":3}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"wrong_seq\"}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"refuse_pairing\"}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"pairing_required\",\"on\":true}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"disconnect_at_offset\",\"offset\":4096}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"disconnect_after_frames\",\"frames\":5}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"slow_flash\",\"factor\":4}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"lossy_burst\",\"writes\":2}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"garbage_notification\",\"count\":2}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"unsolicited_answer\"}",
		"{\"cmd\":\"fault\",\"device\":0,\"fault\":\"hang\"}",
	};
	for (size_t i = 0; i < ARRAY_SIZE(faults); i++)
		ok(call_ok(faults[i]), "%s", faults[i]);
	const struct sim_faults *f = sim_device_faults(d0);
	ok(f->corrupt_notifications == 2 && f->truncate_notifications == 1 && f->answer_twice == 3 &&
	   f->wrong_seq == 1 && f->refuse_pairing && f->pairing_required &&
	   f->disconnect_at_offset == 4096 && f->disconnect_after_frames == 5 &&
	   f->flash_slow_factor == 4 && f->hang && f->lossy_burst == 2 &&
	   f->garbage_notifications == 2 && f->unsolicited_answers == 1,
	   "every fault landed on the device");
	ok(!sim_device_is_up(d0), "hung device is not up");
	ok(call_ok("{\"cmd\":\"fault\",\"device\":0,\"fault\":\"clear\"}") && !f->hang &&
	   f->disconnect_at_offset == -1 && f->lossy_burst == -1, "clear");
	ok(call_ok("{\"cmd\":\"fault\",\"device\":0,\"fault\":\"lossy_burst\",\"writes\":0}") &&
	   f->lossy_burst == 0, "lossy_burst 0: every write lost");
	ok(call_ok("{\"cmd\":\"fault\",\"device\":0,\"fault\":\"lossy_burst\",\"on\":false}") &&
	   f->lossy_burst == -1, "lossy_burst off");
	ok(call_ok("{\"cmd\":\"fault\",\"device\":\"*\",\"fault\":\"out_of_range\"}") &&
	   !sim_device_in_range(sim_fleet_device(fleet, 2)), "all out of range");
	ok(call_ok("{\"cmd\":\"range\",\"device\":\"*\",\"in_range\":true}") && sim_device_in_range(d0),
	   "back in range");
	ok(call_ok("{\"cmd\":\"rssi\",\"device\":0,\"rssi\":-90}") && sim_device_rssi(d0) == -90, "rssi");
	ok(call_ok("{\"cmd\":\"reboot\",\"device\":0}") && !sim_device_is_up(d0), "reboot");
	ok(call_ok("{\"cmd\":\"counters\"}"), "counters");
	ok(call_ok("{\"cmd\":\"link\",\"device\":0,\"link\":{\"att_mtu\":247,\"reassembly\":false}}") &&
	   sim_device_link_model(d0)->att_mtu == 247 && !sim_device_link_model(d0)->reassembly, "link set");
	ok(error_has("{\"cmd\":\"link\",\"device\":0,\"link\":{\"mtu\":247}}", "link.mtu: unknown key"),
	   "link: unknown key");
	ok(error_has("{\"cmd\":\"fault\",\"device\":0,\"fault\":\"disconnect_at_offset\"}", "offset"),
	   "fault argument missing");
	ok(error_has("{\"cmd\":\"fault\",\"device\":0,\"fault\":\"slow_flash\",\"factor\":-1}", "factor"),
	   "fault argument bad");
	ok(error_has("{\"cmd\":\"nope\"}", "unknown command"), "unknown command");
	ok(error_has("{\"cmd\":\"move\",\"device\":0,\"heard\":{\"g1\":-50}}",
		     "needs --bus NAME=ADDRESS"), "move without named buses");
	ok(error_has("{\"cmd\":\"rssi\",\"device\":0,\"rssi\":-50,\"bus\":\"g1\"}",
		     "not a --bus NAME"), "rssi of an unknown bus");
	ok(error_has("{\"cmd\":\"power\",\"bus\":\"g1\",\"on\":false}", "not a --bus NAME"),
	   "power of an unknown bus");
	ok(error_has("{\"cmd\":\"power\",\"bus\":\"g1\"}", "\"on\""), "power without on");
	ok(error_has("{\"device\":0}", "\"cmd\" missing"), "cmd missing");
	ok(error_has("not json", "bad JSON"), "bad JSON");

	sim_control_free(ctl);
	ok(access(path, F_OK) != 0, "socket file removed");
	sim_fleet_free(fleet);
	sim_fleet_spec_free(spec);
	event_base_free(base);
	return tap_done();
}
