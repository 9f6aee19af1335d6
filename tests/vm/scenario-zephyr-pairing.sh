#!/bin/sh
# SPDX-License-Identifier: MIT
# VM scenario: pairing with a REAL Zephyr watch that demands an encrypted
# link (smp-svr-ble-pairing of ../shared/peers/zephyr on hci1): not allowed,
# allowed by SIGHUP, bond kept across a gateway restart, bond lost on a watch
# restart and made again, rebond off (see zephyr_pairing.py).
# Exit 77 (SKIP) when the peers are absent (SMPGW_ZEPHYR_PEERS overrides).
exec /usr/bin/python3 "$(dirname "$0")/zephyr_pairing.py"
