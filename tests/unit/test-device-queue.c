/* SPDX-License-Identifier: MIT */
/*
 * The per-device request queue (gateway/registry/device.c) against a fake
 * transport: a link_ops test double that records what the queue sends and
 * answers like a device would (or not, when a test wants silence).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbor.h>
#include <event2/event.h>

#include "codec/smp.h"
#include "gateway/config.h"
#include "gateway/device.h"
#include "gateway/events.h"
#include "gateway/gateway.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/registry/registry.h"
#include "tap.h"
#include "util/util.h"

/* ---- the fake transport ---- */

#define MAX_SENT 64

struct fake {
	struct link *link;
	bool connect_works;   /* false: connect never completes */
	bool answer;          /* answer every request automatically */
	uint32_t delay_ms;    /* answer after this long */
	bool params_supported;
	uint32_t buf_size, buf_count;
	struct smp_hdr sent[MAX_SENT];
	size_t sent_len[MAX_SENT];
	int n_sent;
	int max_outstanding, outstanding;
	int connects;
};

struct pending_answer {
	struct fake *f;
	uint8_t *frame;
	size_t len;
	struct event *ev;
};

static void up_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;

	link_set_state(f->link, LINK_STATE_UP, 0);
}

static int fake_connect(struct link *link)
{
	struct fake *f = link_priv(link);

	f->connects++;
	link_set_state(link, LINK_STATE_CONNECTING, 0);
	if (f->connect_works)
		event_base_once(link_base(link), -1, EV_TIMEOUT, up_cb, f, NULL);
	return 0;
}

static void fake_disconnect(struct link *link)
{
	link_set_state(link, LINK_STATE_DOWN, 0);
}

static uint8_t *build_rsp(const struct smp_hdr *req, cbor_item_t *map,
			  size_t *len)
{
	unsigned char *body = NULL;
	size_t cap = 0, blen = cbor_serialize_alloc(map, &body, &cap);
	struct smp_hdr h = *req;
	uint8_t *out = xmalloc(SMP_HDR_LEN + blen);

	h.op = smp_rsp_op(req->op);
	h.len = (uint16_t)blen;
	smp_hdr_encode(&h, out);
	memcpy(out + SMP_HDR_LEN, body, blen);
	free(body);
	cbor_decref(&map);
	*len = SMP_HDR_LEN + blen;
	return out;
}

static void map_put(cbor_item_t *map, const char *k, cbor_item_t *v)
{
	cbor_map_add(map, (struct cbor_pair){ .key = cbor_move(cbor_build_string(k)),
					      .value = cbor_move(v) });
}

static uint8_t *answer_for(struct fake *f, const uint8_t *frame, size_t *len)
{
	struct smp_hdr h;
	cbor_item_t *map = cbor_new_definite_map(2);

	smp_hdr_decode(frame, SMP_HDR_LEN, &h);
	if (h.group == SMP_GROUP_OS && h.id == SMP_OS_PARAMS) {
		if (f->params_supported) {
			map_put(map, "buf_size", cbor_build_uint32(f->buf_size));
			map_put(map, "buf_count", cbor_build_uint32(f->buf_count));
		} else {
			map_put(map, "rc", cbor_build_uint8(8));
		}
	} else {
		map_put(map, "ok", cbor_build_bool(true));
	}
	return build_rsp(&h, map, len);
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pending_answer *a = arg;

	a->f->outstanding--;
	link_deliver_frame(a->f->link, a->frame, a->len);
	event_free(a->ev);
	free(a->frame);
	free(a);
}

static void schedule_answer(struct fake *f, uint8_t *frame, size_t len,
			    uint32_t delay_ms)
{
	struct pending_answer *a = xnew(struct pending_answer);
	struct timeval tv = { delay_ms / 1000, (delay_ms % 1000) * 1000 };

	a->f = f;
	a->frame = frame;
	a->len = len;
	a->ev = evtimer_new(link_base(f->link), deliver_cb, a);
	f->outstanding++;
	evtimer_add(a->ev, &tv);
}

