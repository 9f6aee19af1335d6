# SPDX-License-Identifier: MIT
"""The whole BLE path: smpgwd managing a fleet of 20 simulated watches over
a private D-Bus bus where smpgw-sim plays bluetoothd, driven by an SMP
client over the per-device UDP endpoints. Discovery, stable ports, echo on
every watch, image state, a full upload with test/reset/confirm, two
clients sharing one watch, faults (hang, garbage and duplicate
notifications, wrong seq, disconnect mid-upload, out of range), and
bluetoothd restarting.
"""
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

from gw_harness import (BLE_NEEDS, Gateway, Tap, bus_and_sim, free_udp_range, log,  # noqa: E402
                        session, wait_for)
from smp_udp_client import (GROUP_OS, OP_WRITE, Client, SmpError,  # noqa: E402
                            conformance_image, echo_all, slot)

COUNT = 20
IMAGE = 'app-1.2.3+4-ecdsa-p256.bin'


def conf_text(base):
    return '\n'.join([
        '[general]', 'log_level = debug',
        '[ble]', 'idle_timeout = 1s', 'connect_timeout = 10s',
        '[udp]', 'base_port = %d' % base,
        '[request]', 'timeout = 5s', 'connect_timeout = 20s',
        'first_chunk_timeout = 30s']) + '\n'


def ok_echo(c, text):
    try:
        return c.echo(text) == text
    except (SmpError, TimeoutError, socket.timeout):
        return False


def check_fleet(t, gw, addrs):
    ports = gw.ports()
    t.eq(sorted(ports), sorted(addrs), 'all %d watches discovered and managed' % COUNT)
    t.eq(len(set(ports.values())), COUNT, 'one port per watch')
    errors, secs = echo_all([ports[a] for a in addrs], timeout=40)
    t.eq(errors, [], 'echo through every watch at once (connection budget, '
         'idle links parked) in %.1f s' % secs)
    return ports


def check_sharing(t, port):
    errors = []

    def worker(k):
        c = Client(port, timeout=20)
        try:
            for n in range(40):
                seq = (k * 50 + n) & 0xff
                text = 'k%d n%d' % (k, n)
                hdr, rsp = c.request(OP_WRITE, GROUP_OS, 0, {'d': text}, seq=seq)
                if hdr['seq'] != seq or rsp.get('r') != text:
                    errors.append((k, n, hdr, rsp))
        except Exception as e:  # noqa: BLE001
            errors.append((k, repr(e)))
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    t.eq(errors[:3], [], 'two clients on one BLE watch: every response to its '
         'sender with its own seq')


def check_update(t, sim, port, addr, image, want_hash):
    c = Client(port, timeout=30)
    buf_size = c.params()['buf_size']
    # The link drops when the upload reaches 40 KiB: the client's chunk
    # gets an error, and the upload resumes from the watch's offset.
    sim.ctl({'cmd': 'fault', 'device': addr, 'fault': 'disconnect_at_offset',
             'offset': 40960})
    t0 = time.monotonic()
    errors = 0
    for _ in range(5):
        try:
            c.upload(image, buf_size)
            break
        except SmpError as e:
            errors += 1
            # Start again at off 0 with the same sha: the watch answers
            # with the offset it already has and the upload resumes.
            log('upload interrupted: rc %s; resuming' % e.rc)
    log('BLE upload %d bytes in %.1f s (%d interruptions)' %
        (len(image), time.monotonic() - t0, errors))
    t.ok(errors >= 1, 'the link dropped mid-upload and the client saw an SMP error')
    s1 = slot(c.image_state(), 1)
    t.ok(s1 is not None and s1.get('hash') == want_hash,
         'complete image in slot 1 after resuming')
    c.image_test(want_hash)
    c.reset()
    s0 = c.wait_booted(want_hash, timeout=90, step=0.5)
    t.ok(s0.get('active') and not s0.get('confirmed'), 'new image running, not confirmed')
    c.image_confirm(want_hash)
    t.ok(slot(c.image_state(), 0).get('confirmed'), 'confirmed over BLE')
    c.close()


