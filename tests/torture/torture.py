# SPDX-License-Identifier: MIT
"""Glue for the torture suite (tests/torture/): the shared harnesses of
tests/integration (gw_harness, updates_harness, smp_udp_client) plus what
only torture needs: the CI/nightly knobs, a BLE gateway with the REST
methods of updates_harness, bystander watches that must never notice, and
the daemon's RSS/fd readings.

Knobs (environment): TORTURE_NIGHTLY=1 (100 disconnect offsets, 600 s soak),
TORTURE_OFFSETS=N, SOAK_SECONDS=S, TORTURE_SEED=N (default: random, printed).
"""
import os
import random
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

import gw_harness  # noqa: E402
import updates_harness  # noqa: E402
from gw_harness import SKIP, Tap, log, wait_for  # noqa: E402,F401
from smp_udp_client import Client, SmpError  # noqa: E402,F401

NIGHTLY = os.environ.get('TORTURE_NIGHTLY') == '1'
OFFSETS = int(os.environ.get('TORTURE_OFFSETS') or (100 if NIGHTLY else 15))
SOAK_SECONDS = float(os.environ.get('SOAK_SECONDS') or (600 if NIGHTLY else 60))
IMAGE = 'app-1.2.3+4-ecdsa-p256.bin'


def seeded_random():
    seed = int(os.environ.get('TORTURE_SEED') or random.randrange(1 << 30))
    log('TORTURE_SEED=%d (set it to replay this run)' % seed)
    return random.Random(seed)


def image_path(name=IMAGE):
    return updates_harness.conformance_image(name)


def under_asan(pid):
    """True when the daemon runs with AddressSanitizer (its RSS then grows
    by design: the quarantine keeps freed memory)."""
    try:
        with open('/proc/%d/maps' % pid) as f:
            return 'libasan' in f.read()
    except OSError:
        return False


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


class BleGateway(gw_harness.Gateway):
    """gw_harness.Gateway (BLE on a private bus) with updates_harness's REST
    client methods; base is found in the log once the REST API listens."""
    request = updates_harness.Gateway.request
    add_image = updates_harness.Gateway.add_image
    update = updates_harness.Gateway.update
    job = updates_harness.Gateway.job
    wait_job = updates_harness.Gateway.wait_job
    wait_phase = updates_harness.Gateway.wait_phase

    def start(self, *args, **kw):
        mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        r = super().start(*args, **kw)

        def port():
            with open(self.log_path) as f:
                f.seek(mark)
                m = re.search(r'listening on \S+ port (\d+)', f.read())
            return m.group(1) if m else None
        self.base = 'http://127.0.0.1:%s' % wait_for('the REST port', port, timeout=10)
        return r

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.logf.close()


class Bystanders:
    """Echo loops on watches that no fault touches: a failed or slow echo
    there means a fault disturbed another device. pause() around faults
    that hit everyone on purpose (bluetoothd restart, kill -9)."""

    def __init__(self, ports, period=0.05, slow=5.0):
        self.ports = list(ports)
        self.period = period
        self.slow = slow
        self.failures = []
        self.count = 0
        self.paused = threading.Event()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(p,), daemon=True)
                        for p in self.ports]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _run(self, port):
        c = Client(port, timeout=self.slow)
        n = 0
        try:
            while not self.stop_ev.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                n += 1
                text = 'bystander %d' % n
                t0 = time.monotonic()
                try:
                    ok = c.echo(text) == text
                    why = 'wrong answer'
                except (SmpError, TimeoutError, socket.timeout, OSError) as e:
                    ok, why = False, repr(e)
                if not self.paused.is_set():
                    self.count += 1
                    if not ok:
                        self.failures.append((port, round(time.monotonic() - t0, 2), why))
                self.stop_ev.wait(self.period)
        finally:
            c.close()

    def pause(self):
        self.paused.set()

    def resume(self, settle=0.0):
        time.sleep(settle)
        self.paused.clear()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=15)
