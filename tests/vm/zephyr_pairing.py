# SPDX-License-Identifier: MIT
"""VM tier: pairing with a REAL Zephyr watch that demands an encrypted link,
run INSIDE the VM (tests/vm/stage2.sh started the system bus, btvirt and a
real bluetoothd). The watch is the stock Zephyr 4.3.0 smp_svr built with
MCUMGR_TRANSPORT_BT_PERM_RW_ENCRYPT (smp-svr-ble-pairing of
../shared/peers/zephyr: LE Secure Connections, Just Works, bonds in RAM only)
on hci1; the real smpgwd manages it on hci0 through the real bluetoothd.
Prints TAP; exit status 0 when all pass, 77 (SKIP) without the peers.

  1. not allowed ([ble] pairing = allowlist without it): our agent refuses
     bluetoothd's own pairing; the device shows "not_allowed" and REST
     answers 403 pairing-not-allowed within seconds (not after bluetoothd's
     30 s ATT timeout).
  2. allowed by a SIGHUP: the retry pairs (bluetoothd's own pairing, our
     agent says yes), echo works, "paired", one new bond.
  3. the gateway restarts: the bond is kept, no new pairing.
  4. the watch restarts and loses its bond: detected, the stale bond
     removed (RemoveDevice), paired again, echo works.
  5. rebond = no: the same loss leaves "bond_lost" and a 503 bond-lost at
     once; rebond = yes by SIGHUP: paired again.
The time each step takes is printed (TAP comments and the test names).
"""
import signal
import sys
import time

import ble_scenarios as bs
import zephyr_peer as zp
from ble_scenarios import tap, log, http, wait_for

NOBODY = '00:00:00:00:00:00'


def ble_conf(allow, rebond=True):
    return 'pairing = allowlist\npair_allow = %s\nrebond = %s\n' % (
        allow, 'yes' if rebond else 'no')


def echo(addr, text='hello', timeout=90):
    t = time.monotonic()
    st, body = http('POST', '/api/v1/devices/%s/echo' % addr, {'d': text}, timeout)
    return st, body, time.monotonic() - t


CRASHES = []


def respawn_bluetoothd():
    """bluetoothd 5.66 dies right after answering Connect to a watch that
    lost its bond (seen here): start it again, as systemd's Restart= would
    (docs/ble.md: enable it)."""
    if bs.bluetoothd_alive():
        return
    CRASHES.append(time.monotonic())
    log('bluetoothd died (%d so far): starting it again' % len(CRASHES))
    bs.start_bluetoothd(adapters=(0,))


def echo_until_ok(addr, what, timeout):
    """Retried (the link may be reconnecting, rebonding): bounded."""
    t = time.monotonic()

    def once():
        respawn_bluetoothd()
        st, body, _ = echo(addr, 'hello', 60)
        if st != 200:
            log('echo: %s %s' % (st, body.get('type') if isinstance(body, dict) else body))
            time.sleep(1)
        return st == 200 and body.get('r') == 'hello'
    wait_for(what, once, timeout, 0)
    return time.monotonic() - t


def state(addr):
    d = bs.device(addr) or {}
    return d.get('pairing'), (d.get('counters') or {}).get('pairings')


def reload(gw, allow, rebond=True):
    bs.write_gw_conf(True, ble_conf(allow, rebond))
    gw.send_signal(signal.SIGHUP)
    time.sleep(1)


def paired_in_bluez(addr):
    dpath = bs.dev_path('hci0', addr)
    try:
        return bs.bz_prop(dpath, 'Device1', 'Paired') and bs.bz_prop(dpath, 'Device1', 'Bonded')
    except RuntimeError:
        return False


def not_allowed(addr):
    st, body, dt = echo(addr)
    tap.ok(st == 403 and body.get('type') == 'urn:smpgw:problem:pairing-not-allowed',
           'not allowed: the first request (it connects) ends with 403 pairing-not-allowed '
           'in %.1fs (%s)' % (dt, st))
    tap.ok(dt < 25, 'not allowed: known within seconds, not after the 30 s ATT timeout plus '
           'the connect timeout (%.1fs)' % dt)
    tap.ok(state(addr)[0] == 'not_allowed', 'not allowed: device state not_allowed')
    tap.ok(not paired_in_bluez(addr), 'not allowed: bluetoothd holds no bond')
    st, body, dt = echo(addr)
    tap.ok(st == 403 and dt < 3, 'not allowed: the next request fails at once (%.2fs)' % dt)


