#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The device model across a restart: the real smpgwd over the BLE path
(the simulator plays bluetoothd on a private bus, forgetting a watch 1 s
after it went quiet, so nothing is re-read from bluetoothd's cache). The
advertised record and the slots read over a connection come back from the
store with their original times (advertised.seen_at, age_s, slots_age_s,
firmware.source as before), while the watches are out of range; the next
advertisement refreshes them."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import NEEDS, Fleet, Gateway, check, executables, session, wait_for  # noqa: E402

N = 2


def dev(gw, name):
    return gw.get('/api/v1/devices/' + name)


def all_advertised(gw, names):
    """Every watch of names discovered (the list, not GET /devices/NAME:
    that is a 404 until discovery) and advertising."""
    devs = {d.get('name'): d for d in gw.get('/api/v1/devices')['devices']}
    return all(n in devs and devs[n]['advertised'] for n in names)


def main():
    os.environ['SMPGW_SIM_TEMP_TIMEOUT_MS'] = '1000'
    with session(need=NEEDS + ('dbus-daemon',), tail_lines=80) as (wd, run):
        gw_exe, sim_exe, _ = executables()
        fleet = run.start(Fleet(wd, sim_exe, N, transport='ble',
                                per_device=[{'battery_pct': 42}, {'battery_pct': 17}]))
        gw = run.start(Gateway(wd, gw_exe, fleet))
        wait_for('the watches advertising', lambda: all_advertised(gw, fleet.names()),
                 timeout=60, step=0.3)
        slots = gw.get('/api/v1/devices/PineTime-1/image-state')['images']
        before = {n: dev(gw, n) for n in fleet.names()}
        check(before['PineTime-1']['slots'] and before['PineTime-1']['firmware']['source'] ==
              'connection', 'PineTime-1: slots read over a connection')
        check(before['PineTime-2']['firmware']['source'] == 'advertising',
              'PineTime-2: firmware from advertising')
        for n in fleet.names():
            fleet.range(n, False)
        wait_for('the watches forgotten by bluetoothd', lambda: all(
            not dev(gw, n)['present'] for n in fleet.names()), timeout=40, step=0.3)
        last = {n: dev(gw, n) for n in fleet.names()}
        rc = gw.stop()
        check(rc == 0, 'smpgwd stopped cleanly (exit %r)' % rc)
        time.sleep(2)
        gw.start()
        after = {n: dev(gw, n) for n in fleet.names()}
        for n in fleet.names():
            a, b = after[n], last[n]
            check(not a['present'] and a['link_state'] == 'down', n + ': restarted, out of range')
            check(a['advertised'] and a['advertised']['seen_at'] == b['advertised']['seen_at'],
                  n + ': the advertised record restored with its time (%s)' %
                  (a['advertised'] or {}).get('seen_at'))
            check(a['advertised']['age_s'] >= b['advertised']['age_s'] + 2,
                  n + ': its age counts the restart (%.1f s, was %.1f s)' %
                  (a['advertised']['age_s'], b['advertised']['age_s']))
            check({k: a['advertised'][k] for k in ('version', 'hash_prefix', 'battery')} ==
                  {k: b['advertised'][k] for k in ('version', 'hash_prefix', 'battery')} and
                  a['battery'] == b['battery'], n + ': version, hash, battery %s %%' % a['battery'])
            check(a['firmware']['source'] == b['firmware']['source'] and
                  a['firmware']['version'] == b['firmware']['version'],
                  n + ': firmware %s from %s, as before' % (a['firmware']['version'],
                                                            a['firmware']['source']))
            check(a['last_seen'] == b['last_seen'], n + ': last_seen as it was')
        a, b = after['PineTime-1'], last['PineTime-1']
        check(a['slots'] == b['slots'] == before['PineTime-1']['slots'] and len(slots) >= 1,
              'PineTime-1: the slots restored')
        check(a['slots_age_s'] >= b['slots_age_s'] + 2,
              'PineTime-1: slots_age_s counts the restart (%.1f s)' % a['slots_age_s'])
        check(after['PineTime-2']['slots'] is None, 'PineTime-2: never connected, no slots')
        # ?battery_below works on the restored records, before any advertisement
        found = sorted(d['name'] for d in gw.get('/api/v1/devices?battery_below=20')['devices'])
        check(found == ['PineTime-2'], '?battery_below=20 after the restart: %s' % found)
        for n in fleet.names():
            fleet.range(n, True)
        wait_for('fresh advertising', lambda: all(
            dev(gw, n)['present'] and dev(gw, n)['advertised']['age_s'] < 5
            for n in fleet.names()), timeout=30, step=0.3)
        check(True, 'back in range: the records refreshed')
        rc = gw.stop()
        check(rc == 0, 'smpgwd stopped cleanly (exit %r)' % rc)
    return 0


if __name__ == '__main__':
    sys.exit(main())
