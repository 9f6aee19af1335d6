# SPDX-License-Identifier: MIT
"""VM tier driver for the PROJECT'S OWN watch firmware (firmware/, built for
native_sim/native/64 against a real Zephyr 4.x: firmware/README.md), run
INSIDE the VM (tests/vm/stage2.sh started the system bus, btvirt
controllers and a real bluetoothd): the firmware takes hci1 through the HCI
user channel, the real smpgwd manages it on hci0 through the real bluetoothd.

The build is given by SMPGW_FW_NATIVE (path to zephyr.exe, visible in the
guest: not under /tmp or /root); without it the scenario exits 77 (SKIP).
CI has none; docs/firmware.md records a run.

The watch's flash is a file (-flash=...), so settings (boot counter,
bonds) survive a restart of the process, which is how a reboot looks here.
native_sim has no MCUboot: this script plays its part on the flash file
between two runs (slot 0 starts with a test-booted image; after a reset
with slot 1 marked for test it swaps the slots the way swap-using-move
leaves them: new image in slot 0, unconfirmed). Everything else is the real
firmware, the real Zephyr BLE host and MCUmgr, the real bluetoothd, smpgwd.

Checks, in order:
  1. the advertising record, decoded by smpgwd (version, hash prefix,
     unconfirmed, pairing window open) before any connection;
  2. bonded-only SMP: the gateway pairs inside the first-boot window, the
     first SMP request (a confirm) is refused until the self-check passed
     (group 64 rc 2), the user group's health command, then the confirm;
  3. an update job (mode upload) through smpgwd, test, reset; the swap;
     the new image boots unconfirmed, its self-check gates the confirm;
  4. the bond survives the reboot (no new pairing, window closed);
  5. outside the window a central without a bond gets nothing: the bond is
     removed on the gateway's side, the watch refuses the new pairing and
     the gateway answers the SMP client with an error.
Prints TAP; exit status 0 when all pass.
"""
import json
import os
import sys
import time

import ble_scenarios as bs
import zephyr_peer as zp
from ble_scenarios import tap, log, http, wait_for
from smp_udp_client import Client, SmpError, OP_READ

SKIP = 77
FLASH = '/tmp/fw-flash.bin'
# native_sim's flash0 (boards/native/native_sim/native_sim.dts).
FLASH_SIZE = 2048 * 1024
SLOT0, SLOT1, SLOT_SIZE = 0xC000, 0x75000, 0x69000
SECTOR = 4096
# MCUboot trailer (BOOT_MAX_ALIGN 8): magic in the last 16 bytes, image_ok
# 8 bytes before it, copy_done 8 before that.
MAGIC = bytes.fromhex('77c295f360d2ef7f3552500f2cb67980')
GROUP_SMPGW, HEALTH = 64, 0
RC_SELF_CHECK_PENDING = 2


def image(name):
    data = open(os.path.join(bs.CONFORMANCE, 'images', name), 'rb').read()
    want = json.load(open(os.path.join(bs.CONFORMANCE, 'images', 'manifest.json')))[name]
    return data, want


def trailer_magic(buf, slot):
    end = slot + SLOT_SIZE
    return bytes(buf[end - 16:end]) == MAGIC


def mark_test_booted(buf, slot):
    """What MCUboot leaves in slot 0 after a test swap: magic, copy_done
    set, image_ok unset (the image is unconfirmed)."""
    end = slot + SLOT_SIZE
    buf[end - 16:end] = MAGIC
    buf[end - 32] = 0x01


def prepare_flash(slot0_image):
    """A fresh watch: erased flash, slot 0 holding a test-booted image."""
    buf = bytearray(b'\xff' * FLASH_SIZE)
    buf[SLOT0:SLOT0 + len(slot0_image)] = slot0_image
    mark_test_booted(buf, SLOT0)
    with open(FLASH, 'wb') as f:
        f.write(buf)


def mcuboot_swap():
    """MCUboot's part at a reset: slot 1 marked for test -> swapped into
    slot 0, unconfirmed. Returns True when it swapped."""
    with open(FLASH, 'rb') as f:
        buf = bytearray(f.read())
    if not trailer_magic(buf, SLOT1):
        return False
    body = SLOT_SIZE - SECTOR  # the last sector holds the trailer
    new = bytes(buf[SLOT1:SLOT1 + body])
    old = bytes(buf[SLOT0:SLOT0 + body])
    buf[SLOT0:SLOT0 + SLOT_SIZE] = new + b'\xff' * SECTOR
    buf[SLOT1:SLOT1 + SLOT_SIZE] = old + b'\xff' * SECTOR
    mark_test_booted(buf, SLOT0)
    with open(FLASH, 'wb') as f:
        f.write(buf)
    return True


