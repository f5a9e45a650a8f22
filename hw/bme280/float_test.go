package bme280

// The floating-point compensation of the datasheet's appendix §8.1, the
// reference the integer formulas of §4.2.3 are checked against.

// floatTemperature is BME280_compensate_T_double: °C, and t_fine
// truncated to an integer as the datasheet does.
func (c *calibration) floatTemperature(adcT int32) (celsius float64, tFine int32) {
	t1, t2, t3 := float64(c.t1), float64(c.t2), float64(c.t3)
	var1 := (float64(adcT)/16384.0 - t1/1024.0) * t2
	x := float64(adcT)/131072.0 - t1/8192.0
	var2 := x * x * t3
	return (var1 + var2) / 5120.0, int32(var1 + var2)
}

// floatPressure is BME280_compensate_P_double: Pa.
func (c *calibration) floatPressure(adcP, tFine int32) float64 {
	var1 := float64(tFine)/2.0 - 64000.0
	var2 := var1 * var1 * float64(c.p6) / 32768.0
	var2 = var2 + var1*float64(c.p5)*2.0
	var2 = var2/4.0 + float64(c.p4)*65536.0
	var1 = (float64(c.p3)*var1*var1/524288.0 + float64(c.p2)*var1) / 524288.0
	var1 = (1.0 + var1/32768.0) * float64(c.p1)
	if var1 == 0 {
		return 0
	}
	p := 1048576.0 - float64(adcP)
	p = (p - var2/4096.0) * 6250.0 / var1
	var1 = float64(c.p9) * p * p / 2147483648.0
	var2 = p * float64(c.p8) / 32768.0
	return p + (var1+var2+float64(c.p7))/16.0
}

// floatHumidity is bme280_compensate_H_double: %RH, clamped to 0…100.
func (c *calibration) floatHumidity(adcH, tFine int32) float64 {
	h := float64(tFine) - 76800.0
	h = (float64(adcH) - (float64(c.h4)*64.0 + float64(c.h5)/16384.0*h)) *
		(float64(c.h2) / 65536.0 * (1.0 + float64(c.h6)/67108864.0*h*(1.0+float64(c.h3)/67108864.0*h)))
	h = h * (1.0 - float64(c.h1)*h/524288.0)
	return min(max(h, 0), 100)
}
