# SPDX-License-Identifier: MIT
"""Torture over BLE: the real smpgwd, its upload engine and its BLE link
against smpgw-sim playing bluetoothd on a private bus. Update jobs run
through: link drops at random offsets (TORTURE_OFFSETS, 15 in CI, 100
nightly), reboots mid-upload and mid-swap, garbage, truncated, doubled and
wrong-sequence notifications, and bluetoothd (the simulator) restarting.
Throughout, two bystander watches answer echoes: none may fail. At the end
every job is done with the right image in the slot, and no watch runs a
confirmed image it did not boot.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torture import (OFFSETS, BleGateway, Bystanders, Client, Tap,  # noqa: E402
                     image_path, log, seeded_random, wait_for)
from gw_harness import BLE_NEEDS, bus_and_sim, free_udp_range, session  # noqa: E402

COUNT = 10
UPLOADERS = [0, 1, 2, 3]  # disconnect offsets
FAULTY = 4                # reboots, notification faults
SWAP = 5                  # mid-swap reboot
BYSTANDERS = [8, 9]
# Fast radio and flash: the faults are under test, not the waiting.
FLEET = {'adapters': [{'max_connections': 12}],
         'defaults': {'boot_ms': 300, 'link': {'conn_interval_us': 7500},
                      'flash': {'erase_sector_us': 2000, 'program_page_us': 20}}}
t = Tap()
rnd = seeded_random()


def conf_text(base):
    return '\n'.join([
        '[general]', 'log_level = debug',
        '[ble]', 'idle_timeout = 60s', 'connect_timeout = 10s',
        'max_connections_per_adapter = 12',
        '[udp]', 'base_port = %d' % base,
        '[request]', 'timeout = 2s', 'connect_timeout = 20s', 'first_chunk_timeout = 20s',
        '[update]', 'boot_timeout = 40s', 'retry_timeout = 120s', 'max_per_adapter = 8']) + '\n'


class Fleet:
    def __init__(self, sim, gw, addrs, ports, img, size):
        self.sim, self.gw, self.addrs, self.ports = sim, gw, addrs, ports
        self.img, self.size = img, size
        self.jobs = []  # (device index, job id, what)

    def erase(self, i):
        c = Client(self.ports[self.addrs[i]], timeout=20)
        try:
            c.request(2, 1, 5, {}, check=False)
        finally:
            c.close()

    def slot(self, i, n):
        """Slot n of watch i as the simulator sees it (None: empty)."""
        for d in self.sim.ctl({'cmd': 'list'})['devices']:
            if d['address'] == self.addrs[i]:
                s = d['slots'][n]
                return s if s.get('present') else None
        return None

    def submit(self, i, what, mode='upload'):
        st, job = self.gw.update(self.addrs[i], self.img, mode=mode)
        if st not in (200, 201, 202):
            raise RuntimeError('%s: update refused: %s %r' % (what, st, job))
        self.jobs.append((i, job['id'], what))
        return job['id']

    def ctl(self, req):
        r = self.sim.ctl(req)
        if not r.get('ok'):
            raise RuntimeError('sim ctl %r: %r' % (req, r))
        return r


def slot_hash(fleet, i, n):
    s = fleet.slot(i, n)
    return s.get('hash') if s else None


def disconnect_offsets(fleet):
    """OFFSETS uploads, each with the link dropping at a random offset,
    four watches at a time."""
    per = (OFFSETS + len(UPLOADERS) - 1) // len(UPLOADERS)
    bad = []
    done = 0
    t0 = time.monotonic()
    for rnd_i in range(per):
        jobs = []
        for i in UPLOADERS:
            if done + len(jobs) >= OFFSETS:
                break
            fleet.erase(i)
            off = rnd.randrange(1, fleet.size)
            fleet.ctl({'cmd': 'fault', 'device': fleet.addrs[i],
                       'fault': 'disconnect_at_offset', 'offset': off})
            jobs.append((i, off, fleet.submit(i, 'disconnect at %d' % off)))
        for i, off, jid in jobs:
            j = fleet.gw.wait_job(jid, timeout=120)
            h = slot_hash(fleet, i, 1)
            if j['state'] != 'done' or h != fleet.img:
                bad.append((i, off, j['state'], j.get('error'), h))
            fleet.ctl({'cmd': 'fault', 'device': fleet.addrs[i], 'fault': 'clear'})
        done += len(jobs)
    t.eq(bad, [], '%d uploads, each with a link drop at a random offset: all done, '
         'image complete (%.0f s)' % (done, time.monotonic() - t0))


def upload_with(fleet, what, fault_fn, min_bytes=20000):
    """One upload on FAULTY; fault_fn runs once the upload is under way."""
    i = FAULTY
    fleet.erase(i)
    jid = fleet.submit(i, what)
    try:
        fleet.gw.wait_phase(jid, ('upload',), timeout=60, min_bytes=min_bytes)
        fault_fn(i)
    except RuntimeError as e:  # finished before the fault: still checked
        log('%s: %s' % (what, e))
    j = fleet.gw.wait_job(jid, timeout=120)
    fleet.ctl({'cmd': 'fault', 'device': fleet.addrs[i], 'fault': 'clear'})
    t.ok(j['state'] == 'done' and slot_hash(fleet, i, 1) == fleet.img,
         '%s: upload done, image complete (%s %s)' % (what, j['state'], j.get('error')))


def notification_faults(fleet):
    upload_with(fleet, 'reboot mid-upload',
                lambda i: fleet.ctl({'cmd': 'reboot', 'device': fleet.addrs[i]}))
    for fault in ('corrupt_notification', 'truncate_notification', 'answer_twice',
                  'wrong_seq'):
        upload_with(fleet, '%s x3 mid-upload' % fault,
                    lambda i, f=fault: fleet.ctl({'cmd': 'fault', 'device': fleet.addrs[i],
                                                  'fault': f, 'count': 3}))
    # Every reply of a whole upload doubled / garbled at random moments.
    upload_with(fleet, 'every reply twice',
                lambda i: fleet.ctl({'cmd': 'fault', 'device': fleet.addrs[i],
                                     'fault': 'answer_twice', 'count': 1000}), min_bytes=0)


def mid_swap(fleet):
    """test-confirm; the watch reboots again while MCUboot swaps. Whatever
    the outcome, the new image is confirmed only if the watch booted it."""
    i = SWAP
    jid = fleet.submit(i, 'reboot mid-swap', mode='test-confirm')
    try:
        fleet.gw.wait_phase(jid, ('wait',), timeout=90)
        time.sleep(0.1)  # inside the boot (swap) of 300 ms + swap time
        fleet.ctl({'cmd': 'reboot', 'device': fleet.addrs[i]})
    except RuntimeError as e:
        log('mid-swap: %s' % e)
    j = fleet.gw.wait_job(jid, timeout=150)
    s0 = fleet.slot(i, 0) or {}
    new_confirmed = s0.get('hash') == fleet.img and s0.get('confirmed')
    log('mid-swap: job %s (%s); slot 0 %r' % (j['state'], j.get('error'), s0))
    t.ok(j['state'] in ('done', 'rolled_back', 'lost', 'failed'),
         'reboot mid-swap: the job ends (%s)' % j['state'])
    t.ok(not new_confirmed or (j['state'] == 'done' and s0.get('active')),
         'reboot mid-swap: the new image is confirmed only when running and the job done')


# The restart's uploads: the 350 kB image, so that they are still under way
# when the simulator goes (a 100 kB upload on the fast fleet finished first).
RESTART_IMAGE = 'app-3.1.0+7-350k-ecdsa-p256.bin'
RESTART_AT = 30000  # bytes every upload has passed when bluetoothd goes
SLOW_LINK = {'conn_interval_us': 30000, 'pkts_per_event': 2}  # ~16 kB/s


def bluetoothd_restart(fleet, by):
    """The simulator (bluetoothd and every watch with it) goes away during
    three uploads and comes back fresh. The simulator keeps the watches'
    state in memory only, so its restart is also a power cycle of every
    watch: slot 1 comes back empty, the upload session is gone, and each
    job's upload starts over from offset 0 on the fresh watch (no resume
    from the old offset is possible) and must still end done with the
    complete image in slot 1. The jobs are plain uploads (no test/confirm):
    slot 0 must not end up holding the new image confirmed."""
    img = fleet.gw.add_image(image_path(RESTART_IMAGE))
    with open(image_path(RESTART_IMAGE), 'rb') as f:
        size = len(f.read())
    jobs = []
    for i in UPLOADERS[:3]:
        fleet.erase(i)
        # A slower radio for these three (the fast fleet's link moves
        # ~130 kB/s: 350 kB could still finish while the simulator stops).
        # The fresh watches after the restart are fast again.
        r = fleet.ctl({'cmd': 'link', 'device': fleet.addrs[i], 'link': SLOW_LINK})
        log('restart: watch %d link %r' % (i, r.get('link')))
        st, job = fleet.gw.update(fleet.addrs[i], img, mode='upload')
        if st not in (200, 201, 202):
            raise RuntimeError('bluetoothd restart: update refused: %s %r' % (st, job))
        fleet.jobs.append((i, job['id'], 'bluetoothd restart'))
        jobs.append((i, job['id']))
    # Stop the simulator only once every upload is past RESTART_AT (from
    # the job's progress), so that the restart really lands mid-upload.
    at = []
    for _, jid in jobs:
        j = fleet.gw.wait_phase(jid, ('upload',), timeout=90, min_bytes=RESTART_AT)
        at.append(j['progress']['bytes'])
    by.pause()
    fleet.sim.stop()
    during = [fleet.gw.job(jid) for _, jid in jobs]
    mid = all(j and j['state'] in ('queued', 'running') for j in during)
    log('restart: uploads at %r of %d bytes; after the stop: %r' % (
        at, size, [(j['state'], j['phase'], j['progress']['bytes']) for j in during if j]))
    time.sleep(1.0)
    alive = fleet.gw.proc.poll() is None
    fleet.sim.start()
    by.resume(settle=0)
    bad = []
    confirmed = []
    for i, jid in jobs:
        j = fleet.gw.wait_job(jid, timeout=180)
        if j['state'] != 'done' or slot_hash(fleet, i, 1) != img:
            bad.append((i, j['state'], j.get('error')))
        s0 = fleet.slot(i, 0) or {}
        if s0.get('hash') == img and s0.get('confirmed'):
            confirmed.append((i, s0))
    t.ok(mid, 'bluetoothd goes away while the 3 uploads run (past %d of %d bytes)'
         % (RESTART_AT, size))
    t.ok(alive, 'smpgwd survives bluetoothd going away')
    t.eq(bad, [], 'bluetoothd restart during 3 uploads: the uploads start over on the '
         'power-cycled watches, every job done, image complete')
    t.eq(confirmed, [], 'bluetoothd restart: no image confirmed without booting it')


def bystanders_ready(by_ports):
    def answers():
        for p in by_ports:
            c = Client(p, timeout=5)
            try:
                c.echo('warm')
            except Exception:  # noqa: BLE001
                return False
            finally:
                c.close()
        return True
    wait_for('the bystanders to answer', answers, timeout=60, step=0.5)


def main():
    size = os.path.getsize(image_path())
    with session(need=BLE_NEEDS, tail_lines=80) as (wd, run):
        addr, sim = bus_and_sim(run, wd, COUNT, fleet=FLEET)
        addrs = [d['address'] for d in sim.ctl({'cmd': 'list'})['devices']]
        gw = run.add(BleGateway(wd, conf_text(free_udp_range(COUNT + 4))))
        ports = gw.start(addrs, bluez_bus=addr, timeout=60)
        img = gw.add_image(image_path())
        fleet = Fleet(sim, gw, addrs, ports, img, size)
        by_ports = [ports[addrs[i]] for i in BYSTANDERS]
        bystanders_ready(by_ports)
        by = run.start(Bystanders(by_ports))
        disconnect_offsets(fleet)
        notification_faults(fleet)
        mid_swap(fleet)
        bluetoothd_restart(fleet, by)
        by.stop()
        t.ok(by.count > 0, 'bystanders answered %d echoes' % by.count)
        t.eq(by.failures[:5], [], 'no bystander echo failed or took > 5 s')
        t.ok(gw.proc.poll() is None, 'smpgwd alive at the end')
        st, body = gw.request('GET', '/api/v1/jobs')
        lst = body.get('jobs', body) if isinstance(body, dict) else body
        t.ok(st == 200 and len(lst) >= len(fleet.jobs),
             'every job still listed (%d submitted)' % len(fleet.jobs))
        t.eq(gw.stop(timeout=20), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
