# SPDX-License-Identifier: MIT
"""Runs the smpgw client (src/cli, docs/cli.md) for the CLI tests: piped
(exit status, stdout, stderr) or under a pseudo-terminal (exit status and
everything it drew), with SMPGW_URL and SMPGW_TOKEN set; bounded in time.
"""
import os
import pty
import re
import select
import subprocess
import time

# Exit codes (smpgw --help, docs/cli.md).
FAILED, USAGE, UNREACHABLE, REFUSED = 1, 2, 4, 5
CLI_NEEDS = ('SMPGW_CLI',)


class Cli:
    def __init__(self, url, token=''):
        self.exe = os.environ['SMPGW_CLI']
        self.env = dict(os.environ, SMPGW_URL=url, SMPGW_TOKEN=token, LC_ALL='C')

    def run(self, *args, env=None, timeout=120):
        p = subprocess.run([self.exe] + list(args), capture_output=True, text=True,
                           timeout=timeout, env=dict(self.env, **(env or {})))
        return p.returncode, p.stdout, p.stderr

    def pty(self, *args, timeout=120):
        """Runs under a pseudo-terminal: (exit status, everything written)."""
        master, slave = pty.openpty()
        p = subprocess.Popen([self.exe] + list(args), stdin=slave, stdout=slave,
                             stderr=slave, env=dict(self.env, COLUMNS='100'))
        os.close(slave)
        out, deadline = b'', time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        os.close(master)
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        return rc, out.decode(errors='replace')


def upload_bars(out, device):
    """The bars drawn in place for device's upload phase: [(fill, percent,
    the rest of the line)]."""
    return [(b[0].count('#'), int(b[1]), b[2]) for b in re.findall(
        r'\r\x1b\[K%s upload\s+\[([#-]+)\]\s+(\d+)%%([^\r\n]*)' % re.escape(device), out)]


def check_follow(t, rc, out, device, version):
    """What `smpgw update DEVICE ... --follow` shows in a terminal (out, its
    exit status rc), checked on the Tap t: exit 0, a bar that moves
    forward with rate and ETA, ending with version confirmed on device.
    Prints the end of out when it went wrong. Returns the bars."""
    bars = upload_bars(out, device)
    pcts = [b[1] for b in bars]
    t.eq(rc, 0, 'update --follow in a terminal: exit 0')
    t.ok(len(set(pcts)) >= 3 and pcts == sorted(pcts),
         'the bar moves forward (%s)' % sorted(set(pcts)))
    t.ok(any('/s' in b[2] and 'ETA' in b[2] for b in bars), 'with rate and ETA')
    t.ok(out.rstrip().endswith('confirmed %s on %s' % (version, device)),
         'ends with the new version confirmed: %r' % out[-120:])
    if rc != 0 or not bars:
        print('# ' + repr(out[-3000:]), flush=True)
    return bars


def one_line(err):
    return len(err.strip().splitlines()) == 1


def table_names(out):
    """The first column of a table the client printed, header left out."""
    return [r.split()[0] for r in out.splitlines()[1:]]
