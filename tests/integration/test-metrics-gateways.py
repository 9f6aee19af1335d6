#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Metrics with several gateways (docs/metrics.md, "Several gateways"): two
smpgwd (g1, g2) on one real PostgreSQL server and one simulator playing
each room's bluetoothd, four watches heard by both rooms, two held by
each. Every series says what its gateway holds or does; a fleet-wide one
(a rollout's devices, the shared image directory) comes from one gateway
only, so that the sum over the gateways -- what Grafana's dashboard
(etc/grafana/smpgw-fleet.json) and Prometheus' sum() do -- is the fleet's
true count, while a rollout runs and once it is completed:
smpgw_device_info (one series per watch), smpgw_rollout_devices (the
rollout's watches), smpgw_jobs (the rollout's jobs), smpgw_images."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import NEEDS, check, executables, log, rooms, session, wait_for  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pg'))
from pg_server import lease_holder as holder  # noqa: E402

ROOMS = ('g1', 'g2')
N = 4
HOME = ('g1', 'g2', 'g1', 'g2')
IMAGE = 'app-1.2.3+4-ecdsa-p256.bin'
SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def samples(gw, name):
    """[(labels text, value)] of one family in the gateway's /metrics."""
    st, text = gw.request('GET', '/api/v1/metrics', raw=True)
    check(st == 200, 'GET /api/v1/metrics on %s' % gw.dir)
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m.group(1) == name:
            out.append((m.group(2) or '', float(m.group(3))))
    return out


def fleet_sum(gws, name, match=''):
    """Prometheus' sum(name{...}) over the gateways: per gateway and in all."""
    per = {r: sum(v for lab, v in samples(gw, name) if match in lab)
           for r, gw in gws.items()}
    return sum(per.values()), per


def fleet_count(gws, name):
    per = {r: len(samples(gw, name)) for r, gw in gws.items()}
    return sum(per.values()), per


def assert_sums(gws, rid, when):
    total, per = fleet_count(gws, 'smpgw_device_info')
    check(total == N, '%s: count(smpgw_device_info) over the gateways is the fleet, %d '
          '(per gateway %s)' % (when, N, per))
    total, per = fleet_sum(gws, 'smpgw_rollout_devices', 'rollout="%s"' % rid)
    check(total == N, '%s: sum(smpgw_rollout_devices{rollout=%s}) over the gateways is %d, '
          'the rollout\'s watches, reported once (per gateway %s)' % (when, rid, N, per))
    total, per = fleet_sum(gws, 'smpgw_images')
    check(total == 1, '%s: sum(smpgw_images) over the gateways is the one shared image '
          '(per gateway %s)' % (when, per))


def main():
    if not os.environ.get('SMPGW_TEST_PG'):
        print('1..0 # SKIP needs SMPGW_TEST_PG (run through tests/pg/pg_server.py)')
        sys.exit(77)
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        _, _, conf = executables()
        images = os.path.join(wd, 'images')  # the shared image directory
        os.mkdir(images)
        per_device = []
        for k in range(N):
            other = [r for r in ROOMS if r != HOME[k]][0]
            per_device.append({'heard': {HOME[k]: -45, other: -75},
                               'flash': {'program_page_us': 3000}})
        fleet, gws = rooms(wd, run, ROOMS, per_device,
                           extra=['[ble]', 'idle_timeout = 3s', '[images]', 'dir = ' + images])
        for gw in gws.values():
            gw.start()
        names = ['PineTime-%d' % (k + 1) for k in range(N)]
        addr = {n: fleet.id(n) for n in names}
        wait_for('every watch held by its home room', lambda: all(
            holder(addr[n]) == HOME[k] for k, n in enumerate(names)), timeout=60, step=0.5)
        wait_for('the holders to manage them', lambda: all(
            addr[n] in [d['id'] for d in gws[HOME[k]].get('/api/v1/devices')['devices']
                        if 'view' not in d]
            for k, n in enumerate(names)), timeout=30, step=0.5)

        img = gws['g1'].upload_image(conf, IMAGE)
        ro = gws['g1'].post('/api/v1/rollouts', {
            'image': img['id'], 'target': 'all', 'mode': 'test-confirm',
            'waves': {'canary': 1, 'size': 0, 'success_percent': 100},
            'max_concurrent': 1}, expect=201)
        rid = ro['id']
        check(ro.get('scheduler') == 'g1', 'rollout %s scheduled by g1' % rid)
        assert_sums(gws, rid, 'while it runs')

        def completed():
            return gws['g2'].rollout(rid)['state'] == 'completed'
        wait_for('the rollout to complete', completed, timeout=240, step=1)
        assert_sums(gws, rid, 'completed')
        total, per = fleet_sum(gws, 'smpgw_jobs', 'state="done"')
        check(total == N, 'completed: sum(smpgw_jobs{state="done"}) over the gateways is %d, '
              'one job per watch, counted by the gateway that ran it (per gateway %s)'
              % (N, per))
        check(all(v == 2 for v in per.values()), 'each gateway ran its own 2 watches\' jobs')
        log('metrics summed over the gateways: the fleet, counted once')


if __name__ == '__main__':
    main()
