# SPDX-License-Identifier: MIT
"""The simulator's fake org.bluez, checked with a generic D-Bus client
(dbus-python) against the recording of a real BlueZ 5.66
(tests/data/conformance/bluez/). Usage: test-bluez.py CASE
"""
import json
import os
import select
import socket
import subprocess
import sys
import time

try:
    import dbus
    import dbus.service
    from gi.repository import GLib  # noqa: F401 (bluezsim's main loop)
except ImportError as e:  # python3-dbus / python3-gi: scripts/deps.sh --test
    print("1..0 # SKIP %s" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bluezsim import (BLUEZ, SMP_CHAR, SMP_SERVICE, Env, Tap, dbus_error, eq,  # noqa: E402
                      frame_complete, ok, smp_echo)

REC = json.load(open(os.path.join(os.environ["CONFORMANCE_DIR"], "bluez",
                                  "bluez-dbus-surface.json")))
REC_DEV = "/org/bluez/hci1/dev_00_AA_01_00_00_00"
AD = "/org/bluez/hci0"
ECHO_RSP = bytes.fromhex(REC["notify fd first read (echo rsp)"])


def F(d):
    return dbus.Dictionary(d, signature="sv")


def OPTS():
    return dbus.Dictionary({}, signature="sv")


def sig(v):
    """The D-Bus signature of a value as dbus-python returns it."""
    simple = {dbus.String: "s", dbus.Boolean: "b", dbus.UInt32: "u", dbus.Int16: "n",
              dbus.UInt16: "q", dbus.Byte: "y", dbus.ObjectPath: "o", dbus.Int32: "i"}
    for t, s in simple.items():
        if isinstance(v, t):
            return s
    if isinstance(v, dbus.Dictionary):
        return "a{" + v.signature + "}"
    if isinstance(v, dbus.Array):
        return "a" + v.signature
    return "?"


def xml_props(xml):
    """{interface: {property: type}} from introspection XML."""
    import xml.etree.ElementTree as ET
    out = {}
    for i in ET.fromstring(xml.split("\n", 2)[2]).findall("interface"):
        out[i.get("name")] = {p.get("name"): p.get("type") for p in i.findall("property")}
    return out


def dev_added(env):
    """InterfacesAdded signals of Device1 objects."""
    return [x for x in env.signals if x[4] == "InterfacesAdded"
            and "org.bluez.Device1" in x[5][1]]


def introspect(env, path):
    return env.iface(path, "org.freedesktop.DBus.Introspectable").Introspect()


def compare_object(env, path, rec_ifaces, what):
    """Same interfaces in the same order, every recorded property present
    with the recorded D-Bus type, every property typed as introspected."""
    ours = env.managed()[dbus.ObjectPath(path)]
    eq(list(ours.keys()), list(rec_ifaces.keys()), what + ": interfaces")
    types = xml_props(introspect(env, path))
    for iname, rprops in rec_ifaces.items():
        missing = [k for k in rprops if k not in ours[iname]]
        eq(missing, [], "%s: %s recorded properties present" % (what, iname))
        bad = [(k, sig(v), types[iname].get(k)) for k, v in ours[iname].items()
               if sig(v) != types[iname].get(k)]
        eq(bad, [], "%s: %s property types" % (what, iname))


def fleet(n=1, reassembly=True, mtu=498, max_conn=7, **dev):
    devs = []
    for i in range(n):
        d = {"name": "watch%d" % (i + 1), "address": "C0:00:00:00:00:%02X" % (i + 1)}
        d.update(dev)
        devs.append(d)
    return {"adapters": [{"max_connections": max_conn}],
            "defaults": {"link": {"att_mtu": mtu, "reassembly": reassembly,
                                  "conn_interval_us": 7500}},
            "devices": devs}


def recv_frame(fd, timeout=5.0):
    """Notifications from fd until one whole SMP frame is there."""
    buf, msgs = b"", []
    deadline = time.monotonic() + timeout
    while not frame_complete(buf) and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not r:
            break
        m = os.read(fd, 4096)
        if not m:
            break
        msgs.append(m)
        buf += m
    return buf, msgs


def acquire(env, char):
    c = env.iface(char, "org.bluez.GattCharacteristic1")
    wfd, wmtu = c.AcquireWrite(OPTS())
    nfd, nmtu = c.AcquireNotify(OPTS())
    return wfd.take(), int(wmtu), nfd.take(), int(nmtu)


# ---- cases --------------------------------------------------------------------------

def case_surface():
    with Env(count=1) as env:
        eq(introspect(env, "/"), REC["introspect /"], "Introspect / is byte-identical")
        eq(introspect(env, "/org/bluez"), REC["introspect /org/bluez"].replace("hci1", "hci0"),
           "Introspect /org/bluez is byte-identical")
        eq(introspect(env, AD), REC["introspect adapter"], "Introspect adapter is byte-identical")
        rec = REC["managed objects while discovering (before connect)"]
        compare_object(env, "/org/bluez", rec["/org/bluez"], "/org/bluez")
        compare_object(env, AD, rec["/org/bluez/hci1"], "adapter")
        [dev] = env.discover(stop=False)
        eq(introspect(env, dev), REC["introspect device (before connect)"],
           "Introspect device before connect is byte-identical")
        compare_object(env, dev, rec[REC_DEV], "device while discovering")
        env.iface(AD, "org.bluez.Adapter1").StopDiscovery()
        char = env.connect(dev)
        after = REC["managed objects after connect"]
        eq(introspect(env, dev), REC["introspect DEVICE"], "Introspect device after connect")
        for key in [k for k in REC if k.startswith("introspect DEVICE/")]:
            sub = key[len("introspect DEVICE"):]
            eq(introspect(env, dev + sub), REC[key], "Introspect %s is byte-identical" % sub)
            compare_object(env, dev + sub, after[REC_DEV + sub], "managed " + sub)
        eq(env.prop(dev, "org.bluez.Device1", "UUIDs"),
           after[REC_DEV]["org.bluez.Device1"]["UUIDs"], "device UUIDs after resolve")
        # AcquireWrite / AcquireNotify: (h, q), AF_UNIX SOCK_SEQPACKET, MTU
        c = env.iface(char, "org.bluez.GattCharacteristic1")
        w = c.AcquireWrite(OPTS())
        n = c.AcquireNotify(OPTS())
        eq([type(x).__name__ for x in w], ["UnixFd", "UInt16"], "AcquireWrite returns (h, q)")
        eq(int(w[1]), REC["AcquireWrite returns"]["mtu"], "AcquireWrite MTU as recorded")
        eq(int(n[1]), REC["AcquireNotify returns"]["mtu"], "AcquireNotify MTU as recorded")
        wfd, nfd = w[0].take(), n[0].take()
        for fd in (wfd, nfd):
            s = socket.socket(fileno=os.dup(fd))
            eq((int(s.family), int(s.type)), (1, 5), "acquired fd is AF_UNIX SOCK_SEQPACKET")
            s.close()
        env.pump(0.05)
        props = env.props(char, "org.bluez.GattCharacteristic1")
        want = REC["characteristic props while acquired"]
        eq({k: props[k] for k in ("WriteAcquired", "NotifyAcquired", "MTU", "Notifying")},
           {k: want[k] if not isinstance(want[k], dict) else want[k]["$UInt16"]
            for k in ("WriteAcquired", "NotifyAcquired", "MTU", "Notifying")},
           "characteristic properties while acquired")
        os.write(wfd, smp_echo("Hello, World!", 1))
        buf, _ = recv_frame(nfd)
        eq(buf, ECHO_RSP, "echo through the fds answers as the recorded Zephyr")
        # errors, as recorded
        errs = REC["errors"]
        eq(dbus_error(c.AcquireWrite, OPTS()), (errs["AcquireWrite twice"]["name"],
                                           errs["AcquireWrite twice"]["message"]),
           "second AcquireWrite: NotPermitted 'Write acquired'")
        eq(dbus_error(c.AcquireNotify, OPTS()), ("org.bluez.Error.NotPermitted", "Notify acquired"),
           "second AcquireNotify: NotPermitted 'Notify acquired'")
        bogus = env.iface(AD + "/dev_00_11_22_33_44_55", "org.bluez.Device1")
        e = errs["Connect on unknown path"]
        eq(dbus_error(bogus.Connect), (e["name"], e["message"]), "Connect on unknown path")
        e = errs["StopDiscovery when not discovering"]
        eq(dbus_error(env.iface(AD, "org.bluez.Adapter1").StopDiscovery), (e["name"], e["message"]),
           "StopDiscovery when not discovering")
        os.close(wfd)
        os.close(nfd)
        env.wait_for(lambda: not env.prop(char, "org.bluez.GattCharacteristic1", "WriteAcquired")
                     and not env.prop(char, "org.bluez.GattCharacteristic1", "NotifyAcquired"),
                     5, "release")
        ok(True, "closing the fds releases WriteAcquired/NotifyAcquired")
        e = errs["WriteValue bad option type"]
        eq(dbus_error(c.WriteValue, dbus.Array([1], signature="y"), dbus.Dictionary({"type": dbus.UInt16(1)}, signature="sv")),
           (e["name"], e["message"]), "WriteValue bad option type")
        # link drop with held fds
        wfd, _, nfd, _ = acquire(env, char)
        since = env.mark()
        env.iface(dev, "org.bluez.Device1").Disconnect()
        env.wait_prop(dev, "Connected", False, since)
        env.wait_prop(char, "NotifyAcquired", False, since)
        p = select.poll()
        p.register(wfd, select.POLLIN | select.POLLOUT)
        p.register(nfd, select.POLLIN)
        ev = dict(p.poll(1000))
        ok(ev.get(wfd, 0) & select.POLLHUP and ev.get(nfd, 0) & select.POLLHUP,
           "held fds see POLLHUP after the link drops")
        eq(os.read(nfd, 100), b"", "notify fd reads EOF after drop")
        try:
            os.write(wfd, b"x")
            err = None
        except BrokenPipeError as x:
            err = x.errno
        eq(err, 32, "write fd send fails with EPIPE after drop")
        os.close(wfd)
        os.close(nfd)
        order = [a[1] for _t, _s, pth, _i, m, a in env.signals
                 if pth == dev and m == "PropertiesChanged" and _t >= since]
        eq([list(x.keys()) for x in order[:2]], [["ServicesResolved"], ["Connected"]],
           "disconnect: ServicesResolved false, then Connected false")
        props = env.props(dev, "org.bluez.Device1")
        want = REC["device props after disconnect"]
        SKIP = ("Address", "AddressType", "Name", "Alias", "Adapter")
        eq({k: props.get(k) for k in want if k not in SKIP},
           {k: v for k, v in want.items() if k not in SKIP},
           "device properties after disconnect as recorded")
        paths = sorted(str(p) for p in env.managed() if str(p).startswith(dev))
        want = sorted(p.replace(REC_DEV, dev) for p in REC["managed objects after disconnect (paths)"]
                      if p.startswith(REC_DEV))
        eq(paths, want, "GATT objects stay cached after disconnect")
        since = env.mark()
        env.iface(dev, "org.bluez.Device1").Connect()
        t0 = time.monotonic()
        env.wait_prop(dev, "ServicesResolved", True, since)
        ok(time.monotonic() - t0 < 3.0, "reconnect resolves cached services")
        added = [a for _t, _s, pth, _i, m, a in env.signals
                 if m == "InterfacesAdded" and _t >= since]
        eq(added, [], "no InterfacesAdded on reconnect (services cached)")


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout + p.stderr


def case_tools():
    """busctl and gdbus, generic clients, see what BlueZ's signatures say."""
    with Env(count=1) as env:
        a = "--address=" + env.address
        rc, out = run(["busctl", a, "tree", BLUEZ])
        ok(rc == 0 and "/org/bluez/hci0" in out, "busctl tree org.bluez")
        rc, out = run(["busctl", a, "introspect", BLUEZ, AD])
        ok(rc == 0 and ".StartDiscovery" in out and ".SetDiscoveryFilter" in out
           and "a{sv}" in out, "busctl introspect the adapter")
        rc, out = run(["busctl", a, "get-property", BLUEZ, AD, "org.bluez.Adapter1", "Powered"])
        eq((rc, out.strip()), (0, "b true"), "busctl get-property Powered")
        rc, out = run(["busctl", a, "call", BLUEZ, AD, "org.bluez.Adapter1", "SetDiscoveryFilter",
                       "a{sv}", "2", "UUIDs", "as", "1", SMP_SERVICE, "Transport", "s", "le"])
        eq(rc, 0, "busctl call SetDiscoveryFilter a{sv}")
        rc, out = run(["busctl", a, "call", BLUEZ, AD, "org.bluez.Adapter1", "StopDiscovery"])
        ok(rc != 0 and "No discovery started" in out, "busctl sees BlueZ's error text")
        rc, out = run(["gdbus", "introspect", "--address", env.address, "--dest", BLUEZ,
                       "--object-path", "/org/bluez"])
        ok(rc == 0 and "RegisterAgent(in  o agent," in out, "gdbus introspect /org/bluez")
        rc, out = run(["gdbus", "call", "--address", env.address, "--dest", BLUEZ,
                       "--object-path", "/", "--method",
                       "org.freedesktop.DBus.ObjectManager.GetManagedObjects"])
        ok(rc == 0 and "'org.bluez.Adapter1'" in out, "gdbus call GetManagedObjects")


def case_discovery():
    with Env(fleet=fleet(2)) as env:
        ad = env.iface(AD, "org.bluez.Adapter1")
        eq(sorted(ad.GetDiscoveryFilters()),
           sorted(["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable",
                   "Pattern"]), "GetDiscoveryFilters")
        eq(dbus_error(ad.SetDiscoveryFilter, F({"Transport": "nfc"}))[0],
           "org.bluez.Error.InvalidArguments", "bad Transport rejected")
        eq(dbus_error(ad.SetDiscoveryFilter, F({"RSSI": dbus.Int16(-90), "Pathloss": dbus.UInt16(5)}))[0],
           "org.bluez.Error.InvalidArguments", "RSSI with Pathloss rejected")
        eq(dbus_error(ad.SetDiscoveryFilter, F({"UUIDs": ["not-a-uuid"]}))[0],
           "org.bluez.Error.InvalidArguments", "bad UUID rejected")
        # a filter on another service finds nothing
        ad.SetDiscoveryFilter(F({"UUIDs": ["180d"], "Transport": "le"}))
        ad.StartDiscovery()
        env.pump(1.5)
        eq([p for p, i in env.managed().items() if "org.bluez.Device1" in i], [],
           "UUID filter on another service: nothing found")
        eq(dbus_error(ad.StartDiscovery), ("org.bluez.Error.InProgress",
                                          "Operation already in progress"),
           "StartDiscovery twice by one client")
        ad.StopDiscovery()
        since = env.mark()
        ad.SetDiscoveryFilter(F({"UUIDs": [SMP_SERVICE], "Transport": "le",
                               "RSSI": dbus.Int16(-100), "DuplicateData": False}))
        ad.StartDiscovery()
        env.wait_prop(AD, "Discovering", True, since)
        first = [s[4] for s in env.signals if s[0] >= since and s[4] in
                 ("PropertiesChanged", "InterfacesAdded")]
        eq(first[0], "PropertiesChanged", "Discovering true comes before InterfacesAdded")
        env.wait_for(lambda: len(dev_added(env)) >= 2,
                     5, "two InterfacesAdded")
        added = [s[5] for s in dev_added(env)]
        for path, ifaces in added:
            d = ifaces["org.bluez.Device1"]
            ok(list(ifaces.keys()) == ["org.freedesktop.DBus.Introspectable", "org.bluez.Device1",
                                       "org.freedesktop.DBus.Properties"],
               "InterfacesAdded %s: interfaces as recorded" % path)
            ok(SMP_SERVICE in d["UUIDs"] and sig(d["RSSI"]) == "n" and d["Connected"] is not True
               and d["AddressType"] in ("public", "random") and d["Adapter"] == AD,
               "InterfacesAdded %s: RSSI, UUIDs, Address, AddressType" % path)
            ok(str(path).endswith(str(d["Address"]).replace(":", "_")), "device path from address")
            ok("ManufacturerData" in d and sig(d["ManufacturerData"]) == "a{qv}",
               "ManufacturerData from the advertising record is a{qv}")
        # per-client sessions: a second client keeps discovery on
        other = dbus.bus.BusConnection(env.address)
        dbus.Interface(other.get_object(BLUEZ, AD, introspect=False),
                       "org.bluez.Adapter1").StartDiscovery()
        ad.StopDiscovery()
        env.pump(0.2)
        eq(bool(env.prop(AD, "org.bluez.Adapter1", "Discovering")), True,
           "Discovering stays on while another client discovers")
        since = env.mark()
        other.close()
        env.wait_prop(AD, "Discovering", False, since)
        ok(True, "the last discovering client leaving the bus stops discovery")
        devs = [s[5][0] for s in dev_added(env)]
        gone = [a for _t, _s, p, _i, m, a in env.signals
                if p == devs[0] and m == "PropertiesChanged" and "RSSI" in a[2]]
        ok(gone, "RSSI invalidated when discovery stops")
        ad.RemoveDevice(devs[0])
        env.wait_for(lambda: any(s[4] == "InterfacesRemoved" and s[5][0] == devs[0]
                                 for s in env.signals), 5, "InterfacesRemoved")
        ok(dbus.ObjectPath(devs[0]) not in env.managed(), "RemoveDevice removes the object")
        eq(dbus_error(ad.RemoveDevice, dbus.ObjectPath(devs[0])),
           ("org.bluez.Error.DoesNotExist", "Does Not Exist"), "RemoveDevice unknown path")


def case_gatt():
    with Env(fleet=fleet(1, reassembly=True, mtu=64)) as env:
        [dev] = env.discover()
        since = env.mark()
        char = env.connect(dev)
        added = [s[5][0] for s in env.signals if s[4] == "InterfacesAdded"
                 and s[5][0].startswith(dev + "/")]
        eq(added, [dev + "/" + x for x in (
            "service0001", "service0001/char0002", "service0001/char0002/desc0004",
            "service0001/char0005", "service0001/char0007", "service0010",
            "service0010/char0011", "service0010/char0011/desc0013")],
           "GATT objects announced in bluetoothd's order")
        order = [list(a[1].keys()) for _t, _s, p, _i, m, a in env.signals
                 if p == dev and m == "PropertiesChanged" and _t >= since and a[1]]
        eq(order, [["Connected"], ["UUIDs", "ServicesResolved"]],
           "Connected, then UUIDs + ServicesResolved")
        eq(env.prop(char, "org.bluez.GattCharacteristic1", "UUID"), SMP_CHAR, "SMP characteristic")
        wfd, mtu, nfd, _ = acquire(env, char)
        eq(mtu, 64, "MTU from the link model")
        os.write(wfd, smp_echo("Hello, World!", 1))
        eq(recv_frame(nfd)[0], ECHO_RSP, "echo through the fds")
        text = "x" * 300
        req = smp_echo(text, 2)
        for off in range(0, len(req), mtu - 3):
            os.write(wfd, req[off:off + mtu - 3])
        buf, msgs = recv_frame(nfd)
        ok(len(buf) == frame_complete(buf) and text.encode() in buf and buf[6] == 2,
           "long echo: request reassembled by header length, reply whole")
        ok(len(msgs) > 1 and all(len(m) <= mtu - 3 for m in msgs[:-1]) and
           all(len(m) == mtu - 3 for m in msgs[:-1]),
           "reply came as back-to-back notifications of MTU-3 bytes (%d)" % len(msgs))
        os.write(wfd, b"")  # an empty message is no write, and no EOF either
        os.write(wfd, smp_echo("still here", 4))
        buf, _ = recv_frame(nfd)
        ok(b"still here" in buf, "an empty write does not release the fd")
        before = env.cmd("counters")
        os.write(wfd, bytes(mtu))  # longer than MTU-3: bt_att refuses it
        env.pump(0.2)
        ok(env.cmd("counters") != before, "a write longer than MTU-3 is dropped and counted")
        os.close(wfd)
        os.close(nfd)
        # WriteValue + StartNotify fallback
        c = env.iface(char, "org.bluez.GattCharacteristic1")
        since = env.mark()
        c.StartNotify()
        env.wait_prop(char, "Notifying", True, since)
        c.WriteValue(dbus.ByteArray(smp_echo("Hello, World!", 1)), F({"type": "command"}))
        env.wait_for(lambda: env.changed(char, "Value", None, since), 5, "Value")
        got = b"".join(bytes(a[1]["Value"]) for a in env.changed(char, "Value", None, since))
        eq(got, ECHO_RSP, "echo through WriteValue comes back as Value PropertiesChanged")
        eq(dbus_error(c.WriteValue, dbus.ByteArray(bytes(mtu)), F({"type": "command"})),
           ("org.bluez.Error.Failed", "Failed to initiate write"), "WriteValue over MTU-3")
        eq(dbus_error(c.WriteValue, dbus.ByteArray(b"1"), F({"type": "request"}))[0],
           "org.bluez.Error.NotSupported", "write request on a write-without-response char")
        eq(dbus_error(c.AcquireNotify, OPTS())[0], "org.bluez.Error.InProgress",
           "AcquireNotify while notifying")
        eq(dbus_error(c.ReadValue, OPTS()), ("org.bluez.Error.NotPermitted", "Read not permitted"),
           "ReadValue on the SMP characteristic")
        since = env.mark()
        c.StopNotify()
        env.wait_prop(char, "Notifying", False, since)
        eq(dbus_error(c.StopNotify), ("org.bluez.Error.Failed", "No notify session started"),
           "StopNotify without a session")
        h = env.iface(dev + "/service0001/char0007", "org.bluez.GattCharacteristic1")
        eq(bytes(h.ReadValue(OPTS())).hex(), "067b39b89acd9a68a5335461ffd39342", "Database Hash read")


def case_link():
    with Env(fleet=fleet(1, reassembly=False, mtu=247)) as env:
        [dev] = env.discover()
        char = env.connect(dev)
        wfd, mtu, nfd, _ = acquire(env, char)
        req = smp_echo("split me", 3)
        os.write(wfd, req[:6])
        os.write(wfd, req[6:])
        buf, _ = recv_frame(nfd, 1.0)
        ok(not buf or buf[6] != 3, "without reassembly a frame split over writes is not answered")
        os.write(wfd, smp_echo("Hello, World!", 1))
        eq(recv_frame(nfd)[0], ECHO_RSP, "one write = one frame is answered")
        # pipelining beyond the watch's buffers: silent drops, counted
        for i in range(40):
            os.write(wfd, smp_echo("p" * 100, i))
        env.pump(1.5)
        ok("drops_busy=0" not in env.cmd("counters"),
           "writes beyond the SMP buffers are dropped silently and counted")
        while select.select([nfd], [], [], 0.2)[0]:
            if not os.read(nfd, 4096):
                break
        # the watch reboots: the link drops, the fds hang up, objects stay
        since = env.mark()
        env.cmd("reset C0:00:00:00:00:01")
        env.wait_prop(dev, "Connected", False, since, 5)
        env.wait_prop(char, "WriteAcquired", False, since, 5)
        eq(os.read(nfd, 100), b"", "reset: notify fd EOF")
        os.close(wfd)
        os.close(nfd)
        ok(dbus.ObjectPath(char) in env.managed(), "reset: GATT objects stay cached")
        # back after boot: advertises, connects again
        eq(dbus_error(env.iface(dev, "org.bluez.Device1").Connect, timeout=15), (None, None),
           "Connect while the watch reboots completes once it advertises again")
        env.wait_prop(dev, "ServicesResolved", True, since, 5)
        wfd, _, nfd, _ = acquire(env, char)
        os.write(wfd, smp_echo("Hello, World!", 1))
        eq(recv_frame(nfd)[0], ECHO_RSP, "echo after the watch rebooted")
        # out of range: link lost
        since = env.mark()
        env.cmd("range C0:00:00:00:00:01 0")
        env.wait_prop(dev, "Connected", False, since, 5)
        ok(True, "out of range drops the link")
        os.close(wfd)
        os.close(nfd)


def case_connect_errors():
    env_ = {"SMPGW_SIM_LE_CONN_TIMEOUT_MS": "500"}
    with Env(fleet=fleet(3, max_conn=2), env=env_) as env:
        devs = env.discover(count=3)
        env.connect(devs[0])
        env.connect(devs[1])
        eq(dbus_error(env.iface(devs[2], "org.bluez.Device1").Connect),
           ("org.bluez.Error.Failed", "le-connection-concurrent-connection-limit"),
           "connection budget exhausted")
        env.iface(devs[0], "org.bluez.Device1").Disconnect()
        env.connect(devs[2])
        ok(True, "a freed slot can be used")
        env.iface(devs[1], "org.bluez.Device1").Disconnect()
        env.cmd("range C0:00:00:00:00:02 0")
        t0 = time.monotonic()
        eq(dbus_error(env.iface(devs[1], "org.bluez.Device1").Connect),
           ("org.bluez.Error.Failed", "le-connection-abort-by-local"),
           "out of range: le-connection-abort-by-local")
        ok(time.monotonic() - t0 >= 0.45, "after the LE connection timeout")
        eq(dbus_error(env.iface(devs[2], "org.bluez.Device1").Connect), (None, None),
           "Connect when connected succeeds")


def echo_rounds(env, links, rounds, text):
    """Runs rounds echoes of text on every link at once; returns seconds."""
    t0 = time.monotonic()
    for r in range(rounds):
        for wfd, mtu, _nfd in links:
            req = smp_echo(text, r)
            for off in range(0, len(req), mtu - 3):
                os.write(wfd, req[off:off + mtu - 3])
        for _wfd, _mtu, nfd in links:
            buf, _ = recv_frame(nfd, 10)
            ok(text.encode() in buf and buf[6] == r, "echo round %d answered" % r)
    return time.monotonic() - t0


def case_adapters():
    f = fleet(3, max_conn=1)
    f["adapters"] = [{"max_connections": 1}, {"max_connections": 1}]
    for d, a in zip(f["devices"], (0, 0, 1)):
        d["adapter"] = a  # unset, the fleet spreads watches round-robin
    with Env(fleet=f) as env:
        objs = env.managed()
        ok(dbus.ObjectPath("/org/bluez/hci1") in objs, "one Adapter1 per fleet adapter")
        eq(sorted(str(x) for x in env.iface("/org/bluez/hci1", "org.bluez.Adapter1")
                  .GetDiscoveryFilters()), sorted(["UUIDs", "RSSI", "Pathloss", "Transport",
                                                   "DuplicateData", "Discoverable", "Pattern"]),
           "second adapter answers")
        on0 = env.discover(AD, count=2)
        on1 = env.discover("/org/bluez/hci1", count=1)
        eq([p.rsplit("/", 1)[1] for p in on1], ["dev_C0_00_00_00_00_03"],
           "a watch appears under its own adapter only")
        ok(all(p.startswith(AD + "/") for p in on0), "hci0 sees its two watches")
        env.connect(on0[0])
        env.connect(on1[0])
        ok(True, "each radio has its own connection budget")
        eq(dbus_error(env.iface(on0[1], "org.bluez.Device1").Connect)[1],
           "le-connection-concurrent-connection-limit", "budget is per adapter")


def case_timing():
    f = fleet(2, reassembly=True, mtu=247)
    f["defaults"]["link"].update({"conn_interval_us": 7500, "ll_payload": 251,
                                  "pkts_per_event": 4, "phy": 1, "buf_size": 2048})
    with Env(fleet=f) as env:
        devs = env.discover(count=2)
        links = []
        for dev in devs:
            wfd, mtu, nfd, _ = acquire(env, env.connect(dev))
            links.append((wfd, mtu, nfd))
        text = "t" * 1800
        # An echo of 1800 bytes is 8 writes up and 8 notifications down of
        # <= 244 bytes: one 251-byte LL packet each, 2468 us at 1M PHY, so 3
        # fit in a 7.5 ms event: >= 2 events + 2 packets (~20 ms) per direction.
        # Lower bounds only: a slow machine makes it slower, never faster.
        one = echo_rounds(env, links[:1], 3, text)
        ok(one >= 3 * 2 * 0.019, "one link is paced by its connection events (%.3f s)" % one)
        # two links on one radio: 16 packets per direction per round must share
        # the air: >= 16 x 2468 us per direction, ~0.237 s for 3 rounds
        two = echo_rounds(env, links, 3, text)
        ok(two >= 3 * 2 * 16 * 0.002468 * 0.95,
           "two links on one radio share its air time (%.3f s vs %.3f s)" % (two, one))
        for wfd, _m, nfd in links:
            os.close(wfd)
            os.close(nfd)


def case_lifecycle():
    with Env(fleet=fleet(2), env={"SMPGW_SIM_TEMP_TIMEOUT_MS": "1500"}) as env:
        ad = env.iface(AD, "org.bluez.Adapter1")
        ad.StartDiscovery()
        env.wait_for(lambda: len(dev_added(env)) >= 2,
                     5, "two devices")
        devs = sorted(s[5][0] for s in dev_added(env))
        since = env.mark()
        env.cmd("rssi C0:00:00:00:00:01 -90")
        env.wait_prop(devs[0], "RSSI", dbus.Int16(-90), since, 5)
        ok(True, "an RSSI move while discovering is reported")
        env.cmd("rssi C0:00:00:00:00:01 -88")
        env.pump(1.3)
        eq(env.changed(devs[0], "RSSI", dbus.Int16(-88), since), [],
           "RSSI moves under 8 dBm are not reported")
        env.iface(devs[1], "org.freedesktop.DBus.Properties").Set(
            "org.bluez.Device1", "Trusted", dbus.Boolean(True, variant_level=1))
        ad.StopDiscovery()
        env.wait_for(lambda: any(s[4] == "InterfacesRemoved" and s[5][0] == devs[0]
                                 for s in env.signals), 5, "temporary device forgotten")
        ok(dbus.ObjectPath(devs[1]) in env.managed(), "a trusted device is kept")
        eq(dbus_error(env.iface(devs[0], "org.bluez.Device1").Connect)[0],
           "org.freedesktop.DBus.Error.UnknownObject", "Connect on a forgotten device")
        eq(dbus_error(env.iface(devs[1], "org.freedesktop.DBus.Properties").Set,
                      "org.bluez.Device1", "Connected", dbus.Boolean(True, variant_level=1))[0],
           "org.freedesktop.DBus.Error.PropertyReadOnly", "Connected is read-only")
        # a disconnect fault drops the link after N frames
        char = env.connect(devs[1])
        wfd, _, nfd, _ = acquire(env, char)
        env.cmd("fault C0:00:00:00:00:02 disconnect_after_frames 1")
        since = env.mark()
        os.write(wfd, smp_echo("bye", 1))
        env.wait_prop(devs[1], "Connected", False, since, 5)
        ok(True, "disconnect_after_frames drops the link")
        os.close(wfd)
        os.close(nfd)
        # powering the adapter off
        env.connect(devs[1])
        since = env.mark()
        env.iface(AD, "org.freedesktop.DBus.Properties").Set("org.bluez.Adapter1", "Powered", dbus.Boolean(False, variant_level=1))
        env.wait_prop(devs[1], "Connected", False, since, 5)
        env.wait_prop(AD, "Powered", False, since, 5)
        eq(dbus_error(env.iface(devs[1], "org.bluez.Device1").Connect),
           ("org.bluez.Error.NotReady", "Resource Not Ready"), "Connect with the adapter off")
        eq(dbus_error(ad.StartDiscovery),
           ("org.bluez.Error.NotReady", "Resource Not Ready"), "StartDiscovery with the adapter off")
        env.iface(AD, "org.freedesktop.DBus.Properties").Set("org.bluez.Adapter1", "Powered", dbus.Boolean(True, variant_level=1))
        env.connect(devs[1])
        ok(True, "connects again once powered")


class Agent(dbus.service.Object):
    def __init__(self, bus, path, answer=None):
        super().__init__(bus, path)
        self.calls = []
        self.answer = answer  # None: accept, "hold": never answer, else an error name
        self.authorize = None  # RequestAuthorization: None accepts, else an error name
        self.passkey = 0

    @dbus.service.method("org.bluez.Agent1", in_signature="ou", out_signature="",
                         async_callbacks=("reply", "error"))
    def RequestConfirmation(self, device, passkey, reply, error):
        self.calls.append(("RequestConfirmation", str(device), int(passkey)))
        if self.answer is None:
            reply()
        elif self.answer != "hold":
            error(dbus.exceptions.DBusException("no", name=self.answer))

    @dbus.service.method("org.bluez.Agent1", in_signature="o", out_signature="",
                         async_callbacks=("reply", "error"))
    def RequestAuthorization(self, device, reply, error):
        self.calls.append(("RequestAuthorization", str(device)))
        if self.authorize is None:
            reply()
        else:
            error(dbus.exceptions.DBusException("no", name=self.authorize))

    @dbus.service.method("org.bluez.Agent1", in_signature="o", out_signature="u")
    def RequestPasskey(self, device):
        self.calls.append(("RequestPasskey", str(device)))
        return dbus.UInt32(self.passkey)

    @dbus.service.method("org.bluez.Agent1", in_signature="", out_signature="")
    def Cancel(self):
        self.calls.append(("Cancel",))

    @dbus.service.method("org.bluez.Agent1", in_signature="", out_signature="")
    def Release(self):
        pass


def pair(env, dev, timeout=10):
    res = []
    env.iface(dev, "org.bluez.Device1").Pair(
        reply_handler=lambda: res.append((None, None)),
        error_handler=lambda e: res.append((e.get_dbus_name(), e.get_dbus_message())),
        timeout=timeout)
    env.wait_for(lambda: res, timeout, "Pair reply")
    return res[0]


def gatt_call(method, *args, timeout=20):
    res = []
    method(*args, reply_handler=lambda *a: res.append((None, a)),
           error_handler=lambda e: res.append((e.get_dbus_name(), e.get_dbus_message())),
           timeout=timeout)
    return res


def case_pairing():
    f = fleet(5, pairing_required=True)
    f["devices"][1]["refuse_pairing"] = True
    f["devices"][4]["refuse_pairing"] = True
    f["devices"][3]["volatile_bonds"] = True  # keys in RAM: a reset loses them
    with Env(fleet=f, env={"SMPGW_SIM_ATT_TIMEOUT_MS": "1500"}) as env:
        mgr = env.iface("/org/bluez", "org.bluez.AgentManager1")
        eq(dbus_error(mgr.RegisterAgent, dbus.ObjectPath("/test/agent"), "Telepathy")[0],
           "org.bluez.Error.InvalidArguments", "RegisterAgent with a bad capability")
        agent = Agent(env.bus, "/test/agent")
        mgr.RegisterAgent(dbus.ObjectPath("/test/agent"), "KeyboardDisplay")
        eq(dbus_error(mgr.RegisterAgent, dbus.ObjectPath("/test/agent"), "KeyboardDisplay"),
           ("org.bluez.Error.AlreadyExists", "Already Exists"), "RegisterAgent twice")
        eq(dbus_error(mgr.RequestDefaultAgent, dbus.ObjectPath("/test/other")),
           ("org.bluez.Error.DoesNotExist", "Does Not Exist"), "RequestDefaultAgent unknown")
        mgr.RequestDefaultAgent(dbus.ObjectPath("/test/agent"))
        devs = env.discover(count=5)
        # bluetoothd pairs by itself when the CCC write is refused for lack
        # of encryption, asking the default agent RequestAuthorization
        char = env.connect(devs[4])
        agent.authorize = "org.bluez.Error.Rejected"
        since = env.mark()
        res = gatt_call(env.iface(char, "org.bluez.GattCharacteristic1").AcquireNotify, OPTS())
        env.wait_for(lambda: res, 10, "AcquireNotify reply")
        eq(res[0], ("org.bluez.Error.Failed", "Not connected"),
           "agent refuses bluetoothd's own pairing: AcquireNotify hangs until the ATT timeout drops the link")
        ok(("RequestAuthorization", devs[4]) in agent.calls, "the default agent was asked RequestAuthorization")
        env.wait_prop(devs[4], "Connected", False, since, 5)
        agent.authorize = None
        char = env.connect(devs[4])
        res = gatt_call(env.iface(char, "org.bluez.GattCharacteristic1").AcquireNotify, OPTS())
        env.wait_for(lambda: res, 10, "AcquireNotify reply")
        eq(res[0], ("org.bluez.Error.Failed", "Not connected"),
           "the watch refuses bluetoothd's own pairing: the link drops at once")
        ok(not env.prop(devs[4], "org.bluez.Device1", "Paired"), "not paired after the refusal")
        char = env.connect(devs[0])
        c = env.iface(char, "org.bluez.GattCharacteristic1")
        res = gatt_call(c.StartNotify)
        env.wait_for(lambda: res, 10, "StartNotify reply")
        eq(res[0], (None, ()), "agent agrees: bluetoothd pairs by itself, then StartNotify succeeds")
        ok(env.prop(devs[0], "org.bluez.Device1", "Paired"), "Paired after bluetoothd's own pairing")
        c.StopNotify()
        env.iface(AD, "org.bluez.Adapter1").RemoveDevice(devs[0])
        [devs[0]] = [d for d in env.discover(count=5) if d == devs[0]]
        char = env.connect(devs[0])
        agent.calls.clear()
        since = env.mark()
        eq(pair(env, devs[0]), (None, None), "Pair through the agent")
        eq([x[:2] for x in agent.calls], [("RequestConfirmation", devs[0])],
           "agent asked RequestConfirmation(device, passkey)")
        ok(0 <= agent.calls[0][2] <= 999999, "six-digit passkey")
        env.wait_prop(devs[0], "Paired", True, since)
        ok(env.prop(devs[0], "org.bluez.Device1", "Bonded"), "Bonded after pairing")
        eq(pair(env, devs[0]), ("org.bluez.Error.AlreadyExists", "Already Exists"), "Pair twice")
        wfd, _, nfd, _ = acquire(env, char)
        os.write(wfd, smp_echo("Hello, World!", 1))
        eq(recv_frame(nfd)[0], ECHO_RSP, "echo over the encrypted link")
        os.close(wfd)
        os.close(nfd)
        env.iface(devs[0], "org.bluez.Device1").Disconnect()
        env.connect(devs[0])
        ok(env.prop(devs[0], "org.bluez.Device1", "Paired"), "the bond survives a reconnect")
        env.iface(devs[0], "org.bluez.Device1").Disconnect()
        eq(pair(env, devs[1]), ("org.bluez.Error.AuthenticationFailed", "Authentication Failed"),
           "the watch refuses pairing (Pair also connected it)")
        env.iface(devs[1], "org.bluez.Device1").Disconnect()
        agent.answer = "org.bluez.Error.Rejected"
        eq(pair(env, devs[2]), ("org.bluez.Error.AuthenticationFailed", "Authentication Failed"),
           "the agent rejects")
        agent.answer = "org.bluez.Error.Canceled"
        eq(pair(env, devs[2]), ("org.bluez.Error.AuthenticationCanceled", "Authentication Canceled"),
           "the agent cancels")
        agent.answer = "hold"
        res = []
        env.iface(devs[2], "org.bluez.Device1").Pair(
            reply_handler=lambda: res.append(None),
            error_handler=lambda e: res.append(e.get_dbus_name()), timeout=10)
        env.wait_for(lambda: len(agent.calls) >= 4, 5, "agent asked")
        env.iface(devs[2], "org.bluez.Device1").CancelPairing()
        env.wait_for(lambda: res, 5, "Pair reply")
        eq(res, ["org.bluez.Error.AuthenticationCanceled"], "CancelPairing ends a pending Pair")
        env.wait_for(lambda: agent.calls[-1] == ("Cancel",), 5, "Agent1.Cancel")
        ok(True, "the agent is told with Cancel()")
        env.iface(devs[2], "org.bluez.Device1").Disconnect()
        mgr.UnregisterAgent(dbus.ObjectPath("/test/agent"))
        eq(dbus_error(mgr.UnregisterAgent, dbus.ObjectPath("/test/agent")),
           ("org.bluez.Error.DoesNotExist", "Does Not Exist"), "UnregisterAgent twice")
        n = len(agent.calls)
        eq(pair(env, devs[3]), ("org.bluez.Error.AuthenticationFailed", "Authentication Failed"),
           "Pair without any agent fails (bluetoothd 5.66: no agent for Just Works)")
        env.iface(devs[3], "org.bluez.Device1").Disconnect()
        mgr.RegisterAgent(dbus.ObjectPath("/test/agent"), "NoInputNoOutput")
        eq(pair(env, devs[3]), (None, None), "Pair with a NoInputNoOutput agent: Just Works")
        eq(len(agent.calls), n, "no agent asked for Just Works")
        mgr.UnregisterAgent(dbus.ObjectPath("/test/agent"))
        # a watch whose bonds live in RAM loses them on a reset: BlueZ's
        # key no longer works, Connect fails (reason 0x05)
        env.iface(devs[3], "org.bluez.Device1").Disconnect()
        if not os.environ.get("SMPGW_SIM"):  # the reset needs bluez-host's stdin
            env.cmd("reset C0:00:00:00:00:04")
            time.sleep(1.0)
            eq(dbus_error(env.iface(devs[3], "org.bluez.Device1").Connect),
               ("org.bluez.Error.Failed", "le-connection-abort-by-local"),
               "bond lost on the watch: Connect fails")
            ok(env.prop(devs[3], "org.bluez.Device1", "Paired"), "BlueZ still holds the stale bond")
        # a keyboard-only agent types the passkey the watch displays
        mgr.RegisterAgent(dbus.ObjectPath("/test/agent"), "KeyboardOnly")
        mgr.RequestDefaultAgent(dbus.ObjectPath("/test/agent"))
        env.iface(AD, "org.bluez.Adapter1").RemoveDevice(devs[2])
        [dev2] = [d for d in env.discover(count=5) if d == devs[2]]
        shown = [c[2] for c in agent.calls if c[0] == "RequestConfirmation" and c[1] == devs[2]][0]
        agent.passkey = (shown + 1) % 1000000
        eq(pair(env, dev2), ("org.bluez.Error.AuthenticationFailed", "Authentication Failed"),
           "RequestPasskey with a wrong passkey")
        agent.passkey = shown
        eq(pair(env, dev2), (None, None), "RequestPasskey with the displayed passkey")
        eq(agent.calls[-1][0], "RequestPasskey", "the agent was asked RequestPasskey")


def case_restart():
    with Env(count=1) as env:
        [dev] = env.discover()
        char = env.connect(dev)
        wfd, _, nfd, _ = acquire(env, char)
        since = env.mark()
        env.stop_sim()

        def owner_changes():
            return [a for t, _s, _p, _i, m, a in env.signals
                    if m == "NameOwnerChanged" and a[0] == BLUEZ and t >= since]
        env.wait_for(lambda: owner_changes(), 5, "NameOwnerChanged (gone)")
        eq(str(owner_changes()[0][2]), "", "bluetoothd gone: NameOwnerChanged to ''")
        seq = [(m, str(a[0])) for t, _s, p, _i, m, a in env.signals if t >= since and
               (m == "InterfacesRemoved" or (m == "NameOwnerChanged" and a[0] == BLUEZ))]
        eq(seq[-2:], [("InterfacesRemoved", AD), ("NameOwnerChanged", BLUEZ)],
           "SIGTERM: objects removed, adapter last, then the name goes (bluetoothd's shutdown)")
        ok(env.changed(dev, "Connected", False, since), "SIGTERM: the link drops first")
        p = select.poll()
        p.register(nfd, select.POLLIN)
        ok(dict(p.poll(1000)).get(nfd, 0) & select.POLLHUP, "held fds hang up when it goes")
        os.close(wfd)
        os.close(nfd)
        env.start_sim()
        env.wait_for(lambda: len(owner_changes()) >= 2, 5, "NameOwnerChanged (back)")
        back = owner_changes()[1]
        ok(str(back[1]) == "" and str(back[2]).startswith(":"),
           "bluetoothd back: NameOwnerChanged from ''")
        env.wait_for(lambda: any(m == "InterfacesAdded" and a[0] == AD and t >= since
                                 for t, _s, _p, _i, m, a in env.signals), 5, "adapter added")
        ok(True, "the adapter comes back with InterfacesAdded, after the name")
        ok(dbus.ObjectPath(AD) in env.managed(), "adapter exported again")


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}

if __name__ == "__main__":
    CASES[sys.argv[1]]()
    print("1..%d" % Tap.n)
