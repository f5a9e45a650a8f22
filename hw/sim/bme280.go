package sim

import (
	"fmt"
	"math"
	"sort"
	"sync"

	"periph.io/x/conn/v3/physic"
)

// BME280Opts configures a simulated BME280. A nil *BME280Opts is a
// BME280.
type BME280Opts struct {
	// BMP280 makes the chip a BMP280: chip id 0x58, no humidity sensor,
	// no ctrl_hum register and no humidity calibration.
	BMP280 bool
}

// BME280 simulates a Bosch BME280 (or BMP280) at the register level, as
// the datasheet BST-BME280-DS002 describes it: the memory map of §5.3, I²C
// writes as register/data pairs and auto-incrementing reads (§6.2), soft
// reset, forced and normal modes, oversampling resolution and the IIR
// filter (§3.4). A measurement takes the climate's current values and
// turns them into the raw ADC values the real chip would report, by
// inverting the datasheet's integer compensation (§4.2.3) with the
// calibration below, so a driver reads the climate back within the chip's
// resolution. Measurements are instantaneous: status never reports
// measuring.
type BME280 struct {
	climate *Climate
	bmp     bool

	mu      sync.Mutex
	regs    [256]byte
	ptr     byte       // address of the next auto-incremented read
	hum     byte       // osrs_h latched by the last ctrl_meas write (§5.4.3)
	iir     [2]float64 // filter memory for temperature and pressure
	iirInit [2]bool
}

var _ Device = (*BME280)(nil)

// Registers of the simulated chip (§5.3).
const (
	bmeCalib0   = 0x88
	bmeID       = 0xD0
	bmeReset    = 0xE0
	bmeCalib26  = 0xE1
	bmeCtrlHum  = 0xF2
	bmeStatus   = 0xF3
	bmeCtrlMeas = 0xF4
	bmeConfig   = 0xF5
	bmePress    = 0xF7
	bmeTemp     = 0xFA
	bmeHum      = 0xFD
)

// bmeCal is the simulated chip's trimming: the datasheet's example
// values for temperature and pressure (BMP280 datasheet §3.12) and values
// typical of production BME280s for humidity.
var bmeCal = bmeCalibration{
	t1: 27504, t2: 26435, t3: -1000,
	p1: 36477, p2: -10685, p3: 3024, p4: 2855, p5: 140, p6: -7, p7: 15500, p8: -14600, p9: 6000,
	h1: 75, h2: 362, h3: 0, h4: 313, h5: 50, h6: 30,
}

// NewBME280 returns a simulated chip, powered on and in sleep mode, that
// measures c.
func NewBME280(c *Climate, opts *BME280Opts) *BME280 {
	s := &BME280{climate: c}
	if opts != nil {
		s.bmp = opts.BMP280
	}
	s.reset()
	return s
}

// reset puts every register in its power-on state (§5.3: reset values).
func (s *BME280) reset() {
	s.regs = [256]byte{}
	s.regs[bmeID] = 0x60
	if s.bmp {
		s.regs[bmeID] = 0x58
	}
	c := &bmeCal
	le := func(at int, v uint16) { s.regs[at], s.regs[at+1] = byte(v), byte(v>>8) }
	for i, v := range []uint16{c.t1, uint16(c.t2), uint16(c.t3), c.p1, uint16(c.p2), uint16(c.p3),
		uint16(c.p4), uint16(c.p5), uint16(c.p6), uint16(c.p7), uint16(c.p8), uint16(c.p9)} {
		le(bmeCalib0+2*i, v)
	}
	if !s.bmp {
		s.regs[0xA1] = c.h1
		le(bmeCalib26, uint16(c.h2))
		s.regs[0xE3] = c.h3
		s.regs[0xE4] = byte(c.h4 >> 4)
		s.regs[0xE5] = byte(c.h4&0x0F) | byte(c.h5&0x0F)<<4
		s.regs[0xE6] = byte(c.h5 >> 4)
		s.regs[0xE7] = byte(c.h6)
		s.regs[bmeHum] = 0x80 // 0x8000: no humidity measured yet
	}
	s.regs[bmeStatus] = 0   // measurements are instantaneous and NVM is never being copied
	s.regs[bmePress] = 0x80 // 0x80000: nothing measured yet
	s.regs[bmeTemp] = 0x80
	s.hum, s.ptr, s.iir, s.iirInit = 0, 0, [2]float64{}, [2]bool{}
}