def lose_bond(watch, addr, what):
    """The watch restarts: its bonds were in RAM."""
    t = time.monotonic()
    watch.restart()
    log('%s: the watch restarted in %.1fs' % (what, time.monotonic() - t))
    return t


def main():
    zp.require('smp-svr-ble-pairing')
    watch = zp.BleWatch(1, 'smp-svr-ble-pairing')
    watch.start()
    addr = watch.address
    gw = bs.start_gw(True, ble_conf(NOBODY))
    bs.discover(addr)

    not_allowed(addr)

    reload(gw, addr)
    dt = echo_until_ok(addr, 'an echo once pairing is allowed', 180)
    tap.ok(True, 'allowed by SIGHUP: paired on the retry, echo over the encrypted link (%.1fs; '
           'bluetoothd crashes meanwhile: %d)' % (dt, len(CRASHES)))
    tap.ok(state(addr) == ('paired', 1), 'device state paired, one new bond (%r)' % (state(addr),))
    tap.ok(paired_in_bluez(addr), 'bluetoothd: Paired and Bonded')
    tap.ok('paired: new bond' in bs.read_log('smpgwd'), 'the new bond is logged')
    big = ''.join(chr(0x41 + i % 26) for i in range(2000))
    st, body, dt = echo(addr, big)
    tap.ok(st == 200 and body.get('r') == big, '2000-byte echo over the encrypted link (%.2fs)' % dt)

    tap.ok(bs.stop(gw) == 0, 'the gateway stops')
    gw = bs.start_gw(True, ble_conf(addr))
    dt = echo_until_ok(addr, 'an echo after the gateway restarted', 180)
    tap.ok(state(addr) == ('paired', 0),
           'gateway restarted: echo (%.1fs), still paired, no new pairing (%r)' % (dt, state(addr)))

    crashes = len(CRASHES)
    t = lose_bond(watch, addr, 'bond loss')
    dt = echo_until_ok(addr, 'an echo after the watch lost its bond', 240)
    tap.ok(True, 'the watch lost its bond (restart): stale bond removed, paired again, echo '
           '(%.1fs after the restart began; first echo %.1fs)' % (time.monotonic() - t, dt))
    # At most one crash for the stale bond itself; a second one is allowed
    # because bluetoothd 5.66 also dies now and then (2 runs in 6) on the
    # first pairing after our agent refused the watch (step 2), and such a
    # death is only noticed here, when the next call finds it gone. What
    # must not happen is a crash per retry (the gateway knows better).
    tap.ok(len(CRASHES) - crashes <= 2, 'bluetoothd 5.66 crashed %d time(s) on the stale bond, '
           'never again once the gateway knew (it removes the bond before connecting)'
           % (len(CRASHES) - crashes))
    tap.ok(state(addr) == ('paired', 1), 'paired again: one new bond (%r)' % (state(addr),))

    reload(gw, addr, rebond=False)
    t = lose_bond(watch, addr, 'bond loss, rebond off')
    crashes = len(CRASHES)

    def bond_lost():
        respawn_bluetoothd()
        return state(addr)[0] == 'bond_lost'
    wait_for('bond_lost', bond_lost, 240, 1)
    tap.ok(True, 'rebond = no: device state bond_lost (%.1fs after the restart began)'
           % (time.monotonic() - t))
    st, body, dt = echo(addr)
    tap.ok(st == 503 and body.get('type') == 'urn:smpgw:problem:bond-lost' and dt < 3,
           'rebond = no: 503 bond-lost at once (%s, %.2fs)' % (st, dt))
    tap.ok(paired_in_bluez(addr), 'rebond = no: the stale bond is left alone')
    time.sleep(5)
    respawn_bluetoothd()
    tap.ok(len(CRASHES) - crashes <= 1 and state(addr)[0] == 'bond_lost',
           'rebond = no: no connection attempts with the stale bond once known (bluetoothd '
           'crashes: %d)' % (len(CRASHES) - crashes))
    reload(gw, addr, rebond=True)
    dt = echo_until_ok(addr, 'an echo once rebonding is allowed', 240)
    tap.ok(state(addr)[0] == 'paired', 'rebond = yes by SIGHUP: paired again, echo (%.1fs)' % dt)

    tap.ok(bs.stop(gw) == 0, 'smpgwd exits cleanly on SIGTERM')
    watch.stop()
    print('1..%d' % tap.n, flush=True)
    log('done')
    return 1 if tap.failed else 0


if __name__ == '__main__':
    bs.run_scenarios(main)
