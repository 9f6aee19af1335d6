#!/bin/sh
# SPDX-License-Identifier: MIT
# VM scenario: the project's own watch firmware (firmware/, native_sim
# build given by SMPGW_FW_NATIVE) on hci1 through the HCI user channel,
# managed by smpgwd through the real bluetoothd (see fw_scenarios.py).
exec /usr/bin/python3 "$(dirname "$0")/fw_scenarios.py"
