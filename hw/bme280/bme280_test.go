package bme280

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
)

// Raw data registers 0xF7…0xFE of the datasheet example: adc_P = 415148
// (0x655AC), adc_T = 519888 (0x7EED0), adc_H = 0x71AC (not from the
// datasheet, which has no humidity example).
var exampleData = []byte{0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x71, 0xAC}

const exampleAdcH = 0x71AC

// Expected results of the example: 25.08 °C and 25767233/256 Pa
// (TestCompensateDatasheetExample); the humidity is checked against the
// §8.1 floating-point formula.
const (
	exampleTemperature = physic.ZeroCelsius + 25080*physic.MilliCelsius
	examplePressure    = 25767233 * (physic.Pascal / 256)
)

// exampleHumidity is what Sense reports for exampleAdcH; TestSenseForced
// checks it against the §8.1 floating-point formula.
func exampleHumidity() physic.RelativeHumidity {
	_, tFine := exampleCal.temperature(519888)
	q := int64(exampleCal.humidity(exampleAdcH, tFine))
	return physic.RelativeHumidity((q*int64(physic.PercentRH) + 512) / 1024)
}

// initOps is what New does with DefaultOpts on a BME280 at 0x76.
func initOps(id byte) []i2ctest.IO {
	ops := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xD0}, R: []byte{id}},
		{Addr: 0x76, W: []byte{0x88}, R: exampleTP},
	}
	if id == 0x60 {
		ops = append(ops, i2ctest.IO{Addr: 0x76, W: []byte{0xE1}, R: exampleH})
	}
	ops = append(ops, i2ctest.IO{Addr: 0x76, W: []byte{0xF4, 0x24}}) // osrs_t 1x, osrs_p 1x, sleep
	if id == 0x60 {
		ops = append(ops, i2ctest.IO{Addr: 0x76, W: []byte{0xF2, 0x01}}) // osrs_h 1x
	}
	return append(ops, i2ctest.IO{Addr: 0x76, W: []byte{0xF5, 0x00}}) // no filter
}

// newPlayback returns a Dev made by New on ops, and a check for the end of
// the test that every op was used; sleeps are recorded, not slept.
func newPlayback(t *testing.T, ops []i2ctest.IO, opts *Opts) (*Dev, *[]time.Duration) {
	t.Helper()
	p := &i2ctest.Playback{Ops: ops, DontPanic: true}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	d, err := New(p, 0x76, opts)
	if err != nil {
		t.Fatal(err)
	}
	var slept []time.Duration
	d.sleep = func(d time.Duration) { slept = append(slept, d) }
	return d, &slept
}

func TestNew(t *testing.T) {
	d, _ := newPlayback(t, initOps(0x60), nil)
	if got, want := d.Chip(), "BME280"; got != want {
		t.Errorf("Chip() = %q, want %q", got, want)
	}
	if got, want := d.String(), "BME280{playback(118)}"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if d.cal != exampleCal {
		t.Errorf("calibration %+v, want %+v", d.cal, exampleCal)
	}
}

func TestNewNormalMode(t *testing.T) {
	ops := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}},
		{Addr: 0x76, W: []byte{0x88}, R: exampleTP},
		{Addr: 0x76, W: []byte{0xE1}, R: exampleH},
		{Addr: 0x76, W: []byte{0xF4, 0b010_101_00}}, // osrs_t 2x, osrs_p 16x, sleep
		{Addr: 0x76, W: []byte{0xF2, 0b001}},        // osrs_h 1x
		{Addr: 0x76, W: []byte{0xF5, 0b110_100_00}}, // t_sb 10 ms, filter 16
		{Addr: 0x76, W: []byte{0xF4, 0b010_101_11}}, // normal mode
		// Sense: the burst read alone.
		{Addr: 0x76, W: []byte{0xF7}, R: exampleData},
	}
	d, slept := newPlayback(t, ops, &Opts{Temperature: O2x, Pressure: O16x, Humidity: O1x, Filter: F16, Mode: Normal, Standby: 10 * time.Millisecond})
	var e physic.Env
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	if e.Temperature != exampleTemperature || e.Pressure != examplePressure {
		t.Errorf("Sense = %v, %v; want %v, %v", e.Temperature, e.Pressure, exampleTemperature, examplePressure)
	}
	if len(*slept) != 0 {
		t.Errorf("normal mode slept %v, want no wait", *slept)
	}
}

