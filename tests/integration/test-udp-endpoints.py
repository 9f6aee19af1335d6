# SPDX-License-Identifier: MIT
"""smpgwd's per-device UDP endpoints against the real simulator (UDP
transport): echo, image state, a full image upload, test, reset, confirm;
two clients sharing one watch; a hung and an unreachable device; bad
datagrams; SIGHUP; clean shutdown; ports stable across restarts.
"""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gw_harness import (Gateway, Sim, Tap, free_udp_range, log, session,  # noqa: E402
                        wait_for)
from smp_udp_client import (GROUP_IMG, GROUP_OS, OP_READ, OP_WRITE, Client,  # noqa: E402
                            conformance_image, decode, encode, slot)

COUNT = 3
IMAGE = 'app-1.2.3+4-ecdsa-p256.bin'


def conf_text(sim, hung_port, dead_port, extra=''):
    lines = ['[general]', 'log_level = debug', '[ble]', 'enabled = no',
             '[udp]', 'base_port = 0',
             '[request]', 'timeout = 2s', 'connect_timeout = 2s',
             'first_chunk_timeout = 30s']
    for i in range(sim.count):
        lines += ['[device "w%d"]' % i, 'transport = udp',
                  'address = 127.0.0.1:%d' % (sim.base + i)]
    lines += ['[device "hung"]', 'address = 127.0.0.1:%d' % hung_port,
              '[device "dead"]', 'address = 127.0.0.1:%d' % dead_port]
    return '\n'.join(lines) + '\n' + extra


def check_echo(t, ports):
    for i in range(COUNT):
        for ver in (0, 1):
            c = Client(ports['w%d' % i], ver=ver)
            t.eq(c.echo('hello %d v%d' % (i, ver)), 'hello %d v%d' % (i, ver),
                 'echo through w%d (SMP v%d)' % (i, ver + 1))
            c.close()


def check_concurrent(t, port, clients=2, per_client=100):
    """Several clients on one watch: each response reaches its sender,
    with its own sequence number and payload."""
    errors = []

    def worker(k):
        c = Client(port, timeout=10)
        try:
            for n in range(per_client):
                seq = (k * 97 + n) & 0xff  # clients deliberately reuse seqs
                text = 'c%d-%d' % (k, n)
                hdr, rsp = c.request(OP_WRITE, GROUP_OS, 0, {'d': text}, seq=seq)
                if hdr['seq'] != seq or rsp.get('r') != text:
                    errors.append((k, n, hdr, rsp))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    t.ok(not any(th.is_alive() for th in threads), 'concurrent clients finished')
    t.eq(errors[:3], [], '%d clients x %d echoes on one watch, every response '
         'to its sender with its own seq' % (clients, per_client))
    log('concurrent: %.2f s' % (time.monotonic() - t0))


def check_errors(t, ports):
    # A hung watch: the gateway answers with a timeout error, in the form
    # of the request (v1: {"rc"}, v2: {"err": {"group", "rc"}}).
    c = Client(ports['hung'], timeout=15)
    t0 = time.monotonic()
    hdr, rsp = c.request(OP_WRITE, GROUP_OS, 0, {'d': 'x'}, seq=33, check=False)
    took = time.monotonic() - t0
    t.eq(rsp, {'err': {'group': 0, 'rc': 4}}, 'hung watch: v2 timeout error')
    t.eq(hdr['seq'], 33, 'error carries the client seq')
    t.ok(took < 10, 'error within the configured time (%.1f s)' % took)
    c.ver = 0
    _, rsp = c.request(OP_READ, GROUP_IMG, 0, seq=34, check=False)
    t.eq(rsp, {'rc': 4}, 'hung watch: v1 timeout error')
    c.close()

    # While the hung one is pending, others keep working.
    h = Client(ports['hung'], timeout=15)
    h.send_raw(encode(OP_WRITE, GROUP_OS, 0, 1, {'d': 'pending'}))
    w = Client(ports['w0'])
    t0 = time.monotonic()
    t.eq(w.echo('still here'), 'still here', 'other watches served while one hangs')
    t.ok(time.monotonic() - t0 < 1.0, 'without waiting for the hung one')
    hdr, rsp = decode(h.recv_raw(15))
    t.eq(rsp.get('err', {}).get('rc'), 4, 'the pending request still gets its error')
    h.close()

    # Nothing listening at the device address: a clear error, quickly.
    d = Client(ports['dead'], timeout=15)
    _, rsp = d.request(OP_WRITE, GROUP_OS, 0, {'d': 'x'}, check=False)
    t.ok(rsp.get('err', {}).get('rc') in (4, 6), 'unreachable watch: SMP error %r' % rsp)
    d.close()

    # Malformed datagrams are dropped (no answer), the endpoint keeps working.
    for junk in (b'\x01\x02\x03', encode(OP_WRITE, 0, 0, 5, {'d': 'x'})[:-1],
                 encode(OP_WRITE, 0, 0, 5, {'d': 'x'}) + b'\x00',
                 bytes([0x0b]) + encode(OP_WRITE, 0, 0, 5, {})[1:]):
        w.send_raw(junk)
        try:
            w.recv_raw(0.3)
            t.ok(False, 'malformed datagram %s answered' % junk.hex())
        except socket.timeout:
            t.ok(True, 'malformed datagram %s dropped' % junk.hex())
    t.eq(w.echo('after junk'), 'after junk', 'endpoint fine after junk')

    # Bigger than the watch's buffer: SMP rc 7 from the gateway.
    params = w.params()
    size = params['buf_size']
    body = {'d': 'x' * (size + 16)}
    _, rsp = w.request(OP_WRITE, GROUP_OS, 0, body, check=False)
    t.eq(rsp, {'err': {'group': 0, 'rc': 7}}, 'frame above buf_size %d: rc 7' % size)
    w.close()


