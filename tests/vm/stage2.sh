#!/bin/sh
# SPDX-License-Identifier: MIT
# Stage 2, inside the VM on the host's (read-only) root: start the system
# bus, virtual LE controllers (btvirt) and a real bluetoothd, run the
# scenario named on the kernel command line, store its exit status in the
# results share (/mnt) and power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp LANG=C.UTF-8
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
scenario=$(arg smpgw_scenario)
ncontrollers=$(arg smpgw_controllers)
[ -n "$ncontrollers" ] || ncontrollers=2
out=/mnt
log() { echo "VM: $*"; echo "$*" >>$out/guest.log; }

finish() {
	echo "$1" >$out/rc
	sync
	busybox poweroff -f
}

hostname smpgw-vm 2>/dev/null
ip link set lo up 2>/dev/null || busybox ip link set lo up
modprobe bluetooth && modprobe hci_vhci || { log "no bluetooth modules"; finish 97; }
mkdir -p /run/dbus
dbus-daemon --system --fork || { log "dbus-daemon failed"; finish 97; }

# One btvirt holds up to 16 LE controllers that can see each other.
btvirt -L -l"$ncontrollers" >$out/btvirt.log 2>&1 &
i=0
while [ ! -e /sys/class/bluetooth/hci$((ncontrollers - 1)) ] && [ $i -lt 300 ]; do
	sleep 0.1; i=$((i + 1))
done
[ -e /sys/class/bluetooth/hci$((ncontrollers - 1)) ] || { log "btvirt made no controllers"; finish 97; }

# A single ATT bearer: with EATT, writes and notifications may be reordered.
cat >/tmp/main.conf <<'CONF'
[General]
ControllerMode = le
[GATT]
Channels = 1
CONF
bluetoothd -n -f /tmp/main.conf >$out/bluetoothd.log 2>&1 &
i=0
until busctl --system status org.bluez >/dev/null 2>&1 || [ $i -ge 600 ]; do
	sleep 0.1; i=$((i + 1))
done
busctl --system status org.bluez >/dev/null 2>&1 || { log "bluetoothd did not start"; finish 97; }
log "bluetoothd up with $ncontrollers controllers"

export SMPGW_VM_OUT=$out
sh "$scenario" >$out/scenario.log 2>&1
rc=$?
log "scenario exited $rc"
finish $rc
