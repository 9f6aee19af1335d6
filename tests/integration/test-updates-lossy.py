# SPDX-License-Identifier: MIT
"""Loss recovery over the BLE path against the simulator's lossy watch
(fault lossy_burst: a write lost under a burst, then the watch's reassembly
swallows every request until the link drops, like Zephyr's smp_svr short of
ACL buffers). smpgwd talks to smpgw-sim playing bluetoothd on a private bus.

- A 350 KiB upload job converges: frames in flight and frame size shrink
  (job progress, log, metrics), each desync costs one unanswered request and
  one link reset.
- A UDP-face client gets the same quick recovery: after its 2000-byte echo
  desynchronised the watch and timed out, its next request is answered.
- Bad input from a watch (garbage notifications, answers to requests never
  sent, a response cut mid-way): counted, nothing crashes, the next request
  is answered.
- A watch that stops taking anything mid-upload: the job fails after
  [update] stall_timeout with an error naming what was tried, and the
  rollout it belongs to counts it as failed; the store keeps every job."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smp_udp_client import Client, SmpError  # noqa: E402
from updates_harness import (BLE_NEEDS, Tap, ble_sim_and_gateway, conformance_image,  # noqa: E402
                             log, session, wait_for)

IMG = conformance_image('app-3.1.0+7-350k-ecdsa-p256.bin')
STALL_S = 15
CONF = '\n'.join(['[ble]', 'connect_timeout = 20s', 'idle_timeout = 60s',
                  '[request]', 'timeout = 2s', 'connect_timeout = 30s',
                  'first_chunk_timeout = 5s',
                  '[update]', 'boot_timeout = 60s', 'retry_timeout = 600s',
                  'stall_timeout = %ds' % STALL_S])
FAST = {'erase_sector_us': 2000, 'program_page_us': 20, 'progressive_erase': True}
LINK = {'conn_interval_us': 7500, 'phy': 2}
FLEET = {'count': 3, 'devices': [{'flash': FAST, 'link': LINK}] * 3}

t = Tap()


def counters(gw, addr):
    return gw.request('GET', '/api/v1/devices/%s' % addr)[1]['counters']


def metric(gw, name):
    """Sum of a metric's series in GET /metrics."""
    import urllib.request
    with urllib.request.urlopen(gw.base + '/metrics', timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name))


def lossy(sim, i, writes=3, on=True):
    sim.ctl({'cmd': 'fault', 'device': i, 'fault': 'lossy_burst', 'writes': writes,
             'on': on})


def converge(gw, sim, addr, img):
    """A 350 KiB upload against the lossy watch completes."""
    lossy(sim, 0)
    t0 = time.monotonic()
    st, job = gw.update(addr, img, mode='upload')
    t.eq(st, 202, 'lossy: job queued')
    j = gw.wait_job(job['id'], timeout=600)
    took = time.monotonic() - t0
    t.eq(j['state'], 'done', 'lossy: 350 KiB upload done (%s)' % j.get('error'))
    t.eq(sim.slots(0)[1]['hash'], img, 'lossy: the image is complete in slot 1')
    p = j['progress']
    bz = sim.ctl({'cmd': 'counters'})['bluez']
    c = counters(gw, addr)
    log('lossy: %.1f s for %d bytes, %d lost frames, ended at %d in flight x %d bytes; '
        'watch desyncs %d, link resets %d, timeouts %d' %
        (took, p['total'], p['lost_frames'], p['window'], p['frame'],
         bz['lossy_desyncs'], c['timeout_resets'], c['timeouts']))
    t.ok(bz['lossy_desyncs'] >= 1, 'lossy: the watch desynchronised (%d)' % bz['lossy_desyncs'])
    t.ok(p['lost_frames'] >= bz['lossy_desyncs'],
         'lossy: every desync seen as a lost frame (%d)' % p['lost_frames'])
    t.ok(p['window'] == 1 and p['frame'] < 2475 and p['frame'] % 495 == 0,
         'lossy: window and frame shrank in whole writes (%d x %d)' % (p['window'], p['frame']))
    t.ok(c['timeout_resets'] >= bz['lossy_desyncs'],
         'lossy: each desync reset the link (%d resets)' % c['timeout_resets'])
    t.ok(c['timeouts'] <= c['timeout_resets'] + 2,
         'lossy: about one timeout per reset, not three (%d timeouts, %d resets)' %
         (c['timeouts'], c['timeout_resets']))
    text = gw.read_log()
    t.ok('upload: a chunk went unanswered' in text and 'frames of 2475 -> ' in text,
         'lossy: the shrink is logged')
    t.ok(metric(gw, 'smpgw_upload_lost_frames_total') >= p['lost_frames'],
         'lossy: lost frames in the metrics')
    lossy(sim, 0, on=False)


