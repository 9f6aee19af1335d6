# SPDX-License-Identifier: MIT
"""Real Zephyr watches for the VM tier: the prebuilt stock Zephyr 4.3.0
smp_svr sample (../shared/peers/zephyr, see its README: not project code,
never copied into the repository) run as ordinary processes inside the VM.

- BleWatch: a BLE variant (smp-svr-ble, -lossy, -pairing) takes one btvirt
  controller away from bluetoothd (`btmgmt --index N power off`, then the
  HCI user channel), advertises the SMP service and serves it. A restart is a
  reboot: its flash (-flash_in_ram) and its bonds are lost.
- UdpPeer: smp-svr-udp on 127.0.0.1:PORT (the same Zephyr over plain UDP).

Each peer's output goes to the results share (OUT/<name>.log, every line
stamped with the scenario's clock, all boots appended), so run.sh prints it
on failure and VM_KEEP=1 keeps it.

Where the peers are: $SMPGW_ZEPHYR_PEERS, else <checkout top>/../shared/
peers/zephyr. When a variant is absent, require() ends the scenario with
exit status 77 (meson: SKIP) and says what it looked for.
"""
import os
import signal
import subprocess
import sys
import time

import ble_scenarios as bs

SKIP = 77
READY = 'Advertising successfully started'
RUNNERS = {'smp-svr-ble': 'run-ble', 'smp-svr-ble-lossy': 'run-ble',
           'smp-svr-ble-pairing': 'run-ble', 'smp-svr-udp': 'run-udp'}


def peers_dir():
    return (os.environ.get('SMPGW_ZEPHYR_PEERS') or
            os.path.join(os.path.dirname(bs.SRC), 'shared', 'peers', 'zephyr'))


def runner(variant):
    return os.path.join(peers_dir(), variant, RUNNERS[variant])


def require(*variants):
    """Exits 77 (SKIP) unless every named variant's runner is there."""
    missing = [v for v in variants if not os.access(runner(v), os.X_OK)]
    if missing:
        print('1..0 # SKIP real Zephyr peers missing: %s (looked in %s; set '
              'SMPGW_ZEPHYR_PEERS to the peers/zephyr folder)'
              % (', '.join(missing), peers_dir()), flush=True)
        sys.exit(SKIP)


def btmgmt(index, *args, timeout=15):
    r = subprocess.run(['btmgmt', '--index', str(index)] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def controller_address(index):
    """The controller's public address: the watch's identity once Zephyr
    owns it (read while bluetoothd still has it)."""
    rc, out = btmgmt(index, 'info')
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == 'addr':
            return parts[1].upper()
    return bs.bz_prop('/org/bluez/hci%d' % index, 'Adapter1', 'Address').upper()


class BleWatch:
    """One Zephyr BLE watch on controller hciN. start() waits until it
    advertises; stop() ends the process (the controller goes back to
    bluetoothd, powered off); restart() is a reboot."""

    def __init__(self, index, variant='smp-svr-ble', name=None, cmd=None, ready=READY):
        """cmd/ready: another Zephyr build than the shipped peers (e.g. the
        project's own firmware for native_sim): its command line, and the
        log line that says it advertises."""
        self.index = index
        self.variant = variant
        self.cmd = cmd
        self.ready = ready
        self.name = name or 'zephyr-hci%d' % index
        self.proc = None
        self.boots = 0
        self.address = controller_address(index)

    def log_text(self):
        return bs.read_log(self.name)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=90, attempts=5):
        """bluetoothd must let go of the controller first: power it off
        (bluetoothd may power it on again by itself when it comes back
        from an earlier boot: then the user channel bind fails with EBUSY
        and the peer exits at once; try again, bounded)."""
        for attempt in range(1, attempts + 1):
            rc, out = btmgmt(self.index, 'power', 'off')
            if rc != 0:
                bs.log('%s: btmgmt power off: %s' % (self.name, out.strip()))
            before = self.log_text().count(self.ready)
            t = time.monotonic()
            self.proc = bs.start(self.name, self.cmd or
                                 [runner(self.variant), str(self.index), '-no-color'])
            bs.wait_for('%s to advertise or exit' % self.name,
                        lambda: self.log_text().count(self.ready) > before or not self.alive(),
                        timeout)
            if self.alive():
                self.boots += 1
                bs.log('%s (%s, %s) advertising after %.1fs (boot %d)'
                       % (self.name, self.variant, self.address, time.monotonic() - t, self.boots))
                return
            bs.log('%s: exited %s before advertising (attempt %d)'
                   % (self.name, self.proc.returncode, attempt))
            time.sleep(1)
        raise RuntimeError('%s did not start in %d attempts (see %s.log)'
                           % (self.name, attempts, self.name))

    def stop(self, hard=False, timeout=30):
        """Ends the process (SIGKILL when hard: a crash), then waits until
        bluetoothd lists the controller again (bounded; only logged if not)."""
        if not self.alive():
            return
        if hard:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        else:
            bs.stop(self.proc)
        path = '/org/bluez/hci%d' % self.index
        try:
            bs.wait_for('bluetoothd to list %s again' % path,
                        lambda: path in bs.busctl('tree', '--list', 'org.bluez'), timeout, 0.3)
        except TimeoutError as e:
            bs.log('%s: %s' % (self.name, e))

    def restart(self, hard=False):
        """A reboot: the process ends and starts again with empty flash."""
        self.stop(hard=hard)
        self.start()

    def acl_drops(self):
        return self.log_text().count('No available ACL buffers')


class UdpPeer:
    """smp-svr-udp on 127.0.0.1:port; start() waits until it answers an echo."""

    def __init__(self, port, name=None):
        self.port = port
        self.name = name or 'zephyr-udp-%d' % port
        self.proc = None

    def start(self, timeout=60):
        from smp_udp_client import Client, SmpError
        self.proc = bs.start(self.name, [runner('smp-svr-udp'), str(self.port), '-no-color'])
        c = Client(self.port, timeout=1)

        def answers():
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited %s' % (self.name, self.proc.returncode))
            try:
                return c.echo('ready') == 'ready'
            except (TimeoutError, OSError, SmpError):
                return False
        try:
            bs.wait_for('%s to answer' % self.name, answers, timeout, 0.2)
        finally:
            c.close()

    def stop(self):
        if self.proc is not None:
            bs.stop(self.proc)

