#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kill -9 of smpgwd at random moments of rollouts (at least 20 times),
each followed by a restart on the same state directory. In the end every
rollout is complete and correct: each watch runs the image, confirmed,
after exactly one reset per rollout (booted it once, never updated twice),
with exactly one job per rollout, and no watch is forgotten.

Then the narrow windows a random kill rarely hits, made on purpose by
editing the stopped daemon's database as a crash would leave it: a device
recorded as "submitting" whose job the engine has (adopted, not run
again); one whose job never became durable (back to pending: the probe
finds the image running, no second job); one whose job the engine does not
know (the same)."""
import os
import random
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import Fleet, Gateway, check, executables, log, session, wait_for  # noqa: E402

N = 30
KILLS = 20
IMAGES = ['app-0.9.0-3k-hash.bin', 'app-1.0.0-hash.bin']


def create(gw, image):
    spec = {'image': image['id'], 'target': 'all',
            'waves': {'canary': 3, 'size': 9, 'success_percent': 100},
            'max_concurrent': 6, 'retry_interval_s': 1, 'probe_timeout_ms': 500}
    return gw.post('/api/v1/rollouts', spec, expect=201)['id']


def state(gw, rid):
    try:
        return gw.rollout(rid)['state']
    except (OSError, RuntimeError):
        return None


def kill_loop(gw, conf_dir, rng):
    """Kills and restarts smpgwd at random moments until KILLS kills hit
    running rollouts and the last one completed. Returns the rollouts."""
    done = []
    images = list(IMAGES)
    image = gw.upload_image(conf_dir, images.pop(0))
    rid = create(gw, image)
    kills = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        st = state(gw, rid)
        if st == 'completed':
            done.append((rid, image))
            if kills >= KILLS or not images:
                return done, kills
            image = gw.upload_image(conf_dir, images.pop(0))
            rid = create(gw, image)
            log('second rollout %s after %d kills' % (rid, kills))
            continue
        if st != 'running':
            raise AssertionError('%s is %s after %d kills' % (rid, st, kills))
        time.sleep(rng.uniform(0.05, 0.9))
        gw.kill9()
        kills += 1
        gw.start()
    raise TimeoutError('rollouts did not complete: %d kills' % kills)


def verify(fleet, gw, done, n_kills):
    check(n_kills >= KILLS, '%d kill -9 during rollouts' % n_kills)
    jobs = gw.jobs()
    for rid, image in done:
        r = gw.rollout(rid)
        states = {d['state'] for d in r['device_list']}
        check(r['state'] == 'completed' and states == {'updated'},
              '%s: completed, every watch updated (%s)' % (rid, r['totals']))
        mine = [j for j in jobs if j.get('rollout') == rid]
        per = {}
        for j in mine:
            per.setdefault(j['device'], []).append(j['state'])
        check(sorted(per) == sorted(fleet.names()) and
              all(v == ['done'] for v in per.values()),
              '%s: exactly one job per watch, all done' % rid)
    image = done[-1][1]
    for name in fleet.names():
        s = fleet.show(name)
        slot0 = s['slots'][0]
        assert slot0['hash'] == image['id'] and slot0['active'] and slot0['confirmed'], \
            (name, slot0)
        assert s['counters']['resets'] == len(done), (name, s['counters'])
    check(True, 'every watch runs the last image, confirmed, after exactly %d reset(s)'
          % len(done))


def crash_windows(fleet, gw, done):
    rid, image = done[-1]
    jobs = {j['device']: j['id'] for j in gw.jobs() if j.get('rollout') == rid}
    n_jobs = len(gw.jobs())
    gw.stop()
    db = sqlite3.connect(os.path.join(gw.state, 'smpgw.db'))
    with db:
        q = 'UPDATE rollout_devices SET state = ?, job_id = ? WHERE rollout_id = ? AND device_id = ?'
        db.execute(q, ('submitting', 0, rid, 'PineTime-1'))           # engine has job
        db.execute(q, ('submitting', jobs['PineTime-2'], rid, 'PineTime-2'))  # no newer job
        db.execute(q, ('running', 999999, rid, 'PineTime-3'))         # job unknown
        db.execute("UPDATE rollouts SET state = 'running', finished_ms = 0 WHERE id = ?", (rid,))
    db.close()
    gw.start()
    wait_for('the rollout to complete again', lambda: state(gw, rid) == 'completed', timeout=20)
    devs = {d['device']: d for d in gw.rollout(rid)['device_list']}
    check(devs['PineTime-1']['state'] == 'updated' and
          devs['PineTime-1']['job_id'] == jobs['PineTime-1'],
          'submitting with a durable job: the job adopted')
    check(devs['PineTime-2']['state'] == 'up_to_date', 'submitting without a job: '
          'probed, the image runs: up to date')
    check(devs['PineTime-3']['state'] == 'up_to_date', 'running with a job the engine '
          'does not know: probed, up to date')
    check(len(gw.jobs()) == n_jobs, 'no new job')
    for name in ('PineTime-1', 'PineTime-2', 'PineTime-3'):
        assert fleet.show(name)['counters']['resets'] == len(done), name
    check(True, 'no watch reset again')


def main():
    seed = int(os.environ.get('ROLLOUT_KILL_SEED', str(int(time.time()))))
    log('seed %d (ROLLOUT_KILL_SEED to replay)' % seed)
    rng = random.Random(seed)
    with session() as (wd, run):
        gw_exe, sim_exe, conf_dir = executables()
        fleet = run.start(Fleet(wd, sim_exe, N, boot_ms=300))
        gw = run.add(Gateway(wd, gw_exe, fleet))
        gw.start()
        done, kills = kill_loop(gw, conf_dir, rng)
        verify(fleet, gw, done, kills)
        crash_windows(fleet, gw, done)
    return 0


if __name__ == '__main__':
    sys.exit(main())
