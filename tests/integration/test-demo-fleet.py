#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The demo's fleet (smpgw-sim --count 20, as scripts/demo starts it) over
the BLE path through the real smpgwd: the watches advertise a spread of
batteries, the same on every run, so `?battery_below=` finds a few low
ones without a connection; the cell voltage a watch reports in its health
answer (user group 64, through the SMP passthrough) goes with the
percentage it advertises (higher percentage, higher voltage)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from updates_harness import BLE_NEEDS, Tap, ble_sim_and_gateway, session, wait_for  # noqa: E402

N = 20
CONF = '\n'.join(['[ble]', 'connect_timeout = 20s', '[request]', 'timeout = 5s',
                  'connect_timeout = 30s'])
t = Tap()


def batteries(gw):
    st, d = gw.request('GET', '/api/v1/devices')
    assert st == 200, d
    return {x['name']: x['battery'] for x in d['devices']}


def below(gw, pct):
    st, d = gw.request('GET', '/api/v1/devices?battery_below=%d' % pct)
    assert st == 200, d
    return sorted(x['name'] for x in d['devices'])


def health(gw, name):
    st, d = gw.request('POST', '/api/v1/devices/%s/smp' % name,
                       {'group': 64, 'id': 0, 'op': 'read', 'data': {}})
    assert st == 200, (st, d)
    return d['data']


def main():
    with session(tap=t, need=BLE_NEEDS) as (wd, run):
        _, gw, _ = ble_sim_and_gateway(run, wd, CONF, N)
        bats = wait_for('every battery advertised', lambda: (
            lambda b: b if len(b) == N and None not in b.values() else None)(batteries(gw)),
            timeout=60, step=0.3)
        values = sorted(bats.values())
        t.ok(values[0] <= 10 and values[-1] == 100 and len(set(values)) >= N - 2,
             'a spread of batteries, %d..%d %%, %d distinct' % (values[0], values[-1],
                                                                 len(set(values))))
        t.eq(bats['PineTime-1'], 100, 'PineTime-1 full')
        low = below(gw, 20)
        t.ok(1 <= len(low) <= N // 4, '?battery_below=20: a few low ones: %s' % low)
        t.eq(low, sorted(n for n, b in bats.items() if b < 20), '... exactly those under 20 %')
        st, d = gw.request('GET', '/api/v1/devices')
        t.ok(all(x['counters']['connects'] == 0 for x in d['devices']),
             'no watch was connected for that')
        # The voltage goes with the percentage: lowest, middle, highest.
        order = sorted(bats, key=lambda n: bats[n])
        picks = [order[0], order[N // 2], order[-1]]
        hs = [health(gw, n) for n in picks]
        t.eq([h['battery_pct'] for h in hs], [bats[n] for n in picks],
             'health battery_pct is what the watch advertises (%s)' % picks)
        mv = [h['battery_mv'] for h in hs]
        t.ok(3500 < mv[0] < mv[1] < mv[2] <= 4200,
             'cell voltage rises with the percentage: %s mV' % mv)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
