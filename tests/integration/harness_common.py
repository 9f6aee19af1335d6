# SPDX-License-Identifier: MIT
"""What every Python test harness needs, in one place (gw_harness,
updates_harness, rollout_fleet, http_harness and the tests, benchmarks and
torture scripts built on them): TAP output, bounded waits, a free UDP port
range, reaping a child, a temporary work directory, a private D-Bus
bus (never the system bus), and Running, the one teardown for "daemon +
simulator + bus" that every integration, D-Bus, torture and rollout test
uses.

Every wait is bounded in time; every child is killed and reaped.
"""
import contextlib
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


def store_conf():
    """The [store] section that puts smpgwd on the PostgreSQL server named
    by SMPGW_TEST_PG (tests/pg/pg_server.py sets it; "" otherwise: SQLite)."""
    conninfo = os.environ.get('SMPGW_TEST_PG')
    if not conninfo:
        return ''
    return '\n[store]\nbackend = postgresql\nconninfo = %s\n' % conninfo


def check_store(log_text):
    """Raises when SMPGW_TEST_PG is set but smpgwd's log (from its start)
    does not say it runs on PostgreSQL: a -pg test must not pass on SQLite."""
    if os.environ.get('SMPGW_TEST_PG') and 'store: postgresql' not in log_text:
        raise RuntimeError('SMPGW_TEST_PG is set but smpgwd is not on PostgreSQL')


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


class Running:
    """with Running() as run: whatever run.add() gets (a Bus, a simulator,
    a daemon, a helper thread...) is stopped when the block ends, however it
    ends: last added first, through its close() if it has one, else its
    stop() (both must be safe to call twice); what run.defer() gets is
    called in the same order. run.start(x, ...) is run.add(x) then
    x.start(...), so a half-started x is stopped too.

    When the block raises, or when tap (a Tap) has failures at its end, the
    last tail_lines lines of each daemon's log (an item whose class sets
    log_tail = True and has read_log()) are printed first, leaving out
    lines that contain one of skip."""

    def __init__(self, tail_lines=60, tap=None, skip=()):
        self.items = []
        self.daemons = []
        self.tail_lines = tail_lines
        self.tap = tap
        self.skip = tuple(skip)

    def add(self, item, stop=None):
        """stop: what ends item, when not its close() or stop()."""
        self.items.append(stop or getattr(item, 'close', None) or item.stop)
        if getattr(item, 'log_tail', False):
            self.daemons.append(item)
        return item

    def start(self, item, *args, **kw):
        self.add(item)
        item.start(*args, **kw)
        return item

    def defer(self, fn):
        """fn() at the end, in the same order as what add() got."""
        self.items.append(fn)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or (self.tap and self.tap.failed):
            for d in self.daemons:
                if getattr(d, 'proc', True) is None:
                    continue
                lines = [l for l in d.read_log().splitlines()
                         if not any(s in l for s in self.skip)]
                log('%s log tail:\n# ' % os.path.basename(getattr(d, 'exe', 'smpgwd')) +
                    '\n# '.join(lines[-self.tail_lines:]))
        failure = None
        for stop in reversed(self.items):
            try:
                stop()
            except Exception as e:  # stop the rest all the same
                log('teardown: %r' % (e,))
                failure = failure or e
        if failure is not None and exc_type is None:
            raise failure
        return False


def missing(need):
    """The first of need that is not there: an environment variable (all
    capitals) that must name an executable or a directory, or a program on
    PATH."""
    for n in need:
        if n.isupper():
            exe = os.environ.get(n)
            if not (exe and os.access(exe, os.X_OK)):
                return '$%s (unset, or not built)' % n
        elif not shutil.which(n):
            return n
    return None


def require(need):
    """Exits with SKIP (77), saying why, when something in need (see
    missing()) is not there."""
    why = missing(need)
    if why:
        print('1..0 # SKIP missing: %s' % why, flush=True)
        sys.exit(SKIP)


@contextlib.contextmanager
def session(need=('SMPGWD', 'SMPGW_SIM'), workdir=Workdir, timed=False, **running):
    """with session() as (wd, run): the scaffolding of every test that runs
    the daemon, the simulator or a bus, in one place: require(need); wd is
    a temporary directory (workdir, e.g. Workdir); run is
    Running(**running), which stops all it was given, whatever happens.
    timed: logs how long the block took when it passed."""
    require(need)
    t0 = time.monotonic()
    with workdir() as wd, Running(**running) as run:
        yield wd, run
    if timed:
        log('passed in %.1f s' % (time.monotonic() - t0))
