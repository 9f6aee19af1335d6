#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The typed device model over the BLE path (issue 15 parts 1, 2, 5): the
real smpgwd discovers simulated watches through the simulator playing
bluetoothd on a private bus. Without a single connection the advertising
record gives every watch its firmware version, hash prefix and battery;
fleet filters work on that; last_seen moves per advertisement while the
store is written at most once a minute; after an update the device shows
hex hashes and canonical versions; /metrics carries the per-watch series."""
import json
import os
import re
import sqlite3
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import (NEEDS, Fleet, Gateway, check, executables, session,  # noqa: E402
                           wait_for)

N = 4
BATTERY = [90, 15, 50, 100]
UPDATE = 'app-1.2.3+4-ecdsa-p256.bin'


def names(gw, query):
    return sorted(d['name'] for d in gw.get('/api/v1/devices?' + query)['devices'])


def adv_only(gw, fleet):
    devs = gw.get('/api/v1/devices')['devices']
    check(len(devs) == N and all(d['link_state'] == 'down' and d['counters']['connects'] == 0
                                 for d in devs), 'no watch was ever connected')
    for d in devs:
        i = int(d['name'].split('-')[1]) - 1
        a = d['advertised']
        assert a and a['record_version'] == 1 and a['version'] == '1.0.0+0', d
        assert a['version_text'] == '1.0.0' and re.fullmatch('[0-9a-f]{8}', a['hash_prefix']), a
        assert a['battery'] == BATTERY[i] and d['battery'] == BATTERY[i], d
        assert a['update_state'] == 'idle' and a['self_check_ok'] and not a['charging'], a
        assert a['age_s'] >= 0 and a['seen_at'] > 0, a
        fw = d['firmware']
        assert fw['source'] == 'advertising' and fw['version'] == '1.0.0+0', fw
        assert fw['hash'] == a['hash_prefix'] and d['slots'] is None, d
        assert d['slots_age_s'] is None and d['advertising']['manufacturer'], d
    check(True, 'version, hash prefix, battery and state from advertising alone')
    every = sorted(fleet.names())
    for q in ('version=1.0.0', 'version=1.0.0.0', 'version=' + urllib.parse.quote('1.0.0+0'),
              'version=1.0.0+0', 'hash=' + devs[0]['advertised']['hash_prefix'].upper()):
        check(names(gw, q) == every, '?%s: the whole fleet' % q)
    check(names(gw, 'battery_below=50') == ['PineTime-2'], '?battery_below=50')
    check(names(gw, 'battery_below=101') == every, '?battery_below=101: every known battery')
    check(names(gw, 'version=1.2.3%2B4') == [], '?version=1.2.3+4: none yet')
    for q in ('battery_below=-1', 'version=1.x', 'colour=red'):
        status, body = gw.request('GET', '/api/v1/devices?' + q)
        check(status == 400 and body['status'] == 400 and q.split('=')[0] in body['detail'],
              '?%s: 400 naming the parameter (%s)' % (q, body['detail']))


def store_last_seen(gw, dev_id):
    db = sqlite3.connect('file:%s/smpgw.db?mode=ro' % gw.state, uri=True, timeout=5)
    try:
        row = db.execute('SELECT last_seen FROM devices WHERE id = ?', (dev_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def seen_moves(gw):
    d0 = gw.get('/api/v1/devices/PineTime-1')
    stored = store_last_seen(gw, d0['id'])
    wait_for('last_seen to move with the advertising', lambda: gw.get(
        '/api/v1/devices/PineTime-1')['last_seen'] >= d0['last_seen'] + 2500,
        timeout=30, step=0.5)
    d1 = gw.get('/api/v1/devices/PineTime-1')
    check(d1['advertised']['seen_at'] > d0['advertised']['seen_at'],
          'the record is refreshed per advertisement')
    check(store_last_seen(gw, d0['id']) == stored,
          'the store was not written per advertisement (%s < %s)' % (stored, d1['last_seen']))


def update_one(gw, fleet, conf_dir):
    image = gw.upload_image(conf_dir, UPDATE)
    job = gw.post('/api/v1/devices/PineTime-3/update', {'image': image['id']}, expect=202)
    wait_for('the update', lambda: gw.get('/api/v1/jobs/%d' % job['id'])['state']
             in ('done', 'failed', 'rolled_back'), timeout=120, step=0.5)
    job = gw.get('/api/v1/jobs/%d' % job['id'])
    check(job['state'] == 'done', 'PineTime-3 updated (%s)' % job.get('error'))
    d = gw.get('/api/v1/devices/PineTime-3')
    s0 = next(s for s in d['slots'] if s['active'])
    check(s0['hash'] == image['id'] and s0['version'] == '1.2.3+4' == image['version'] and
          s0['version_text'] == '1.2.3.4', 'slot: hex hash and canonical version, as the image')
    check(d['firmware']['version'] == '1.2.3+4' and
          d['firmware']['hash'].startswith(image['id'][:8]), 'firmware: the new image')
    check(names(gw, 'version=1.2.3%2B4') == ['PineTime-3'], '?version=1.2.3+4 finds it')
    check(names(gw, 'version=1.2.3.4') == ['PineTime-3'], '?version=1.2.3.4 finds it')
    check(names(gw, 'hash=' + image['id']) == ['PineTime-3'], '?hash=<full> finds it')
    jobs = gw.get('/api/v1/jobs?device=PineTime-3')['jobs']
    check('$bytes' not in str(jobs) and '$bytes' not in str(d), 'no $bytes in typed answers')
    # a connected watch does not advertise, and smpgwd keeps an idle link
    # while no other watch waits: a restarted smpgwd (no connection) learns
    # the new image from advertising alone
    rc = gw.stop()
    check(rc == 0, 'smpgwd stopped cleanly (exit %r)' % rc)
    gw.start()
    wait_for('the new record advertised', lambda: (gw.get(
        '/api/v1/devices/PineTime-3').get('advertised') or {}).get('version') == '1.2.3+4',
        timeout=90, step=0.5)
    d = gw.get('/api/v1/devices/PineTime-3')
    check(d['link_state'] == 'down', 'restarted: not connected')
    check(d['slots'] and d['slots_age_s'] > d['advertised']['age_s'],
          'the slots from before the restart, older than the advertising')
    check(d['advertised']['hash_prefix'] == image['id'][:8], 'advertised hash prefix')
    check(d['firmware']['source'] == 'advertising' and d['firmware']['version'] == '1.2.3+4',
          'firmware: from advertising, the new image')
    check(names(gw, 'version=1.2.3%2B4') == ['PineTime-3'], '?version=1.2.3+4 finds it without a connection')
    return image


DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'etc',
                         'grafana', 'smpgw-fleet.json')
# PromQL words that are not series names.
PROMQL_WORDS = {'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or',
                'unless', 'bool', 'offset', 'inf', 'nan'}


def promql_series(expr):
    """The series names a PromQL expression reads: identifiers that are not
    functions, aggregations, keywords, label names or durations."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r'\{[^}]*\}', ' ', e)                          # label matchers
    e = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)',
               ' ', e)                                          # label lists
    e = re.sub(r'\[[^\]]*\]', ' ', e)                          # ranges
    names = set()
    for m in re.finditer(r'[A-Za-z_:][A-Za-z0-9_:]*', e):
        word, rest = m.group(0), e[m.end():].lstrip()
        if rest.startswith('(') or word.lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == '.'):
            continue  # 1e3, 5m
        names.add(word)
    return names


