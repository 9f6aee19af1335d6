#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Rollouts through the real smpgwd and REST against 50 simulated watches:
a canary of 5, waves of 10; three watches whose flash never finishes an
erase fail their jobs, the third failure passes the stop rule and the
rollout pauses itself before wave 3 (each wave needs 100 % of the one
before); nothing new starts while paused; resume (which acknowledges the
failures) finishes it. Then the report (JSON and text), events, retry-failed
once the bad watches are repaired, a cancel while jobs run (nothing left
half done), the refusals, and bad requests."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import (Events, Fleet, Gateway, check, executables, log, session,  # noqa: E402
                           wait_for)

N = 50
BAD = ['PineTime-16', 'PineTime-17', 'PineTime-18']  # wave 2 (positions 15..17)
FAILURES = ('failed', 'rolled_back', 'lost')


def wave_gate(r, wave, need):
    """Wave `wave` started only after `need` devices of wave-1 succeeded."""
    devs = r['device_list']
    prev = sorted(d['finished_ms'] for d in devs
                  if d['wave'] == wave - 1 and d['state'] == 'updated')
    starts = [d['started_ms'] for d in devs if d['wave'] == wave and d['started_ms']]
    if not starts:
        return
    check(len(prev) >= need and min(starts) >= prev[need - 1],
          'wave %d started after %d successes of wave %d' % (wave, need, wave - 1))


def run_to_pause(gw, rid):
    max_running = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = gw.rollout(rid)
        running = sum(1 for d in r['device_list'] if d['state'] in ('running', 'submitting'))
        max_running = max(max_running, running)
        if r['state'] != 'running':
            return r, max_running
        time.sleep(0.1)
    raise TimeoutError('rollout did not pause')


def test_threshold(fleet, gw, image, ev):
    for name in BAD:
        fleet.fault(name, 'slow_flash', factor=1000)
    spec = {'name': 'fleet 0.9.0', 'image': image['id'], 'target': 'all',
            'waves': {'canary': 5, 'size': 10, 'success_percent': 100},
            'stop': {'max_failures': 2}, 'max_concurrent': 10,
            'retry_interval_s': 1, 'probe_timeout_ms': 800}
    r = gw.post('/api/v1/rollouts', spec, expect=201)
    rid = r['id']
    check(r['state'] == 'running' and r['devices'] == N, 'created, running, 50 devices')
    check([w['size'] for w in r['waves']] == [5, 10, 10, 10, 10, 5], 'waves 5,10,10,10,10,5')
    r, max_running = run_to_pause(gw, rid)
    check(r['state'] == 'paused', 'paused itself (%s)' % r['reason'])
    check('3 failures' in (r['reason'] or ''), 'reason: the third failure passed the limit')
    failed = sorted(d['device'] for d in r['device_list'] if d['state'] in FAILURES)
    check(failed == sorted(BAD), 'exactly the three bad watches failed: %s' % failed)
    check(max_running <= 10, 'never more than 10 at once (%d)' % max_running)
    wave_gate(r, 1, 5)
    wave_gate(r, 2, 10)
    later = [d['device'] for d in r['device_list'] if d['wave'] >= 3 and d['attempts']]
    check(not later, 'paused before wave 3: none of its devices tried')
    started = {d['device'] for d in r['device_list'] if d['attempts']}
    wait_for('running jobs to finish', lambda: not any(
        d['state'] in ('running', 'submitting') for d in gw.rollout(rid)['device_list']),
        timeout=30)
    time.sleep(2)
    r = gw.rollout(rid)
    check(r['state'] == 'paused', 'stays paused')
    check({d['device'] for d in r['device_list'] if d['attempts']} == started,
          'nothing started while paused (%d devices started)' % len(started))
    status, body = gw.request('POST', '/api/v1/rollouts/%s/pause' % rid, {})
    check(status == 409, 'pause of a paused rollout: 409')
    r = gw.post('/api/v1/rollouts/%s/resume' % rid)
    check(r['state'] == 'running', 'resumed')
    check(all(d['acknowledged'] for d in r['device_list'] if d['state'] in FAILURES),
          'resume acknowledged the failures')
    wait_for('the rollout to complete',
             lambda: gw.rollout(rid)['state'] == 'completed', timeout=90, step=0.2)
    r = gw.rollout(rid)
    t = r['totals']
    check(t['updated'] == N - 3 and sum(t[f] for f in FAILURES) == 3,
          'completed: 47 updated, 3 failed/lost')
    return rid


