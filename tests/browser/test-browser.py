#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Starts smpgwd with a simulated fleet of 12 watches over BLE (smpgw-sim
playing bluetoothd on a private D-Bus bus, so the watches advertise their
firmware and battery) and runs test-dashboard.js in headless Chromium.
Exit 77 (skip) when Chromium, playwright-core, the simulator or
dbus-daemon is missing.

    test-browser.py               run the test
    test-browser.py --serve SEC   only start the fleet and print the URL
                                  (to look at the dashboard by hand)
    test-browser.py --cluster     two gateways on PostgreSQL (through
                                  tests/pg/pg_server.py): the Gateway column

With SCREENSHOTS=DIR the test saves one picture of every view there
(scripts/dashboard-screenshots does that for docs/img/)."""
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
from rollout_fleet import (NEEDS, SKIP, Fleet, Gateway, executables, log, rooms,  # noqa: E402
                           session, wait_for)

TOKEN = 'browser-token-0123456789'
N = 12
AWAY = 'PineTime-11'   # leaves the range once discovered
PRESENCE_S = 4         # [ble] presence_timeout: AWAY is out of range after it


def fleet_devices():
    """Per-watch settings: fast BLE links, batteries from full to nearly
    empty, a third of the fleet already on 1.1.0."""
    fast = {'link': {'conn_interval_us': 7500, 'phy': 2},
            'flash': {'erase_sector_us': 2000, 'program_page_us': 20,
                      'progressive_erase': True}}
    out = []
    for i in range(1, N + 1):
        d = dict(fast, battery_pct=max(5, 100 - 8 * i), rssi=-50 - 3 * i)
        if i % 3 == 0:
            d['version'] = '1.1.0'
        out.append(d)
    return out


def names_of(gw):
    return {d.get('name') or d['id']: d['id'] for d in gw.get('/api/v1/devices')['devices']}


def check_browser():
    """Chromium and playwright-core are there (else says why)."""
    if not os.path.exists('/usr/bin/chromium'):
        print('SKIP: /usr/bin/chromium missing (apt-get install chromium)')
        return False
    if not os.path.isdir(os.path.join(HERE, 'node_modules', 'playwright-core')):
        print('SKIP: run npm ci in tests/browser')
        return False
    return True


def run_dashboard(wd, gw, names, **env):
    """test-dashboard.js against gw: its exit status."""
    env = dict(os.environ, SMPGW=gw.base, TOKEN=TOKEN, PROFILE=os.path.join(wd, 'chromium'),
               DEVICES=','.join('%s=%s' % (n, i) for n, i in names.items()), **env)
    try:
        rc = subprocess.run(['node', os.path.join(HERE, 'test-dashboard.js')], env=env,
                            timeout=450, cwd=HERE).returncode
    except subprocess.TimeoutExpired:
        print('not ok - browser test timed out')
        rc = 1
    if rc:
        log('smpgwd log tail:\n# ' + gw.read_log()[-6000:].replace('\n', '\n# '))
    return rc


def cluster():
    """Several gateways on one PostgreSQL store (SMPGW_TEST_PG: run through
    tests/pg/pg_server.py): g2's dashboard shows both watches, each with
    the gateway holding it (PineTime-1 held by g1, PineTime-2 by g2)."""
    if not os.environ.get('SMPGW_TEST_PG'):
        print('SKIP: needs SMPGW_TEST_PG (run through tests/pg/pg_server.py)')
        return SKIP
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        _, gws = rooms(wd, run, ('g1', 'g2'), [
            {'address': 'C0:FF:EE:00:00:01', 'heard': {'g1': -50, 'g2': -70}},
            {'address': 'C0:FF:EE:00:00:02', 'heard': {'g1': -75, 'g2': -55}}])
        for gw in gws.values():
            gw.start()
        want = {'PineTime-1': 'g1', 'PineTime-2': 'g2'}
        wait_for('both watches held and listed on g2', lambda: {
            d['name']: d.get('held_by') for d in gws['g2'].get('/api/v1/devices')['devices']}
            == want, timeout=60, step=0.5)
        return run_dashboard(wd, gws['g2'], names_of(gws['g2']), CLUSTER='1',
                             HOLDERS=','.join('%s=%s' % kv for kv in want.items()))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == '--cluster':
        return cluster() if check_browser() else SKIP
    serve = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == '--serve' else 0
    if not serve and not check_browser():
        return SKIP
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        gw_exe, sim_exe, conf_dir = executables()
        token_path = os.path.join(wd, 'token')
        with open(token_path, 'w') as f:
            f.write(TOKEN + '\n')
        fleet = run.start(Fleet(wd, sim_exe, N, per_device=fleet_devices(), transport='ble'))
        gw = run.start(Gateway(wd, gw_exe, fleet,
                               extra_conf=['[http]', 'token_file = ' + token_path,
                                           '[ble]', 'presence_timeout = %ds' % PRESENCE_S]))
        wait_for('the watches discovered', lambda: len(
            gw.get('/api/v1/devices')['devices']) >= N, timeout=60, step=0.3)
        fleet.range(AWAY, False)  # the gateway knows it; a rollout will wait for it
        away = names_of(gw)[AWAY]
        wait_for(AWAY + ' out of range', lambda: not gw.get('/api/v1/devices/' + away)['present'],
                 timeout=PRESENCE_S * 2 + 20, step=0.3)
        names = names_of(gw)
        if serve:
            print('dashboard: %s/  token: %s' % (gw.base, TOKEN), flush=True)
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # clean up on kill
            time.sleep(serve)
            return 0
        rc = run_dashboard(wd, gw, names, AWAY=AWAY, SIM=sim_exe, SIM_CTL=fleet.control,
                           IMAGE=os.path.join(conf_dir, 'images', 'app-1.2.3+4-ecdsa-p256.bin'))
        drc = gw.stop()
    if drc != 0:
        print('smpgwd exit status %r' % drc)
        return 1
    return rc

if __name__ == '__main__':
    sys.exit(main())
