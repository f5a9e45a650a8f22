package bme280

import (
	"math"
	"testing"
)

// exampleCal is the trimming of the datasheet's worked example (BMP280
// datasheet BST-BMP280-DS001 §3.12, table "Compensation example", reused
// by the BME280 for temperature and pressure), with humidity trimming
// typical of production BME280s (the datasheet has no humidity example).
var exampleCal = calibration{
	t1: 27504, t2: 26435, t3: -1000,
	p1: 36477, p2: -10685, p3: 3024, p4: 2855, p5: 140, p6: -7, p7: 15500, p8: -14600, p9: 6000,
	h1: 75, h2: 362, h3: 0, h4: 313, h5: 50, h6: 30,
}

// The worked example: adc_T = 519888 gives t_fine = 128422 and 25.08 °C;
// adc_P = 415148 gives 100653.27 Pa (the datasheet works it in floating
// point with rounded intermediates; the 64-bit integer formula lands
// within 0.02 Pa of it, at 25767233/256 = 100653.254 Pa).
func TestCompensateDatasheetExample(t *testing.T) {
	c := exampleCal
	centiC, tFine := c.temperature(519888)
	if centiC != 2508 || tFine != 128422 {
		t.Errorf("temperature(519888) = %d, t_fine %d; want 2508, 128422", centiC, tFine)
	}
	p := c.pressure(415148, tFine)
	if got, want := float64(p)/256, 100653.27; math.Abs(got-want) > 0.02 {
		t.Errorf("pressure(415148) = %d/256 = %.3f Pa, want %.2f Pa ± 0.02", p, got, want)
	}
	if p != 25767233 {
		t.Errorf("pressure(415148) = %d, want 25767233 (Q24.8)", p)
	}
	if fc, ftf := c.floatTemperature(519888); ftf != 128422 || math.Abs(fc-25.08) > 0.005 {
		t.Errorf("float reference: %.4f °C, t_fine %d; want 25.08, 128422", fc, ftf)
	}
}

// Tolerances between the integer formulas (§4.2.3) and the floating-point
// ones (§8.1). The integer outputs step by 0.01 °C, 1/256 Pa and
// 1/1024 %RH and every shift truncates, so they may differ by about one
// step for temperature and a few steps for pressure and humidity; t_fine
// (5120 counts per °C) by a few counts.
const (
	tolCelsius = 0.01 // one step; seen up to 0.0077
	tolTFine   = 16   // 0.003 °C; seen up to 15
	tolPascal  = 0.02 // 5 steps of 1/256 Pa; seen up to 0.012
	tolRH      = 0.01 // 10 steps of 1/1024 %RH; seen up to 0.0052
)

// sampled returns every 257th value below n, plus the edges, in order.
func sampled(n int32) []int32 {
	out := []int32{0, 1}
	for v := int32(257); v < n-2; v += 257 {
		out = append(out, v)
	}
	return append(out, n-2, n-1)
}

func TestCompensateAgreesWithFloat(t *testing.T) {
	c := exampleCal
	for _, raw := range sampled(1 << 20) {
		centiC, tFine := c.temperature(raw)
		fc, ftf := c.floatTemperature(raw)
		if d := math.Abs(float64(centiC)/100 - fc); d > tolCelsius {
			t.Fatalf("adc_T %d: integer %.2f °C, float %.5f °C, differ by %.4f > %v", raw, float64(centiC)/100, fc, d, tolCelsius)
		}
		if d := tFine - ftf; d > tolTFine || d < -tolTFine {
			t.Fatalf("adc_T %d: integer t_fine %d, float %d", raw, tFine, ftf)
		}
	}
	// Pressure and humidity over their whole raw range at temperatures
	// across the operating range, each with the same t_fine so only the
	// stage under test differs.
	for _, celsius := range []float64{-40, -10, 0, 25, 60, 85} {
		tFine := int32(celsius * 5120)
		for _, raw := range sampled(1 << 20) {
			fp := c.floatPressure(raw, tFine)
			ip := c.pressure(raw, tFine)
			if fp < 0 {
				// Beyond the chip's range: the integer formula must see it
				// too, so Sense refuses it.
				if ip >= 0 && fp < -1 {
					t.Fatalf("%v °C, adc_P %d: float %.1f Pa < 0, integer %.3f Pa", celsius, raw, fp, float64(ip)/256)
				}
				continue
			}
			if d := math.Abs(float64(ip)/256 - fp); d > tolPascal {
				t.Fatalf("%v °C, adc_P %d: integer %.4f Pa, float %.4f Pa, differ by %.4f > %v", celsius, raw, float64(ip)/256, fp, d, tolPascal)
			}
		}
		for _, raw := range sampled(1 << 16) {
			ih := float64(c.humidity(raw, tFine)) / 1024
			fh := c.floatHumidity(raw, tFine)
			if d := math.Abs(ih - fh); d > tolRH {
				t.Fatalf("%v °C, adc_H %d: integer %.4f %%RH, float %.4f %%RH, differ by %.4f > %v", celsius, raw, ih, fh, d, tolRH)
			}
		}
	}
}

// The compensated values must rise with temperature and humidity and fall
// with the pressure ADC value: the simulator inverts them by bisection.
func TestCompensateMonotonic(t *testing.T) {
	c := exampleCal
	prevT, _ := c.temperature(0)
	for _, raw := range sampled(1 << 20)[1:] {
		if v, _ := c.temperature(raw); v < prevT {
			t.Fatalf("temperature falls at adc_T %d", raw)
		} else {
			prevT = v
		}
	}
	tFine := int32(25 * 5120)
	prevP, prevH := c.pressure(0, tFine), c.humidity(0, tFine)
	for raw := int32(1); raw < 1<<20; raw++ {
		v := c.pressure(raw, tFine)
		if v > prevP {
			t.Fatalf("pressure rises at adc_P %d", raw)
		}
		prevP = v
		if raw < 1<<16 {
			h := c.humidity(raw, tFine)
			if h < prevH {
				t.Fatalf("humidity falls at adc_H %d", raw)
			}
			prevH = h
		}
	}
}
