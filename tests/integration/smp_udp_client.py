# SPDX-License-Identifier: MIT
"""A small SMP client over UDP for the gateway's integration tests.

Written from the protocol facts (docs/../shared DESIGN: 8-byte big-endian
header res:3|ver:2|op:3, flags, length, group, seq, id; one CBOR map as
payload; one datagram = one frame), not from the gateway's code, so a
gateway bug cannot hide by living on both sides.
"""
import hashlib
import json
import os
import socket
import struct
import threading
import time

import cbor2

OP_READ, OP_READ_RSP, OP_WRITE, OP_WRITE_RSP = 0, 1, 2, 3
GROUP_OS, GROUP_IMG = 0, 1


class SmpError(Exception):
    def __init__(self, rc, group=None, body=None):
        super().__init__('SMP error rc=%s group=%s body=%r' % (rc, group, body))
        self.rc = rc
        self.group = group
        self.body = body


def encode(op, group, cmd, seq, body, ver=1):
    payload = cbor2.dumps(body)
    return struct.pack('>BBHHBB', ((ver & 3) << 3) | (op & 7), 0, len(payload),
                       group, seq & 0xff, cmd) + payload


def decode(frame):
    if len(frame) < 8:
        raise ValueError('short frame: %r' % frame)
    b0, flags, length, group, seq, cmd = struct.unpack('>BBHHBB', frame[:8])
    if len(frame) != 8 + length:
        raise ValueError('length %d does not match %d' % (length, len(frame) - 8))
    hdr = {'op': b0 & 7, 'ver': (b0 >> 3) & 3, 'flags': flags, 'len': length,
           'group': group, 'seq': seq, 'id': cmd}
    return hdr, cbor2.loads(frame[8:]) if length else {}


def error_of(body):
    """(rc, group) of an SMP error response, or None for success."""
    if not isinstance(body, dict):
        return None
    err = body.get('err')
    if isinstance(err, dict) and err.get('rc', 0) != 0:
        return err.get('rc'), err.get('group')
    if body.get('rc', 0) != 0:
        return body['rc'], None
    return None


class Client:
    def __init__(self, port, host='127.0.0.1', timeout=10.0, ver=1):
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.timeout = timeout
        self.ver = ver
        self.seq = 0

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendto(data, self.addr)

    def recv_raw(self, timeout=None):
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        data, _ = self.sock.recvfrom(70000)
        return data

    def request(self, op, group, cmd, body=None, seq=None, check=True, timeout=None):
        if seq is None:
            self.seq = (self.seq + 1) & 0xff
            seq = self.seq
        self.send_raw(encode(op, group, cmd, seq, body if body is not None else {},
                             self.ver))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no response to group %d id %d seq %d' % (group, cmd, seq))
            hdr, rsp = decode(self.recv_raw(left))
            if hdr['seq'] != seq:
                continue  # a late answer to an earlier, timed-out request
            assert hdr['op'] == op + 1, hdr
            assert hdr['group'] == group and hdr['id'] == cmd, hdr
            err = error_of(rsp)
            if check and err:
                raise SmpError(err[0], err[1], rsp)
            return hdr, rsp

    # -- os group --
    def echo(self, text):
        return self.request(OP_WRITE, GROUP_OS, 0, {'d': text})[1]['r']

    def params(self):
        return self.request(OP_READ, GROUP_OS, 6)[1]

    def reset(self):
        return self.request(OP_WRITE, GROUP_OS, 5, {})[1]

    # -- img group --
    def image_state(self):
        return self.request(OP_READ, GROUP_IMG, 0)[1].get('images', [])

    def image_test(self, hash_):
        return self.request(OP_WRITE, GROUP_IMG, 0, {'hash': hash_, 'confirm': False})[1]

    def image_confirm(self, hash_=None):
        body = {'confirm': True}
        if hash_ is not None:
            body['hash'] = hash_
        return self.request(OP_WRITE, GROUP_IMG, 0, body)[1]

    def upload(self, image, buf_size, chunk_timeout=30.0, max_rounds=100000):
        """Uploads image (bytes) to slot 1; returns the number of requests."""
        sha = hashlib.sha256(image).digest()
        off = 0
        rounds = 0
        while off < len(image):
            rounds += 1
            if rounds > max_rounds:
                raise RuntimeError('upload does not progress')
            body = {'off': off, 'data': b''}
            if off == 0:
                body.update({'image': 0, 'len': len(image), 'sha': sha,
                             'upgrade': False})
            # The whole frame (header + CBOR) must fit the watch's buffer;
            # 5 bytes leave room for the data's byte-string length.
            room = buf_size - len(encode(OP_WRITE, GROUP_IMG, 1, 0, body)) - 5
            body['data'] = image[off:off + room]
            _, rsp = self.request(OP_WRITE, GROUP_IMG, 1, body, timeout=chunk_timeout)
            new = rsp.get('off')
            if not isinstance(new, int):
                raise RuntimeError('upload response without off: %r' % rsp)
            off = new
        return rounds

    def wait_booted(self, want_hash, timeout, step=0.3):
        """After a reset: asks, bounded by timeout seconds, until slot 0
        runs want_hash (errors while the watch reboots are expected);
        returns slot 0. TimeoutError when it does not."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                s0 = slot(self.image_state(), 0)
                if s0 and s0.get('hash') == want_hash:
                    return s0
            except (SmpError, TimeoutError, socket.timeout):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError('timed out waiting for the watch to boot the new image')
            time.sleep(step)


def slot(images, n):
    """Slot n of image 0 in an image-state answer's list, or None."""
    return next((im for im in images if im.get('slot') == n and im.get('image', 0) == 0),
                None)


def conformance_image(conformance, name):
    """(the image's bytes, its SHA-256 TLV as bytes) from the conformance
    data (images/manifest.json)."""
    with open(os.path.join(conformance, 'images', 'manifest.json')) as f:
        want_hash = bytes.fromhex(json.load(f)[name]['sha256_tlv'])
    with open(os.path.join(conformance, 'images', name), 'rb') as f:
        return f.read(), want_hash


def echo_all(ports, timeout):
    """One echo to every port at once (a thread each); returns (errors,
    seconds): errors lists (port, why) for each wrong or missing answer."""
    errors = []

    def worker(port):
        c = Client(port, timeout=timeout)
        text = 'hi %d' % port
        try:
            if c.echo(text) != text:
                errors.append((port, 'wrong answer'))
        except (SmpError, OSError) as e:
            errors.append((port, repr(e)))
        finally:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(p,)) for p in ports]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=timeout + 15)
    return errors, time.monotonic() - t0
