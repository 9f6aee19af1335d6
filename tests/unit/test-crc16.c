/* SPDX-License-Identifier: MIT */
/* CRC16-CCITT (XMODEM) check values. */
#include <string.h>

#include "codec/crc16.h"
#include "tap.h"

int main(void)
{
	const uint8_t *check = (const uint8_t *)"123456789";
	uint8_t buf[11];

	is_int(crc16_ccitt(0, check, 9), 0x31c3, "check value 123456789");
	is_int(crc16_ccitt(0, NULL, 0), 0, "empty");
	is_int(crc16_ccitt(crc16_ccitt(0, check, 4), check + 4, 5), 0x31c3, "incremental");
	is_int(crc16_ccitt(0, (const uint8_t *)"A", 1), 0x58e5, "single byte");
	memcpy(buf, check, 9);
	buf[9] = 0x31, buf[10] = 0xc3;
	is_int(crc16_ccitt(0, buf, 11), 0, "message + big-endian CRC gives 0");
	return tap_done();
}