def check_faults(t, sim, ports, addrs):
    a, b = addrs[3], addrs[4]
    ca, cb = Client(ports[a], timeout=30), Client(ports[b], timeout=30)
    for fault in ('corrupt_notification', 'truncate_notification', 'wrong_seq',
                  'answer_twice'):
        sim.ctl({'cmd': 'fault', 'device': a, 'fault': fault, 'count': 1})
        try:
            r = ca.echo(fault)
            good = r == fault
        except SmpError as e:
            good = e.rc == 4  # the broken reply is dropped: a timeout error
        except (TimeoutError, socket.timeout):
            good = False
        t.ok(good, '%s: correct answer or a clear SMP error' % fault)
        t.ok(wait_for('the watch to answer again', lambda: ok_echo(ca, 'again'),
                      timeout=30, step=0.2), 'watch usable after %s' % fault)

    sim.ctl({'cmd': 'fault', 'device': a, 'fault': 'hang'})
    _, rsp = ca.request(OP_WRITE, GROUP_OS, 0, {'d': 'x'}, check=False)
    t.eq(rsp.get('err', {}).get('rc'), 4, 'hung watch: timeout error')
    t.ok(ok_echo(cb, 'neighbour'), 'its neighbour keeps working')
    sim.ctl({'cmd': 'fault', 'device': a, 'fault': 'clear'})
    sim.ctl({'cmd': 'reboot', 'device': a})
    t.ok(wait_for('the watch after a watchdog reset', lambda: ok_echo(ca, 'back'),
                  timeout=60, step=0.5), 'watch back after reset')

    sim.ctl({'cmd': 'range', 'device': a, 'in_range': False})
    _, rsp = ca.request(OP_WRITE, GROUP_OS, 0, {'d': 'x'}, check=False, timeout=60)
    t.ok(rsp.get('err', {}).get('rc') in (4, 6), 'out of range: SMP error %r' % rsp)
    t.ok(ok_echo(cb, 'still'), 'others unaffected')
    sim.ctl({'cmd': 'range', 'device': a, 'in_range': True})
    t.ok(wait_for('the watch back in range', lambda: ok_echo(ca, 'in range'),
                  timeout=60, step=0.5), 'watch usable back in range')
    ca.close()
    cb.close()


def check_bluetoothd_restart(t, sim, ports, addrs):
    sim.stop()
    c = Client(ports[addrs[0]], timeout=60)
    _, rsp = c.request(OP_WRITE, GROUP_OS, 0, {'d': 'x'}, check=False)
    t.ok('err' in rsp or 'rc' in rsp, 'bluetoothd gone: SMP error %r' % rsp)
    sim.start()
    t.ok(wait_for('the gateway to follow bluetoothd back', lambda: ok_echo(c, 'back'),
                  timeout=60, step=0.5), 'watch usable after bluetoothd restarted')
    c.close()


def main():
    t = Tap()
    with session(need=BLE_NEEDS) as (wd, run):
        image, want_hash = conformance_image(os.environ['CONFORMANCE_DIR'], IMAGE)
        addr, sim = bus_and_sim(run, wd, COUNT, seed=7)
        addrs = [d['address'] for d in sim.ctl({'cmd': 'list'})['devices']]
        base = free_udp_range(COUNT + 4)
        gw = run.add(Gateway(wd, conf_text(base)))
        gw.start(addrs, bluez_bus=addr, timeout=30)
        ports = check_fleet(t, gw, addrs)
        check_sharing(t, ports[addrs[1]])
        check_update(t, sim, ports[addrs[2]], addrs[2], image, want_hash)
        check_faults(t, sim, ports, addrs)
        check_bluetoothd_restart(t, sim, ports, addrs)
        t.eq(gw.stop(), 0, 'clean exit')
        # Restart while bluetoothd is away: the endpoints come back from
        # the store at once, and work when the watches show up.
        sim.stop()
        again = gw.start(addrs, bluez_bus=addr, timeout=30)
        t.eq(again, ports, 'every watch keeps its port across a gateway '
             'restart, before it is seen again')
        sim.start()
        c = Client(ports[addrs[5]], timeout=30)
        t.ok(wait_for('a restored watch to answer', lambda: ok_echo(c, 'restored'),
                      timeout=60, step=0.5), 'restored endpoint reaches its watch')
        c.close()
        t.eq(gw.stop(), 0, 'clean exit again')
    t.done()


if __name__ == '__main__':
    main()
