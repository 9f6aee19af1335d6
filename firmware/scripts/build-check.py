#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Builds the watch firmware against real Zephyr workspaces and checks it:
warning-free sysbuild builds (MCUboot + app) for pinetime_devkit0 and, where
the Zephyr has the board, a native_sim/native/64 build; prints flash and
RAM use per image and the biggest RAM users. Run it before changing
firmware/ (docs/firmware.md, "Build check"):

  firmware/scripts/build-check.py ~/zephyrproject [~/zephyr-4.3 ...]

Each WORKSPACE is a west workspace top directory (zephyr/ plus the modules
at west.yml's paths). Nothing is downloaded. Build directories go to
WORKSPACE/build-smpgw/<target> (inside the workspace, where Zephyr 3.x's
`west sign` finds it) and are rebuilt from scratch, so every warning shows.
Exits 1 when a build fails or prints a warning (compiler, linker, Kconfig
or CMake), 2 on bad usage.

Toolchains: pinetime uses ZEPHYR_TOOLCHAIN_VARIANT from the environment,
else Debian's arm-none-eabi-gcc as gnuarmemb (GNUARMEMB_TOOLCHAIN_PATH=/usr);
native_sim uses the host gcc.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

FW_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Module folders west.yml uses; the ones present are handed to CMake.
MODULE_PATHS = [
    'modules/hal/nordic', 'modules/hal/cmsis', 'modules/hal/cmsis_6',
    'modules/crypto/tinycrypt', 'modules/crypto/mbedtls', 'modules/fs/littlefs',
    'modules/lib/zcbor', 'bootloader/mcuboot',
]
REQUIRED = ['modules/hal/nordic', 'modules/lib/zcbor', 'bootloader/mcuboot']
# What counts as a warning in the build output.
WARNING = re.compile(r'(\bwarning:|CMake Warning|CMake Deprecation Warning)', re.I)
TOP_RAM = 12
# Warnings that are not the firmware's and cannot be fixed from it: shown
# as "known", not counted. (regex on the line, why)
KNOWN_WARNINGS = [
    (r"kernel/sched\.c:\d+:\d+: warning: implicit declaration of function "
     r".move_thread_to_end_of_prio_q",
     'Zephyr 4.3.0 tree as used here: z_move_thread_to_end_of_prio_q() calls a function '
     'the tree does not define; unused, the linker drops it'),
    (r'os_mgmt_processor\.h:\d+:\d+: warning: #warning "Processor type could not be determined"',
     'native_sim: Zephyr\'s os_mgmt has no processor name for the POSIX arch ("unknown")'),
    (r'WARNING: Using default MCUboot signing key file',
     'development key, as documented (README.md, "Keys and signing"); products pass their own'),
]


def zephyr_version(ws):
    fields = {}
    with open(os.path.join(ws, 'zephyr', 'VERSION')) as f:
        for line in f:
            m = re.match(r'\s*(\w+)\s*=\s*(\S*)', line)
            if m:
                fields[m.group(1)] = m.group(2)
    return (f"{fields['VERSION_MAJOR']}.{fields['VERSION_MINOR']}."
            f"{fields['PATCHLEVEL']}")


def run(cmd, env, log):
    """Runs cmd, appends its output to log; returns (rc, output)."""
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, errors='replace')
    with open(log, 'a') as f:
        f.write('$ ' + ' '.join(cmd) + '\n' + p.stdout)
    return p.returncode, p.stdout


def memory_regions(map_path):
    """{'FLASH': (origin, length), 'RAM': ...} from a GNU ld map file."""
    regions = {}
    with open(map_path, errors='replace') as f:
        text = f.read()
    block = text.split('Memory Configuration', 1)[1].split('Linker script and memory map', 1)[0]
    for m in re.finditer(r'^(\w+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)', block, re.M):
        regions[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16))
    return regions