def check_watches(fleet, gw, image, rid):
    jobs = [j for j in gw.jobs() if j.get('rollout') == rid]
    per = {}
    for j in jobs:
        per.setdefault(j['device'], []).append(j)
    check(all(len(v) == 1 for v in per.values()) and len(per) == N,
          'one job per device, none twice (%d jobs)' % len(jobs))
    for name in fleet.names():
        s = fleet.show(name)
        slot0 = s['slots'][0]
        if name in BAD:
            # Lost while its flash crawled: whatever it runs, the new image
            # was never confirmed on it (MCUboot reverts at the next reset).
            assert not (slot0['hash'] == image['id'] and slot0['confirmed']), (name, slot0)
            continue
        assert slot0['hash'] == image['id'] and slot0['confirmed'] and slot0['active'], \
            (name, slot0)
        assert s['counters']['resets'] == 1, (name, s['counters'])
    check(True, 'every updated watch runs the image, confirmed, after one reset; '
          'none of the failed ones has it confirmed')


def test_report(gw, rid):
    rep = gw.get('/api/v1/rollouts/%s/report' % rid)
    o = rep['outcomes']
    check(o['updated'] == N - 3 and sum(o[f] for f in FAILURES) == 3 and o['total'] == N,
          'report totals: %s' % {k: v for k, v in o.items() if v})
    bad = [d for d in rep['device_report'] if d['outcome'] in FAILURES]
    check(len(bad) == 3 and all(d['reason'] for d in bad), 'every failure has a reason')
    good = [d for d in rep['device_report'] if d['outcome'] == 'updated']
    check(all(d['from_version'] == '1.0.0+0' and d['duration_s'] is not None for d in good),
          'updated devices: from 1.0.0, with timings')
    status, text = gw.request('GET', '/api/v1/rollouts/%s/report?format=text' % rid, raw=True)
    check(status == 200 and '47 updated' in text and
          all(d['device'] in text for d in bad), 'text report')
    status, text2 = gw.request('GET', '/api/v1/rollouts/%s/report.txt' % rid, raw=True)
    check(status == 200 and text2.splitlines()[0] == text.splitlines()[0], 'report.txt')
    log(text.replace('\n', '\n# '))


def test_retry(fleet, gw, rid):
    status, _ = gw.request('POST', '/api/v1/rollouts/%s/resume' % rid, {})
    check(status == 409, 'resume of a completed rollout: 409')
    for name in BAD:
        fleet.fault(name, 'clear')
        fleet.ctl({'cmd': 'reboot', 'device': name})
    wait_for('the repaired watches to boot', lambda: all(
        fleet.show(n)['up'] for n in BAD), timeout=20)
    r = gw.post('/api/v1/rollouts/%s/retry-failed' % rid)
    check(r['state'] == 'running' and r['totals']['pending'] == 3,
          'retry-failed: running again, 3 pending')
    wait_for('the retried watches', lambda: gw.rollout(rid)['state'] == 'completed',
             timeout=60, step=0.2)
    r = gw.rollout(rid)
    check(r['totals']['updated'] == N, 'all 50 updated after the retry')
    devs = {d['device']: d for d in r['device_list']}
    check(all(devs[n]['attempts'] == 2 for n in BAD), 'the retried ones: second attempt')
    jobs = [j for j in gw.jobs() if j.get('rollout') == rid]
    check(len(jobs) == N + 3, 'one more job for each retried watch, none for the others')
    for name in BAD:
        slot0 = fleet.show(name)['slots'][0]
        assert slot0['confirmed'] and slot0['version'] == '0.9.0', (name, slot0)
    check(True, 'the retried watches run the image, confirmed')


