#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A nightly rollout (02:00-03:00 Europe/Berlin) with the daemon's clock
injected (--time-offset-ms): one watch already runs the image (up to date,
no upload); three watches are out of range when it starts;
one comes back later in the same window and is updated; one comes back
after the window closed and waits for the next night; one never comes back
and, after two windows, is reported as not seen. Restarts (SIGTERM and
kill -9) move the clock; the windows open and close by the daemon's own
timers. Then targets by name and version glob (excluded watches) and
"outdated" (up to date without a job)."""
import datetime
import os
import sys
import time
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import Fleet, Gateway, check, executables, log, session, wait_for  # noqa: E402

N = 8
OUT = ['PineTime-6', 'PineTime-7', 'PineTime-8']
TZ = ZoneInfo('Europe/Berlin')


def local_ms(day, hh, mm, ss):
    t = datetime.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=TZ)
    return int(t.timestamp() * 1000)


def start_at(gw, target_ms):
    """Starts smpgwd so that its clock reads target_ms now."""
    gw.start(time_offset_ms=target_ms - int(time.time() * 1000))


def dev(gw, rid, name):
    return next(d for d in gw.rollout(rid)['device_list'] if d['device'] == name)


def state_is(gw, rid, state):
    return gw.rollout(rid)['state'] == state


def window_run(fleet, gw, image, day):
    nxt = day + datetime.timedelta(days=1)
    start_at(gw, local_ms(day, 2, 0, 10))
    spec = {'name': 'nightly', 'image': image['id'], 'target': 'all',
            'window': {'start': '02:00', 'end': '03:00', 'timezone': 'Europe/Berlin'},
            'max_concurrent': 8, 'retry_interval_s': 1, 'probe_timeout_ms': 300,
            'expire_after_windows': 2}
    rid = gw.post('/api/v1/rollouts', spec, expect=201)['id']
    wait_for('4 watches updated', lambda: gw.rollout(rid)['totals']['updated'] == 4,
             timeout=30, step=0.2)
    r = gw.rollout(rid)
    check(r['state'] == 'running', 'inside the window: running')
    check(dev(gw, rid, 'PineTime-5')['state'] == 'up_to_date' and
          not [j for j in gw.jobs() if j['device'] == 'PineTime-5'],
          'PineTime-5 already ran the image: up to date, no job')
    wait_for('three watches tried and not seen', lambda: gw.get(
        '/api/v1/rollouts/%s/report' % rid)['outcomes']['not_seen'] == 3, timeout=10)
    check(True, 'three watches not seen (yet)')

    fleet.range('PineTime-6', True)
    wait_for('PineTime-6 updated later in the window',
             lambda: dev(gw, rid, 'PineTime-6')['state'] == 'updated', timeout=20, step=0.2)
    check(True, 'PineTime-6 came back in the window and was updated')

    gw.kill9()
    start_at(gw, local_ms(day, 2, 59, 57))
    wait_for('the window to close', lambda: state_is(gw, rid, 'waiting'), timeout=10)
    r = gw.rollout(rid)
    check(r['windows_done'] == 1 and r['reason'] == 'window ended',
          'window closed by its timer at 03:00 Berlin (kill -9 before)')
    fleet.range('PineTime-7', True)
    time.sleep(3)
    check(dev(gw, rid, 'PineTime-7')['state'] == 'pending' and
          state_is(gw, rid, 'waiting'), 'PineTime-7 back outside the window: not touched')
    check(not [j for j in gw.jobs() if j['device'] == 'PineTime-7'], 'no job for it')

    gw.stop()
    start_at(gw, local_ms(nxt, 1, 59, 57))
    check(state_is(gw, rid, 'waiting'), '01:59:57 next night: waiting')
    wait_for('the next window', lambda: state_is(gw, rid, 'running'), timeout=10)
    wait_for('PineTime-7 updated in the next window',
             lambda: dev(gw, rid, 'PineTime-7')['state'] == 'updated', timeout=20, step=0.2)
    check(True, 'next window opened at 02:00 Berlin; PineTime-7 updated')

    gw.stop()
    start_at(gw, local_ms(nxt, 2, 59, 57))
    wait_for('the rollout to expire', lambda: state_is(gw, rid, 'completed'), timeout=10)
    r = gw.rollout(rid)
    check(r['windows_done'] == 2 and dev(gw, rid, 'PineTime-8')['state'] == 'not_seen',
          'after two windows PineTime-8 is not seen; rollout completed')
    rep = gw.get('/api/v1/rollouts/%s/report' % rid)
    o = rep['outcomes']
    check(o['updated'] == 6 and o['up_to_date'] == 1 and o['not_seen'] == 1,
          'report: 6 updated, 1 up to date, 1 not seen')
    status, text = gw.request('GET', '/api/v1/rollouts/%s/report.txt' % rid, raw=True)
    check('6 updated' in text and '1 up_to_date' in text and '1 not_seen' in text and
          'Europe/Berlin' in text, 'text report')
    log(text.replace('\n', '\n# '))
    jobs = [j for j in gw.jobs() if j.get('rollout') == rid]
    check(len(jobs) == 6 and len({j['device'] for j in jobs}) == 6,
          'six jobs, one per updated watch')


def targets(fleet, gw, image, conf_dir):
    other = gw.upload_image(conf_dir, 'app-1.0.0-hash.bin')
    r = gw.post('/api/v1/rollouts', {'image': other['id'], 'window': 'now',
                                     'target': {'name': 'PineTime-[1-4]', 'version': '1.0.*'},
                                     'retry_interval_s': 1, 'probe_timeout_ms': 300},
                expect=201)
    check(sorted(d['device'] for d in r['device_list']) ==
          ['PineTime-1', 'PineTime-2', 'PineTime-3', 'PineTime-4'], 'name glob: 4 watches')
    wait_for('the version filter', lambda: state_is(gw, r['id'], 'completed'), timeout=15)
    t = gw.rollout(r['id'])['totals']
    check(t['excluded'] == 4, 'they run 0.9.0, not 1.0.*: all excluded')
    check(not [j for j in gw.jobs() if j.get('rollout') == r['id']], 'no job')
    r = gw.post('/api/v1/rollouts', {'image': image['id'], 'target': 'outdated',
                                     'retry_interval_s': 1, 'probe_timeout_ms': 300},
                expect=201)
    wait_for('7 up to date', lambda: gw.rollout(r['id'])['totals']['up_to_date'] == 7,
             timeout=15)
    check(dev(gw, r['id'], 'PineTime-8')['state'] == 'pending', 'outdated: the unseen one waits')
    gw.post('/api/v1/rollouts/%s/cancel' % r['id'])
    t = gw.rollout(r['id'])['totals']
    check(t['canceled'] == 1 and t['up_to_date'] == 7, 'canceled: 7 up to date, 1 canceled')
    check(not [j for j in gw.jobs() if j.get('rollout') == r['id']], 'no job for outdated')


def main():
    day = datetime.datetime.now(TZ).date() + datetime.timedelta(days=1)
    with session() as (wd, run):
        gw_exe, sim_exe, conf_dir = executables()
        preloaded = {'image': os.path.join(conf_dir, 'images', 'app-0.9.0-3k-hash.bin')}
        fleet = run.start(Fleet(wd, sim_exe, N, per_device=[{}, {}, {}, {}, preloaded]))
        for name in OUT:
            fleet.range(name, False)
        gw = run.start(Gateway(wd, gw_exe, fleet))
        image = gw.upload_image(conf_dir)
        gw.stop()
        window_run(fleet, gw, image, day)
        targets(fleet, gw, image, conf_dir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
