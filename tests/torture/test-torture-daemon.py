# SPDX-License-Identifier: MIT
"""Torture of the daemon itself, over UDP against smpgw-sim: a client
sending 10 000 datagrams a second (valid, garbage and truncated), clients
that vanish mid-request (UDP and HTTP), kill -9 of smpgwd during update
jobs (three times, at random moments), and the state directory's disk full
(a small tmpfs in a private mount namespace: needs root, else skipped).
The daemon must survive, bystander watches must not notice, no job or
image may be lost, and no image may be confirmed without booting.
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torture import (Bystanders, Client, Tap, image_path, log,  # noqa: E402
                     seeded_random, wait_for)
from updates_harness import Gateway, session, sim_and_gateway  # noqa: E402

COUNT = 8
FLOOD, VANISH, DISK = 0, 1, 5
KILL = [2, 3, 4]
BYSTANDERS = [6, 7]
FLEET = {'defaults': {'boot_ms': 300,
                      'flash': {'erase_sector_us': 2000, 'program_page_us': 20}},
         # the kill -9 watches: a PineTime's own flash and boot times
         'devices': [{}, {}] + [{'boot_ms': 1500, 'flash': {'erase_sector_us': 70000,
                                                            'program_page_us': 400}}] * 3}
CONF = '\n'.join(['[request]', 'timeout = 2s', 'first_chunk_timeout = 20s',
                  '[update]', 'boot_timeout = 30s', 'retry_timeout = 90s'])
t = Tap()
rnd = seeded_random()


def ports_of(gw, root=''):
    with open(root + os.path.join(gw.state, 'ports.json')) as f:
        return json.load(f)['devices']


def alive(gw):
    return gw.proc.poll() is None


def echo_ok(port, text='ping', timeout=5):
    c = Client(port, timeout=timeout)
    try:
        return c.echo(text) == text
    except Exception:  # noqa: BLE001
        return False
    finally:
        c.close()


# ---- a client sending 10 000 datagrams a second --------------------------------

def flood(gw, ports):
    port = ports['w%d' % FLOOD]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.bind(('127.0.0.1', 0))
    echo = bytes([0x0a, 0, 0, 6, 0, 0, 0, 0, 0xa1, 0x61, 0x64, 0x62, 0x68, 0x69])
    kinds = [echo, echo[:5], echo + b'x', b'\xff' * 30, echo[:8] + b'\xff' * 6,
             bytes([0x0b]) + echo[1:]]  # ... and a response op code
    # Prebuilt datagrams (seq varies), paced against the clock: the rate
    # catches up after any scheduling delay.
    pool = []
    for k in range(512):
        d = kinds[rnd.randrange(len(kinds))]
        pool.append(d[:6] + bytes([k & 0xff]) + d[7:] if len(d) > 7 else d)
    dest = ('127.0.0.1', port)
    sendto = s.sendto
    sent = 0
    seconds = 3.0
    t0 = time.monotonic()
    while True:
        el = time.monotonic() - t0
        if el >= seconds:
            break
        for _ in range(min(500, int(el * 10000) - sent)):
            try:
                sendto(pool[sent & 511], dest)
            except OSError:
                pass
            sent += 1
        time.sleep(0.001)
    rate = sent / (time.monotonic() - t0)
    answers = 0
    s.settimeout(0.5)
    try:
        while True:
            s.recv(2048)
            answers += 1
    except (socket.timeout, OSError):
        pass
    s.close()
    log('flood: %d datagrams at %.0f/s, %d answers read back' % (sent, rate, answers))
    t.ok(rate >= 9000, 'flood: %.0f datagrams/s sent' % rate)
    t.ok(alive(gw), 'flood: smpgwd survives')
    t.ok(wait_for('the flooded watch to answer', lambda: echo_ok(ports['w%d' % FLOOD]),
                  timeout=30, step=0.5), 'flood: the flooded watch answers again')
    st, d = gw.request('GET', '/api/v1/devices/w%d' % FLOOD)
    c = d.get('counters', {}) if st == 200 else {}
    t.ok(c.get('malformed_requests', 0) > 0,
         'flood: malformed datagrams counted (%s)' % c.get('malformed_requests'))


# ---- clients that vanish mid-request --------------------------------------------

def vanish(gw, sim, ports):
    port = ports['w%d' % VANISH]
    sim.ctl({'cmd': 'fault', 'device': VANISH, 'fault': 'hang'})
    for k in range(50):  # ask, then go away before the answer
        c = Client(port, timeout=1)
        c.send_raw(bytes([0x0a, 0, 0, 6, 0, 0, k, 0, 0xa1, 0x61, 0x64, 0x62, 0x68, 0x69]))
        c.close()
    time.sleep(0.5)
    sim.ctl({'cmd': 'fault', 'device': VANISH, 'fault': 'unhang'})
    for k in range(50):  # the watch answers, the client is already gone
        c = Client(port, timeout=1)
        c.send_raw(bytes([0x0a, 0, 0, 6, 0, 0, k, 0, 0xa1, 0x61, 0x64, 0x62, 0x68, 0x69]))
        c.close()
    # HTTP clients that announce a body and vanish, or read half an answer.
    hp = int(gw.base.rsplit(':', 1)[1])
    for k in range(20):
        s = socket.create_connection(('127.0.0.1', hp), timeout=5)
        if k % 2:
            s.sendall(b'POST /api/v1/images HTTP/1.1\r\nHost: x\r\n'
                      b'Content-Type: application/octet-stream\r\n'
                      b'Content-Length: 100000\r\n\r\n' + b'\x3d\xb8\xf3\x96' * 250)
        else:
            s.sendall(b'GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n')
            s.recv(100)
        s.close()
    t.ok(alive(gw), 'vanishing clients: smpgwd survives')
    t.ok(wait_for('the watch behind vanished clients', lambda: echo_ok(port),
                  timeout=30, step=0.5), 'vanishing clients: the watch serves the next one')
    st, _ = gw.request('GET', '/api/v1/devices')
    t.eq(st, 200, 'vanishing clients: REST still answers')


# ---- kill -9 during update jobs --------------------------------------------------

def slot(sim, i, n):
    s = sim.slots(i)[n]
    return s if s.get('present') else None


def kill9(gw, sim, img):
    """kill -9 during the upload, during the reboot wait, and at a random
    moment; the daemon restarts each time and finishes the jobs."""
    jobs = {}
    for i in KILL:
        st, job = gw.update('w%d' % i, img, mode='test-confirm')
        jobs[i] = job['id']

    def in_phase(phases, min_bytes=0):
        for j in (gw.job(x) for x in jobs.values()):
            if j and j.get('phase') in phases and \
                    j.get('progress', {}).get('bytes', 0) >= min_bytes:
                return True
        return all((gw.job(x) or {}).get('state') not in ('queued', 'running')
                   for x in jobs.values())
    moments = [lambda: wait_for('an upload under way', lambda: in_phase(
                   ('upload',), rnd.randrange(1, 90000)), timeout=60, step=0.01),
               lambda: wait_for('a reboot wait', lambda: in_phase(('reset', 'wait')),
                                timeout=60, step=0.01),
               lambda: time.sleep(rnd.uniform(0.0, 1.0))]
    for k, moment in enumerate(moments):
        moment()
        phases = {i: (gw.job(j) or {}).get('phase') for i, j in jobs.items()}
        log('kill -9 #%d during phases %r' % (k + 1, phases))
        gw.kill9()
        gw.start()
    bad = []
    for i, jid in jobs.items():
        j = gw.wait_job(jid, timeout=150)
        s0 = slot(sim, i, 0) or {}
        if j['state'] != 'done' or s0.get('hash') != img or not s0.get('confirmed'):
            bad.append((i, j['state'], j.get('error'), s0.get('hash', '')[:8]))
    t.eq(bad, [], 'kill -9 x3 during 3 test-confirm jobs: every job done, new image '
         'running and confirmed')
    st, d = gw.request('GET', '/api/v1/images')
    ids = [im['id'] for im in (d.get('images', []) if isinstance(d, dict) else [])]
    t.ok(img in ids, 'kill -9: the stored image is still there')
    for i in KILL:
        d = next(x for x in sim.ctl({'cmd': 'list'})['devices'] if x['index'] == i)
        s0 = d['slots'][0]
        t.ok(not (s0['hash'] == img and s0['confirmed']) or (s0['active'] and d['boot_count'] > 1),
             'kill -9: w%d confirmed the new image only after booting it' % i)


# ---- the state directory's disk full ---------------------------------------------

def disk_full(wd, sim, img_bytes):
    """A second smpgwd with its state directory on a 3 MiB tmpfs of its own
    (unshare -m: the mount exists only in its namespace); the test fills it
    through /proc/PID/root."""
    if os.geteuid() != 0 or not shutil_which('unshare'):
        print('ok %d - # SKIP disk full: needs root and unshare' % (t.n + 1))
        t.n += 1
        return
    d = os.path.join(wd, 'full')
    os.makedirs(d)
    gw = Gateway(d, sim, CONF, devices=['w%d' % i for i in range(COUNT)])
    os.makedirs(gw.state)
    wrap = os.path.join(d, 'smpgwd-tmpfs')
    with open(wrap, 'w') as f:
        f.write('#!/bin/sh\nexec unshare -m --propagation private sh -c '
                '\'mount -t tmpfs -o size=3m smpgw-full "$0" && exec "$@"\' "%s" "%s" "$@"\n'
                % (gw.state, gw.exe))
    os.chmod(wrap, 0o755)
    gw.exe = wrap
    try:
        gw.start()
    except Exception as e:  # noqa: BLE001
        print('ok %d - # SKIP disk full: cannot mount a tmpfs (%s)' % (t.n + 1, e))
        t.n += 1
        gw.stop()
        return
    try:
        root = '/proc/%d/root' % gw.proc.pid
        ports = ports_of(gw, root)
        img = gw.add_image(image_path())  # fits: 100 KiB of 3 MiB
        filler = root + os.path.join(gw.state, 'filler')
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(4096):  # 16 MiB at most: more than the tmpfs
                os.write(fd, b'\0' * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        with open(image_path('app-2.0.0-ed25519.bin'), 'rb') as f:
            other = f.read()
        st, _ = gw.request('POST', '/api/v1/images', raw=other)
        t.ok(st >= 400 and alive(gw), 'disk full: image upload refused (%s), smpgwd alive' % st)
        st, job = gw.update('w%d' % DISK, img, mode='upload')
        if st in (200, 201, 202):
            j = gw.wait_job(job['id'], timeout=90)
            log('disk full: job accepted, ended %s (%s)' % (j['state'], j.get('error')))
        t.ok(alive(gw) and st != 500, 'disk full: an update job is refused (507) or runs (%s), '
             'smpgwd alive' % st)
        t.ok(echo_ok(ports['w%d' % DISK]), 'disk full: UDP endpoints keep working')
        st, _ = gw.request('GET', '/api/v1/devices')
        t.eq(st, 200, 'disk full: REST reads keep working')
        os.unlink(filler)
        st, _ = gw.request('POST', '/api/v1/images', raw=other)
        t.ok(st in (200, 201), 'disk space back: another image is stored (%s)' % st)
        st, job = gw.update('w%d' % DISK, img, mode='upload')
        j = gw.wait_job(job['id'], timeout=90) if st in (200, 201, 202) else {}
        t.eq(j.get('state'), 'done', 'disk space back: an update job runs to the end')
        t.ok(slot(sim, DISK, 1) and slot(sim, DISK, 1)['hash'] == img,
             'disk space back: the image is in the slot')
        t.eq(gw.stop(), 0, 'disk full: clean exit')
    finally:
        gw.stop()


def shutil_which(name):
    import shutil
    return shutil.which(name)


def main():
    with open(image_path(), 'rb') as f:
        img_bytes = f.read()
    with session() as (wd, run):
        sim, gw = sim_and_gateway(run, wd, CONF, count=COUNT, fleet=FLEET)
        img = gw.add_image(image_path())
        ports = wait_for('ports.json', lambda: os.path.exists(
            os.path.join(gw.state, 'ports.json')) and ports_of(gw), timeout=10)
        by = run.start(Bystanders([ports['w%d' % i] for i in BYSTANDERS]))
        flood(gw, ports)
        vanish(gw, sim, ports)
        by.stop()
        t.ok(by.count > 0, 'bystanders answered %d echoes' % by.count)
        t.eq(by.failures[:5], [], 'no bystander echo failed or took > 5 s')
        kill9(gw, sim, img)
        ports = wait_for('ports.json', lambda: ports_of(gw), timeout=10)
        t.ok(all(echo_ok(ports['w%d' % i]) for i in BYSTANDERS),
             'after kill -9: the other watches answer on their new ports')
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
        disk_full(wd, sim, img_bytes)
    t.done()


if __name__ == '__main__':
    main()
