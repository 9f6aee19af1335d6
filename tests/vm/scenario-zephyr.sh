#!/bin/sh
# SPDX-License-Identifier: MIT
# VM scenario: a REAL Zephyr watch (the stock Zephyr 4.3.0 smp_svr of
# ../shared/peers/zephyr, smp-svr-ble on hci1 through the HCI user channel)
# managed by smpgwd through the real bluetoothd (see zephyr_scenarios.py).
# Exit 77 (SKIP) when the peers are absent (SMPGW_ZEPHYR_PEERS overrides).
exec /usr/bin/python3 "$(dirname "$0")/zephyr_scenarios.py" full
