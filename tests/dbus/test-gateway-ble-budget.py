# SPDX-License-Identifier: MIT
"""The BLE connection budget through the real smpgwd: more watches than
connection slots (smpgw-sim playing bluetoothd on a private bus, adapters
that hold 3 links, [ble] max_connections_per_adapter = 3), driven through
the per-device UDP endpoints and the REST upload engine.

- one echo to each of 20 watches at once: 20 answers, in bounded time
  (unused links are released to the waiters after the idle time);
- two clients hammering 10 watches each: every watch answers (busy links
  take turns after their time slice; per-watch counts, min > 0);
- an upload job on one watch while the 19 others are polled: its link is
  never released (gw_device_hold);
- two adapters share the load, each within its own budget.
"""
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

from smp_udp_client import Client, SmpError  # noqa: E402
from smp_udp_client import echo_all as echo_ports  # noqa: E402
from updates_harness import (BLE_NEEDS, Bus, Tap, conformance_image, log,  # noqa: E402
                             session, sim_and_gateway, wait_for)

COUNT = 20
BUDGET = 3
SLICE_S = 2
IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
# Budget 3 per adapter; idle time and connect wait at their defaults (2 s,
# 30 s: the defaults must cover a turn); a shorter time slice keeps the
# hammering part short.
CONF = '\n'.join(['[ble]', 'max_connections_per_adapter = %d' % BUDGET,
                  'time_slice = %ds' % SLICE_S,
                  '[request]', 'timeout = 5s'])

t = Tap()


def fleet(adapters):
    return {'count': COUNT, 'adapters': [{'max_connections': BUDGET}] * adapters}


def ports_of(gw):
    def all_seen():
        st, d = gw.request('GET', '/api/v1/devices')
        if st != 200 or len(d['devices']) < COUNT:
            return None
        return {x['id']: x['udp_port'] for x in d['devices']}
    return wait_for('%d watches discovered' % COUNT, all_seen, timeout=60, step=0.3)


def echo_all(ports, addrs, timeout=45):
    """One echo to each of addrs at once; returns (errors, seconds)."""
    return echo_ports([ports[a] for a in addrs], timeout)


def hammer(ports, groups, seconds):
    """Each group is one client hammering its watches: one echo in flight
    per watch, the next sent as soon as the answer came. Per-watch counts
    of answers and of SMP errors."""
    answers = {a: 0 for g in groups for a in g}
    errors = {a: 0 for g in groups for a in g}
    stop = time.monotonic() + seconds

    def worker(k, addr):
        c = Client(ports[addr], timeout=40)
        n = 0
        try:
            # Bounded in time; and in count (far above what fits in it).
            while time.monotonic() < stop and n < 100000:
                n += 1
                text = 'c%d %s %d' % (k, addr, n)
                try:
                    if c.echo(text) == text:
                        answers[addr] += 1
                except SmpError:
                    errors[addr] += 1
                except OSError:
                    errors[addr] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k, a))
               for k, g in enumerate(groups) for a in g]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=seconds + 60)
    return answers, errors


class UpSampler:
    """Samples the gateway's connected (or connecting) BLE links per
    adapter while running (GET /api/v1/devices)."""

    def __init__(self, gw):
        self.gw = gw
        self.max_per_adapter = {}
        self.max_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run)

    def _run(self):
        # Bounded: stops when told, and after 600 samples at most.
        while not self._stop.is_set() and self.samples < 600:
            try:
                st, d = self.gw.request('GET', '/api/v1/devices', timeout=10)
                devs = d['devices'] if st == 200 else []
            except (ValueError, KeyError, TypeError, OSError):
                devs = []
            per = {}
            for d in devs:
                if d.get('link_state') == 'up':
                    ad = (d.get('advertising') or {}).get('adapter')
                    per[ad] = per.get(ad, 0) + 1
            for a, n in per.items():
                self.max_per_adapter[a] = max(self.max_per_adapter.get(a, 0), n)
            self.max_total = max(self.max_total, sum(per.values()))
            self.samples += 1
            self._stop.wait(0.1)

    def __enter__(self):
        self._th.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._th.join(timeout=30)


