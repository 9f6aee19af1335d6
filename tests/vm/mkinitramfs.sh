#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the VM's initramfs: busybox-static, the virtio/9p modules of the
# host's Debian kernel and our stage-1 init. Usage: mkinitramfs.sh KVER OUT
set -eu
kver=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/lib/modules"
cp /bin/busybox "$tmp/bin/busybox"
cp "$here/init" "$tmp/init"
chmod +x "$tmp/init"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
	 9pnet 9pnet_virtio netfs fscache 9p; do
	f=$(find "/lib/modules/$kver" -name "$m.ko*" | head -n 1)
	[ -n "$f" ] || { echo "module $m missing for $kver" >&2; exit 1; }
	case "$f" in
	*.xz) xz -dc "$f" >"$tmp/lib/modules/$m.ko" ;;
	*.zst) zstd -qdc "$f" >"$tmp/lib/modules/$m.ko" ;;
	*) cp "$f" "$tmp/lib/modules/$m.ko" ;;
	esac
done
(cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
