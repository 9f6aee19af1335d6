#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Several gateways, one fleet (issue 17 part 3, docs/multi-gateway.md):
three smpgwd (g1, g2, g3) on one real PostgreSQL server (SMPGW_TEST_PG,
SMPGW_TEST_PG_DIR: tests/pg/pg_server.py), each with its own private bus,
its bus served by one simulator (rollout_fleet.rooms): watch A best heard by
g1, B by g2, both worst by g3.

- the gateway registry: every gateway lists the three, alive, with the URL
  of its REST API;
- every gateway lists the whole fleet with held_by (g3 holds nothing and
  lists both from their holders' published views);
- an event on g1 (an update job's progress, a device connecting) reaches
  g2's event stream and recent events with "gateway": "g1", once, and is
  not echoed back to g1;
- a non-holder (g3) forwards device requests to the holder: echo, the
  device itself, an update job; ?forward=0 gets the 421 instead;
- the holder's host dies (kill -9, radio off): a forwarded request fails
  cleanly (502 holder-unreachable, held_by), then works against the new
  holder;
- notifications missed (the listening connections terminated, then the
  server restarted): the others' events still arrive (catch-up by id);
- a holder stopped cleanly (SIGTERM): its last events (device.removed of
  the watches it gave up) reach the other gateways, which take over."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pg'))
from rollout_fleet import (NEEDS, Events, check, executables, host_dies, log, rooms,  # noqa: E402
                           session, wait_for)
from pg_server import PgServer, lease_holder as holder, test_sql as sql  # noqa: E402

A, B = 'C0:FF:EE:00:00:01', 'C0:FF:EE:00:00:02'
RSSI = {'g1': (-50, -75), 'g2': (-70, -55), 'g3': (-80, -90)}
IMAGE = 'app-0.9.0-3k-hash.bin'


def call(gw, method, path, body=None, headers=None):
    """(status, JSON body or text, response headers)."""
    data = json.dumps(body).encode() if body is not None else None
    h = dict(headers or {})
    if data is not None:
        h['Content-Type'] = 'application/json'
    req = urllib.request.Request(gw.base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as rsp:
            st, payload, hdrs = rsp.status, rsp.read(), rsp.headers
    except urllib.error.HTTPError as e:
        st, payload, hdrs = e.code, e.read(), e.headers
    try:
        return st, json.loads(payload), hdrs
    except ValueError:
        return st, payload.decode(errors='replace'), hdrs


def fleet_of(gw):
    """{id: held_by} of gw's GET /api/v1/devices."""
    return {d['id']: d.get('held_by') for d in gw.get('/api/v1/devices')['devices']}


def recent(gw, **q):
    qs = '&'.join('%s=%s' % kv for kv in q.items())
    return gw.get('/api/v1/events/recent?limit=1000' + ('&' + qs if qs else ''))['events']


def start(run, wd):
    images = os.path.join(wd, 'images')  # the shared image directory
    os.mkdir(images)
    _, gws = rooms(wd, run, tuple(RSSI), [
        {'address': w, 'heard': {room: rssi[i] for room, rssi in RSSI.items()}}
        for i, w in enumerate((A, B))],
        extra=['forward_timeout = 8s', '[images]', 'dir = ' + images])
    for gw in gws.values():
        gw.start()
    return gws


def registry_and_fleet(gws):
    wait_for('A held by g1 and B by g2', lambda: holder(A) == 'g1' and holder(B) == 'g2',
             timeout=40, step=0.5)
    reg = gws['g3'].get('/api/v1/gateways')
    check(reg['self'] == 'g3' and [g['id'] for g in reg['gateways']] == ['g1', 'g2', 'g3'],
          'g3 lists the three gateways: %s' % [g['id'] for g in reg['gateways']])
    for g in reg['gateways']:
        check(g['alive'] and g['url'] == gws[g['id']].base and g['self'] == (g['id'] == 'g3'),
              '%s alive at %s (its bound address)' % (g['id'], g['url']))
    want = {A: 'g1', B: 'g2'}
    for name, gw in gws.items():
        wait_for('%s to list the whole fleet' % name, lambda: fleet_of(gw) == want,
                 timeout=20, step=0.5)
        check(True, '%s lists A held by g1 and B by g2' % name)

    def views():
        devs = {d['id']: d for d in gws['g3'].get('/api/v1/devices')['devices']}
        return devs if all((devs[x].get('view') or {}).get('gateway') == want[x]
                           for x in (A, B)) else None
    devs = wait_for("g3 to show the holders' views", views, timeout=20, step=0.5)
    check(devs[A]['name'] == 'PineTime-1' and devs[A]['transport'] == 'ble' and
          devs[A]['view']['age_ms'] < 60000 and 'link_state' in devs[A],
          "g3 shows A as g1 published it (%s, %d ms old)"
          % (devs[A]['link_state'], devs[A]['view']['age_ms']))
    # The command-line tool shows the holders too (a GATEWAY column).
    out = subprocess.run([os.environ['SMPGW_CLI'], '--url', gws['g3'].base, 'devices'],
                         capture_output=True, text=True, timeout=30).stdout.splitlines()
    cols = {ln.split()[0]: ln.split() for ln in out[1:]}
    check(out[0].split()[5] == 'GATEWAY' and cols['PineTime-1'][5] == 'g1' and
          cols['PineTime-2'][5] == 'g2', 'smpgw devices on g3: %s' % out)
    st, body, _ = call(gws['g3'], 'GET', '/api/v1/devices?name=PineTime-2')
    check(st == 200 and [d['id'] for d in body['devices']] == [B],
          'the list filters apply to the whole fleet')
    st, body, _ = call(gws['g1'], 'GET', '/api/v1/devices/%s' % A)
    check(st == 200 and body['held_by'] == 'g1' and 'view' not in body,
          'the holder describes its own watch')


def forwarding(gws, conf):
    g3 = gws['g3']
    st, body, h = call(g3, 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'via g3'})
    check(st == 200 and body.get('r') == 'via g3' and h.get('X-Smpgw-Served-By') == 'g1',
          'g3 forwards an echo for A to g1 (%d %s, served by %s)'
          % (st, body, h.get('X-Smpgw-Served-By')))
    # Measured, not asserted: what forwarding adds to an echo.
    times = {}
    for name in ('g1', 'g3'):
        t = []
        for _ in range(10):
            t0 = time.monotonic()
            call(gws[name], 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'x'})
            t.append((time.monotonic() - t0) * 1000)
        times[name] = sorted(t)[len(t) // 2]
    log('echo A: %.1f ms on its holder g1, %.1f ms through g3 (median of 10)'
        % (times['g1'], times['g3']))
    st, body, h = call(g3, 'GET', '/api/v1/devices/%s' % A)
    check(st == 200 and body['id'] == A and body['held_by'] == 'g1' and 'view' not in body
          and h.get('X-Smpgw-Served-By') == 'g1', 'g3 forwards GET of A: g1 answers')
    st, body, h = call(g3, 'POST', '/api/v1/devices/PineTime-2/echo', {'d': 'by name'})
    check(st == 200 and body.get('r') == 'by name' and h.get('X-Smpgw-Served-By') == 'g2',
          'a watch named instead of its id is forwarded too (PineTime-2 to g2)')
    st, body, _ = call(g3, 'GET', '/api/v1/devices/PineTime-1?forward=0')
    check(st == 200 and body['id'] == A and body['held_by'] == 'g1', 'and its view found by name')
    st, body, h = call(g3, 'GET', '/api/v1/devices/%s/image-state' % B)
    check(st == 200 and body['images'] and h.get('X-Smpgw-Served-By') == 'g2',
          "g3 forwards B's image-state to g2")
    st, body, _ = call(g3, 'POST', '/api/v1/devices/%s/echo?forward=0' % A, {'d': 'x'})
    check(st == 421 and body['held_by'] == 'g1' and
          body['type'] == 'urn:smpgw:problem:held-elsewhere', '?forward=0 gets 421 held_by g1')
    st, body, _ = call(g3, 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'x'},
                       headers={'X-Smpgw-Forward': '0'})
    check(st == 421, 'so does X-Smpgw-Forward: 0')
    st, body, _ = call(g3, 'GET', '/api/v1/devices/%s?forward=0' % A)
    check(st == 200 and body['held_by'] == 'g1' and body['view']['gateway'] == 'g1',
          'GET of A with ?forward=0: the view g1 published, with its age')
    # A request that already went through a gateway is never forwarded again.
    st, body, _ = call(g3, 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'x'},
                       headers={'X-Smpgw-Forwarded-By': 'g2'})
    check(st == 421 and body['held_by'] == 'g1', 'a forwarded request is not forwarded twice')
    st, body, _ = call(g3, 'POST', '/api/v1/devices/%s/echo' % A, ['not', 'an object'])
    check(st == 400 and body['type'] == 'urn:smpgw:problem:invalid-request',
          "a body that is not a JSON object is refused before any forwarding (%d %s)" % (st, body.get('detail')))
    st, body, _ = call(g3, 'GET', '/api/v1/devices/C0:FF:EE:00:00:99')
    check(st == 404, 'a watch nobody knows stays 404')
    # An update job through g3 runs on g1; its events reach g2.
    img = gws['g1'].upload_image(conf, IMAGE)['id']
    ev2 = Events(gws['g2'], types=('job.', 'device.'))
    try:
        st, job, h = call(g3, 'POST', '/api/v1/devices/%s/update' % A,
                          {'image': img, 'mode': 'upload'})
        check(st == 202 and h.get('X-Smpgw-Served-By') == 'g1',
              'g3 forwards an update job for A to g1 (job %s)' % job.get('id'))
        jid = job['id']

        def done():
            j = gws['g1'].get('/api/v1/jobs/%d' % jid)
            return j if j['state'] not in ('queued', 'running') else None
        j = wait_for('the job to finish on g1', done, timeout=120, step=0.5)
        check(j['state'] == 'done', 'job %d done on g1' % jid)

        def remote_done():
            return [e for e in ev2.events if e['type'] == 'job.result' and
                    e['data'].get('id') == jid] or None
        got = wait_for("g1's job.result in g2's event stream", remote_done, timeout=20,
                       step=0.2)
        check(len(got) == 1 and got[0]['gateway'] == 'g1' and
              got[0]['data']['state'] == 'done', "g2's stream has g1's job.result (done) "
              "once, with gateway g1")
        prog = [e for e in ev2.events if e['type'] == 'job.progress' and e.get('gateway') == 'g1']
        check(prog, "g2's stream has g1's job progress (%d events)" % len(prog))
        # A reset drops g1's link to A: device events on g1.
        st, _, _ = call(gws['g1'], 'POST', '/api/v1/devices/%s/reset' % A, {})
        check(st == 200, 'A reset through g1')

        def dev_events():
            return [e for e in ev2.events if e['type'].startswith('device.') and
                    e.get('gateway') == 'g1' and e['data'].get('id') == A] or None
        dev = wait_for("g1's device events about A in g2's stream", dev_events, timeout=20,
                       step=0.01)
        # Measured, not asserted: from the event on g1 (its time_ms) to g2's
        # stream (this test's polling adds up to 10 ms).
        log('event g1 -> g2 stream: %d ms' % (time.time() * 1000 - dev[0]['time_ms']))
        check(True, "g2's stream has g1's events about A (%s)" % sorted({e['type'] for e in dev}))
    finally:
        ev2.stop()
    rec = recent(gws['g2'], type='job.result')
    check([e['gateway'] for e in rec if e['data'].get('id') == jid] == ['g1'],
          "g2's recent events have g1's job.result")
    check(recent(gws['g2'], type='job.result', gateway='g3') == [] and
          [e['data']['id'] for e in recent(gws['g2'], type='job.result', gateway='g1')] == [jid],
          '?gateway= filters the recent events by where they happened')
    rec1 = recent(gws['g1'])
    check(all(e.get('gateway') == 'g1' for e in rec1 if e['data'].get('id') in (jid, A)),
          "g1's own events are not echoed back to it")
    check(len([e for e in rec1 if e['type'] == 'job.result' and
               e['data'].get('id') == jid]) == 1, 'g1 has its job.result once')
    conn = [e for e in recent(gws['g2'], type='device.') if e.get('gateway') == 'g1']
    check(conn, "g2's recent events have g1's device events (%s)"
          % sorted({e['type'] for e in conn}))
    jobs2 = gws['g2'].get('/api/v1/jobs')['jobs']
    check(not any(x['id'] == jid and x['state'] in ('queued', 'running') for x in jobs2),
          "g2's engine did not take up g1's job from its events")


