#!/bin/sh
# SPDX-License-Identifier: MIT
# VM scenario: the gateway's AcquireWrite/AcquireNotify fast path against the
# real bluetoothd: discovery, MTU, echo, image state, upload with a link drop
# and resume, test + reset + verify + confirm (see ble_scenarios.py).
exec /usr/bin/python3 "$(dirname "$0")/ble_scenarios.py" acquire
