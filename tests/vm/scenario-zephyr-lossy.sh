#!/bin/sh
# SPDX-License-Identifier: MIT
# VM scenario: loss recovery against the REAL lossy Zephyr watch
# (smp-svr-ble-lossy of ../shared/peers/zephyr on hci1; btvirt without host
# flow control, so bursts lose ACL fragments): the desync cost and a
# 350 KiB update job (see zephyr_lossy.py). Exit 77 (SKIP) without the peers.
exec /usr/bin/python3 "$(dirname "$0")/zephyr_lossy.py"
