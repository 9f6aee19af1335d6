/* SPDX-License-Identifier: MIT */
/* CRC16-CCITT (XMODEM): see crc16.h. Bitwise: frames are small and a table
 * would only save microseconds per SMP packet. */
#include "codec/crc16.h"

uint16_t crc16_ccitt(uint16_t crc, const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)(buf[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
					     : (uint16_t)(crc << 1);
	}
	return crc;
}