// Tx answers one I²C transaction: w is register address/data pairs, a
// trailing lone address setting where the read r starts.
func (s *BME280) Tx(w, r []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(w) >= 2 {
		s.write(w[0], w[1])
		s.ptr = w[0]
		w = w[2:]
	}
	if len(w) == 1 {
		s.ptr = w[0]
	}
	if len(r) == 0 {
		return nil
	}
	if int(s.ptr)+len(r) > len(s.regs) {
		return fmt.Errorf("sim: BME280 read of %d bytes from 0x%02x runs past register 0xFF", len(r), s.ptr)
	}
	if s.regs[bmeCtrlMeas]&3 == 3 && int(s.ptr)+len(r) > bmePress {
		s.measure() // normal mode: the latest measurement is always fresh
	}
	copy(r, s.regs[s.ptr:])
	s.ptr += byte(len(r)) // wraps to 0 after a read ending at 0xFF
	return nil
}

// write stores one register write as the chip does; read-only and
// reserved registers ignore writes.
func (s *BME280) write(reg, v byte) {
	switch reg {
	case bmeReset:
		if v == 0xB6 {
			s.reset()
		}
	case bmeCtrlHum:
		if !s.bmp {
			s.regs[reg] = v & 0x07
		}
	case bmeCtrlMeas:
		s.regs[reg] = v
		s.hum = s.regs[bmeCtrlHum]
		switch v & 3 {
		case 1, 2: // forced: measure once, then back to sleep (§3.3.3)
			s.measure()
			s.regs[reg] = v &^ 3
		case 3:
			s.measure()
		}
	case bmeConfig:
		// In normal mode config writes may be ignored (§5.4.6); this
		// chip always ignores them, so drivers must set it while asleep.
		if s.regs[bmeCtrlMeas]&3 != 3 {
			s.regs[reg] = v &^ 0x02 // bit 1 is reserved
			s.iirInit = [2]bool{}   // writing config resets the filter
		}
	}
}

// measure runs one measurement cycle (§3.4 figure 6) on the climate now.
func (s *BME280) measure() {
	env := s.climate.Current()
	osT := s.regs[bmeCtrlMeas] >> 5
	osP := s.regs[bmeCtrlMeas] >> 2 & 7
	osH := s.hum & 7
	filter := s.regs[bmeConfig] >> 2 & 7
	c := &bmeCal

	step := func(os byte) int32 {
		// Without the filter the resolution is 16 + (osrs - 1) bits
		// (§3.4.2, §3.4.3); with it always 20 bits, on a BME280 only
		// (§5.2 table 17).
		if filter != 0 && !s.bmp || os >= 5 || os == 0 {
			return 1
		}
		return 1 << (5 - os)
	}

	// The temperature is needed even when it is not reported: the
	// pressure and humidity ADC values depend on it through t_fine.
	celsius := env.Temperature.Celsius()
	adcT := bmeInvert(1<<20, step(osT), func(raw int32) int64 { return int64(c.tFine(raw)) }, celsius*5120)
	tFine := c.tFine(adcT)
	var adcP int32
	if osP != 0 {
		pa := float64(env.Pressure) / float64(physic.Pascal)
		adcP = bmeInvert(1<<20, step(osP), func(raw int32) int64 { return -c.pressure(raw, tFine) }, -pa*256)
	}
	if filter != 0 {
		// §3.4.4: filtered = (old·(c−1) + new)/c; the first value after
		// a reset or a write to config initialises the memory, and a
		// skipped measurement leaves its memory alone (BMP280 datasheet
		// §3.3.3). The memory keeps fractions, as the chip's does beyond
		// the 20 output bits: with integers a rising input would stall up
		// to c−1 steps short.
		coeff := float64(int(1) << min(filter, 4))
		for i, v := range []*int32{&adcT, &adcP} {
			if i == 1 && osP == 0 {
				continue
			}
			if !s.iirInit[i] {
				s.iir[i], s.iirInit[i] = float64(*v), true
			}
			s.iir[i] = (s.iir[i]*(coeff-1) + float64(*v)) / coeff
			*v = int32(math.Round(s.iir[i]))
		}
	}
	var outT, outP int32 = 0x80000, 0x80000 // 0x80000: skipped (§3.4.2, §3.4.3)
	if osT != 0 {
		outT = adcT
	}
	if osP != 0 {
		outP = adcP
	}
	put20 := func(at int, v int32) {
		s.regs[at], s.regs[at+1], s.regs[at+2] = byte(v>>12), byte(v>>4), byte(v<<4)
	}
	put20(bmePress, outP)
	put20(bmeTemp, outT)
	if !s.bmp {
		var outH int32 = 0x8000
		if osH != 0 {
			rh := float64(env.Humidity) / float64(physic.PercentRH)
			outH = bmeInvert(1<<16, 1, func(raw int32) int64 { return int64(c.humidity(raw, tFine)) }, rh*1024)
		}
		s.regs[bmeHum], s.regs[bmeHum+1] = byte(outH>>8), byte(outH)
	}
}

