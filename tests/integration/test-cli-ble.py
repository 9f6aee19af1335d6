# SPDX-License-Identifier: MIT
"""The smpgw client over the BLE path, as issue 15 asks for it: a fleet of
12 simulated watches on a private bus (the simulator plays bluetoothd),
none connected. `smpgw devices` lists them in natural order with the
firmware and battery they advertise; `--battery-below` and `--version`
find watches without a connection; `smpgw update PineTime-3 FILE --follow`
in a pseudo-terminal draws a moving bar and ends "confirmed 1.2.3+4 on
PineTime-3"; the fleet query then finds it by its new version."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_harness import CLI_NEEDS, Cli, check_follow, table_names
from updates_harness import BLE_NEEDS, Tap, ble_sim_and_gateway, conformance_image, session

IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
CONF = '\n'.join(['[ble]', 'connect_timeout = 20s', 'idle_timeout = 30s',
                  '[request]', 'timeout = 5s', 'connect_timeout = 30s',
                  '[update]', 'boot_timeout = 60s', 'retry_timeout = 60s'])
N = 12
# PineTime-3 (index 2) is low on battery and writes flash at a pace that
# gives the bar a few seconds to move.
FLEET = {'count': N, 'devices': [{}, {}, {
    'battery_pct': 15,
    'flash': {'erase_sector_us': 2000, 'program_page_us': 8000, 'progressive_erase': True},
    'link': {'conn_interval_us': 7500, 'phy': 2}}]}
NAMES = ['PineTime-%d' % i for i in range(1, N + 1)]

t = Tap()


def rows(out):
    """{name: the row's columns} of a devices table."""
    return {r.split()[0]: r.split() for r in out.splitlines()[1:]}


def main():
    with session(tap=t, need=BLE_NEEDS + CLI_NEEDS) as (wd, run):
        sim, gw, addrs = ble_sim_and_gateway(run, wd, CONF, N, fleet=FLEET)
        cli = Cli(gw.base)

        rc, out, err = cli.run('devices')
        t.eq((rc, table_names(out)), (0, NAMES), 'devices: the fleet in natural order (%s)'
             % err.strip())
        r = rows(out)
        t.ok(all(r[n][1] == 'down' for n in NAMES), 'none connected')
        t.ok(all(r[n][2] == '1.0.0+0' for n in NAMES),
             'every watch shows the firmware it advertises')
        t.eq((r['PineTime-3'][3], r['PineTime-1'][3]), ('15%', '80%'),
             'battery from advertising')
        rc, out, _ = cli.run('devices', '--battery-below', '20')
        t.eq(table_names(out), ['PineTime-3'], '--battery-below 20: the low one, unconnected')
        rc, out, _ = cli.run('devices', '--version', '1.0.0')
        t.eq(len(table_names(out)), N, '--version 1.0.0: all %d, none connected' % N)

        rc, out = cli.pty('update', 'PineTime-3', IMG, '--follow', timeout=240)
        check_follow(t, rc, out, 'PineTime-3', '1.2.3+4')
        s0 = sim.slots(2)[0]
        t.eq(s0['confirmed'], True, 'the watch runs it, confirmed')
        rc, out, _ = cli.run('devices', '--version', '1.2.3+4')
        t.eq(table_names(out), ['PineTime-3'], '--version 1.2.3+4 finds it')
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