class FwWatch(zp.BleWatch):
    def __init__(self, exe, index=1):
        super().__init__(index, variant='firmware/ native_sim', name='zephyr-fw-hci%d' % index,
                         cmd=[exe, '--bt-dev=hci%d' % index, '-flash=' + FLASH, '-no-color'],
                         ready='advertising as ')

    def exited(self):
        return self.proc is not None and self.proc.poll() is not None


def health(c, timeout=60):
    return c.request(OP_READ, GROUP_SMPGW, HEALTH, timeout=timeout)[1]


def advertised(addr):
    d = bs.device(addr) or {}
    return d.get('advertised') or {}


def wait_adv(addr, what, cond, timeout=90):
    return wait_for('advertising record: %s' % what,
                    lambda: (lambda a: a if a and cond(a) else None)(advertised(addr)), timeout, 0.5)


def bonded(addr):
    try:
        return bs.bz_prop(bs.dev_path('hci0', addr), 'Device1', 'Paired') is True
    except RuntimeError:
        return False


def adv_and_first_boot(watch, base):
    a = wait_adv(watch.address, 'version %s' % base['version'],
                 lambda a: a.get('version') == base['version'])
    tap.ok(a.get('hash_prefix') == base['sha256_tlv'][:8],
           'smpgwd decoded the advertising record before connecting: version %s, hash prefix %s, '
           'battery %r (native_sim: unknown)' % (a.get('version'), a.get('hash_prefix'),
                                                 a.get('battery')))
    flags = a.get('flags') or 0
    tap.ok(flags & 0x01 and flags & 0x20 and a.get('update_state') is not None,
           'record flags 0x%02x: unconfirmed (bit 0), pairing window open (bit 5, first boot); '
           'update_state %r' % (flags, a.get('update_state')))


SOAK_S = 45  # CONFIG_SMPGW_SELF_CHECK_SOAK_S in boards/native_sim_native_64.conf


def gate_then_confirm(c, watch, want, first=False):
    """The first SMP request after boot is a confirm: refused while the
    self-check is pending (group 64 rc 2); health shows why; once
    self_check is true the confirm works. After the first boot the gateway
    may take longer than the soak to discover and pair (a busy machine):
    then the confirm is rightly accepted, and health must show the soak
    had passed. After a reboot the gateway reconnects at once: refused."""
    t = time.monotonic()
    try:
        c.image_confirm()
        refused = None
    except SmpError as e:
        refused = e
    h0 = health(c)
    if refused is None and first:
        tap.ok(h0.get('uptime_s', 0) >= SOAK_S and h0.get('self_check') is True and
               h0.get('confirmed') is True,
               'first confirm accepted after %.1fs: discovery and pairing outlasted the %d s '
               'soak, health agrees (%r)' % (time.monotonic() - t, SOAK_S, h0))
        return h0
    tap.ok(refused is not None and refused.group == GROUP_SMPGW and
           refused.rc == RC_SELF_CHECK_PENDING,
           'confirm before the self-check (%d s soak on native_sim): refused with group 64 '
           'rc 2 (%r; %.1fs%s)' % (SOAK_S, refused, time.monotonic() - t,
                                   ', the link paired first' if first else ''))
    tap.ok(h0.get('self_check') is False and h0.get('confirmed') is False,
           'user group health before: self_check false, confirmed false (%r)' % (h0,))
    h = wait_for('health: self_check true', lambda: (lambda h: h if h.get('self_check') else None)(
        health(c)), 90, 1)
    tap.ok(h.get('confirmed') is False and isinstance(h.get('uptime_s'), int) and
           h.get('battery_pct') == 255 and h.get('reset_cause') in ('power_on', 'software', 'unknown'),
           'user group health (64/0): %r' % (h,))
    c.image_confirm()
    s0 = bs.slot(c.image_state(), 0)
    v = want['version'].replace('+', '.')  # Zephyr: 1.2.3.4, and 1.0.0 for +0
    tap.ok(s0 and s0.get('confirmed') and s0.get('version') in (v, v[:-2] if v.endswith('.0') else v),
           'confirm after the self-check: slot 0 %s confirmed (%r)' % (want['version'], s0))
    return h


