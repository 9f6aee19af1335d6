# SPDX-License-Identifier: MIT
"""smpgwd's BLE side across changes of its surroundings, through the real
daemon over a private D-Bus bus where smpgw-sim plays bluetoothd.

late-bus: smpgwd starts before the bus exists (its unix:path= address is
  known in advance); it keeps serving, retries with backoff, logs once per
  state change, and manages the watches once the bus and org.bluez appear.
  Also: the simulator's control `counters` has the fake BlueZ's counters,
  and /metrics counts the BLE frames.
bus-loss: the bus daemon itself dies after start (kill -9) and comes back at
  the same unix:path= address, with the simulator restarted on it: smpgwd
  notices its own connection closing (not only bluetoothd leaving),
  reconnects with backoff, keeps the watches' ports, and echo works again.
reload: SIGHUP with a new [ble] allowlist releases the watches it no longer
  admits (endpoint closed, link closed, device.removed) and picks up the
  ones it now admits (same port as before when known).
"""
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BUS_CONF = os.environ.get('BUS_CONF', os.path.join(HERE, 'bus.conf'))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

from gw_harness import (BLE_NEEDS, Bus, Gateway, Sim, Tap, free_udp_range, log,  # noqa: E402
                        session, wait_for)
from smp_udp_client import Client, SmpError  # noqa: E402

IMAGE = 'app-0.9.0-3k-hash.bin'
ADDRS = ['C0:FF:EE:AA:00:%02X' % (i + 1) for i in range(4)]
FLEET = {'devices': [{'address': a} for a in ADDRS]}


def conf_text(allow=None, base=0):
    lines = ['[general]', 'log_level = debug',
             '[ble]', 'idle_timeout = 30s', 'connect_timeout = 10s']
    if allow is not None:
        lines += ['manage = allowlist', 'allow = ' + ', '.join(allow)]
    lines += ['[udp]', 'base_port = %d' % base,
              '[request]', 'timeout = 5s', 'connect_timeout = 20s']
    return '\n'.join(lines) + '\n'


def ok_echo(port, text, timeout=20):
    c = Client(port, timeout=timeout)
    try:
        return c.echo(text) == text
    except (SmpError, TimeoutError, socket.timeout, OSError):
        return False
    finally:
        c.close()


def http_get(port, path):
    with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=10) as r:
        return r.read().decode()


def metric(text, name, **labels):
    want = ','.join('%s="%s"' % kv for kv in labels.items())
    m = re.search(r'^%s\{%s\} (\S+)$' % (re.escape(name), re.escape(want)), text, re.M)
    return float(m.group(1)) if m else None


def http_json(port, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), data=data,
                                 method=method)
    req.add_header('Content-Type', 'application/octet-stream' if raw is not None
                   else 'application/json')
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def check_upload_metrics(t, hport, device):
    """An upload through the engine moves the upload metrics by the image."""
    path = os.path.join(os.environ['CONFORMANCE_DIR'], 'images', IMAGE)
    with open(path, 'rb') as f:
        data = f.read()
    image = http_json(hport, 'POST', '/api/v1/images', raw=data)['id']
    job = http_json(hport, 'POST', '/api/v1/devices/%s/update' % device,
                    {'image': image, 'mode': 'upload'})['id']
    end = wait_for('the upload job', lambda: (lambda j: j if j['state'] not in (
        'queued', 'running') else None)(http_json(hport, 'GET', '/api/v1/jobs/%d' % job)),
        timeout=60, step=0.2)
    t.eq(end['state'], 'done', 'upload job over BLE done')
    m = http_get(hport, '/metrics')
    sent = metric(m, 'smpgw_upload_bytes_total', transport='ble') or 0
    t.ok(sent >= len(data), '/metrics: upload bytes %d for a %d-byte image'
         % (sent, len(data)))
    t.ok((metric(m, 'smpgw_upload_throughput_bytes_per_second_count', transport='ble')
          or 0) >= 1, '/metrics: upload throughput observed')


def bus_at(run, wd):
    """A private bus, not started yet, at an address known before it is."""
    address = 'unix:path=' + os.path.join(wd, 'bus')
    return run.add(Bus(BUS_CONF, address)), address


