# SPDX-License-Identifier: MIT
"""Fleet setup for the rollout tests, in one place: the simulated watches
(smpgw-sim), the real smpgwd that manages them, and small REST helpers.

The watches reach the daemon over UDP (transport='udp', the default: the
gateway config declares one UDP device per simulated watch, pointing at
the simulator's UDP port) or over BLE (transport='ble': the simulator plays
bluetoothd on a private D-Bus bus and the daemon discovers the watches).
Tests name watches "PineTime-N" and use Fleet.id() for the gateway's device
id (the name over UDP, the address over BLE).

Hermetic: a temporary directory, ports chosen by the OS, loopback only,
every child killed and reaped; every wait bounded in time.
"""
import functools
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

from harness_common import (SKIP, Bus, Running, check_store, log, reap,  # noqa: F401
                            store_conf, wait_for)
from harness_common import Workdir as _Workdir
from harness_common import session as _session

IMAGE = 'app-0.9.0-3k-hash.bin'
# Kept after a failure with KEEP_WORKDIR.
Workdir = functools.partial(_Workdir, prefix='smpgw-rollout-', keep_env='KEEP_WORKDIR')
NEEDS = ('SMPGWD', 'SMPGW_SIM', 'CONFORMANCE_DIR')
# with session() as (wd, run): harness_common.session for the rollout tests
# (SKIP without NEEDS; logs how long it took).
session = functools.partial(_session, need=NEEDS, workdir=Workdir, timed=True, tail_lines=100)


def check(cond, what):
    """An assertion these tests log when it holds ("ok: what")."""
    if not cond:
        raise AssertionError(what)
    log('ok: ' + what)


def executables():
    """(smpgwd, smpgw-sim, conformance dir), or None when not built."""
    gw = os.environ.get('SMPGWD')
    sim = os.environ.get('SMPGW_SIM')
    conf = os.environ.get('CONFORMANCE_DIR')
    if not (gw and sim and conf and os.access(gw, os.X_OK) and os.access(sim, os.X_OK)):
        return None
    return gw, sim, conf


