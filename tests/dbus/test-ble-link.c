/* SPDX-License-Identifier: MIT */
/*
 * The BLE link (src/links/ble-*.c) against the simulator's fake org.bluez
 * on a private bus: discovery, connect, SMP echo over each link (fast path
 * and WriteValue fallback), a long echo reassembled from several
 * notifications, a dropped link and its reconnect, a simulator restart
 * (bluetoothd going away and coming back) and the connection budget with
 * more watches than the adapter allows.
 *
 * Usage: test-ble-link SMPGW-SIM BUS-CONF
 * Starts its own dbus-daemon and smpgw-sim (or tests/dbus/bluez-host, the
 * same fake org.bluez steered through stdin); every wait is bounded; every
 * child is reaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "links/ble.h"
#include "links/link.h"
#include "tap.h"
#include "util/util.h"

#define MAX_WATCHES 8

#define FLEET_3 "{\"count\": 3}"
#define FLEET_PAIRING "{\"count\": 4, \"devices\": [" \
	"{\"address\": \"C0:FF:EE:00:00:01\", \"pairing_required\": true}, " \
	"{\"address\": \"C0:FF:EE:00:00:02\", \"pairing_required\": true, " \
	"\"refuse_pairing\": true}, " \
	"{\"address\": \"C0:FF:EE:00:00:03\", \"pairing_required\": true, " \
	"\"volatile_bonds\": true}, " \
	"{\"address\": \"C0:FF:EE:00:00:04\", \"pairing_required\": true}]}"
#define FLEET_LIMIT "{\"count\": 4, \"adapters\": [{\"max_connections\": 2}]}"
#define FLEET_BUDGET "{\"count\": 6, \"adapters\": [{\"max_connections\": 2}, " \
	"{\"max_connections\": 2}]}"

static const char *sim_bin, *bus_conf;
static char tmpdir[64];
static char bus_addr[512];
static pid_t bus_pid = -1, sim_pid = -1;
static struct event_base *base;

/* ---- processes ---- */

static void reap(pid_t *pid)
{
	int status;

	if (*pid <= 0)
		return;
	kill(*pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(*pid, &status, WNOHANG) == *pid) {
			*pid = -1;
			return;
		}
		usleep(10000);
	}
	kill(*pid, SIGKILL);
	waitpid(*pid, &status, 0);
	*pid = -1;
}

static void stop_sim(void);

static void cleanup(void)
{
	char cmd[128];

	stop_sim();
	reap(&bus_pid);
	if (tmpdir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			tap_diag("could not remove %s", tmpdir);
	}
}

static void die(const char *what)
{
	tap_diag("fatal: %s", what);
	cleanup();
	exit(1);
}

