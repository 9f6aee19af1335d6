#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Faults of the shared store between gateways (issue 17, "Done when": bad
input and faults give clear errors and lose nothing; docs/multi-gateway.md,
"Faults"). Three smpgwd (g1, g2, g3) on one real PostgreSQL server
(tests/pg/pg_server.py) and one simulator playing each room's bluetoothd;
every watch heard by every room at the same RSSI.

- two gateways claiming at once: in each of ROUNDS rounds the three
  gateways start at the same instant and race for two watches (leases), a
  queued job row written straight into the store (job claims, FOR UPDATE
  SKIP LOCKED) and a paused rollout nobody schedules (scheduler
  ownership): one holder, one runner, one scheduler, asserted from the
  rows, the logs and the simulator's counters (one upload, one confirm);
- corrupted rows in every table the gateways share (hearings, leases,
  jobs, rollouts, gateways, device_views, cluster_events, udp_ports),
  written with psql: garbage JSON, times far ahead or negative, unknown
  gateways, impossible values, a huge text: the gateways keep running,
  say so in their log, the row is void or repaired, the other watches
  are served as before;
- a gateways row for a dead gateway with a live-looking URL: requests for
  its watch fail at once (502) or get the answer of whoever is at that URL;
- the database unreachable at start (exit 1, libpq's message) and for a
  while under running gateways: REST answers at once (503 where the answer
  needs the store), the events of the outage reach the others afterwards
  and a rollout under way completes;
- three rollouts made at the same instant on three gateways: distinct ids,
  all complete."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pg'))
from rollout_fleet import (NEEDS, Gateway, check, executables, log, rooms,  # noqa: E402
                           session, wait_for)
from pg_server import PgServer, lease_holder as holder, test_sql as sql  # noqa: E402

ROOMS = ('g1', 'g2', 'g3')
ROUNDS = 3
N = 2 * ROUNDS + 2  # per round a watch with a job row and one with a rollout; 2 spare
IMAGE = 'app-0.9.0-3k-hash.bin'
TTL_MS = 6000       # [gateway] lease_ttl here: rounds every 2 s
YEAR_MS = 365 * 86400 * 1000


def now_ms():
    return int(time.time() * 1000)


def q(s):
    return "'" + s.replace("'", "''") + "'"


def start_all(gws):
    """The gateways started at the same instant (one thread each)."""
    errs = []

    def one(gw):
        try:
            gw.start()
        except Exception as e:  # noqa: BLE001 -- reported below
            errs.append(e)
    ts = [threading.Thread(target=one, args=(gw,)) for gw in gws.values()]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    if errs:
        raise errs[0]


def stop_all(gws):
    for gw in gws.values():
        gw.stop()


def managed_by(gws, dev):
    """The gateways that manage dev themselves (listed without "view")."""
    return sorted(name for name, gw in gws.items() if gw.proc and gw.proc.poll() is None and
                  any(d['id'] == dev and 'view' not in d
                      for d in gw.get('/api/v1/devices')['devices']))


def logs_since(gws, marks):
    return {n: gw.read_log()[marks.get(n, 0):] for n, gw in gws.items()}


def marks_of(gws):
    return {n: len(gw.read_log()) for n, gw in gws.items()}


def counters(fleet, name):
    return dict(fleet.show(name)['counters'])


def claims_at_once(fleet, gws, conf, addr):
    """ROUNDS rounds of three gateways starting together."""
    g1 = gws['g1']
    g1.start()
    wait_for('g1 to meet every watch', lambda: int(sql('SELECT count(*) FROM devices')) == N,
             timeout=60, step=0.5)
    img = g1.upload_image(conf, IMAGE)
    for k in range(N):
        fleet.range('PineTime-%d' % (k + 1), False)
    wait_for('g1 to let the watches go', lambda: not any(holder(a) for a in addr.values()),
             timeout=60, step=0.5)
    # A paused rollout per round for its watch (out of range: nothing starts).
    rids = []
    for r in range(ROUNDS):
        y = addr['PineTime-%d' % (2 * r + 2)]
        ro = g1.post('/api/v1/rollouts', {
            'image': img['id'], 'target': {'devices': [y]}, 'mode': 'test-confirm',
            'retry_interval_s': 1}, expect=201)
        g1.post('/api/v1/rollouts/%s/pause' % ro['id'])
        rids.append(ro['id'])
    check(all(g1.rollout(x)['state'] == 'paused' for x in rids),
          '%d paused rollouts made on g1' % ROUNDS)
    g1.stop()
    check(sql("SELECT count(*) FROM rollouts WHERE owner_expires > %d" % now_ms()) == '0',
          'g1 stopped cleanly: nobody schedules them')

    for r in range(ROUNDS):
        xn, yn = 'PineTime-%d' % (2 * r + 1), 'PineTime-%d' % (2 * r + 2)
        x, y, rid = addr[xn], addr[yn], rids[r]
        fleet.range(xn, True)
        fleet.range(yn, True)
        t = now_ms()
        jid = int(sql("INSERT INTO jobs (device_id, image_id, mode, state, phase, created,"
                      " updated) VALUES (%s, %s, 'test-confirm', 'queued', 'queued', %d, %d)"
                      " RETURNING id" % (q(x), q(img['id']), t, t)))
        before = {n: counters(fleet, n) for n in (xn, yn)}
        marks = marks_of(gws)
        start_all(gws)
        log('round %d: g1, g2, g3 started together' % (r + 1))
        for dev in (x, y):
            wait_for('one gateway to hold and manage %s' % dev, lambda: (
                lambda h: h and managed_by(gws, dev) == [h])(holder(dev)), timeout=60, step=0.5)
        sched = wait_for('one gateway to schedule %s' % rid, lambda: g1.rollout(rid).get(
            'scheduler'), timeout=30, step=0.5)
        other = next(n for n in ROOMS if n != sched)
        st, body = gws[other].request('POST', '/api/v1/rollouts/%s/resume' % rid, {})
        check(st in (200, 202), 'round %d: %s scheduled by %s, resumed on %s (%d)'
              % (r + 1, rid, sched, other, st))

        def job_done():
            s = sql('SELECT state FROM jobs WHERE id = %d' % jid)
            return s if s not in ('queued', 'running') else None
        check(wait_for('job %d to finish' % jid, job_done, timeout=120, step=0.5) == 'done',
              'round %d: the job row written into the store ran: done' % (r + 1))
        ro = wait_for('%s to complete' % rid, lambda: (
            lambda v: v if v['state'] in ('completed', 'canceled') else None)(g1.rollout(rid)),
            timeout=120, step=0.5)
        check(ro['state'] == 'completed' and ro['totals'].get('updated') == 1,
              'round %d: %s completed (%s)' % (r + 1, rid, ro['totals']))
        text = logs_since(gws, marks)
        for dev in (x, y):
            h = holder(dev)
            gained = {n: t.count('lease: %s now held by' % dev) for n, t in text.items()}
            check(sum(gained.values()) == 1 and gained[h] == 1 and managed_by(gws, dev) == [h],
                  'round %d: %s held by %s only, claimed once, never moved (%s)'
                  % (r + 1, dev, h, gained))
        runners = sql('SELECT runners FROM jobs WHERE id = %d' % jid)
        check(runners == holder(x), 'round %d: job %d claimed once, by the holder (%s)'
              % (r + 1, jid, runners))
        yr = sql("SELECT runners FROM jobs WHERE rollout_id = %s" % q(rid))
        check(yr == holder(y), "round %d: the rollout's job claimed once (%s)" % (r + 1, yr))
        sch = {n: t.count('rollout %s: scheduled by' % rid) for n, t in text.items()}
        check(sum(sch.values()) == 1 and sch[sched] == 1,
              'round %d: one gateway took %s (%s)' % (r + 1, rid, sch))
        for n in (xn, yn):
            c = counters(fleet, n)
            d = {k: c[k] - before[n][k] for k in ('upload_bytes', 'confirms',
                                                    'confirms_unbooted')}
            check(d['confirms'] == 1 and d['confirms_unbooted'] == 0 and
                  d['upload_bytes'] == img['size'], 'round %d: %s: one upload (%d bytes), one'
                  ' confirm, none unbooted (%s)' % (r + 1, n, img['size'], d))
        stop_all(gws)
        fleet.range(xn, False)
        fleet.range(yn, False)
    return img


def corrupted_rows(fleet, gws, img, addr):
    """Garbage in every shared table: no crash, a clear log line, the row
    void or repaired, the other watches unaffected."""
    wn, vn = 'PineTime-%d' % (N - 1), 'PineTime-%d' % N
    w, v = addr[wn], addr[vn]
    fleet.range(wn, True)
    fleet.range(vn, True)
    marks = marks_of(gws)
    start_all(gws)
    for dev in (w, v):
        wait_for('%s held and managed' % dev, lambda: (
            lambda h: h and managed_by(gws, dev) == [h])(holder(dev)), timeout=60, step=0.5)
    hw, hv = holder(w), holder(v)
    acq_v = sql('SELECT acquired_ms FROM leases WHERE device_id = %s' % q(v))
    t = now_ms()
    huge = "repeat('x', 1048576)"  # SQL: a 1 MiB text
    sql(";".join([
        # hearings: far ahead, at an impossible RSSI, long ago, by nobody known
        "INSERT INTO hearings VALUES ('ghost', %s, 0, %d)" % (q(v), t + YEAR_MS),
        "INSERT INTO hearings VALUES ('ghost2', %s, 9999, %d)" % (q(v), t),
        "INSERT INTO hearings VALUES ('ghost3', %s, -40, -5)" % q(v),
        "INSERT INTO hearings VALUES (repeat('x', 2000), %s, -40, %d)" % (q(w), t - YEAR_MS),
        # leases of watches nobody has, far ahead, negative, a huge holder
        "INSERT INTO leases VALUES ('C0:FF:EE:DE:AD:01', 'ghost', %d, -5)" % (t + YEAR_MS),
        "INSERT INTO leases VALUES ('C0:FF:EE:DE:AD:02', %s, -1, -1)" % huge,
        "INSERT INTO devices (id, name, transport) VALUES ('C0:FF:EE:DE:AD:01', 'Ghost-1',"
        " 'ble'), ('C0:FF:EE:DE:AD:02', %s, 'carrier-pigeon')" % huge,
        # jobs: a row of unknown words, a job of an image nobody has
        "INSERT INTO jobs (device_id, image_id, mode, state, phase, created, updated, size)"
        " VALUES (%s, 'not-an-image', 'sideways', 'bogus', 'nowhere', -1, %d, -7)" % (q(v), t),
        "INSERT INTO jobs (device_id, image_id, mode, state, phase, created, updated)"
        " VALUES (%s, %s, 'upload', 'queued', 'queued', %d, %d)" % (q(v), q('0' * 64), t, t),
        # a job whose image id is a path: never opened, a corrupted row
        "INSERT INTO jobs (device_id, image_id, mode, state, phase, created, updated)"
        " VALUES (%s, %s, 'upload', 'queued', 'queued', %d, %d)"
        % (q(v), q('../images/' + img['id']), t, t),
        # gateways: no URL, not a URL, seen a year ahead, long id, huge URL
        "INSERT INTO gateways VALUES ('ghost', NULL, %d, %d), ('ghost2', 'not a url', -1, %d),"
        " ('future', 'http://127.0.0.1:1', %d, %d), (repeat('y', 2000), %s, 0, %d)"
        % (t, t, t, t, t + YEAR_MS, huge, t),
        # device_views: garbage JSON, a JSON array, a huge object, a view of nobody
        "INSERT INTO device_views VALUES ('C0:FF:EE:DE:AD:01', 'ghost', '{{{', %d),"
        " ('C0:FF:EE:DE:AD:02', 'ghost', %s, -1), ('nobody', 'ghost', '[1,2]', %d)"
        % (t, '\'{"pad": "\' || %s || \'"}\'' % huge, t + YEAR_MS),
        # cluster_events: not JSON, not an object, a huge type, times far off
        "INSERT INTO cluster_events (gateway, type, json, time_ms) VALUES"
        " ('ghost', 'device.added', '{{{', %d), ('ghost', 'job.result', '[1]', -1),"
        " ('ghost', %s, '{}', %d), ('ghost', 'device.updated', '{\"id\": 7}', %d)"
        % (t, huge, t + YEAR_MS, t),
        # udp_ports: a port of a device nobody has, the lowest port
        "INSERT INTO udp_ports VALUES ('ghost-device', 65000, 1), ('C0:FF:EE:DE:AD:01', 1, 0)",
    ]))
    # jobs: a claim a year ahead by nobody known on W's queued job
    wj = sql("INSERT INTO jobs (device_id, image_id, mode, state, phase, created, updated,"
             " runner, runner_expires, runners) VALUES (%s, %s, 'test-confirm', 'queued',"
             " 'queued', %d, %d, 'ghost', %d, 'ghost') RETURNING id"
             % (q(w), q(img['id']), t, t, t + YEAR_MS))
    # rollouts: one whose spec is not JSON, with an unknown command, scheduled
    # a year ahead by nobody known
    sql("INSERT INTO rollouts (id, image_id, spec, state, created_ms, owner, owner_expires,"
        " command) VALUES ('ro-bad', %s, '{{{', 'running', %d, 'ghost', %d, 'bogus')"
        % (q(img['id']), t, t + YEAR_MS))
    st, ro = gws['g2'].request('POST', '/api/v1/rollouts', {
        'image': img['id'], 'target': {'devices': [w]}, 'mode': 'test-confirm'})
    check(st == 201, 'a rollout for %s made on g2' % w)
    gws['g2'].post('/api/v1/rollouts/%s/pause' % ro['id'])
    sql("UPDATE rollouts SET owner = 'ghost', owner_expires = %d, command = 'bogus'"
        " WHERE id = %s" % (now_ms() + YEAR_MS, q(ro['id'])))
    log('corrupted rows written')

    # W's job claimed a year ahead by nobody known: void, run by W's holder.
    wait_for('W\'s holder to claim the job from "ghost"', lambda: sql(
        'SELECT state FROM jobs WHERE id = %s' % wj) == 'done', timeout=90, step=0.5)
    check(sql('SELECT runners FROM jobs WHERE id = %s' % wj) == 'ghost,' + hw,
          'a job claim a year ahead is void: %s claimed and ran the job (ghost,%s)' % (hw, hw))
    # The rollout scheduled a year ahead by nobody known: a gateway takes it.
    sched = wait_for('a gateway to take %s from "ghost"' % ro['id'], lambda: (
        lambda s: s if s in ROOMS else None)(gws['g3'].rollout(ro['id']).get('scheduler')),
        timeout=30, step=0.5)
    check(True, 'a rollout claim a year ahead is void: %s schedules %s' % (sched, ro['id']))
    wait_for('the unknown command to be dropped', lambda: gws['g3'].rollout(
        ro['id'])['command'] is None, timeout=20, step=0.5)
    # The job of an image nobody has: failed with a reason.
    bad = sql("SELECT state || ' ' || coalesce(error, '') FROM jobs WHERE device_id = %s"
              " AND image_id = %s" % (q(v), q('0' * 64)))
    bad = wait_for('the job of a missing image to end', lambda: (
        lambda s: s if not s.startswith(('queued', 'running')) else None)(sql(
            "SELECT state || ' ' || coalesce(error, '') FROM jobs WHERE device_id = %s"
            " AND image_id = %s" % (q(v), q('0' * 64)))), timeout=60, step=0.5)
    check(bad.startswith('failed ') and len(bad) > 8, 'a job of an image nobody has fails'
          ' with a reason: %s' % bad)
    bad = wait_for('the job whose image id is a path to end', lambda: (
        lambda s: s if not s.startswith(('queued', 'running')) else None)(sql(
            "SELECT state || ' ' || coalesce(error, '') FROM jobs WHERE device_id = %s"
            " AND image_id LIKE '../%%'" % q(v))), timeout=60, step=0.5)
    check(bad == 'failed corrupted job row: image id is not a valid image id',
          'a job whose image id is a path fails as a corrupted row: %s' % bad)
    check(any('corrupted row in the store: image id' in x
              for x in logs_since(gws, marks).values()),
          'the corrupted job row is logged')
    # devices: the stored record of a watch nobody manages now, garbled;
    # then it comes into range and is managed from that row.
    zn = 'PineTime-1'
    z = addr[zn]
    fleet.range(zn, False)
    wait_for('%s to be let go' % z, lambda: not holder(z) and managed_by(gws, z) == [],
             timeout=60, step=0.5)
    sql("UPDATE devices SET adv = '{\"company\": \"x\", \"data\": 7}', slots ="
        " '[1, \"x\", {\"hash\": 5, \"active\": \"yes\", \"image\": -1}]',"
        " slots_ms = %d, rec_ms = -1, rssi = 9999, last_seen = -5, name = NULL"
        " WHERE id = %s" % (now_ms() + YEAR_MS, q(z)))
    fleet.range(zn, True)
    wait_for('%s held and managed again' % z, lambda: (
        lambda h: h and managed_by(gws, z) == [h])(holder(z)), timeout=60, step=0.5)
    for name, gw in gws.items():
        st, body = gw.request('GET', '/api/v1/devices/%s' % z)
        check(st == 200 and body['id'] == z, '%s: a watch managed from a garbled devices'
              ' row is described (%d)' % (name, st))
        st, body = gw.request('GET', '/api/v1/devices/%s/image-state' % z)
        check(st == 200 and body.get('images'), '%s: its image state is read from the'
              ' watch (%d)' % (name, st))
    # Two more lease rounds: V kept by its holder despite the void hearings.
    time.sleep(2 * TTL_MS / 3000 + 1)
    check(holder(v) == hv and sql('SELECT acquired_ms FROM leases WHERE device_id = %s'
                                  % q(v)) == acq_v and managed_by(gws, v) == [hv],
          'hearings a year ahead or at 9999 dBm are void: %s keeps %s' % (hv, v))
    check(all(gw.proc.poll() is None for gw in gws.values()), 'every gateway still runs')
    for name, gw in gws.items():
        for path in ('/api/v1/devices', '/api/v1/jobs', '/api/v1/rollouts',
                     '/api/v1/gateways', '/api/v1/events/recent?limit=1000'):
            st, body = gw.request('GET', path)
            check(st == 200, '%s: GET %s answers 200' % (name, path))
        devs = {d['id']: d for d in gw.get('/api/v1/devices')['devices']}
        check(devs['C0:FF:EE:DE:AD:01']['held_by'] is None and
              devs['C0:FF:EE:DE:AD:01']['name'] == 'Ghost-1',
              '%s: a lease a year ahead is not a holder; a garbage view gives the row' % name)
        gw_list = {g['id']: g for g in gw.get('/api/v1/gateways')['gateways']}
        check(not gw_list['future']['alive'] and not gw_list['ghost2']['alive'],
              '%s: a gateway "seen" a year ahead is not alive' % name)
        for dev in (w, v):
            st, body = gw.request('POST', '/api/v1/devices/%s/echo' % dev, {'d': name})
            check(st == 200 and body.get('r') == name, '%s: an echo to %s works' % (name, dev))
        st, body = gw.request('GET', '/api/v1/rollouts/ro-bad')
        check(st == 404, '%s: the unreadable rollout is left out (%d)' % (name, st))
    text = logs_since(gws, marks)
    check(any('is not a JSON object' in x for x in text.values()) and
          any('in the store is malformed' in x for x in text.values()),
          'the garbage events (not JSON, a 1 MiB type) are logged and skipped')
    check(all(len(e['type']) < 100 for e in gws['g1'].get(
        '/api/v1/events/recent?limit=1000')['events']), 'no 1 MiB event type is passed on')
    check(any('rollout ro-bad: cannot load it' in x for x in text.values()),
          'the unreadable rollout is logged')
    check(any('unknown command "bogus"' in x for x in text.values()),
          'the unknown command is logged')
    # Nothing lost: the events of W still reach every gateway.
    mark = now_ms()
    gws[hw].request('POST', '/api/v1/devices/%s/reset' % w, {})
    other = next(n for n in ROOMS if n != hw)
    wait_for("%s's events about W on %s after the garbage" % (hw, other), lambda: [
        e for e in gws[other].get('/api/v1/events/recent?limit=1000')['events']
        if e.get('gateway') == hw and e['time_ms'] >= mark - 1000], timeout=20, step=0.5)
    check(True, 'real events still flow past the garbage rows')
    sql("DELETE FROM rollouts WHERE id = 'ro-bad'")
    return w, v, wj


def stale_gateway(gws, w):
    """A gateways row and a lease for a gateway that is gone but looks alive."""
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    dead_url = 'http://127.0.0.1:%d' % s.getsockname()[1]
    s.close()  # nothing listens there any more
    t = now_ms()
    sql(";".join([
        "INSERT INTO devices (id, name, transport) VALUES ('C0:FF:EE:DE:AD:05', 'Stale-1',"
        " 'ble'), ('C0:FF:EE:DE:AD:06', 'Stale-2', 'ble')",
        "INSERT INTO gateways VALUES ('dead', %s, %d, %d), ('dead2', %s, %d, %d)"
        % (q(dead_url), t - 60000, t, q(gws['g2'].base), t - 60000, t),
        "INSERT INTO leases VALUES ('C0:FF:EE:DE:AD:05', 'dead', %d, %d),"
        " ('C0:FF:EE:DE:AD:06', 'dead2', %d, %d)" % (t + TTL_MS, t, t + TTL_MS, t)]))
    t0 = time.monotonic()
    st, body = gws['g1'].request('POST', '/api/v1/devices/C0:FF:EE:DE:AD:05/echo', {'d': 'x'})
    took = time.monotonic() - t0
    check(st == 502 and body['type'].endswith('holder-unreachable') and
          body['held_by'] == 'dead' and took < 3,
          'a dead gateway with a live-looking row: 502 holder-unreachable in %.2f s (%s)'
          % (took, body.get('detail')))
    t0 = time.monotonic()
    st, body = gws['g1'].request('POST', '/api/v1/devices/C0:FF:EE:DE:AD:06/echo', {'d': 'x'})
    took = time.monotonic() - t0
    check(st == 421 and body['held_by'] == 'dead2' and took < 3,
          "a row naming another live gateway's URL: that gateway answers 421 (held by"
          " dead2), not forwarded again, in %.2f s" % took)
    wait_for('the stale leases to lapse', lambda: not holder('C0:FF:EE:DE:AD:05'),
             timeout=TTL_MS / 1000 + 5, step=0.5)
    st, body = gws['g1'].request('POST', '/api/v1/devices/C0:FF:EE:DE:AD:05/echo', {'d': 'x'})
    check(st == 404, 'once the lease lapsed: 404, nobody holds it (%d)' % st)
    st, body = gws['g1'].request('POST', '/api/v1/devices/%s/echo' % w, {'d': 'y'})
    check(st == 200, 'the real watch is served meanwhile')


def db_unreachable(fleet, gws, pg, img, wd, w, v, wj):
    """At start: exit 1 with libpq's message. Under running gateways: REST
    answers at once, nothing of the outage lost."""
    gw_exe = executables()[0]
    d = os.path.join(wd, 'nodb')
    os.mkdir(d)
    nodb = Gateway(d, gw_exe, fleet, bus='g1', conninfo='host=%s user=smpgw dbname=none'
                   ' connect_timeout=3' % os.path.join(wd, 'no-such-dir'),
                   extra_conf=['[gateway]', 'id = nodb'])
    t0 = time.monotonic()
    try:
        nodb.start()
        started = True
    except RuntimeError:
        started = False
    rc = nodb.proc.wait(timeout=30)
    text = nodb.read_log()
    nodb.close()
    check(not started and rc == 1 and 'store: PostgreSQL: connection to server' in text,
          'the database unreachable at start: exit %s in %.1f s, "%s"'
          % (rc, time.monotonic() - t0, [x for x in text.splitlines() if 'store:' in x][:1]))
    check('by host name' not in text, 'a socket directory as host: no host-name warning')
    # A host name without hostaddr=: resolved blocking by libpq, so warned
    # about at start (localhost: /etc/hosts; port 1: refused at once).
    for ci, warned in (('host=localhost port=1', True),
                       ('host=localhost hostaddr=127.0.0.1 port=1', False),
                       ('host=127.0.0.1,::1 port=1', False)):
        d = os.path.join(wd, 'nodb-' + str(len(ci)))
        os.mkdir(d)
        nodb = Gateway(d, gw_exe, fleet, bus='g1', conninfo=ci + ' user=smpgw dbname=none'
                       ' connect_timeout=3', extra_conf=['[gateway]', 'id = nodb'])
        try:
            nodb.start()
        except RuntimeError:
            pass
        rc = nodb.proc.wait(timeout=30)
        text = nodb.read_log()
        nodb.close()
        check(rc == 1 and ('server by host name (localhost) without hostaddr=' in text)
              == warned, 'conninfo "%s": exit %s, host-name warning %s' % (ci, rc, warned))

    hw, hv = holder(w), holder(v)
    # A rollout across the outage, made on V's holder (its watch is let go
    # during the outage and may be claimed by another gateway after it).
    ro = gws[hv].post('/api/v1/rollouts', {
        'image': img['id'], 'target': {'devices': [v]}, 'mode': 'test-confirm',
        'window': 'now', 'retry_interval_s': 1}, expect=201)
    asker = next(n for n in ROOMS if n not in (hw, hv))
    log('W held by %s, V by %s; %s asks during the outage' % (hw, hv, asker))
    pg.stop('immediate')
    down = now_ms()
    log('database stopped')
    results = {}
    for path in ('/api/v1/jobs', '/api/v1/jobs/' + wj, '/api/v1/rollouts',
                 '/api/v1/rollouts/' + ro['id'], '/api/v1/devices', '/api/v1/gateways',
                 '/api/v1/devices/%s' % w):
        t0 = time.monotonic()
        st, body = gws[asker].request('GET', path)
        results[path] = (st, round(time.monotonic() - t0, 2),
                         body.get('type') if isinstance(body, dict) else None)
    t0 = time.monotonic()
    st, body = gws[asker].request('POST', '/api/v1/devices/%s/echo' % w, {'d': 'z'})
    results['echo'] = (st, round(time.monotonic() - t0, 2),
                       body.get('type') if isinstance(body, dict) else None)
    log('while the store is down, %s answers: %s' % (asker, results))
    check(all(r[1] < 5 for r in results.values()), 'every answer came at once (< 5 s)')
    for path in ('/api/v1/jobs', '/api/v1/jobs/' + wj, '/api/v1/gateways',
                 '/api/v1/devices/' + w, 'echo'):
        check(results[path][0] == 503 and results[path][2].endswith('store-unavailable'),
              '%s needs the store: 503 store-unavailable' % path)
    check(results['/api/v1/devices'][0] == 200, 'GET /api/v1/devices: the watches %s'
          ' manages (200)' % asker)
    st, body = gws[hw].request('POST', '/api/v1/devices/%s/echo' % w, {'d': 'local'})
    check(st == 200, 'the holder still serves its watch from memory')
    gws[hw].request('POST', '/api/v1/devices/%s/reset' % w, {})  # events of the outage
    time.sleep(3)
    pg.start()
    log('database back after %.1f s' % ((now_ms() - down) / 1000))
    wait_for("the outage's events of %s on %s" % (hw, asker), lambda: [
        e for e in gws[asker].get('/api/v1/events/recent?limit=1000')['events']
        if e.get('gateway') == hw and down - 500 <= e['time_ms'] < now_ms() - 0 and
        e['data'].get('id') == w and e['time_ms'] <= down + 4000], timeout=40, step=0.5)
    check(True, "%s's events of the outage reached %s after it" % (hw, asker))
    r = wait_for('the rollout to end after the outage', lambda: (
        lambda x: x if x['state'] in ('completed', 'canceled', 'paused') else None)(
            gws[asker].rollout(ro['id'])), timeout=180, step=1)
    check(r['state'] == 'completed' and r['totals'].get('updated', 0) +
          r['totals'].get('up_to_date', 0) == 1, 'the rollout resumed and completed (%s %s %s)'
          % (r['state'], r.get('reason'), r['totals']))
    check(all(gw.proc.poll() is None for gw in gws.values()), 'every gateway still runs')


def rollouts_at_once(gws, img, watches):
    """Each gateway makes a rollout at the same instant (ids are numbered
    across the fleet: no two may get the same): all made, all complete."""
    out = {}

    def make(name, dev):
        out[name] = gws[name].request('POST', '/api/v1/rollouts', {
            'image': img['id'], 'target': {'devices': [dev]}, 'mode': 'test-confirm',
            'retry_interval_s': 1})
    ts = [threading.Thread(target=make, args=(n, d)) for n, d in zip(ROOMS, watches)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    ids = sorted(b.get('id') for st, b in out.values() if st == 201)
    check(len(set(ids)) == len(ROOMS), 'three rollouts made at once on three gateways: %s'
          % ({n: (st, b.get('id') or b.get('detail')) for n, (st, b) in out.items()}))
    for rid in ids:
        r = wait_for('%s to end' % rid, lambda: (
            lambda x: x if x['state'] in ('completed', 'canceled', 'paused') else None)(
                gws['g1'].rollout(rid)), timeout=120, step=1)
        check(r['state'] == 'completed' and r['totals']['updated'] + r['totals']['up_to_date']
              == 1, '%s completed (%s)' % (rid, r['state']))


def main():
    pg = PgServer.attached_or_skip()
    only = sys.argv[1:]
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        _, _, conf = executables()
        pg.started_at_end(run)
        images = os.path.join(wd, 'images')  # the shared image directory
        os.mkdir(images)
        fleet, gws = rooms(wd, run, ROOMS, [
            {'heard': {room: -60 for room in ROOMS}} for _ in range(N)],
            extra=['lease_ttl = %dms' % TTL_MS, '[ble]', 'idle_timeout = 3s',
                   '[images]', 'dir = ' + images])
        addr = {'PineTime-%d' % (k + 1): fleet.id('PineTime-%d' % (k + 1)) for k in range(N)}
        if not only or 'claims' in only:
            img = claims_at_once(fleet, gws, conf, addr)
        else:
            gws['g1'].start()
            img = gws['g1'].upload_image(conf, IMAGE)
            gws['g1'].stop()
        w, v, wj = corrupted_rows(fleet, gws, img, addr)
        stale_gateway(gws, w)
        db_unreachable(fleet, gws, pg, img, wd, w, v, wj)
        rollouts_at_once(gws, img, (w, v, addr['PineTime-1']))


if __name__ == '__main__':
    main()