def test_cancel(fleet, gw, conf_dir):
    image = gw.upload_image(conf_dir, 'app-1.0.0-hash.bin')
    r = gw.post('/api/v1/rollouts', {'image': image['id'], 'target': 'all',
                                     'max_concurrent': 5}, expect=201)
    rid = r['id']
    wait_for('jobs under way', lambda: gw.rollout(rid)['totals']['running'] >= 3,
             timeout=20, step=0.05)
    r = gw.post('/api/v1/rollouts/%s/cancel' % rid)
    check(r['state'] == 'canceled', 'canceled while jobs ran')
    wait_for('the running jobs to end', lambda: not any(
        d['state'] in ('pending', 'running', 'submitting')
        for d in gw.rollout(rid)['device_list']), timeout=30)
    devs = gw.rollout(rid)['device_list']
    check(all(d['state'] in ('canceled', 'updated') for d in devs) and
          sum(d['state'] == 'canceled' for d in devs) >= N - 5,
          'every watch canceled (or updated if its confirm had gone out)')
    for d in devs:
        slot0 = fleet.show(d['device'])['slots'][0]
        if d['state'] == 'canceled':
            assert not (slot0['hash'] == image['id'] and slot0['confirmed']), (d, slot0)
    check(True, 'no canceled watch has the new image confirmed')
    for action in ('pause', 'resume', 'cancel', 'retry-failed'):
        status, _ = gw.request('POST', '/api/v1/rollouts/%s/%s' % (rid, action), {})
        check(status == 409, '%s of a canceled rollout: 409' % action)
    status, _ = gw.request('GET', '/api/v1/rollouts/ro-999')
    check(status == 404, 'unknown rollout: 404')
    lst = gw.get('/api/v1/rollouts')
    check(lst['count'] == 2 and lst['rollouts'][0]['id'] == rid, 'list, newest first')


def test_bad_requests(gw, image):
    img = image['id']
    cases = [
        ({'target': 'all'}, 'no image'),
        ({'image': '00' * 32, 'target': 'all'}, 'unknown image'),
        ({'image': img}, 'no target'),
        ({'image': img, 'target': 'all', 'bogus': 1}, 'unknown member'),
        ({'image': img, 'target': {'devices': ['nope']}}, 'unknown device'),
        ({'image': img, 'target': {'name': 'Bangle-*'}}, 'nothing matches'),
        ({'image': img, 'target': 'all', 'window': {'start': '25:00', 'end': '03:00'}},
         'bad window'),
        ({'image': img, 'target': 'all',
          'window': {'start': '02:00', 'end': '03:00', 'timezone': 'Mars/Base'}}, 'bad zone'),
        ({'image': img, 'target': 'all', 'waves': {'success_percent': 101}}, 'bad percent'),
        ({'image': img, 'target': 'all', 'mode': 'confirm'}, 'confirm mode'),
        ({'image': img, 'target': 'all', 'max_concurrent': 0}, 'no concurrency'),
    ]
    for body, what in cases:
        status, out = gw.request('POST', '/api/v1/rollouts', body)
        check(status == 400 and out.get('detail'), 'refused (%s): %s' % (what, out.get('detail')))
    status, _ = gw.request('POST', '/api/v1/rollouts', b'[1', ctype='application/json')
    check(status == 400, 'malformed JSON refused')
    check(gw.get('/api/v1/rollouts')['count'] == 0, 'no rollout created by bad requests')


def test_events(ev, rid):
    states = [(e['data']['previous'], e['data']['state']) for e in ev.of('rollout.state')
              if e['data']['rollout'] == rid]
    check((None, 'running') in states and ('running', 'paused') in states and
          ('paused', 'running') in states and ('running', 'completed') in states,
          'rollout.state events: %s' % states)
    devs = ev.of('rollout.device')
    check(len([e for e in devs if e['data']['state'] == 'updated']) == N - 3,
          'a rollout.device event per update')
    check(ev.of('rollout.progress'), 'rollout.progress events')


def main():
    with session() as (wd, run):
        gw_exe, sim_exe, conf_dir = executables()
        fleet = run.start(Fleet(wd, sim_exe, N))
        gw = run.add(Gateway(wd, gw_exe, fleet))
        gw.start()
        image = gw.upload_image(conf_dir)
        test_bad_requests(gw, image)
        ev = Events(gw)
        try:
            rid = test_threshold(fleet, gw, image, ev)
            time.sleep(0.5)
        finally:
            ev.stop()
        test_events(ev, rid)
        check_watches(fleet, gw, image, rid)
        test_report(gw, rid)
        test_retry(fleet, gw, rid)
        test_cancel(fleet, gw, conf_dir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
