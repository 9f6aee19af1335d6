# SPDX-License-Identifier: MIT
"""Hermetic harness for the REST API tests: starts the real smpgwd on
loopback (temp state dir, --http 127.0.0.1:0, a token file) with UDP devices
that are either the simulator (smpgw-sim, when $SMPGW_SIM names it) or a
small built-in SMP responder, and offers an HTTP client that returns
(status, headers, body).

Every wait is bounded, every child process is reaped at close().
"""
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import cbor2

from harness_common import Running, reap, session  # noqa: F401

TOKEN = 'test-token-0123456789'


class FakeDevice:
    """A tiny SMP server over UDP, enough for the API tests: os echo,
    datetime, reset, params, info; img state/erase; stat list/read; any
    other command answers rc 8 (not supported) in the v2 form."""

    def __init__(self, name, version='1.0.0', hash_byte=0xab):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.slots = [{'image': 0, 'slot': 0, 'version': version,
                       'hash': bytes([hash_byte]) * 32, 'bootable': True,
                       'pending': False, 'confirmed': True, 'active': True,
                       'permanent': False}]
        self.silent = False
        # What reached the device and what it sent back (GET /metrics
        # must agree with these).
        self.rx_frames = self.rx_bytes = self.tx_frames = self.tx_bytes = 0
        self.datetime = '2026-01-01T00:00:00'
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            data, peer = self.sock.recvfrom(65535)
            self.rx_frames += 1
            self.rx_bytes += len(data)
            if len(data) < 8 or self.silent:
                continue
            rsp = self.handle(data)
            if rsp is not None:
                self.tx_frames += 1
                self.tx_bytes += len(rsp)
                self.sock.sendto(rsp, peer)

    def handle(self, frame):
        b0, flags, length, group, seq, cid = struct.unpack('>BBHHBB', frame[:8])
        op, ver = b0 & 7, (b0 >> 3) & 3
        try:
            req = cbor2.loads(frame[8:8 + length]) if length else {}
        except Exception:
            req = None
        body = self.dispatch(op, group, cid, req)
        if body is None:
            body = {'err': {'group': group, 'rc': 8}} if ver else {'rc': 8}
        payload = cbor2.dumps(body)
        hdr = struct.pack('>BBHHBB', (ver << 3) | (op | 1), 0, len(payload),
                          group, seq, cid)
        return hdr + payload

    def dispatch(self, op, group, cid, req):
        if not isinstance(req, dict):
            return {'rc': 3}
        if group == 0:
            if cid == 0 and op == 2:
                return {'r': req.get('d', '')}
            if cid == 4:
                if op == 2:
                    self.datetime = req.get('datetime', self.datetime)
                    return {}
                return {'datetime': self.datetime}
            if cid == 5 and op == 2:
                return {}
            if cid == 6 and op == 0:
                return {'buf_size': 2475, 'buf_count': 4}
            if cid == 7 and op == 0:
                return {'output': 'Zephyr %s' % self.name}
        if group == 1:
            if cid == 0 and op == 0:
                return {'images': self.slots, 'splitStatus': 0}
            if cid == 0 and op == 2:
                h = req.get('hash')
                if h is not None and all(s['hash'] != h for s in self.slots):
                    return {'rc': 3, 'rsn': 'unknown hash'}
                return {'images': self.slots, 'splitStatus': 0}
            if cid == 5 and op == 2:
                return {}
        if group == 2:
            if cid == 1:
                return {'stat_list': ['smp_svr_stats']}
            if cid == 0:
                if req.get('name') != 'smp_svr_stats':
                    return {'rc': 5}
                return {'name': 'smp_svr_stats', 'fields': {'ticks': 42}}
        return None

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class SimDevice:
    """A device of the simulator, as the Daemon config needs it."""

    def __init__(self, name, address, port):
        self.name, self.address, self.port = name, address, port


class SimFleet:
    """smpgw-sim with UDP faces on OS-chosen ports; None when $SMPGW_SIM is
    not set (the simulator is not built)."""

    def __init__(self, fleet):
        self.dir = tempfile.mkdtemp(prefix='smpgw-sim-')
        path = os.path.join(self.dir, 'fleet.json')
        with open(path, 'w') as f:
            json.dump(fleet, f)
        self.ctl = os.path.join(self.dir, 'ctl.sock')
        self.log_path = os.path.join(self.dir, 'sim.log')
        self.log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(
            [os.environ['SMPGW_SIM'], '--fleet', path, '--udp-base', '0',
             '--control', self.ctl], stdout=self.log, stderr=subprocess.STDOUT)
        self.devices = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                text = f.read()
            if re.search(r'^ready$', text, re.M):
                for m in re.finditer(r'^udp (\S+) (\S+) 127\.0\.0\.1:(\d+)$', text, re.M):
                    self.devices.append(SimDevice(m.group(2), m.group(1), int(m.group(3))))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.close()
        raise RuntimeError('smpgw-sim did not start: ' + text)

    @staticmethod
    def available():
        return bool(os.environ.get('SMPGW_SIM'))

    def ctl_cmd(self, cmd):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.ctl)
        s.sendall((json.dumps(cmd) + '\n').encode())
        buf = b''
        while not buf.endswith(b'\n'):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        return json.loads(buf)

    def close(self):
        reap(self.proc, 10, signal.SIGTERM)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode


