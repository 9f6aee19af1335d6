#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Jobs and rollouts across gateways (issue 17 part 3, docs/multi-gateway.md):
three smpgwd (g1, g2, g3) on one real PostgreSQL server and one simulator
that plays each room's bluetoothd (smpgw-sim --bus per room), eight watches
each heard by all three rooms at different RSSI, spread over the gateways.

One rollout (canary 1, waves of 2, 100 % success to go on, no failure
allowed, 2 at once) is made on g1, which schedules it; the other gateways'
watches get queued job rows that their holders claim and run. Mid-wave the
scheduler's host dies (kill -9, its radio off): another gateway takes the
scheduling over and the dead host's watches move. A person pauses and
resumes the rollout on the gateway that does not schedule it. Then the host
of a gateway running a job mid-upload dies too; the last gateway goes on.
One watch never passes its post-boot self-check: its job fails wherever it
runs and the stop rule (no failure allowed) pauses the rollout before its
last wave; resumed, it completes.

Asserted from the simulator's own counters and the store: every watch ends
running the image confirmed, confirmed exactly once, never a confirm of an
image that had not booted, no more bytes written into its slot than the
image plus a resume overlap; one job per watch, each claimed by at most the
gateways its watch passed through; at no moment more than 2 devices of the
rollout under way, and no wave started before the previous one succeeded."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import (NEEDS, check, executables, host_dies, log, rooms,  # noqa: E402
                           session, wait_for)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pg'))
from pg_server import lease_holder as holder, test_sql as sql  # noqa: E402

ROOMS = ('g1', 'g2', 'g3')
N = 8
# PineTime-k is best heard in room HOME[k-1] (waves span the gateways) and
# by the other two worse, so a dead room's watches move to the next best.
HOME = ('g1', 'g2', 'g3', 'g1', 'g2', 'g3', 'g2', 'g3')
# PineTime-7 (wave 3 of 4) never passes its post-boot self-check: its
# confirm is refused, its job fails ([update] self_check_timeout), the stop
# rule (no failure allowed) pauses the rollout before wave 4 (PineTime-8).
FAILING = 'PineTime-7'
IMAGE = 'app-3.1.0+7-350k-ecdsa-p256.bin'
FRAME = 2475  # the simulated watch's buf_size: one upload chunk at most
MAX_CONCURRENT = 2


def heard(k):
    home = HOME[k]
    others = [r for r in ROOMS if r != home]
    return {home: -45, others[0]: -65 - 3 * k, others[1]: -75 - 2 * k}


def scheduler(gw, rid):
    return gw.rollout(rid).get('scheduler')


def running_jobs(gw):
    return [j for j in gw.jobs() if j['state'] == 'running' and j.get('rollout')]