def sim_on(run, wd, address, seed):
    """smpgw-sim playing bluetoothd for ADDRS on the bus at address."""
    return run.start(Sim(wd, len(ADDRS), extra=['--bus', address, '--seed', str(seed)],
                         udp=False, fleet=FLEET))


def case_late_bus(t, wd, run):
    bus, address = bus_at(run, wd)
    gw = run.add(Gateway(wd, conf_text()))
    gw.start([], bluez_bus=address)
    hport = gw.http_port()
    # Backoff from 0.5 s: 0.5 + 1 + 2 s, three more attempts by now.
    time.sleep(4)
    text = gw.read_log()
    t.ok(gw.proc.poll() is None, 'smpgwd runs without the bus')
    t.eq(len(re.findall(r'ble: cannot reach', text)), 1,
         'the unreachable bus is logged once')
    t.eq(len(re.findall(r'still unreachable', text)), 0,
         'not again at every attempt while the reason stays the same')
    t.ok(len(re.findall(r'ble: attempt \d+:', text)) >= 2, 'it retried (debug lines)')
    t.ok('"devices"' in http_get(hport, '/api/v1/devices'), 'the REST API serves meanwhile')

    bus.start()
    sim = sim_on(run, wd, address, 3)
    ports = wait_for('the watches to be managed', lambda: gw._ports(ADDRS), timeout=60)
    t.eq(sorted(ports), sorted(ADDRS), 'every watch managed once the bus appeared')
    text = gw.read_log()
    t.eq(len(re.findall(r'is reachable after \d+ attempts', text)), 1,
         'the bus appearing is logged once')
    errors = [a for a in ADDRS if not ok_echo(ports[a], 'late ' + a, timeout=40)]
    t.eq(errors, [], 'echo through every watch')

    c = sim.ctl({'cmd': 'counters'})
    bz = c.get('bluez') or {}
    t.ok(bz.get('frames', 0) >= len(ADDRS) and bz.get('writes', 0) >= len(ADDRS)
         and bz.get('notifications', 0) >= len(ADDRS)
         and bz.get('connects', 0) >= len(ADDRS),
         'sim counters: the fake BlueZ counted frames, writes, notifications, '
         'connects %r' % (bz,))
    t.ok(all(k in bz for k in ('drops_busy', 'drops_link', 'drops_notify',
                               'disconnects', 'connect_failures')),
         'sim counters: every BlueZ counter is there')
    m = http_get(hport, '/metrics')
    t.ok((metric(m, 'smpgw_frames_total', transport='ble', dir='tx') or 0) >= len(ADDRS)
         and (metric(m, 'smpgw_frames_total', transport='ble', dir='rx') or 0)
         >= len(ADDRS), '/metrics counts the BLE frames both ways')
    t.ok((metric(m, 'smpgw_devices', state='up') or 0) >= 1, '/metrics: devices up')
    check_upload_metrics(t, hport, ADDRS[0])
    t.eq(gw.stop(), 0, 'clean exit')


def case_bus_loss(t, wd, run):
    bus, address = bus_at(run, wd)
    bus.start()
    sim = sim_on(run, wd, address, 7)
    gw = run.add(Gateway(wd, conf_text()))
    ports = gw.start(ADDRS, bluez_bus=address, timeout=40)
    t.ok(ok_echo(ports[ADDRS[0]], 'before', 40), 'echo before the bus goes')

    bus.proc.kill()  # the bus daemon dies; its socket file stays
    bus.proc.wait(timeout=5)
    bus.proc.stdout.close()
    sim.stop()
    wait_for('smpgwd to notice', lambda: 'lost the connection to' in gw.read_log(),
             timeout=20)
    time.sleep(1.5)  # a few reconnect attempts against the dead address
    t.ok(gw.proc.poll() is None, 'smpgwd survives the bus going away')
    t.ok(not ok_echo(ports[ADDRS[0]], 'nobody', timeout=1),
         'no echo while the bus is gone')

    path = os.path.join(wd, 'bus')  # the dead bus's socket file
    if os.path.exists(path):
        os.unlink(path)
    bus.start()
    sim.start()
    t.ok(wait_for('echo through the new bus', lambda: ok_echo(
        ports[ADDRS[0]], 'after', timeout=5), timeout=90, step=0.5),
         'echo works again after the bus came back')
    errors = [a for a in ADDRS if not ok_echo(ports[a], 'again ' + a, timeout=40)]
    t.eq(errors, [], 'every watch answers on its old port')
    text = gw.read_log()
    t.eq(len(re.findall(r'lost the connection to', text)), 1, 'the loss is logged once')
    t.eq(len(re.findall(r'is reachable after \d+ attempts', text)), 1,
         'the reconnect is logged once')
    t.eq(gw.ports(), ports, 'the same endpoints throughout')
    t.eq(gw.stop(), 0, 'clean exit')