class BadHolder:
    """A "gateway" that answers forwarded requests badly: garbage instead
    of HTTP, an impossible status, a body over the 8 MiB limit, or nothing
    at all; or well, at an IPv6 address (bounded: one thread, stopped by
    close())."""
    ANSWERS = {
        'garbage': b'NOT HTTP AT ALL\r\n\r\n',
        'status': b'HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n',
        'huge': b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
                b'Content-Length: 20000000\r\n\r\n' + b' ' * 65536,
        'silent': None,
        # a good answer, over IPv6: status, type and body passed through
        'v6': b'HTTP/1.1 207 Multi-Status\r\nContent-Type: application/json\r\n'
              b'Content-Length: 13\r\n\r\n{"from":"v6"}',
        # a good answer from a holder whose URL names its host: looked up
        # with the loop's resolver (evdns, /etc/hosts), not getaddrinfo()
        'name': b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
                b'Content-Length: 15\r\n\r\n{"from":"name"}',
        # a holder with another token: its 401 keeps its challenge
        'auth': b'HTTP/1.1 401 Unauthorized\r\nContent-Type: application/problem+json\r\n'
                b'WWW-Authenticate: Bearer realm="smpgw"\r\n'
                b'Content-Length: 2\r\n\r\n{}',
        # headers at once, then one byte of the body a second: no single
        # read waits forward_timeout, the whole forward does
        'trickle': b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
                   b'Content-Length: 1000\r\n\r\n',
        # answers with the request line's target: what was forwarded
        'target': None,
    }

    def __init__(self, mode):
        import socket
        import threading
        self.mode = mode
        v6 = mode == 'v6'
        self.sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
        self.sock.bind(('::1' if v6 else '127.0.0.1', 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.url = ('http://[::1]:%d' if v6 else 'http://localhost:%d' if mode == 'name'
                    else 'http://127.0.0.1:%d') % self.sock.getsockname()[1]
        self.conns = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import socket
        while self.running:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.conns.append(c)
            c.settimeout(2)
            try:
                got = c.recv(65536)
                if self.mode == 'target':
                    body = json.dumps({'target': got.split(b' ')[1].decode()}).encode()
                    c.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
                              b'Content-Length: %d\r\n\r\n%s' % (len(body), body))
                    c.close()
                elif self.mode == 'trickle':
                    c.sendall(self.ANSWERS[self.mode])
                    for _ in range(30):  # at most 30 s, until the gateway hangs up
                        if not self.running:
                            break
                        time.sleep(1)
                        c.sendall(b' ')
                elif self.ANSWERS[self.mode] is not None:
                    c.sendall(self.ANSWERS[self.mode])
                    c.close()
            except OSError:
                pass

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        for c in self.conns:
            c.close()
        self.sock.close()


def bad_holders(gws, run):
    """Watches held by "gateways" that answer badly: a clear 502 or 504
    with held_by, and the gateway keeps running; one at [::1] answering
    well: its answer as it is."""
    want = {'garbage': 502, 'status': 502, 'huge': 502, 'silent': 504, 'v6': 207, 'name': 200,
            'auth': 401, 'trickle': 504, 'target': 200}
    now = int(time.time() * 1000)
    for i, mode in enumerate(want):
        bad = run.add(BadHolder(mode))
        watch, gid = 'C0:FF:EE:00:0B:%02X' % i, 'bad-' + mode
        sql("INSERT INTO devices (id, name, transport) VALUES ('%s', 'Bad-%s', 'ble');"
            "INSERT INTO leases VALUES ('%s', '%s', %d, %d);"
            "INSERT INTO gateways VALUES ('%s', '%s', %d, %d)"
            % (watch, mode, watch, gid, now + 60000, now, gid, bad.url, now, now + 60000))
        if mode == 'target':  # 20 query parameters, all forwarded in order
            q = '&'.join('p%02d=v%%20%d' % (k, k) for k in range(20)) + '&flag'
            st, body, h = call(gws['g3'], 'GET', '/api/v1/devices/%s?%s' % (watch, q))
            check(st == 200 and body.get('target', '').split('?', 1)[1:] == [q],
                  'a request with 21 query parameters forwarded with all of them, in order'
                  ' (%d %s)' % (st, body))
            continue
        t0 = time.monotonic()
        st, body, h = call(gws['g3'], 'POST', '/api/v1/devices/%s/echo' % watch, {'d': 'x'})
        took = time.monotonic() - t0
        if mode == 'trickle':  # forward_timeout = 8s in this test
            check(st == 504 and 7 < took < 16, 'a holder trickling its answer a byte a second:'
                  ' 504 after the whole forward_timeout (%.1f s)' % took)
        if mode == 'v6':
            check(st == 207 and body == {'from': 'v6'} and h.get('X-Smpgw-Served-By') == gid
                  and h.get('Content-Type') == 'application/json',
                  'a holder at an IPv6 address: its status, type and body passed through')
            continue
        if mode == 'auth':
            check(st == 401 and h.get('WWW-Authenticate') == 'Bearer realm="smpgw"'
                  and h.get('X-Smpgw-Served-By') == gid,
                  "a holder's 401 passed through with its WWW-Authenticate (%d %s)"
                  % (st, h.get('WWW-Authenticate')))
            continue
        if mode == 'name':
            check(st == 200 and body == {'from': 'name'} and h.get('X-Smpgw-Served-By') == gid,
                  'a holder whose URL names its host (%s): resolved on the loop, its answer'
                  ' passed through (%d %s)' % (bad.url, st, body))
            continue
        check(st == want[mode] and body.get('held_by') == gid and body['type'].endswith(
            'holder-timeout' if st == 504 else 'holder-unreachable'),
            'a holder answering %s: %d %s (%s), in %.1f s' % (mode, st, body.get('type'),
                                                              body.get('detail'), took))
    check(gws['g3'].proc.poll() is None, 'g3 still runs')
    st, body, _ = call(gws['g3'], 'GET', '/api/v1/devices/C0:FF:EE:00:0B:00?forward=0')
    check(st == 200 and body['held_by'] == 'bad-garbage' and body['view'] is None,
          'a watch nobody published a view of: its stored row, held_by')
    sql("DELETE FROM leases WHERE holder LIKE 'bad-%'; DELETE FROM gateways WHERE id LIKE 'bad-%';"
        "DELETE FROM devices WHERE name LIKE 'Bad-%'")


def missed_notifications(gws, pg):
    """The listeners' connections cut, then the whole server restarted:
    events still get through (caught up by id)."""
    # A corrupted row (not JSON) is reported and skipped; later ones still come.
    sql("INSERT INTO cluster_events (gateway, type, json, time_ms) VALUES"
        " ('ghost', 'device.seen', 'not json {', 0); NOTIFY smpgw_events")
    wait_for('g2 to report the corrupted event', lambda: 'is not a JSON object' in
             gws['g2'].read_log(), timeout=15, step=0.3)
    check(gws['g2'].proc.poll() is None, 'a corrupted event row: reported, skipped')
    n = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%'")
    check(int(n) >= 2, 'the listening connections terminated (%s)' % n)
    st, body, _ = call(gws['g1'], 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'after cut'})
    check(st == 200, 'g1 still answers')
    mark = time.time() * 1000 - 1000

    def seen(gw, after_ms):
        return [e for e in recent(gw) if e.get('gateway') == 'g1' and
                e['time_ms'] >= after_ms] or None
    st, body, _ = call(gws['g1'], 'POST', '/api/v1/devices/%s/reset' % A, {})
    wait_for("g1's events in g2's history after the cut", lambda: seen(gws['g2'], mark),
             timeout=20, step=0.5)
    check(True, 'events after the listeners were cut arrive')
    pg.stop('immediate')
    t0 = time.monotonic()
    st, body, _ = call(gws['g3'], 'GET', '/api/v1/gateways')
    check(st == 503 and body['type'].endswith('store-unavailable'),
          'without the server: the registry is 503 store-unavailable')
    st, body, _ = call(gws['g3'], 'GET', '/api/v1/devices')
    check(st == 200 and body['devices'] == [], 'the device list has what g3 manages (nothing)')
    st, body, _ = call(gws['g3'], 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'x'})
    check(st == 503 and body['type'].endswith('store-unavailable'),
          'a request for a watch g3 does not manage: 503 (%s)' % body.get('detail'))
    st, body, _ = call(gws['g1'], 'GET', '/api/v1/devices')
    check(st == 200 and [d['id'] for d in body['devices']] == [A],
          'g1 lists A, which it manages (%.1f s into the outage)' % (time.monotonic() - t0))
    time.sleep(2)
    pg.start()
    t0 = time.monotonic()
    wait_for('the gateways to listen again', lambda: int(sql(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")) >= 3,
        timeout=30, step=0.5)
    log('listening again %.1f s after the restart' % (time.monotonic() - t0))
    mark = time.time() * 1000 - 1000
    wait_for('g1 to write events again', lambda: call(gws['g1'], 'POST', '/api/v1/devices/%s/reset'
                                                    % A, {})[0] in (200, 503), timeout=20)
    wait_for("g1's events on g3 after the server restart", lambda: seen(gws['g3'], mark),
             timeout=30, step=0.5)
    check(True, 'after a server restart the events flow again')


def takeover(gws):
    g3 = gws['g3']
    host_dies(gws['g1'])
    st, body, _ = call(g3, 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'dead?'})
    check(st == 502 and body['type'] == 'urn:smpgw:problem:holder-unreachable' and
          body['held_by'] == 'g1', 'the holder killed: 502 holder-unreachable held_by g1 '
          '(%d %s)' % (st, body.get('type')))
    t0 = time.monotonic()
    wait_for('g2 to take A over', lambda: holder(A) == 'g2', timeout=45, step=0.5)
    log('A taken over by g2 in %.1f s' % (time.monotonic() - t0))

    def echo():
        st, body, h = call(g3, 'POST', '/api/v1/devices/%s/echo' % A, {'d': 'again'})
        return (st, body, h) if st == 200 else None
    st, body, h = wait_for('an echo through g3 to reach the new holder', echo,
                           timeout=30, step=0.5)
    check(body['r'] == 'again' and h.get('X-Smpgw-Served-By') == 'g2',
          'then the forward goes to the new holder g2')
    reg = {g['id']: g for g in g3.get('/api/v1/gateways')['gateways']}
    wait_for('g1 to go stale in the registry', lambda: not {
        g['id']: g for g in g3.get('/api/v1/gateways')['gateways']}['g1']['alive'],
        timeout=30, step=0.5)
    check(reg['g2']['alive'], 'the registry shows g1 stale, g2 alive')


def clean_stop(gws):
    """SIGTERM of a holder: its last events (leases given up, devices
    removed) still reach the other gateways, then they take over."""
    wait_for('g2 to hold A and B', lambda: holder(A) == 'g2' and holder(B) == 'g2',
             timeout=45, step=0.5)
    mark = time.time() * 1000 - 1000
    rc = gws['g2'].stop()
    check(rc == 0, 'g2 stopped by SIGTERM (exit %s)' % rc)

    def removed():
        ids = {e['data'].get('id') for e in recent(gws['g3'], type='device.removed',
                                                    gateway='g2') if e['time_ms'] >= mark}
        return ids if {A, B} <= ids else None
    wait_for("g2's device.removed events of A and B on g3", removed, timeout=20, step=0.5)
    check(True, "g3's recent events have g2's clean-stop events (device.removed of A and B)")
    wait_for('g3 to take A and B over', lambda: holder(A) == 'g3' and holder(B) == 'g3',
             timeout=30, step=0.5)
    check(True, 'g3 holds A and B after the clean stop')


def main():
    pg = PgServer.attached_or_skip()
    with session(need=NEEDS + ('dbus-daemon',)) as (wd, run):
        conf = executables()[2]
        pg.started_at_end(run)
        gws = start(run, wd)
        registry_and_fleet(gws)
        forwarding(gws, conf)
        bad_holders(gws, run)
        missed_notifications(gws, pg)
        takeover(gws)
        clean_stop(gws)


if __name__ == '__main__':
    main()
