#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs the ```sh blocks of docs/rollouts.md's nightly example exactly as
written (bash -e -o pipefail, in order, one shell), with $SMPGW pointing at
a hermetic smpgwd managing three simulated watches. The daemon's clock is
set to noon in Berlin (outside the example's 02:00-05:00 window), so every
step sees the same states whatever the time of the run."""
import os
import datetime
import re
import shutil
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_fleet import NEEDS, Fleet, Gateway, executables, log, session  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, '..', '..', 'docs', 'rollouts.md')


def blocks():
    with open(DOC) as f:
        text = f.read()
    start = text.index('## A complete nightly example')
    end = text.index('\n## ', start + 1)
    return re.findall(r'^```sh\n(.*?)^```$', text[start:end], re.M | re.S)


def main():
    sh = blocks()
    if len(sh) < 2:
        raise AssertionError('docs/rollouts.md: expected its sh examples, found %d' % len(sh))
    with session(need=NEEDS + ('curl', 'jq')) as (wd, run):
        gw_exe, sim_exe, conf_dir = executables()
        fleet = run.start(Fleet(wd, sim_exe, 3))
        gw = run.add(Gateway(wd, gw_exe, fleet))
        noon = datetime.datetime.now(ZoneInfo('Europe/Berlin')).replace(
            hour=12, minute=0, second=0, microsecond=0)
        gw.start(time_offset_ms=int(noon.timestamp() * 1000) - int(time.time() * 1000))
        shutil.copy(os.path.join(conf_dir, 'images', 'app-0.9.0-3k-hash.bin'),
                    os.path.join(wd, 'app-1.1.0.signed.bin'))
        script = 'set -e -o pipefail\n' + '\n'.join(sh)
        out = subprocess.run(['bash', '-c', script], cwd=wd, capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, SMPGW=gw.base))
        log('output:\n# ' + out.stdout.replace('\n', '\n# '))
        if out.returncode != 0:
            raise AssertionError('the example failed (%d): %s' % (out.returncode, out.stderr))
        lst = gw.get('/api/v1/rollouts')['rollouts']
        if len(lst) != 1 or lst[0]['state'] != 'canceled' or lst[0]['devices'] != 3:
            raise AssertionError('expected one canceled rollout of 3 watches: %s' % lst)
        for needle in ('Rollout ro-1 "1.1.0 for everyone": waiting', '"paused"',
                       '"waiting"', '"canceled"',
                       'every night 02:00-05:00 Europe/Berlin'):
            if needle not in out.stdout:
                raise AssertionError('missing from the output: ' + needle)
        log('ok: the nightly example runs as written')
    return 0


if __name__ == '__main__':
    sys.exit(main())
