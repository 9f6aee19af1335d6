# SPDX-License-Identifier: MIT
"""Jobs survive kill -9 of smpgwd: killed mid-upload, the restarted daemon
resumes from the watch's offset; killed after the test mark or while the
watch reboots, it finds out from the watch what happened and confirms only
an image it saw running; a watch that rolled back while the daemon was
dead is reported rolled back. Real smpgwd, smpgw-sim over UDP."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from updates_harness import Tap, conformance_image, session, sim_and_gateway, wait_for
import importlib.util

IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
IMG350 = conformance_image('app-3.1.0+7-350k-ecdsa-p256.bin')
IMG3K = conformance_image('app-0.9.0-3k-hash.bin')
CONF = '\n'.join(['[request]', 'timeout = 1s', 'first_chunk_timeout = 30s',
                  '[update]', 'boot_timeout = 40s', 'retry_timeout = 60s'])

t = Tap()


def outcomes_module():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        'outcomes', os.path.join(here, 'test-updates-outcomes.py'))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def restart(gw):
    gw.kill9()
    gw.start()


def test_mid_upload(gw, sim, img):
    size = os.path.getsize(IMG350)
    st, job = gw.update('w0', img)
    gw.wait_phase(job['id'], ('upload',), min_bytes=150000, timeout=60)
    restart(gw)
    j = gw.job(job['id'])
    t.ok(j is not None and j['state'] in ('queued', 'running'),
         'after kill -9 mid-upload the job is still there (%s)' % (j and j['state']))
    j = gw.wait_job(job['id'], timeout=150)
    t.eq(j['state'], 'done', 'kill -9 mid-upload: done after the restart (%s)' % j.get('error'))
    s0 = sim.slots(0)[0]
    t.eq((s0['hash'], s0['confirmed']), (img, True), 'the new image runs confirmed')
    t.ok(j['progress']['bytes_sent'] < size * 1.5,
         'resumed from the watch offset (%d bytes sent for %d)' %
         (j['progress']['bytes_sent'], size))


def test_mid_test(gw, sim, img, i, phases):
    st, job = gw.update('w%d' % i, img)
    if phases == ('wait',):
        gw.wait_phase(job['id'], phases, timeout=90)
    else:
        # The test mark is on the watch for a few hundred ms before the
        # reset lands: kill the daemon as soon as the watch shows it.
        wait_for('the test mark', lambda: sim.slots(i)[1]['pending'], timeout=90,
                 step=0.005)
    restart(gw)
    j = gw.wait_job(job['id'], timeout=120)
    t.eq(j['state'], 'done', 'kill -9 in %s: done after the restart (%s)' %
         ('/'.join(phases), j.get('error')))
    s0 = sim.slots(i)[0]
    t.eq((s0['hash'], s0['active'], s0['confirmed']), (img, True, True),
         'kill -9 in %s: the new image runs confirmed' % '/'.join(phases))


def test_rollback_while_dead(gw, sim, wd):
    path = os.path.join(wd, 'nonbootable.bin')
    outcomes_module().non_bootable(IMG3K, path)
    bad = gw.add_image(path)
    old = sim.slots(2)[0]['hash']
    st, job = gw.update('w2', bad)
    gw.wait_phase(job['id'], ('wait',), timeout=60)
    gw.kill9()

    def rolled_back():
        d = [d for d in sim.ctl({'cmd': 'list'})['devices'] if d['index'] == 2][0]
        return d['up'] and not d['slots'][1]['present'] and d['slots'][0]['hash'] == old
    # The watch reboots and MCUboot refuses the image (erases slot 1): wait
    # for that, not a fixed time, so the daemon really restarts after it.
    wait_for('w2 to boot the old image again', rolled_back, timeout=60, step=0.05)
    gw.start()
    j = gw.wait_job(job['id'], timeout=60)
    t.eq(j['state'], 'rolled_back', 'rolled back while the daemon was dead: reported '
         'rolled back (%s)' % j.get('error'))
    t.eq(sim.slots(2)[0]['hash'], old, 'the old image runs')


def main():
    with session(tap=t) as (wd, run):
        sim, gw = sim_and_gateway(run, wd, CONF, count=4)
        img350 = gw.add_image(IMG350)
        img = gw.add_image(IMG)
        test_mid_upload(gw, sim, img350)
        test_mid_test(gw, sim, img, 1, ('test', 'reset'))
        test_mid_test(gw, sim, img, 3, ('wait',))
        test_rollback_while_dead(gw, sim, wd)
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
