# SPDX-License-Identifier: MIT
"""Hermetic harness for the gateway's integration tests: starts the real
smpgw-sim (UDP transport) and the real smpgwd on loopback, in a temporary
directory, with ports chosen by the OS, and reaps both.

Every wait is bounded in time; every child is killed and reaped on exit.
"""
import functools
import json
import os
import signal
import socket
import subprocess

from harness_common import (SKIP, Bus, Running, Tap, Workdir, free_udp_range,  # noqa: F401
                            log, reap, require, store_conf, wait_for)
from harness_common import session as _session

# What these tests need; with session() as (wd, run): harness_common.session
# with need=NEEDS (pass need=BLE_NEEDS when the test uses a bus).
NEEDS = ('SMPGWD', 'SMPGW_SIM', 'CONFORMANCE_DIR')
BLE_NEEDS = NEEDS + ('dbus-daemon',)
session = functools.partial(_session, need=NEEDS)

def find_sim():
    exe = os.environ.get('SMPGW_SIM')
    if exe and os.access(exe, os.X_OK):
        return exe
    return None


class Sim:
    """smpgw-sim with count watches on UDP ports base..base+count-1."""

    def __init__(self, workdir, count, extra=(), udp=True, fleet=None):
        """fleet: a fleet file object (docs/simulator.md) used instead of
        --count; its "count" is set to count."""
        self.exe = find_sim()
        self.count = count
        self.udp = udp
        self.base = free_udp_range(count) if udp else 0
        self.control = os.path.join(workdir, 'sim.sock')
        self.log_path = os.path.join(workdir, 'sim.log')
        self.extra = list(extra)
        self.fleet_path = None
        if fleet is not None:
            self.fleet_path = os.path.join(workdir, 'fleet.json')
            with open(self.fleet_path, 'w') as f:
                json.dump(dict(fleet, count=count), f)
        self.proc = None

    def start(self):
        who = ['--fleet', self.fleet_path] if self.fleet_path else ['--count', str(self.count)]
        args = [self.exe] + who + ['--control', self.control]
        if self.udp:
            args += ['--udp-base', str(self.base)]
        args += self.extra
        log('starting ' + ' '.join(args))
        # The log is appended to across restarts: only what this process
        # writes (past the offset) counts as its "ready".
        self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.logf = open(self.log_path, 'a')
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        if self.udp:
            wait_for('the simulator to answer on UDP', self._answers, timeout=15)
        else:
            wait_for('the simulator to be ready', self._ready, timeout=15)

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError('smpgw-sim exited: ' + open(self.log_path).read())
        with open(self.log_path) as f:
            f.seek(self.log_offset)
            return 'ready' in f.read().split()

    def _answers(self):
        if self.proc.poll() is not None:
            raise RuntimeError('smpgw-sim exited: ' + open(self.log_path).read())
        from smp_udp_client import Client
        c = Client(self.base + self.count - 1, timeout=0.3)
        try:
            return c.echo('ping') == 'ping'
        except (TimeoutError, socket.timeout, OSError):
            return False
        finally:
            c.close()

    def ctl(self, request):
        """One control-socket request (JSON object); the decoded answer."""
        out = subprocess.run([self.exe, 'ctl', self.control, json.dumps(request)],
                             capture_output=True, text=True, timeout=15)
        return json.loads(out.stdout)

    def stop(self):
        reap(self.proc)
        if self.proc and not self.logf.closed:
            self.logf.close()


class Gateway:
    """smpgwd with the given config text; state and ports in workdir."""
    log_tail = True  # Running prints the end of its log when a test fails

    def __init__(self, workdir, conf_text, state_dir=None):
        self.exe = os.environ.get('SMPGWD', 'smpgwd')
        self.dir = workdir
        self.state = state_dir or os.path.join(workdir, 'state')
        self.conf = os.path.join(workdir, 'smpgwd.conf')
        self.write_conf(conf_text)
        self.log_path = os.path.join(workdir, 'smpgwd.log')
        self.proc = None

    def write_conf(self, text):
        with open(self.conf, 'w') as f:
            f.write(text + store_conf())

    def start(self, expect_devices=(), bluez_bus=None, timeout=10, log_level='debug'):
        """Starts smpgwd (BLE only with bluez_bus, a private bus) and waits
        until ports.json lists expect_devices. (Benchmarks pass a quieter
        log_level: debug lines on every request cost time.)"""
        ports = os.path.join(self.state, 'ports.json')
        if os.path.exists(ports):
            os.unlink(ports)
        ble = ['--bluez-bus', bluez_bus] if bluez_bus else ['--no-ble']
        self.logf = open(self.log_path, 'a')
        self.proc = subprocess.Popen(
            [self.exe, '--config', self.conf, '--state-dir', self.state,
             '--http', '127.0.0.1:0', '--log-level', log_level] + ble,
            stdout=self.logf, stderr=subprocess.STDOUT)
        # Boxed: an empty device map is an answer too.
        return wait_for('ports.json with %s' % (list(expect_devices),),
                        lambda: self._ports_boxed(expect_devices), timeout=timeout)[0]

    def _ports_boxed(self, expect):
        devs = self._ports(expect)
        return None if devs is None else [devs]

    def _ports(self, expect):
        if self.proc.poll() is not None:
            raise RuntimeError('smpgwd exited: ' + self.read_log())
        try:
            with open(os.path.join(self.state, 'ports.json')) as f:
                devs = json.load(f)['devices']
        except (OSError, ValueError, KeyError):
            return None
        if all(d in devs for d in expect):
            return devs
        return None

    def ports(self):
        with open(os.path.join(self.state, 'ports.json')) as f:
            return json.load(f)['devices']

    def http_port(self):
        """The REST API's port (--http 127.0.0.1:0: the log says which)."""
        import re
        m = wait_for('the REST API port', lambda: re.search(
            r'http: listening on (?:https )?\S+ port (\d+)', self.read_log()), timeout=10)
        return int(m.group(1))

    def read_log(self):
        if not self.logf.closed:
            self.logf.flush()
        with open(self.log_path) as f:
            return f.read()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill9(self):
        """SIGKILL: nothing acknowledged may be lost."""
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.logf.close()

    def stop(self, timeout=5):
        """SIGTERM; returns the exit status (kills after timeout)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        rc = reap(self.proc, timeout, signal.SIGTERM)
        self.logf.close()
        return rc


def bus_and_sim(run, wd, count, seed=None, fleet=None):
    """A private bus (harness_common.Bus) and smpgw-sim playing bluetoothd
    for count watches on it, both started and given to run (Running) to
    stop. Returns (the bus address, the Sim)."""
    address = run.add(Bus()).start()
    extra = ['--bus', address] + (['--seed', str(seed)] if seed is not None else [])
    return address, run.start(Sim(wd, count, extra=extra, udp=False, fleet=fleet))
