# SPDX-License-Identifier: MIT
"""Private D-Bus bus + simulated bluetoothd for the D-Bus tier.

Starts `dbus-daemon --config-file=tests/dbus/bus.conf` and a simulator that
owns org.bluez on it (tests/dbus/bluez-host by default, or smpgw-sim when
SMPGW_SIM is set), gives a dbus-python connection with a GLib main loop and
a log of every signal, and reaps every child even on failure. Every wait is
bounded in time.
"""
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)

BLUEZ = "org.bluez"
SMP_SERVICE = "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
SMP_CHAR = "da2e7828-fbce-4e01-ae9e-261174997c48"


def _readline(pipe, timeout):
    """One line from a child's pipe, or None after timeout seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        c = os.read(pipe.fileno(), 1)
        if not c:
            break
        if c == b"\n":
            return buf.decode()
        buf += c
    return None


def _reap(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class Env:
    def __init__(self, fleet=None, count=1, env=None):
        self.tmp = tempfile.mkdtemp(prefix="smpgw-dbus-")
        self.daemon = None
        self.sim = None
        self.signals = []
        self.fleet_path = None
        self.extra_env = env or {}
        if fleet is not None:
            self.fleet_path = os.path.join(self.tmp, "fleet.json")
            with open(self.fleet_path, "w") as f:
                json.dump(fleet, f)
        self.count = count
        try:
            self._start_bus()
            self.start_sim()
        except BaseException:
            self.close()
            raise

    def _start_bus(self):
        self.daemon = subprocess.Popen(
            ["dbus-daemon", "--config-file=" + os.environ["BUS_CONF"],
             "--print-address", "--nofork"], stdout=subprocess.PIPE)
        self.address = _readline(self.daemon.stdout, 10)
        if not self.address:
            raise RuntimeError("dbus-daemon did not start")
        self.bus = dbus.bus.BusConnection(self.address)
        self.bus.add_signal_receiver(self._on_signal, sender_keyword="sender",
                                     path_keyword="path", member_keyword="member",
                                     interface_keyword="iface")

    def _on_signal(self, *args, sender=None, path=None, member=None, iface=None):
        self.signals.append((time.monotonic(), sender, path, iface, member, args))

    def start_sim(self):
        env = dict(os.environ)
        env.update(self.extra_env)
        sim = os.environ.get("SMPGW_SIM")
        if sim:
            argv = [sim, "--bus", self.address]
            argv += ["--fleet", self.fleet_path] if self.fleet_path else ["--count", str(self.count)]
            self.sim = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE)
            self.wait_for(lambda: self.bus.name_has_owner(BLUEZ), 10, "org.bluez owned")
            self._wait_adapters()
            return
        argv = [os.environ["BLUEZ_HOST"], "--bus", self.address]
        argv += ["--fleet", self.fleet_path] if self.fleet_path else ["--count", str(self.count)]
        self.sim = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE)
        line = _readline(self.sim.stdout, 10)
        if line != "READY":
            raise RuntimeError("simulator did not start: %r" % line)
        self._wait_adapters()

    def _wait_adapters(self):
        """Like bluetoothd, the simulator owns org.bluez before its adapters
        are registered (InterfacesAdded): wait for them."""
        self.wait_for(lambda: any("org.bluez.Adapter1" in i for i in self.managed().values()),
                      10, "an adapter")

    def stop_sim(self):
        _reap(self.sim)
        self.sim = None

    def cmd(self, line):
        """A command for tests/dbus/bluez-host (range, reset, fault, counters)."""
        self.sim.stdin.write((line + "\n").encode())
        self.sim.stdin.flush()
        r = _readline(self.sim.stdout, 5)
        if not r or not r.startswith("OK"):
            raise RuntimeError("%s: %r" % (line, r))
        return r

    def close(self):
        try:
            self.stop_sim()
        finally:
            _reap(self.daemon)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- helpers --------------------------------------------------------------

    def pump(self, seconds=0.0):
        """Runs the GLib loop for seconds (at least one pass)."""
        ctx = GLib.MainContext.default()
        deadline = time.monotonic() + seconds
        while True:
            while ctx.iteration(False):
                pass
            if time.monotonic() >= deadline:
                return
            time.sleep(0.002)

    def mark(self):
        """A time after which only new signals are stamped: pending ones are
        dispatched first, so they cannot pass for answers to what follows."""
        self.pump(0.05)
        return time.monotonic()

    def wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if pred():
                return
            time.sleep(0.005)
        raise AssertionError("timeout waiting for " + what)

    def obj(self, path):
        return self.bus.get_object(BLUEZ, path, introspect=False)

    def iface(self, path, name):
        return dbus.Interface(self.obj(path), name)

    def props(self, path, iface):
        return self.iface(path, "org.freedesktop.DBus.Properties").GetAll(iface)

    def prop(self, path, iface, name):
        return self.iface(path, "org.freedesktop.DBus.Properties").Get(iface, name)

    def managed(self):
        return self.iface("/", "org.freedesktop.DBus.ObjectManager").GetManagedObjects()

    def changed(self, path, name, value=None, since=0.0):
        """PropertiesChanged signals on path carrying name (and value)."""
        out = []
        for t, _s, p, _i, m, args in self.signals:
            if t < since or p != path or m != "PropertiesChanged":
                continue
            if name in args[1] and (value is None or args[1][name] == value):
                out.append(args)
        return out

    def wait_prop(self, path, name, value, since=0.0, timeout=10):
        self.wait_for(lambda: self.changed(path, name, value, since), timeout,
                      "%s %s=%r" % (path, name, value))

    def discover(self, adapter="/org/bluez/hci0", count=1, timeout=10, stop=True):
        """StartDiscovery until count devices exist; returns their paths."""
        ad = self.iface(adapter, "org.bluez.Adapter1")
        ad.StartDiscovery()

        def devs():
            return sorted(p for p, i in self.managed().items()
                          if "org.bluez.Device1" in i and p.startswith(adapter + "/"))
        self.wait_for(lambda: len(devs()) >= count, timeout, "%d devices" % count)
        if stop:
            ad.StopDiscovery()
        return devs()

    def connect(self, dev, timeout=10):
        since = self.mark()
        self.iface(dev, "org.bluez.Device1").Connect(timeout=timeout)
        self.wait_prop(dev, "ServicesResolved", True, since, timeout)
        return dev + "/service0010/char0011"


def smp_echo(text, seq=1):
    """An SMP v2 os echo request: header + definite-length CBOR {"d": text}."""
    data = text.encode()
    if len(data) < 24:
        cbor_str = bytes([0x60 + len(data)]) + data
    elif len(data) < 256:
        cbor_str = bytes([0x78, len(data)]) + data
    else:
        cbor_str = bytes([0x79, len(data) >> 8, len(data) & 0xff]) + data
    payload = bytes([0xa1, 0x61, ord("d")]) + cbor_str
    return bytes([0x0a, 0, len(payload) >> 8, len(payload) & 0xff, 0, 0, seq, 0]) + payload


def frame_complete(buf):
    """Length of the first whole SMP frame in buf, or 0 (header length rule)."""
    if len(buf) < 8:
        return 0
    n = 8 + (buf[2] << 8 | buf[3])
    return n if len(buf) >= n else 0


# ---- TAP and D-Bus error helpers shared by the tests ----------------------------

class Tap:
    """Numbered TAP lines; the first failure ends the test."""
    n = 0


def ok(cond, what):
    Tap.n += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (Tap.n, what), flush=True)
    if not cond:
        raise SystemExit(1)


def eq(got, want, what):
    if got != want:
        print("# got:  %r\n# want: %r" % (got, want))
    ok(got == want, what)


def dbus_error(fn, *args, **kw):
    """(error name, message) of a D-Bus call that fails, (None, None) if not."""
    try:
        fn(*args, **kw)
    except dbus.exceptions.DBusException as e:
        return e.get_dbus_name(), e.get_dbus_message()
    return None, None
