#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Checks the firmware's Kconfig choices against what the smpgw gateway
expects, and its security settings, without Zephyr: prj.conf (+ board conf
and overlays), sysbuild.conf and the MCUboot config. Exits 1 with one line
per broken rule, 0 when all hold.

  check-kconfig.py --prj prj.conf [--prj overlay.conf] \\
                   --mcuboot sysbuild/mcuboot.conf --sysbuild sysbuild.conf \\
                   [--kconfig-root Kconfig.zephyr4] [--allow-insecure]
  check-kconfig.py --self-test --prj ... --mcuboot ... --sysbuild ...
      (breaks each rule in turn on a copy of the given configs and checks
       that the checker notices)
"""
import argparse
import re
import sys

# What the gateway's upload engine assumes (DESIGN.md, notes/firmware.md).
ATT_MTU = 498                 # one write carries ATT_MTU - 3 bytes
WRITES_PER_FRAME = 5          # the gateway fills a frame with 5 full writes
L2CAP_HDR = 4                 # ACL buffer = ATT MTU + L2CAP header
LL_MAX = 251                  # data length extension maximum
MIN_PIPELINE = 2              # buf_count - 1 requests in flight, at least
# Headroom the transport takes from each buffer before the SMP frame. The
# SMP header is part of the frame the gateway sizes to buf_size, and the
# BT transport (reassembly) reserves nothing, so 0 on BLE.
BT_HEADROOM = 0
RAM_BUDGET_NETBUF = 16 * 1024  # of 64 KiB: leave room for BT, stacks, heap
MAX_NAME = 31 - 18 - 2          # legacy scan response budget (see smpgw/adv.h)

LINE = re.compile(r'^\s*(CONFIG_[A-Za-z0-9_]+|SB_CONFIG_[A-Za-z0-9_]+)\s*=\s*(.*?)\s*$')


def parse(text):
    """Kconfig fragment -> {NAME: value}; later assignments win, like Kconfig."""
    out = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        m = LINE.match(line)
        if not m:
            raise ValueError(f'line {n}: not a Kconfig assignment: {raw!r}')
        val = m.group(2)
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        out[m.group(1)] = val
    return out


def as_int(cfg, name):
    v = cfg.get(name)
    if v is None:
        return None
    try:
        return int(v, 0)
    except ValueError:
        return None


# Zephyr 4.x's SMP service permission comes from this default in the app's
# Kconfig root (Kconfig.zephyr4), not from a .conf file.
PERM_DEFAULT = re.compile(r'^\s*default\s+MCUMGR_TRANSPORT_BT_PERM_RW_ENCRYPT\s+if\s+'
                          r'SMPGW_SMP_REQUIRE_BOND\s*$', re.M)


def check_security(prj, kconfig_root, allow_insecure):
    """Bonded-only SMP (firmware/README.md, "Security"): problems found."""
    errs = []
    if prj.get('CONFIG_SMPGW_SMP_REQUIRE_BOND', 'y') != 'y':
        if not allow_insecure:
            errs.append('prj: CONFIG_SMPGW_SMP_REQUIRE_BOND=n lets anyone in radio range '
                        'upload, test, erase or reset the watch (development only: '
                        '--allow-insecure)')
        return errs
    for name, why in [
        ('BT_SMP', 'pairing and encryption'),
        ('BT_SMP_SC_PAIR_ONLY', 'LE Secure Connections only: legacy Just Works keys are '
                                'recoverable by a sniffer'),
        ('BT_SMP_APP_PAIRING_ACCEPT', 'the pairing window refuses pairings outside it'),
        ('BT_BONDABLE', 'the gateway must be able to bond'),
        ('BT_SETTINGS', 'bonds must survive a reboot'),
        ('SETTINGS', 'bonds must survive a reboot'),
    ]:
        if prj.get('CONFIG_' + name) != 'y':
            errs.append(f'prj: CONFIG_{name} must be y with SMPGW_SMP_REQUIRE_BOND ({why})')
    for name, why in [
        ('MCUMGR_TRANSPORT_BT_PERM_RW', 'the SMP service would not demand encryption'),
        ('MCUMGR_TRANSPORT_BT_PERM_RW_AUTHEN', 'needs MITM protection, which Just Works '
                                               'pairing never gives: the gateway is locked out'),
        ('MCUMGR_TRANSPORT_BT_AUTHEN', '(Zephyr 3.x) needs MITM protection, which Just Works '
                                       'pairing never gives: the gateway is locked out'),
    ]:
        if prj.get('CONFIG_' + name) == 'y':
            errs.append(f'prj: CONFIG_{name}=y: {why}')
    paired = as_int(prj, 'CONFIG_BT_MAX_PAIRED')
    if paired is not None and paired < 1:
        errs.append(f'prj: CONFIG_BT_MAX_PAIRED={paired}: no central could ever bond')
    boot = as_int(prj, 'CONFIG_SMPGW_PAIRING_WINDOW_BOOT_S')
    button = as_int(prj, 'CONFIG_SMPGW_PAIRING_WINDOW_BUTTON_S')
    if boot == 0 and button == 0:
        errs.append('prj: both pairing windows are 0: no central could ever pair')
    if boot is not None and boot > 3600:
        errs.append(f'prj: CONFIG_SMPGW_PAIRING_WINDOW_BOOT_S={boot}: over an hour of open '
                    f'pairing after a fresh flash')
    if kconfig_root is not None and not PERM_DEFAULT.search(kconfig_root):
        errs.append('Kconfig root: no "default MCUMGR_TRANSPORT_BT_PERM_RW_ENCRYPT if '
                    'SMPGW_SMP_REQUIRE_BOND": Zephyr 4.x would fall back to _PERM_RW_AUTHEN')
    return errs


def check(prj, mcuboot, sysbuild, kconfig_root=None, allow_insecure=False):
    """Returns a list of human-readable problems (empty when consistent)."""
    errs = check_security(prj, kconfig_root, allow_insecure)

    def need_y(cfg, name, where, why):
        if cfg.get(name) != 'y':
            errs.append(f'{where}: {name} must be y ({why})')

    def need_int(name, want, why):
        got = as_int(prj, 'CONFIG_' + name)
        if got != want:
            errs.append(f'prj: CONFIG_{name}={got} but the gateway expects {want} ({why})')
        return got

    mtu = need_int('BT_L2CAP_TX_MTU', ATT_MTU,
                   f'{ATT_MTU - 3}-byte writes and notifications')
    need_int('BT_BUF_ACL_RX_SIZE', ATT_MTU + L2CAP_HDR, 'ATT MTU + 4-byte L2CAP header')
    need_int('BT_BUF_ACL_TX_SIZE', ATT_MTU + L2CAP_HDR, 'ATT MTU + 4-byte L2CAP header')
    need_int('BT_CTLR_DATA_LENGTH_MAX', LL_MAX,
             'one 502-byte ACL packet = two full link-layer packets')

    size = as_int(prj, 'CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE')
    count = as_int(prj, 'CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT')
    want_size = WRITES_PER_FRAME * ((mtu or ATT_MTU) - 3) + BT_HEADROOM
    if size is None or size < want_size:
        errs.append(f'prj: CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE={size} is below '
                    f'{want_size} ({WRITES_PER_FRAME} writes of {(mtu or ATT_MTU) - 3} bytes '
                    f'+ {BT_HEADROOM} transport headroom): the gateway would send '
                    f'short frames and lose throughput')
    if count is None or count - 1 < MIN_PIPELINE:
        errs.append(f'prj: CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT={count}: need at least '
                    f'{MIN_PIPELINE + 1} so the gateway can keep buf_count - 1 >= '
                    f'{MIN_PIPELINE} requests in flight')
    if size and count and size * count > RAM_BUDGET_NETBUF:
        errs.append(f'prj: SMP buffers take {size * count} bytes, over the '
                    f'{RAM_BUDGET_NETBUF}-byte share of the 64 KiB RAM')

    for name, why in [
        ('MCUMGR_TRANSPORT_BT', 'SMP over BLE'),
        ('MCUMGR_TRANSPORT_BT_REASSEMBLY', 'frames span several writes'),
        ('MCUMGR_TRANSPORT_BT_CONN_PARAM_CONTROL', 'fast connection interval while uploading'),
        ('IMG_ERASE_PROGRESSIVELY', 'slot 1 is on slow external flash'),
        ('MCUMGR_GRP_IMG', 'image upload/state'),
        ('MCUMGR_GRP_OS', 'echo/reset/params/info'),
        ('MCUMGR_GRP_OS_MCUMGR_PARAMS', 'the gateway reads buf_size/buf_count'),
        ('MCUMGR_GRP_OS_INFO', 'the gateway shows os info'),
        ('MCUMGR_GRP_STAT', 'stat group'),
        ('BOOTLOADER_MCUBOOT', 'test/confirm/revert'),
        ('REBOOT', 'os reset after a test upload'),
        ('MCUMGR_SMP_COMMAND_STATUS_HOOKS', 'confirm refused until self-check'),
        ('MCUMGR_GRP_IMG_STATUS_HOOKS', '"update in progress" flag'),
        ('WATCHDOG', 'a hung image must reset so MCUboot reverts it'),
        ('HWINFO', 'reset cause in the health command'),
    ]:
        need_y(prj, 'CONFIG_' + name, 'prj', why)
    # Scan response = 128-bit SMP UUID (2 + 16) + complete name (2 + n) <= 31.
    name = prj.get('CONFIG_BT_DEVICE_NAME')
    if name is None or not 0 < len(name.encode()) <= MAX_NAME:
        errs.append(f'prj: CONFIG_BT_DEVICE_NAME={name!r}: 1..{MAX_NAME} bytes, or the '
                    f'scan response cannot carry it next to the SMP service UUID')
    for libc in ('CONFIG_NEWLIB_LIBC', 'CONFIG_PICOLIBC'):
        if prj.get(libc) == 'y':
            errs.append(f'prj: {libc}=y does not build with Debian\'s arm-none-eabi; '
                        f'use CONFIG_MINIMAL_LIBC')

    need_y(mcuboot, 'CONFIG_MULTITHREADING', 'mcuboot',
           'the nRF SPI driver for slot 1 needs threads, else MCUboot fails to link')
    need_y(mcuboot, 'CONFIG_BOOT_SWAP_USING_MOVE', 'mcuboot',
           'no scratch partition on pinetime_devkit0')
    need_y(mcuboot, 'CONFIG_BOOT_WATCHDOG_FEED', 'mcuboot',
           'the app starts the watchdog, which survives a soft reset')
    need_y(sysbuild, 'SB_CONFIG_BOOTLOADER_MCUBOOT', 'sysbuild', 'build MCUboot and sign the app')

    sig = lambda cfg, prefix: sorted(k[len(prefix):] for k, v in cfg.items()
                                     if k.startswith(prefix) and v == 'y')
    sb_sig = sig(sysbuild, 'SB_CONFIG_BOOT_SIGNATURE_TYPE_')
    mb_sig = sig(mcuboot, 'CONFIG_BOOT_SIGNATURE_TYPE_')
    if sb_sig and mb_sig and sb_sig != mb_sig:
        errs.append(f'signature type differs: sysbuild {sb_sig}, mcuboot {mb_sig}')
    if 'NONE' in sb_sig + mb_sig:
        errs.append('signature type NONE: the gateway can only vet signed images')
    evt = as_int(prj, 'CONFIG_BT_BUF_EVT_RX_COUNT')
    acl_tx = as_int(prj, 'CONFIG_BT_BUF_ACL_TX_COUNT') or 3
    if evt is not None and evt <= acl_tx:
        errs.append(f'prj: CONFIG_BT_BUF_EVT_RX_COUNT={evt} must exceed BT_BUF_ACL_TX_COUNT '
                    f'({acl_tx}): one Number-of-Completed-Packets event per TX buffer')
    return errs


# Each entry: (which config, key, value or None to delete) -> must fail.
BREAKAGES = [
    ('prj', 'CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE', '2048'),
    ('prj', 'CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT', '2'),
    ('prj', 'CONFIG_MCUMGR_TRANSPORT_NETBUF_COUNT', '8'),
    ('prj', 'CONFIG_BT_L2CAP_TX_MTU', '247'),
    ('prj', 'CONFIG_BT_BUF_ACL_RX_SIZE', '251'),
    ('prj', 'CONFIG_BT_BUF_ACL_TX_SIZE', None),
    ('prj', 'CONFIG_BT_CTLR_DATA_LENGTH_MAX', '27'),
    ('prj', 'CONFIG_MCUMGR_TRANSPORT_BT_REASSEMBLY', 'n'),
    ('prj', 'CONFIG_IMG_ERASE_PROGRESSIVELY', None),
    ('prj', 'CONFIG_WATCHDOG', 'n'),
    ('prj', 'CONFIG_NEWLIB_LIBC', 'y'),
    ('prj', 'CONFIG_BT_DEVICE_NAME', 'PineTime-smpgw'),
    ('mcuboot', 'CONFIG_MULTITHREADING', 'n'),
    ('mcuboot', 'CONFIG_BOOT_SWAP_USING_MOVE', None),
    ('mcuboot', 'CONFIG_BOOT_SIGNATURE_TYPE_RSA', 'y'),
    ('sysbuild', 'SB_CONFIG_BOOT_SIGNATURE_TYPE_NONE', 'y'),
    ('sysbuild', 'SB_CONFIG_BOOTLOADER_MCUBOOT', 'n'),
    ('prj', 'CONFIG_SMPGW_SMP_REQUIRE_BOND', 'n'),
    ('prj', 'CONFIG_BT_SMP_APP_PAIRING_ACCEPT', None),
    ('prj', 'CONFIG_BT_SETTINGS', 'n'),
    ('prj', 'CONFIG_BT_SMP_SC_PAIR_ONLY', 'n'),
    ('prj', 'CONFIG_MCUMGR_TRANSPORT_BT_PERM_RW', 'y'),
    ('prj', 'CONFIG_MCUMGR_TRANSPORT_BT_PERM_RW_AUTHEN', 'y'),
    ('prj', 'CONFIG_MCUMGR_TRANSPORT_BT_AUTHEN', 'y'),
    ('prj', 'CONFIG_BT_MAX_PAIRED', '0'),
    ('prj', 'CONFIG_SMPGW_PAIRING_WINDOW_BOOT_S', '86400'),
    ('prj', 'CONFIG_BT_BUF_EVT_RX_COUNT', '3'),
]


def self_test(prj, mcuboot, sysbuild, kconfig_root):
    base = {'prj': prj, 'mcuboot': mcuboot, 'sysbuild': sysbuild}
    errs = check(prj, mcuboot, sysbuild, kconfig_root)
    if errs:
        print('self-test: the given configs are already broken:', *errs, sep='\n  ')
        return 1
    bad = 0
    for which, key, val in BREAKAGES:
        cfgs = {k: dict(v) for k, v in base.items()}
        if val is None:
            cfgs[which].pop(key, None)
        else:
            cfgs[which][key] = val
        found = check(cfgs['prj'], cfgs['mcuboot'], cfgs['sysbuild'], kconfig_root)
        status = 'caught' if found else 'MISSED'
        print(f'{status}: {which} {key}={val}' + (f' -> {found[0]}' if found else ''))
        bad += not found
    pair = dict(prj, CONFIG_SMPGW_PAIRING_WINDOW_BOOT_S='0',
                CONFIG_SMPGW_PAIRING_WINDOW_BUTTON_S='0')
    found = check(pair, mcuboot, sysbuild, kconfig_root)
    print(f'{"caught" if found else "MISSED"}: both pairing windows 0')
    bad += not found
    if kconfig_root is not None:
        found = check(prj, mcuboot, sysbuild, PERM_DEFAULT.sub('', kconfig_root))
        print(f'{"caught" if found else "MISSED"}: Kconfig root without the ENCRYPT default')
        bad += not found
    insecure = dict(prj, CONFIG_SMPGW_SMP_REQUIRE_BOND='n')
    if check(insecure, mcuboot, sysbuild, kconfig_root, allow_insecure=True):
        print('MISSED: --allow-insecure still refuses SMPGW_SMP_REQUIRE_BOND=n')
        bad += 1
    try:
        parse('CONFIG_X=y\nthis is not kconfig\n')
        print('MISSED: garbage line accepted')
        bad += 1
    except ValueError as e:
        print(f'caught: garbage line -> {e}')
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--prj', action='append', required=True,
                    help='app Kconfig fragment; repeat for overlays (later wins)')
    ap.add_argument('--mcuboot', required=True)
    ap.add_argument('--sysbuild', required=True)
    ap.add_argument('--kconfig-root', help="the app's Zephyr 4.x Kconfig root (Kconfig.zephyr4)")
    ap.add_argument('--allow-insecure', action='store_true',
                    help='accept SMPGW_SMP_REQUIRE_BOND=n (development builds)')
    ap.add_argument('--self-test', action='store_true')
    a = ap.parse_args()
    try:
        prj = {}
        for p in a.prj:
            with open(p) as f:
                prj.update(parse(f.read()))
        with open(a.mcuboot) as f:
            mcuboot = parse(f.read())
        with open(a.sysbuild) as f:
            sysbuild = parse(f.read())
        kconfig_root = None
        if a.kconfig_root:
            with open(a.kconfig_root) as f:
                kconfig_root = f.read()
    except (OSError, ValueError) as e:
        print(f'check-kconfig: {e}', file=sys.stderr)
        return 2
    if a.self_test:
        return self_test(prj, mcuboot, sysbuild, kconfig_root)
    errs = check(prj, mcuboot, sysbuild, kconfig_root, a.allow_insecure)
    for e in errs:
        print(f'check-kconfig: {e}', file=sys.stderr)
    if not errs:
        print(f'check-kconfig: {", ".join(a.prj)}, {a.mcuboot}, {a.sysbuild}: consistent '
              f'with the gateway')
    return 1 if errs else 0


if __name__ == '__main__':
    sys.exit(main())
