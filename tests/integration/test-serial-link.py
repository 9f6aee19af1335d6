# SPDX-License-Identifier: MIT
"""smpgwd's serial link (Zephyr "SMP over console" framing) against the
simulator's ptys, driven through the device's UDP endpoint: echo, params,
image state, a full image upload, and recovery after the watch reboots.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gw_harness import Gateway, Sim, Tap, log, session  # noqa: E402
from smp_udp_client import Client, conformance_image, slot  # noqa: E402

IMAGE = 'app-0.9.0-3k-hash.bin'


def conf_text(ptys):
    lines = ['[general]', 'log_level = debug', '[ble]', 'enabled = no',
             '[udp]', 'base_port = 0',
             '[request]', 'timeout = 5s', 'connect_timeout = 3s']
    for i, path in enumerate(ptys):
        lines += ['[device "s%d"]' % i, 'transport = serial', 'path = %s' % path,
                  'baud = 115200']
    lines += ['[device "missing"]', 'transport = serial', 'path = /nonexistent/tty']
    return '\n'.join(lines) + '\n'


def main():
    t = Tap()
    with session(tail_lines=40) as (wd, run):
        image, want_hash = conformance_image(os.environ['CONFORMANCE_DIR'], IMAGE)
        sim = run.start(Sim(wd, 2, extra=['--serial']))
        ptys = [d['pty'] for d in sim.ctl({'cmd': 'list'})['devices']]
        t.ok(all(ptys), 'simulator gave every watch a pty')
        gw = run.add(Gateway(wd, conf_text(ptys)))
        ports = gw.start(['s0', 's1', 'missing'])

        for i in range(2):
            c = Client(ports['s%d' % i], timeout=15)
            t.eq(c.echo('over serial %d' % i), 'over serial %d' % i,
                 'echo over the serial link s%d' % i)
            c.close()
        c = Client(ports['s0'], timeout=15)
        params = c.params()
        t.ok(params.get('buf_size', 0) > 0, 'mcumgr params over serial: %r' % params)
        t.ok(slot(c.image_state(), 0) is not None, 'image state over serial')
        t0 = time.monotonic()
        rounds = c.upload(image, params['buf_size'])
        log('serial upload: %d bytes, %d requests, %.1f s' %
            (len(image), rounds, time.monotonic() - t0))
        s1 = slot(c.image_state(), 1)
        t.ok(s1 is not None and s1.get('hash') == want_hash,
             'uploaded image in slot 1 with the manifest hash')
        c.image_test(want_hash)
        c.reset()
        s0 = c.wait_booted(want_hash, timeout=60)
        t.ok(s0.get('active'), 'new image active after reset over serial')
        c.image_confirm()
        t.ok(slot(c.image_state(), 0).get('confirmed'), 'confirmed over serial')
        c.close()

        m = Client(ports['missing'], timeout=15)
        t0 = time.monotonic()
        _, rsp = m.request(0, 0, 0, {}, check=False)
        t.eq(rsp, {'err': {'group': 0, 'rc': 6}},
             'a serial device that cannot be opened: rc 6')
        t.ok(time.monotonic() - t0 < 10, 'within the connect timeout')
        m.close()
        t.eq(gw.stop(), 0, 'clean exit')
    t.done()


if __name__ == '__main__':
    main()
