package bme280

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// exampleTP is registers 0x88…0xA1 holding exampleCal, little-endian as
// in §4.2.2 table 16; 0xA0 is reserved, 0xA1 is dig_H1.
var exampleTP = []byte{
	0x70, 0x6B, // dig_T1 27504
	0x43, 0x67, // dig_T2 26435
	0x18, 0xFC, // dig_T3 -1000
	0x7D, 0x8E, // dig_P1 36477
	0x43, 0xD6, // dig_P2 -10685
	0xD0, 0x0B, // dig_P3 3024
	0x27, 0x0B, // dig_P4 2855
	0x8C, 0x00, // dig_P5 140
	0xF9, 0xFF, // dig_P6 -7
	0x8C, 0x3C, // dig_P7 15500
	0xF8, 0xC6, // dig_P8 -14600
	0x70, 0x17, // dig_P9 6000
	0x00, // reserved
	0x4B, // dig_H1 75
}

// exampleH is registers 0xE1…0xE7 holding exampleCal's humidity trimming.
var exampleH = []byte{
	0x6A, 0x01, // dig_H2 362
	0x00, // dig_H3 0
	0x13, // dig_H4 bits 11:4 (313 = 0x139)
	0x29, // dig_H5 bits 3:0 (50 = 0x032) in 7:4, dig_H4 bits 3:0 in 3:0
	0x03, // dig_H5 bits 11:4
	0x1E, // dig_H6 30
}

// encodeCalibration is the inverse of parseCalibration.
func encodeCalibration(c calibration) (tp, h []byte) {
	tp = make([]byte, calibTPLen)
	le := binary.LittleEndian
	for i, v := range []uint16{c.t1, uint16(c.t2), uint16(c.t3), c.p1, uint16(c.p2), uint16(c.p3),
		uint16(c.p4), uint16(c.p5), uint16(c.p6), uint16(c.p7), uint16(c.p8), uint16(c.p9)} {
		le.PutUint16(tp[2*i:], v)
	}
	tp[25] = c.h1
	h = make([]byte, calibHLen)
	le.PutUint16(h, uint16(c.h2))
	h[2] = c.h3
	h[3] = byte(c.h4 >> 4)
	h[4] = byte(c.h4&0x0F) | byte(c.h5&0x0F)<<4
	h[5] = byte(c.h5 >> 4)
	h[6] = byte(c.h6)
	return tp, h
}

func with(b []byte, at int, v ...byte) []byte {
	out := bytes.Clone(b)
	copy(out[at:], v)
	return out
}

var calibrationTests = []struct {
	name    string
	tp, h   []byte
	want    calibration
	wantErr string
}{
	{name: "datasheet example", tp: exampleTP, h: exampleH, want: exampleCal},
	{
		name: "BMP280 has no humidity trimming", tp: exampleTP, h: nil,
		want: func() calibration { c := exampleCal; c.h2, c.h3, c.h4, c.h5, c.h6 = 0, 0, 0, 0, 0; return c }(),
	},
	{
		// dig_H4 = -1 (0xFFF), dig_H5 = -2048 (0x800): the 12-bit values
		// carry their sign in 0xE4 and 0xE6.
		name: "negative 12-bit dig_H4 and dig_H5", tp: exampleTP, h: with(exampleH, 3, 0xFF, 0x0F, 0x80, 0x81),
		want: func() calibration { c := exampleCal; c.h4, c.h5, c.h6 = -1, -2048, -127; return c }(),
	},
	{
		name: "largest 12-bit dig_H4 and dig_H5", tp: exampleTP, h: with(exampleH, 3, 0x7F, 0xFF, 0x7F),
		want: func() calibration { c := exampleCal; c.h4, c.h5 = 2047, 2047; return c }(),
	},
	{name: "short", tp: exampleTP[:24], h: exampleH, wantErr: "is 24 bytes, want 26"},
	{name: "short humidity", tp: exampleTP, h: exampleH[:6], wantErr: "0xE1…0xE7 is 6 bytes, want 7"},
	{name: "all zero", tp: make([]byte, 26), h: exampleH, wantErr: "reads all 0x00"},
	{name: "all 0xFF", tp: bytes.Repeat([]byte{0xFF}, 26), h: exampleH, wantErr: "reads all 0xff"},
	{name: "dig_P1 zero", tp: with(exampleTP, 6, 0, 0), h: exampleH, wantErr: "dig_P1 is 0"},
}

func TestParseCalibration(t *testing.T) {
	for _, tt := range calibrationTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCalibration(tt.tp, tt.h)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "bme280: ") {
					t.Fatalf("parseCalibration: error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("parseCalibration:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseCalibration(f *testing.F) {
	for _, tt := range calibrationTests {
		f.Add(append(bytes.Clone(tt.tp), tt.h...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tp, h := b, []byte(nil)
		if len(b) >= calibTPLen+calibHLen {
			tp, h = b[:calibTPLen], b[calibTPLen:calibTPLen+calibHLen]
		}
		c, err := parseCalibration(tp, h)
		if err != nil {
			return
		}
		if c.h4 < -2048 || c.h4 > 2047 || c.h5 < -2048 || c.h5 > 2047 {
			t.Fatalf("dig_H4 %d, dig_H5 %d: not 12-bit", c.h4, c.h5)
		}
		// Parsing loses nothing but the reserved byte 0xA0.
		etp, eh := encodeCalibration(c)
		etp[24] = tp[24]
		if !bytes.Equal(etp, tp) || h != nil && !bytes.Equal(eh, h) {
			t.Fatalf("re-encoded calibration differs:\n got % x % x\nwant % x % x", etp, eh, tp, h)
		}
		// Any trimming, however odd, compensates without panicking.
		for _, raw := range []int32{0, 1, 0x80000, 1<<20 - 1} {
			_, tFine := c.temperature(raw)
			c.pressure(raw, tFine)
			c.humidity(raw>>4, tFine)
		}
	})
}
