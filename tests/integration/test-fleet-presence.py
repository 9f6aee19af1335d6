#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""In range (docs/ble.md "Devices"): the real smpgwd discovers simulated
watches over the BLE path (the simulator plays bluetoothd on a private bus).
A watch moved out of range (the simulator's range command: it stops
advertising; its Device1 object stays while bluetoothd's TemporaryTimeout
runs) becomes present=false within [ble] presence_timeout, with a
device.lost event and smpgw_device_in_range 0, and present again when it
advertises again; a connected watch, which does not advertise, stays in
range."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import (NEEDS, Events, Fleet, Gateway, check, executables, log,  # noqa: E402
                           session, wait_for)

N = 3
TIMEOUT_S = 3
AWAY = 'PineTime-2'


def present(gw):
    return {d['name']: d['present'] for d in gw.get('/api/v1/devices')['devices']}


def in_range_metric(gw):
    status, text = gw.request('GET', '/metrics', raw=True)
    assert status == 200, text
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r'^smpgw_device_in_range\{device="([^"]+)"\} (\S+)$', text, re.M)}


def out_and_back(gw, fleet, events):
    check(all(present(gw).values()), 'every watch in range at first')
    t0 = time.monotonic()
    fleet.range(AWAY, False)
    wait_for(AWAY + ' out of range', lambda: not present(gw)[AWAY],
             timeout=TIMEOUT_S * 2 + 10, step=0.2)
    took = time.monotonic() - t0
    log('%s out of range after %.1f s (presence_timeout %d s)' % (AWAY, took, TIMEOUT_S))
    # bounded by the timeout plus one sweep (a quarter) plus the load
    check(TIMEOUT_S * 0.9 <= took <= TIMEOUT_S * 1.25 + 5,
          'present=false after the timeout (%.1f s)' % took)
    p = present(gw)
    check([n for n, v in p.items() if not v] == [AWAY], 'only %s is out of range' % AWAY)
    m = in_range_metric(gw)
    check(m == {fleet.id(n): (0.0 if n == AWAY else 1.0) for n in fleet.names()},
          'smpgw_device_in_range: %s' % m)
    wait_for('the device.lost event', lambda: [e for e in events.of('device.lost')
                                              if e['data']['name'] == AWAY], timeout=10)
    check(len([e for e in events.of('device.lost')]) == 1, 'one device.lost event, for it')
    # stays out while silent
    time.sleep(TIMEOUT_S)
    check(not present(gw)[AWAY], 'still out of range while it does not advertise')
    fleet.range(AWAY, True)
    wait_for(AWAY + ' back in range', lambda: present(gw)[AWAY], timeout=20, step=0.2)
    check(in_range_metric(gw)[fleet.id(AWAY)] == 1.0, 'smpgw_device_in_range back to 1')


def connected_stays(gw, fleet):
    """A connected watch does not advertise: still in range, for longer
    than the timeout."""
    dev = fleet.id('PineTime-1')
    deadline = time.monotonic() + 3 * TIMEOUT_S
    n = 0
    while time.monotonic() < deadline:
        status, _ = gw.request('POST', '/api/v1/devices/%s/smp' % dev,
                               {'op': 'read', 'group': 0, 'id': 0, 'data': {'d': 'x'}})
        n += 1
        d = gw.get('/api/v1/devices/' + dev)
        if d['link_state'] == 'up':
            assert d['present'], d
        time.sleep(0.3)
    d = gw.get('/api/v1/devices/' + dev)
    check(d['counters']['connects'] >= 1 and d['present'],
          'connected PineTime-1 stays in range over %d s (%d echoes)' % (3 * TIMEOUT_S, n))


def main():
    with session(need=NEEDS + ('dbus-daemon',), tail_lines=80) as (wd, run):
        gw_exe, sim_exe, _ = executables()
        fleet = run.start(Fleet(wd, sim_exe, N, transport='ble'))
        gw = run.start(Gateway(wd, gw_exe, fleet, extra_conf=[
            '[ble]', 'presence_timeout = %ds' % TIMEOUT_S]))
        wait_for('the watches advertising', lambda: len([
            d for d in gw.get('/api/v1/devices')['devices'] if d['advertised']]) == N,
            timeout=60, step=0.3)
        events = run.add(Events(gw, types=('device.lost',)))
        out_and_back(gw, fleet, events)
        connected_stays(gw, fleet)
        rc = gw.stop()
        check(rc == 0, 'smpgwd stopped cleanly (exit %r)' % rc)
    return 0


if __name__ == '__main__':
    sys.exit(main())
