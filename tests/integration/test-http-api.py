#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Every REST route against the real smpgwd with UDP devices: success, bad
JSON, wrong types, unknown device, missing/invalid token, oversized body,
bad image. Each failure case asserts the status and the problem body."""
import json
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_harness as H  # noqa: E402

CONF_DIR = os.environ.get('CONFORMANCE_DIR', os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', 'data', 'conformance'))
IMAGES = os.path.join(CONF_DIR, 'images')
MANIFEST = json.load(open(os.path.join(IMAGES, 'manifest.json')))


def image(name):
    with open(os.path.join(IMAGES, name), 'rb') as f:
        return f.read()


def daemon_with_env(name, value):
    """A Daemon started with the environment variable name set to value."""
    os.environ[name] = value
    try:
        return H.Daemon([])
    finally:
        del os.environ[name]


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.devs = [H.FakeDevice('watch-1', '1.0.0', 0xab),
                    H.FakeDevice('watch-2', '1.2.3', 0xcd)]
        cls.d = H.Daemon(cls.devs, max_body=200000)

    @classmethod
    def tearDownClass(cls):
        rc, log = cls.d.close()
        for dev in cls.devs:
            dev.close()
        if rc != 0:
            print(log)
        assert rc == 0, 'smpgwd exit status %r' % rc

    def problem(self, rsp, status, slug, detail_part=None):
        st, h, body = rsp
        self.assertEqual(st, status, body)
        self.assertTrue(h.get('Content-Type', '').startswith('application/problem+json'), h)
        p = json.loads(body) if isinstance(body, (bytes, str)) else body
        self.assertEqual(p['status'], status)
        self.assertEqual(p['type'], 'urn:smpgw:problem:' + slug)
        self.assertTrue(p['title'])
        self.assertTrue(p['detail'])
        if detail_part:
            self.assertIn(detail_part, p['detail'])
        return p

    def req(self, *a, **kw):
        return self.d.request(*a, **kw)

    # ---- auth ----
    def test_auth(self):
        st, _, _ = self.req('GET', '/api/v1/devices', token=None)
        self.assertEqual(st, 200, 'reads need no token on loopback')
        r = self.req('POST', '/api/v1/devices/watch-1/echo', {'d': 'x'}, token=None)
        self.problem(r, 401, 'unauthorized', 'Bearer')
        self.assertIn('Bearer', r[1].get('WWW-Authenticate', ''))
        r = self.req('POST', '/api/v1/devices/watch-1/echo', {'d': 'x'}, token='wrong-token-xx')
        self.problem(r, 401, 'unauthorized', 'does not match')
        r = self.req('POST', '/api/v1/devices/watch-1/echo', {'d': 'x'}, token=None,
                     headers={'Authorization': 'Basic Zm9vOmJhcg=='})
        self.problem(r, 401, 'unauthorized', 'Bearer')
        r = self.req('DELETE', '/api/v1/images/' + '0' * 64, token=None)
        self.problem(r, 401, 'unauthorized')
        r = self.req('POST', '/api/v1/images', raw=b'x', token=None)
        self.problem(r, 401, 'unauthorized')

    # ---- routing ----
    def test_unknown_route_and_method(self):
        self.problem(self.req('GET', '/api/v1/nothing'), 404, 'not-found', '/api/v1/nothing')
        r = self.req('PUT', '/api/v1/devices')
        self.problem(r, 405, 'method-not-allowed')
        self.assertEqual(r[1].get('Allow'), 'GET')

    # ---- devices ----
    def test_devices_list_and_filters(self):
        st, _, d = self.d.json('GET', '/api/v1/devices')
        self.assertEqual(st, 200)
        self.assertEqual(d['count'], 2)
        self.assertEqual(sorted(x['id'] for x in d['devices']), ['watch-1', 'watch-2'])
        for x in d['devices']:
            for k in ('id', 'name', 'transport', 'link_state', 'udp_port', 'mtu'):
                self.assertIn(k, x)
        st, _, d = self.d.json('GET', '/api/v1/devices?name=watch-1')
        self.assertEqual([x['id'] for x in d['devices']], ['watch-1'])
        st, _, d = self.d.json('GET', '/api/v1/devices?name=watch-*')
        self.assertEqual(d['count'], 2)
        st, _, d = self.d.json('GET', '/api/v1/devices?name=nothing')
        self.assertEqual(d['count'], 0)
        self.problem(self.req('GET', '/api/v1/devices?state=sideways'), 400,
                     'invalid-parameter', 'sideways')
        st, _, d = self.d.json('GET', '/api/v1/devices?state=down')
        self.assertEqual(st, 200)
        # bad filters: a clear 400 naming the parameter, never an empty list
        for q, part in (('frobnicate=1', "unknown query parameter 'frobnicate'"),
                        ('version=1.2', 'version'), ('version=latest', 'version'),
                        ('battery_below=102', 'battery_below'),
                        ('battery_below=x', 'battery_below'), ('hash=xyz', 'hash')):
            self.problem(self.req('GET', '/api/v1/devices?' + q), 400,
                         'invalid-parameter', part)
        # well-formed filters on watches never read: nothing known, no match
        for q in ('version=1.0.0', 'battery_below=101', 'hash=ab'):
            st, _, d = self.d.json('GET', '/api/v1/devices?name=watch-2&' + q)
            self.assertEqual((st, d['count']), (200, 0), q)

    def test_device_get(self):
        st, _, d = self.d.json('GET', '/api/v1/devices/watch-1')
        self.assertEqual(st, 200)
        self.assertEqual(d['id'], 'watch-1')
        self.assertEqual(d['transport'], 'udp')
        self.problem(self.req('GET', '/api/v1/devices/nope'), 404, 'unknown-device', 'nope')

    def test_echo(self):
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-1/echo', {'d': 'hello'})
        self.assertEqual((st, d), (200, {'r': 'hello'}))
        self.problem(self.req('POST', '/api/v1/devices/watch-1/echo', b'{"d": '), 400,
                     'malformed-body', 'not valid JSON')
        self.problem(self.req('POST', '/api/v1/devices/watch-1/echo', {'d': 5}), 400,
                     'invalid-request', '"d"')
        self.problem(self.req('POST', '/api/v1/devices/watch-1/echo', [1, 2]), 400,
                     'invalid-request', 'JSON object')
        self.problem(self.req('POST', '/api/v1/devices/watch-1/echo', raw=b''), 400,
                     'invalid-request')
        self.problem(self.req('POST', '/api/v1/devices/nope/echo', {'d': 'x'}), 404,
                     'unknown-device')
        self.problem(self.req('POST', '/api/v1/devices/watch-1/echo',
                              {'d': 'x' * (70 * 1024)}), 413, 'body-too-large')

    def test_reset(self):
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-2/reset')
        self.assertEqual(st, 200)
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-2/reset', {'force': True})
        self.assertEqual(st, 200)
        self.problem(self.req('POST', '/api/v1/devices/watch-2/reset', {'force': 'yes'}),
                     400, 'invalid-request', 'force')

    def test_image_state(self):
        st, _, d = self.d.json('GET', '/api/v1/devices/watch-1/image-state')
        self.assertEqual(st, 200)
        self.assertEqual(d['images'][0]['hash'], 'ab' * 32)
        self.assertEqual(d['images'][0]['version'], '1.0.0+0', 'canonical, as GET /images')
        self.assertEqual(d['images'][0]['version_text'], '1.0.0', "the watch's own text")
        st, _, dev = self.d.json('GET', '/api/v1/devices/watch-1')
        self.assertEqual(dev['slots'][0]['hash'], 'ab' * 32, 'slots cached')
        self.assertEqual(dev['slots'][0]['version'], '1.0.0+0')
        self.assertEqual(dev['firmware']['source'], 'connection')
        self.assertIsNotNone(dev['slots_age_s'])
        self.assertIsNone(dev['advertised'], 'UDP: no advertising')
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-1/image-state/test',
                               {'hash': 'AB' * 32})
        self.assertEqual(st, 200)
        self.problem(self.req('POST', '/api/v1/devices/watch-1/image-state/test', {}),
                     400, 'invalid-request', 'hash')
        self.problem(self.req('POST', '/api/v1/devices/watch-1/image-state/test',
                              {'hash': 'xyz'}), 400, 'invalid-request', '64 hex')
        self.problem(self.req('POST', '/api/v1/devices/watch-1/image-state/test',
                              {'hash': 7}), 400, 'invalid-request', 'hash')
        p = self.problem(self.req('POST', '/api/v1/devices/watch-1/image-state/test',
                                  {'hash': '00' * 32}), 422, 'smp-error', 'rc 3')
        self.assertEqual(p['smp']['rc'], 3)
        self.assertEqual(p['smp']['rsn'], 'unknown hash')
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-1/image-state/confirm')
        self.assertEqual(st, 200)
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-1/image-state/confirm',
                               {'hash': 'ab' * 32})
        self.assertEqual(st, 200)

    def test_erase_params_info(self):
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-1/erase')
        self.assertEqual(st, 200)
        self.problem(self.req('POST', '/api/v1/devices/watch-1/erase', {'slot': 'one'}),
                     400, 'invalid-request', 'slot')
        st, _, d = self.d.json('GET', '/api/v1/devices/watch-1/params')
        self.assertEqual((st, d), (200, {'buf_size': 2475, 'buf_count': 4}))
        st, _, d = self.d.json('GET', '/api/v1/devices/watch-1/info?format=a')
        self.assertEqual((st, d), (200, {'output': 'Zephyr watch-1'}))
        self.problem(self.req('GET', '/api/v1/devices/watch-1/info?format=%21'), 400,
                     'invalid-parameter', 'format')
        self.problem(self.req('GET', '/api/v1/devices/nope/params'), 404, 'unknown-device')

    def test_datetime(self):
        st, _, d = self.d.json('POST', '/api/v1/devices/watch-2/datetime',
                               {'datetime': '2026-02-03T04:05:06'})
        self.assertEqual(st, 200)
        st, _, d = self.d.json('GET', '/api/v1/devices/watch-2/datetime')
        self.assertEqual((st, d), (200, {'datetime': '2026-02-03T04:05:06'}))
        self.problem(self.req('POST', '/api/v1/devices/watch-2/datetime', {}), 400,
                     'invalid-request', 'datetime')
        self.problem(self.req('POST', '/api/v1/devices/watch-2/datetime',
                              {'datetime': 1}), 400, 'invalid-request', 'datetime')

    def test_stats(self):
        st, _, d = self.d.json('GET', '/api/v1/devices/watch-1/stats')
        self.assertEqual((st, d), (200, {'stat_list': ['smp_svr_stats']}))
        st, _, d = self.d.json('GET', '/api/v1/devices/watch-1/stats/smp_svr_stats')
        self.assertEqual(d['fields'], {'ticks': 42})
        p = self.problem(self.req('GET', '/api/v1/devices/watch-1/stats/nope'), 422,
                         'smp-error', 'rc 5')
        self.assertEqual(p['smp']['rc_name'].lower() != '', True)

    def test_smp_passthrough(self):
        path = '/api/v1/devices/watch-1/smp'
        st, _, d = self.d.json('POST', path, {'group': 0, 'id': 0, 'op': 'write',
                                              'data': {'d': 'raw'}})
        self.assertEqual(st, 200)
        self.assertEqual(d['data'], {'r': 'raw'})
        st, _, d = self.d.json('POST', path, {'group': 1, 'id': 0, 'op': 'read'})
        self.assertEqual(d['data']['images'][0]['hash'], {'$bytes': 'ab' * 32},
                         'byte strings stay lossless')
        p = self.problem(self.req('POST', path, {'group': 64, 'id': 1, 'op': 0}),
                         422, 'smp-error', 'rc 8')
        self.assertEqual(p['smp']['rc'], 8)
        self.assertEqual(p['smp']['group'], 64)
        self.assertTrue(p['smp']['v2'])
        self.problem(self.req('POST', path, {'group': 'os', 'id': 0, 'op': 'read'}), 400,
                     'invalid-request', 'group')
        self.problem(self.req('POST', path, {'group': 0, 'id': 300, 'op': 'read'}), 400,
                     'invalid-request', 'id')
        self.problem(self.req('POST', path, {'group': 0, 'id': 0, 'op': 'poke'}), 400,
                     'invalid-request', 'op')
        self.problem(self.req('POST', path, {'group': 0, 'id': 0, 'op': 'read',
                                             'data': [1]}), 400, 'invalid-request', 'data')
        self.problem(self.req('POST', path, {'group': 0, 'id': 0, 'op': 'read',
                                             'data': {'x': {'$bytes': 'zz'}}}), 400,
                     'invalid-request', 'CBOR')
        self.problem(self.req('POST', path, b'nope'), 400, 'malformed-body')
        self.problem(self.req('POST', path, raw=b''), 400, 'invalid-request')
        self.problem(self.req('POST', '/api/v1/devices/nope/smp',
                              {'group': 0, 'id': 0, 'op': 'read'}), 404, 'unknown-device')

    def test_device_timeout(self):
        dev = self.devs[1]
        dev.silent = True
        try:
            self.problem(self.req('POST', '/api/v1/devices/watch-2/echo', {'d': 'x'}),
                         504, 'device-timeout', 'watch-2')
        finally:
            dev.silent = False

    # ---- images ----
    def test_images(self):
        name = 'app-1.2.3+4-ecdsa-p256.bin'
        want = MANIFEST[name]['sha256_tlv']
        st, _, d = self.d.json('POST', '/api/v1/images?filename=' + name, image(name),
                               headers={'Content-Type': 'application/octet-stream'})
        self.assertIn(st, (200, 201), d)
        self.assertEqual(d['id'], want)
        self.assertEqual(d['version'], '1.2.3+4')
        self.assertEqual(d['signature']['type'], 'ECDSA_P256')
        st, _, d = self.d.json('PUT', '/api/v1/images', image(name))
        self.assertEqual((st, d['created']), (200, False), 'duplicate detected')
        # multipart
        other = 'app-1.0.0-hash.bin'
        boundary = 'xYzZy'
        body = (('--%s\r\nContent-Disposition: form-data; name="image"; filename="%s"\r\n'
                 'Content-Type: application/octet-stream\r\n\r\n' % (boundary, other)).encode()
                + image(other) + ('\r\n--%s--\r\n' % boundary).encode())
        st, _, d = self.d.json('POST', '/api/v1/images', raw=body, headers={
            'Content-Type': 'multipart/form-data; boundary=' + boundary})
        self.assertEqual(st, 201, d)
        self.assertEqual(d['id'], MANIFEST[other]['sha256_tlv'])
        self.assertEqual(d['filename'], other)
        st, _, lst = self.d.json('GET', '/api/v1/images')
        self.assertEqual(st, 200)
        ids = [x['id'] for x in lst['images']]
        self.assertIn(want, ids)
        st, _, d = self.d.json('GET', '/api/v1/images/' + want)
        self.assertEqual((st, d['id']), (200, want))
        self.problem(self.req('GET', '/api/v1/images/' + 'f' * 64), 404, 'not-found')
        st, _, d = self.d.json('DELETE', '/api/v1/images/' + MANIFEST[other]['sha256_tlv'])
        self.assertEqual(st, 200)
        self.problem(self.req('DELETE', '/api/v1/images/' + MANIFEST[other]['sha256_tlv']),
                     404, 'not-found')
        self.problem(self.req('DELETE', '/api/v1/images/' + want, raw=b'{}'),
                     413, 'body-too-large', 'no request body')

    def test_images_put_named(self):
        """curl -T f .../images/ sends PUT /api/v1/images/<f>: an upload
        that keeps the file name (it answered 405 before)."""
        import shutil
        import subprocess
        import tempfile
        name = 'app-1.0.1-rsa2048.bin'
        want = MANIFEST[name]['sha256_tlv']
        work = tempfile.mkdtemp(prefix='smpgw-put-')
        try:
            path = os.path.join(work, 'watch-app.bin')
            shutil.copy(os.path.join(IMAGES, name), path)
            p = subprocess.run(['curl', '-sS', '-o', '-', '-w', '\n%{http_code}',
                                '-H', 'Authorization: Bearer ' + H.TOKEN, '-T', path,
                                self.d.base + '/api/v1/images/'],
                               capture_output=True, text=True, timeout=30)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        body, _, code = p.stdout.rpartition('\n')
        self.assertEqual(code, '201', p.stdout + p.stderr)
        d = json.loads(body)
        self.assertEqual((d['id'], d['filename'], d['created']), (want, 'watch-app.bin', True))
        st, _, d = self.d.json('GET', '/api/v1/images/' + want)
        self.assertEqual((st, d['filename']), (200, 'watch-app.bin'))
        st, _, d = self.d.json('PUT', '/api/v1/images/again.bin', image(name))
        self.assertEqual((st, d['created']), (200, False), 'duplicate detected')
        self.problem(self.req('PUT', '/api/v1/images/x.bin', raw=image(name), token=None),
                     401, 'unauthorized')
        self.problem(self.req('PUT', '/api/v1/images/x.bin', raw=b''), 422, 'invalid-image',
                     'empty')
        st, _, _ = self.d.json('DELETE', '/api/v1/images/' + want)
        self.assertEqual(st, 200)

    def test_bad_images(self):
        self.problem(self.req('POST', '/api/v1/images', raw=b'\x00' * 1000), 422,
                     'invalid-image', 'MCUboot')
        good = image('app-0.9.0-3k-hash.bin')
        self.problem(self.req('POST', '/api/v1/images', raw=good[:-40]), 422,
                     'invalid-image')
        bad = bytearray(good)
        bad[600] ^= 0xff
        self.problem(self.req('POST', '/api/v1/images', raw=bytes(bad)), 422,
                     'invalid-image')
        self.problem(self.req('POST', '/api/v1/images', raw=b''), 422, 'invalid-image',
                     'empty')
        big = image('app-3.1.0+7-350k-ecdsa-p256.bin')
        self.problem(self.req('POST', '/api/v1/images', raw=big), 413, 'body-too-large')
        boundary = 'b0undary'
        body = ('--%s\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--%s--\r\n'
                % (boundary, boundary)).encode()
        self.problem(self.req('POST', '/api/v1/images', raw=body, headers={
            'Content-Type': 'multipart/form-data; boundary=' + boundary}), 400,
            'invalid-request', 'file part')

    # ---- events ----
    def sse_open(self, last_id=None):
        s = socket.create_connection(('127.0.0.1', self.d.port), timeout=5)
        hdr = 'GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n'
        if last_id is not None:
            hdr += 'Last-Event-ID: %s\r\n' % last_id
        s.sendall((hdr + '\r\n').encode())
        return s

    def sse_read_until(self, s, needle, limit=5.0):
        buf = b''
        deadline = time.monotonic() + limit
        while needle.encode() not in buf and time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors='replace')

    def test_events(self):
        s = self.sse_open()
        try:
            head = self.sse_read_until(s, 'event stream')
            self.assertIn('200 OK', head)
            self.assertIn('text/event-stream', head)
            name = 'app-0.9.0-3k-hash.bin'
            tlv = MANIFEST[name]['sha256_tlv']
            self.req('DELETE', '/api/v1/images/' + tlv)
            st, _, _ = self.req('POST', '/api/v1/images', raw=image(name))
            self.assertEqual(st, 201)
            text = self.sse_read_until(s, tlv)
            self.assertIn('event: image.added', text)
            ids = [int(line[4:]) for line in text.splitlines() if line.startswith('id: ')]
            self.assertTrue(ids)
        finally:
            s.close()
        # Resume: the event after ids[-1]-1 is replayed.
        s = self.sse_open(ids[-1] - 1)
        try:
            text = self.sse_read_until(s, tlv)
            self.assertIn('id: %d' % ids[-1], text)
        finally:
            s.close()
        self.problem(self.req('GET', '/api/v1/events', headers={'Last-Event-ID': 'abc'}),
                     400, 'invalid-parameter', 'Last-Event-ID')

    def test_events_recent(self):
        """The history as one JSON answer: newest last, filtered by device
        and type prefix, bounded by limit; last_id joins it to the stream."""
        self.assertEqual(self.req('POST', '/api/v1/devices/watch-2/echo', {'d': 'r'})[0], 200)
        st, _, r = self.d.json('GET', '/api/v1/events/recent')
        self.assertEqual(st, 200)
        evs = r['events']
        self.assertEqual(r['count'], len(evs))
        self.assertTrue(0 < len(evs) <= 100, len(evs))
        ids = [e['id'] for e in evs]
        self.assertEqual(ids, sorted(ids), 'oldest first')
        self.assertLessEqual(ids[-1], r['last_id'])
        for e in evs:
            self.assertEqual(set(e), {'id', 'type', 'time_ms', 'data'})
        st, _, r = self.d.json('GET', '/api/v1/events/recent?device=watch-2&type=device.')
        self.assertTrue(r['events'], 'watch-2 connected for the echo')
        for e in r['events']:
            self.assertTrue(e['type'].startswith('device.'), e)
            self.assertEqual(e['data']['id'], 'watch-2', e)
        st, _, r = self.d.json('GET', '/api/v1/events/recent?limit=1')
        self.assertEqual(r['count'], 1)
        self.assertEqual(r['events'][0]['id'], r['last_id'], 'the newest')
        st, _, r = self.d.json('GET', '/api/v1/events/recent?device=nothing-here')
        self.assertEqual((st, r['count']), (200, 0))
        for bad in ('0', '1001', 'x', '-3', ''):
            self.problem(self.req('GET', '/api/v1/events/recent?limit=' + bad), 400,
                         'invalid-parameter', 'limit')

    # ---- metrics, openapi, dashboard ----
    def test_metrics(self):
        self.req('GET', '/api/v1/devices')
        self.req('POST', '/api/v1/devices/watch-1/echo', {'d': 'm'})
        for path in ('/metrics', '/api/v1/metrics'):
            st, h, b = self.req('GET', path)
            self.assertEqual(st, 200)
            self.assertTrue(h['Content-Type'].startswith('text/plain'))
            text = b.decode()
            self.assertIn('# TYPE smpgw_http_requests_total counter', text)
            self.assertIn('smpgw_devices{state="up"}', text)
            self.assertIn('smpgw_http_request_duration_seconds_bucket', text)
            self.assertRegex(text, r'smpgw_frames_total\{transport="udp",dir="tx"\} [1-9]')
            self.assertIn('smpgw_errors_total{kind="timeouts",transport="udp"}', text)
            self.assertRegex(text, r'smpgw_request_duration_seconds_count\{transport="udp"\} [1-9]')

    def scrape(self):
        """GET /metrics as {(name, frozenset(labels)): value}."""
        st, _, b = self.req('GET', '/metrics')
        self.assertEqual(st, 200)
        out = {}
        for line in b.decode().splitlines():
            m = re.match(r'^([a-z_:]+)(?:\{(.*)\})? (\S+)$', line)
            if m:
                labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ''))
                out[(m.group(1), labels)] = float(m.group(3))
        return out

    def test_metrics_values(self):
        """Known traffic moves the counters by as much: N echoes are N
        frames each way, the bytes are what the devices received and sent,
        N latency observations; devices by state add up."""
        n = 7
        devs = self.devs
        for name in ('watch-1', 'watch-2'):  # connected, params read
            self.req('POST', '/api/v1/devices/%s/echo' % name, {'d': 'warm'})
        before = self.scrape()
        dev_before = [(d.rx_frames, d.rx_bytes, d.tx_frames, d.tx_bytes) for d in devs]
        for i in range(n):
            st, _, _ = self.req('POST', '/api/v1/devices/watch-%d/echo' % (1 + i % 2),
                                {'d': 'metrics %d' % i})
            self.assertEqual(st, 200)
        after = self.scrape()

        def delta(name, **labels):
            k = (name, frozenset(labels.items()))
            return after.get(k, 0) - before.get(k, 0)

        got = [sum(d.rx_frames - b[0] for d, b in zip(devs, dev_before)),
               sum(d.rx_bytes - b[1] for d, b in zip(devs, dev_before)),
               sum(d.tx_frames - b[2] for d, b in zip(devs, dev_before)),
               sum(d.tx_bytes - b[3] for d, b in zip(devs, dev_before))]
        self.assertGreaterEqual(delta('smpgw_frames_total', transport='udp', dir='tx'), n)
        self.assertGreaterEqual(delta('smpgw_frames_total', transport='udp', dir='rx'), n)
        self.assertEqual(delta('smpgw_frames_total', transport='udp', dir='tx'), got[0])
        self.assertEqual(delta('smpgw_bytes_total', transport='udp', dir='tx'), got[1])
        self.assertEqual(delta('smpgw_frames_total', transport='udp', dir='rx'), got[2])
        self.assertEqual(delta('smpgw_bytes_total', transport='udp', dir='rx'), got[3])
        # An echo of 'metrics i': 8-byte header + CBOR {"d": text}.
        self.assertGreaterEqual(got[1], n * (8 + 3 + 1 + len('metrics 0')))
        self.assertGreaterEqual(
            delta('smpgw_request_duration_seconds_count', transport='udp'), n)
        self.assertGreaterEqual(
            delta('smpgw_request_duration_seconds_bucket', transport='udp', le='+Inf'), n)
        states = {s: after.get(('smpgw_devices', frozenset({('state', s)})), -1)
                  for s in ('down', 'connecting', 'up')}
        self.assertEqual(sum(states.values()), 2, states)
        self.assertGreaterEqual(states['up'], 1, states)

    def test_metrics_errors(self):
        """A device that does not answer: errors by kind count it."""
        mute = H.FakeDevice('mute-m')
        mute.silent = True
        d = H.Daemon([mute], extra_conf='[request]\ntimeout = 300ms\n')
        try:
            for _ in range(2):
                d.request('POST', '/api/v1/devices/mute-m/echo', {'d': 'x'})
            st, _, b = d.request('GET', '/metrics')
            text = b.decode()
            m = re.search(r'^smpgw_errors_total\{kind="timeouts",transport="udp"\} (\d+)$',
                          text, re.M)
            self.assertTrue(m, text)
            self.assertGreaterEqual(int(m.group(1)), 2)
            self.assertRegex(text, r'smpgw_frames_total\{transport="udp",dir="tx"\} [1-9]')
            self.assertRegex(text, r'smpgw_frames_total\{transport="udp",dir="rx"\} 0\n')
        finally:
            rc, log = d.close()
            mute.close()
        self.assertEqual(rc, 0, log)

    def test_openapi(self):
        st, _, d = self.d.json('GET', '/api/v1/openapi.json')
        self.assertEqual(st, 200)
        self.assertTrue(d['openapi'].startswith('3.'))
        self.assertIn('/api/v1/devices/{id}/smp', d['paths'])

    def test_dashboard(self):
        st, h, b = self.req('GET', '/', token=None)
        self.assertEqual(st, 200)
        self.assertTrue(h['Content-Type'].startswith('text/html'))
        self.assertIn(b'/static/app.js', b)
        self.assertNotIn(b'http://', b.replace(b'http://www.w3.org', b''))
        for f, ct in (('app.js', 'text/javascript'), ('style.css', 'text/css')):
            st, h, b = self.req('GET', '/static/' + f, token=None)
            self.assertEqual(st, 200)
            self.assertTrue(h['Content-Type'].startswith(ct))
        self.problem(self.req('GET', '/static/../../etc/passwd'), 404, 'not-found')
        self.problem(self.req('GET', '/static/openapi.json'), 404, 'not-found')


@unittest.skipUnless(H.SimFleet.available(), 'smpgw-sim not built')
class Simulator(unittest.TestCase):
    """The typed operations and the passthrough against simulated PineTimes
    (smpgw-sim over UDP), as an operator would use them."""

    @classmethod
    def setUpClass(cls):
        cls.sim = H.SimFleet({'count': 2, 'defaults': {'image': 'app-1.0.0-hash.bin'}})
        cls.d = H.Daemon(cls.sim.devices)

    @classmethod
    def tearDownClass(cls):
        rc, log = cls.d.close()
        cls.sim.close()
        assert rc == 0, log

    def test_fleet(self):
        st, _, d = self.d.json('GET', '/api/v1/devices')
        self.assertEqual(st, 200)
        self.assertEqual(sorted(x['id'] for x in d['devices']), ['PineTime-1', 'PineTime-2'])
        st, _, d = self.d.json('POST', '/api/v1/devices/PineTime-1/echo', {'d': 'sim'})
        self.assertEqual((st, d), (200, {'r': 'sim'}))
        st, _, d = self.d.json('GET', '/api/v1/devices/PineTime-1/image-state')
        self.assertEqual(st, 200, d)
        self.assertIsInstance(d['images'], list)
        active = [i for i in d['images'] if i.get('active')]
        if active:  # the simulator boots the fleet file's image (when it does)
            self.assertEqual(active[0]['version'], '1.0.0+0')
            self.assertEqual(active[0]['version_text'], '1.0.0')
            self.assertEqual(active[0]['hash'], MANIFEST['app-1.0.0-hash.bin']['sha256_tlv'])
            st, _, d = self.d.json('GET', '/api/v1/devices?version=1.0.0')
            self.assertIn('PineTime-1', [x['id'] for x in d['devices']])
        st, _, d = self.d.json('GET', '/api/v1/devices/PineTime-1/params')
        self.assertEqual(st, 200, d)
        self.assertGreater(d['buf_size'], 0)
        st, _, d = self.d.json('GET', '/api/v1/devices/PineTime-2/info')
        self.assertEqual(st, 200, d)
        self.assertIn('output', d)
        st, _, d = self.d.json('GET', '/api/v1/devices/PineTime-2/stats')
        self.assertEqual(st, 200, d)
        st, _, d = self.d.json('POST', '/api/v1/devices/PineTime-2/smp',
                               {'group': 0, 'id': 0, 'op': 'write', 'data': {'d': 'pt'}})
        self.assertEqual((st, d['data']), (200, {'r': 'pt'}))
        st, _, d = self.d.json('POST', '/api/v1/devices/PineTime-2/smp',
                               {'group': 200, 'id': 0, 'op': 'read'})
        self.assertEqual(st, 422, d)
        self.assertIn('smp', d)


class Listen(unittest.TestCase):
    def test_tls(self):
        """HTTPS with the configured certificate and key."""
        import subprocess
        import tempfile
        tmp = tempfile.mkdtemp(prefix='smpgw-tls-')
        cert, key = os.path.join(tmp, 'cert.pem'), os.path.join(tmp, 'key.pem')
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj',
                        '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                        '-keyout', key, '-out', cert], check=True, capture_output=True,
                       timeout=30)
        d = H.Daemon([], tls=(cert, key))
        try:
            self.assertTrue(d.base.startswith('https://'))
            st, _, body = d.json('GET', '/api/v1/devices')
            self.assertEqual((st, body['count']), (200, 0))
            st, _, body = d.json('POST', '/api/v1/images', raw=b'', token=None)
            self.assertEqual(st, 401)
        finally:
            rc, log = d.close()
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(rc, 0, log)

    def test_non_loopback_needs_a_token(self):
        """Refused before binding anything: no token file, public address."""
        d = H.Daemon([], token=False, listen='0.0.0.0:0', expect_fail=True)
        rc, log = d.close()
        self.assertNotEqual(rc, 0)
        self.assertIn('token_file', log)

    def test_public_address_policy(self):
        """On a non-loopback address every call but the dashboard shell
        needs the token (checked on loopback with the test override)."""
        d = daemon_with_env('SMPGW_HTTP_ASSUME_PUBLIC', '1')
        try:
            st, h, body = d.request('GET', '/api/v1/devices', token=None)
            self.assertEqual(st, 401, body)
            self.assertEqual(json.loads(body)['type'], 'urn:smpgw:problem:unauthorized')
            for path in ('/metrics', '/api/v1/openapi.json', '/api/v1/images'):
                self.assertEqual(d.request('GET', path, token=None)[0], 401, path)
            self.assertEqual(d.request('GET', '/api/v1/devices')[0], 200)
            self.assertEqual(d.request('GET', '/', token=None)[0], 200)
            self.assertEqual(d.request('GET', '/static/app.js', token=None)[0], 200)
            s = socket.create_connection(('127.0.0.1', d.port), timeout=5)
            s.sendall(('GET /api/v1/events?access_token=%s HTTP/1.1\r\nHost: x\r\n\r\n'
                       % H.TOKEN).encode())
            self.assertIn(b'200 OK', s.recv(4096))
            s.close()
        finally:
            rc, log = d.close()
        self.assertEqual(rc, 0, log)

    def test_no_token_on_loopback(self):
        """Without a token file on loopback, writes need no token."""
        d = H.Daemon([], token=False)
        try:
            st, _, _ = d.request('POST', '/api/v1/images', raw=b'x', token=None)
            self.assertEqual(st, 422)
        finally:
            rc, log = d.close()
        self.assertEqual(rc, 0, log)


class Keepalive(unittest.TestCase):
    def test_keepalive_comments(self):
        d = daemon_with_env('SMPGW_SSE_KEEPALIVE_MS', '200')
        try:
            s = socket.create_connection(('127.0.0.1', d.port), timeout=5)
            s.sendall(b'GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n')
            buf = b''
            deadline = time.monotonic() + 5
            while buf.count(b': keepalive') < 2 and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            s.close()
            self.assertGreaterEqual(buf.count(b': keepalive'), 2, buf)
        finally:
            rc, log = d.close()
        self.assertEqual(rc, 0, log)


class HistoryLost(unittest.TestCase):
    def test_stream_reset(self):
        """Last-Event-ID older than the bounded history: one stream.reset."""
        d = H.Daemon([])
        try:
            small = image('app-0.9.0-3k-hash.bin')
            tlv = MANIFEST['app-0.9.0-3k-hash.bin']['sha256_tlv']
            for _ in range(520):  # 2 events each: more than the history (1024)
                self.assertEqual(d.request('POST', '/api/v1/images', raw=small)[0], 201)
                self.assertEqual(d.request('DELETE', '/api/v1/images/' + tlv)[0], 200)
            s = socket.create_connection(('127.0.0.1', d.port), timeout=5)
            s.sendall(b'GET /api/v1/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n')
            buf = b''
            deadline = time.monotonic() + 5
            while b'stream.reset' not in buf and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            s.close()
            self.assertIn(b'event: stream.reset', buf)
            self.assertIn(b're-read state', buf)
            st, _, r = d.json('GET', '/api/v1/events/recent?limit=1000')
            self.assertEqual((st, r['count']), (200, 1000), 'the whole limit from a full history')
            self.assertEqual(r['events'][-1]['id'], r['last_id'])
            self.assertEqual(r['events'][0]['id'], r['last_id'] - 999)
        finally:
            rc, log = d.close()
        self.assertEqual(rc, 0, log[-2000:])


class SignaturePolicy(unittest.TestCase):
    def test_require_signature(self):
        key = os.path.join(IMAGES, 'pub-ecdsa-p256.pem')
        d = H.Daemon([], extra_conf='[images]\nrequire_signature = yes\nkey = %s\n' % key)
        try:
            st, _, body = d.json('POST', '/api/v1/images', raw=image('app-1.2.3+4-ecdsa-p256.bin'))
            self.assertEqual(st, 201, body)
            self.assertTrue(body['signature']['verified'])
            st, h, body = d.request('POST', '/api/v1/images', raw=image('app-1.0.0-hash.bin'))
            self.assertEqual(st, 422, body)
            self.assertEqual(json.loads(body)['type'], 'urn:smpgw:problem:unsigned-image')
            for other in ('app-2.0.0-ed25519.bin', 'app-1.0.1-rsa2048.bin'):
                st, h, body = d.request('POST', '/api/v1/images', raw=image(other))
                self.assertEqual(st, 422, body)
                p = json.loads(body)
                self.assertIn(p['type'], ('urn:smpgw:problem:unknown-signing-key',
                                          'urn:smpgw:problem:bad-signature'))
                self.assertIn('signature', p['detail'])
            st, _, body = d.json('GET', '/api/v1/images')
            self.assertEqual(body['count'], 1, 'refused images are not stored')
        finally:
            rc, log = d.close()
        self.assertEqual(rc, 0, log)

    def test_unreadable_key(self):
        d = H.Daemon([], extra_conf='[images]\nkey = /nonexistent/key.pem\n', expect_fail=True)
        rc, log = d.close()
        self.assertNotEqual(rc, 0)
        self.assertIn('/nonexistent/key.pem', log)


class Shutdown(unittest.TestCase):
    def test_pending_requests_and_streams_end_cleanly(self):
        """SIGTERM while a device request is in flight and an event stream
        is open: the request gets a 503 problem, the stream ends, and the
        daemon exits 0."""
        import threading
        dev = H.FakeDevice('mute')
        dev.silent = True
        d = H.Daemon([dev], extra_conf='[request]\ntimeout = 30s\n')
        out = {}
        try:
            s = socket.create_connection(('127.0.0.1', d.port), timeout=5)
            s.sendall(b'GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n')
            s.recv(4096)

            def call():
                out['rsp'] = d.request('POST', '/api/v1/devices/mute/echo', {'d': 'x'},
                                       timeout=20)
            t = threading.Thread(target=call)
            t.start()
            time.sleep(0.5)
        finally:
            rc, log = d.close()
            dev.close()
        t.join(10)
        s.close()
        self.assertEqual(rc, 0, log)
        st, h, body = out['rsp']
        self.assertEqual(st, 503, body)
        self.assertEqual(json.loads(body)['type'], 'urn:smpgw:problem:canceled')


if __name__ == '__main__':
    unittest.main(verbosity=2)