def main():
    if not os.environ.get('SMPGW_TEST_PG'):
        print('1..0 # SKIP needs SMPGW_TEST_PG (run through tests/pg/pg_server.py)')
        sys.exit(77)
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        _, _, conf = executables()
        images = os.path.join(wd, 'images')  # the shared image directory
        os.mkdir(images)
        fleet, gws = rooms(wd, run, ROOMS, [
            dict({'heard': heard(k), 'flash': {'program_page_us': 3000}},
                 **({'self_check_ms': 86400000} if k == 6 else {})) for k in range(N)],
            # quick to idle: a watch connected to its holder is not heard
            # by the other rooms (one central)
            extra=['[ble]', 'idle_timeout = 3s', '[images]', 'dir = ' + images,
                   '[update]', 'self_check_timeout = 3s'])
        for gw in gws.values():
            gw.start()
        names = ['PineTime-%d' % (k + 1) for k in range(N)]
        addr = {n: fleet.id(n) for n in names}
        wait_for('every watch held by its home room', lambda: all(
            holder(addr[n]) == HOME[k] for k, n in enumerate(names)), timeout=60, step=0.5)
        wait_for('the holders to manage them', lambda: all(
            addr[n] in [d['id'] for d in gws[HOME[k]].get('/api/v1/devices')['devices']
                        if 'view' not in d]  # managed there, not another's view
            for k, n in enumerate(names)), timeout=30, step=0.5)

        img = gws['g1'].upload_image(conf, IMAGE)
        size = img['size']
        ro = gws['g1'].post('/api/v1/rollouts', {
            'image': img['id'], 'target': 'all', 'mode': 'test-confirm',
            'waves': {'canary': 1, 'size': 2, 'success_percent': 100},
            'stop': {'max_failures': 0}, 'max_concurrent': MAX_CONCURRENT,
            'retry_interval_s': 2}, expect=201)
        rid = ro['id']
        check(ro['devices'] == N and ro.get('scheduler') == 'g1',
              'rollout %s of %d watches made on g1, which schedules it (%s)'
              % (rid, N, {k: ro.get(k) for k in ('devices', 'scheduler', 'state')}))
        check(gws['g3'].rollout(rid)['id'] == rid, 'g3 serves it from the store')

        # Mid-wave 1 (PineTime-2 on g2, PineTime-3 on g3): g1's host dies.
        def wave1_uploading():
            return any(j['progress']['bytes'] > 30000 and j['device'] in
                       (addr['PineTime-2'], addr['PineTime-3'])
                       for j in running_jobs(gws['g2']))
        wait_for('wave 1 to be uploading', wave1_uploading, timeout=180, step=0.3)
        t0 = time.monotonic()
        host_dies(gws['g1'])
        new = wait_for('another gateway to schedule the rollout', lambda: (
            lambda s: s if s in ('g2', 'g3') else None)(scheduler(gws['g2'], rid)),
            timeout=60, step=0.5)
        log('%s schedules %s %.1f s after g1 died' % (new, rid, time.monotonic() - t0))
        check('rollout %s: scheduled by %s (taken over from g1)' % (rid, new)
              in gws[new].read_log(), '%s took the rollout over from g1' % new)
        other = 'g3' if new == 'g2' else 'g2'

        # A person on the gateway that does not schedule it pauses and resumes.
        st, body = gws[other].request('POST', '/api/v1/rollouts/%s/pause' % rid, {})
        check(st == 202 and body['command'] == 'pause' and body['scheduler'] == new,
              'pause on %s is asked of %s (202, command pending)' % (other, new))
        wait_for('the scheduler to pause it', lambda: gws[other].rollout(rid)['state']
                 == 'paused', timeout=30, step=0.3)
        check(gws[other].rollout(rid)['command'] is None, '%s acted on it: paused' % new)
        st, body = gws[other].request('POST', '/api/v1/rollouts/%s/resume' % rid, {})
        check(st == 202, 'resume on %s is asked too' % other)
        wait_for('the scheduler to resume it', lambda: gws[other].rollout(rid)['state']
                 in ('running', 'completed'), timeout=30, step=0.3)

        # Then the host of the gateway that runs a job but does not schedule
        # the rollout dies mid-upload.
        def victim_uploading():
            if gws[other].rollout(rid)['state'] == 'completed':
                raise AssertionError('the rollout completed before a job ran on %s' % other)
            return any(j['progress']['bytes'] > 30000 and j['runner'] == other
                       for j in running_jobs(gws[other]))
        wait_for('a job uploading on %s' % other, victim_uploading, timeout=240, step=0.3)
        host_dies(gws[other])
        log('%s died mid-upload' % other)

        def settled():
            x = gws[new].rollout(rid)
            t = x['totals']
            return x if t['submitting'] + t['running'] == 0 and \
                x['state'] in ('paused', 'completed') else None
        r = wait_for('the rollout to settle', settled, timeout=400, step=1)
        check(r['state'] == 'paused' and 'failure' in (r.get('reason') or '') and
              r['totals'].get('updated') == N - 2 and r['totals'].get('failed') == 1 and
              r['totals'].get('pending') == 1,
              'the stop rule paused it on %s (%s): %d updated, %s failed (%s)'
              % (new, r.get('reason'), N - 2, FAILING, r['totals']))
        bad = [d for d in r['device_list'] if d['device'] == addr[FAILING]][0]
        check(bad['state'] == 'failed' and 'self-check' in (bad.get('error') or ''),
              '%s failed: %s' % (FAILING, bad.get('error')))
        c = fleet.show(FAILING)['counters']
        check(c['confirms'] == 0 and c['confirms_unbooted'] == 0 and
              c['upload_bytes'] <= size + 4 * FRAME,
              '%s: its image was never confirmed (the watch refused), %d bytes written'
              % (FAILING, c['upload_bytes']))
        gws[new].post('/api/v1/rollouts/%s/resume' % rid, {})
        r = wait_for('the rollout to complete', lambda: (lambda x: x if x['state'] in
                     ('completed', 'paused') else None)(gws[new].rollout(rid)),
                     timeout=120, step=1)
        check(r['state'] == 'completed' and r['totals'].get('updated') == N - 1,
              'resumed, it completed: wave 4 too (%s)' % r['totals'])

        # Every other watch: the image runs confirmed, confirmed once, never
        # an unbooted one.
        for n in [x for x in names if x != FAILING]:
            s = fleet.show(n)
            c = s['counters']
            check(any(sl.get('hash') == img['id'] and sl.get('confirmed') and sl.get('active')
                      for sl in s.get('slots') or []), '%s runs the image confirmed' % n)
            check(c['confirms'] == 1 and c['confirms_unbooted'] == 0,
                  '%s: one confirm, none of an unbooted image (%d, %d)'
                  % (n, c['confirms'], c['confirms_unbooted']))
            check(size <= c['upload_bytes'] <= size + 4 * FRAME,
                  '%s: %d bytes written for a %d-byte image (resume overlap %d)'
                  % (n, c['upload_bytes'], size, c['upload_bytes'] - size))

        # The store: one job per watch, each run by the gateways its watch
        # passed through, never two at once (a claim is taken only after
        # the previous one lapsed or was let go).
        rows = sql("SELECT device_id || ' ' || count(*) || ' ' || max(runners) FROM jobs"
                   " WHERE rollout_id = '%s' GROUP BY device_id" % rid).split('\n')
        check(len(rows) == N and all(x.split()[1] == '1' for x in rows),
              'one job per watch (%s)' % rows)
        for x in rows:
            dev, _, runners = x.split()
            k = list(addr.values()).index(dev)
            chain = runners.split(',')
            check(len(chain) == len(set(chain)) and set(chain[:-1]) <= {'g1', other},
                  'the job of %s was run by %s: a gateway after another only when that'
                  ' one died' % (names[k], runners))
        log('from a job row queued to its start on the holder: %s ms' % sql(
            "SELECT string_agg((started - created)::text, ' ' ORDER BY id) FROM jobs"
            " WHERE rollout_id = '%s'" % rid))
        jobs_views = [sorted(j['id'] for j in gws[new].jobs())]
        check(all(j.get('runner') for j in gws[new].jobs() if j.get('rollout') == rid),
              'every job of the rollout names its runner in GET /api/v1/jobs')
        log('jobs: %s' % jobs_views)

        # Globally: never more than max_concurrent under way, waves in order.
        devs = sql("SELECT wave || ' ' || started_ms || ' ' || finished_ms FROM"
                   " rollout_devices WHERE rollout_id = '%s'" % rid).split('\n')
        iv = [tuple(int(v) for v in d.split()) for d in devs]
        for w, s, f in iv:
            under = sum(1 for w2, s2, f2 in iv if s2 <= s < f2)
            check(under <= MAX_CONCURRENT, 'at most %d under way when a wave-%d device started'
                  ' (%d)' % (MAX_CONCURRENT, w, under))
        for w in range(1, max(x[0] for x in iv) + 1):
            prev_done = max(f for w2, s, f in iv if w2 == w - 1)
            first = min(s for w2, s, f in iv if w2 == w)
            check(first >= prev_done, 'wave %d started after wave %d succeeded (%d ms later)'
                  % (w, w - 1, first - prev_done))