// bmeInvert returns the raw value, a multiple of step below n, whose
// compensated value f is nearest target; f must not decrease with raw.
func bmeInvert(n, step int32, f func(raw int32) int64, target float64) int32 {
	k := int32(sort.Search(int(n/step), func(k int) bool { return float64(f(int32(k)*step)) >= target }))
	best := min(k, n/step-1)
	if k > 0 && math.Abs(float64(f((k-1)*step))-target) <= math.Abs(float64(f(best*step))-target) {
		best = k - 1
	}
	return best * step
}

// bmeCalibration holds trimming parameters named as in the datasheet
// (§4.2.2 table 16).
type bmeCalibration struct {
	t1                             uint16
	t2, t3                         int16
	p1                             uint16
	p2, p3, p4, p5, p6, p7, p8, p9 int16
	h1                             uint8
	h2                             int16
	h3                             uint8
	h4, h5                         int16
	h6                             int8
}

// tFine is t_fine of BME280_compensate_T_int32 (§4.2.3).
func (c *bmeCalibration) tFine(adcT int32) int32 {
	t1, t2, t3 := int32(c.t1), int32(c.t2), int32(c.t3)
	var1 := (((adcT >> 3) - (t1 << 1)) * t2) >> 11
	var2 := (((((adcT >> 4) - t1) * ((adcT >> 4) - t1)) >> 12) * t3) >> 14
	return var1 + var2
}

// pressure is BME280_compensate_P_int64 (§4.2.3), in Pa/256, without
// the final cast to uint32 so that it keeps falling past zero.
func (c *bmeCalibration) pressure(adcP, tFine int32) int64 {
	var1 := int64(tFine) - 128000
	var2 := var1*var1*int64(c.p6) + (var1*int64(c.p5))<<17 + int64(c.p4)<<35
	var1 = (var1*var1*int64(c.p3))>>8 + (var1*int64(c.p2))<<12
	var1 = ((int64(1) << 47) + var1) * int64(c.p1) >> 33
	if var1 == 0 {
		return 0
	}
	p := 1048576 - int64(adcP)
	p = ((p<<31 - var2) * 3125) / var1
	var1 = (int64(c.p9) * (p >> 13) * (p >> 13)) >> 25
	var2 = (int64(c.p8) * p) >> 19
	return (p+var1+var2)>>8 + int64(c.p7)<<4
}

// humidity is bme280_compensate_H_int32 (§4.2.3), in %RH/1024.
func (c *bmeCalibration) humidity(adcH, tFine int32) uint32 {
	v := tFine - 76800
	// The datasheet's single expression, in its two factors.
	a := (adcH<<14 - int32(c.h4)<<20 - int32(c.h5)*v + 16384) >> 15
	b := ((((v*int32(c.h6))>>10)*(((v*int32(c.h3))>>11)+32768))>>10 + 2097152) * int32(c.h2)
	v = a * ((b + 8192) >> 14)
	v -= ((((v >> 15) * (v >> 15)) >> 7) * int32(c.h1)) >> 4
	return uint32(min(max(v, 0), 419430400) >> 12)
}
