# SPDX-License-Identifier: MIT
"""VM tier driver, run INSIDE the VM (tests/vm/stage2.sh started the system
bus, btvirt controllers hci0 + hci1 and a real bluetoothd): the simulator's
watch serves SMP through the real bluetoothd on hci1 (smpgw-sim
--peripheral hci1), the real smpgwd manages BLE on hci0, and every check
goes through smpgwd's UDP face and REST API, with the real bluetoothd's
D-Bus objects as a second witness. Prints TAP; exit status 0 when all pass.

Usage: ble_scenarios.py acquire|writevalue
  acquire     AcquireWrite/AcquireNotify fast path: discovery, connect, MTU,
              echo, image state, upload with a link drop mid-way and resume,
              test + reset (watch drops the link, comes back advertising),
              verify, confirm.
  writevalue  [ble] prefer_acquire = no: WriteValue + StartNotify fallback,
              echo, image state, upload, then bluetoothd restarted while the
              gateway runs.
Every wait is bounded; every child is killed at exit.
"""
import atexit
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get('SMPGW_BUILD') or os.path.join(SRC, 'build-vm')
OUT = os.environ.get('SMPGW_VM_OUT', '/tmp')
CONFORMANCE = (os.environ.get('SMPGW_CONFORMANCE') or
               os.path.join(SRC, 'tests', 'data', 'conformance'))
sys.path.insert(0, os.path.join(SRC, 'tests', 'integration'))
from harness_common import reap as reap_one  # noqa: E402
from smp_udp_client import Client, SmpError, OP_WRITE, GROUP_IMG, encode  # noqa: E402

SMP_SVC = '8d53dc1d-1db7-4cd3-868b-8a527460aa84'
SMP_CHR = 'da2e7828-fbce-4e01-ae9e-261174997c48'
HTTP = '127.0.0.1:18080'
UDP_BASE = 17001
T0 = time.monotonic()
procs = []


def log(msg):
    print('# [%6.1fs] %s' % (time.monotonic() - T0, msg), flush=True)


class Tap:
    n = 0
    failed = 0

    def ok(self, cond, name):
        self.n += 1
        self.failed += 0 if cond else 1
        print('%sok %d - %s' % ('' if cond else 'not ', self.n, name), flush=True)
        return cond


tap = Tap()


def wait_for(what, cond, timeout, step=0.2):
    """Polls cond until it returns something true. On timeout the message
    says what the LAST poll saw (its value or its exception), not an error
    from an early poll that later polls got past."""
    deadline = time.monotonic() + timeout
    last = None
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        try:
            v = cond()
            last = 'returned %r' % (v,)
        except Exception as e:  # the condition's own errors mean "not yet"
            last = 'raised %r' % (e,)
            v = None
        if v:
            return v
        time.sleep(step)
    raise TimeoutError('timed out after %ds waiting for %s (%d polls; the last one %s)'
                       % (timeout, what, polls, last))


# ---- children ----

def start(name, args):
    """Starts a child whose output goes to OUT/name.log, each line stamped
    with the scenario's clock (so the logs of all sides line up)."""
    f = open(os.path.join(OUT, name + '.log'), 'a', buffering=1)
    log('starting ' + ' '.join(args))
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def pump():
        for line in p.stdout:
            f.write('[%7.2f] %s' % (time.monotonic() - T0, line.decode(errors='replace')))
        f.close()
    threading.Thread(target=pump, daemon=True).start()
    procs.append(p)
    return p


def stop(p, timeout=10):
    return reap_one(p, timeout, signal.SIGTERM)


@atexit.register
def reap():
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)


def read_log(name):
    try:
        with open(os.path.join(OUT, name + '.log')) as f:
            return f.read()
    except OSError:
        return ''


# ---- the real bluetoothd, as a witness ----

