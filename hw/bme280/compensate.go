package bme280

import (
	"encoding/binary"
	"fmt"
)

// Lengths of the two calibration bursts (§4.2.2 table 16).
const (
	calibTPLen = 0xA1 - 0x88 + 1 // 0x88…0xA1: dig_T1…dig_P9, reserved 0xA0, dig_H1
	calibHLen  = 0xE7 - 0xE1 + 1 // 0xE1…0xE7: dig_H2…dig_H6
)

// calibration holds the chip's trimming parameters, named as in the
// datasheet (§4.2.2 table 16).
type calibration struct {
	t1                             uint16
	t2, t3                         int16
	p1                             uint16
	p2, p3, p4, p5, p6, p7, p8, p9 int16
	h1                             uint8
	h2                             int16
	h3                             uint8
	h4, h5                         int16 // 12-bit signed
	h6                             int8
}

// parseCalibration decodes the 26 bytes read from 0x88…0xA1 and, on a
// BME280, the 7 bytes read from 0xE1…0xE7; h is nil on a BMP280.
func parseCalibration(tp, h []byte) (calibration, error) {
	var c calibration
	if len(tp) != calibTPLen {
		return c, fmt.Errorf("bme280: calibration 0x88…0xA1 is %d bytes, want %d", len(tp), calibTPLen)
	}
	if h != nil && len(h) != calibHLen {
		return c, fmt.Errorf("bme280: calibration 0xE1…0xE7 is %d bytes, want %d", len(h), calibHLen)
	}
	if b, same := allSame(tp); same && (b == 0x00 || b == 0xFF) {
		return c, fmt.Errorf("bme280: calibration 0x88…0xA1 reads all 0x%02x: a bus fault or a blank chip; check wiring and pull-ups", b)
	}
	le := binary.LittleEndian
	s16 := func(i int) int16 { return int16(le.Uint16(tp[i:])) }
	c.t1 = le.Uint16(tp[0:])
	c.t2 = s16(2)
	c.t3 = s16(4)
	c.p1 = le.Uint16(tp[6:])
	c.p2 = s16(8)
	c.p3 = s16(10)
	c.p4 = s16(12)
	c.p5 = s16(14)
	c.p6 = s16(16)
	c.p7 = s16(18)
	c.p8 = s16(20)
	c.p9 = s16(22)
	// tp[24] is 0xA0, reserved.
	c.h1 = tp[25]
	if c.p1 == 0 {
		// The pressure formula divides by a multiple of dig_P1.
		return c, fmt.Errorf("bme280: calibration dig_P1 is 0: a bus fault or a damaged chip; pressure cannot be compensated")
	}
	if h != nil {
		c.h2 = int16(le.Uint16(h[0:]))
		c.h3 = h[2]
		// dig_H4 is 0xE4 as bits 11:4 and 0xE5 bits 3:0 as bits 3:0;
		// dig_H5 is 0xE5 bits 7:4 as bits 3:0 and 0xE6 as bits 11:4. Both
		// are signed: the byte holding bits 11:4 carries the sign.
		c.h4 = int16(int8(h[3]))<<4 | int16(h[4]&0x0F)
		c.h5 = int16(int8(h[5]))<<4 | int16(h[4]>>4)
		c.h6 = int8(h[6])
	}
	return c, nil
}

func allSame(b []byte) (byte, bool) {
	for _, x := range b[1:] {
		if x != b[0] {
			return 0, false
		}
	}
	return b[0], true
}

// temperature is BME280_compensate_T_int32 (§4.2.3): the temperature in
// 0.01 °C from a 20-bit raw value, and t_fine for pressure and humidity.
func (c *calibration) temperature(adcT int32) (centiC, tFine int32) {
	t1, t2, t3 := int32(c.t1), int32(c.t2), int32(c.t3)
	var1 := (((adcT >> 3) - (t1 << 1)) * t2) >> 11
	var2 := (((((adcT >> 4) - t1) * ((adcT >> 4) - t1)) >> 12) * t3) >> 14
	tFine = var1 + var2
	return (tFine*5 + 128) >> 8, tFine
}

// pressure is BME280_compensate_P_int64 (§4.2.3): the pressure in Pa as
// Q24.8 (1/256 Pa) from a 20-bit raw value. The datasheet returns it cast
// to an unsigned 32-bit integer, which turns the negative pressures of raw
// values near 2²⁰ (far beyond the chip's range) into huge positive ones;
// this keeps the sign so that Sense can refuse them.
func (c *calibration) pressure(adcP, tFine int32) int64 {
	var1 := int64(tFine) - 128000
	var2 := var1 * var1 * int64(c.p6)
	var2 += (var1 * int64(c.p5)) << 17
	var2 += int64(c.p4) << 35
	var1 = ((var1 * var1 * int64(c.p3)) >> 8) + ((var1 * int64(c.p2)) << 12)
	var1 = ((int64(1) << 47) + var1) * int64(c.p1) >> 33
	if var1 == 0 {
		return 0 // as the datasheet: avoid dividing by zero
	}
	p := 1048576 - int64(adcP)
	p = (((p << 31) - var2) * 3125) / var1
	var1 = (int64(c.p9) * (p >> 13) * (p >> 13)) >> 25
	var2 = (int64(c.p8) * p) >> 19
	return ((p + var1 + var2) >> 8) + (int64(c.p7) << 4)
}

// humidity is bme280_compensate_H_int32 (§4.2.3): the relative humidity
// in %RH as Q22.10 (1/1024 %RH) from a 16-bit raw value.
func (c *calibration) humidity(adcH, tFine int32) uint32 {
	h1, h2, h3 := int32(c.h1), int32(c.h2), int32(c.h3)
	h4, h5, h6 := int32(c.h4), int32(c.h5), int32(c.h6)
	v := tFine - 76800
	v = ((((adcH << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) *
		(((((((v*h6)>>10)*(((v*h3)>>11)+32768))>>10)+2097152)*h2 + 8192) >> 14)
	v -= ((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4
	v = max(v, 0)
	v = min(v, 419430400)
	return uint32(v >> 12)
}
