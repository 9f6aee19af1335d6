# SPDX-License-Identifier: MIT
"""Update jobs under faults, through the real smpgwd against smpgw-sim over
UDP: silent drops (the watch has fewer buffers than it said), off:0 in the
middle of an upload (the watch rebooted), a lost reply and a hung watch
(resume from the watch's offset, not from zero), and the first-chunk erase
delay (whole-slot and progressive erase). See docs/updates.md."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from updates_harness import Tap, conformance_image, session, sim_and_gateway

IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
CONF = '\n'.join(['[request]', 'timeout = 1s', 'first_chunk_timeout = 30s',
                  '[update]', 'boot_timeout = 40s', 'retry_timeout = 60s'])
# w0..w3 default flash; w4 erases slowly in one go; w5 erases slowly,
# progressively (sector by sector as data comes).
SLOW = 300000
FLEET = {'count': 6, 'devices': [
    {}, {}, {}, {},
    {'flash': {'erase_sector_us': SLOW, 'progressive_erase': False}},
    {'flash': {'erase_sector_us': SLOW, 'progressive_erase': True}}]}

t = Tap()


def check_done(gw, sim, i, jid, what, timeout=120):
    j = gw.wait_job(jid, timeout=timeout)
    t.eq(j['state'], 'done', '%s: done (%s)' % (what, j.get('error')))
    return j


def slot1_hash(sim, i):
    return sim.slots(i)[1]['hash']


def test_silent_drop(gw, sim, img):
    # The gateway read buf_count 4 at connect; the watch now has 1 buffer:
    # pipelined writes beyond it are dropped without a word.
    gw.request('GET', '/api/v1/devices/w0/params')
    sim.ctl({'cmd': 'link', 'device': 0, 'link': {'buf_count': 1}})
    drops0 = sim.device(0)['counters']['drops']
    st, job = gw.update('w0', img, mode='upload')
    j = check_done(gw, sim, 0, job['id'], 'silent drops')
    t.eq(slot1_hash(sim, 0), img, 'silent drops: the whole image arrived')
    drops = sim.device(0)['counters']['drops'] - drops0
    t.ok(drops > 0, 'silent drops: the watch dropped %d writes' % drops)
    sim.ctl({'cmd': 'link', 'device': 0, 'link': {'buf_count': 4}})


def test_off0(gw, sim, img):
    st, job = gw.update('w1', img, mode='upload')
    gw.wait_phase(job['id'], ('upload',), min_bytes=30000)
    sim.ctl({'cmd': 'reboot', 'device': 1})  # the upload session is gone
    j = check_done(gw, sim, 1, job['id'], 'off 0 mid-upload')
    t.eq(slot1_hash(sim, 1), img, 'off 0: image complete after the restart')
    t.ok(j['progress']['bytes_sent'] > j['progress']['total'],
         'off 0: started over from zero (%d bytes sent)' % j['progress']['bytes_sent'])


def test_lost_reply(gw, sim, img):
    size = os.path.getsize(IMG)
    sim.ctl({'cmd': 'fault', 'device': 2, 'fault': 'disconnect_at_offset', 'offset': 40000})
    st, job = gw.update('w2', img, mode='upload')
    j = check_done(gw, sim, 2, job['id'], 'reply lost at 40000')
    t.eq(slot1_hash(sim, 2), img, 'reply lost: image complete')
    t.ok(j['progress']['bytes_sent'] < size * 1.2,
         'reply lost: resumed from the watch offset (%d sent for %d)' %
         (j['progress']['bytes_sent'], size))


def test_hang_resume(gw, sim, img):
    size = os.path.getsize(IMG)
    st, job = gw.update('w3', img, mode='upload')
    gw.wait_phase(job['id'], ('upload',), min_bytes=50000)
    sim.ctl({'cmd': 'fault', 'device': 3, 'fault': 'hang'})
    time.sleep(10)  # the upload gives up; the job retries from a state read
    j = gw.job(job['id'])
    t.eq(j['state'], 'running', 'hung watch: the job waits and retries')
    sim.ctl({'cmd': 'fault', 'device': 3, 'fault': 'unhang'})
    j = check_done(gw, sim, 3, job['id'], 'hung watch')
    t.eq(slot1_hash(sim, 3), img, 'hung watch: image complete')
    t.ok('retrying' in gw.read_log(), 'hung watch: the job retried')
    t.ok(j['progress']['bytes_sent'] < size * 1.5,
         'hung watch: resumed from its offset, not from zero (%d sent for %d)' %
         (j['progress']['bytes_sent'], size))


def test_erase(gw, sim, img):
    t0 = time.monotonic()
    st, job = gw.update('w4', img, mode='upload')
    check_done(gw, sim, 4, job['id'], 'whole-slot erase of %d ms per sector' % (SLOW // 1000))
    t.ok(time.monotonic() - t0 > 5, 'the first chunk waited for the erase (> 5 s, '
         'beyond the 1 s request timeout)')
    t.eq(slot1_hash(sim, 4), img, 'whole-slot erase: image complete')
    st, job = gw.update('w5', img, mode='upload')
    j = check_done(gw, sim, 5, job['id'], 'progressive erase')
    t.eq(slot1_hash(sim, 5), img, 'progressive erase: image complete')


def main():
    with session(tap=t) as (wd, run):
        sim, gw = sim_and_gateway(run, wd, CONF, count=6, fleet=FLEET)
        img = gw.add_image(IMG)
        test_silent_drop(gw, sim, img)
        test_off0(gw, sim, img)
        test_lost_reply(gw, sim, img)
        test_hang_resume(gw, sim, img)
        test_erase(gw, sim, img)
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