class Events:
    """GET /api/v1/events, read as it comes (bounded waits)."""

    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=5)
        self.s.sendall(b'GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n')
        self.buf = b''

    def wait(self, pattern, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.buf.decode(errors='replace')):
                return True
            self.s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            self.buf += chunk
        return bool(re.search(pattern, self.buf.decode(errors='replace')))

    def stop(self):
        self.s.close()


def udp_closed(port):
    """True when nothing answers on the port any more."""
    return not ok_echo(port, 'anyone?', timeout=1)


def case_reload(t, wd, run):
    a0, a1, a2, a3 = ADDRS
    address = run.add(Bus(BUS_CONF)).start()
    sim = sim_on(run, wd, address, 5)
    base = free_udp_range(len(ADDRS) + 4)
    gw = run.add(Gateway(wd, conf_text([a0, a1], base)))
    ports = gw.start([a0, a1], bluez_bus=address, timeout=40)
    hport = gw.http_port()
    wait_for('the others to be seen', lambda: all(
        re.search(r'ble: %s \([^)]*\) seen, not managed' % a, gw.read_log())
        for a in (a2, a3)), timeout=30)
    t.eq(sorted(gw.ports()), [a0, a1], 'only the allowed watches are managed')
    t.ok(ok_echo(ports[a0], 'a0', 40) and ok_echo(ports[a1], 'a1', 40),
         'the allowed watches answer')
    before = sim.ctl({'cmd': 'counters'})['bluez']['disconnects']
    ev = run.add(Events(hport))
    gw.write_conf(conf_text([a0, a2], base))
    gw.signal(signal.SIGHUP)
    now = wait_for('the reload to apply', lambda: gw._ports([a0, a2]), timeout=30)
    t.eq(sorted(now), [a0, a2], 'reload: %s released, %s picked up' % (a1, a2))
    t.eq(now[a0], ports[a0], 'the unchanged watch keeps its port')
    t.ok(ev.wait(r'event: device\.removed\ndata: [^\n]*"%s"' % a1),
         'device.removed event for the released watch')
    t.ok(ev.wait(r'event: device\.added\ndata: [^\n]*"%s"' % a2),
         'device.added event for the admitted watch')
    t.ok(udp_closed(ports[a1]), 'the released watch\'s endpoint is closed')
    t.ok(wait_for('the released link to close', lambda: sim.ctl(
        {'cmd': 'counters'})['bluez']['disconnects'] > before, timeout=20),
        'the released watch\'s link is closed')
    t.ok(ok_echo(now[a2], 'a2', 40), 'the newly allowed watch answers')
    t.ok(ok_echo(now[a0], 'a0 again', 40), 'the unchanged watch still answers')
    t.ok('no longer allowed: released' in gw.read_log(), 'the release is logged')

    # Admitted again: it is known (store), and gets its old port back.
    gw.write_conf(conf_text([a0, a1, a2], base))
    gw.signal(signal.SIGHUP)
    again = wait_for('the reload to apply', lambda: gw._ports([a0, a1, a2]), timeout=30)
    t.eq(again[a1], ports[a1], 'a watch allowed again gets its old port')
    t.ok(ok_echo(again[a1], 'a1 back', 40), 'and answers')
    t.ok(a3 not in gw.ports(), 'a watch never allowed stays unmanaged')
    t.eq(gw.stop(), 0, 'clean exit')


def main():
    cases = {'late-bus': case_late_bus, 'bus-loss': case_bus_loss, 'reload': case_reload}
    which = sys.argv[1:] or list(cases)
    t = Tap()
    for name in which:
        with session(need=BLE_NEEDS) as (wd, run):
            log('case ' + name)
            cases[name](t, wd, run)
    t.done()


if __name__ == '__main__':
    main()