def dashboard_exprs(dash):
    out = []
    for p in dash['panels']:
        out += [t['expr'] for t in p.get('targets', []) if t.get('expr')]
        for sub in p.get('panels', []):
            out += [t['expr'] for t in sub.get('targets', []) if t.get('expr')]
    return out


def samples(text):
    """{series name: [(labels dict, value)]} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = re.fullmatch(r'([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, 'malformed metrics line: %r' % line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ''))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def metrics_check(gw, fleet, image):
    # a rollout (PineTime-3 already runs the image: up to date at once)
    r = gw.post('/api/v1/rollouts', {'image': image['id'],
                                     'target': {'devices': [fleet.id('PineTime-3')]}},
                expect=201)
    wait_for('the rollout to finish', lambda: gw.rollout(r['id'])['finished_ms'],
             timeout=60, step=0.3)
    devs = {d['id']: d for d in gw.get('/api/v1/devices')['devices']}
    status, text = gw.request('GET', '/metrics', raw=True)
    assert status == 200, text
    s = samples(text)
    info = {lb['name']: lb for lb, v in s['smpgw_device_info'] if v == 1}
    check(sorted(info) == sorted(fleet.names()), 'smpgw_device_info: one per watch')
    check(info['PineTime-3']['version'] == '1.2.3+4' and info['PineTime-1']['version'] ==
          '1.0.0+0', 'smpgw_device_info: canonical versions')
    ids = {lb['device']: lb['name'] for lb in info.values()}
    bat = {ids[lb['device']]: v for lb, v in s['smpgw_device_battery_percent']}
    check(bat == {'PineTime-%d' % (i + 1): b for i, b in enumerate(BATTERY)},
          'smpgw_device_battery_percent per watch')
    # a watch's RSSI is unknown while bluetoothd has none (e.g. connected)
    rssi = {lb['device']: v for lb, v in s['smpgw_device_rssi_dbm']}
    check(rssi == {i: d['rssi'] for i, d in devs.items() if d['rssi'] is not None} and
          len(rssi) >= N - 1, 'smpgw_device_rssi_dbm: as the device JSON: %s' % rssi)
    now = time.time()
    check(all(now - 120 < v <= now + 5 for _, v in s['smpgw_device_last_seen_timestamp_seconds'])
          and len(s['smpgw_device_last_seen_timestamp_seconds']) == N,
          'smpgw_device_last_seen_timestamp_seconds: recent')
    rng = {lb['device']: v for lb, v in s['smpgw_device_in_range']}
    check(rng == {i: float(d['present']) for i, d in devs.items()},
          'smpgw_device_in_range: as the devices\' present')
    links = s['smpgw_device_link_state']
    check(len(links) == 3 * N and sum(v for _, v in links) == N,
          'smpgw_device_link_state: one state of three set per watch')
    jobs = {lb['state']: v for lb, v in s['smpgw_jobs']}
    check(jobs.get('done', 0) >= 1 and 'queued' in jobs and 'failed' in jobs,
          'smpgw_jobs by state: %s' % jobs)
    ro = {lb['outcome']: v for lb, v in s['smpgw_rollout_devices'] if lb['rollout'] == r['id']}
    check(sum(ro.values()) == 1, 'smpgw_rollout_devices: %s' % ro)
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = dashboard_exprs(dash)
    check(len(exprs) >= 10, 'the dashboard has its %d queries' % len(exprs))
    used = set()
    for e in exprs:
        names = promql_series(e)
        assert names, 'no series in %r' % e
        for n in names:
            assert n in s, 'dashboard query %r names %s, which smpgwd does not export' % (e, n)
        used |= names
    check(used <= FLEET_SERIES, 'built only on the fleet series: %s' % sorted(used))
    check(used == FLEET_SERIES, 'and uses every one of them')


FLEET_SERIES = {'smpgw_device_info', 'smpgw_device_battery_percent', 'smpgw_device_rssi_dbm',
                'smpgw_device_last_seen_timestamp_seconds', 'smpgw_device_link_state',
                'smpgw_device_in_range',
                'smpgw_jobs', 'smpgw_rollout_devices'}


def main():
    fast = {'link': {'conn_interval_us': 7500, 'phy': 2},
            'flash': {'erase_sector_us': 2000, 'program_page_us': 20,
                      'progressive_erase': True}}
    per = [dict(fast, battery_pct=b) for b in BATTERY]
    with session(need=NEEDS + ('dbus-daemon',), tail_lines=80) as (wd, run):
        gw_exe, sim_exe, conf_dir = executables()
        fleet = run.start(Fleet(wd, sim_exe, N, per_device=per, transport='ble'))
        gw = run.start(Gateway(wd, gw_exe, fleet))
        wait_for('the watches advertising', lambda: len([
            d for d in gw.get('/api/v1/devices')['devices'] if d['advertised']]) == N,
            timeout=60, step=0.3)
        adv_only(gw, fleet)
        seen_moves(gw)
        image = update_one(gw, fleet, conf_dir)
        metrics_check(gw, fleet, image)
        rc = gw.stop()
        check(rc == 0, 'smpgwd stopped cleanly (exit %r)' % rc)
    return 0


if __name__ == '__main__':
    sys.exit(main())
