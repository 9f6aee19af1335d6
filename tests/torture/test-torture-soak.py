# SPDX-License-Identifier: MIT
"""Soak: SOAK_SECONDS (60 in CI, 600 nightly) of mixed traffic through the
real smpgwd against smpgw-sim over UDP: echo clients of every size, image
state reads, garbage datagrams, upload jobs one after the other, REST reads,
SSE clients that come and go, and reply faults on one watch. The daemon's
RSS and open fds are sampled; neither may grow once warmed up (RSS: the
median of the last quarter against the second quarter; fds: quiet counts
before and after). Under ASan the RSS bound is loose: its quarantine holds
freed memory by design.
"""
import os
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torture import (SOAK_SECONDS, Client, Tap, fd_count,  # noqa: E402
                     image_path, log, rss_kib, seeded_random, under_asan, wait_for)
from updates_harness import session, sim_and_gateway  # noqa: E402

COUNT = 8
UPLOAD = [0, 1]
FAULTY = 2
FLEET = {'defaults': {'boot_ms': 300, 'flash': {'erase_sector_us': 2000,
                                                'program_page_us': 20}}}
CONF = '\n'.join(['[request]', 'timeout = 1s', 'first_chunk_timeout = 20s',
                  '[update]', 'boot_timeout = 30s', 'retry_timeout = 60s'])
t = Tap()
rnd = seeded_random()


class Traffic:
    def __init__(self, gw, sim, ports, img):
        self.gw, self.sim, self.ports, self.img = gw, sim, ports, img
        self.stop = threading.Event()
        self.pause = threading.Event()
        self.errors = []
        self.n = {}
        self.jobs = []
        self.threads = []

    def count(self, what):
        self.n[what] = self.n.get(what, 0) + 1

    def run(self, fn, *args):
        def loop():
            while not self.stop.is_set():
                if self.pause.is_set():
                    time.sleep(0.05)
                    continue
                try:
                    fn(*args)
                except Exception as e:  # noqa: BLE001
                    self.errors.append('%s%r at %.1f s: %r' % (fn.__name__, args,
                                                                time.monotonic(), e))
                    time.sleep(0.2)
        th = threading.Thread(target=loop, daemon=True)
        th.start()
        self.threads.append(th)

    def echo(self, i):
        c = Client(self.ports['w%d' % i], timeout=5)
        try:
            for _ in range(20):
                text = 'x' * rnd.randrange(0, 1500)
                try:
                    if c.echo(text) != text:
                        raise ValueError('wrong answer')
                except Exception as e:  # noqa: BLE001
                    if i != FAULTY:
                        raise
                    # Garbled replies on purpose: an error or a timeout, never a hang.
                    self.count('faulty %s' % type(e).__name__)
                self.count('echo')
        finally:
            c.close()

    def state(self):
        c = Client(self.ports['w%d' % rnd.randrange(3, COUNT)], timeout=5)
        try:
            c.image_state()
            self.count('state')
        finally:
            c.close()
        time.sleep(0.05)

    def garbage(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            n = rnd.randrange(0, 40)
            s.sendto(bytes(rnd.randrange(256) for _ in range(n)),
                     ('127.0.0.1', self.ports['w%d' % rnd.randrange(3, COUNT)]))
        s.close()
        self.count('garbage')
        time.sleep(0.2)

    def upload(self, i):
        c = Client(self.ports['w%d' % i], timeout=10)
        try:
            c.request(2, 1, 5, {}, check=False)  # erase slot 1
        finally:
            c.close()
        st, job = self.gw.update('w%d' % i, self.img, mode='upload')
        j = self.gw.wait_job(job['id'], timeout=60)
        self.jobs.append(j['state'])
        self.count('upload')

    def rest(self):
        for path in ('/api/v1/devices', '/api/v1/jobs', '/metrics', '/api/v1/devices/w3'):
            with urllib.request.urlopen(self.gw.base + path, timeout=10) as r:
                r.read()
        self.count('rest')
        time.sleep(0.1)

    def sse(self):
        port = int(self.gw.base.rsplit(':', 1)[1])
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
        try:
            s.sendall(b'GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n')
            s.settimeout(0.5)
            end = time.monotonic() + rnd.uniform(0.2, 2.0)
            while time.monotonic() < end:
                try:
                    if not s.recv(4096):
                        break
                except socket.timeout:
                    pass
        finally:
            s.close()
        self.count('sse')

    def faults(self):
        f = rnd.choice(['answer_twice', 'wrong_seq', 'corrupt_notification',
                        'truncate_notification'])
        self.sim.ctl({'cmd': 'fault', 'device': FAULTY, 'fault': f, 'count': 2})
        self.count('fault')
        time.sleep(1.0)

    def start(self):
        for i in range(3, COUNT):
            self.run(self.echo, i)
        self.run(self.echo, FAULTY)
        self.run(self.state)
        self.run(self.garbage)
        for i in UPLOAD:
            self.run(self.upload, i)
        self.run(self.rest)
        self.run(self.sse)
        self.run(self.faults)

    def quiet(self, pid):
        """fds with the traffic paused (every request answered)."""
        self.pause.set()
        time.sleep(2.5)
        n = fd_count(pid)
        self.pause.clear()
        return n

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=70)


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else 0


