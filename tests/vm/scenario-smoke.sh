#!/bin/sh
# SPDX-License-Identifier: MIT
# The VM tier's first check: real bluetoothd sees the virtual controllers.
set -eu
busctl --system tree org.bluez | tee $SMPGW_VM_OUT/tree.txt
busctl --system tree org.bluez | grep -q /org/bluez/hci0
busctl --system tree org.bluez | grep -q /org/bluez/hci1
busctl --system get-property org.bluez /org/bluez/hci0 org.bluez.Adapter1 Address
echo smoke ok
