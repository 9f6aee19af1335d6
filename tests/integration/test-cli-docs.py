#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs the ```console examples of docs/cli.md exactly as written, in order,
in one bash, against a hermetic smpgwd managing five simulated watches over
the BLE path (the simulator plays bluetoothd on a private bus), as on a
Raspberry Pi. Only the daemon's address is given, through $SMPGW_URL (the
variable docs/cli.md names); `smpgw` is the one just built, first on PATH.

An example is a line `$ COMMAND`; the lines after it, up to the next `$ `
or the end of the block, are what the docs show it printing (standard
output and error together). Checked for every command:
- it exits 0, unless the docs' next command is `echo $?`: then that
  command's shown output is the exit status;
- what it printed matches what the docs show, line by line (whitespace
  runs count as one space). A line `...` stands for any number of lines.
  What varies from run to run is left out of the comparison: clock times
  and dates, durations ("0s ago", "ETA 17s", "took 25.4s", "after 0 ms"),
  members of events that are times or rates, and every figure of a line
  that shows a rate (a progress line).
"""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_harness import CLI_NEEDS  # noqa: E402
from updates_harness import BLE_NEEDS, Tap, ble_sim_and_gateway, conformance_image, session

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, '..', '..', 'docs', 'cli.md')
IMAGE = 'app-1.2.3+4.signed.bin'  # the file name the examples use
CONF = '\n'.join(['[ble]', 'connect_timeout = 20s', '[request]', 'timeout = 5s',
                  'connect_timeout = 30s', '[update]', 'boot_timeout = 60s'])
MARK = '@@cli-docs@@'

t = Tap()


def examples(text):
    """[(block number, command, [lines shown])] of every ```console block."""
    out = []
    for n, block in enumerate(re.findall(r'^```console\n(.*?)^```$', text, re.M | re.S)):
        for line in block.splitlines():
            if line.startswith('$ '):
                out.append((n + 1, line[2:], []))
            elif out and out[-1][0] == n + 1:
                out[-1][2].append(line)
            else:
                raise AssertionError('docs/cli.md block %d: output before a command: %r'
                                     % (n + 1, line))
    return out


VARIES = [
    (re.compile(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ'), '<date>'),
    (re.compile(r'\b\d\d:\d\d:\d\d\.\d{3}\b'), '<time>'),
    (re.compile(r'\b(\w+_ms|\w+_s|rate)=[\d.e+-]+'), r'\1=<n>'),
    (re.compile(r'\b\d+(\.\d+)? ?(ms|s)\b'), '<dur>'),
    (re.compile(r'\b\d+:\d\d\b'), '<dur>'),
    (re.compile(r'\b\d+h\d\dm\b'), '<dur>'),
]


def norm(line):
    line = ' '.join(line.split())
    if re.search(r'(\d ?B|iB)/s\b|\d/min\b', line):
        return re.sub(r'\d+(\.\d+)?', '#', line)
    for rx, sub in VARIES:
        line = rx.sub(sub, line)
    return line


def matches(shown, got):
    """got (lines printed) against shown (the docs' lines, `...` for any
    number of lines)."""
    shown, got = [norm(s) for s in shown], [norm(g) for g in got]
    memo = {}

    def m(i, j):
        if (i, j) not in memo:
            if i == len(shown):
                r = j == len(got)
            elif shown[i] == '...':
                r = m(i + 1, j) or (j < len(got) and m(i, j + 1))
            else:
                r = j < len(got) and shown[i] == got[j] and m(i + 1, j + 1)
            memo[(i, j)] = r
        return memo[(i, j)]
    return m(0, 0)


def script(cmds):
    """One bash running every command in order, each framed by markers
    that carry its exit status; $? survives the markers for `echo $?`."""
    s = ['__rc=0']
    for i, (_, cmd, _) in enumerate(cmds):
        s += ["printf '%s start %d\\n'" % (MARK, i), '(exit $__rc)', cmd,
              "__rc=$?; printf '\\n%s end %d %%d\\n' $__rc" % (MARK, i)]
    return '\n'.join(s) + '\n'


def outputs(text, n):
    """[(exit status, [lines])] of the n commands, from the marked output."""
    res = []
    for i in range(n):
        m = re.search(r'^%s start %d\n(.*?)\n%s end %d (\d+)$' % (MARK, i, MARK, i), text,
                      re.M | re.S)
        if not m:
            res.append((None, []))
            continue
        lines = m.group(1).split('\n')
        while lines and lines[-1] == '':
            lines.pop()
        res.append((int(m.group(2)), lines))
    return res


def check(cmds, res):
    for i, ((block, cmd, shown), (rc, got)) in enumerate(zip(cmds, res)):
        where = 'block %d: $ %s' % (block, cmd)
        if rc is None:
            t.ok(False, where + ': did not run to its end')
            continue
        nxt = cmds[i + 1][1] if i + 1 < len(cmds) else ''
        if nxt.strip() == 'echo $?':
            t.ok(rc != 0, where + ': fails, as its `echo $?` shows (exit %d)' % rc)
        elif cmd.strip() != 'echo $?':
            t.eq(rc, 0, where + ': exit 0')
        if not matches(shown, got):
            print('# shown:\n#   ' + '\n#   '.join(shown))
            print('# printed:\n#   ' + '\n#   '.join(got))
            t.ok(False, where + ': prints what the docs show')
        elif shown:
            t.ok(True, where + ': prints what the docs show')


def self_test():
    """The matcher itself, on lines whose outcome is known."""
    t.ok(matches(['a', '...', 'z'], ['a', 'b', 'c', 'z']) and matches(['...'], []) and
         not matches(['a', 'z'], ['a', 'b', 'z']), 'matcher: ... stands for lines')
    t.ok(matches(['PineTime-1  down  1.0.0+0  2s ago'], ['PineTime-1 down 1.0.0+0 13s ago']) and
         not matches(['confirmed 1.2.3+4 on PineTime-3'], ['confirmed 1.2.3+5 on PineTime-3']),
         'matcher: ages vary, versions do not')


def main():
    with open(DOC) as f:
        cmds = examples(f.read())
    self_test()
    t.ok(len(cmds) >= 10 and all(c.startswith(('smpgw ', 'echo $?')) for _, c, _ in cmds),
         'docs/cli.md: %d examples, each `smpgw ...` or `echo $?`' % len(cmds))
    with session(tap=t, need=BLE_NEEDS + CLI_NEEDS) as (wd, run):
        sim, gw, _ = ble_sim_and_gateway(run, wd, CONF, 5)
        shutil.copy(conformance_image('app-1.2.3+4-ecdsa-p256.bin'), os.path.join(wd, IMAGE))
        cli_dir = os.path.dirname(os.path.abspath(os.environ['SMPGW_CLI']))
        env = dict(os.environ, SMPGW_URL=gw.base, PATH=cli_dir + os.pathsep + os.environ['PATH'],
                   LC_ALL='C')
        env.pop('SMPGW_TOKEN', None)
        p = subprocess.run(['bash', '-c', script(cmds)], cwd=wd, env=env, timeout=600,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        check(cmds, outputs(p.stdout, len(cmds)))
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
    t.done()


if __name__ == '__main__':
    main()
