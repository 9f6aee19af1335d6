#!/bin/sh
# SPDX-License-Identifier: MIT
# Stage 2, inside the VM on the host's (read-only) root: start the system
# bus, virtual LE controllers (btvirt) and a real bluetoothd, run the
# scenario named on the kernel command line, store its exit status in the
# results share (/mnt) and power off. Every wait is bounded in time.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp LANG=C.UTF-8
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
scenario=$(arg smpgw_scenario)
ncontrollers=$(arg smpgw_controllers)
[ -n "$ncontrollers" ] || ncontrollers=2
out=/mnt
log() { echo "VM: $*"; echo "$*" >>$out/guest.log; }
# Variables the host passed (SMPGW_*: build directory, SMPGW_VM_DEBUG, ...).
[ -f $out/env ] && . $out/env
uptime_s() { cut -d. -f1 /proc/uptime; }

finish() {
	dmesg >$out/dmesg.log 2>/dev/null
	echo "$1" >$out/rc
	sync
	busybox poweroff -f
}

hostname smpgw-vm 2>/dev/null
ip link set lo up 2>/dev/null || busybox ip link set lo up
modprobe bluetooth && modprobe hci_vhci || { log "no bluetooth modules"; finish 97; }
mkdir -p /run/dbus
dbus-daemon --system --fork || { log "dbus-daemon failed"; finish 97; }

# One btvirt holds up to 16 LE controllers that can see each other. The
# kernel gives each HCI command 2 s: on a loaded host the emulated CPU can
# miss that during a controller's setup ("hci0: Opcode 0x0c03 failed:
# -110"), and that controller then never reaches mgmt (bluetoothd never sees
# it). So: wait until mgmt lists every controller, and start btvirt over
# (at most 6 times) when a setup failed or takes too long.
mgmt_ready() {
	l=$(timeout 10 btmgmt info 2>/dev/null) || return 1
	for n in $(seq 0 $((ncontrollers - 1))); do
		echo "$l" | grep -q "^hci$n:" || return 1
	done
}
# The project's patched btvirt when run.sh put it in the share
# (tests/vm/btvirt/), else Debian's. SMPGW_VM_HOST_FLOW=1: the patched one
# honours controller-to-host flow control (Host_Buffer_Size); off by
# default, as stock btvirt (the lossy Zephyr watch needs the loss).
# A scenario may ask for it with a line '# smpgw-vm: host_flow'.
grep -q '^# smpgw-vm: host_flow' "$scenario" && SMPGW_VM_HOST_FLOW=1
btvirt=btvirt
export SMPGW_VM_BTVIRT=stock
if [ -x $out/btvirt ] && cp $out/btvirt /tmp/btvirt; then
	btvirt=/tmp/btvirt
	SMPGW_VM_BTVIRT=patched
	[ -n "${SMPGW_VM_HOST_FLOW:-}" ] && export BTVIRT_HOST_FLOW=1
fi
log "btvirt: $SMPGW_VM_BTVIRT${BTVIRT_HOST_FLOW:+, host flow control on}"
setup_failed() { [ "$(dmesg | grep -c 'Opcode .* failed')" -gt "$fails_before" ]; }
for attempt in 1 2 3 4 5 6; do
	fails_before=$(dmesg | grep -c 'Opcode .* failed')
	$btvirt -L -l"$ncontrollers" >>$out/btvirt.log 2>&1 &
	btvirt_pid=$!
	deadline=$(($(uptime_s) + 60))
	until mgmt_ready || setup_failed || [ "$(uptime_s)" -ge $deadline ]; do
		sleep 0.3
	done
	mgmt_ready && break
	log "attempt $attempt: a controller's setup failed or timed out; restarting btvirt"
	dmesg | grep -i -E "bluetooth: hci" | tail -n 3 >>$out/guest.log
	kill $btvirt_pid
	wait $btvirt_pid 2>/dev/null
	# Every old index gone before the next btvirt: the kernel hands out
	# the lowest free ones, and a lingering old hci1 would pair the new
	# hci0 with a dead controller of the old btvirt (they never see
	# each other).
	i=0
	while [ -n "$(ls /sys/class/bluetooth 2>/dev/null)" ] && [ $i -lt 100 ]; do
		sleep 0.1; i=$((i + 1))
	done
	[ $i -lt 100 ] || log "old controllers still listed: $(ls /sys/class/bluetooth | tr '\n' ' ')"
done
mgmt_ready || { log "btvirt: no $ncontrollers working controllers"; finish 97; }
log "$ncontrollers controllers ready at $(cut -d' ' -f1 /proc/uptime) s of uptime"

# A single ATT bearer: with EATT, writes and notifications may be reordered.
# ATT MTU 498, what a Zephyr watch answers: BlueZ 5.66's GATT server (the
# simulated watch's side) drops writes above 510 bytes, and MTU 517 would
# let the gateway write 514.
cat >/tmp/main.conf <<'CONF'
[General]
ControllerMode = le
[GATT]
Channels = 1
ExchangeMTU = 498
CONF
export SMPGW_VM_BTCONF=/tmp/main.conf
# SMPGW_VM_DEBUG=1: bluetoothd's debug log, an HCI trace and the bus traffic.
btd_debug=
if [ -n "${SMPGW_VM_DEBUG:-}" ]; then
	btd_debug=-d
	btmon -t >$out/btmon.log 2>&1 &
	dbus-monitor --system >$out/dbus-monitor.log 2>&1 &
fi
export SMPGW_VM_BTD_DEBUG=$btd_debug
bluetoothd -n $btd_debug -f /tmp/main.conf >$out/bluetoothd.log 2>&1 &
echo $! >/tmp/bluetoothd.pid
log "bluetoothd started (pid $!) at $(cut -d' ' -f1 /proc/uptime) s of uptime"

# Ready when bluetoothd answers for every controller: 180 s (it takes
# minutes on a loaded host), each busctl call with its own timeout.
bluez_ready() {
	t=$(busctl --system --auto-start=no --timeout=5 tree --list org.bluez 2>/dev/null) || return 1
	for n in $(seq 0 $((ncontrollers - 1))); do
		case "$t" in *"/org/bluez/hci$n"*) ;; *) return 1 ;; esac
	done
}
deadline=$(($(uptime_s) + 180))
until bluez_ready || [ "$(uptime_s)" -ge $deadline ]; do
	sleep 0.3
done
if ! bluez_ready; then
	log "bluetoothd did not show $ncontrollers controllers within 180 s"
	busctl --system --auto-start=no --timeout=5 tree org.bluez >>$out/guest.log 2>&1
	finish 97
fi
log "bluetoothd up with $ncontrollers controllers at $(cut -d' ' -f1 /proc/uptime) s of uptime"

export SMPGW_VM_OUT=$out
sh "$scenario" >$out/scenario.log 2>&1
rc=$?
log "scenario exited $rc at $(cut -d' ' -f1 /proc/uptime) s of uptime"
finish $rc