def elf_usage(elf_path, regions):
    """(flash_used, ram_used, [(size, name)] biggest RAM objects) of an ELF."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    def inside(addr, name):
        r = regions.get(name)
        return r is not None and r[0] <= addr < r[0] + r[1]

    flash = ram = 0
    top = []
    with open(elf_path, 'rb') as f:
        elf = ELFFile(f)
        # Load addresses (LMA) of flash-resident bytes come from the
        # program headers; RAM use from allocated sections' VMAs.
        for seg in elf.iter_segments():
            if seg['p_type'] == 'PT_LOAD' and inside(seg['p_paddr'], 'FLASH'):
                flash += seg['p_filesz']
        for sec in elf.iter_sections():
            if sec['sh_flags'] & 0x2 and inside(sec['sh_addr'], 'RAM'):
                ram += sec['sh_size']
        for sec in elf.iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for sym in sec.iter_symbols():
                if (sym['st_info']['type'] == 'STT_OBJECT' and sym['st_size'] > 0
                        and inside(sym['st_value'], 'RAM')):
                    top.append((sym['st_size'], sym.name))
    top.sort(reverse=True)
    return flash, ram, top[:TOP_RAM]


def report_image(label, bdir, lines):
    zdir = os.path.join(bdir, 'zephyr')
    regions = memory_regions(os.path.join(zdir, 'zephyr.map'))
    flash, ram, top = elf_usage(os.path.join(zdir, 'zephyr.elf'), regions)
    fl, rl = regions['FLASH'][1], regions['RAM'][1]
    lines.append(f'  {label}: flash {flash:,} B of {fl // 1024} KiB ({100 * flash / fl:.1f} %), '
                 f'RAM {ram:,} B of {rl // 1024} KiB ({100 * ram / rl:.1f} %)')
    return top


def build(ws, version, target, env, out_lines):
    """One clean build; returns the list of problems (empty when fine)."""
    bdir = os.path.join(ws, 'build-smpgw', target.replace('/', '_'))
    log = bdir + '.log'
    shutil.rmtree(bdir, ignore_errors=True)
    os.makedirs(os.path.dirname(bdir), exist_ok=True)
    if os.path.exists(log):
        os.remove(log)
    mods = ';'.join(os.path.join(ws, p) for p in MODULE_PATHS
                    if os.path.isdir(os.path.join(ws, p)))
    common = ['-GNinja', f'-DZEPHYR_MODULES={mods}']
    if target == 'pinetime_devkit0':
        cmd = ['cmake', '-S', os.path.join(ws, 'zephyr', 'share', 'sysbuild'), '-B', bdir,
               '-DBOARD=pinetime_devkit0', f'-DAPP_DIR={FW_DIR}'] + common
    else:
        cmd = ['cmake', '-S', FW_DIR, '-B', bdir, f'-DBOARD={target}'] + common
    t0 = time.monotonic()
    rc, text = run(cmd, env, log)
    if rc == 0:
        rc, more = run(['ninja', '-C', bdir], env, log)
        text += more
    secs = time.monotonic() - t0
    problems = []
    warnings, known = [], []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not WARNING.search(line):
            continue
        if line.startswith('CMake '):
            # The message follows on indented lines up to a blank one.
            for more in lines[i + 1:i + 8]:
                if not more.strip():
                    break
                line += ' ' + more.strip()
        why = next((w for pat, w in KNOWN_WARNINGS if re.search(pat, line)), None)
        (known if why else warnings).append((line.strip(), why))
    warnings = [l for l, _ in warnings]
    if rc != 0:
        problems.append(f'build failed (exit {rc}), see {log}')
    problems += [f'warning: {w}' for w in warnings]
    out_lines.append(f'Zephyr {version}, {target}: '
                     f'{"ok" if not problems else "FAILED"} ({secs:.0f} s, {len(warnings)} warnings; '
                     f'log {log})')
    for why in sorted({w for _, w in known}):
        n = sum(1 for _, w in known if w == why)
        out_lines.append(f'  known warning (x{n}, not counted): {why}')
    if rc == 0 and target == 'pinetime_devkit0':
        app = os.path.join(bdir, os.path.basename(FW_DIR))
        top = report_image('app', app, out_lines)
        report_image('MCUboot', os.path.join(bdir, 'mcuboot'), out_lines)
        out_lines.append(f'  biggest RAM users (app): ' +
                         ', '.join(f'{name} {size:,}' for size, name in top))
        signed = os.path.join(app, 'zephyr', 'zephyr.signed.bin')
        if os.path.exists(signed):
            out_lines.append(f'  signed update image: {os.path.getsize(signed):,} B ({signed})')
        else:
            problems.append('no zephyr.signed.bin: sysbuild did not sign the app')
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('workspace', nargs='+', help='west workspace top directory')
    ap.add_argument('--no-native-sim', action='store_true', help='pinetime_devkit0 only')
    a = ap.parse_args()

    base_env = dict(os.environ)
    if 'ZEPHYR_TOOLCHAIN_VARIANT' not in base_env and shutil.which('arm-none-eabi-gcc'):
        gcc = shutil.which('arm-none-eabi-gcc')
        base_env['ZEPHYR_TOOLCHAIN_VARIANT'] = 'gnuarmemb'
        base_env['GNUARMEMB_TOOLCHAIN_PATH'] = os.path.dirname(os.path.dirname(gcc))
    out, problems = [], []
    for ws in a.workspace:
        ws = os.path.abspath(ws)
        if not os.path.isfile(os.path.join(ws, 'zephyr', 'VERSION')):
            print(f'build-check: {ws}: no zephyr/VERSION: not a workspace top directory',
                  file=sys.stderr)
            return 2
        missing = [p for p in REQUIRED if not os.path.isdir(os.path.join(ws, p))]
        if missing:
            print(f'build-check: {ws}: missing modules {", ".join(missing)} (west update)',
                  file=sys.stderr)
            return 2
        version = zephyr_version(ws)
        env = dict(base_env, ZEPHYR_BASE=os.path.join(ws, 'zephyr'))
        targets = ['pinetime_devkit0']
        if (not a.no_native_sim and
                os.path.isdir(os.path.join(ws, 'zephyr', 'boards', 'native', 'native_sim'))):
            targets.append('native_sim/native/64')
        for t in targets:
            tenv = dict(env, ZEPHYR_TOOLCHAIN_VARIANT='host') if t.startswith('native_sim') else env
            found = build(ws, version, t, tenv, out)
            problems += [f'Zephyr {version}, {t}: {p}' for p in found]
    print('\n'.join(out))
    for p in problems:
        print(f'build-check: {p}', file=sys.stderr)
    print(f'build-check: {"FAILED" if problems else "all builds ok, no warnings"}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
