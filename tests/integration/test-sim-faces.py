# SPDX-License-Identifier: MIT
"""smpgw-sim from the outside: the UDP face (echo, state, a whole upload,
test + reset + confirm), the serial face on its pty, and the control socket
(list, faults, counters, link). Loopback only, temporary directory, every
wait bounded; the simulator is reaped at the end. TAP output.

The SMP and serial framing here are written from the protocol facts, not
taken from the gateway, so a shared bug cannot hide.
"""
import base64
import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

import cbor2

from harness_common import reap, session

SIM = os.environ.get('SMPGW_SIM')
CONF = os.environ.get('CONFORMANCE_DIR', 'tests/data/conformance')
n_test = 0
failed = 0


def ok(cond, what):
    global n_test, failed
    n_test += 1
    if not cond:
        failed += 1
    print('%s %d - %s' % ('ok' if cond else 'not ok', n_test, what), flush=True)
    return cond


def frame(op, group, cmd, seq, body):
    payload = cbor2.dumps(body)
    return struct.pack('>BBHHBB', (1 << 3) | op, 0, len(payload), group, seq, cmd) + payload


def unframe(data):
    b0, _, length, group, seq, cmd = struct.unpack('>BBHHBB', data[:8])
    assert len(data) == 8 + length, 'length mismatch'
    return {'op': b0 & 7, 'group': group, 'seq': seq, 'id': cmd}, cbor2.loads(data[8:])


class Udp:
    def __init__(self, port):
        self.addr = ('127.0.0.1', port)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(('127.0.0.1', 0))
        self.seq = 0

    def req(self, op, group, cmd, body=None, timeout=10.0):
        self.seq = (self.seq + 1) & 0xff
        self.s.sendto(frame(op, group, cmd, self.seq, body or {}), self.addr)
        self.s.settimeout(timeout)
        hdr, rsp = unframe(self.s.recvfrom(70000)[0])
        return hdr, rsp


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xffff
    return crc


def serial_encode(msg):
    pkt = struct.pack('>H', len(msg) + 2) + msg + struct.pack('>H', crc16(msg))
    b64 = base64.b64encode(pkt)
    out, first = b'', True
    while b64:
        chunk, b64 = b64[:124], b64[124:]
        out += (b'\x06\x09' if first else b'\x04\x14') + chunk + b'\n'
        first = False
    return out


def serial_read(fd, timeout=5.0):
    """Reads lines until one whole packet decodes; returns the SMP message."""
    buf, b64, deadline = b'', b'', time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            buf += os.read(fd, 4096)
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            if line[:2] in (b'\x06\x09', b'\x04\x14'):
                b64 = (b'' if line[:2] == b'\x06\x09' else b64) + line[2:]
                pkt = base64.b64decode(b64)
                if len(pkt) >= 2 and len(pkt) - 2 == struct.unpack('>H', pkt[:2])[0]:
                    msg = pkt[2:-2]
                    assert crc16(msg) == struct.unpack('>H', pkt[-2:])[0], 'bad CRC'
                    return msg
    raise TimeoutError('no serial reply')


def ctl(sock, req):
    out = subprocess.run([SIM, 'ctl', sock, json.dumps(req)], capture_output=True, timeout=15)
    return json.loads(out.stdout.decode() or '{}')


