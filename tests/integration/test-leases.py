#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Leases on watches between gateways (issue 17 part 2, docs/multi-gateway.md):
three smpgwd ("rooms" g1, g2, g3) share one real PostgreSQL server
(SMPGW_TEST_PG, set by tests/pg/pg_server.py); each has its own private bus
with its own simulator playing bluetoothd, the same two watches at a
different RSSI per room. Each watch is held (and managed, connected,
served on its UDP port) by exactly one gateway, the best-hearing one; a
better hearing within the hysteresis does not move it, a clearly better one
does; kill -9 of the holder hands its watches to the next best gateway
within the default bound (lease ttl 15 s + one round of 5 s < 30 s)."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import NEEDS, Fleet, Gateway, executables, log, session, wait_for  # noqa: E402

PG = os.environ.get('SMPGW_TEST_PG')
A, B = 'C0:FF:EE:00:00:01', 'C0:FF:EE:00:00:02'
# RSSI per room: A is best heard in g1, B in g2; g3 hears both badly.
RSSI = {'g1': (-50, -75), 'g2': (-70, -55), 'g3': (-80, -90)}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    log('ok: ' + what)


def sql(q):
    out = subprocess.run(['psql', '-X', '-q', '-A', '-t', '-d', PG, '-c', q],
                         capture_output=True, text=True, timeout=30)
    if out.returncode:
        raise RuntimeError('psql: ' + out.stderr)
    return out.stdout.strip()


def holder(addr):
    """The live holder of addr's lease (by the gateways' clock), or None."""
    now_ms = int(time.time() * 1000)
    return sql("SELECT holder FROM leases WHERE device_id = '%s' AND expires_ms > %d"
               % (addr, now_ms)) or None


def udp_served(gw):
    """The watches gw serves a UDP port for (its ports.json)."""
    try:
        with open(os.path.join(gw.state, 'ports.json')) as f:
            return sorted(json.load(f)['devices'])
    except (OSError, ValueError, KeyError):
        return None


def managed(gw):
    return sorted(d['id'] for d in gw.get('/api/v1/devices')['devices'])


def main():
    if not PG:
        print('1..0 # SKIP needs SMPGW_TEST_PG (run through tests/pg/pg_server.py)')
        sys.exit(77)
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        gw_exe, sim_exe, _ = executables()
        gws = {}
        for room, (ra, rb) in RSSI.items():
            d = os.path.join(wd, room)
            os.mkdir(d)
            fleet = run.add(Fleet(d, sim_exe, 2, transport='ble', per_device=[
                {'address': A, 'rssi': ra}, {'address': B, 'rssi': rb}]))
            fleet.start()
            gws[room] = run.add(Gateway(d, gw_exe, fleet,
                                        extra_conf=['[gateway]', 'id = ' + room]))
        for gw in gws.values():
            gw.start()
        wait_for('A held by g1 and B by g2',
                 lambda: holder(A) == 'g1' and holder(B) == 'g2', timeout=40, step=0.5)
        check(True, 'each watch is held by the gateway that hears it best')
        wait_for('the holders to manage their watch', lambda: managed(gws['g1']) == [A] and
                 managed(gws['g2']) == [B], timeout=20, step=0.5)
        check(managed(gws['g3']) == [], 'g3 manages neither (it hears both, worse)')
        hear = sql("SELECT gateway_id || ':' || rssi FROM hearings WHERE device_id = '%s'"
                   " ORDER BY gateway_id" % A).split()
        check(hear == ['g1:-50', 'g2:-70', 'g3:-80'], 'every gateway records its RSSI: %s'
              % hear)

        # Within the hysteresis (8 dB): no move.
        gws['g2'].fleet.ctl({'cmd': 'rssi', 'device': 'PineTime-1', 'rssi': -46})
        wait_for('g2 to record -46 for A', lambda: sql(
            "SELECT rssi FROM hearings WHERE gateway_id = 'g2' AND device_id = '%s'" % A)
            == '-46', timeout=20, step=0.5)
        time.sleep(11)  # two more rounds
        check(holder(A) == 'g1', 'a hearing better by 4 dB does not move the watch')
        # Clearly better: the watch walks to g2.
        t0 = time.monotonic()
        gws['g2'].fleet.ctl({'cmd': 'rssi', 'device': 'PineTime-1', 'rssi': -30})
        wait_for('A to move to g2', lambda: holder(A) == 'g2', timeout=40, step=0.5)
        log('A moved to g2 in %.1f s' % (time.monotonic() - t0))
        wait_for('g2 to manage both, g1 none', lambda: managed(gws['g2']) == [A, B] and
                 managed(gws['g1']) == [], timeout=20, step=0.5)
        check(True, 'a hearing better by 20 dB moves the watch: g1 released it, g2 manages it')
        wait_for('the UDP port to move', lambda: udp_served(gws['g2']) == [A, B] and
                 udp_served(gws['g1']) == [], timeout=20, step=0.5)
        check(True, "A's UDP port is served by g2 only (g1 closed its endpoint)")

        # kill -9 of the holder: g1 (next best for both) takes over.
        t0 = time.monotonic()
        gws['g2'].kill9()
        wait_for('g1 to take A and B over', lambda: holder(A) == 'g1' and holder(B) == 'g1',
                 timeout=45, step=0.5)
        took = time.monotonic() - t0
        log('takeover after kill -9 in %.1f s' % took)
        check(took <= 30, 'takeover within 30 s (%.1f s)' % took)
        wait_for('g1 to manage both', lambda: managed(gws['g1']) == [A, B], timeout=20,
                 step=0.5)
        check(managed(gws['g3']) == [], 'g3 still manages none')
        # A clean stop hands over at once (the lease is given up).
        t0 = time.monotonic()
        gws['g1'].stop()
        wait_for('g3 to take over after a clean stop',
                 lambda: holder(A) == 'g3' and holder(B) == 'g3', timeout=30, step=0.5)
        log('takeover after a clean stop in %.1f s' % (time.monotonic() - t0))
        check(True, 'after g1 stops, g3 (the last one hearing them) holds both')


if __name__ == '__main__':
    main()
