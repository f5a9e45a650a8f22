package sht3x

import "fmt"

// crc8 is the checksum the SHT3x appends to every 16-bit word (datasheet
// §4.12, Table 20): CRC-8, polynomial 0x31, initial value 0xFF, no
// reflection, no final XOR.
func crc8(msb, lsb byte) byte {
	crc := byte(0xFF)
	for _, b := range [2]byte{msb, lsb} {
		crc ^= b
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// decodeWord checks the CRC of one word as the sensor sends it (MSB, LSB,
// CRC) and returns its value. what names the word in the error.
func decodeWord(b []byte, what string) (uint16, error) {
	if len(b) != 3 {
		return 0, fmt.Errorf("sht3x: %s word is %d bytes, want 3", what, len(b))
	}
	if want := crc8(b[0], b[1]); b[2] != want {
		return 0, fmt.Errorf("sht3x: CRC mismatch in %s word 0x%02x%02x: got 0x%02x, want 0x%02x", what, b[0], b[1], b[2], want)
	}
	return uint16(b[0])<<8 | uint16(b[1]), nil
}
