#!/bin/sh
# SPDX-License-Identifier: MIT
# VM scenario: the BLE link alone (src/links/ble-*.c, no daemon) against the
# real bluetoothd: the simulator's watch on hci1 (smpgw-sim --peripheral),
# test-ble-link --system on hci0 (fast path, fallback, reconnects; TAP).
# A D-Bus trace of bluetoothd's side goes to monitor.txt in the results.
# Host side: SMPGW_BUILD=build tests/vm/run.sh tests/vm/scenario-ble-link.sh 2
B=${SMPGW_BUILD:?SMPGW_BUILD: the meson build directory}
O=$SMPGW_VM_OUT
dbus-monitor --system "type='signal',sender='org.bluez'" \
	"type='method_call',interface='org.bluez.Device1'" \
	"type='method_call',interface='org.bluez.GattCharacteristic1'" >$O/monitor.txt 2>&1 &
mon=$!
"$B/sim/smpgw-sim" --count 1 --peripheral hci1 --seed 1 >$O/sim.log 2>&1 &
sim=$!
i=0
until grep -q "advertising on" $O/sim.log || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done
timeout 400 "$B/tests/dbus/test-ble-link" --system hci0
rc=$?
kill $sim $mon
wait
exit $rc
