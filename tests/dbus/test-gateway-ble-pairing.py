# SPDX-License-Identifier: MIT
"""Pairing through the whole daemon: smpgwd over a private D-Bus bus where
smpgw-sim plays bluetoothd (with bluetoothd 5.66's pairing behaviour: its
own pairing on a refused subscription through the default agent, Pair(),
keys lost by a watch that keeps them in RAM).

Four watches that all demand an encrypted link, configuration
`pairing = allowlist`:
  A  in pair_allow: paired on demand (bluetoothd's own pairing, our agent
     says yes), echo works, REST "pairing": "paired".
  B  in pair_allow, refuses pairing (its pairing window is closed): REST
     state "pairing_refused" and a 503 pairing-refused problem within
     seconds, UDP clients get rc 11; the gateway retries with backoff and
     pairs once the window opens.
  C  pair_first (bond required), keeps its bonds in RAM: paired before
     subscribing; the bond survives a gateway restart (no new pairing); the
     watch restarts and loses it: detected, the stale bond removed, paired
     again, echo works.
  D  not in the pairing allowlist: REST "not_allowed" and a 403
     pairing-not-allowed problem within seconds, never a string of timeouts;
     allowed by a SIGHUP, paired on the next retry.
"""
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

from gw_harness import (BLE_NEEDS, Gateway, Tap, bus_and_sim, free_udp_range, log,  # noqa: E402
                        session, wait_for)
from smp_udp_client import Client, SmpError  # noqa: E402

A, B, C, D = ['C0:FF:EE:B0:00:%02X' % (i + 1) for i in range(4)]
FLEET = {'devices': [
    {'address': A, 'pairing_required': True},
    {'address': B, 'pairing_required': True, 'refuse_pairing': True},
    {'address': C, 'pairing_required': True, 'volatile_bonds': True},
    {'address': D, 'pairing_required': True},
]}


def conf_text(base, allow_d=False):
    return '\n'.join([
        '[general]', 'log_level = debug',
        '[ble]', 'idle_timeout = 30s', 'connect_timeout = 10s',
        'pairing = allowlist', 'pair_allow = %s, %s' % (A, B), 'pair_first = ' + C,
        'pair_allow = ' + (D if allow_d else A),
        '[udp]', 'base_port = %d' % base,
        '[request]', 'timeout = 5s', 'connect_timeout = 20s']) + '\n'


