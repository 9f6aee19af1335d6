# SPDX-License-Identifier: MIT
"""Hermetic harness for the update-job tests (test-updates*.py) and the
upload benchmark: the real smpgw-sim (UDP faces, control socket) and the
real smpgwd (REST on an OS-chosen port) in a temporary directory, every
process reaped, every wait bounded.
"""
import functools
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

from harness_common import (HERE, SKIP, Bus, Running, Tap, free_udp_range, log,  # noqa: F401
                            reap, check_store, store_conf, wait_for)
from harness_common import session as _session
from harness_common import Workdir as _Workdir

free_udp_base = free_udp_range
# Kept with SMPGW_KEEP whether the test passed or not.
Workdir = functools.partial(_Workdir, prefix='smpgw-upd-', keep_passed=True)

# with session(tap=t) as (wd, run): harness_common.session for these tests
# (the daemon's log tail, without the REST lines, when the block raises or
# the Tap has failures); need=BLE_NEEDS when the test uses a bus.
session = functools.partial(_session, workdir=Workdir, tail_lines=100, skip=('http:',))
BLE_NEEDS = ('SMPGWD', 'SMPGW_SIM', 'dbus-daemon')


def conformance_image(name):
    d = os.environ.get('CONFORMANCE_DIR') or os.path.join(HERE, '..', 'data', 'conformance')
    return os.path.join(d, 'images', name)


class Sim:
    """smpgw-sim: count watches (or a fleet file), UDP on base+i."""

    def __init__(self, workdir, count=1, fleet=None, extra=(), bus=None):
        self.exe = os.environ.get('SMPGW_SIM')
        self.bus = bus
        self.dir = workdir
        self.count = count
        self.fleet = fleet
        self.extra = list(extra)
        self.base = free_udp_base(count)
        self.control = os.path.join(workdir, 'sim.sock')
        self.log_path = os.path.join(workdir, 'sim.log')
        self.proc = None
        self.logf = None

    @staticmethod
    def available():
        exe = os.environ.get('SMPGW_SIM')
        return bool(exe and os.access(exe, os.X_OK))

    def start(self):
        args = [self.exe]
        if self.fleet is not None:
            path = os.path.join(self.dir, 'fleet.json')
            fleet = dict(self.fleet)
            fleet.setdefault('count', self.count)
            with open(path, 'w') as f:
                json.dump(fleet, f)
            args += ['--fleet', path]
        else:
            args += ['--count', str(self.count)]
        args += ['--udp-base', str(self.base), '--control', self.control] + self.extra
        if self.bus:
            args += ['--bus', self.bus]
        self.logf = open(self.log_path, 'w')
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        wait_for('the simulator control socket', self._ready, timeout=15)

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError('smpgw-sim exited: ' + open(self.log_path).read())
        if not os.path.exists(self.control):
            return False
        try:
            return self.ctl({'cmd': 'list'}).get('ok', False)
        except (ValueError, subprocess.TimeoutExpired):
            return False

    def ctl(self, request):
        out = subprocess.run([self.exe, 'ctl', self.control, json.dumps(request)],
                             capture_output=True, text=True, timeout=15)
        return json.loads(out.stdout)

    def device(self, i):
        return self.ctl({'cmd': 'show', 'device': i})

    def addresses(self):
        """The watches' BLE addresses, in index order."""
        return [d['address'] for d in self.ctl({'cmd': 'list'})['devices']]

    def slots(self, i):
        for d in self.ctl({'cmd': 'list'})['devices']:
            if d['index'] == i:
                return d['slots']
        return None

    def stop(self):
        reap(self.proc)
        if self.logf:
            self.logf.close()
            self.logf = None


