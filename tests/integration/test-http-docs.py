#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs the curl examples of docs/rest-api.md exactly as written: every
```sh block, in order, in one bash (set -e -o pipefail), with $SMPGW and
$TOKEN pointing at a hermetic smpgwd and the simulated fleet (or built-in
UDP devices when the simulator is not built)."""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_harness as H  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, '..', '..', 'docs', 'rest-api.md')
CONF_DIR = os.environ.get('CONFORMANCE_DIR', os.path.join(HERE, '..', 'data', 'conformance'))


def blocks(text):
    return re.findall(r'^```sh\n(.*?)^```$', text, re.M | re.S)


def main():
    with open(DOC) as f:
        sh = blocks(f.read())
    assert len(sh) >= 8, 'expected the doc to have its examples, found %d' % len(sh)
    failed = 0
    with H.session(need=('SMPGWD',)) as (work, run):
        devs, d = H.fleet_and_daemon(run, 2)
        shutil.copy(os.path.join(CONF_DIR, 'images', 'app-1.2.3+4-ecdsa-p256.bin'),
                    os.path.join(work, 'app.signed.bin'))
        env = dict(os.environ, SMPGW=d.base, TOKEN=H.TOKEN)
        script = 'set -e -o pipefail\n'
        for i, b in enumerate(sh):
            script += 'echo "### example %d" >&2\n%s\n' % (i + 1, b)
        p = subprocess.run(['bash', '-c', script], cwd=work, env=env, timeout=120,
                           capture_output=True, text=True)
        print(p.stdout)
        print(p.stderr, file=sys.stderr)
        if p.returncode != 0:
            failed = 1
            print('not ok: examples failed (exit %d)' % p.returncode)
        else:
            print('%d examples ran' % len(sh))
        if '401' not in p.stdout:
            failed = 1
            print('not ok: the reset example without a token did not print 401')
        rc, log = d.close()
    if rc != 0:
        print(log)
        failed = 1
    print('%d passed, %d failed' % (1 - failed, failed))
    return failed

if __name__ == '__main__':
    sys.exit(main())