def check_one_each(gw, ports, addrs):
    with UpSampler(gw) as up:
        errors, secs = echo_all(ports, addrs)
    t.eq(errors, [], 'one echo to each of %d watches at once, budget %d: every one '
         'answered (%.1f s)' % (COUNT, BUDGET, secs))
    t.ok(secs < 40, 'in bounded time (%.1f s < 40 s)' % secs)
    t.ok(max(up.max_per_adapter.values() or [0]) <= BUDGET,
         'never more than %d links up on the adapter (saw %r)' % (BUDGET, up.max_per_adapter))


def check_hammer(ports, addrs):
    groups = [addrs[:10], addrs[10:]]
    answers, errors = hammer(ports, groups, 30)
    counts = [answers[a] for a in addrs]
    log('answers per watch: %r' % counts)
    log('errors per watch: %r' % [errors[a] for a in addrs])
    t.ok(min(counts) > 0, 'two clients hammering 10 watches each: every watch answered '
         '(min %d, max %d, total %d)' % (min(counts), max(counts), sum(counts)))
    t.eq(sum(errors.values()), 0, 'no request failed while waiting for its turn')


def check_upload_kept(sim, gw, ports, addrs):
    img = gw.add_image(IMG)
    target, others = addrs[0], addrs[1:]
    # The watch connected and idle first: the job must keep its link.
    errs, _ = echo_all(ports, [target])
    t.eq(errs, [], 'upload target answers')
    mark = len(gw.read_log())
    st, job = gw.update(target, img, mode='upload')
    t.eq(st, 202, 'upload job queued')
    stop = threading.Event()
    polled = {a: 0 for a in others}

    def poller():
        clients = {a: Client(ports[a], timeout=40) for a in others}
        try:
            # Round after round over the 19 others, bounded in count.
            for _ in range(200):
                for a, c in clients.items():
                    if stop.is_set():
                        return
                    try:
                        if c.echo('poll') == 'poll':
                            polled[a] += 1
                    except (SmpError, OSError):
                        pass
        finally:
            for c in clients.values():
                c.close()

    th = threading.Thread(target=poller)
    th.start()
    t0 = time.monotonic()
    try:
        j = gw.wait_job(job['id'], timeout=180)
    finally:
        stop.set()
        th.join(timeout=60)
    secs = time.monotonic() - t0
    t.eq(j['state'], 'done', 'upload done while 19 others were polled (%.1f s, %s)' %
         (secs, j.get('error')))
    t.eq(sim.slots(0)[1]['hash'], img, 'image complete in slot 1')
    # From the job's start to its end (released afterwards, the link may
    # go to a waiter like any other).
    during = gw.read_log()[mark:]
    m = re.search(r'job %d: upload .*: done\n' % job['id'], during)
    t.ok(m is not None, 'the job reported its end in the log')
    during = during[:m.end()] if m else during
    drops = [l for l in during.splitlines() if '%s: disconnected' % target in l]
    if not t.eq(drops, [], 'the uploading watch was never disconnected for others'):
        log('\n'.join(l for l in during.splitlines() if target in l or 'job' in l))
    t.ok(sum(1 for n in polled.values() if n) > 0,
         'other watches took turns meanwhile (%d of 19 answered)' %
         sum(1 for n in polled.values() if n))


def check_fleet(adapters, checks):
    with session(need=BLE_NEEDS, tap=t) as (wd, run):
        bus = run.start(Bus())
        sim, gw = sim_and_gateway(run, wd, CONF, bus=bus.address, fleet=fleet(adapters),
                                  count=COUNT)
        addrs = [d['address'] for d in sim.ctl({'cmd': 'list'})['devices']]
        ports = ports_of(gw)
        for check in checks:
            check(sim, gw, ports, addrs)
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')


def check_two_adapters(sim, gw, ports, addrs):
    with UpSampler(gw) as up:
        errors, secs = echo_all(ports, addrs)
    t.eq(errors, [], 'two adapters: one echo to each of %d watches answered (%.1f s)' %
         (COUNT, secs))
    t.ok(len(up.max_per_adapter) == 2 and max(up.max_per_adapter.values()) <= BUDGET,
         'two adapters: each within its budget (saw %r)' % up.max_per_adapter)
    t.ok(up.max_total > BUDGET, 'two adapters used together (%d links up at once)' %
         up.max_total)


def main():
    check_fleet(1, [lambda s, g, p, a: check_one_each(g, p, a),
                    lambda s, g, p, a: check_hammer(p, a),
                    check_upload_kept])
    check_fleet(2, [check_two_adapters])
    t.done()

if __name__ == '__main__':
    main()