class Gateway:
    """smpgwd driving the sim's watches over UDP; REST on an OS-chosen port."""
    log_tail = True  # Running prints the end of its log when a test fails

    def __init__(self, workdir, sim, extra_conf='', devices=None, bus=None):
        self.exe = os.environ.get('SMPGWD', 'smpgwd')
        self.dir = workdir
        self.state = os.path.join(workdir, 'state')
        self.conf = os.path.join(workdir, 'smpgwd.conf')
        self.log_path = os.path.join(workdir, 'smpgwd.log')
        self.proc = None
        self.logf = None
        self.port = None
        self.bus = bus
        names = [] if bus else (devices or ['w%d' % i for i in range(sim.count)])
        lines = ['[general]', 'log_level = debug', '[udp]', 'base_port = 0',
                 '[http]', 'listen = 127.0.0.1:0', extra_conf, store_conf()]
        for i, n in enumerate(names):
            lines += ['[device "%s"]' % n, 'transport = udp',
                      'address = 127.0.0.1:%d' % (sim.base + i)]
        with open(self.conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    def start(self):
        self.logf = open(self.log_path, 'a')
        self.log_mark = os.path.getsize(self.log_path)
        ble = ['--bluez-bus', self.bus] if self.bus else ['--no-ble']
        self.proc = subprocess.Popen(
            [self.exe, '--config', self.conf, '--state-dir', self.state] + ble,
            stdout=self.logf, stderr=subprocess.STDOUT)
        self.port = int(wait_for('the REST port', self._port, timeout=10))
        check_store(self.read_log())
        self.base = 'http://127.0.0.1:%d' % self.port

    def _port(self):
        if self.proc.poll() is not None:
            raise RuntimeError('smpgwd exited: ' + self.read_log())
        with open(self.log_path) as f:
            f.seek(self.log_mark)
            m = re.search(r'listening on \S+ port (\d+)', f.read())
        return m.group(1) if m else None

    def read_log(self):
        if self.logf and not self.logf.closed:
            self.logf.flush()
        with open(self.log_path) as f:
            return f.read()

    def request(self, method, path, body=None, raw=None, timeout=30):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if raw is not None:
            req.add_header('Content-Type', 'application/octet-stream')
        elif body is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b'null')
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def wait_devices(self, n, timeout=60):
        """Until the REST API lists n devices (BLE: discovered)."""
        def seen():
            st, d = self.request('GET', '/api/v1/devices')
            return st == 200 and len(d['devices']) >= n
        wait_for('%d watches discovered' % n, seen, timeout=timeout, step=0.3)

    def add_image(self, path):
        with open(path, 'rb') as f:
            st, d = self.request('POST', '/api/v1/images', raw=f.read())
        if st not in (200, 201):
            raise RuntimeError('image upload: %s %r' % (st, d))
        return d['id']

    def update(self, device, image, mode='test-confirm'):
        return self.request('POST', '/api/v1/devices/%s/update' % device,
                            {'image': image, 'mode': mode})

    def job(self, jid):
        st, d = self.request('GET', '/api/v1/jobs/%d' % jid)
        return d if st == 200 else None

    def wait_job(self, jid, timeout=60, states=('done', 'failed', 'rolled_back', 'lost',
                                                 'canceled')):
        def finished():
            j = self.job(jid)
            return j if j and j['state'] in states else None
        return wait_for('job %d to finish' % jid, finished, timeout=timeout, step=0.1)

    def wait_phase(self, jid, phases, timeout=60, min_bytes=0):
        def there():
            j = self.job(jid)
            if j and j['phase'] in phases and j['progress']['bytes'] >= min_bytes:
                return j
            if j and j['state'] not in ('queued', 'running'):
                raise RuntimeError('job ended early: %r' % (j,))
            return None
        return wait_for('job %d phase %s' % (jid, phases), there, timeout=timeout, step=0.02)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)
        self.logf.close()

    def stop(self, timeout=10):
        if not self.proc:
            return None
        reap(self.proc, timeout, signal.SIGTERM)
        if self.logf and not self.logf.closed:
            self.logf.close()
        return self.proc.returncode


def sim_and_gateway(run, wd, conf, bus=None, **sim_kw):
    """smpgw-sim (Sim(wd, **sim_kw), on the bus at address bus if given)
    and the smpgwd that manages its watches (Gateway(wd, sim, conf)), both
    started and given to run (harness_common.Running) to stop. Returns
    (sim, gw)."""
    sim = run.start(Sim(wd, bus=bus, **sim_kw))
    return sim, run.start(Gateway(wd, sim, conf, bus=bus))


def ble_sim_and_gateway(run, wd, conf, count, **sim_kw):
    """sim_and_gateway over BLE: a private bus (given to run too), the
    simulator playing bluetoothd on it, smpgwd discovering the watches;
    waits until it lists all count. Returns (sim, gw, their addresses)."""
    bus = run.start(Bus())
    sim, gw = sim_and_gateway(run, wd, conf, bus=bus.address, count=count, **sim_kw)
    gw.wait_devices(count)
    return sim, gw, sim.addresses()
