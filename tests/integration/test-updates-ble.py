# SPDX-License-Identifier: MIT
"""Update jobs over the BLE path: smpgwd talks to smpgw-sim playing
bluetoothd on a private D-Bus bus. A full test-confirm update with frames
split over writes (reassembly) and pipelined; a link drop in the middle of
an upload (the job reconnects and resumes from the watch's offset); a
watch without SMP reassembly (the engine finds out and sends one write per
frame); the reset drops the link and the job waits for the reconnection."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from updates_harness import BLE_NEEDS, Tap, ble_sim_and_gateway, conformance_image, session

IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
CONF = '\n'.join(['[ble]', 'connect_timeout = 20s', 'idle_timeout = 30s',
                  '[request]', 'timeout = 5s', 'connect_timeout = 30s',
                  '[update]', 'boot_timeout = 60s', 'retry_timeout = 60s'])
FAST = {'erase_sector_us': 2000, 'program_page_us': 20, 'progressive_erase': True}
FLEET = {'count': 3, 'devices': [
    {'flash': FAST, 'link': {'conn_interval_us': 7500, 'phy': 2}},
    {'flash': FAST, 'link': {'conn_interval_us': 7500, 'phy': 2}},
    {'flash': FAST, 'link': {'conn_interval_us': 7500, 'phy': 2, 'reassembly': False}}]}

t = Tap()


def main():
    with session(tap=t, need=BLE_NEEDS) as (wd, run):
        sim, gw, addrs = ble_sim_and_gateway(run, wd, CONF, 3, fleet=FLEET)
        img = gw.add_image(IMG)

        st, job = gw.update(addrs[0], img)
        t.eq(st, 202, 'BLE: job queued')
        j = gw.wait_job(job['id'], timeout=120)
        t.eq(j['state'], 'done', 'BLE: test-confirm done (%s)' % j.get('error'))
        s0 = sim.slots(0)[0]
        t.eq((s0['hash'], s0['confirmed']), (img, True), 'BLE: new image confirmed')
        logtext = gw.read_log()
        t.ok('SMP reassembly works' in logtext, 'BLE: reassembly probed')
        t.eq(sim.device(0)['counters']['drops'], 0,
             'BLE: the watch dropped no frame (none over buf_size, split over writes)')

        size = os.path.getsize(IMG)
        sim.ctl({'cmd': 'fault', 'device': 1, 'fault': 'disconnect_at_offset',
                 'offset': 50000})
        st, job = gw.update(addrs[1], img, mode='upload')
        j = gw.wait_job(job['id'], timeout=120)
        t.eq(j['state'], 'done', 'BLE: link dropped mid-upload, done (%s)' % j.get('error'))
        t.eq(sim.slots(1)[1]['hash'], img, 'BLE: image complete after the drop')
        t.ok(j['progress']['bytes_sent'] < size * 1.3,
             'BLE: resumed from the watch offset (%d sent for %d)' %
             (j['progress']['bytes_sent'], size))

        st, job = gw.update(addrs[2], img, mode='upload')
        j = gw.wait_job(job['id'], timeout=240)
        t.eq(j['state'], 'done', 'BLE without reassembly: done (%s)' % j.get('error'))
        t.eq(sim.slots(2)[1]['hash'], img, 'BLE without reassembly: image complete')
        t.ok('does not answer: one write per frame' in gw.read_log(),
             'BLE without reassembly: found out, one write per frame')
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