static int fake_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct fake *f = link_priv(link);
	size_t rlen = 0;

	if (f->n_sent < MAX_SENT) {
		smp_hdr_decode(frame, len, &f->sent[f->n_sent]);
		f->sent_len[f->n_sent++] = len;
	}
	if (f->answer) {
		uint8_t *rsp = answer_for(f, frame, &rlen);

		schedule_answer(f, rsp, rlen, f->delay_ms);
		f->max_outstanding = MAX(f->max_outstanding, f->outstanding);
	}
	return 0;
}

static size_t fake_mtu(const struct link *link)
{
	return 244;
}

static const struct link_ops fake_ops = {
	.name = "fake", .connect = fake_connect, .disconnect = fake_disconnect,
	.send = fake_send, .mtu = fake_mtu,
};

/* ---- harness ---- */

struct result {
	int calls;
	int err;
	uint8_t seq;
	uint8_t frame[256];
	size_t len;
};

static void rsp_cb(int err, const uint8_t *frame, size_t len, void *user_data)
{
	struct result *r = user_data;

	r->calls++;
	r->err = err;
	if (frame && len <= sizeof(r->frame)) {
		memcpy(r->frame, frame, len);
		r->len = len;
		r->seq = frame[6];
	}
}

static void run_until(struct event_base *base, const int *calls, int want,
		      unsigned max_ms)
{
	uint64_t end = now_usec() + max_ms * 1000ull;

	while ((!calls || *calls < want) && now_usec() < end) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(500);
	}
}

static size_t echo_frame(uint8_t *out, uint8_t seq, uint8_t group, uint8_t id,
			 uint8_t op)
{
	struct smp_hdr h = { .op = op, .ver = SMP_VER_2, .len = 1,
			     .group = group, .seq = seq, .id = id };

	smp_hdr_encode(&h, out);
	out[8] = 0xa0; /* {} */
	return 9;
}

struct env {
	struct event_base *base;
	struct gw *gw;
	struct fake *f;
	struct gw_device *dev;
};

static void env_init(struct env *e, bool params)
{
	struct gw_config *cfg = gw_config_new_default();

	cfg->request.timeout_ms = 200;
	cfg->request.connect_timeout_ms = 200;
	cfg->request.first_chunk_timeout_ms = 1500;
	cfg->udp.base_port = 0;
	e->base = event_base_new();
	e->gw = gw_new(e->base, cfg, NULL);
	e->f = xnew(struct fake);
	e->f->connect_works = true;
	e->f->answer = true;
	e->f->params_supported = params;
	e->f->buf_size = 128;
	e->f->buf_count = 3;
	e->f->link = link_new(&fake_ops, e->base, e->f);
	e->dev = gw_registry_add(gw_registry_of(e->gw), "dev1", "Watch", e->f->link,
				 true, 0);
}

/* One request answered: the connection is up and params were read. */
static void warm_up(struct env *e)
{
	struct result r = { 0 };
	uint8_t fr[16];
	size_t n = echo_frame(fr, 0, 0, 0, SMP_OP_READ);

	gw_device_request(e->dev, fr, n, NULL, rsp_cb, &r);
	run_until(e->base, &r.calls, 1, 2000);
	is_int(r.err, 0, "warm-up request");
}

