#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the project's patched btvirt (tests/vm/btvirt/btdev.patch) from
# Debian's bluez source package, once: the result is cached under the VM
# cache directory, keyed by the patch's checksum, and this script prints
# its path. Later runs print the cached path at once.
#   - source: `apt-get source` of the installed bluez version (else the
#     candidate) through a PRIVATE apt configuration whose deb-src entries
#     mirror this machine's apt sources (/etc/apt is not touched);
#   - build: dpkg-source -x (Debian's own patches), the project's patch,
#     autoreconf + configure (testing tools on, everything else off), make
#     emulator/btvirt only (needs dpkg-dev autoconf automake libtool
#     libglib2.0-dev libdbus-1-dev: scripts/deps.sh --test).
# Env: VM_CACHE (default $TMPDIR/smpgw-vm-$UID). Exit 0 and the path on
# stdout; non-zero with the reason on stderr (the build log's tail).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
patch=$here/btdev.patch
cache=${VM_CACHE:-${TMPDIR:-/tmp}/smpgw-vm-$(id -u)}
key=$(cksum <"$patch" | cut -d' ' -f1)
dest=$cache/btvirt-$key/btvirt
if [ -x "$dest" ]; then
	echo "$dest"
	exit 0
fi
for t in apt-get dpkg-source autoreconf libtoolize make gcc pkg-config patch; do
	command -v $t >/dev/null || {
		echo "btvirt/build.sh: $t missing (scripts/deps.sh --test installs it)" >&2; exit 2; }
done
pkg-config --exists glib-2.0 dbus-1 || {
	echo "btvirt/build.sh: glib-2.0/dbus-1 development files missing (libglib2.0-dev libdbus-1-dev)" >&2
	exit 2; }
mkdir -p "$cache/btvirt-$key"
# One build at a time (another test run may be at it): wait for its result.
exec 9>"$cache/btvirt-$key/lock"
flock -w 900 9 || { echo "btvirt/build.sh: another build holds the lock" >&2; exit 2; }
if [ -x "$dest" ]; then
	echo "$dest"
	exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/smpgw-btvirt.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/build.log
fail() {
	echo "btvirt/build.sh: $1 (last lines of the log follow)" >&2
	tail -n 25 "$log" >&2
	exit 1
}

# deb-src entries mirroring the machine's apt sources (one-line .list
# files and deb822 .sources files), in a private apt configuration.
mkdir -p "$work/apt/parts" "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
	[ -f "$f" ] || continue
	sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f"
done >"$work/apt/parts/mirror.list"
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	sed 's/^Types:.*/Types: deb-src/' "$f" >"$work/apt/parts/$(basename "$f")"
done
set -- -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/apt/parts" \
	-o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache" \
	-o Debug::NoLocking=1 -o APT::Sandbox::User=root
# A source that cannot be reached (not a Debian mirror) only warns here:
# what matters is that bluez's source is found.
apt-get "$@" update >"$log" 2>&1 || echo "(apt-get update: some sources failed)" >>"$log"
ver=$(dpkg-query -W -f='${Version}' bluez 2>/dev/null || true)
cd "$work"
if ! { [ -n "$ver" ] && apt-get "$@" source --download-only "bluez=$ver" >>"$log" 2>&1; }; then
	echo "(bluez=$ver not found: the candidate version instead)" >>"$log"
	apt-get "$@" source --download-only bluez >>"$log" 2>&1 || fail "apt-get source bluez failed"
fi
dpkg-source -x bluez_*.dsc src >>"$log" 2>&1 || fail "dpkg-source -x failed"
cd src
patch -p1 <"$patch" >>"$log" 2>&1 || fail "the patch does not apply to $(ls ../bluez_*.dsc)"
{ autoreconf -fi && ./configure --enable-testing --disable-udev --disable-cups --disable-obex \
	--disable-client --disable-systemd --disable-manpages --disable-datafiles \
	--disable-monitor --disable-a2dp --disable-avrcp --disable-network --disable-hid \
	--disable-hog --disable-bap --disable-mcp --disable-vcp; } >>"$log" 2>&1 ||
	fail "configure failed"
make -j"$(nproc)" emulator/btvirt >>"$log" 2>&1 || fail "make emulator/btvirt failed"
strip -o "$dest.tmp" emulator/btvirt && mv "$dest.tmp" "$dest"
echo "built from $(ls ../bluez_*.dsc | xargs basename) + btdev.patch (cksum $key)" >"$dest.txt"
echo "$dest"