class Fleet:
    """count simulated PineTimes named PineTime-1..count, fast flash and
    boot so a rollout of 50 takes seconds.

    buses=('g1', 'g2', ...): one simulator for several gateways (BLE): a
    private bus per gateway (--bus NAME=ADDRESS), each with its own adapter;
    per_device entries say who hears a watch ({"heard": {"g1": -50}}, absent:
    every gateway at its rssi); Gateway(..., bus='g1') uses that bus."""

    def __init__(self, workdir, sim_exe, count, per_device=None, boot_ms=150,
                 transport='udp', buses=None):
        self.dir = workdir
        self.exe = sim_exe
        self.count = count
        self.transport = 'ble' if buses else transport
        self.bus = None      # private dbus-daemon (BLE): harness_common.Bus
        self.bus_address = None
        self.buses = {name: None for name in buses or ()}  # name -> Bus
        self.addresses = {}  # name -> BLE address
        self.fleet = {
            'count': count, 'seed': 7,
            'defaults': {
                'name': 'PineTime-{n}', 'version': '1.0.0', 'boot_ms': boot_ms,
                'link': {'buf_size': 2475, 'buf_count': 4},
                'flash': {'erase_sector_us': 1000, 'program_page_us': 20},
            },
            'devices': per_device or [],
        }
        self.control = os.path.join(workdir, 'sim.sock')
        self.log_path = os.path.join(workdir, 'sim.log')
        self.proc = None
        self.ports = {}  # name -> UDP port

    def start(self):
        path = os.path.join(self.dir, 'fleet.json')
        with open(path, 'w') as f:
            json.dump(self.fleet, f)
        args = [self.exe, '--fleet', path, '--control', self.control]
        if self.buses:
            for name in self.buses:
                self.buses[name] = self._new_bus()
                args += ['--bus', '%s=%s' % (name, self.buses[name].address)]
        elif self.transport == 'ble':
            self._start_bus()
            args += ['--bus', self.bus_address]
        else:
            args += ['--udp-base', '0']
        self.logf = open(self.log_path, 'w')
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        text = wait_for('smpgw-sim to be ready', self._ready, timeout=15)
        for m in re.finditer(r'^udp (\S+) (\S+) 127\.0\.0\.1:(\d+)$', text, re.M):
            self.ports[m.group(2)] = int(m.group(3))
        for d in self.ctl({'cmd': 'list'})['devices']:
            self.addresses[d['name']] = d['address']
        if self.transport == 'udp' and len(self.ports) != self.count:
            raise RuntimeError('smpgw-sim: expected %d UDP faces, saw %d'
                               % (self.count, len(self.ports)))

    def _new_bus(self):
        conf = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'dbus',
                            'bus.conf')
        bus = Bus(conf)
        bus.start()
        return bus

    def _start_bus(self):
        self.bus = self._new_bus()
        self.bus_address = self.bus.address

    def id(self, name):
        """The gateway's device id of a watch."""
        return self.addresses[name] if self.transport == 'ble' else name

    def gateway_args(self, bus=None):
        """smpgwd's command-line arguments for this transport (bus: the
        gateway's bus name with buses=...)."""
        if self.buses:
            return ['--bluez-bus', self.buses[bus].address]
        if self.transport == 'ble':
            return ['--bluez-bus', self.bus_address]
        return ['--no-ble']

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError('smpgw-sim exited: ' + open(self.log_path).read())
        with open(self.log_path) as f:
            text = f.read()
        return text if re.search(r'^ready$', text, re.M) else None

    def names(self):
        return ['PineTime-%d' % i for i in range(1, self.count + 1)]

    def gateway_devices(self):
        """The [device] sections that make the gateway manage the fleet
        (none over BLE: discovery finds the watches)."""
        out = []
        if self.transport == 'ble':
            return ['[ble]', 'connect_timeout = 5s', 'idle_timeout = 30s',
                    '[request]', 'timeout = 3s', 'connect_timeout = 10s',
                    '[update]', 'boot_timeout = 30s', 'retry_timeout = 30s']
        for name in self.names():
            out += ['[device "%s"]' % name, 'transport = udp',
                    'address = 127.0.0.1:%d' % self.ports[name]]
        return out

    def ctl(self, req):
        out = subprocess.run([self.exe, 'ctl', self.control, json.dumps(req)],
                             capture_output=True, text=True, timeout=15)
        ans = json.loads(out.stdout)
        if not ans.get('ok'):
            raise RuntimeError('sim ctl %s: %s' % (req, ans))
        return ans

    def range(self, name, in_range):
        self.ctl({'cmd': 'range', 'device': name, 'in_range': in_range})

    def fault(self, name, fault, **kw):
        self.ctl(dict({'cmd': 'fault', 'device': name, 'fault': fault}, **kw))

    def show(self, name):
        return self.ctl({'cmd': 'show', 'device': name})

    def move(self, name, heard):
        """Walks a watch: {"g1": -85, "g2": -50, "g3": None (out of range)}."""
        return self.ctl({'cmd': 'move', 'device': name, 'heard': heard})['device']

    def power(self, bus, on):
        """A gateway host's radio off/on (its links drop, as when it dies)."""
        self.ctl({'cmd': 'power', 'bus': bus, 'on': on})

    def stop(self):
        reap(self.proc)
        if self.proc:
            self.logf.close()
        if self.bus:
            self.bus.stop()
        for bus in self.buses.values():
            if bus:
                bus.stop()