static void env_free(struct env *e)
{
	uint64_t end = now_usec() + 2000000;

	/* Let scheduled fake answers fire before the link goes away. */
	while (e->f->outstanding > 0 && now_usec() < end) {
		event_base_loop(e->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(500);
	}
	gw_free(e->gw);
	free(e->f);
	event_base_free(e->base);
}

/* ---- tests ---- */

static void test_basic_and_params(void)
{
	struct env e;
	struct result a = { 0 }, b = { 0 };
	uint8_t fr[16];
	size_t n = echo_frame(fr, 42, 0, 0, SMP_OP_READ);
	uint32_t size, count;

	env_init(&e, true);
	is_int(gw_device_link_state(e.dev), LINK_STATE_DOWN, "starts down");
	ok(gw_device_request(e.dev, fr, n, NULL, rsp_cb, &a) > 0, "queued");
	ok(gw_device_request(e.dev, fr, n, NULL, rsp_cb, &b) > 0, "queued same seq");
	run_until(e.base, &b.calls, 1, 2000);
	is_int(e.f->connects, 1, "connected on demand once");
	is_int(a.calls, 1, "first answered once");
	is_int(a.err, 0, "first ok");
	is_int(a.seq, 42, "client seq restored (a)");
	is_int(b.seq, 42, "client seq restored (b)");
	is_int(e.f->n_sent, 3, "params + two requests sent");
	is_int(e.f->sent[0].id, SMP_OS_PARAMS, "params read first");
	ok(e.f->sent[1].seq != e.f->sent[2].seq, "wire seqs differ");
	is_int(e.f->max_outstanding, 1, "one in flight without pipelining");
	gw_device_params(e.dev, &size, &count);
	is_int(size, 128, "buf_size from device");
	is_int(count, 3, "buf_count from device");
	ok(gw_device_params_known(e.dev), "params known");
	env_free(&e);
}

static void test_pipelining_and_size(void)
{
	struct env e;
	struct result r[6] = { 0 }, big = { 0 };
	struct gw_req_opts pipe = { .pipelined = true };
	uint8_t fr[16], large[200] = { 0 };
	size_t n = echo_frame(fr, 1, 1, 1, SMP_OP_WRITE);
	struct smp_hdr h = { .op = SMP_OP_WRITE, .ver = SMP_VER_2,
			     .len = sizeof(large) - 8, .group = 0, .id = 0 };

	env_init(&e, true);
	e.f->delay_ms = 20;
	for (int i = 0; i < 6; i++)
		gw_device_request(e.dev, fr, n, &pipe, rsp_cb, &r[i]);
	run_until(e.base, &r[5].calls, 1, 3000);
	for (int i = 0; i < 6; i++)
		is_int(r[i].err, 0, "pipelined request ok");
	is_int(e.f->max_outstanding, 2, "buf_count 3 -> 2 in flight");
	smp_hdr_encode(&h, large);
	gw_device_request(e.dev, large, sizeof(large), NULL, rsp_cb, &big);
	run_until(e.base, &big.calls, 1, 1000);
	is_int(big.err, -EMSGSIZE, "frame above buf_size refused");
	env_free(&e);
}

static void test_params_unsupported(void)
{
	struct env e;
	struct result a = { 0 };
	uint8_t fr[16];
	size_t n = echo_frame(fr, 9, 0, 0, SMP_OP_READ);
	uint32_t size, count;

	env_init(&e, false);
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &a);
	run_until(e.base, &a.calls, 1, 2000);
	is_int(a.err, 0, "request ok without params");
	gw_device_params(e.dev, &size, &count);
	is_int(size, GW_DEVICE_DEFAULT_BUF_SIZE, "default buf_size");
	is_int(count, GW_DEVICE_DEFAULT_BUF_COUNT, "default buf_count");
	ok(!gw_device_params_known(e.dev), "params not known");
	env_free(&e);
}

static void test_timeout_and_late(void)
{
	struct env e;
	struct result a = { 0 }, b = { 0 };
	uint8_t fr[16];
	size_t n = echo_frame(fr, 5, 0, 0, SMP_OP_READ);
	json_t *j;

	env_init(&e, true);
	warm_up(&e);
	e.f->delay_ms = 400; /* beyond the 200 ms timeout */
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &a);
	run_until(e.base, &a.calls, 1, 3000);
	is_int(a.calls, 1, "callback once");
	is_int(a.err, -ETIMEDOUT, "timed out");
	e.f->delay_ms = 0;
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &b);
	run_until(e.base, &b.calls, 1, 3000);
	is_int(b.err, 0, "next request ok, late answers dropped");
	run_until(e.base, NULL, 0, 500);
	j = gw_device_to_json(e.dev);
	ok(json_integer_value(json_object_get(json_object_get(j, "counters"),
					      "dropped_responses")) >= 1,
	   "late response counted as dropped");
	json_decref(j);
	is_int(a.calls, 1, "no second callback from the late answer");
	env_free(&e);
}

static void test_first_chunk_timeout(void)
{
	struct env e;
	struct result a = { 0 };
	/* img upload, write, {"off": 0} */
	uint8_t fr[] = { 0x0a, 0, 0, 5, 0, 1, 7, 1, 0xa1, 0x63, 'o', 'f', 'f', 0x00 };

	fr[3] = sizeof(fr) - 8;
	env_init(&e, true);
	warm_up(&e);
	e.f->delay_ms = 600; /* > timeout (200), < first_chunk_timeout (1500) */
	gw_device_request(e.dev, fr, sizeof(fr), NULL, rsp_cb, &a);
	run_until(e.base, &a.calls, 1, 4000);
	is_int(a.err, 0, "first upload chunk waits for the erase");
	is_int(a.seq, 7, "seq restored");
	env_free(&e);
}

