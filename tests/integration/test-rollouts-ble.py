#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A rollout over the BLE path: smpgwd discovers four simulated watches
through the simulator playing bluetoothd on a private D-Bus bus. One watch
leaves the range before the rollout starts; the rollout's retry interval is
an hour, so only the gateway seeing the watch advertise again (a
device.seen event) can bring it back into the rollout in time."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import (NEEDS, Fleet, Gateway, check, executables, session,  # noqa: E402
                           wait_for)

N = 4
AWAY = 'PineTime-4'


def main():
    fast = {'link': {'conn_interval_us': 7500, 'phy': 2},
            'flash': {'erase_sector_us': 2000, 'program_page_us': 20,
                      'progressive_erase': True}}
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        gw_exe, sim_exe, conf_dir = executables()
        fleet = run.start(Fleet(wd, sim_exe, N, per_device=[fast] * N, transport='ble'))
        gw = run.add(Gateway(wd, gw_exe, fleet))
        gw.start()
        image = gw.upload_image(conf_dir)
        wait_for('the watches discovered', lambda: len(
            gw.get('/api/v1/devices')['devices']) >= N, timeout=60, step=0.3)
        fleet.range(AWAY, False)
        away = fleet.id(AWAY)
        r = gw.post('/api/v1/rollouts', {
            'image': image['id'], 'target': 'all', 'max_concurrent': 4,
            'retry_interval_s': 3600, 'probe_timeout_ms': 2000}, expect=201)
        rid = r['id']
        check(sorted(d['device'] for d in r['device_list']) ==
              sorted(fleet.id(n) for n in fleet.names()), 'targets: the 4 BLE addresses')

        def dev(i):
            return next(d for d in gw.rollout(rid)['device_list'] if d['device'] == i)
        wait_for('3 watches updated', lambda: gw.rollout(rid)['totals']['updated'] == 3,
                 timeout=90, step=0.3)
        wait_for('the away watch tried', lambda: dev(away)['last_try_ms'], timeout=30)
        check(dev(away)['state'] == 'pending', 'the away watch: not seen, pending')
        time.sleep(1)
        fleet.range(AWAY, True)
        wait_for('the away watch updated once it advertised again',
                 lambda: dev(away)['state'] == 'updated', timeout=60, step=0.3)
        check(gw.rollout(rid)['state'] == 'completed', 'completed well before the hour')
        for name in fleet.names():
            s0 = fleet.show(name)['slots'][0]
            assert s0['hash'] == image['id'] and s0['confirmed'], (name, s0)
        check(True, 'all four run the image, confirmed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
