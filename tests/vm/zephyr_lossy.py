# SPDX-License-Identifier: MIT
"""VM tier: loss recovery against the REAL lossy Zephyr watch, run INSIDE
the VM (tests/vm/stage2.sh; btvirt without host flow control, so bursts
lose ACL fragments). smp-svr-ble-lossy (../shared/peers/zephyr: Zephyr
4.3.0 smp_svr with the default ACL RX buffers) takes hci1
(tests/vm/zephyr_peer.py), the real smpgwd manages it on hci0 through the
real bluetoothd with [request] timeout = 15s (the setting the 45 s
desync cost of three timeouts was seen with).

- desync: a 2000-byte echo through the gateway's UDP face loses fragments
  on the watch; its reassembly then swallows everything until the link
  drops. The gateway resets the link after that one unanswered request:
  the next echo is answered. The time from the lost echo to the next
  answer is the desync cost (docs/ble.md).
- update: a 350 KiB update job (mode upload) completes against the lossy
  watch; its time, lost frames and final window/frame are reported
  (docs/updates.md).
Prints TAP; 77 (SKIP) when the peers are absent.
"""
import time

import ble_scenarios as bs
import zephyr_scenarios as zs
from ble_scenarios import http, log, tap
from smp_udp_client import SmpError

IMAGE = 'app-3.1.0+7-350k-ecdsa-p256.bin'


def counters(addr):
    return (bs.device(addr) or {}).get('counters', {})


def desync(c, watch):
    """Up to 3 tries of a 2000-byte echo: one that goes unanswered (the
    watch lost fragments) must cost one timeout and one link reset."""
    addr = watch.address
    big = ''.join(chr(0x41 + i % 26) for i in range(2000))
    for attempt in range(1, 4):
        before = counters(addr)
        drops = watch.acl_drops()
        t = time.monotonic()
        try:
            answered = c.echo(big) == big
        except (TimeoutError, OSError, SmpError) as e:
            answered = False
            log('2000-byte echo %d: %r after %.1fs' % (attempt, e, time.monotonic() - t))
        if answered:
            log('2000-byte echo %d answered (%d ACL drops on the watch): again'
                % (attempt, watch.acl_drops() - drops))
            continue
        back = zs.first_echo(c, 120)
        cost = time.monotonic() - t
        after = counters(addr)
        log('DESYNC COST: %.1fs from the lost echo to the next answer (the next echo took '
            '%.1fs; ACL drops on the watch: %d)' % (cost, back, watch.acl_drops() - drops))
        tap.ok(watch.acl_drops() > drops, 'the lossy watch dropped ACL fragments (%d)'
               % (watch.acl_drops() - drops))
        tap.ok(after.get('timeout_resets', 0) - before.get('timeout_resets', 0) == 1 and
               after.get('timeouts', 0) - before.get('timeouts', 0) == 1,
               'one unanswered request, one link reset (timeouts +%d, resets +%d), then answered: '
               'desync cost %.1fs with timeout = 15s (three timeouts: 45s)'
               % (after.get('timeouts', 0) - before.get('timeouts', 0),
                  after.get('timeout_resets', 0) - before.get('timeout_resets', 0), cost))
        return cost
    tap.ok(False, 'three 2000-byte echoes answered: the watch lost nothing (is btvirt '
           'honouring host flow control?)')
    return None


def update(watch):
    image, want = zs.store_image(IMAGE)
    before = counters(watch.address)
    drops = watch.acl_drops()
    t = time.monotonic()
    j, seen = zs.wait_job(zs.submit(watch.address, want['sha256_tlv'], 'upload'), 1500)
    dt = time.monotonic() - t
    p = j.get('progress') or {}
    after = counters(watch.address)
    log('UPDATE: %d bytes in %.1fs (%.1f KB/s): %s lost frames, ended at %s in flight x %s '
        'bytes, %d link resets, %d timeouts, %d ACL drops on the watch; error %r'
        % (len(image), dt, len(image) / dt / 1000, p.get('lost_frames'), p.get('window'),
           p.get('frame'), after.get('timeout_resets', 0) - before.get('timeout_resets', 0),
           after.get('timeouts', 0) - before.get('timeouts', 0), watch.acl_drops() - drops,
           j.get('error')))
    tap.ok(j.get('state') == 'done', 'a 350 KiB update job (mode upload) completes against the '
           'lossy watch in %.0fs (phases: %s)' % (dt, ' '.join(str(s[1]) for s in seen)))
    s1 = bs.slot(bs.rest_images(watch.address), 1)
    tap.ok(s1 and s1.get('hash') == want['sha256_tlv'],
           'image %s complete in slot 1 of the lossy watch' % want['version'])
    return dt


def main():
    watch, gw, d, c = zs.setup('smp-svr-ble-lossy', client_timeout=40)
    dt = zs.first_echo(c)
    tap.ok(True, 'echo through the gateway to the lossy watch (first request connects: %.1fs)'
           % dt)
    desync(c, watch)
    update(watch)
    st, m = http('GET', '/api/v1/devices/%s' % watch.address)
    log('device counters: %r' % ((m or {}).get('counters'),))
    c.close()
    return bs.finish(gw, watch)


if __name__ == '__main__':
    bs.run_scenarios(main)