def start_count(tmp, n):
    sock = os.path.join(tmp, 'big.sock')
    proc = subprocess.Popen([SIM, '--count', str(n), '--udp-base', '0', '--control', sock],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ports, deadline = [], time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline().decode()
        if not line or line.startswith('ready'):
            break
        if line.startswith('udp '):
            ports.append(int(line.split()[3].rsplit(':', 1)[1]))
    return proc, sock, ports


def check_thousand(tmp, run):
    t0 = time.time()
    proc, sock, ports = start_count(tmp, 1000)
    run.defer(lambda: reap(proc, 10))
    ok(len(ports) == 1000, '1000 watches on UDP in %.1f s' % (time.time() - t0))
    answered = 0
    for port in ports[::97] + ports[-1:]:
        u = Udp(port)
        try:
            _, rsp = u.req(2, 0, 0, {'d': 'hi'}, timeout=5)
            answered += rsp == {'r': 'hi'}
        finally:
            u.s.close()
    ok(answered == len(ports[::97]) + 1, 'a sample of them answers')
    rss = 0
    with open('/proc/%d/status' % proc.pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
    ok(0 < rss < 200 * 1024, '1000 watches in %d MiB' % (rss // 1024))
    reap(proc, 10)


def start(tmp):
    fleet = os.path.join(tmp, 'fleet.json')
    with open(fleet, 'w') as f:
        json.dump({'count': 3, 'defaults': {'name': 'Watch-{n}', 'boot_ms': 100,
                                            'flash': {'erase_sector_us': 2000}},
                   'devices': [{}, {'serial': True}],
                   'adapters': [{'max_connections': 2}, {'max_connections': 5}]}, f)
    sock = os.path.join(tmp, 'ctl.sock')
    proc = subprocess.Popen([SIM, '--fleet', fleet, '--udp-base', '0', '--control', sock],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    info = {'udp': {}, 'pty': {}, 'lines': []}
    deadline = time.time() + 15
    while time.time() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        info['lines'].append(line.strip())
        w = line.split()
        if w[0] == 'udp':
            info['udp'][w[2]] = int(w[3].rsplit(':', 1)[1])
        elif w[0] == 'pty':
            info['pty'][w[2]] = w[3]
        elif w[0] == 'ready':
            return proc, sock, info
    proc.kill()
    raise RuntimeError('smpgw-sim did not start: %r' % info['lines'])


def check_udp(u):
    hdr, rsp = u.req(2, 0, 0, {'d': 'hello'})
    ok(rsp == {'r': 'hello'} and hdr['seq'] == u.seq and hdr['op'] == 3, 'UDP echo')
    _, rsp = u.req(0, 0, 6)
    ok(rsp == {'buf_size': 2475, 'buf_count': 4}, 'mcumgr params from the link model')
    _, rsp = u.req(0, 1, 0)
    imgs = rsp.get('images', [])
    ok(len(imgs) == 1 and imgs[0]['version'] == '1.0.0' and imgs[0]['active'] and
       imgs[0]['confirmed'], 'state: synthesized 1.0.0 active and confirmed')
    _, rsp = u.req(0, 99, 0)
    ok(rsp == {'rc': 8}, 'unknown group: rc 8')


def upload(u, img):
    sha, off = hashlib.sha256(img).digest(), 0
    for _ in range(1000):
        if off >= len(img):
            break
        body = {'off': off, 'data': img[off:off + 1800]}
        if off == 0:
            body.update({'image': 0, 'len': len(img), 'sha': sha})
        _, rsp = u.req(2, 1, 1, body, timeout=20)
        off = rsp.get('off', -1)
        if off < 0:
            break
    return off


def check_update(u, manifest):
    name = 'app-1.2.3+4-ecdsa-p256.bin'
    img = open(os.path.join(CONF, 'images', name), 'rb').read()
    t0 = time.time()
    ok(upload(u, img) == len(img), 'UDP upload of %s (%.1f s)' % (name, time.time() - t0))
    want = bytes.fromhex(manifest[name]['sha256_tlv'])
    _, rsp = u.req(0, 1, 0)
    s1 = [i for i in rsp['images'] if i['slot'] == 1]
    ok(s1 and s1[0]['hash'] == want and s1[0]['version'] == '1.2.3.4',
       'slot 1: hash is the SHA-256 TLV, version 1.2.3.4')
    _, rsp = u.req(2, 1, 0, {'hash': want, 'confirm': False})
    s1 = [i for i in rsp['images'] if i['slot'] == 1]
    ok(s1 and s1[0]['pending'], 'test: slot 1 pending')
    _, rsp = u.req(2, 0, 5, {})
    ok(rsp == {}, 'reset accepted')
    rsp = None
    for _ in range(100):
        time.sleep(0.05)
        try:
            _, rsp = u.req(0, 1, 0, timeout=0.2)
            if rsp['images'][0]['hash'] == want:
                break
        except (socket.timeout, OSError):
            pass
    ok(rsp and rsp['images'][0]['hash'] == want and not rsp['images'][0]['confirmed'],
       'after reset: new image active, not confirmed')
    _, rsp = u.req(2, 1, 0, {'confirm': True})
    ok(rsp['images'][0]['confirmed'], 'confirm')


def check_serial(path):
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b'console noise\n' + serial_encode(frame(2, 0, 0, 7, {'d': 'over serial'})))
        hdr, rsp = unframe(serial_read(fd))
        ok(rsp == {'r': 'over serial'} and hdr['seq'] == 7, 'serial echo on the pty')
        vec = json.load(open(os.path.join(CONF, 'zephyr-smp-vectors.json')))['serial']['echo']
        os.write(fd, bytes.fromhex(vec['serial_wire_req']))
        ok(serial_read(fd) == bytes.fromhex(vec['rsp']),
           'recorded serial_wire_req answered with the recorded response')
        big = 'x' * 300  # several 127-byte lines each way
        os.write(fd, serial_encode(frame(2, 0, 0, 8, {'d': big})))
        hdr, rsp = unframe(serial_read(fd))
        ok(rsp == {'r': big} and hdr['seq'] == 8, 'serial echo across continuation lines')
    finally:
        os.close(fd)


def check_control(sock, u, addr):
    rsp = ctl(sock, {'cmd': 'list'})
    devs = rsp.get('devices', [])
    ok(rsp.get('ok') and len(devs) == 3 and devs[0]['name'] == 'Watch-1' and
       devs[1]['adapter'] == 1 and devs[1]['pty'], 'control list: names, adapters, ptys')
    rsp = ctl(sock, {'cmd': 'fault', 'device': addr, 'fault': 'wrong_seq'})
    ok(rsp.get('ok') and rsp['faults']['wrong_seq'] == 1, 'fault wrong_seq set')
    hdr, _ = u.req(2, 0, 0, {'d': 'x'})
    ok(hdr['seq'] == (u.seq + 1) & 0xff, 'reply carries the wrong seq')
    ctl(sock, {'cmd': 'fault', 'device': addr, 'fault': 'hang'})
    try:
        u.req(2, 0, 0, {'d': 'x'}, timeout=0.3)
        ok(False, 'hung device answers nothing')
    except socket.timeout:
        ok(True, 'hung device answers nothing')
    ctl(sock, {'cmd': 'fault', 'device': addr, 'fault': 'unhang'})
    ctl(sock, {'cmd': 'range', 'device': addr, 'in_range': False})
    try:
        u.req(2, 0, 0, {'d': 'x'}, timeout=0.3)
        ok(False, 'out of range: silence')
    except socket.timeout:
        ok(True, 'out of range: silence')
    ctl(sock, {'cmd': 'range', 'device': addr, 'in_range': True})
    rsp = ctl(sock, {'cmd': 'counters', 'device': addr})
    c = rsp.get('total', {})
    ok(c.get('frames_rx', 0) > 10 and c.get('erases', 0) > 0 and c.get('drops', 0) >= 1,
       'counters: frames, erases, drops')
    ok('bluez' in rsp and rsp['bluez'] is None, 'counters: no BlueZ face, bluez is null')
    rsp = ctl(sock, {'cmd': 'link', 'device': '*', 'link': {'phy': 2, 'buf_count': 2}})
    ok(rsp.get('ok') and rsp['link']['phy'] == 2 and rsp['link']['capacity_up'] > 0,
       'link model set for all')
    _, rsp = u.req(0, 0, 6)
    ok(rsp.get('buf_count') == 2, 'params follow the new link model')
    rsp = ctl(sock, {'cmd': 'link', 'device': 0, 'link': {'phy': 3}})
    ok(not rsp.get('ok') and 'phy' in rsp.get('error', ''), 'bad link value: clear error')
    rsp = ctl(sock, {'cmd': 'fault', 'device': 0, 'fault': 'nonsense'})
    ok(not rsp.get('ok') and 'unknown fault' in rsp.get('error', ''), 'unknown fault refused')


def main():
    with session(need=('SMPGW_SIM', 'CONFORMANCE_DIR')) as (tmp, run):
        manifest = json.load(open(os.path.join(CONF, 'images', 'manifest.json')))
        proc, sock, info = start(tmp)
        run.defer(lambda: reap(proc))
        ok(any(l.startswith('link ') and 'KB/s' in l for l in info['lines']),
           'capacity printed')
        u = Udp(info['udp']['Watch-1'])
        check_udp(u)
        check_update(u, manifest)
        check_serial(info['pty']['Watch-2'])
        check_control(sock, u, 'C0:FF:EE:00:00:01')
        ok(reap(proc) == 0, 'clean exit on SIGTERM')
        ok(not os.path.exists(sock), 'control socket removed')
        check_thousand(tmp, run)
    print('1..%d' % n_test)
    return 1 if failed else 0

if __name__ == '__main__':
    sys.exit(main())
