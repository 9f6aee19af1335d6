#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The man pages given as arguments render without a groff or man warning
# (as lintian checks them) and have a NAME section that lexgrog (whatis,
# apropos) can read. Exit 77 when man-db is not installed.
set -uo pipefail
command -v man >/dev/null && command -v lexgrog >/dev/null || { echo "# no man-db: skip"; exit 77; }
n=0
failed=0
for page in "$@"; do
	n=$((n + 1))
	w=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
	if [ -n "$w" ]; then
		echo "not ok $n - $(basename "$page"): $w"
		failed=1
	elif ! whatis=$(lexgrog "$page"); then
		echo "not ok $n - $(basename "$page"): lexgrog finds no NAME section"
		failed=1
	else
		echo "ok $n - ${whatis#*: }"
	fi
done
echo "1..$n"
exit $failed