/* Reads one line from fd within timeout_ms. */
static int read_line(int fd, char *buf, size_t size, int timeout_ms)
{
	size_t n = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	while (n + 1 < size) {
		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		if (read(fd, buf + n, 1) != 1)
			return -EIO;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = 0;
	return (int)n;
}

static void start_bus(void)
{
	int pfd[2];
	char fdarg[32], conf[600];

	if (pipe(pfd) < 0)
		die("pipe");
	bus_pid = fork();
	if (bus_pid == 0) {
		close(pfd[0]);
		snprintf(fdarg, sizeof(fdarg), "--print-address=%d", pfd[1]);
		snprintf(conf, sizeof(conf), "--config-file=%s", bus_conf);
		execlp("dbus-daemon", "dbus-daemon", conf, "--nofork", fdarg,
		       (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	if (read_line(pfd[0], bus_addr, sizeof(bus_addr), 5000) <= 0)
		die("dbus-daemon did not print its address");
	close(pfd[0]);
}

/* ---- the simulator ---- */

static char ctl_path[96], fleet_path[128];

/*
 * Two ways to run the simulator's fake org.bluez:
 *  - smpgw-sim: faults through its control socket (JSON lines);
 *  - bluez-host (tests/dbus): faults through stdin lines, "READY" when up.
 */
static bool host_mode;
static int host_in = -1, host_out = -1;

static void stop_sim(void)
{
	reap(&sim_pid);
	if (host_in >= 0)
		close(host_in);
	if (host_out >= 0)
		close(host_out);
	host_in = host_out = -1;
}

/* fleet: the simulator's fleet file (JSON, see docs/simulator.md). */
static void start_sim(const char *fleet)
{
	FILE *f = fopen(fleet_path, "w");
	int in[2], out[2];
	char line[256];

	if (!f)
		die("fleet file");
	fputs(fleet, f);
	fclose(f);
	unlink(ctl_path);
	if (pipe(in) < 0 || pipe(out) < 0)
		die("pipe");
	sim_pid = fork();
	if (sim_pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(host_mode ? in[0] : null, 0);
		dup2(out[1], 1);
		close(in[0]), close(in[1]), close(out[0]), close(out[1]);
		if (host_mode)
			execl(sim_bin, sim_bin, "--bus", bus_addr, "--fleet", fleet_path,
			      (char *)NULL);
		else
			execl(sim_bin, sim_bin, "--bus", bus_addr, "--fleet", fleet_path,
			      "--control", ctl_path, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	host_in = in[1];
	host_out = out[0];
	/* Both print a line "ready" (bluez-host: "READY") once serving. */
	for (int i = 0; i < 64; i++) {
		if (read_line(host_out, line, sizeof(line), 10000) < 0)
			die("the simulator did not start");
		if (!strcasecmp(line, "ready"))
			return;
	}
	die("the simulator did not say ready");
}

/* One request to the simulator: "fault ADDR KEY N", "reset ADDR",
 * "range ADDR 0|1". Returns 0 when it said yes. */
static int sim_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sim_cmd(const char *fmt, ...)
{
	char req[256], json[400], rsp[512], cmd[32], addr[32], key[48];
	long v = 0;
	va_list ap;
	int n, r;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	va_start(ap, fmt);
	vsnprintf(req, sizeof(req), fmt, ap);
	va_end(ap);
	if (host_mode) {
		if (dprintf(host_in, "%s\n", req) < 0 ||
		    read_line(host_out, rsp, sizeof(rsp), 5000) < 0)
			return -EIO;
		return strncmp(rsp, "OK", 2) ? -EINVAL : 0;
	}
	n = sscanf(req, "%31s %31s %47s %ld", cmd, addr, key, &v);
	if (n < 2)
		return -EINVAL;
	/* The control socket's JSON (docs/simulator.md). */
	if (!strcmp(cmd, "reset"))
		snprintf(json, sizeof(json),
			 "{\"cmd\":\"fault\",\"device\":\"%s\",\"fault\":\"reboot\"}", addr);
	else if (!strcmp(cmd, "range") && n >= 3)
		snprintf(json, sizeof(json),
			 "{\"cmd\":\"fault\",\"device\":\"%s\",\"fault\":\"%s\"}", addr,
			 atoi(key) ? "in_range" : "out_of_range");
	else if (!strcmp(cmd, "fault") && n == 4 && !strcmp(key, "refuse_pairing"))
		snprintf(json, sizeof(json),
			 "{\"cmd\":\"fault\",\"device\":\"%s\",\"fault\":\"%s\",\"on\":%s}",
			 addr, key, v ? "true" : "false");
	else if (!strcmp(cmd, "fault") && n == 4 && !strcmp(key, "disconnect_after_frames"))
		snprintf(json, sizeof(json),
			 "{\"cmd\":\"fault\",\"device\":\"%s\",\"fault\":\"%s\",\"frames\":%ld}",
			 addr, key, v);
	else if (!strcmp(cmd, "fault") && n == 4)
		snprintf(json, sizeof(json),
			 "{\"cmd\":\"fault\",\"device\":\"%s\",\"fault\":\"%s\",\"count\":%ld}",
			 addr, !strcmp(key, "truncate") ? "truncate_notification" :
			 !strcmp(key, "corrupt") ? "corrupt_notification" : key, v);
	else
		return -EINVAL;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ctl_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return r;
	}
	r = dprintf(fd, "%s\n", json) < 0 ? -EIO : read_line(fd, rsp, sizeof(rsp), 5000);
	close(fd);
	if (r < 0)
		return r;
	return strstr(rsp, "\"ok\": true") || strstr(rsp, "\"ok\":true") ? 0 : -EINVAL;
}

/* ---- the manager and its links ---- */

struct watch {
	char address[18];
	char name[32];
	char adapter[16];
	struct link *link;
	enum link_state state;
	int last_err;
	unsigned ups, downs;
	unsigned lost, reseen;
	uint8_t rsp[4096];
	size_t rsp_len;
	unsigned frames;
	unsigned bad_input;   /* link_report_bad_input() calls */
};

static struct watch watches[MAX_WATCHES];
static unsigned n_watches;
static int service_up = -1;
static unsigned max_up_seen, max_up_hci0, max_up_hci1;
static unsigned bad_frames;

static struct watch *watch_find(const char *address)
{
	for (unsigned i = 0; i < n_watches; i++)
		if (!strcasecmp(watches[i].address, address))
			return &watches[i];
	return NULL;
}

static void device_seen(struct ble_manager *mgr, const struct ble_device_info *info,
			void *user_data)
{
	struct watch *w = watch_find(info->address);

	if (w && w->lost)
		w->reseen++;
	if (w || n_watches >= MAX_WATCHES)
		return;
	w = &watches[n_watches++];
	snprintf(w->address, sizeof(w->address), "%s", info->address);
	snprintf(w->name, sizeof(w->name), "%s", info->name ? info->name : "");
	snprintf(w->adapter, sizeof(w->adapter), "%s", info->adapter ? info->adapter : "");
}

static void device_lost(struct ble_manager *mgr, const char *address, void *user_data)
{
	struct watch *w = watch_find(address);

	if (w)
		w->lost++;
}

static void service(struct ble_manager *mgr, bool up, void *user_data)
{
	service_up = up;
}

static const struct ble_manager_callbacks mgr_cbs = {
	.device_seen = device_seen,
	.device_lost = device_lost,
	.service = service,
};

static unsigned count_up_on(const char *adapter)
{
	unsigned n = 0;

	for (unsigned i = 0; i < n_watches; i++)
		n += watches[i].state == LINK_STATE_UP &&
		     (!adapter || !strcmp(watches[i].adapter, adapter));
	return n;
}

static unsigned count_up(void)
{
	return count_up_on(NULL);
}

static void on_frame(struct link *link, const uint8_t *frame, size_t len, void *ud)
{
	struct watch *w = ud;

	if (len > sizeof(w->rsp)) {
		bad_frames++;
		return;
	}
	memcpy(w->rsp, frame, len);
	w->rsp_len = len;
	w->frames++;
}

static void on_state(struct link *link, enum link_state state, int err, void *ud)
{
	struct watch *w = ud;

	w->state = state;
	if (state == LINK_STATE_UP)
		w->ups++;
	if (state == LINK_STATE_DOWN) {
		w->downs++;
		w->last_err = err;
	}
	max_up_seen = MAX(max_up_seen, count_up());
	max_up_hci0 = MAX(max_up_hci0, count_up_on("hci0"));
	max_up_hci1 = MAX(max_up_hci1, count_up_on("hci1"));
}

static void on_bad_input(struct link *link, const char *what, void *ud)
{
	((struct watch *)ud)->bad_input++;
}

static const struct link_callbacks link_cbs = { .frame = on_frame, .state = on_state,
						.bad_input = on_bad_input };

static const char *adapters_opt; /* --system: the central's adapter */
static uint32_t connect_ms = 5000; /* --system: real stacks (under TCG) are slower */
static uint32_t slice_ms;          /* 0: the default time slice */

static struct ble_manager *manager(bool acquire, unsigned max_conn, uint32_t idle_ms)
{
	struct ble_manager_opts o = {
		.bus_address = bus_addr[0] ? bus_addr : NULL,
		.adapters = adapters_opt,
		.max_conn_per_adapter = max_conn,
		.idle_timeout_ms = idle_ms,
		.time_slice_ms = slice_ms,
		.connect_timeout_ms = connect_ms,
		.backoff_min_ms = 100,
		.backoff_max_ms = 1000,
		.prefer_acquire = acquire,
	};
	int err = 0;
	struct ble_manager *mgr;

	n_watches = 0;
	memset(watches, 0, sizeof(watches));
	service_up = -1;
	max_up_seen = max_up_hci0 = max_up_hci1 = 0;
	mgr = ble_manager_new(base, &o, &mgr_cbs, NULL, &err);
	if (!mgr)
		die("ble_manager_new");
	return mgr;
}

/* ---- bounded waiting ---- */

static void tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Runs the loop until cond() or timeout_ms; returns cond(). */
static bool run_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
	uint64_t end = now_usec() + (uint64_t)timeout_ms * 1000;
	struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
	bool ok;

	event_add(t, &(struct timeval){ 0, 20000 });
	while (!(ok = cond(arg)) && now_usec() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return ok;
}

static void run_for(int ms)
{
	uint64_t end = now_usec() + (uint64_t)ms * 1000;
	struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);

	event_add(t, &(struct timeval){ 0, 20000 });
	while (now_usec() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
}

static bool seen_n(void *arg)
{
	return n_watches >= *(unsigned *)arg;
}

static bool all_up(void *arg)
{
	return count_up() == n_watches && n_watches > 0;
}

static bool all_down_one_up(void *arg)
{
	return ((struct watch *)arg)->state == LINK_STATE_UP;
}

static bool down_again(void *arg)
{
	return watches[0].downs > *(unsigned *)arg;
}

static bool up_again(void *arg)
{
	return watches[0].ups > *(unsigned *)arg && watches[0].state == LINK_STATE_UP;
}

static bool all_down(void *arg)
{
	return count_up() == 0;
}

static bool service_is(void *arg)
{
	return service_up == *(int *)arg;
}

/* ---- SMP echo ---- */

static uint8_t seq;

/* os echo request {"d": text}, SMP v2 header; returns its length. */
static size_t build_echo(uint8_t *out, size_t text_len, uint8_t *ret_seq)
{
	size_t n = 8;

	out[n++] = 0xa1;
	out[n++] = 0x61;
	out[n++] = 'd';
	if (text_len < 24) {
		out[n++] = (uint8_t)(0x60 | text_len);
	} else if (text_len < 256) {
		out[n++] = 0x78;
		out[n++] = (uint8_t)text_len;
	} else {
		out[n++] = 0x79;
		put_be16(out + n, (uint16_t)text_len);
		n += 2;
	}
	for (size_t i = 0; i < text_len; i++)
		out[n++] = (uint8_t)('a' + (i * 7 + seq) % 26);
	out[0] = 0x0a; /* ver 1 (SMP v2), op 2 write */
	out[1] = 0;
	put_be16(out + 2, (uint16_t)(n - 8));
	put_be16(out + 4, 0); /* group os */
	out[6] = *ret_seq = seq++;
	out[7] = 0; /* echo */
	return n;
}

static bool got_frame(void *arg)
{
	struct watch *w = arg;

	return w->frames > 0;
}

/* Sends an echo of text_len characters and checks the answer. */
static bool echo(struct watch *w, size_t text_len, int timeout_ms)
{
	uint8_t req[4096], s;
	size_t len = build_echo(req, text_len, &s);
	const uint8_t *text = req + len - text_len;
	int r;

	w->frames = 0;
	w->rsp_len = 0;
	r = link_send(w->link, req, len);
	if (r < 0) {
		tap_diag("%s: send: %s", w->address, strerror(-r));
		return false;
	}
	if (!run_until(got_frame, w, timeout_ms)) {
		tap_diag("%s: no echo response", w->address);
		return false;
	}
	/* Header: write response (op 3), same seq, group 0, id 0; the
	 * payload carries the text back under "r". */
	if (w->rsp_len < 8 + text_len || (w->rsp[0] & 7) != 3 || w->rsp[6] != s ||
	    get_be16(w->rsp + 4) != 0 || w->rsp[7] != 0 ||
	    (size_t)get_be16(w->rsp + 2) + 8 != w->rsp_len ||
	    !memmem(w->rsp + 8, w->rsp_len - 8, text, text_len)) {
		tap_diag("%s: bad echo response (%zu bytes)", w->address, w->rsp_len);
		return false;
	}
	return true;
}

/* ---- scenarios ---- */

static void connect_all(struct ble_manager *mgr)
{
	for (unsigned i = 0; i < n_watches; i++) {
		watches[i].link = ble_manager_link(mgr, watches[i].address);
		link_set_callbacks(watches[i].link, &link_cbs, &watches[i]);
		link_connect(watches[i].link);
	}
}

static bool echo_all(size_t text_len)
{
	bool good = true;

	for (unsigned i = 0; i < n_watches; i++)
		good &= echo(&watches[i], text_len, 5000);
	return good;
}

/*
 * 366 writes in one go (three 60 KB frames the watch drops as too big for
 * its buffers): written in bursts from the loop (EV_WRITE, and on EAGAIN
 * when the socket fills), in order, so an echo queued behind still gets its
 * answer.
 */
static void test_burst(struct watch *w)
{
	size_t len = 60000;
	uint8_t *big = xzalloc(len);

	big[0] = 0x0a;
	put_be16(big + 2, (uint16_t)(len - 8));
	for (int i = 0; i < 3; i++)
		is_int(link_send(w->link, big, len), 0, "burst: 60 KB frame queued (122 writes)");
	ok(echo(w, 40, 10000), "burst: echo behind it answered, in order");
	ok(w->state == LINK_STATE_UP, "burst: link still up");
	free(big);
}

static void test_basic(bool acquire, unsigned count)
{
	const char *mode = acquire ? "fast path" : "fallback";
	struct ble_manager *mgr = manager(acquire, 0, 0);
	bool fast = true, slow = true;

	ok(run_until(seen_n, &count, 10000), "%s: %u watches discovered", mode, count);
	connect_all(mgr);
	ok(run_until(all_up, NULL, 20000), "%s: all links up", mode);
	for (unsigned i = 0; i < n_watches; i++) {
		fast &= ble_link_fast_path(watches[i].link);
		slow &= !ble_link_fast_path(watches[i].link);
	}
	ok(acquire ? fast : slow, "%s: links use the %s", mode, mode);
	is_int(link_mtu(watches[0].link), 495, "MTU 498 - 3 bytes per write");
	ok(echo_all(12), "%s: echo over every link", mode);
	ok(echo(&watches[0], 2000, 5000), "%s: 2000-byte echo over several writes and notifications", mode);
	ble_link_set_reassembly(watches[0].link, false);
	uint8_t big[1200];
	size_t big_len = build_echo(big, 1100, &(uint8_t){ 0 });
	is_int(link_send(watches[0].link, big, big_len), -EMSGSIZE,
	       "no reassembly: a frame over one write is refused");
	ble_link_set_reassembly(watches[0].link, true);
	if (acquire)
		test_burst(&watches[0]);
	/* HCI helpers: no raw HCI socket here (or no such connection). */
	int r = ble_link_read_rssi(watches[0].link);
	ok(r == -EOPNOTSUPP || r == -ENODEV || r == -ENOTCONN || (r < 0 && r > -128),
	   "HCI RSSI: a reading or a clean refusal (%d)", r);
	r = ble_link_set_fast(watches[0].link, true);
	ok(r == 0 || r == -EOPNOTSUPP || r == -ENODEV || r == -ENOTCONN,
	   "HCI connection update: done or a clean refusal (%d)", r);
	ble_manager_free(mgr);
	run_for(100);
}

static void test_drop_and_restart(unsigned count)
{
	struct ble_manager *mgr = manager(true, 0, 0);
	struct watch *w;
	unsigned ups, downs, bad;
	int r, up = 1, down = 0;

	ok(run_until(seen_n, &count, 10000), "drop: watches discovered");
	connect_all(mgr);
	ok(run_until(all_up, NULL, 20000), "drop: all links up");
	w = &watches[0];
	/* The watch drops the link after the next request frame. */
	r = sim_cmd("fault %s disconnect_after_frames 1", w->address);
	is_int(r, 0, "simulator: disconnect fault set");
	downs = w->downs;
	echo(w, 8, 1000);
	ok(run_until(down_again, &downs, 5000) && w->last_err == -ECONNRESET,
	   "drop: link DOWN with -ECONNRESET (err %d)", w->last_err);
	ok(run_until(all_up, NULL, 10000), "drop: link reconnects by itself");
	ok(echo(w, 20, 5000), "drop: echo after reconnect");

	/* A reboot: link lost, back after the watch boots. */
	ups = w->ups;
	is_int(sim_cmd("reset %s", w->address), 0, "simulator: reset");
	ok(run_until(up_again, &ups, 15000), "reset: link back after the reboot");
	ok(echo(w, 20, 5000), "reset: echo after the reboot");

	/* A truncated response: its frame never completes; the next one must
	 * not be glued to the leftover. */
	bad = w->bad_input;
	is_int(sim_cmd("fault %s truncate 1", w->address), 0, "simulator: truncate fault set");
	ok(!echo(w, 300, 1500), "truncated response not delivered");
	ok(echo(w, 300, 5000), "next response delivered whole (resync)");
	ok(w->bad_input > bad, "the cut response was reported as bad input");
	is_int(sim_cmd("fault %s corrupt 1", w->address), 0, "simulator: corrupt fault set");
	echo(w, 30, 1500);
	ok(echo(w, 30, 5000), "after a corrupted response the link still works");
	ok(w->state == LINK_STATE_UP, "link stayed up through garbage");

	/* bluetoothd goes away and comes back. */
	stop_sim();
	ok(run_until(service_is, &down, 5000), "restart: service down reported");
	ok(run_until(all_down, NULL, 5000), "restart: every link DOWN");
	ok(w->last_err == -ECONNRESET, "restart: with -ECONNRESET (err %d)", w->last_err);
	start_sim(FLEET_3);
	ok(run_until(service_is, &up, 10000), "restart: service up again");
	ok(run_until(all_up, NULL, 20000), "restart: every link reconnects");
	ok(echo_all(16), "restart: echo over every link");
	ble_manager_free(mgr);
	run_for(100);
}

static bool all_had_up(void *arg)
{
	for (unsigned i = 0; i < n_watches; i++)
		if (!watches[i].ups)
			return false;
	return n_watches > 0;
}

static bool lost(void *arg)
{
	return ((struct watch *)arg)->lost > 0;
}

static bool reseen(void *arg)
{
	return ((struct watch *)arg)->reseen > 0;
}

/* BlueZ forgets a watch out of range (TemporaryTimeout, shortened for the
 * simulator): device_lost; back in range: seen again, and usable. */
static void test_device_lost(void)
{
	struct ble_manager *mgr = manager(true, 0, 0);
	unsigned count = 3;
	struct watch *w;

	ok(run_until(seen_n, &count, 10000), "lost: watches discovered");
	w = &watches[2];
	is_int(sim_cmd("range %s 0", w->address), 0, "simulator: out of range");
	ok(run_until(lost, w, 15000), "lost: device_lost when BlueZ forgets the watch");
	is_int(sim_cmd("range %s 1", w->address), 0, "simulator: back in range");
	ok(run_until(reseen, w, 15000), "lost: seen again");
	w->link = ble_manager_link(mgr, w->address);
	link_set_callbacks(w->link, &link_cbs, w);
	link_connect(w->link);
	ok(run_until(all_down_one_up, w, 15000), "lost: connects after coming back");
	ok(echo(w, 10, 5000), "lost: echo");
	ble_manager_free(mgr);
	run_for(100);
}

/* connect_all(), then, for up to 30 s, asks again every watch that is
 * down and never was up (the gateway connects on demand: parked links get
 * asked again) until every watch had a link. */
static void connect_until_all_up(struct ble_manager *mgr)
{
	uint64_t end = now_usec() + 30000000;

	connect_all(mgr);
	while (!all_had_up(NULL) && now_usec() < end) {
		run_for(100);
		for (unsigned i = 0; i < n_watches; i++)
			if (watches[i].state == LINK_STATE_DOWN && !watches[i].ups)
				link_connect(watches[i].link);
	}
}

/* Two adapters with a budget of 2 each, 6 watches: idle links are parked
 * for the waiting ones, each adapter keeps its own budget. */
static void test_budget(unsigned count)
{
	struct ble_manager *mgr = manager(true, 2, 300);

	ok(run_until(seen_n, &count, 10000), "budget: watches discovered");
	connect_until_all_up(mgr);
	ok(all_had_up(NULL), "budget: every watch got a connection (fair)");
	ok(max_up_hci0 <= 2 && max_up_hci1 <= 2,
	   "budget: at most 2 links up per adapter (saw %u, %u)", max_up_hci0, max_up_hci1);
	ok(max_up_seen > 2, "budget: both adapters used together (%u up at once)",
	   max_up_seen);
	ble_manager_free(mgr);
	run_for(100);
}

/* The controller holds 2 links, the manager's budget says 7: the manager
 * learns the limit from BlueZ's refusal and queues instead of failing. */
static void test_controller_limit(void)
{
	struct ble_manager *mgr = manager(true, 7, 300);
	unsigned count = 4, errors = 0;

	ok(run_until(seen_n, &count, 10000), "limit: watches discovered");
	connect_until_all_up(mgr);
	for (unsigned i = 0; i < n_watches; i++)
		errors += watches[i].downs && watches[i].last_err;
	ok(all_had_up(NULL), "limit: every watch got a connection");
	ok(max_up_seen <= 2, "limit: at most 2 up (saw %u)", max_up_seen);
	is_int(errors, 0, "limit: no link failed for lack of room");
	ble_manager_free(mgr);
	run_for(100);
}

static void connect_one(struct ble_manager *mgr, struct watch *w)
{
	w->link = ble_manager_link(mgr, w->address);
	link_set_callbacks(w->link, &link_cbs, w);
	link_connect(w->link);
}

static bool pair_up(void *arg)
{
	struct watch *const *p = arg;

	return p[0]->state == LINK_STATE_UP && p[1]->state == LINK_STATE_UP;
}

/*
 * The gateway's use of its links (ble_link_set_use), budget 2, 4 watches:
 * a held link (upload job) keeps its slot; a busy link yields after its
 * time slice: nothing new goes out, it is parked once answered; an unused
 * link is parked for the next waiter after the idle time.
 */
static void test_use(void)
{
	struct ble_manager *mgr;
	struct watch *a, *b, *c, *d;
	unsigned count = 4;
	uint8_t buf[64], s;
	size_t n;

	slice_ms = 500;
	mgr = manager(true, 2, 300);
	slice_ms = 0;
	ok(run_until(seen_n, &count, 10000), "use: watches discovered");
	if (n_watches < 4)
		die("use: watches");
	a = &watches[0], b = &watches[1], c = &watches[2], d = &watches[3];
	connect_one(mgr, a);
	connect_one(mgr, b);
	ok(run_until(pair_up, (struct watch *[]){ a, b }, 10000), "use: two links up");
	ble_link_set_use(a->link, 0, 0, true);  /* an upload job */
	ble_link_set_use(b->link, 1, 2, false); /* a request in flight, 2 queued */
	connect_one(mgr, c);
	connect_one(mgr, d);
	run_for(1500);
	ok(a->state == LINK_STATE_UP && a->downs == 0, "use: the held link keeps its slot");
	ok(b->state == LINK_STATE_UP, "use: the busy link keeps it while its request is in flight");
	ok(c->state != LINK_STATE_UP && d->state != LINK_STATE_UP, "use: the others wait");
	n = build_echo(buf, 4, &s);
	is_int(link_send(b->link, buf, n), -EAGAIN,
	       "use: time slice over, others waiting: no new request goes out");
	ble_link_set_use(b->link, 0, 2, false); /* answered */
	ok(run_until(all_down_one_up, c, 5000), "use: answered, it yields to the oldest waiter");
	ok(b->state != LINK_STATE_UP && b->last_err == 0, "use: the busy link was parked (DOWN, 0)");
	ok(d->state != LINK_STATE_UP && a->state == LINK_STATE_UP, "use: held link still up");
	ble_link_set_use(a->link, 0, 0, false); /* the job ended */
	ok(run_until(all_down_one_up, d, 5000), "use: released and idle, parked for the last waiter");
	ok(a->state != LINK_STATE_UP && a->last_err == 0, "use: parked (DOWN, 0)");
	ble_manager_free(mgr);
	run_for(100);
}

static bool settled(void *arg)
{
	struct watch *w0 = watch_find("C0:FF:EE:00:00:01");
	struct watch *w1 = watch_find("C0:FF:EE:00:00:02");
	struct watch *w2 = watch_find("C0:FF:EE:00:00:03");
	struct watch *w3 = watch_find("C0:FF:EE:00:00:04");

	return w0 && w1 && w2 && w3 && w0->state == LINK_STATE_UP &&
	       w2->state == LINK_STATE_UP && w1->downs > 0 && w3->downs > 0;
}

static bool is_up(void *arg)
{
	return ((struct watch *)arg)->state == LINK_STATE_UP;
}

static bool pairing_is(struct watch *w, enum ble_pairing p)
{
	return ble_link_pairing(w->link) == p;
}

static bool refused_again(void *arg)
{
	struct watch *w = arg;

	return w->state == LINK_STATE_DOWN && pairing_is(w, BLE_PAIRING_REFUSED);
}

/*
 * Watch 1 demands an encrypted link; watch 2 also refuses to pair (its
 * pairing window is closed) until it opens; watch 3 keeps its bonds in RAM
 * (a reset loses them); watch 4 may not be paired (policy). Watch 1 goes
 * through BlueZ's own pairing (the agent is asked), watch 3 is paired
 * first (bond required).
 */
static void test_pairing(void)
{
	struct ble_manager *mgr = manager(true, 0, 0);
	unsigned count = 4, downs;
	uint64_t t0;

	ok(run_until(seen_n, &count, 10000), "pairing: watches discovered");
	struct watch *w0 = watch_find("C0:FF:EE:00:00:01");
	struct watch *w1 = watch_find("C0:FF:EE:00:00:02");
	struct watch *w2 = watch_find("C0:FF:EE:00:00:03");
	struct watch *w3 = watch_find("C0:FF:EE:00:00:04");

	if (!w0 || !w1 || !w2 || !w3)
		die("pairing: watches not found");
	for (unsigned i = 0; i < n_watches; i++)
		watches[i].link = ble_manager_link(mgr, watches[i].address);
	ble_link_set_pairing(w2->link, true, true, true);
	ble_link_set_pairing(w3->link, false, false, true);
	t0 = now_usec();
	connect_all(mgr);
	ok(run_until(settled, NULL, 20000), "pairing: two up, one refused, one not allowed");
	ok(w0->state == LINK_STATE_UP, "pairing: Just Works pairing, then up");
	ok(pairing_is(w0, BLE_PAIRING_PAIRED), "pairing: state paired");
	ok(w0->state == LINK_STATE_UP && echo(w0, 10, 5000), "pairing: echo over the encrypted link");
	/* (it may be retrying right now: wait for it to be down again) */
	ok(run_until(refused_again, w1, 5000) && w1->last_err == -EACCES,
	   "pairing refused: DOWN with -EACCES, state pairing_refused");
	ok(w2->state == LINK_STATE_UP && pairing_is(w2, BLE_PAIRING_PAIRED),
	   "pair first: paired before subscribing, up");
	is_int(w3->last_err, -EPERM, "not allowed: DOWN with -EPERM");
	ok(pairing_is(w3, BLE_PAIRING_NOT_ALLOWED), "not allowed: state not_allowed");
	/* Without the agent's refusal ending the attempt, bluetoothd would
	 * leave the subscription hanging for the 30 s ATT timeout. */
	ok(now_usec() - t0 < 8000000, "not allowed and refused: known within seconds (%.1f s)",
	   (double)(now_usec() - t0) / 1e6);

	/* The wearer opens the pairing window: the retries (backoff) pair. */
	downs = w1->downs;
	ok(run_until(refused_again, w1, 5000) && w1->downs >= downs,
	   "pairing refused: retried with backoff, refused again");
	ok(sim_cmd("fault %s refuse_pairing 0", w1->address) == 0, "window opens");
	ok(run_until(is_up, w1, 10000), "pairing window open: paired on the next retry, up");
	ok(pairing_is(w1, BLE_PAIRING_PAIRED) && echo(w1, 10, 5000), "and echoes");

	/* Watch 3 restarts and forgets its bond: detected, removed, paired again. */
	link_disconnect(w2->link);
	run_for(300);
	ok(sim_cmd("reset %s", w2->address) == 0, "bond loss: the watch restarts");
	run_for(1500);
	link_connect(w2->link);
	ok(run_until(is_up, w2, 15000), "bond lost: the stale bond removed, paired again, up");
	ok(pairing_is(w2, BLE_PAIRING_PAIRED) && echo(w2, 10, 5000), "bond lost: echo after rebonding");

	/* The same without rebonding: bond_lost, -EKEYREVOKED. */
	ble_link_set_pairing(w2->link, true, true, false);
	link_disconnect(w2->link);
	run_for(300);
	ok(sim_cmd("reset %s", w2->address) == 0, "bond loss again: the watch restarts");
	run_for(1500);
	link_connect(w2->link);
	{
		bool lost = false;
		uint64_t end = now_usec() + 10000000;

		while (!lost && now_usec() < end) {
			run_for(100);
			lost = pairing_is(w2, BLE_PAIRING_BOND_LOST);
		}
		ok(lost && w2->last_err == -EKEYREVOKED, "rebond off: state bond_lost, DOWN -EKEYREVOKED");
	}
	ble_manager_free(mgr);
	run_for(100);
}

/*
 * Against a real bluetoothd on the system bus and a real watch (or any SMP
 * peripheral advertising the SMP service) seen on ADAPTER: a manual check
 * on a gateway host (docs/ble.md). Requests stay within one 495-byte write
 * (BlueZ 5.66 as a GATT server drops writes over 510 bytes).
 */
static int test_system(const char *adapter)
{
	unsigned one = 1;

	adapters_opt = adapter;
	connect_ms = 20000;
	for (int pass = 0; pass < 2; pass++) {
		bool acquire = pass == 0;
		const char *mode = acquire ? "system bus, fast path" : "system bus, fallback";
		struct ble_manager *mgr = manager(acquire, 0, 0);

		ok(run_until(seen_n, &one, 60000), "%s: watch discovered", mode);
		if (!n_watches) {
			ble_manager_free(mgr);
			break;
		}
		n_watches = 1;
		connect_all(mgr);
		ok(run_until(all_up, NULL, 60000), "%s: link up", mode);
		ok(ble_link_fast_path(watches[0].link) == acquire, "%s: transport as asked", mode);
		tap_diag("mtu %zu", link_mtu(watches[0].link));
		ok(echo(&watches[0], 12, 5000), "%s: echo", mode);
		ok(echo(&watches[0], 450, 5000), "%s: 450-byte echo", mode);
		link_disconnect(watches[0].link);
		run_for(500);
		ok(watches[0].state == LINK_STATE_DOWN, "%s: disconnected", mode);
		link_connect(watches[0].link);
		ok(run_until(all_up, NULL, 60000), "%s: connected again", mode);
		ok(echo(&watches[0], 30, 5000), "%s: echo after reconnecting", mode);
		ble_manager_free(mgr);
		run_for(500);
	}
	event_base_free(base);
	return tap_done();
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--system")) {
		signal(SIGPIPE, SIG_IGN);
		base = event_base_new();
		return test_system(argv[2]);
	}
	if (argc < 3) {
		fprintf(stderr, "usage: %s SMPGW-SIM BUS-CONF | --system ADAPTER\n", argv[0]);
		return 2;
	}
	sim_bin = argv[1];
	bus_conf = argv[2];
	host_mode = strstr(sim_bin, "bluez-host") != NULL;
	signal(SIGPIPE, SIG_IGN);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-ble-link.XXXXXX");
	if (!mkdtemp(tmpdir))
		die("mkdtemp");
	snprintf(ctl_path, sizeof(ctl_path), "%s/control", tmpdir);
	snprintf(fleet_path, sizeof(fleet_path), "%s/fleet.json", tmpdir);
	base = event_base_new();
	start_bus();

	start_sim(FLEET_3);
	test_basic(true, 3);
	test_basic(false, 3);
	test_drop_and_restart(3);
	stop_sim();

	/* BlueZ's TemporaryTimeout, 30 s, shortened for test_device_lost. */
	setenv("SMPGW_SIM_TEMP_TIMEOUT_MS", "1500", 1);
	start_sim(FLEET_3);
	unsetenv("SMPGW_SIM_TEMP_TIMEOUT_MS");
	test_device_lost();
	stop_sim();

	start_sim(FLEET_PAIRING);
	test_pairing();
	stop_sim();

	start_sim(FLEET_LIMIT);
	test_controller_limit();
	stop_sim();
	start_sim(FLEET_LIMIT);
	test_use();
	stop_sim();

	start_sim(FLEET_BUDGET);
	test_budget(6);

	cleanup();
	event_base_free(base);
	return tap_done();
}
