# SPDX-License-Identifier: MIT
"""The firmware's self-check gate, through the real smpgwd against
smpgw-sim over UDP: the watch refuses the confirm ({"err": {"group": 64,
"rc": 2}}) until its post-boot self-check passed (fleet key
self_check_ms). A test-confirm job retries the confirm every second: done
when the check passes 3 s after boot, failed with an error naming the
refusal when it never passes within [update] self_check_timeout. See
docs/updates.md."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from updates_harness import Tap, conformance_image, session, sim_and_gateway

IMG3K = conformance_image('app-0.9.0-3k-hash.bin')
CONF = '\n'.join(['[request]', 'timeout = 2s', 'first_chunk_timeout = 30s',
                  '[update]', 'boot_timeout = 30s', 'retry_timeout = 60s',
                  'self_check_timeout = 8s'])
FLEET = {'devices': [{'self_check_ms': 3000},
                                 {'self_check_ms': 86400000}]}

t = Tap()


def main():
    with session(tap=t) as (wd, run):
        sim, gw = sim_and_gateway(run, wd, CONF, count=2, fleet=FLEET)
        img = gw.add_image(IMG3K)
        st, a = gw.update('w0', img, mode='test-confirm')
        st, b = gw.update('w1', img, mode='test-confirm')
        j = gw.wait_job(a['id'], timeout=120)
        t.eq(j['state'], 'done', 'self-check passes 3 s after boot: the job is done (%s)'
             % j.get('error'))
        s0 = sim.slots(0)[0]
        t.eq((s0['hash'], s0['confirmed']), (img, True), 'the new image is confirmed')
        t.ok('(w0): confirm refused, self-check pending' in gw.read_log(),
             'the watch refused the confirm first; smpgwd asked again')
        j = gw.wait_job(b['id'], timeout=120)
        err = j.get('error') or ''
        t.eq(j['state'], 'failed', 'self-check never passes: the job fails (%s)' % err)
        t.ok('self-check has not passed' in err and 'group 64 rc 2' in err,
             'the error names the refusal')
        s0 = sim.slots(1)[0]
        t.eq((s0['hash'], s0['confirmed']), (img, False),
             'the watch runs the new image, unconfirmed (MCUboot reverts it)')
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
