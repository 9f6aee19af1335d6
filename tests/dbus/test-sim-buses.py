# SPDX-License-Identifier: MIT
"""Per-gateway radio visibility in one smpgw-sim (docs/simulator.md, "Several
gateways"): one process serves a fake org.bluez on three private buses
(--bus g1=ADDR --bus g2=ADDR --bus g3=ADDR), each with its own adapters; a
watch's fleet key "heard" says which bus hears it at which RSSI; a watch
takes one central at a time over all buses (a second gateway's Connect fails
as BlueZ's does, le-connection-abort-by-local after the LE connection
timeout); the control socket's move/range/rssi/power commands change what
each gateway hears, and list/counters report per bus. TAP; every wait bounded.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

try:
    import dbus
    from gi.repository import GLib  # noqa: F401 (bluezsim's main loop)
except ImportError as e:  # python3-dbus / python3-gi: scripts/deps.sh --test
    print("1..0 # SKIP %s" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bluezsim import Env, Tap, _readline, _reap, dbus_error, eq, ok, smp_echo  # noqa: E402

SIM = os.environ.get("SMPGW_SIM")
A, B, C, D = "C0:FF:EE:00:00:01", "C0:FF:EE:00:00:02", "C0:FF:EE:00:00:03", "C0:FF:EE:00:00:04"


def adapters_of(bus):
    return sorted(p for p, i in bus.managed().items() if "org.bluez.Adapter1" in i)


def path_of(bus, addr):
    """The Device1 path of addr on bus (whichever of its adapters has it)."""
    for p, i in bus.managed().items():
        d = i.get("org.bluez.Device1")
        if d and str(d["Address"]) == addr:
            return p
    raise AssertionError("%s not known on this bus" % addr)


class BusView(Env):
    """One private bus (a gateway's system bus) without a simulator of its
    own: the helpers of bluezsim.Env (discover, connect, wait_prop) on it."""

    def __init__(self):  # noqa: the simulator is shared, started below
        self.tmp = tempfile.mkdtemp(prefix="smpgw-buses-")
        self.daemon = None
        self.sim = None
        self.signals = []
        self._start_bus()

    def close(self):
        _reap(self.daemon)
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)


FLEET = {
    "count": 4, "seed": 3,
    "adapters": [{"bus": "g1", "max_connections": 4}, {"bus": "g2"}, {}],
    "defaults": {"boot_ms": 100},
    "devices": [
        {"address": A, "heard": {"g1": -50, "g2": -72}},
        {"address": B, "heard": {"g2": -60}},
        {"address": C, "rssi": -65},                      # no map: every bus hears it
        {"address": D, "heard": {"g1": -55, "g2": -58}, "centrals": 2},
    ],
}


class Sim:
    def __init__(self, buses, fleet, env=None):
        self.tmp = tempfile.mkdtemp(prefix="smpgw-sim-buses-")
        self.fleet = os.path.join(self.tmp, "fleet.json")
        with open(self.fleet, "w") as f:
            json.dump(fleet, f)
        self.sock = os.path.join(self.tmp, "sim.sock")
        argv = [SIM, "--fleet", self.fleet, "--control", self.sock]
        for name, b in buses.items():
            argv += ["--bus", "%s=%s" % (name, b.address)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     env=dict(os.environ, **(env or {})))
        self.out = []
        while True:
            line = _readline(self.proc.stdout, 10)
            if line is None:
                raise RuntimeError("smpgw-sim did not start: %r" % self.out)
            self.out.append(line)
            if line == "ready":
                break

    def ctl(self, req, expect_ok=True):
        r = subprocess.run([SIM, "ctl", self.sock, json.dumps(req)], capture_output=True,
                           text=True, timeout=15)
        ans = json.loads(r.stdout)
        if expect_ok and not ans.get("ok"):
            raise RuntimeError("ctl %s: %s" % (req, ans))
        return ans

    def dev(self, addr):
        return [d for d in self.ctl({"cmd": "list"})["devices"] if d["address"] == addr][0]

    def close(self):
        _reap(self.proc)


def seen(bus):
    """{address: RSSI} of the devices bus's adapters know."""
    out = {}
    for p, i in bus.managed().items():
        d = i.get("org.bluez.Device1")
        if d:
            out[str(d["Address"])] = int(d["RSSI"]) if "RSSI" in d else None
    return out


def echo_over(bus, addr, text):
    """An SMP echo through bus's acquired fds: the shared watch answers."""
    ch = bus.connect(path_of(bus, addr))
    c = bus.iface(ch, "org.bluez.GattCharacteristic1")
    wfd, _ = c.AcquireWrite(dbus.Dictionary({}, signature="sv"))
    nfd, _ = c.AcquireNotify(dbus.Dictionary({}, signature="sv"))
    w, n = wfd.take(), nfd.take()
    try:
        os.write(w, smp_echo(text))
        import select
        r, _, _ = select.select([n], [], [], 5)
        return os.read(n, 512) if r else b""
    finally:
        os.close(w)
        os.close(n)


def case_buses():
    buses = {g: BusView() for g in ("g1", "g2", "g3")}
    sim = None
    try:
        sim = Sim(buses, FLEET, env={"SMPGW_SIM_LE_CONN_TIMEOUT_MS": "1500"})
        for g, b in buses.items():
            b.wait_for(lambda b=b: any("org.bluez.Adapter1" in i for i in b.managed().values()),
                       10, g + " adapter")
        # adapters: g1 has its own + a copy of the shared one, g2 too, g3 the copy only
        adapters = {g: sorted(str(b.prop(p, "org.bluez.Adapter1", "Address"))
                              for p, i in b.managed().items() if "org.bluez.Adapter1" in i)
                    for g, b in buses.items()}
        eq(adapters, {"g1": ["00:AA:00:00:00:00", "00:AA:02:00:00:00"],
                      "g2": ["00:AA:01:00:00:00", "00:AA:02:01:00:00"],
                      "g3": ["00:AA:02:02:00:00"]},
           "each bus has its adapters (a shared adapter is one radio per bus)")
        ok(any(line.startswith("bus g3 adapter hci0 00:AA:02:02:00:00") for line in sim.out),
           "the simulator prints each bus's adapters")

        # discovery: each gateway hears what is in its range, at its RSSI
        for g, b in buses.items():
            for ad in adapters_of(b):
                b.iface(ad, "org.bluez.Adapter1").SetDiscoveryFilter(
                    dbus.Dictionary({"Transport": "le", "DuplicateData": True}, signature="sv"))
                b.iface(ad, "org.bluez.Adapter1").StartDiscovery()
        want = {"g1": {A: -50, C: -65, D: -55}, "g2": {A: -72, B: -60, C: -65, D: -58},
                "g3": {C: -65}}
        for g, b in buses.items():
            b.wait_for(lambda b=b, g=g: {a: r for a, r in seen(b).items()
                                         if a in want[g]} == want[g], 10, g + " discovery")
        time.sleep(1.2)  # another scan period: nothing else turns up
        got = {g: seen(b) for g, b in buses.items()}
        eq(got, want, "g1 hears A, C, D; g2 all four; g3 only C (no map: heard everywhere)")

        d = sim.dev(A)
        eq((d["heard"], d["connected"], d["links"]), ({"g1": -50, "g2": -72}, [], 0),
           "list: A's per-bus hearing")

        # one central at a time: g1 connects A, g2's Connect fails as BlueZ's
        g1, g2 = buses["g1"], buses["g2"]
        rsp = echo_over(g1, A, "via g1")
        ok(b"via g1" in rsp, "an SMP echo over g1's link is answered")
        d = sim.dev(A)
        eq((d["connected"], d["links"]), (["g1"], 1), "list: A connected on g1")
        t0 = time.monotonic()
        err = dbus_error(g2.iface(path_of(g2, A), "org.bluez.Device1").Connect, timeout=15)
        took = time.monotonic() - t0
        eq(err, ("org.bluez.Error.Failed", "le-connection-abort-by-local"),
           "g2's Connect to A while g1 holds the link fails like BlueZ's")
        ok(took >= 1.3, "after the LE connection timeout (%.1f s)" % took)
        # the watch does not advertise while connected: g2 sees no RSSI update
        since = g2.mark()
        g2.pump(1.5)
        ok(not g2.changed(path_of(g2, A), "RSSI", since=since),
           "a connected watch does not advertise to other gateways")

        # Two centrals where the watch takes them: D on g1 and g2 at once
        g1.connect(path_of(g1, D))
        g2.connect(path_of(g2, D))
        d = sim.dev(D)
        eq((sorted(d["connected"]), d["links"]), (["g1", "g2"], 2),
           "a watch with centrals 2 is connected to g1 and g2")

        # g1 lets A go: g2 connects, the same watch (one flash) answers
        g1.iface(path_of(g1, A), "org.bluez.Device1").Disconnect()
        rsp = echo_over(g2, A, "via g2")
        ok(b"via g2" in rsp, "after g1 disconnects, g2 connects A and it answers")
        eq(sim.dev(A)["connected"], ["g2"], "list: A connected on g2")

        # walking to another room: out of g2's range, into g3's
        since = g2.mark()
        sim.ctl({"cmd": "move", "device": A, "heard": {"g2": None, "g3": -45}})
        g2.wait_prop(path_of(g2, A), "Connected", False, since, timeout=5)
        ok(True, "A walked out of g2's range: g2's link drops (supervision timeout)")
        g3 = buses["g3"]
        g3.wait_for(lambda: seen(g3).get(A) == -45, 10, "g3 to discover A")
        eq(sim.dev(A)["heard"], {"g1": -50, "g3": -45}, "list: A heard by g1 and g3")
        since = g1.mark()
        sim.ctl({"cmd": "rssi", "device": A, "bus": "g1", "rssi": -80})
        g1.wait_for(lambda: seen(g1).get(A) == -80, 10, "g1 to hear A at -80")
        ok(True, "rssi with a bus changes that gateway's hearing only")
        eq(sim.dev(A)["heard"], {"g1": -80, "g3": -45}, "list: g3 unchanged")
        sim.ctl({"cmd": "range", "device": A, "bus": "g1", "in_range": False})
        eq(sim.dev(A)["heard"], {"g3": -45}, "range with a bus: out of g1's range")

        # a gateway host going dark: its adapters power off, its links drop
        since = g2.mark()
        sim.ctl({"cmd": "power", "bus": "g2", "on": False})
        g2.wait_prop(path_of(g2, D), "Connected", False, since, timeout=5)
        eq(sim.dev(D)["connected"], ["g1"], "power off g2: D's link on g2 is gone")
        sim.ctl({"cmd": "power", "bus": "g2", "on": True})

        c = sim.ctl({"cmd": "counters"})
        eq(sorted(c["buses"]), ["g1", "g2", "g3"], "counters per bus")
        eq(c["bluez"]["connects"], sum(v["connects"] for v in c["buses"].values()),
           "bluez counters are the sum over the buses")
        ok(c["buses"]["g2"]["connect_failures"] >= 1 and c["buses"]["g1"]["connects"] >= 2,
           "g2 counted its failed connect, g1 its connects")

        # errors
        e = sim.ctl({"cmd": "move", "device": A, "heard": {"g9": -50}}, expect_ok=False)
        ok(not e["ok"] and "bus" in e["error"], "move to an unknown bus: %s" % e["error"])
        e = sim.ctl({"cmd": "move", "device": A, "heard": {"g1": 99}}, expect_ok=False)
        ok(not e["ok"] and "-127..20" in e["error"], "move with a bad RSSI: %s" % e["error"])
        e = sim.ctl({"cmd": "power", "bus": "nope", "on": False}, expect_ok=False)
        ok(not e["ok"], "power of an unknown bus is refused")
    finally:
        if sim:
            sim.close()
        for b in buses.values():
            b.close()


def case_errors():
    """Bad command lines and fleets: a clear message, no start."""
    b = BusView()
    try:
        def run(args, fleet):
            tmp = tempfile.mkdtemp(prefix="smpgw-sim-buses-")
            path = os.path.join(tmp, "fleet.json")
            with open(path, "w") as f:
                json.dump(fleet, f)
            r = subprocess.run([SIM, "--fleet", path] + args, capture_output=True, text=True,
                               timeout=20)
            return r.returncode, r.stderr
        one = {"count": 1}
        rc, err = run(["--bus", "g1=" + b.address, "--bus", "g1=" + b.address], one)
        ok(rc != 0 and "distinct" in err, "two --bus of one name refused: " + err.strip())
        rc, err = run(["--bus", b.address, "--bus", "g2=" + b.address], one)
        ok(rc != 0 and "distinct" in err, "a plain --bus among several refused")
        rc, err = run(["--bus", "g1=" + b.address],
                      {"count": 1, "devices": [{"heard": {"g7": -50}}]})
        ok(rc != 0 and "g7" in err, "a watch heard by a bus not given: " + err.strip())
        rc, err = run(["--bus", "g1=" + b.address],
                      {"count": 1, "adapters": [{"bus": "g2"}]})
        ok(rc != 0 and "g2" in err, "an adapter of a bus not given: " + err.strip())
        rc, err = run(["--bus", "bad name=" + b.address], one)
        ok(rc != 0, "a bad bus name refused")
    finally:
        b.close()


def main():
    if not SIM:
        print("1..0 # SKIP needs SMPGW_SIM")
        sys.exit(77)
    {"buses": case_buses, "errors": case_errors}[sys.argv[1]]()
    print("1..%d" % Tap.n)


if __name__ == "__main__":
    main()
