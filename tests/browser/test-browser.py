#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Starts smpgwd with a simulated fleet (smpgw-sim, or built-in UDP devices
when the simulator is not built) and runs test-dashboard.js in headless
Chromium. Exit 77 (skip) when Chromium or playwright-core is missing."""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
import http_harness as H  # noqa: E402

CONF_DIR = os.environ.get('CONFORMANCE_DIR', os.path.join(HERE, '..', 'data', 'conformance'))


def main():
    if not os.path.exists('/usr/bin/chromium'):
        print('SKIP: /usr/bin/chromium missing (apt-get install chromium)')
        return 77
    if not os.path.isdir(os.path.join(HERE, 'node_modules', 'playwright-core')):
        print('SKIP: run npm ci in tests/browser')
        return 77
    sim = H.SimFleet({'count': 3}) if H.SimFleet.available() else None
    devs = sim.devices if sim else [H.FakeDevice('PineTime-%d' % i) for i in (1, 2, 3)]
    d = H.Daemon(devs)
    profile = tempfile.mkdtemp(prefix='smpgw-chromium-')
    try:
        env = dict(os.environ, SMPGW=d.base, TOKEN=H.TOKEN, PROFILE=profile,
                   DEVICES=','.join(x.name for x in devs),
                   IMAGE=os.path.join(CONF_DIR, 'images', 'app-1.2.3+4-ecdsa-p256.bin'))
        try:
            p = subprocess.run(['node', os.path.join(HERE, 'test-dashboard.js')], env=env,
                               timeout=180, cwd=HERE)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            print('not ok - browser test timed out')
            rc = 1
    finally:
        drc, log = d.close()
        if sim:
            sim.close()
        else:
            for x in devs:
                x.close()
        shutil.rmtree(profile, ignore_errors=True)
    if drc != 0:
        print(log)
        return 1
    return rc


if __name__ == '__main__':
    sys.exit(main())