def main():
    # Under ASan, freed memory sits in a quarantine (256 MiB by default) that
    # fills for minutes and reads as growth: keep it small so RSS shows leaks.
    os.environ['ASAN_OPTIONS'] = ':'.join(filter(None, [
        os.environ.get('ASAN_OPTIONS', ''), 'quarantine_size_mb=8']))
    with session() as (wd, run):
        sim, gw = sim_and_gateway(run, wd, CONF, count=COUNT, fleet=FLEET)
        img = gw.add_image(image_path())
        import json
        ports = wait_for('ports.json', lambda: json.load(
            open(os.path.join(gw.state, 'ports.json')))['devices'], timeout=10)
        pid = gw.proc.pid
        asan = under_asan(pid)
        tr = Traffic(gw, sim, ports, img)
        run.defer(tr.finish)
        tr.start()
        t0 = time.monotonic()
        warm = SOAK_SECONDS / 4
        samples = []
        fds_warm = None
        while time.monotonic() - t0 < SOAK_SECONDS:
            time.sleep(2.0)
            el = time.monotonic() - t0
            if fds_warm is None and el >= warm:
                fds_warm = tr.quiet(pid)
            samples.append((el, rss_kib(pid), fd_count(pid)))
            if gw.proc.poll() is not None:
                break
        tr.finish()
        time.sleep(1.0)
        fds_end = fd_count(pid)
        t.ok(gw.proc.poll() is None, 'smpgwd alive after %.0f s of mixed traffic' %
             (time.monotonic() - t0))
        log('traffic: %r' % (tr.n,))
        log('RSS/fds samples: %s' % ' '.join('%.0f:%d/%d' % s for s in samples))
        t.ok(tr.n.get('echo', 0) > 100 and tr.n.get('upload', 0) >= 2 and
             tr.n.get('rest', 0) > 10, 'traffic flowed (%d echoes, %d uploads, %d REST '
             'rounds)' % (tr.n.get('echo', 0), tr.n.get('upload', 0), tr.n.get('rest', 0)))
        t.eq(tr.errors[:5], [], 'no client saw an error')
        if tr.errors:
            # Which requests the daemon gave up on (w%d: FAULTY's are expected).
            log('%d errors; now %.1f s; smpgwd timeouts (not w%d):\n%s' % (
                len(tr.errors), time.monotonic(), FAULTY, '\n'.join(
                    line for line in gw.read_log().splitlines()
                    if 'timed out' in line and 'w%d:' % FAULTY not in line)[-4000:]))
        t.eq([s for s in tr.jobs if s != 'done'], [], 'every upload job done (%d)'
             % len(tr.jobs))
        n = len(samples)
        q2 = [s[1] for s in samples[n // 4:n // 2]]
        q4 = [s[1] for s in samples[3 * n // 4:]]
        a, b = median(q2), median(q4)
        limit = a * (1.5 if asan else 1.1) + (16384 if asan else 1024)
        t.ok(b <= limit, 'RSS does not grow: %d KiB after warm-up, %d KiB at the end '
             '(limit %d%s)' % (a, b, limit, ', ASan' if asan else ''))
        t.ok(fds_warm is not None and fds_end <= fds_warm + 2,
             'fds do not grow: %s quiet after warm-up, %d at the end' % (fds_warm, fds_end))
        t.eq(gw.stop(timeout=20), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