func TestNewBMP280(t *testing.T) {
	for _, id := range []byte{0x58, 0x56, 0x57} {
		ops := append(initOps(id),
			i2ctest.IO{Addr: 0x76, W: []byte{0xF4, 0x25}},               // forced, no ctrl_hum
			i2ctest.IO{Addr: 0x76, W: []byte{0xF7}, R: exampleData[:6]}, // no humidity bytes
		)
		d, slept := newPlayback(t, ops, nil)
		if got, want := d.Chip(), "BMP280"; got != want {
			t.Errorf("id 0x%02x: Chip() = %q, want %q", id, got, want)
		}
		e := physic.Env{Humidity: 42 * physic.PercentRH}
		if err := d.Sense(&e); err != nil {
			t.Fatal(err)
		}
		want := physic.Env{Temperature: exampleTemperature, Pressure: examplePressure, Humidity: 42 * physic.PercentRH}
		if e != want {
			t.Errorf("id 0x%02x: Sense = %+v, want %+v (humidity untouched)", id, e, want)
		}
		// §9.1 without humidity: 1.25 + 2.3 + 2.3 + 0.575 ms.
		if want := []time.Duration{6425 * time.Microsecond}; len(*slept) != 1 || (*slept)[0] != want[0] {
			t.Errorf("slept %v, want %v", *slept, want)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	idOnly := []i2ctest.IO{{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}}}
	tests := []struct {
		name string
		addr uint16
		ops  []i2ctest.IO
		opts *Opts
		want string
	}{
		{"wrong chip id", 0x76, []i2ctest.IO{{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x61}}}, nil,
			"bme280: chip id 0x61 at 0x76 is not a BME280 or BMP280"},
		{"address", 0x40, nil, nil,
			"bme280: address 0x40: a BME280 or BMP280 answers only at 0x76 (SDO to GND) or 0x77 (SDO to VDDIO)"},
		{"temperature off", 0x76, nil, &Opts{Pressure: O1x},
			"bme280: Temperature oversampling is Off, but pressure and humidity are compensated with the temperature; set it to O1x or more"},
		{"oversampling", 0x76, nil, &Opts{Temperature: O1x, Humidity: 6},
			"bme280: Humidity oversampling 6 is not one of Off, O1x, O2x, O4x, O8x, O16x"},
		{"filter", 0x76, nil, &Opts{Temperature: O1x, Filter: 5},
			"bme280: Filter 5 is not one of NoFilter, F2, F4, F8, F16"},
		{"mode", 0x76, nil, &Opts{Temperature: O1x, Mode: 2}, "bme280: Mode 2 is not Forced or Normal"},
		{"standby in forced mode", 0x76, nil, &Opts{Temperature: O1x, Standby: time.Second},
			"bme280: Standby 1s is set in forced mode; standby is the pause between measurements in Normal mode, leave it zero"},
		{"standby the BME280 lacks", 0x76, idOnly, &Opts{Temperature: O1x, Mode: Normal, Standby: 2 * time.Second},
			"bme280: Standby 2s is not one the BME280 offers in Normal mode; use one of 500µs, 10ms, 20ms, 62.5ms, 125ms, 250ms, 500ms, 1s"},
		{"zero standby in normal mode", 0x76, idOnly, &Opts{Temperature: O1x, Mode: Normal},
			"bme280: Standby 0s is not one the BME280 offers in Normal mode; use one of 500µs, 10ms, 20ms, 62.5ms, 125ms, 250ms, 500ms, 1s"},
		{"bad calibration", 0x76, []i2ctest.IO{
			{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}},
			{Addr: 0x76, W: []byte{0x88}, R: make([]byte, 26)},
			{Addr: 0x76, W: []byte{0xE1}, R: exampleH},
		}, nil, "bme280: calibration 0x88…0xA1 reads all 0x00: a bus fault or a blank chip; check wiring and pull-ups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &i2ctest.Playback{Ops: tt.ops, DontPanic: true}
			defer func() {
				if err := p.Close(); err != nil {
					t.Error(err)
				}
			}()
			d, err := New(p, tt.addr, tt.opts)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("New = %v, %v\nwant error %q", d, err, tt.want)
			}
			if tt.name == "wrong chip id" && !errors.Is(err, ErrUnknownChip) {
				t.Errorf("errors.Is(%v, ErrUnknownChip) = false", err)
			}
		})
	}
}