def busctl(*args, timeout=10):
    r = subprocess.run(['busctl', '--system', '--auto-start=no'] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError('busctl %s: %s' % (' '.join(args), r.stderr.strip()))
    return r.stdout.strip()


def bz_prop(path, iface, prop):
    """A property of a bluetoothd object, as Python (b, q, n, s, as)."""
    out = busctl('get-property', 'org.bluez', path, 'org.bluez.' + iface, prop)
    sig, _, val = out.partition(' ')
    if sig == 'b':
        return val == 'true'
    if sig in ('q', 'n', 'u', 'i', 'y'):
        return int(val)
    if sig == 's':
        return json.loads(val)
    if sig == 'as':
        return re.findall(r'"([^"]*)"', val)
    return val


def dev_path(adapter, addr):
    return '/org/bluez/%s/dev_%s' % (adapter, addr.replace(':', '_'))


def smp_char_path(dpath):
    for line in busctl('tree', '--list', 'org.bluez').splitlines():
        p = line.strip()
        if p.startswith(dpath + '/') and re.search(r'/char[0-9a-f]{4}$', p):
            if bz_prop(p, 'GattCharacteristic1', 'UUID') == SMP_CHR:
                return p
    return None


# ---- the gateway's faces ----

def http(method, path, body=None, timeout=40):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request('http://%s%s' % (HTTP, path), data=data, method=method,
                                 headers={'Content-Type': 'application/json'} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors='replace')


def device(addr):
    st, devs = http('GET', '/api/v1/devices')
    if st != 200:
        return None
    if isinstance(devs, dict):
        devs = devs.get('devices', devs.get('items', []))
    for d in devs:
        if d.get('id', '').upper() == addr.upper() or d.get('address', '').upper() == addr.upper():
            return d
    return None


def rest_images(addr):
    st, body = http('GET', '/api/v1/devices/%s/image-state' % addr)
    if st != 200:
        raise RuntimeError('image-state: %s %r' % (st, body))
    return body['images'] if 'images' in body else body['data']['images']


def slot(images, n):
    for i in images:
        if i.get('slot') == n and i.get('image', 0) == 0:
            return i
    return None


def hexhash(h):
    return h.hex() if isinstance(h, (bytes, bytearray)) else h


def sim_ctl(req):
    r = subprocess.run([os.path.join(BUILD, 'sim', 'smpgw-sim'), 'ctl', '/tmp/sim.sock',
                        json.dumps(req)], capture_output=True, text=True, timeout=15)
    return json.loads(r.stdout)


# ---- steps ----

def start_sim():
    fleet = '/tmp/fleet.json'
    with open(fleet, 'w') as f:
        # Faster flash than a PineTime (TCG is slow enough): the slot erase
        # takes about 1 s instead of 8.
        json.dump({'count': 1, 'defaults': {'name': 'PineTime-{n}',
                   'flash': {'erase_sector_us': 8000, 'program_page_us': 100}}}, f)
    os.environ['SMPGW_SIM_PERIPHERAL_VERBOSE'] = '1'  # a line per SMP frame in sim.log
    start('sim', [os.path.join(BUILD, 'sim', 'smpgw-sim'), '--fleet', fleet,
                  '--peripheral', 'hci1', '--control', '/tmp/sim.sock', '--seed', '1'])
    wait_for('the watch to advertise through bluetoothd',
             lambda: 'advertising on' in read_log('sim'), 60)
    tap.ok('GATT application registered' in read_log('sim'),
           'watch registered its GATT application and advertisement with the real bluetoothd')
    if 'without it' in read_log('sim'):
        log('the 15-byte advertising record did not fit next to the 128-bit UUID '
            '(legacy advertising, BlueZ 5.66): advertising name + UUID')


GW_CONF = '/tmp/smpgwd.conf'


def write_gw_conf(prefer_acquire, ble_extra='', extra=''):
    """The gateway's configuration; ble_extra: more [ble] lines (a SIGHUP
    after rewriting it applies the allowlist and pairing keys); extra: more
    sections."""
    with open(GW_CONF, 'w') as f:
        f.write('[ble]\nadapters = hci0\nprefer_acquire = %s\nconnect_timeout = 60s\n%s'
                '[udp]\nbase_port = %d\n[http]\nlisten = %s\n'
                '[request]\ntimeout = 15s\nconnect_timeout = 60s\n%s'
                % ('yes' if prefer_acquire else 'no', ble_extra, UDP_BASE, HTTP, extra))


def start_gw(prefer_acquire, ble_extra='', extra=''):
    write_gw_conf(prefer_acquire, ble_extra, extra)
    return start('smpgwd', [os.path.join(BUILD, 'src', 'daemon', 'smpgwd'),
                            '--config', GW_CONF, '--state-dir', '/tmp/gw-state',
                            '--log-level', 'debug'])


def discover(addr):
    d = wait_for('smpgwd to list the watch (discovery by SMP UUID)', lambda: device(addr), 90)
    tap.ok(d is not None, 'smpgwd discovered the watch %s on hci0 (REST /api/v1/devices)' % addr)
    uuids = bz_prop(dev_path('hci0', addr), 'Device1', 'UUIDs')
    tap.ok(SMP_SVC in uuids, 'bluetoothd saw the SMP service UUID in the advertisement')
    return d


def check_link(addr, acquire):
    d = device(addr)
    tap.ok(d and d.get('link_state') == 'up', 'link is up after the first request (%s)'
           % (d or {}).get('link_state'))
    tap.ok(d and d.get('mtu') == 495, 'link MTU 495 (ATT MTU 498 - 3, as a Zephyr watch; got %s)'
           % (d or {}).get('mtu'))
    dpath = dev_path('hci0', addr)
    tap.ok(bz_prop(dpath, 'Device1', 'Connected') and bz_prop(dpath, 'Device1', 'ServicesResolved'),
           'bluetoothd: central connected, services resolved')
    cp = smp_char_path(dpath)
    tap.ok(cp is not None, 'bluetoothd resolved the SMP characteristic (%s)' % cp)
    if not cp:
        return
    wa = bz_prop(cp, 'GattCharacteristic1', 'WriteAcquired')
    na = bz_prop(cp, 'GattCharacteristic1', 'NotifyAcquired')
    if acquire:
        tap.ok(wa and na, 'fast path: WriteAcquired and NotifyAcquired (AcquireWrite/AcquireNotify fds)')
        tap.ok(bz_prop(cp, 'GattCharacteristic1', 'MTU') == 498, 'characteristic MTU 498')
    else:
        tap.ok(not wa and not na and bz_prop(cp, 'GattCharacteristic1', 'Notifying'),
               'fallback: Notifying through StartNotify, no acquired fds (WriteValue)')


def first_echo(c, timeout=240):
    """The first request connects the link: retried, bounded. Returns
    (seconds, tries) (zephyr_scenarios.py uses it too)."""
    t = time.monotonic()
    tries = []

    def once():
        tries.append(1)
        try:
            return c.echo('hello') == 'hello'
        except (TimeoutError, OSError, SmpError) as e:
            log('first echo: %r (the link is still connecting)' % (e,))
            time.sleep(2)
            return False
    wait_for('the first echo (connects the link)', once, timeout, 0)
    return time.monotonic() - t, len(tries)


def echo_and_state(c, addr):
    tap.ok(True, 'echo over UDP -> BLE (first request connects: %.1fs, %d tries)'
           % first_echo(c))
    big = ''.join(chr(0x41 + i % 26) for i in range(2000))
    t = time.monotonic()
    tap.ok(c.echo(big) == big, '2000-byte echo: a request over 5 writes, a response over 5 '
           'notifications (%.2fs)' % (time.monotonic() - t))
    times = []
    for i in range(10):
        t = time.monotonic()
        c.echo('x%d' % i)
        times.append(time.monotonic() - t)
    log('10 small echoes: median %.0f ms' % (sorted(times)[5] * 1000))
    imgs = c.image_state()
    s0 = slot(imgs, 0)
    tap.ok(s0 and s0.get('active') and s0.get('version') == '1.0.0',
           'image state over UDP: slot 0 active 1.0.0')
    rimgs = rest_images(addr)
    tap.ok(slot(rimgs, 0) and slot(rimgs, 0)['hash'] == hexhash(s0['hash']),
           'image state over REST agrees')
    st, p = http('GET', '/api/v1/devices/%s/params' % addr)
    log('params: %s %s' % (st, p))


def upload(c, image, buf_size, retries=20):
    """SMP upload through the UDP face that resumes after errors at the
    offset the watch reports (the SHA-256 lets the watch keep its session).
    Returns (bytes sent, errors seen)."""
    sha = hashlib.sha256(image).digest()
    off, sent, errors = 0, 0, 0
    deadline = time.monotonic() + 300
    while off < len(image):
        if time.monotonic() > deadline:
            raise TimeoutError('upload stuck at %d' % off)
        body = {'off': off, 'data': b''}
        if off == 0:
            body.update({'image': 0, 'len': len(image), 'sha': sha, 'upgrade': False})
        room = buf_size - len(encode(OP_WRITE, GROUP_IMG, 1, 0, body)) - 5
        body['data'] = image[off:off + room]
        try:
            _, rsp = c.request(OP_WRITE, GROUP_IMG, 1, body, timeout=30 if off == 0 else 15)
        except (TimeoutError, OSError, SmpError) as e:
            errors += 1
            log('chunk at %d: %r; resuming' % (off, e))
            if errors > retries:
                raise
            time.sleep(1)
            continue
        sent += len(body['data'])
        off = rsp['off']
    return sent, errors


def update(c, addr, name, fault_at=None):
    path = os.path.join(CONFORMANCE, 'images', name)
    image = open(path, 'rb').read()
    want = json.load(open(os.path.join(CONFORMANCE, 'images', 'manifest.json')))[name]
    before = device(addr)['counters']['link_resets']
    if fault_at is not None:
        r = sim_ctl({'cmd': 'fault', 'device': '*', 'fault': 'disconnect_at_offset',
                     'offset': fault_at})
        log('fault: %s' % r)
    t = time.monotonic()
    sent, errors = upload(c, image, 2475)
    dt = time.monotonic() - t
    log('uploaded %d bytes in %.1fs (%.1f KB/s), %d bytes sent, %d errors'
        % (len(image), dt, len(image) / dt / 1000, sent, errors))
    if fault_at is not None:
        resets = device(addr)['counters']['link_resets'] - before
        tap.ok('fault: disconnecting' in read_log('sim') and
               'central' in read_log('sim').split('fault: disconnecting', 1)[1],
               'the watch dropped the link mid-upload at offset %d (gateway link resets '
               'with requests in flight: %d)' % (fault_at, resets))
        tap.ok(sent < len(image) + 3 * 2475,
               'upload resumed where it stopped, not from 0 (%d of %d bytes sent)'
               % (sent, len(image)))
    s1 = slot(rest_images(addr), 1)
    tap.ok(s1 and s1.get('hash') == want['sha256_tlv'],
           '%s in slot 1 with its SHA-256 TLV hash' % name)
    return want


def test_reset_confirm(c, addr, want):
    st, body = http('POST', '/api/v1/devices/%s/image-state/test' % addr,
                    {'hash': want['sha256_tlv']})
    s1 = slot(rest_images(addr), 1)
    tap.ok(st == 200 and s1 and s1.get('pending'), 'REST image-state/test: slot 1 pending')
    adv_before = read_log('sim').count('advertising on')
    st, body = http('POST', '/api/v1/devices/%s/reset' % addr, {})
    tap.ok(st == 200, 'REST reset accepted (%s)' % st)
    t = time.monotonic()
    wait_for('the watch to drop the link and advertise again',
             lambda: read_log('sim').count('advertising on') > adv_before, 60)
    tap.ok('reset: disconnecting' in read_log('sim'),
           'the watch dropped the link on reset and came back advertising after boot (%.1fs)'
           % (time.monotonic() - t))
    st, body = wait_for('an echo through REST after the reset',
                        lambda: (lambda r: r if r[0] == 200 else None)(
                            http('POST', '/api/v1/devices/%s/echo' % addr, {'d': 'back'})), 90, 1)
    tap.ok(st == 200, 'gateway reconnected after the reset (%.1fs)' % (time.monotonic() - t))
    s0 = slot(rest_images(addr), 0)
    tap.ok(s0 and s0['hash'] == want['sha256_tlv'] and s0.get('active') and not s0.get('confirmed'),
           'verify: the new image %s booted for test, not confirmed' % want['version'])
    st, body = http('POST', '/api/v1/devices/%s/image-state/confirm' % addr, {})
    s0 = slot(rest_images(addr), 0)
    tap.ok(st == 200 and s0 and s0['hash'] == want['sha256_tlv'] and s0.get('confirmed'),
           'REST confirm: the new image is confirmed')


def http_raw(method, path, data, timeout=60):
    req = urllib.request.Request('http://%s%s' % (HTTP, path), data=data, method=method,
                                 headers={'Content-Type': 'application/octet-stream'})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors='replace')


