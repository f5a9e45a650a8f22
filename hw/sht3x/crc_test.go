package sht3x

import (
	"strings"
	"testing"
)

// crcTable holds the datasheet's example (§4.12, Table 20) and values
// checked with an independent polynomial long division.
var crcTable = []struct {
	word uint16
	crc  byte
}{
	{0xBEEF, 0x92}, // the datasheet's example
	{0x0000, 0x81},
	{0xFFFF, 0xAC},
	{0x6666, 0x93},
	{0x8000, 0xA2},
	{0x8010, 0xE1},
	{0x0001, 0xB0},
	{0x2000, 0x5D},
	{0xA000, 0x7E},
}

func TestCRC8(t *testing.T) {
	for _, tc := range crcTable {
		if got := crc8(byte(tc.word>>8), byte(tc.word)); got != tc.crc {
			t.Errorf("crc8(%#04x) = %#02x, want %#02x", tc.word, got, tc.crc)
		}
	}
}

func TestDecodeWord(t *testing.T) {
	for _, tc := range crcTable {
		b := []byte{byte(tc.word >> 8), byte(tc.word), tc.crc}
		got, err := decodeWord(b, "test")
		if err != nil || got != tc.word {
			t.Errorf("decodeWord(% x) = %#04x, %v; want %#04x, nil", b, got, err, tc.word)
		}
		b[2] ^= 0x80
		if _, err := decodeWord(b, "temperature"); err == nil || !strings.Contains(err.Error(), "CRC mismatch in temperature word") {
			t.Errorf("decodeWord(% x) error = %v, want a CRC mismatch in the temperature word", b, err)
		}
	}
	if _, err := decodeWord([]byte{0xBE, 0xEF}, "test"); err == nil {
		t.Error("decodeWord of 2 bytes: no error")
	}
}

// FuzzDecodeWord checks that decodeWord never panics, accepts exactly the
// words whose CRC is right, and detects every single-bit corruption.
func FuzzDecodeWord(f *testing.F) {
	for _, tc := range crcTable {
		f.Add(byte(tc.word>>8), byte(tc.word), tc.crc)
		f.Add(byte(tc.word>>8), byte(tc.word), tc.crc^0x01)
	}
	f.Fuzz(func(t *testing.T, msb, lsb, crc byte) {
		b := []byte{msb, lsb, crc}
		got, err := decodeWord(b, "fuzz")
		if crc8(msb, lsb) != crc {
			if err == nil {
				t.Fatalf("decodeWord(% x) accepted a wrong CRC", b)
			}
			return
		}
		if want := uint16(msb)<<8 | uint16(lsb); err != nil || got != want {
			t.Fatalf("decodeWord(% x) = %#04x, %v; want %#04x, nil", b, got, err, want)
		}
		for bit := range 24 {
			c := []byte{msb, lsb, crc}
			c[bit/8] ^= 1 << (bit % 8)
			if _, err := decodeWord(c, "fuzz"); err == nil {
				t.Fatalf("decodeWord(% x), bit %d of % x flipped, was accepted", c, bit, b)
			}
		}
	})
}
