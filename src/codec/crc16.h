/* SPDX-License-Identifier: MIT */
/*
 * CRC16-CCITT, XMODEM variant (poly 0x1021, init 0, no reflection, no final
 * xor): the checksum SMP's serial framing appends to each packet. Pure code.
 * Check value: "123456789" -> 0x31c3.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC over buf; start with crc = 0. */
uint16_t crc16_ccitt(uint16_t crc, const uint8_t *buf, size_t len);