def engine_update(addr, name, fault_at=None):
    """The upload engine through REST: store the image, one POST starts an
    update job (upload, test, reset, wait for the watch, verify, confirm).
    fault_at: the watch drops the link when the upload reaches that offset;
    the engine must reconnect and resume there."""
    want = json.load(open(os.path.join(CONFORMANCE, 'images', 'manifest.json')))[name]
    image = open(os.path.join(CONFORMANCE, 'images', name), 'rb').read()
    st, desc = http_raw('POST', '/api/v1/images', image)
    tap.ok(st in (200, 201) and isinstance(desc, dict) and desc.get('id') == want['sha256_tlv'],
           'REST: image %s stored, id = its SHA-256 TLV (%s)' % (name, st))
    if st not in (200, 201):
        log('images: %r' % (desc,))
        return
    drops_before = read_log('sim').count('fault: disconnecting')
    if fault_at is not None:
        log('fault: %s' % sim_ctl({'cmd': 'fault', 'device': '*',
                                   'fault': 'disconnect_at_offset', 'offset': fault_at}))
    t = time.monotonic()
    st, job = http('POST', '/api/v1/devices/%s/update' % addr,
                   {'image': desc['id'], 'mode': 'test-confirm'})
    tap.ok(st == 202 and isinstance(job, dict) and 'id' in job,
           'REST: update job queued (%s)' % st)
    if st != 202:
        log('update: %r' % (job,))
        return
    seen = []

    def finished():
        s2, j = http('GET', '/api/v1/jobs/%s' % job['id'])
        ph = (j.get('state'), j.get('phase')) if isinstance(j, dict) else (s2, None)
        if not seen or seen[-1] != ph:
            seen.append(ph)
            log('job %s: %s' % (job['id'], j))
        return j if isinstance(j, dict) and j.get('state') not in ('queued', 'running') else None
    j = wait_for('the update job to finish', finished, 400, 1)
    dt = time.monotonic() - t
    tap.ok(j.get('state') == 'done', 'update job done in %.0fs (phases: %s)'
           % (dt, ' '.join(str(p[1]) for p in seen)))
    if fault_at is not None:
        sent = (j.get('progress') or {}).get('bytes_sent', 0)
        tap.ok(read_log('sim').count('fault: disconnecting') > drops_before,
               'the watch dropped the link during the job\'s upload (at offset %d)' % fault_at)
        tap.ok(0 < sent < len(image) + 25000,
               'the engine resumed after the drop, not from 0 (%d bytes sent for %d)'
               % (sent, len(image)))
    s0 = slot(rest_images(addr), 0)
    tap.ok(s0 and s0['hash'] == want['sha256_tlv'] and s0.get('active') and s0.get('confirmed'),
           'after the job: %s active and confirmed on the watch' % want['version'])
    tap.ok(read_log('sim').count('reset: disconnecting') >= 2,
           'the job reset the watch through BLE (link dropped, came back advertising)')