def http(port, method, path, body=None):
    """(status, parsed body, content type); errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), data=data,
                                 method=method)
    req.add_header('Content-Type', 'application/json')
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers.get('Content-Type')
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get('Content-Type')


def device(port, addr):
    return http(port, 'GET', '/api/v1/devices/' + addr)[1]


def echo(port, addr, text):
    return http(port, 'POST', '/api/v1/devices/%s/echo' % addr, {'d': text})


def echo_ok(port, addr, text='hi'):
    st, body, _ = echo(port, addr, text)
    return st == 200 and body.get('r') == text


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def udp_rc(port):
    c = Client(port, timeout=10)
    try:
        c.echo('x')
        return 0
    except SmpError as e:
        return e.rc
    except (TimeoutError, OSError):
        return None
    finally:
        c.close()


def check_refused(t, hport, ports):
    wait_for('B refused', lambda: device(hport, B)['pairing'] == 'pairing_refused', timeout=30)
    t.ok(True, 'B: device state pairing_refused')
    (st, body, ctype), dt = timed(lambda: echo(hport, B, 'b'))
    t.eq((st, body.get('type')), (503, 'urn:smpgw:problem:pairing-refused'),
         'B: REST 503 pairing-refused (%.1f s)' % dt)
    t.ok(ctype.startswith('application/problem+json') and 'pairing window' in body['detail'],
         'B: problem+json that says what to do')
    t.ok(dt < 5, 'B: the error comes within seconds, not after the connect timeout')
    t.eq(udp_rc(ports[B]), 11, 'B: a UDP client gets rc 11 (access denied)')


def check_not_allowed(t, hport):
    wait_for('D not allowed', lambda: device(hport, D)['pairing'] == 'not_allowed', timeout=30)
    t.ok(True, 'D: device state not_allowed')
    (st, body, _), dt = timed(lambda: echo(hport, D, 'd'))
    t.eq((st, body.get('type')), (403, 'urn:smpgw:problem:pairing-not-allowed'),
         'D: REST 403 pairing-not-allowed (%.1f s)' % dt)
    t.ok(dt < 5, 'D: within seconds')


def run(t, wd, r):
    address, sim = bus_and_sim(r, wd, 4, seed=7, fleet=FLEET)
    base = free_udp_range(8)
    gw = r.add(Gateway(wd, conf_text(base)))
    ports = gw.start([A, B, C, D], bluez_bus=address, timeout=40)
    hport = gw.http_port()

    t.ok(echo_ok(hport, A, 'a'), 'A: paired on demand, echo over the encrypted link')
    t.eq(device(hport, A)['pairing'], 'paired', 'A: device state paired')
    t.ok(echo_ok(hport, C, 'c'), 'C: paired first, echo')
    t.eq(device(hport, C)['pairing'], 'paired', 'C: device state paired')
    echo(hport, B, 'b')
    echo(hport, D, 'd')
    check_refused(t, hport, ports)
    check_not_allowed(t, hport)

    # The wearer opens B's pairing window: the retries pair it.
    sim.ctl({'cmd': 'fault', 'device': B, 'fault': 'refuse_pairing', 'on': False})
    t.ok(wait_for('B paired', lambda: echo_ok(hport, B, 'b'), timeout=90),
         'B: window open, paired on a retry (backoff), echo')
    t.eq(device(hport, B)['pairing'], 'paired', 'B: device state paired')

    # SIGHUP: D is allowed now; its next retry pairs.
    gw.write_conf(conf_text(base, allow_d=True))
    gw.signal(signal.SIGHUP)
    t.ok(wait_for('D paired', lambda: echo_ok(hport, D, 'd'), timeout=90),
         'D: allowed by a SIGHUP, paired on a retry, echo')
    t.eq(device(hport, D)['pairing'], 'paired', 'D: device state paired')
    gw.write_conf(conf_text(base))

    # The gateway restarts: BlueZ keeps the bonds, no pairing again.
    pairings = sim.ctl({'cmd': 'counters'})['bluez']['pairings']
    t.eq(pairings, 4, 'four bonds made (A, B, C, D)')
    t.eq(gw.stop(), 0, 'gateway stopped')
    wd2 = os.path.join(wd, 'restart')  # a log of its own, the same state
    os.makedirs(wd2)
    gw = r.add(Gateway(wd2, conf_text(base), state_dir=gw.state))
    ports = gw.start([A, B, C, D], bluez_bus=address, timeout=40)
    hport = gw.http_port()
    t.ok(echo_ok(hport, A, 'a2') and echo_ok(hport, C, 'c2'),
         'after a gateway restart: A and C answer')
    t.eq([device(hport, x)['pairing'] for x in (A, C)], ['paired', 'paired'],
         'after a gateway restart: still paired (the bond was kept)')
    t.eq(sim.ctl({'cmd': 'counters'})['bluez']['pairings'], pairings,
         'after a gateway restart: no new pairing')
    t.eq([device(hport, x)['counters']['pairings'] for x in (A, C)], [0, 0],
         'after a gateway restart: the devices count no new bond')

    # C restarts and loses its keys: detected, removed, paired again.
    sim.ctl({'cmd': 'fault', 'device': C, 'fault': 'reboot'})
    time.sleep(1.5)
    t.ok(wait_for('C rebonded', lambda: echo_ok(hport, C, 'c3'), timeout=60),
         'C: bond lost (watch restarted), stale bond removed, paired again, echo')
    t.eq(device(hport, C)['pairing'], 'paired', 'C: paired again')
    t.eq(sim.ctl({'cmd': 'counters'})['bluez']['pairings'], pairings + 1,
         'C: one new bond')
    t.eq(device(hport, C)['counters']['pairings'], 1, 'C: counts it')
    t.ok('C0:FF:EE:B0:00:03: connected (ble, mtu 495, paired: new bond)' in gw.read_log(),
         'C: the new bond is logged')
    t.eq(gw.stop(), 0, 'clean exit')


def main():
    t = Tap()
    with session(need=BLE_NEEDS) as (wd, r):
        log('pairing')
        run(t, wd, r)
    t.done()


if __name__ == '__main__':
    main()
