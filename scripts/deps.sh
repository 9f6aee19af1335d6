#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs every build and test dependency on Debian 12 (skips apt when all
# are present). Usage: scripts/deps.sh [--test|--firmware]   (--test adds
# test-only tools; --firmware the toolchain for firmware/scripts/build-check.py
# with a Zephyr workspace, which CI does not run)
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc libevent-dev libcbor-dev libjansson-dev
      libmicrohttpd-dev libdbus-1-dev libbluetooth-dev libsqlite3-dev libpq-dev libssl-dev
      libcurl4-openssl-dev
      dbus python3 python3-cbor2)
if [ "${1:-}" = "--test" ]; then
	# The store's PostgreSQL tests start a real server (tests/pg/pg_server.py).
	pkgs+=(postgresql)
	pkgs+=(clang libclang-rt-14-dev valgrind python3-dbus python3-gi systemd
	       curl chromium)
	# Node.js may come from elsewhere than Debian (this machine kind ships
	# NodeSource's build, whose nodejs conflicts with Debian's npm).
	command -v npm >/dev/null || pkgs+=(nodejs npm)
	# Package tier (tests/package): dpkg-buildpackage, lintian, man pages.
	pkgs+=(build-essential dpkg-dev debhelper lintian man-db)
	# VM tier (tests/vm): a qemu VM with the real bluetoothd over btvirt.
	pkgs+=(qemu-system-x86 linux-image-amd64 bluez bluez-test-tools busybox-static)
	# ... and the patched btvirt built from Debian's bluez source (tests/vm/btvirt).
	pkgs+=(autoconf automake libtool libglib2.0-dev)  # + dpkg-dev, above
fi

if [ "${1:-}" = "--firmware" ]; then
	pkgs+=(gcc-arm-none-eabi libnewlib-arm-none-eabi device-tree-compiler cmake
	       python3-pyelftools python3-yaml python3-packaging python3-pykwalify
	       python3-jsonschema python3-dateutil python3-colorama python3-intelhex
	       python3-cryptography python3-click)
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
	"${missing[@]}" >/dev/null