func TestNewBMP280Standby(t *testing.T) {
	// 2 s is t_sb 110 on a BMP280 (§5.2 table 17); no ctrl_hum write.
	ops := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x58}},
		{Addr: 0x76, W: []byte{0x88}, R: exampleTP},
		{Addr: 0x76, W: []byte{0xF4, 0x24}},
		{Addr: 0x76, W: []byte{0xF5, 0b110_000_00}},
		{Addr: 0x76, W: []byte{0xF4, 0x27}},
	}
	newPlayback(t, ops, &Opts{Temperature: O1x, Pressure: O1x, Humidity: O1x, Mode: Normal, Standby: 2 * time.Second})
}

func TestSenseForced(t *testing.T) {
	ops := append(initOps(0x60),
		// ctrl_hum then ctrl_meas with mode forced, one write (§6.2.1).
		i2ctest.IO{Addr: 0x76, W: []byte{0xF2, 0x01, 0xF4, 0x25}},
		i2ctest.IO{Addr: 0x76, W: []byte{0xF7}, R: exampleData},
		i2ctest.IO{Addr: 0x76, W: []byte{0xF4, 0x24}}, // Halt: sleep mode
	)
	d, slept := newPlayback(t, ops, nil)
	var e physic.Env
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	if e.Temperature != exampleTemperature {
		t.Errorf("temperature %v, want %v", e.Temperature, exampleTemperature)
	}
	if e.Humidity != exampleHumidity() {
		t.Errorf("humidity %v, want %v", e.Humidity, exampleHumidity())
	}
	if e.Pressure != examplePressure {
		t.Errorf("pressure %v, want %v", e.Pressure, examplePressure)
	}
	_, tFine := exampleCal.temperature(519888)
	want := exampleCal.floatHumidity(exampleAdcH, tFine)
	if got := float64(e.Humidity) / float64(physic.PercentRH); math.Abs(got-want) > tolRH {
		t.Errorf("humidity %v, want %.3f%%rH ± %v (§8.1 float formula)", e.Humidity, want, tolRH)
	}
	// §9.1: 1.25 + 2.3 + (2.3 + 0.575) + (2.3 + 0.575) ms.
	if want := 9300 * time.Microsecond; len(*slept) != 1 || (*slept)[0] != want {
		t.Errorf("slept %v, want [%v]", *slept, want)
	}
	if err := d.Halt(); err != nil {
		t.Fatal(err)
	}
}

// A measurement set Off is neither read nor reported.
func TestSenseSkipsOff(t *testing.T) {
	tests := []struct {
		name    string
		opts    Opts
		meas    byte
		trigger []byte
		read    i2ctest.IO
		want    physic.Env
	}{
		{
			name: "pressure off", opts: Opts{Temperature: O1x, Humidity: O1x}, meas: 0x20,
			trigger: []byte{0xF2, 0x01, 0xF4, 0x21},
			read:    i2ctest.IO{Addr: 0x76, W: []byte{0xFA}, R: exampleData[3:]},
			want:    physic.Env{Temperature: exampleTemperature, Pressure: 1, Humidity: exampleHumidity()},
		},
		{
			name: "humidity off", opts: Opts{Temperature: O1x, Pressure: O1x}, meas: 0x24,
			trigger: []byte{0xF2, 0x00, 0xF4, 0x25},
			read:    i2ctest.IO{Addr: 0x76, W: []byte{0xF7}, R: exampleData[:6]},
			want:    physic.Env{Temperature: exampleTemperature, Pressure: examplePressure, Humidity: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hum := byte(tt.opts.Humidity)
			ops := []i2ctest.IO{
				{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}},
				{Addr: 0x76, W: []byte{0x88}, R: exampleTP},
				{Addr: 0x76, W: []byte{0xE1}, R: exampleH},
				{Addr: 0x76, W: []byte{0xF4, tt.meas}},
				{Addr: 0x76, W: []byte{0xF2, hum}},
				{Addr: 0x76, W: []byte{0xF5, 0}},
				{Addr: 0x76, W: tt.trigger},
				tt.read,
			}
			d, _ := newPlayback(t, ops, &tt.opts)
			e := physic.Env{Pressure: 1, Humidity: 1}
			if err := d.Sense(&e); err != nil {
				t.Fatal(err)
			}
			if e != tt.want {
				t.Errorf("Sense = %+v, want %+v", e, tt.want)
			}
		})
	}
}