def udp_face(gw, sim, addr):
    """A UDP client's request desynchronises the watch: one timeout, then
    the link is reset and its next request is answered."""
    port = gw.request('GET', '/api/v1/devices/%s' % addr)[1]['udp_port']
    cli = Client(port, timeout=15)
    try:
        t.eq(cli.echo('hello'), 'hello', 'UDP face: echo through the gateway')
        lossy(sim, 1)
        resets = counters(gw, addr)['timeout_resets']
        t0 = time.monotonic()
        try:
            cli.echo('x' * 2000)
            t.ok(False, 'UDP face: the 2000-byte echo should have been lost')
        except SmpError as e:
            t.ok(True, 'UDP face: the lost echo answered with an SMP error (rc %s)' % e.rc)
        answer = cli.echo('after')
        log('UDP face: desync cost %.1f s (request timeout 2 s)' % (time.monotonic() - t0))
        t.eq(answer, 'after', 'UDP face: the next request answered after one timeout')
        t.eq(counters(gw, addr)['timeout_resets'], resets + 1, 'UDP face: one link reset')
    finally:
        lossy(sim, 1, on=False)
        cli.close()


def bad_input(gw, sim, addr):
    """Garbage, answers to requests never sent, a response cut mid-way."""
    port = gw.request('GET', '/api/v1/devices/%s' % addr)[1]['udp_port']
    cli = Client(port, timeout=15)
    before = counters(gw, addr)
    try:
        for fault in ('garbage_notification', 'unsolicited_answer'):
            sim.ctl({'cmd': 'fault', 'device': 1, 'fault': fault, 'count': 3})
            for k in range(3):
                t.eq(cli.echo('%s %d' % (fault, k)), '%s %d' % (fault, k),
                     '%s: the real answer still arrives (%d)' % (fault, k))
        sim.ctl({'cmd': 'fault', 'device': 1, 'fault': 'truncate_notification'})
        try:
            cli.echo('y' * 1500)
            t.ok(False, 'a response cut mid-way should not be delivered')
        except SmpError as e:
            t.ok(True, 'a response cut mid-way: SMP error to the client (rc %s)' % e.rc)
        t.eq(cli.echo('next'), 'next', 'the request after the cut answer is answered')
    finally:
        sim.ctl({'cmd': 'fault', 'device': 1, 'fault': 'clear'})
        cli.close()
    after = counters(gw, addr)
    t.ok(after['malformed_responses'] - before['malformed_responses'] >= 3,
         'garbage counted as malformed responses (%d)' %
         (after['malformed_responses'] - before['malformed_responses']))
    t.ok(after['dropped_responses'] - before['dropped_responses'] >= 3,
         'answers to requests never sent counted as dropped (%d)' %
         (after['dropped_responses'] - before['dropped_responses']))
    text = gw.read_log()
    t.ok('no SMP response' in text, 'garbage logged')


def stall(gw, sim, addr, img):
    """Mid-upload the watch stops taking anything: the job fails after
    stall_timeout naming what was tried; its rollout counts the failure."""
    lossy(sim, 2)
    st, ro = gw.request('POST', '/api/v1/rollouts', {
        'image': img, 'target': {'devices': [addr]}, 'mode': 'upload',
        'max_concurrent': 1, 'retry_interval_s': 3600})
    t.eq(st, 201, 'stall: rollout created (%r)' % (ro if st != 201 else ''))

    def job_id():
        d = gw.request('GET', '/api/v1/rollouts/%s' % ro['id'])[1]['device_list'][0]
        return d.get('job_id')
    jid = wait_for('the rollout job', job_id, timeout=60, step=0.2)
    gw.wait_phase(jid, ('upload',), timeout=120, min_bytes=30000)
    lossy(sim, 2, writes=0)
    t0 = time.monotonic()
    j = gw.wait_job(jid, timeout=STALL_S * 4 + 60)
    log('stall: failed %.1f s after the watch stopped: %s' % (time.monotonic() - t0,
                                                             j.get('error')))
    t.eq(j['state'], 'failed', 'stall: the job failed')
    err = j.get('error') or ''
    t.ok(err.startswith('stalled: no progress for %d s' % STALL_S) and 'stall_timeout' in err
         and 'frames of' in err and 'link resets' in err,
         'stall: the error names the bound and what was tried')

    def counted():
        r = gw.request('GET', '/api/v1/rollouts/%s' % ro['id'])[1]
        return r if r['totals'].get('failed') == 1 else None
    r = wait_for('the rollout to count the failure', counted, timeout=30, step=0.2)
    t.eq(r['device_list'][0]['state'], 'failed', 'stall: the rollout counts it failed')
    t.ok('stalled' in (r['device_list'][0].get('error') or ''),
         'stall: the rollout shows the reason')
    lossy(sim, 2, on=False)


def main():
    with session(tap=t, need=BLE_NEEDS) as (wd, run):
        sim, gw, addrs = ble_sim_and_gateway(run, wd, CONF, 3, fleet=FLEET)
        img = gw.add_image(IMG)
        converge(gw, sim, addrs[0], img)
        udp_face(gw, sim, addrs[1])
        bad_input(gw, sim, addrs[1])
        stall(gw, sim, addrs[2], img)
        st, jobs = gw.request('GET', '/api/v1/jobs')
        t.eq(sorted(j['state'] for j in jobs['jobs']), ['done', 'failed'],
             'the store lists both jobs, done and failed')
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