static void test_cancel_and_errors(void)
{
	struct env e;
	struct result a = { 0 }, b = { 0 };
	uint8_t fr[16], bad[16] = { 0x0a, 0, 0, 5, 0, 0, 1, 0 };
	size_t n = echo_frame(fr, 5, 0, 0, SMP_OP_READ);
	int64_t id;

	env_init(&e, true);
	is_int(gw_device_request(e.dev, bad, 8, NULL, rsp_cb, &a), -EBADMSG,
	       "truncated frame refused");
	echo_frame(bad, 1, 0, 0, SMP_OP_READ_RSP);
	is_int(gw_device_request(e.dev, bad, 9, NULL, rsp_cb, &a), -EBADMSG,
	       "response op refused");
	id = gw_device_request(e.dev, fr, n, NULL, rsp_cb, &a);
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &b);
	is_int(gw_device_cancel(e.dev, id), 0, "cancel");
	is_int(gw_device_cancel(e.dev, id), -ENOENT, "cancel twice");
	run_until(e.base, &b.calls, 1, 2000);
	is_int(a.calls, 0, "cancelled callback never runs");
	is_int(b.err, 0, "other request unaffected");
	env_free(&e);
}

static void test_link_loss_and_unreachable(void)
{
	struct env e;
	struct result a = { 0 }, b = { 0 };
	uint8_t fr[16];
	size_t n = echo_frame(fr, 5, 0, 0, SMP_OP_READ);

	env_init(&e, true);
	warm_up(&e);
	e.f->answer = false;
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &a);
	run_until(e.base, &e.f->n_sent, 3, 1000);
	is_int(e.f->n_sent, 3, "params, warm-up and request sent");
	link_set_state(e.f->link, LINK_STATE_DOWN, -EPIPE);
	run_until(e.base, &a.calls, 1, 1000);
	is_int(a.err, -ECONNRESET, "link loss fails the request in flight");
	e.f->connect_works = false;
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &b);
	run_until(e.base, &b.calls, 1, 2000);
	is_int(b.err, -ENOTCONN, "no link within the connect timeout");
	env_free(&e);
}

static void test_unsolicited(void)
{
	struct env e;
	struct result a = { 0 };
	uint8_t fr[16], rsp[16];
	size_t n = echo_frame(fr, 5, 0, 0, SMP_OP_READ);
	json_t *j;

	env_init(&e, true);
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &a);
	run_until(e.base, &a.calls, 1, 2000);
	echo_frame(rsp, 200, 0, 0, SMP_OP_READ_RSP);
	link_deliver_frame(e.f->link, rsp, 9);
	link_deliver_frame(e.f->link, rsp, 5); /* truncated */
	j = gw_device_to_json(e.dev);
	is_int(json_integer_value(json_object_get(json_object_get(j, "counters"),
						  "dropped_responses")), 1,
	       "unsolicited response dropped");
	is_int(json_integer_value(json_object_get(json_object_get(j, "counters"),
						  "malformed_responses")), 1,
	       "malformed frame counted");
	is_str(json_string_value(json_object_get(j, "link_state")), "up", "json state");
	json_decref(j);
	env_free(&e);
}

/* The registry counts at the link: frames and bytes each way, the latency
 * of answered requests, errors by kind (GET /metrics). */