func TestSenseRefusesNegativePressure(t *testing.T) {
	ops := append(initOps(0x60),
		i2ctest.IO{Addr: 0x76, W: []byte{0xF2, 0x01, 0xF4, 0x25}},
		i2ctest.IO{Addr: 0x76, W: []byte{0xF7}, R: []byte{0xFF, 0xFF, 0xF0, 0x7E, 0xED, 0x00, 0x71, 0xAC}},
	)
	d, _ := newPlayback(t, ops, nil)
	e := physic.Env{Temperature: 1}
	err := d.Sense(&e)
	if err == nil || !strings.HasPrefix(err.Error(), "bme280: raw pressure 0xfffff") || !strings.Contains(err.Error(), "less than zero") {
		t.Fatalf("Sense = %v, want an error about the negative pressure", err)
	}
	if e.Temperature != 1 {
		t.Errorf("a refused reading changed e to %+v", e)
	}
}

// failBus fails every transaction, as a bus whose chip stopped answering.
type failBus struct{}

func (failBus) String() string                  { return "fail" }
func (failBus) SetSpeed(physic.Frequency) error { return nil }
func (failBus) Tx(uint16, []byte, []byte) error { return errors.New("remote I/O error") }

func TestBusErrors(t *testing.T) {
	if _, err := New(failBus{}, 0x77, nil); err == nil || err.Error() != "bme280: read chip id at 0x77: remote I/O error" {
		t.Errorf("New = %v", err)
	}
	d, _ := newPlayback(t, initOps(0x60), nil)
	d.d.Bus = failBus{}
	if err := d.Sense(&physic.Env{}); err == nil || err.Error() != "bme280: start forced measurement at 0x76: remote I/O error" {
		t.Errorf("Sense = %v", err)
	}
	if err := d.Halt(); err == nil || err.Error() != "bme280: halt: write ctrl_meas at 0x76: remote I/O error" {
		t.Errorf("Halt = %v", err)
	}
}

func TestPrecision(t *testing.T) {
	d, _ := newPlayback(t, initOps(0x60), nil)
	var e physic.Env
	d.Precision(&e)
	want := physic.Env{Temperature: 10 * physic.MilliKelvin, Pressure: 3906250 * physic.NanoPascal, Humidity: 98 * physic.TenthMicroRH}
	if e != want {
		t.Errorf("Precision = %+v, want %+v", e, want)
	}
}

// §9.1 (appendix B), t_measure,max.
func TestMeasureTime(t *testing.T) {
	tests := []struct {
		t, p, h Oversampling
		want    time.Duration
	}{
		{O1x, O1x, O1x, 9300 * time.Microsecond},
		// The datasheet's example, temperature 1x, pressure 4x, no
		// humidity: 11.5 ms typical, 13.325 ms at most.
		{O1x, O4x, Off, 13325 * time.Microsecond},
		{O16x, O16x, O16x, 112800 * time.Microsecond},
		{O1x, Off, Off, 3550 * time.Microsecond},
	}
	for _, tt := range tests {
		if got := measureTime(tt.t, tt.p, tt.h); got != tt.want {
			t.Errorf("measureTime(%v, %v, %v) = %v, want %v", tt.t, tt.p, tt.h, got, tt.want)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{Off.String(), "off"}, {O4x.String(), "4x"}, {O16x.String(), "16x"}, {Oversampling(9).String(), "Oversampling(9)"},
		{NoFilter.String(), "off"}, {F16.String(), "16"}, {Filter(7).String(), "Filter(7)"},
		{Forced.String(), "forced"}, {Normal.String(), "normal"}, {Mode(4).String(), "Mode(4)"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

var _ i2c.Bus = failBus{}