class Daemon:
    log_tail = True  # Running prints the end of its log when a test fails

    def __init__(self, devices=(), extra_conf='', max_body=None, token=True,
                 listen='127.0.0.1:0', tls=None, expect_fail=False):
        self.closed = None
        self.dir = tempfile.mkdtemp(prefix='smpgw-http-')
        self.token_path = os.path.join(self.dir, 'token')
        with open(self.token_path, 'w') as f:
            f.write(TOKEN + '\n')
        conf = ['[general]', 'state_dir = %s/state' % self.dir, '[udp]',
                'base_port = 0', '[http]', 'listen = ' + listen]
        if token:
            conf.append('token_file = %s' % self.token_path)
        if max_body:
            conf.append('max_body = %d' % max_body)
        if tls:
            conf += ['tls_cert = %s' % tls[0], 'tls_key = %s' % tls[1]]
        conf.append('[request]')
        conf.append('timeout = 1s')
        conf.append('connect_timeout = 1s')
        for d in devices:
            conf += ['[device "%s"]' % d.name, 'transport = udp',
                     'address = 127.0.0.1:%d' % d.port]
        conf.append(extra_conf)
        self.conf = os.path.join(self.dir, 'smpgwd.conf')
        with open(self.conf, 'w') as f:
            f.write('\n'.join(conf) + '\n')
        self.log_path = os.path.join(self.dir, 'smpgwd.log')
        self.log = open(self.log_path, 'w')
        exe = os.environ.get('SMPGWD', 'smpgwd')
        self.proc = subprocess.Popen([exe, '-c', self.conf, '--no-ble', '-l', 'debug'],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.ssl = None
        if expect_fail:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            return
        try:
            self.port = self.wait_port()
        except Exception:
            self.close()  # never leave the child behind
            raise
        self.base = '%s://127.0.0.1:%d' % ('https' if tls else 'http', self.port)
        if tls:
            import ssl
            self.ssl = ssl.create_default_context(cafile=tls[0])

    def wait_port(self):
        # Generous: under valgrind on a busy machine startup takes seconds.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log_path) as f:
                    raise RuntimeError('smpgwd exited: ' + f.read())
            with open(self.log_path) as f:
                m = re.search(r'http: listening on (?:https )?\S+ port (\d+)', f.read())
            if m:
                return int(m.group(1))
            time.sleep(0.05)
        with open(self.log_path) as f:
            raise RuntimeError('smpgwd did not start: ' + f.read())

    def request(self, method, path, body=None, token=TOKEN, headers=None,
                raw=None, timeout=10):
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault('Content-Type', 'application/json')
        if token:
            hdrs['Authorization'] = 'Bearer ' + token
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as rsp:
                return rsp.status, dict(rsp.headers), rsp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method, path, body=None, **kw):
        st, h, b = self.request(method, path, body, **kw)
        return st, h, (json.loads(b) if b else None)

    def wait_device_up(self, name, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, _, d = self.json('GET', '/api/v1/devices/' + name)
            if st == 200 and d.get('link_state') == 'up':
                return d
            # A request brings a UDP link up on demand.
            self.json('POST', '/api/v1/devices/%s/echo' % name, {'d': 'hi'})
            time.sleep(0.1)
        raise RuntimeError('device %s never came up' % name)

    def read_log(self):
        self.log.flush()
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def close(self):
        """Stops smpgwd, removes its directory; (exit status, its log).
        Again: the same answer."""
        if self.closed is None:
            reap(self.proc, 10, signal.SIGTERM)
            self.log.close()
            with open(self.log_path, errors='replace') as f:
                log = f.read()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.closed = (self.proc.returncode, log)
        return self.closed


def fleet_and_daemon(run, count, **daemon_kw):
    """count watches named PineTime-1.. (smpgw-sim when it is built, else
    FakeDevices) and a Daemon managing them, all given to run
    (harness_common.Running) to stop. Returns (devices, daemon)."""
    if SimFleet.available():
        devs = run.add(SimFleet({'count': count})).devices
    else:
        devs = [run.add(FakeDevice('PineTime-%d' % (i + 1))) for i in range(count)]
    return devs, run.add(Daemon(devs, **daemon_kw))