class Gateway:
    """smpgwd managing the fleet; state in workdir/state (kept across
    restarts); REST on an OS-chosen loopback port."""
    log_tail = True  # Running prints the end of its log when a test fails

    def __init__(self, workdir, gw_exe, fleet, extra_conf=(), bus=None, conninfo=None):
        self.dir = workdir
        self.exe = gw_exe
        self.fleet = fleet
        self.bus = bus  # the gateway's bus of a Fleet(buses=...)
        self.state = os.path.join(workdir, 'state')
        self.conf = os.path.join(workdir, 'smpgwd.conf')
        conf = ['[general]', 'state_dir = ' + self.state,
                '[udp]', 'base_port = 0',
                '[http]', 'listen = 127.0.0.1:0',
                '[request]', 'timeout = 1s', 'first_chunk_timeout = 2s',
                'connect_timeout = 1s',
                '[update]', 'max_per_adapter = 100', 'retry_timeout = 2s',
                'boot_timeout = 3s']
        conf += list(extra_conf)
        conf += fleet.gateway_devices()
        with open(self.conf, 'w') as f:
            # conninfo: this gateway's own way to the server (a proxy)
            f.write('\n'.join(conf) + '\n' + (
                '\n[store]\nbackend = postgresql\nconninfo = %s\n' % conninfo if conninfo
                else store_conf()))
        self.log_path = os.path.join(workdir, 'smpgwd.log')
        self.logf = open(self.log_path, 'a')
        self.proc = None
        self.base = None
        self.starts = 0

    def start(self, time_offset_ms=0, env=None):
        mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.logf.write('---- start %d, time offset %d ms ----\n'
                        % (self.starts, time_offset_ms))
        self.logf.flush()
        mark = self.logf.tell()
        self.starts += 1
        self.proc = subprocess.Popen(
            [self.exe, '-c', self.conf, '-l', 'info',
             '--time-offset-ms', str(int(time_offset_ms))] + self.fleet.gateway_args(self.bus),
            stdout=self.logf, stderr=subprocess.STDOUT,
            env=dict(os.environ, TZ='UTC', **(env or {})))
        port = wait_for('the REST port', lambda: self._port(mark), timeout=15)
        check_store(self.read_log()[mark:])
        self.base = 'http://127.0.0.1:%d' % port

    def _port(self, mark):
        if self.proc.poll() is not None:
            raise RuntimeError('smpgwd exited:\n' + self.read_log()[-4000:])
        with open(self.log_path) as f:
            f.seek(mark)
            m = re.search(r'http: listening on \S+ port (\d+)', f.read())
        return int(m.group(1)) if m else None

    def read_log(self):
        self.logf.flush()
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        return reap(self.proc, 10, signal.SIGTERM)

    def close(self):
        self.stop()
        self.logf.close()

    # ---- REST ----

    def request(self, method, path, body=None, ctype='application/json', raw=False):
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers['Content-Type'] = ctype
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as rsp:
                payload = rsp.read()
                status = rsp.status
                rtype = rsp.headers.get('Content-Type', '')
        except urllib.error.HTTPError as e:
            payload = e.read()
            status = e.code
            rtype = e.headers.get('Content-Type', '')
        if raw or not payload:
            return status, payload.decode(errors='replace')
        if 'json' not in rtype:
            return status, payload.decode(errors='replace')
        return status, json.loads(payload)

    def get(self, path):
        status, body = self.request('GET', path)
        if status != 200:
            raise RuntimeError('GET %s: %d %s' % (path, status, body))
        return body

    def post(self, path, body=None, expect=200):
        status, out = self.request('POST', path, {} if body is None else body)
        if status != expect:
            raise RuntimeError('POST %s: %d %s' % (path, status, out))
        return out

    def upload_image(self, conformance_dir, name=IMAGE):
        with open(os.path.join(conformance_dir, 'images', name), 'rb') as f:
            data = f.read()
        status, out = self.request('POST', '/api/v1/images', data,
                                   ctype='application/octet-stream')
        if status not in (200, 201):
            raise RuntimeError('image upload: %d %s' % (status, out))
        return out

    def rollout(self, rid):
        return self.get('/api/v1/rollouts/' + rid)

    def jobs(self):
        return self.get('/api/v1/jobs')['jobs']


class Events:
    """Collects the daemon's server-sent events in a thread (bounded: stops
    with stop(), and at most 100000 events)."""

    def __init__(self, gw, types=('rollout.',)):
        import socket
        import threading
        self.events = []
        self.types = types
        port = int(gw.base.rsplit(':', 1)[1])
        # HTTP/1.0: the stream comes unchunked and ends with the connection.
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        self.sock.sendall(b'GET /api/v1/events HTTP/1.0\r\nHost: x\r\n'
                          b'Accept: text/event-stream\r\n\r\n')
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import socket
        buf = b''
        while self.running and len(self.events) < 100000:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b'\n\n' in buf:
                block, buf = buf.split(b'\n\n', 1)
                for line in block.split(b'\n'):
                    if line.startswith(b'data: '):
                        try:
                            ev = json.loads(line[6:])
                        except ValueError:
                            continue
                        if ev.get('type', '').startswith(self.types):
                            self.events.append(ev)

    def of(self, type_):
        return [e for e in list(self.events) if e.get('type') == type_]

    def stop(self):
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


def rooms(wd, run, names, per_device, extra=(), conninfo=None):
    """Several gateways on one store (docs/multi-gateway.md): one simulator
    serving a bus per room (names), and a gateway per room on it, its
    [gateway] id the room's name; extra: more config lines; conninfo: {room:
    its own way to the server} (a proxy). Not started."""
    gw_exe, sim_exe, _ = executables()
    fleet = run.add(Fleet(wd, sim_exe, len(per_device), per_device=per_device,
                          buses=names))
    fleet.start()
    gws = {}
    for room in names:
        d = os.path.join(wd, room)
        os.mkdir(d)
        gws[room] = run.add(Gateway(d, gw_exe, fleet, bus=room, extra_conf=[
            '[gateway]', 'id = ' + room] + list(extra), conninfo=(conninfo or {}).get(room)))
    return fleet, gws


def host_dies(gw):
    """A gateway's host dies: smpgwd killed, its Bluetooth radio gone (the
    watch's link to it ends: a real bluetoothd outliving smpgwd would keep
    it)."""
    gw.kill9()
    gw.fleet.power(gw.bus, False)
