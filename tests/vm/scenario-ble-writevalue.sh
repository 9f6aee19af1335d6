#!/bin/sh
# SPDX-License-Identifier: MIT
# VM scenario: the WriteValue + StartNotify fallback ([ble] prefer_acquire =
# no) against the real bluetoothd, then bluetoothd restarted under the
# running gateway (see ble_scenarios.py).
exec /usr/bin/python3 "$(dirname "$0")/ble_scenarios.py" writevalue