def bluetoothd_alive():
    pid = int(open('/tmp/bluetoothd.pid').read())
    try:
        return open('/proc/%d/stat' % pid).read().split()[2] != 'Z'
    except OSError:
        return False


def start_bluetoothd(adapters=(0, 1)):
    """Starts bluetoothd again (after it exited or crashed), as systemd's
    Restart= would, and waits until its adapters are back."""
    conf = os.environ.get('SMPGW_VM_BTCONF', '/tmp/main.conf')
    f = open(os.path.join(OUT, 'bluetoothd.log'), 'a')
    dbg = [os.environ['SMPGW_VM_BTD_DEBUG']] if os.environ.get('SMPGW_VM_BTD_DEBUG') else []
    p = subprocess.Popen(['bluetoothd', '-n'] + dbg + ['-f', conf], stdout=f,
                         stderr=subprocess.STDOUT)
    procs.append(p)
    with open('/tmp/bluetoothd.pid', 'w') as pf:
        pf.write(str(p.pid))
    wait_for('bluetoothd back with both adapters',
             lambda: all('/org/bluez/hci%d' % i in busctl('tree', '--list', 'org.bluez')
                         for i in adapters), 120, 0.5)


def restart_bluetoothd(c, addr):
    pid = int(open('/tmp/bluetoothd.pid').read())
    t = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_for('bluetoothd to exit', lambda: not bluetoothd_alive(), 20)
    start_bluetoothd()
    log('bluetoothd back after %.1fs' % (time.monotonic() - t))
    tap.ok('bluetoothd went away' in read_log('sim') and
           'bluetoothd went away' in read_log('smpgwd'), 'watch and gateway saw bluetoothd go away')
    c.sock.settimeout(20)

    def echo_ok():
        try:
            return c.echo('after restart') == 'after restart'
        except (TimeoutError, OSError, SmpError):
            return False
    wait_for('an echo after the bluetoothd restart', echo_ok, 120, 1)
    tap.ok(True, 'echo over UDP works again after bluetoothd restarted (%.1fs)'
           % (time.monotonic() - t))
    sim = read_log('sim')
    tap.ok(sim.count('GATT application registered') >= 2 and sim.count('advertising on') >= 2,
           'the watch registered its application and advertisement again with the new bluetoothd')


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else 'acquire'
    acquire = mode == 'acquire'
    start_sim()
    addr = bz_prop('/org/bluez/hci1', 'Adapter1', 'Address')
    log('watch address (hci1): %s' % addr)
    gw = start_gw(acquire)
    d = discover(addr)
    c = Client(d['udp_port'], timeout=30)
    echo_and_state(c, addr)
    check_link(addr, acquire)
    if acquire:
        want = update(c, addr, 'app-1.0.1-rsa2048.bin', fault_at=40000)
        test_reset_confirm(c, addr, want)
        engine_update(addr, 'app-1.2.3+4-ecdsa-p256.bin', fault_at=50000)
    else:
        update(c, addr, 'app-0.9.0-3k-hash.bin')
        restart_bluetoothd(c, addr)
    c.close()
    return finish(gw)


def finish(gw, *others):
    """The end of a scenario: smpgwd must exit cleanly on SIGTERM, others
    (a watch...) are stopped, the TAP plan printed. Returns the exit status."""
    tap.ok(stop(gw) == 0, 'smpgwd exits cleanly on SIGTERM')
    for o in others:
        o.stop()
    print('1..%d' % tap.n, flush=True)
    log('done')
    return 1 if tap.failed else 0


def run_scenarios(main):
    """sys.exit(main()); a bounded wait or a step that fails is reported as
    a failed test, not a crash (zephyr_scenarios.py uses it too)."""
    try:
        rc = main()
    except Exception as e:
        tap.ok(False, 'scenario aborted: %r' % (e,))
        print('1..%d' % tap.n, flush=True)
        rc = 1
    sys.exit(rc)


if __name__ == '__main__':
    run_scenarios(main)