def claims():
    """Claiming a job row (docs/multi-gateway.md, "claims"), with another
    claimer holding the row: a second session (standing in for another
    gateway in the middle of its claim) has the row of a queued job locked
    when g1's claim round comes: g1 skips it (FOR UPDATE SKIP LOCKED) and
    goes on serving (its REST API answers, its lease is renewed), and claims
    and runs the job once the lock is gone. Then corrupted rows: a job
    claimed a year ahead by a gateway that does not exist, and a rollout
    scheduled by it, are void: g1 claims them."""
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        _, _, conf = executables()
        images = os.path.join(wd, 'images')
        os.mkdir(images)
        fleet, gws = rooms(wd, run, ('g1', 'g2'), [{'heard': {'g1': -50, 'g2': -70}}],
                           extra=['[ble]', 'idle_timeout = 3s', '[images]', 'dir = ' + images])
        for gw in gws.values():
            gw.start()
        a = fleet.id('PineTime-1')
        g1 = gws['g1']
        wait_for('A held by g1', lambda: holder(a) == 'g1', timeout=40, step=0.5)
        img = g1.upload_image(conf, IMAGE)

        # A cancel asked on a gateway that does not run the job: written to
        # the row, done by the runner.
        jid0 = g1.post('/api/v1/devices/%s/update' % a, {'image': img['id']}, expect=202)['id']
        wait_for('job %d to upload on g1' % jid0, lambda: g1.get('/api/v1/jobs/%d' % jid0)
                 ['progress']['bytes'] > 20000, timeout=60, step=0.3)
        st, body = gws['g2'].request('DELETE', '/api/v1/jobs/%d' % jid0)
        check(st == 200 and body.get('cancel_requested') is True and body['runner'] == 'g1',
              'a cancel on g2 is asked of the runner g1 (%d, %s)' % (st, body.get('state')))
        j = wait_for('g1 to cancel it', lambda: (lambda x: x if x['state'] != 'running'
                     else None)(gws['g2'].get('/api/v1/jobs/%d' % jid0)), timeout=20, step=0.2)
        check(j['state'] == 'canceled' and j['runners'] == ['g1'],
              'g1 canceled job %d mid-upload (%s)' % (jid0, j['state']))
        # ... and one nobody runs (its watch is held by no gateway) is
        # canceled in the store at once.
        now = int(time.time() * 1000)
        jid1 = int(sql("INSERT INTO jobs (device_id, image_id, mode, state, phase, created,"
                       " updated) VALUES ('C0:FF:EE:00:00:77', '%s', 'upload', 'queued',"
                       " 'queued', %d, %d) RETURNING id" % (img['id'], now, now)).split()[0])
        st, body = gws['g2'].request('DELETE', '/api/v1/jobs/%d' % jid1)
        check(st == 200 and body['state'] == 'canceled' and body['runner'] is None,
              'a queued job nobody runs is canceled by g2 in the store at once')
        now = int(time.time() * 1000)
        # One psql session: the queued row (committed), then its lock held
        # for 8 s, as another gateway's claim transaction would.
        locker = subprocess.Popen(
            ['psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d',
             os.environ['SMPGW_TEST_PG']], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        run.defer(lambda: locker.poll() is None and locker.kill())
        locker.stdin.write(
            "INSERT INTO jobs (device_id, image_id, mode, state, phase, created, updated)"
            " VALUES ('%s', '%s', 'upload', 'queued', 'queued', %d, %d);\n"
            "BEGIN; SELECT id FROM jobs WHERE device_id = '%s' AND state = 'queued'"
            " FOR UPDATE;\n"
            "SELECT 'locked';\nSELECT pg_sleep(8);\nROLLBACK;\n"
            % (a, img['id'], now, now, a))
        locker.stdin.close()
        jid = int(wait_for('the row to be locked', lambda: sql(
            "SELECT id FROM jobs WHERE device_id = '%s' AND state = 'queued'" % a) or None,
            timeout=10, step=0.1))
        t0 = time.monotonic()
        renewals = set()
        while time.monotonic() - t0 < 6:
            t = time.monotonic()
            st, _ = g1.request('GET', '/api/v1/devices')
            check(st == 200 and time.monotonic() - t < 2, 'g1 answers while the row is locked'
                  ' (%d in %.1f s)' % (st, time.monotonic() - t))
            renewals.add(sql("SELECT expires_ms FROM leases WHERE device_id = '%s'" % a))
            row = sql("SELECT state || ' ' || coalesce(runner, '-') FROM jobs WHERE id = %d"
                      % jid)
            check(row == 'queued -', 'job %d stays queued and unclaimed while locked' % jid)
            time.sleep(1)
        check(len(renewals) >= 2, "g1 renewed A's lease meanwhile (%d values)" % len(renewals))
        locker.wait(timeout=30)
        done = wait_for('g1 to claim and finish the job', lambda: (lambda j: j if j['state']
                        not in ('queued', 'running') else None)(g1.get('/api/v1/jobs/%d' % jid)),
                        timeout=120, step=0.5)
        check(done['state'] == 'done' and done['runners'] == ['g1'],
              'then g1 claimed it and ran it: %s, runners %s' % (done['state'], done['runners']))
        check(gws['g2'].get('/api/v1/jobs/%d' % jid)['state'] == 'done',
              'g2 reads the same job from the store')

        # A job claimed a year ahead by a ghost: void, claimed by the holder.
        year = int(time.time() * 1000) + 365 * 86400 * 1000
        jid2 = int(sql(
            "INSERT INTO jobs (device_id, image_id, mode, state, phase, created, updated,"
            " runner, runner_expires, runners) VALUES ('%s', '%s', 'upload', 'running',"
            " 'upload', %d, %d, 'ghost', %d, 'ghost') RETURNING id"
            % (a, img['id'], now, now, year)).split()[0])
        done = wait_for('g1 to claim the ghost\'s job', lambda: (lambda j: j if j['state']
                        not in ('queued', 'running') else None)(g1.get('/api/v1/jobs/%d' % jid2)),
                        timeout=60, step=0.5)
        check(done['state'] == 'done' and done['runners'] == ['ghost', 'g1'],
              'a claim a year ahead is void: g1 ran job %d (%s, runners %s)'
              % (jid2, done['state'], done['runners']))
        c = fleet.show('PineTime-1')['counters']
        check(c['upload_bytes'] <= img['size'] + 4 * FRAME, 'the image was written once (%d'
              ' bytes, the canceled upload resumed): the second job found it in the slot'
              % c['upload_bytes'])

        # A rollout scheduled by the ghost a year ahead: a real gateway takes
        # it over. Its window opens in two hours (it waits: nothing else
        # changes it meanwhile). Made on g2: the image g1 stored in the
        # shared directory is known there.
        start = time.gmtime(time.time() + 7200)
        end = time.gmtime(time.time() + 10800)
        ro = gws['g2'].post('/api/v1/rollouts', {
            'image': img['id'], 'target': 'all', 'mode': 'upload',
            'window': {'start': time.strftime('%H:%M', start), 'end': time.strftime('%H:%M', end),
                       'timezone': 'UTC'}}, expect=201)
        check(ro['state'] == 'waiting', 'a rollout made on g2 waits for its window')
        sql("UPDATE rollouts SET owner = 'ghost', owner_expires = %d WHERE id = '%s'"
            % (year, ro['id']))
        r = wait_for('a gateway to schedule the rollout again', lambda: (
            lambda x: x if x.get('scheduler') in ('g1', 'g2') else None)(g1.rollout(ro['id'])),
            timeout=30, step=0.5)
        check(True, 'a rollout claimed a year ahead by a ghost is void: %s schedules it'
              % r['scheduler'])
        st, body = gws[r['scheduler']].request('POST', '/api/v1/rollouts/%s/cancel' % ro['id'], {})
        check(st == 200 and body['state'] == 'canceled',
              'and acts on it: canceled by its scheduler (%d %s)' % (st, body.get('state')))


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'claims':
        if not os.environ.get('SMPGW_TEST_PG'):
            print('1..0 # SKIP needs SMPGW_TEST_PG (run through tests/pg/pg_server.py)')
            sys.exit(77)
        claims()
    else:
        main()