static void test_metrics(void)
{
	struct gw_metrics *m = gw_metrics_new();
	struct env e;
	struct result a = { 0 }, b = { 0 };
	uint8_t fr[16];
	size_t n = echo_frame(fr, 1, 0, 0, SMP_OP_READ);

	env_init(&e, true);
	gw_set_metrics(e.gw, m);
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &a);
	run_until(e.base, &a.calls, 1, 2000);
	is_int(a.err, 0, "answered");
	is_int(gw_metrics_get(m, GW_M_FRAMES, "transport=\"fake\",dir=\"tx\""), 2,
	       "tx frames: params read + request");
	is_int(gw_metrics_get(m, GW_M_BYTES, "transport=\"fake\",dir=\"tx\""),
	       (int)(9 + n), "tx bytes: both frames whole");
	is_int(gw_metrics_get(m, GW_M_FRAMES, "transport=\"fake\",dir=\"rx\""), 2,
	       "rx frames: both answers");
	ok(gw_metrics_get(m, GW_M_BYTES, "transport=\"fake\",dir=\"rx\"") >= 2 * 9,
	   "rx bytes counted");
	is_int(gw_metrics_get(m, GW_M_REQ_LATENCY, "transport=\"fake\""), 2,
	       "two latency observations");
	e.f->delay_ms = 400; /* beyond the 200 ms timeout */
	gw_device_request(e.dev, fr, n, NULL, rsp_cb, &b);
	run_until(e.base, &b.calls, 1, 3000);
	run_until(e.base, NULL, 0, 500);
	is_int(gw_metrics_get(m, GW_M_ERRORS, "kind=\"timeouts\",transport=\"fake\""), 1,
	       "timeout counted by kind");
	is_int(gw_metrics_get(m, GW_M_ERRORS,
			      "kind=\"dropped_responses\",transport=\"fake\""), 1,
	       "the late answer counted as dropped");
	is_int(gw_metrics_get(m, GW_M_REQ_LATENCY, "transport=\"fake\""), 2,
	       "no latency for a request that timed out");
	env_free(&e);
	gw_metrics_free(m);
}

static int64_t counter(struct env *e, const char *name)
{
	json_t *j = gw_device_to_json(e->dev);
	int64_t v = json_integer_value(json_object_get(json_object_get(j, "counters"),
						       name));

	json_decref(j);
	return v;
}

static void timeout_once(struct env *e, const uint8_t *fr, size_t n)
{
	struct result r = { 0 };

	gw_device_request(e->dev, fr, n, NULL, rsp_cb, &r);
	run_until(e->base, &r.calls, 1, 3000);
	is_int(r.err, -ETIMEDOUT, "unanswered request times out");
}

/* Three timeouts in a row reset a link that only carried one-write frames;
 * one is enough once a frame spanning several writes went out on it (the
 * watch's reassembly may hold part of a frame and swallow what follows). */
static void test_timeout_resets(void)
{
	struct env e;
	struct result r = { 0 };
	uint8_t fr[16], big[400];
	size_t n = echo_frame(fr, 5, 0, 0, SMP_OP_READ);
	struct smp_hdr h = { .op = SMP_OP_WRITE, .ver = SMP_VER_2,
			     .len = sizeof(big) - SMP_HDR_LEN, .group = 0, .id = 0 };

	env_init(&e, true);
	e.f->buf_size = 1024; /* frames up to 1024 bytes, writes of 244 */
	warm_up(&e);
	e.f->answer = false;
	timeout_once(&e, fr, n);
	timeout_once(&e, fr, n);
	is_int(counter(&e, "timeout_resets"), 0, "two one-write timeouts: link kept");
	timeout_once(&e, fr, n);
	is_int(counter(&e, "timeout_resets"), 1, "the third resets the link");
	e.f->answer = true;
	memset(big, 0x61, sizeof(big));
	smp_hdr_encode(&h, big);
	gw_device_request(e.dev, big, sizeof(big), NULL, rsp_cb, &r);
	run_until(e.base, &r.calls, 1, 3000);
	is_int(r.err, 0, "a 400-byte frame (two writes) answered after the reconnect");
	e.f->answer = false;
	timeout_once(&e, fr, n);
	is_int(counter(&e, "timeout_resets"), 2,
	       "after a split frame one timeout resets the link");
	e.f->answer = true;
	warm_up(&e);
	e.f->answer = false;
	timeout_once(&e, fr, n);
	is_int(counter(&e, "timeout_resets"), 2,
	       "a new link starts with three strikes again");
	env_free(&e);
}

int main(void)
{
	gw_log_set_level(GW_LOG_WARNING);
	test_basic_and_params();
	test_pipelining_and_size();
	test_params_unsupported();
	test_timeout_and_late();
	test_first_chunk_timeout();
	test_cancel_and_errors();
	test_link_loss_and_unreachable();
	test_unsolicited();
	test_metrics();
	test_timeout_resets();
	return tap_done();
}
