# SPDX-License-Identifier: MIT
"""What every Python test harness needs, in one place (gw_harness,
updates_harness, rollout_fleet, http_harness and the tests, benchmarks and
torture scripts built on them): TAP output, bounded waits, a free UDP port
range, reaping a child, a temporary work directory, and a private D-Bus
bus (never the system bus).

Every wait is bounded in time; every child is killed and reaped.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print('# ' + msg, flush=True)


def wait_for(what, cond, timeout=10.0, step=0.05):
    """cond() until it returns a true value (returned), at least once and
    once more at the deadline; TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError('timed out waiting for ' + what)
        time.sleep(step)


def free_udp_range(count, tries=50):
    """A base port with count consecutive free UDP ports (best effort)."""
    for _ in range(tries):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(('127.0.0.1', 0))
        base = probe.getsockname()[1]
        probe.close()
        if base + count > 65000:
            continue
        socks = []
        try:
            for i in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(('127.0.0.1', base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError('no free UDP port range')


def reap(proc, timeout=5, sig=None):
    """Stops a child (SIGTERM, or sig) and waits for it; SIGKILL after
    timeout seconds. Returns its exit status, or 'killed'."""
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode
    if sig is None:
        proc.terminate()
    else:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return 'killed'


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name):
        self.n += 1
        if not cond:
            self.failed += 1
        print('%sok %d - %s' % ('' if cond else 'not ', self.n, name), flush=True)
        return cond

    def eq(self, got, want, name):
        if got != want:
            log('got:  %r' % (got,))
            log('want: %r' % (want,))
        return self.ok(got == want, name)

    def done(self):
        print('1..%d' % self.n, flush=True)
        sys.exit(1 if self.failed else 0)


class Workdir:
    """A temporary directory, removed at the end unless the environment
    variable keep_env is set (then kept after a failure, or always with
    keep_passed)."""

    def __init__(self, prefix='smpgw-it-', keep_env='SMPGW_KEEP', keep_passed=False):
        self.prefix = prefix
        self.keep_env = keep_env
        self.keep_passed = keep_passed

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix=self.prefix)
        return self.path

    def __exit__(self, *exc):
        keep = os.environ.get(self.keep_env) and (exc[0] is not None or self.keep_passed)
        if keep:
            log('kept ' + self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        return False


class Bus:
    """A private dbus-daemon (tests/dbus/bus.conf, or $BUS_CONF); never the
    system bus. address: listen there (e.g. unix:path= in a temp dir, known
    before the bus exists) instead of the config's <listen>."""

    def __init__(self, conf=None, address=None):
        self.conf = conf or os.environ.get('BUS_CONF') or os.path.join(
            HERE, '..', 'dbus', 'bus.conf')
        self.proc = None
        self.address = None
        self.listen = address

    def start(self):
        where = ['--address=' + self.listen] if self.listen else []
        self.proc = subprocess.Popen(
            ['dbus-daemon', '--config-file=' + self.conf, '--print-address', '--nofork'] + where,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            reap(self.proc)
            self.proc.stdout.close()
            raise RuntimeError('dbus-daemon did not print an address')
        return self.address

    def stop(self):
        reap(self.proc)
        if self.proc:
            self.proc.stdout.close()
