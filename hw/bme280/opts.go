package bme280

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Oversampling is how many samples the chip averages for one measurement
// (§3.4, osrs_x in §5.4.3 and §5.4.5); more lowers noise and lengthens
// the measurement. Its values are the register codes.
type Oversampling uint8

// Oversampling settings. Off skips the measurement.
const (
	Off  Oversampling = 0
	O1x  Oversampling = 1
	O2x  Oversampling = 2
	O4x  Oversampling = 3
	O8x  Oversampling = 4
	O16x Oversampling = 5
)

// factor is the number of samples, 0 for Off.
func (o Oversampling) factor() int {
	if o == Off {
		return 0
	}
	return 1 << (o - 1)
}

// String returns "off" or the factor, as "4x".
func (o Oversampling) String() string {
	if o > O16x {
		return fmt.Sprintf("Oversampling(%d)", uint8(o))
	}
	if o == Off {
		return "off"
	}
	return fmt.Sprintf("%dx", o.factor())
}

// Filter is the IIR filter coefficient for temperature and pressure
// (§3.4.4, filter in §5.4.6). Its values are the register codes.
type Filter uint8

// Filter settings.
const (
	NoFilter Filter = 0
	F2       Filter = 1
	F4       Filter = 2
	F8       Filter = 3
	F16      Filter = 4
)

// String returns "off" or the coefficient, as "16".
func (f Filter) String() string {
	switch {
	case f == NoFilter:
		return "off"
	case f <= F16:
		return fmt.Sprint(1 << f)
	}
	return fmt.Sprintf("Filter(%d)", uint8(f))
}

// Mode is how the chip is run.
type Mode uint8

// Modes (§3.3).
const (
	// Forced starts one measurement per Sense and lets the chip sleep in
	// between (§3.3.3): the datasheet's choice for weather monitoring and
	// the default.
	Forced Mode = iota
	// Normal lets the chip measure on its own, pausing Opts.Standby
	// between measurements (§3.3.4); Sense reads the latest result.
	Normal
)

// String returns "forced" or "normal".
func (m Mode) String() string {
	switch m {
	case Forced:
		return "forced"
	case Normal:
		return "normal"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Opts configures a Dev. A nil *Opts means DefaultOpts.
type Opts struct {
	// Temperature, Pressure and Humidity oversampling. Temperature cannot
	// be Off: the other two are compensated with it. Humidity is ignored
	// on a BMP280, which has no humidity sensor.
	Temperature Oversampling
	Pressure    Oversampling
	Humidity    Oversampling
	// Filter smooths temperature and pressure over successive
	// measurements; it is most useful in Normal mode.
	Filter Filter
	// Mode is Forced (the zero value) or Normal.
	Mode Mode
	// Standby is the pause between measurements in Normal mode, one of
	// the chip's values (§5.4.6 table 27): 0.5ms, 10ms, 20ms, 62.5ms,
	// 125ms, 250ms, 500ms or 1s on a BME280; 0.5ms, 62.5ms, 125ms,
	// 250ms, 500ms, 1s, 2s or 4s on a BMP280 (§5.2 table 17). It must be
	// zero in Forced mode.
	Standby time.Duration
}

// DefaultOpts is the datasheet's recommended setting for weather
// monitoring (§3.5.1): forced mode, every oversampling 1x, filter off.
var DefaultOpts = Opts{
	Temperature: O1x,
	Pressure:    O1x,
	Humidity:    O1x,
	Filter:      NoFilter,
	Mode:        Forced,
}

// validate checks what can be checked before knowing the chip.
func (o *Opts) validate() error {
	for _, s := range []struct {
		name string
		o    Oversampling
	}{{"Temperature", o.Temperature}, {"Pressure", o.Pressure}, {"Humidity", o.Humidity}} {
		if s.o > O16x {
			return fmt.Errorf("bme280: %s oversampling %d is not one of Off, O1x, O2x, O4x, O8x, O16x", s.name, uint8(s.o))
		}
	}
	if o.Temperature == Off {
		return fmt.Errorf("bme280: Temperature oversampling is Off, but pressure and humidity are compensated with the temperature; set it to O1x or more")
	}
	if o.Filter > F16 {
		return fmt.Errorf("bme280: Filter %d is not one of NoFilter, F2, F4, F8, F16", uint8(o.Filter))
	}
	switch o.Mode {
	case Forced:
		if o.Standby != 0 {
			return fmt.Errorf("bme280: Standby %s is set in forced mode; standby is the pause between measurements in Normal mode, leave it zero", o.Standby)
		}
	case Normal:
	default:
		return fmt.Errorf("bme280: Mode %d is not Forced or Normal", uint8(o.Mode))
	}
	return nil
}

// Standby times by t_sb code (§5.4.6 table 27; §5.2 table 17 for the
// BMP280's codes 6 and 7).
var (
	standbyBME280 = [8]time.Duration{500 * time.Microsecond, 62500 * time.Microsecond, 125 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 10 * time.Millisecond, 20 * time.Millisecond}
	standbyBMP280 = [8]time.Duration{500 * time.Microsecond, 62500 * time.Microsecond, 125 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
)

// standbyCode returns the t_sb code for d on the chip, or an error that
// lists the chip's values.
func standbyCode(d time.Duration, table *[8]time.Duration, chip string) (byte, error) {
	for i, v := range table {
		if v == d {
			return byte(i), nil
		}
	}
	var names []string
	for _, v := range slices.Sorted(slices.Values(table[:])) {
		names = append(names, v.String())
	}
	return 0, fmt.Errorf("bme280: Standby %s is not one the %s offers in Normal mode; use one of %s", d, chip, strings.Join(names, ", "))
}

// measureTime is the maximum measurement time of §9.1 (appendix B):
// 1.25 ms, plus 2.3 ms per temperature sample, plus 2.3 ms per pressure
// sample and 0.575 ms, plus 2.3 ms per humidity sample and 0.575 ms, each
// only when that measurement is enabled.
func measureTime(t, p, h Oversampling) time.Duration {
	us := 1250
	if t != Off {
		us += 2300 * t.factor()
	}
	if p != Off {
		us += 2300*p.factor() + 575
	}
	if h != Off {
		us += 2300*h.factor() + 575
	}
	return time.Duration(us) * time.Microsecond
}
