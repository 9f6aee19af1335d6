#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The store unavailable behind the REST API (docs/rest-api.md, "store-
unavailable"): one smpgwd (`[gateway] id` set, as in a fleet) on a real PostgreSQL server (tests/pg/pg_server.py)
managing two simulated watches over UDP. With an image, a finished update
job and a rollout in the store, the server is stopped: every REST route
that reads or writes the store answers promptly (bounded by [store]
timeout) either from what the gateway holds in memory or with
503 urn:smpgw:problem:store-unavailable -- never a hang, a 500, or a
device's problem type (device-unreachable, device-timeout) for the store's
failure. A write that cannot be stored (a rollout, an update job) is
refused with 503; an image upload or delete is done on the image directory
(the files are the truth) and its row caught up later. The server started again, the same routes work, the
image, job and rollout from before are all there, and a new job runs.

With the argument "locked" (no server: SQLite): another process holds the
database's write lock (BEGIN EXCLUSIVE) under one smpgwd: a write that
needs the store (a rollout, an update job) is refused with 503
store-unavailable after the busy timeout (2 s), its detail saying the
database is locked, reads answer; the lock released, both work."""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pg'))
from harness_common import SKIP, Tap, log, wait_for  # noqa: E402
from updates_harness import conformance_image, session, sim_and_gateway  # noqa: E402
from pg_server import PgServer  # noqa: E402

IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
IMG2 = conformance_image('app-0.9.0-3k-hash.bin')
IMG2_ID = None  # its SHA-256, known once uploaded
CONF = '\n'.join(['[gateway]', 'id = g1',
                  '[request]', 'timeout = 1s', '[update]', 'boot_timeout = 40s',
                  '[store]', 'timeout = 2s'])
LITE_CONF = '\n'.join(['[request]', 'timeout = 1s', '[update]', 'boot_timeout = 40s'])
STORE = 'urn:smpgw:problem:store-unavailable'
PROMPT = 15.0  # seconds: 2 s store timeout, reconnect attempts, a loaded CI box

t = Tap()


def timed(gw, method, path, body=None, raw=None):
    t0 = time.monotonic()
    st, d = gw.request(method, path, body, raw=raw, timeout=60)
    return st, d, time.monotonic() - t0


def kind(st, d):
    return d.get('type', '') if isinstance(d, dict) and st >= 400 else ''


def outage(gw, img, jid, rid):
    with open(IMG2, 'rb') as f:
        img2 = f.read()
    # (method, path, body, raw, must_refuse): a write that needs the store
    # must be refused; a read may be answered from memory.
    routes = [
        ('GET', '/api/v1/jobs', None, None, False),
        ('GET', '/api/v1/jobs/%d' % jid, None, None, False),
        ('DELETE', '/api/v1/jobs/%d' % jid, None, None, False),
        ('GET', '/api/v1/rollouts', None, None, False),
        ('GET', '/api/v1/rollouts/%s' % rid, None, None, False),
        ('POST', '/api/v1/rollouts/%s/pause' % rid, {}, None, False),
        ('POST', '/api/v1/rollouts/%s/retry-failed' % rid, {}, None, False),
        ('GET', '/api/v1/rollouts/%s/report' % rid, None, None, False),
        ('POST', '/api/v1/rollouts', {'image': img, 'target': 'all'}, None, True),
        ('GET', '/api/v1/images', None, None, False),
        ('GET', '/api/v1/images/%s' % img, None, None, False),
        # The image files are the truth (docs/images.md): an upload is kept
        # in the directory, its metadata recorded when the store is back;
        # a delete removes the file.
        ('POST', '/api/v1/images', None, img2, False),
        ('DELETE', '/api/v1/images/%s' % IMG2_ID, None, None, False),
        ('GET', '/api/v1/devices', None, None, False),
        ('GET', '/api/v1/devices/w0', None, None, False),
        ('GET', '/api/v1/events/recent', None, None, False),
        ('GET', '/api/v1/gateways', None, None, False),
        ('POST', '/api/v1/devices/w1/update', {'image': img}, None, True),
    ]
    for method, path, body, raw, must_refuse in routes:
        st, d, dt = timed(gw, method, path, body, raw)
        what = '%s %s without the server: %d %s (%.1f s)' % (method, path, st, kind(st, d), dt)
        if kind(st, d):
            log('%s %s: %s' % (method, path, d.get('detail')))
        t.ok(dt < PROMPT, what + ': prompt')
        if must_refuse:
            t.ok(st == 503 and kind(st, d) == STORE, what + ': 503 store-unavailable')
        else:
            t.ok(st < 500 and not kind(st, d).split(':')[-1].startswith('device-')
                 or (st == 503 and kind(st, d) == STORE),
                 what + ': answered from memory or 503 store-unavailable')


def locked():
    with session(tap=t) as (wd, run):
        sim, gw = sim_and_gateway(run, wd, LITE_CONF, count=1)
        img = gw.add_image(IMG)
        db = sqlite3.connect(os.path.join(gw.state, 'smpgw.db'), isolation_level=None,
                             timeout=10)
        db.execute('BEGIN EXCLUSIVE')
        try:
            for method, path, body in [
                    ('POST', '/api/v1/rollouts', {'image': img, 'target': 'all'}),
                    ('POST', '/api/v1/devices/w0/update', {'image': img})]:
                st, d, dt = timed(gw, method, path, body)
                t.ok(st == 503 and kind(st, d) == STORE and 'locked' in d.get('detail', '')
                     and dt < PROMPT, '%s %s with the database locked: %d %s (%.1f s): %s'
                     % (method, path, st, kind(st, d), dt,
                        d.get('detail') if isinstance(d, dict) else d))
            for path in ('/api/v1/images', '/api/v1/devices', '/api/v1/jobs', '/api/v1/rollouts'):
                st, d, dt = timed(gw, 'GET', path)
                t.ok(st == 200 and dt < PROMPT, 'GET %s with the database locked: %d' % (path, st))
        finally:
            db.execute('ROLLBACK')
            db.close()
        st, ro = gw.request('POST', '/api/v1/rollouts', {'image': img, 'target': 'all'})
        t.eq(st, 201, 'the lock released: a rollout is created')
        j = gw.wait_job(wait_for('its job', lambda: gw.request(
            'GET', '/api/v1/jobs')[1]['jobs'], timeout=60)[0]['id'], timeout=90)
        t.eq(j['state'], 'done', 'and its job runs to done (%s)' % j.get('error'))
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


def main():
    if sys.argv[1:] == ['locked']:
        return locked()
    pg = PgServer.attached()
    if not os.environ.get('SMPGW_TEST_PG') or pg is None:
        print('1..0 # SKIP needs SMPGW_TEST_PG and SMPGW_TEST_PG_DIR '
              '(run through tests/pg/pg_server.py)')
        sys.exit(SKIP)
    global IMG2_ID
    with session(tap=t) as (wd, run):
        sim, gw = sim_and_gateway(run, wd, CONF, count=2)
        gw.wait_devices(2, timeout=60)  # leased (held) first
        img = gw.add_image(IMG)
        st, job = gw.update('w0', img)
        t.eq(st, 202, 'an update job is queued')
        j = gw.wait_job(job['id'], timeout=90)
        t.eq(j['state'], 'done', 'the job is done (%s)' % j.get('error'))
        st, ro = gw.request('POST', '/api/v1/rollouts',
                            {'image': img, 'target': {'devices': ['w0']}})
        t.eq(st, 201, 'a rollout is created (%r)' % (ro,))
        rid = ro['id']
        wait_for('the rollout to end', lambda: gw.request(
            'GET', '/api/v1/rollouts/%s' % rid)[1]['state'] in ('completed',),
            timeout=90, step=0.3)

        IMG2_ID = gw.add_image(IMG2)  # stored, then deleted during the outage
        pg.stop()
        try:
            outage(gw, img, job['id'], rid)
        finally:
            pg.start()

        # The gateway reconnects after its quiet time (2 x [store] timeout).
        def queued():
            st, d = gw.request('POST', '/api/v1/devices/w1/update',
                               {'image': img, 'mode': 'upload'})
            if st != 202 and not (st == 503 and kind(st, d) == STORE):
                raise RuntimeError('update after the outage: %d %r' % (st, d))
            return d if st == 202 else None
        job2 = wait_for('a job queued once the store is back', queued, timeout=60, step=0.5)
        j2 = gw.wait_job(job2['id'], timeout=90)
        t.eq(j2['state'], 'done', 'a new update job runs to done after the outage (%s)'
             % j2.get('error'))
        st, d = gw.request('GET', '/api/v1/images/%s' % img)
        t.eq(st, 200, 'the image stored before the outage is still there')
        st, d = gw.request('GET', '/api/v1/jobs/%d' % job['id'])
        t.eq((st, d['state']), (200, 'done'), 'the job from before is still there, done')
        st, d = gw.request('GET', '/api/v1/rollouts/%s' % rid)
        t.eq(st, 200, 'the rollout from before is still there')
        wait_for('the gateway registry to answer again',
                 lambda: gw.request('GET', '/api/v1/gateways')[0] == 200, timeout=60, step=0.5)
        t.ok(True, 'the gateway registry answers again')
        st, d = gw.request('GET', '/api/v1/images')
        t.ok(st == 200 and [i['id'] for i in d['images']] == [img],
             'the images: the one from before, not the one deleted during the outage')
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