def check_update(t, port, conformance):
    image, want_hash = conformance_image(conformance, IMAGE)
    c = Client(port, timeout=10)
    before = c.image_state()
    t.ok(slot(before, 0) is not None, 'image state lists slot 0')
    buf_size = c.params().get('buf_size', 384)
    t0 = time.monotonic()
    rounds = c.upload(image, buf_size)
    took = time.monotonic() - t0
    log('upload: %d bytes in %d requests, %.1f s' % (len(image), rounds, took))
    s1 = slot(c.image_state(), 1)
    t.ok(s1 is not None and s1.get('hash') == want_hash,
         'uploaded image in slot 1 with the manifest hash')
    c.image_test(want_hash)
    s1 = slot(c.image_state(), 1)
    t.ok(s1 is not None and s1.get('pending'), 'slot 1 pending after test')
    c.reset()
    # The watch reboots (MCUboot swaps the slots): the endpoint answers with
    # errors meanwhile. Wait, bounded, for the new image to run.
    s0 = c.wait_booted(want_hash, timeout=60)
    t.ok(s0 is not None and s0.get('hash') == want_hash and s0.get('active'),
         'new image active in slot 0 after reset')
    t.ok(s0 is not None and not s0.get('confirmed'), 'not confirmed yet')
    c.image_confirm(want_hash)
    s0 = slot(c.image_state(), 0)
    t.ok(s0 is not None and s0.get('confirmed'), 'confirmed')
    c.close()


def check_reload_and_stop(t, gw, sim, hung_port, dead_port):
    gw.write_conf(conf_text(sim, hung_port, dead_port).replace(
        '[device "dead"]', '[device "dead2"]'))
    gw.signal(signal.SIGHUP)
    ports = wait_for('reloaded ports.json', lambda: (
        lambda p: p if 'dead2' in p and 'dead' not in p else None)(gw.ports()), timeout=5)
    t.ok('dead2' in ports and 'dead' not in ports, 'SIGHUP replaced a device')
    c = Client(ports['w0'])
    t.eq(c.echo('after reload'), 'after reload', 'unchanged devices keep working')
    c.close()
    t.eq(gw.stop(), 0, 'SIGTERM: clean exit 0')


def check_stable_ports(t, workdir, sim, hung_port, dead_port):
    base = free_udp_range(8)
    text = conf_text(sim, hung_port, dead_port).replace('base_port = 0',
                                                        'base_port = %d' % base)
    state = os.path.join(workdir, 'stable-state')
    names = ['w%d' % i for i in range(COUNT)] + ['hung', 'dead']
    gw = Gateway(os.path.join(workdir), text, state_dir=state)
    first = gw.start(names)
    t.eq(sorted(first.values()), list(range(base, base + len(names))),
         'ports given out from the base')
    gw.kill9()  # ports.json is written after the port map is committed
    # Declare the devices in another order: ports follow the device.
    gw.write_conf(text.replace('[device "hung"]', '[device "hung-renamed"]'))
    second = gw.start([n for n in names if n != 'hung'] + ['hung-renamed'])
    t.ok(all(second[n] == first[n] for n in names if n != 'hung'),
         'every device kept its port across kill -9 and a restart')
    t.ok(second['hung-renamed'] not in first.values(), 'a new device gets a new port')
    c = Client(second['w1'])
    t.eq(c.echo('stable'), 'stable', 'echo on the remembered port')
    c.close()
    t.eq(gw.stop(), 0, 'stop again')


def main():
    t = Tap()
    with session(tail_lines=40) as (wd, run):
        conformance = os.environ['CONFORMANCE_DIR']
        sim = run.add(Sim(wd, COUNT))
        hung = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        run.defer(hung.close)
        hung.bind(('127.0.0.1', 0))  # receives, never answers
        dead_port = free_udp_range(1)  # nothing listens there
        sim.start()
        gw = run.add(Gateway(wd, conf_text(sim, hung.getsockname()[1], dead_port)))
        ports = gw.start(['w%d' % i for i in range(COUNT)] + ['hung', 'dead'])
        t.eq(len(set(ports.values())), COUNT + 2, 'one distinct port per device')
        check_echo(t, ports)
        check_concurrent(t, ports['w0'])
        check_errors(t, ports)
        check_update(t, ports['w1'], conformance)
        check_reload_and_stop(t, gw, sim, hung.getsockname()[1], dead_port)
        check_stable_ports(t, wd, sim, hung.getsockname()[1], dead_port)
    t.done()

if __name__ == '__main__':
    main()
