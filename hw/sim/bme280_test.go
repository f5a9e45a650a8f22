package sim

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/physic"

	"github.com/tinyedge/tinyedge/hw/bme280"
)

// frozen is a climate whose clock the test moves.
type frozen struct{ at time.Time }

func (f *frozen) now() time.Time { return f.at }

func newFrozen() (*frozen, *Climate) {
	f := &frozen{at: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	return f, &Climate{Now: f.now}
}

// The real driver reads the climate back within the chip's resolution.
func TestBME280DriverReadsClimate(t *testing.T) {
	tests := []struct {
		name string
		bmp  bool
		opts *bme280.Opts
		// Pressure tolerance: at 1x oversampling without filter the
		// output has 16 bits (§3.4.2), typically 2.62 Pa per step (BMP280
		// datasheet §3.3.1 table 4), so a reading is within half a step,
		// 1.38 Pa at most over a day of this climate; at 16x a step is
		// 0.16 Pa.
		tolPa float64
	}{
		{name: "defaults", opts: nil, tolPa: 1.5},
		// Normal mode, so the test does not wait 113 ms per reading.
		{name: "16x", opts: &bme280.Opts{Temperature: bme280.O16x, Pressure: bme280.O16x, Humidity: bme280.O16x, Mode: bme280.Normal, Standby: time.Second}, tolPa: 1},
		{name: "normal with filter", opts: &bme280.Opts{Temperature: bme280.O2x, Pressure: bme280.O16x, Humidity: bme280.O1x, Filter: bme280.F16, Mode: bme280.Normal, Standby: 500 * time.Microsecond}, tolPa: 1},
		{name: "BMP280 4x", bmp: true, opts: &bme280.Opts{Temperature: bme280.O4x, Pressure: bme280.O4x}, tolPa: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock, climate := newFrozen()
			bus := NewBus()
			bus.Attach(0x76, NewBME280(climate, &BME280Opts{BMP280: tt.bmp}))
			d, err := bme280.New(bus, 0x76, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Halt()
			if want := map[bool]string{false: "BME280", true: "BMP280"}[tt.bmp]; d.Chip() != want {
				t.Errorf("Chip() = %q, want %q", d.Chip(), want)
			}
			// Two moments ten minutes apart: the readings follow the
			// climate.
			for i := range 2 {
				want := climate.Current()
				if tt.opts != nil && tt.opts.Filter != bme280.NoFilter && i > 0 {
					// Let the IIR filter (coefficient 16) settle on the
					// new values: 75% after 30 samples (§3.4.4 table 6);
					// 200 leave less than one LSB.
					for range 200 {
						if err := d.Sense(&physic.Env{}); err != nil {
							t.Fatal(err)
						}
					}
				}
				e := physic.Env{Humidity: 7 * physic.PercentRH}
				if err := d.Sense(&e); err != nil {
					t.Fatal(err)
				}
				if got, want := e.Temperature.Celsius(), want.Temperature.Celsius(); math.Abs(got-want) > 0.01 {
					t.Errorf("temperature %.4f °C, climate %.4f °C", got, want)
				}
				if got, want := float64(e.Pressure)/float64(physic.Pascal), float64(want.Pressure)/float64(physic.Pascal); math.Abs(got-want) > tt.tolPa {
					t.Errorf("pressure %.3f Pa, climate %.3f Pa, want within %v Pa", got, want, tt.tolPa)
				}
				if tt.bmp {
					if e.Humidity != 7*physic.PercentRH {
						t.Errorf("a BMP280 reported humidity %v", e.Humidity)
					}
				} else if got, want := float64(e.Humidity)/float64(physic.PercentRH), float64(want.Humidity)/float64(physic.PercentRH); math.Abs(got-want) > 0.1 {
					t.Errorf("humidity %.3f %%RH, climate %.3f %%RH", got, want)
				}
				clock.at = clock.at.Add(10 * time.Minute)
			}
		})
	}
}

// read returns n registers from reg.
func read(t *testing.T, s *BME280, reg byte, n int) []byte {
	t.Helper()
	r := make([]byte, n)
	if err := s.Tx([]byte{reg}, r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBME280Registers(t *testing.T) {
	_, climate := newFrozen()
	s := NewBME280(climate, nil)

	if got := read(t, s, 0xD0, 1)[0]; got != 0x60 {
		t.Errorf("chip id 0x%02x, want 0x60", got)
	}
	if got := read(t, NewBME280(climate, &BME280Opts{BMP280: true}), 0xD0, 1)[0]; got != 0x58 {
		t.Errorf("BMP280 chip id 0x%02x, want 0x58", got)
	}
	// The datasheet example's dig_T1 = 27504 and dig_P9 = 6000, LSB first.
	calib := read(t, s, 0x88, 26)
	if calib[0] != 0x70 || calib[1] != 0x6B || calib[22] != 0x70 || calib[23] != 0x17 {
		t.Errorf("calibration % x", calib)
	}
	// Power-on data registers: 0x80000, 0x80000, 0x8000 (§5.3).
	if got, want := read(t, s, 0xF7, 8), []byte{0x80, 0, 0, 0x80, 0, 0, 0x80, 0}; !bytes.Equal(got, want) {
		t.Errorf("data after power-on % x, want % x", got, want)
	}

	// Writes to read-only registers are ignored.
	if err := s.Tx([]byte{0xD0, 0x11, 0x88, 0x00, 0xF7, 0x12}, nil); err != nil {
		t.Fatal(err)
	}
	if read(t, s, 0xD0, 1)[0] != 0x60 || read(t, s, 0x88, 1)[0] != 0x70 || read(t, s, 0xF7, 1)[0] != 0x80 {
		t.Error("a write to a read-only register took")
	}

	// ctrl_hum takes effect with the next ctrl_meas write (§5.4.3).
	if err := s.Tx([]byte{0xF2, 0x01}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Tx([]byte{0xF4, 0x25}, nil); err != nil { // 1x, 1x, forced
		t.Fatal(err)
	}
	if got := read(t, s, 0xF4, 1)[0]; got != 0x24 {
		t.Errorf("ctrl_meas after a forced measurement 0x%02x, want 0x24 (back to sleep)", got)
	}
	data := read(t, s, 0xF7, 8)
	if data[2] != 0 || data[5] != 0 {
		t.Errorf("data at 1x % x: want 16-bit results, xlsb registers 0x00 (§3.4.2)", data)
	}
	if bytes.Equal(data[6:], []byte{0x80, 0}) {
		t.Error("humidity not measured after ctrl_hum and ctrl_meas were written")
	}

	// config is ignored in normal mode (§5.4.6), taken in sleep mode.
	if err := s.Tx([]byte{0xF4, 0x27, 0xF5, 0x10}, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, 0xF5, 1)[0]; got != 0 {
		t.Errorf("config written in normal mode reads 0x%02x, want 0x00", got)
	}
	if err := s.Tx([]byte{0xF4, 0x24, 0xF5, 0x10}, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, 0xF5, 1)[0]; got != 0x10 {
		t.Errorf("config written in sleep mode reads 0x%02x, want 0x10", got)
	}

	// A skipped measurement reports 0x80000 (§3.4.2).
	if err := s.Tx([]byte{0xF5, 0, 0xF4, 0x21}, nil); err != nil { // pressure skipped
		t.Fatal(err)
	}
	if got := read(t, s, 0xF7, 3); !bytes.Equal(got, []byte{0x80, 0, 0}) {
		t.Errorf("skipped pressure % x, want 80 00 00", got)
	}

	// Soft reset restores the power-on state; other values do nothing.
	if err := s.Tx([]byte{0xE0, 0x01}, nil); err != nil {
		t.Fatal(err)
	}
	if read(t, s, 0xF4, 1)[0] == 0 {
		t.Error("writing 0x01 to reset reset the chip")
	}
	if err := s.Tx([]byte{0xE0, 0xB6}, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, 0xF2, 4); !bytes.Equal(got, []byte{0, 0, 0, 0}) {
		t.Errorf("ctrl_hum…config after reset % x, want zeros", got)
	}

	// Reading past 0xFF is an error; reading up to it is fine.
	read(t, s, 0xFE, 2)
	err := s.Tx([]byte{0xFE}, make([]byte, 3))
	if err == nil || !strings.Contains(err.Error(), "runs past register 0xFF") {
		t.Errorf("read of 3 bytes at 0xFE = %v, want an error", err)
	}
	// Without a register address a read continues where the last ended.
	if err := s.Tx([]byte{0xD0}, nil); err != nil {
		t.Fatal(err)
	}
	r := make([]byte, 1)
	if err := s.Tx(nil, r); err != nil || r[0] != 0x60 {
		t.Errorf("read at the address pointer 0xD0 = 0x%02x, %v", r[0], err)
	}
}

// The IIR filter makes a step in the climate show gradually (§3.4.4).
func TestBME280Filter(t *testing.T) {
	clock, climate := newFrozen()
	bus := NewBus()
	bus.Attach(0x76, NewBME280(climate, nil))
	d, err := bme280.New(bus, 0x76, &bme280.Opts{Temperature: bme280.O1x, Pressure: bme280.O1x, Filter: bme280.F4, Mode: bme280.Normal, Standby: 500 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Halt()
	var e physic.Env
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	before := e.Temperature.Celsius()
	clock.at = clock.at.Add(15 * time.Minute)
	after := climate.Current().Temperature.Celsius()
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	// One sample through a coefficient-4 filter moves a quarter of the way.
	want := before + (after-before)/4
	if got := e.Temperature.Celsius(); math.Abs(got-want) > 0.02 {
		t.Errorf("after a step from %.3f to %.3f °C: %.3f °C, want %.3f", before, after, got, want)
	}
}
