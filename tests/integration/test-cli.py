# SPDX-License-Identifier: MIT
"""The smpgw command-line client (src/cli/, docs/cli.md) against the real
smpgwd and a simulated fleet over UDP: devices (table, natural order,
filters, JSON), image upload/list, update with --follow (plain lines when
piped; under a pseudo-terminal a moving bar with rate and ETA that ends
confirmed), rollout create/show/pause/resume/cancel, events, the token, and
the error paths with their exit codes (bad URL, smpgwd down, unknown device,
bad image)."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_harness import (CLI_NEEDS, FAILED, REFUSED, UNREACHABLE, USAGE, Cli, check_follow,
                         one_line, table_names)
from http_harness import Daemon
from updates_harness import Gateway, Sim, Tap, conformance_image, session, wait_for

IMG = conformance_image('app-1.2.3+4-ecdsa-p256.bin')
IMG350 = conformance_image('app-3.1.0+7-350k-ecdsa-p256.bin')
NAMES = ['PineTime-10', 'PineTime-2', 'PineTime-1']
TOKEN = 'cli-test-token-1234'

t = Tap()


def free_tcp_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_devices(cli):
    rc, out, err = cli.run('devices')
    rows = out.splitlines()
    t.eq(rc, 0, 'devices: exit 0 (%s)' % err.strip())
    t.eq(rows[0].split()[:3], ['NAME', 'LINK', 'FIRMWARE'], 'devices: a table header')
    t.eq(table_names(out), ['PineTime-1', 'PineTime-2', 'PineTime-10'],
         'devices: natural order')
    t.ok(all(len(r.split()) >= 6 for r in rows[1:]), 'devices: every column filled')
    rc, out, _ = cli.run('devices', '--json')
    t.eq(sorted(d['id'] for d in json.loads(out)['devices']), sorted(NAMES),
         'devices --json: the daemon\'s answer')
    rc, out, _ = cli.run('devices', '--name', 'PineTime-1*')
    t.eq(table_names(out), ['PineTime-1', 'PineTime-10'],
         'devices --name glob filters')
    rc, out, _ = cli.run('devices', 'name=PineTime-2')
    t.eq(table_names(out), ['PineTime-2'],
         'devices KEY=VALUE filters')
    rc, out, err = cli.run('devices', '--state', 'sideways')
    t.eq((rc, one_line(err), out), (REFUSED, True, ''),
         'devices: a bad filter value is the daemon\'s 400 in one line: ' + err.strip())
    rc, _, err = cli.run('devices', 'oops')
    t.eq(rc, USAGE, 'devices: a filter without = is a usage error')


def test_images(cli, wd):
    rc, out, err = cli.run('image', 'upload', IMG, env={'SMPGW_TOKEN': ''})
    t.eq(rc, REFUSED, 'image upload without the token: refused')
    t.ok(one_line(err) and '401' in err, 'one line naming 401: ' + err.strip())
    tokfile = os.path.join(wd, 'token')
    with open(tokfile, 'w') as f:
        f.write(TOKEN + '\n')
    rc, out, err = cli.run('--token-file', tokfile, 'image', 'upload', IMG,
                           env={'SMPGW_TOKEN': ''})
    t.eq(rc, 0, 'image upload with --token-file (%s)' % err.strip())
    m = re.match(r'stored 1\.2\.3\+4 ([0-9a-f]{64}) \(app-1\.2\.3\+4-ecdsa-p256\.bin', out)
    t.ok(m, 'image upload prints version, hash and file name: ' + out.strip())
    rc, out2, _ = cli.run('image', 'upload', IMG)
    t.ok(rc == 0 and out2.startswith('already stored'), 'upload again: already stored')
    rc, out, _ = cli.run('image', 'list')
    t.ok(rc == 0 and m and m.group(1)[:16] in out and '1.2.3+4' in out,
         'image list shows it')
    bad = os.path.join(wd, 'bad.bin')
    with open(bad, 'wb') as f:
        f.write(b'\x00' * 1000)
    rc, out, err = cli.run('image', 'upload', bad)
    t.eq((rc, one_line(err)), (REFUSED, True), 'a bad image: refused in one line: ' +
         err.strip())
    rc, _, err = cli.run('image', 'upload', os.path.join(wd, 'missing.bin'))
    t.eq(rc, FAILED, 'a missing file: exit 1 (%s)' % err.strip())
    return m.group(1) if m else None


def test_update_plain(cli, sim, img):
    rc, out, err = cli.run('update', 'PineTime-2', img[:10], '--follow')
    lines = out.strip().splitlines()
    t.eq(rc, 0, 'update --follow (piped): exit 0 (%s)' % err.strip())
    t.ok(lines and lines[0].startswith('job '), 'first line names the job')
    t.ok(any(' upload ' in ln and '%' in ln for ln in lines), 'plain progress lines')
    t.ok('\r' not in out and '\x1b' not in out, 'no terminal control when piped')
    t.eq(lines[-1] if lines else '', 'confirmed 1.2.3+4 on PineTime-2',
         'ends with the confirmed version')
    slot0 = sim.slots(1)[0]
    t.eq((slot0['hash'], slot0['confirmed']), (img, True), 'the watch runs it, confirmed')
    rc, out, _ = cli.run('update', 'PineTime-2', '1.2.3+4', '--follow')
    t.ok(rc == 0 and out.strip().endswith('(it already ran it: nothing sent)'),
         'again, by version: up to date, nothing sent')
    rc, out, err = cli.run('update', 'PineTime-1', img)
    t.ok(rc == 0 and re.match(r'job \d+: 1\.2\.3\+4 to PineTime-1 \(test-confirm\)', out),
         'update without --follow: queued, exit 0: ' + out.strip())


def test_update_pty(cli, sim):
    """The issue's "done when": a moving bar in a terminal, ending confirmed."""
    rc, out = cli.pty('update', 'PineTime-10', IMG350, '--follow', timeout=150)
    bars = check_follow(t, rc, out, 'PineTime-10', '3.1.0+7')
    fills = [b[0] for b in bars]
    t.ok(fills and fills[-1] > fills[0], 'the bar fills')
    t.eq(sim.slots(0)[0]['confirmed'], True, 'the watch confirmed it')


