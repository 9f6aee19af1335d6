# SPDX-License-Identifier: MIT
# Signing script for native_sim (CMakeLists.txt): the build is a Linux
# executable that no MCUboot boots, so there is nothing to sign.
