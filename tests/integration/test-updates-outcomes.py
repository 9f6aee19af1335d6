# SPDX-License-Identifier: MIT
"""Update jobs that do not end well, through the real smpgwd against
smpgw-sim over UDP: an image MCUboot refuses to boot (rolled back), a watch
that never comes back after its reset (lost), and cancel at each moment
(queued, mid-upload, after the test was written). See docs/updates.md."""
import hashlib
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from updates_harness import Tap, conformance_image, session, sim_and_gateway

IMG3K = conformance_image('app-0.9.0-3k-hash.bin')
IMG350 = conformance_image('app-3.1.0+7-350k-ecdsa-p256.bin')
CONF = '\n'.join(['[request]', 'timeout = 1s', 'first_chunk_timeout = 30s',
                  '[update]', 'boot_timeout = 10s', 'retry_timeout = 30s'])
IMAGE_F_NON_BOOTABLE = 0x10

t = Tap()


def non_bootable(src, dst):
    """A hash-only image with MCUboot's non-bootable flag and its SHA-256
    TLV recomputed: the image store accepts it, the watch takes the upload
    and the test mark, and MCUboot refuses to boot it."""
    b = bytearray(open(src, 'rb').read())
    hdr_size = struct.unpack_from('<H', b, 8)[0]
    img_size = struct.unpack_from('<I', b, 12)[0]
    flags = struct.unpack_from('<I', b, 16)[0] | IMAGE_F_NON_BOOTABLE
    struct.pack_into('<I', b, 16, flags)
    end = hdr_size + img_size
    magic, tot = struct.unpack_from('<HH', b, end)
    assert magic == 0x6907
    p = end + 4
    while p < end + tot:
        typ, ln = struct.unpack_from('<HH', b, p)
        if typ == 0x10:
            b[p + 4:p + 4 + 32] = hashlib.sha256(bytes(b[:end])).digest()
            break
        p += 4 + ln
    open(dst, 'wb').write(bytes(b))
    return hashlib.sha256(bytes(b[:end])).hexdigest()


def test_rollback(gw, sim, wd):
    path = os.path.join(wd, 'nonbootable.bin')
    want = non_bootable(IMG3K, path)
    img = gw.add_image(path)
    t.eq(img, want, 'the non-bootable image is stored under its hash')
    old = sim.slots(0)[0]['hash']
    st, job = gw.update('w0', img)
    j = gw.wait_job(job['id'], timeout=60)
    t.eq(j['state'], 'rolled_back', 'MCUboot refused the image: rolled back (%s)'
         % j.get('error'))
    s0 = sim.slots(0)[0]
    t.eq((s0['hash'], s0['confirmed']), (old, True), 'the watch runs its old image')
    t.eq(sim.slots(0)[1]['hash'] != img, True, 'nothing of the new image is pending')


def test_lost(gw, sim, img):
    st, job = gw.update('w1', img)
    gw.wait_phase(job['id'], ('wait',), timeout=60)
    sim.ctl({'cmd': 'range', 'device': 1, 'in_range': False})
    t0 = time.monotonic()
    j = gw.wait_job(job['id'], timeout=40)
    t.eq(j['state'], 'lost', 'out of range after its reset: lost (%s)' % j.get('error'))
    t.ok(time.monotonic() - t0 < 20, 'lost after the boot timeout, not retried forever')
    sim.ctl({'cmd': 'range', 'device': 1, 'in_range': True})
    # Back in range, it runs the new image unconfirmed: a new job confirms
    # it (having seen it run) without uploading anything.
    st, job = gw.update('w1', img)
    j = gw.wait_job(job['id'], timeout=60)
    t.eq((j['state'], j['skipped_upload'], j['up_to_date']), ('done', True, False),
         'back in range: a new job confirms what runs, no upload')
    s0 = sim.slots(1)[0]
    t.eq((s0['hash'], s0['confirmed']), (img, True), 'back in range: confirmed')


def test_cancel(gw, sim, img3k, img350):
    st, a = gw.update('w2', img350, mode='upload')
    st, b = gw.update('w2', img3k, mode='upload')
    t.eq(gw.job(b['id'])['state'], 'queued', 'second job on the same watch waits')
    st, d = gw.request('DELETE', '/api/v1/jobs/%d' % b['id'])
    t.eq((st, d['state']), (200, 'canceled'), 'cancel a queued job')
    gw.wait_phase(a['id'], ('upload',), min_bytes=60000)
    st, d = gw.request('DELETE', '/api/v1/jobs/%d' % a['id'])
    t.eq((st, d['state']), (200, 'canceled'), 'cancel mid-upload')
    s = sim.slots(2)
    t.eq((s[0]['confirmed'], s[1]['pending']), (True, False),
         'mid-upload cancel: the old image runs, nothing pending')
    st, d = gw.request('DELETE', '/api/v1/jobs/%d' % a['id'])
    t.eq(st, 409, 'cancel a finished job: 409')
    # The next job resumes the watch's own upload session (same sha).
    st, c = gw.update('w2', img350, mode='upload')
    j = gw.wait_job(c['id'], timeout=90)
    t.eq(j['state'], 'done', 'a new job after the cancel completes')
    t.ok(j['progress']['bytes_sent'] < os.path.getsize(IMG350) * 0.9,
         'it resumed the session the canceled job left (%d bytes sent)' %
         j['progress']['bytes_sent'])
    # After the test mark: nothing is confirmed, the watch is not reset.
    st, e = gw.update('w3', img3k, mode='test-confirm')
    gw.wait_phase(e['id'], ('wait',), timeout=60)
    st, d = gw.request('DELETE', '/api/v1/jobs/%d' % e['id'])
    t.eq((st, d['state']), (200, 'canceled'), 'cancel while waiting for the reboot')
    t.ok('nothing is confirmed' in (d.get('error') or ''), 'the job says what was left')
    time.sleep(4)
    s0 = sim.slots(3)[0]
    t.eq(s0['confirmed'] and s0['hash'] == img3k, False,
         'the test image was never confirmed')


def main():
    with session(tap=t) as (wd, run):
        sim, gw = sim_and_gateway(run, wd, CONF, count=4)
        img3k, img350 = map(gw.add_image, (IMG3K, IMG350))
        test_rollback(gw, sim, wd)
        test_lost(gw, sim, img3k)
        test_cancel(gw, sim, img3k, img350)
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