def test_follow_restart(cli, gw):
    """--follow across a restart of smpgwd in the middle of the upload (an
    upgrade of the package does that): the client says it lost the daemon,
    tries again, and ends with the job's outcome."""
    st, jobs = gw.request('GET', '/api/v1/jobs')
    last = max([j['id'] for j in jobs['jobs']] + [0])
    # The event stream across the same restart: the job's result comes after it.
    ev = subprocess.Popen([cli.exe, 'events', '--json', '--no-history', '--count', '1',
                           '--timeout', '200', 'job.result'], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=cli.env)
    p = subprocess.Popen([cli.exe, 'update', 'PineTime-10', IMG, '--follow'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env)
    try:
        def uploading():
            st, jobs = gw.request('GET', '/api/v1/jobs?device=PineTime-10')
            j = jobs['jobs'][0] if st == 200 and jobs['jobs'] else {}
            if j.get('id', 0) <= last:
                return False
            if j.get('state') not in ('queued', 'running'):
                raise RuntimeError('the job ended before the restart: %r' % j)
            return j.get('phase') == 'upload' and j['progress']['bytes'] > 0
        wait_for('the upload to start', uploading, timeout=60, step=0.05)
        t.eq(gw.stop(), 0, 'smpgwd stopped in the middle of the upload')
        time.sleep(1.5)
        gw.start()
        out, err = p.communicate(timeout=150)
        ev_out, ev_err = ev.communicate(timeout=60)
    finally:
        for proc in (p, ev):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    t.eq(p.returncode, 0, '--follow across the restart: exit 0 (%s)' % err.strip())
    t.ok('cannot reach smpgwd' in out and 'trying again' in out and 'answers again' in out,
         'says it lost the daemon and found it again')
    t.eq(out.strip().splitlines()[-1:], ['confirmed 1.2.3+4 on PineTime-10'],
         'and ends with the outcome')
    results = [json.loads(ln) for ln in ev_out.splitlines()]
    t.eq((ev.returncode, [(e['type'], e['data']['device'], e['data']['state'])
                          for e in results]),
         (0, [('job.result', 'PineTime-10', 'done')]),
         'events: connected again after the restart, the job\'s result arrives (%s)' %
         ev_err.strip())
    t.ok('connecting again' in ev_err, 'events: says the stream ended')


def test_update_errors(cli, img, wd):
    rc, _, err = cli.run('update', 'PineTime-99', img)
    t.eq((rc, one_line(err)), (REFUSED, True), 'unknown device: refused in one line')
    t.ok('Unknown device' in err and 'PineTime-99' in err, 'says which: ' + err.strip())
    rc, _, err = cli.run('update', 'PineTime-1', 'deadbeef00')
    t.eq(rc, FAILED, 'unknown image: exit 1 (%s)' % err.strip())
    rc, _, err = cli.run('update', 'PineTime-1', img, '--mode', 'sideways')
    t.eq((rc, one_line(err)), (REFUSED, True), 'bad mode: refused: ' + err.strip())
    rc, _, err = cli.run('update', 'PineTime-1')
    t.eq(rc, USAGE, 'update without IMAGE: usage error')


def test_rollouts(cli, img):
    rc, out, err = cli.run('rollout', 'create', img, '--name', 'cli test', '--target', 'all',
                           '--devices', 'PineTime-1', '--follow', timeout=150)
    lines = out.strip().splitlines()
    m = re.match(r'(ro-\d+) ', lines[0]) if lines else None
    t.eq(rc, 0, 'rollout create --follow: exit 0 (%s)' % err.strip())
    t.ok(m, 'create prints the rollout: %r' % lines[:1])
    t.ok(lines and re.match(r'ro-\d+ completed: .*1 (updated|up_to_date)', lines[-1]),
         'follow ends completed: %r' % lines[-1:])
    t.ok(any(ln.startswith('PineTime-1 ') for ln in lines), 'a line per device outcome')
    ro = m.group(1) if m else 'ro-1'
    rc, out, _ = cli.run('rollout', 'show', ro)
    t.ok(rc == 0 and ('Rollout %s' % ro) in out and 'PineTime-1' in out,
         'rollout show prints the report')
    rc, out, _ = cli.run('rollout', 'show')
    t.ok(rc == 0 and out.startswith(ro), 'rollout show without ID lists rollouts')
    # One that waits for a window that is not open now: pause, resume, cancel.
    hour = (time.gmtime().tm_hour + 12) % 24
    rc, out, err = cli.run('rollout', 'create', img, '--target', 'all', '--window',
                           '%02d:00-%02d:30@UTC' % (hour, hour), '--json')
    doc = json.loads(out) if rc == 0 else {}
    t.eq(doc.get('state'), 'waiting', 'create --window: waiting (%s)' % err.strip())
    ro2 = doc.get('id', 'ro-2')
    for verb, state in (('pause', 'paused'), ('resume', 'waiting'), ('cancel', 'canceled')):
        rc, out, err = cli.run('rollout', verb, ro2)
        t.ok(rc == 0 and out.startswith('%s %s' % (ro2, state)),
             'rollout %s: %s (%s%s)' % (verb, state, out.strip(), err.strip()))
    rc, _, err = cli.run('rollout', 'pause', 'ro-999')
    t.eq((rc, one_line(err)), (REFUSED, True), 'unknown rollout: refused: ' + err.strip())
    rc, _, _ = cli.run('rollout', 'create', img, '--canary', 'many')
    t.eq(rc, USAGE, 'a bad number: usage error')
    rc, _, _ = cli.run('rollout', 'pause', ro2, '--canary', '3')
    t.eq(rc, USAGE, 'a create option elsewhere: usage error')


def test_events(cli, img):
    p = subprocess.Popen([cli.exe, 'events', '--no-history', '--count', '2', '--timeout', '60',
                          'job.'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=cli.env)
    try:
        time.sleep(1)  # connected before the job starts (no Last-Event-ID here)
        rc, _, err = cli.run('update', 'PineTime-2', img, '--follow')
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = out.strip().splitlines()
    t.eq((p.returncode, len(lines)), (0, 2), 'events --count 2: two lines, exit 0 (%s)' %
         err.strip())
    t.ok(all(re.match(r'\d\d:\d\d:\d\d\.\d{3} job\.\S+ .*device=PineTime-\d+', ln)
             for ln in lines), 'time, type and members: %r' % lines)
    rc, out, _ = cli.run('events', '--json', '--timeout', '1', 'nothing.')
    t.eq((rc, out), (0, ''), 'events --timeout: ends quietly')


def recent(base, query):
    req = urllib.request.Request(base + '/api/v1/events/recent?' + query,
                                 headers={'Authorization': 'Bearer ' + TOKEN})
    with urllib.request.urlopen(req, timeout=10) as rsp:
        return json.loads(rsp.read())['events']


def json_lines(out):
    return [json.loads(ln) for ln in out.splitlines()]


def test_events_history(cli, base):
    """smpgw events prints the recent history first (GET
    /api/v1/events/recent), then joins the stream at its last_id."""
    rc, out, err = cli.run('events', '--timeout', '1', 'job.')
    want = recent(base, 'type=job.&limit=20')
    lines = out.strip().splitlines()
    t.ok(rc == 0 and len(want) >= 2 and len(lines) == len(want) and
         all(' %s ' % e['type'] in ln + ' ' for ln, e in zip(lines, want)),
         'events: the %d newest job events first, oldest first (%s)' % (len(want), err.strip()))
    rc, out, _ = cli.run('events', '--json', '--history', '3', '--timeout', '1', 'job.')
    t.eq([e['id'] for e in json_lines(out)], [e['id'] for e in want[-3:]],
         'events --history 3 --json: the three newest, as the daemon has them')
    rc, out, _ = cli.run('events', '--json', '--history', '6', '--timeout', '1', 'job.',
                         'rollout.')
    both = sorted(recent(base, 'type=job.&limit=6') + recent(base, 'type=rollout.&limit=6'),
                  key=lambda e: e['id'])[-6:]
    t.eq([e['id'] for e in json_lines(out)], [e['id'] for e in both],
         'two prefixes: the six newest of both, each once, in order')
    rc, out, _ = cli.run('events', '--no-history', '--timeout', '1', 'job.')
    t.eq((rc, out), (0, ''), 'events --no-history: only what comes next')
    for bad in ('-1', 'x', '1001'):
        rc, _, err = cli.run('events', '--history', bad)
        t.eq((rc, one_line(err)), (USAGE, True), '--history %s: usage error' % bad)
    # Joining the stream: while an upload emits its progress, every event
    # once, none missing between the history and the stream.
    up = subprocess.Popen([cli.exe, 'update', 'PineTime-1', IMG350, '--follow'],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli.env)
    try:
        time.sleep(0.5)
        rc, out, err = cli.run('events', '--json', '--history', '1000', '--timeout', '3')
        up.wait(timeout=150)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    ids = [e['id'] for e in json_lines(out)]
    live = [e for e in json_lines(out) if e['type'] == 'job.progress']
    t.ok(rc == 0 and ids == list(range(ids[0], ids[0] + len(ids))) and len(live) >= 2,
         'history then stream: %d events, ids %d..%d without a gap or a repeat (%s)'
         % (len(ids), ids[0] if ids else 0, ids[-1] if ids else 0, err.strip()))


def test_unreachable(cli, port):
    for url in ('http://127.0.0.1:%d' % port, 'http://127.0.0.1:%d/' % port):
        rc, out, err = cli.run('--url', url, 'devices')
        t.eq(rc, UNREACHABLE, 'smpgwd down: exit 4')
        t.ok(err.startswith('smpgw: cannot reach smpgwd at http://127.0.0.1:%d:' % port),
             'says so: ' + err.strip())
    rc, _, err = cli.run('devices', env={'SMPGW_URL': 'ftp://127.0.0.1:1'})
    t.eq((rc, one_line(err)), (USAGE, True), 'bad URL: usage error: ' + err.strip())
    rc, _, err = cli.run('--url', 'http://no such host/', 'devices')
    t.ok(rc in (USAGE, UNREACHABLE) and one_line(err),
         'a malformed URL: one line: ' + err.strip())
    rc, out, _ = cli.run('--help')
    t.ok(rc == 0 and 'Exit status' in out and '4  cannot reach smpgwd' in out,
         '--help documents the exit codes')
    # The same codes in --help, docs/cli.md and smpgw(1).
    top = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
    with open(os.path.join(top, 'docs', 'cli.md')) as f:
        doc = f.read()
    with open(os.path.join(top, 'man', 'smpgw.1')) as f:
        man = f.read()
    codes = {'help': re.findall(r'^  (\d)  ', out.split('Exit status:')[1], re.M),
             'docs/cli.md': re.findall(r'^\| (\d) \|', doc, re.M),
             'smpgw.1': re.findall(r'^\.B (\d)$', man.split('.SH EXIT STATUS')[1], re.M)}
    t.eq(codes, {k: ['0', '1', '2', '3', '4', '5'] for k in codes},
         'exit codes 0-5 documented alike in --help, docs/cli.md and smpgw(1)')


def test_tls(cli, wd):
    """An https daemon with a self-signed certificate: refused (exit 4)
    until the client is given that certificate."""
    cert, key = os.path.join(wd, 'cert.pem'), os.path.join(wd, 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert],
                   check=True, capture_output=True, timeout=30)
    d = Daemon([], tls=(cert, key))
    try:
        rc, _, err = cli.run('--url', d.base, 'devices')
        t.ok(rc == UNREACHABLE and one_line(err) and 'certificate' in err,
             'https, untrusted certificate: exit 4 in one line: ' + err.strip())
        rc, out, err = cli.run('--url', d.base, '--cacert', cert, 'devices')
        t.eq((rc, out.split()[:2]), (0, ['NAME', 'LINK']), 'https with --cacert (%s)' %
             err.strip())
        rc, out, err = cli.run('devices', env={'SMPGW_URL': d.base, 'SMPGW_CACERT': cert})
        t.eq(rc, 0, 'https with $SMPGW_CACERT (%s)' % err.strip())
    finally:
        rc, log_text = d.close()
    t.eq(rc, 0, 'the https daemon exits cleanly')


def main():
    with session(tap=t, need=CLI_NEEDS + ('SMPGWD', 'SMPGW_SIM')) as (wd, run):
        tok = os.path.join(wd, 'gw-token')
        with open(tok, 'w') as f:
            f.write(TOKEN + '\n')
        # Watch 0 (PineTime-10) writes flash slowly: its upload takes seconds,
        # so the bar has time to move.
        sim = run.start(Sim(wd, count=3, fleet={'devices': [
            {'flash': {'erase_sector_us': 2000, 'program_page_us': 6000}}, {}, {}]}))
        gw = Gateway(wd, sim, 'token_file = %s\n[request]\ntimeout = 2s\n'
                     '[update]\nboot_timeout = 40s' % tok, devices=NAMES)
        # A fixed REST port: the client finds the daemon again after a restart.
        with open(gw.conf) as f:
            conf = f.read()
        with open(gw.conf, 'w') as f:
            f.write(conf.replace('listen = 127.0.0.1:0', 'listen = 127.0.0.1:%d' % free_tcp_port()))
        run.start(gw)
        cli = Cli(gw.base, TOKEN)
        test_devices(cli)
        img = test_images(cli, wd)
        if img:
            test_update_plain(cli, sim, img)
            test_update_pty(cli, sim)
            test_follow_restart(cli, gw)
            test_update_errors(cli, img, wd)
            test_rollouts(cli, img)
            test_events(cli, img)
            test_events_history(cli, gw.base)
        port = gw.port
        t.eq(gw.stop(), 0, 'smpgwd exits cleanly')
        test_unreachable(cli, port)
        test_tls(cli, wd)
    t.done()


if __name__ == '__main__':
    main()
