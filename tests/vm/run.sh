#!/bin/sh
# SPDX-License-Identifier: MIT
# Boots a small VM (qemu TCG) whose root is this machine's own / (read-only,
# over 9p), with real kernel Bluetooth, btvirt virtual LE controllers and a
# real bluetoothd, and runs SCENARIO (a shell script on this machine) inside.
# Usage: run.sh SCENARIO [CONTROLLERS] ; env VM_TIMEOUT (s, default 240),
# VM_VERBOSE=1 (print every guest log), VM_KEEP=1 (keep the results dir),
# VM_BTVIRT=stock (Debian's btvirt instead of the project's patched one,
# which btvirt/build.sh builds once and caches).
# SMPGW_* variables are passed into the guest (e.g. SMPGW_BUILD, the build
# directory whose smpgwd and smpgw-sim the scenario runs).
# Exit status: the scenario's; 124 on timeout, 2 when this machine cannot
# boot the VM (the guest's logs or the reason are printed: never a skip).
set -u
here=$(cd "$(dirname "$0")" && pwd)
scenario=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
controllers=${2:-2}
timeout_s=${VM_TIMEOUT:-240}

kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "run.sh: FAIL: no kernel in /boot (install linux-image-amd64)"; exit 2; }
[ -r "$kernel" ] || { echo "run.sh: FAIL: $kernel is not readable"; exit 2; }
kver=${kernel#/boot/vmlinuz-}
command -v qemu-system-x86_64 >/dev/null ||
	{ echo "run.sh: FAIL: qemu-system-x86_64 missing (apt-get install qemu-system-x86)"; exit 2; }
for t in btvirt bluetoothd busybox; do
	command -v $t >/dev/null || [ -x /usr/libexec/bluetooth/$t ] ||
		{ echo "run.sh: FAIL: $t missing (bluez bluez-test-tools busybox-static)"; exit 2; }
done
# TCG: KVM hangs on this project's (nested) machines; VM_KVM=1 tries it.
accel="-accel tcg"
[ -n "${VM_KVM:-}" ] && accel="-accel kvm -accel tcg"

cache=${VM_CACHE:-${TMPDIR:-/tmp}/smpgw-vm-$(id -u)}
mkdir -p "$cache"
# Keyed by the init script's checksum: checkouts with different ones share the cache.
initrd=$cache/initramfs-$kver-$(cksum <"$here/init" | cut -d' ' -f1).img
if [ ! -s "$initrd" ]; then
	"$here/mkinitramfs.sh" "$kver" "$initrd.tmp" && mv "$initrd.tmp" "$initrd" || exit 2
fi

# The guest mounts tmpfs on these: a source tree or build directory below
# one of them is shared into the guest at the same path (9p, read-only).
masked() {
	case "$1" in
	/tmp | /tmp/* | /run/* | /var/tmp/* | /root | /root/* | /var/lib/bluetooth/*) return 0 ;;
	esac
	return 1
}
top=$(cd "$here/../.." && pwd)
extra_dev=
extra_cmd=
n=0
for p in "$top" "${SMPGW_BUILD:-}"; do
	[ -n "$p" ] && [ -d "$p" ] && masked "$p" || continue
	[ $n -eq 1 ] && case "$p" in "$top"/*) continue ;; esac
	case "$p" in *" "*) echo "run.sh: FAIL: '$p' has a space"; exit 2 ;; esac
	extra_dev="$extra_dev -fsdev local,id=extra$n,path=$p,readonly=on,security_model=none,multidevs=remap"
	extra_dev="$extra_dev -device virtio-9p-pci,fsdev=extra$n,mount_tag=extra$n"
	extra_cmd="$extra_cmd smpgw_extra$n=$p"
	n=$((n + 1))
done

# The project's patched btvirt (several links per controller, resets end the
# peer's links, optional host flow control): built once, cached; the guest
# finds it in the results share. Without it the guest runs Debian's btvirt.
btvirt=
if [ "${VM_BTVIRT:-}" != stock ]; then
	btvirt=$(VM_CACHE=$cache "$here/btvirt/build.sh") ||
		echo "run.sh: the patched btvirt could not be built: the guest uses the stock one"
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/smpgw-vm-out.XXXXXX")
chmod 777 "$out"
[ -n "$btvirt" ] && cp "$btvirt" "$out/btvirt"
export -p | grep -E '^export SMPGW_[A-Z0-9_]*=' >"$out/env"
start=$(date +%s)
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
	$accel -cpu max -m 1024 -smp 2 -machine q35 -nodefaults -no-reboot \
	-display none -serial stdio \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 smpgw_stage2=$here/stage2.sh smpgw_scenario=$scenario smpgw_controllers=$controllers$extra_cmd" \
	-fsdev local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap \
	-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
	-fsdev local,id=results,path="$out",security_model=none \
	-device virtio-9p-pci,fsdev=results,mount_tag=results $extra_dev \
	</dev/null >"$out/console.log" 2>&1 &
qpid=$!
# Killed from outside (meson's timeout, ^C): take the VM down with us.
trap 'kill $qpid 2>/dev/null' INT TERM HUP
wait $qpid
qrc=$?
# wait returns early when a trapped signal arrives: reap qemu for good.
if kill -0 $qpid 2>/dev/null; then
	kill $qpid 2>/dev/null
	wait $qpid 2>/dev/null
fi
trap - INT TERM HUP
echo "run.sh: $(basename "$scenario"): VM ran $(($(date +%s) - start)) s (timeout ${timeout_s} s)"

if [ -f "$out/rc" ]; then
	rc=$(cat "$out/rc")
else
	rc=124
	[ $qrc -eq 124 ] || rc=125
	echo "run.sh: the VM ended without a result (qemu status $qrc)"
fi
[ -f "$out/scenario.log" ] && cat "$out/scenario.log"
if [ "$rc" != 0 ] || [ -n "${VM_VERBOSE:-}" ]; then
	for f in console.log guest.log dmesg.log bluetoothd.log btvirt.log sim.log smpgwd.log \
		$(ls "$out" 2>/dev/null | grep "^zephyr-.*\.log$"); do
		[ -f "$out/$f" ] || continue
		echo "----- $f"
		tail -n 80 "$out/$f"
	done
fi
if [ -n "${VM_KEEP:-}" ]; then
	echo "results kept in $out"
else
	rm -rf "$out"
fi
exit "$rc"