def update(c, watch, new, want):
    st, desc = bs.http_raw('POST', '/api/v1/images', new)
    tap.ok(st in (200, 201), 'REST: image %s stored (%s)' % (want['version'], st))
    st, job = http('POST', '/api/v1/devices/%s/update' % watch.address,
                   {'image': want['sha256_tlv'], 'mode': 'upload'})
    jid = (job or {}).get('id')
    t = time.monotonic()

    def ended():
        j = http('GET', '/api/v1/jobs/%s' % jid)[1] or {}
        return j if j.get('state') not in (None, 'queued', 'running') else None
    j = wait_for('update job %s' % jid, ended, 300, 1)
    dt = time.monotonic() - t
    tap.ok(j.get('state') == 'done', 'update job (mode upload, %d bytes) done in %.1fs (%.1f KB/s; '
           'error %r)' % (len(new), dt, len(new) / dt / 1000, j.get('error')))
    st, body = http('POST', '/api/v1/devices/%s/image-state/test' % watch.address,
                    {'hash': want['sha256_tlv']})
    s1 = bs.slot(bs.rest_images(watch.address), 1)
    tap.ok(st == 200 and s1 and s1.get('pending'), 'REST test: slot 1 %s pending (%s)'
           % (want['version'], st))
    st, body = http('POST', '/api/v1/devices/%s/reset' % watch.address, {})
    wait_for('the watch to reset (the process exits)', watch.exited, 30, 0.2)
    tap.ok(mcuboot_swap(), 'reset: REST %s, the watch exited; slot 1 was marked for test: '
           'swapped into slot 0 (MCUboot stand-in)' % st)


def main():
    exe = os.environ.get('SMPGW_FW_NATIVE', '')
    if not os.access(exe, os.X_OK):
        print('1..0 # SKIP no native_sim build of firmware/ (set SMPGW_FW_NATIVE to its '
              'zephyr.exe; got %r)' % exe, flush=True)
        sys.exit(SKIP)
    base, base_want = image('app-1.0.0-hash.bin')
    new, new_want = image('app-1.2.3+4-ecdsa-p256.bin')
    prepare_flash(base)
    watch = FwWatch(exe)
    watch.start()
    gw = bs.start_gw(True)
    d = bs.discover(watch.address)
    adv_and_first_boot(watch, base_want)
    c = Client(d['udp_port'], timeout=90)
    gate_then_confirm(c, watch, base_want, first=True)
    tap.ok(bonded(watch.address) and 'paired (bonded)' in watch.log_text(),
           'the gateway paired and bonded inside the first-boot window')

    update(c, watch, new, new_want)
    watch.start()  # the reboot after the swap (same flash file)
    a = wait_adv(watch.address, 'version %s' % new_want['version'],
                 lambda a: a.get('version') == new_want['version'], 120)
    tap.ok(a.get('flags', 0) & 0x01 and not a.get('flags', 0) & 0x20,
           'after the swap the record says %s, unconfirmed, pairing window closed (flags 0x%02x)'
           % (a.get('version'), a.get('flags', 0)))
    h = gate_then_confirm(c, watch, new_want)
    tap.ok(h.get('boot_count') == 2 and watch.log_text().count('paired (') == 1,
           'boot 2: the bond came back from settings (no new pairing; boot_count %r)'
           % h.get('boot_count'))

    # Outside the window: the gateway forgets its bond; the watch still
    # has its own, but a new pairing is refused and SMP stays shut.
    out = bs.busctl('call', 'org.bluez', '/org/bluez/hci0', 'org.bluez.Adapter1',
                    'RemoveDevice', 'o', bs.dev_path('hci0', watch.address))
    log('RemoveDevice: %s' % out.strip())
    t = time.monotonic()
    try:
        c.echo('after remove')
        got = 'an answer'
    except (TimeoutError, SmpError, OSError) as e:
        got = repr(e)
    tap.ok(got != 'an answer' and 'pairing refused: pairing window closed' in watch.log_text(),
           'outside the window: the watch refused the new pairing; the gateway, without a '
           'bond, got no answer from the watch and says so (%s after %.1fs)'
           % (got, time.monotonic() - t))
    st, dev = http('GET', '/api/v1/devices/%s' % watch.address)
    log('device after the refusal: %s' % json.dumps(dev)[:600])
    c.close()
    return bs.finish(gw, watch)


if __name__ == '__main__':
    bs.run_scenarios(main)
