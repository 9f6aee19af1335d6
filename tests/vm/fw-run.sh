#!/bin/sh
# SPDX-License-Identifier: MIT
# meson test vm-fw: boots the VM for scenario-fw.sh only when a native_sim
# build of firmware/ is given (SMPGW_FW_NATIVE=/path/to/zephyr.exe, outside
# /tmp and /root so the guest sees it); exit 77 (SKIP) otherwise: CI has
# none (firmware/README.md says how to build it).
if [ ! -x "${SMPGW_FW_NATIVE:-}" ]; then
	echo "1..0 # SKIP SMPGW_FW_NATIVE is not a native_sim build of firmware/ (zephyr.exe)"
	exit 77
fi
exec "$(dirname "$0")/run.sh" "$(dirname "$0")/scenario-fw.sh" 2
