#!/bin/sh
# SPDX-License-Identifier: MIT
# smpgw-vm: host_flow
# VM scenario: one gateway, one adapter, 7 watches (real Zephyr watches and
# the simulator's peripheral face) under the real bluetoothd: connection
# budget, concurrent update jobs, a rollout (zephyr_scenarios.py fleet).
# The marker line above turns the patched btvirt's controller-to-host flow
# control on (stage2.sh). Exit 77 (SKIP) when the Zephyr peers are absent.
exec /usr/bin/python3 "$(dirname "$0")/zephyr_scenarios.py" fleet
