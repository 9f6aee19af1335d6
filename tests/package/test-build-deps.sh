#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every pkg-config dependency of the build (meson's dependency('NAME')) comes
# from a Debian package that debian/control's Build-Depends and
# scripts/deps.sh both name, so that a fresh machine building the package
# (mk-build-deps, docs/install.md) or the tree (scripts/deps.sh) gets it.
# Looks the .pc files up on this machine (dpkg -S). TAP; 77 without dpkg.
# Usage: test-build-deps.sh SOURCE_ROOT
set -uo pipefail
top=${1:?usage: test-build-deps.sh SOURCE_ROOT}
command -v dpkg >/dev/null && command -v pkg-config >/dev/null ||
	{ echo "1..0 # SKIP dpkg or pkg-config missing"; exit 77; }

# Build-Depends of the source package, one name a line.
builddeps=$(sed -n '/^Build-Depends:/,/^[A-Z][A-Za-z-]*:/p' "$top/debian/control" |
	sed 's/^Build-Depends://' | grep -v '^[A-Z][A-Za-z-]*:' | tr ',|' '\n\n' |
	sed 's/[<(\[].*//; s/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$')
names=$(grep -ho "dependency('[^']*'" "$top"/meson.build "$top"/src/*/meson.build \
	"$top"/sim/meson.build | sed "s/dependency('//; s/'//" | sort -u)
n=0 failed=0
for name in $names; do
	n=$((n + 1))
	pc=$(pkg-config --path "$name" 2>/dev/null)
	pkg=${pc:+$(dpkg -S "$pc" 2>/dev/null | head -n 1 | cut -d: -f1)}
	if [ -z "$pkg" ]; then
		echo "not ok $n - $name: no installed package provides its .pc file"
		failed=$((failed + 1))
	elif ! grep -qx "$pkg" <<<"$builddeps"; then
		echo "not ok $n - $name: $pkg is not in debian/control's Build-Depends"
		failed=$((failed + 1))
	elif ! grep -qE "(^|[[:space:](])$pkg([[:space:])]|$)" "$top/scripts/deps.sh"; then
		echo "not ok $n - $name: $pkg is not in scripts/deps.sh"
		failed=$((failed + 1))
	else
		echo "ok $n - $name: $pkg in Build-Depends and scripts/deps.sh"
	fi
done
echo "1..$n"
[ "$failed" -eq 0 ]
