package sht3x

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
)

// sleeps records the waits a Dev asks for instead of sleeping.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.d)
}

// playback returns a bus that expects exactly ops and fails the test if
// any are left over when it ends.
func playback(t *testing.T, ops ...i2ctest.IO) *i2ctest.Playback {
	t.Helper()
	p := &i2ctest.Playback{Ops: ops, DontPanic: true}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// Traffic of the SHT3x at addr, as the datasheet lays it out.
func cmdIO(addr, cmd uint16) i2ctest.IO {
	return i2ctest.IO{Addr: addr, W: []byte{byte(cmd >> 8), byte(cmd)}}
}

func readIO(addr uint16, words ...uint16) i2ctest.IO {
	r := make([]byte, 0, 3*len(words))
	for _, w := range words {
		r = append(r, byte(w>>8), byte(w), crc8(byte(w>>8), byte(w)))
	}
	return i2ctest.IO{Addr: addr, R: r}
}

// newOps is what New sends: a soft reset, then a status read that finds
// the reset flag and the alert flag set, as after any reset.
func newOps(addr uint16) []i2ctest.IO {
	return []i2ctest.IO{cmdIO(addr, 0x30A2), cmdIO(addr, 0xF32D), readIO(addr, 0x8010)}
}

// newDev returns a Dev on a playback bus that expects New's traffic then
// ops.
func newDev(t *testing.T, opts *Opts, ops ...i2ctest.IO) (*Dev, *i2ctest.Playback, *sleeps) {
	t.Helper()
	p := playback(t, append(newOps(0x44), ops...)...)
	s := &sleeps{}
	o := Opts{}
	if opts != nil {
		o = *opts
	}
	o.Sleep = s.sleep
	d, err := New(p, 0x44, &o)
	if err != nil {
		t.Fatal(err)
	}
	s.d = nil
	return d, p, s
}

func TestNew(t *testing.T) {
	for _, addr := range []uint16{0x44, 0x45} {
		t.Run(i2c.Addr(addr).String(), func(t *testing.T) {
			p := playback(t, newOps(addr)...)
			s := &sleeps{}
			d, err := New(p, addr, &Opts{Sleep: s.sleep})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := s.got(), []time.Duration{1500 * time.Microsecond}; !slices.Equal(got, want) {
				t.Errorf("New waited %v, want %v (soft reset time, datasheet Table 4)", got, want)
			}
			if got, want := d.String(), "SHT3x{playback "+i2c.Addr(addr).String()+"}"; got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr uint16
		opts *Opts
		ops  []i2ctest.IO
		want string
	}{
		{"address 0x40", 0x40, nil, nil, "sht3x: address 0x40 is not an SHT3x address; use 0x44 (ADDR pin low) or 0x45 (ADDR pin high)"},
		{"address 0x76", 0x76, nil, nil, "is not an SHT3x address"},
		{"repeatability", 0x44, &Opts{Repeatability: 7}, nil, "sht3x: unknown repeatability 7"},
		{"bad status CRC", 0x44, &Opts{Sleep: func(time.Duration) {}},
			[]i2ctest.IO{cmdIO(0x44, 0x30A2), cmdIO(0x44, 0xF32D), {Addr: 0x44, R: []byte{0x80, 0x10, 0x00}}},
			"sht3x: no SHT3x answering at 0x44 on playback: sht3x: CRC mismatch in status word 0x8010: got 0x00, want 0xe1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(playback(t, tc.ops...), tc.addr, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New() = %v, %v; want error containing %q", d, err, tc.want)
			}
			if d != nil {
				t.Errorf("New() returned a device with its error")
			}
		})
	}
}

func TestNewNoDevice(t *testing.T) {
	b := &nackBus{Bus: playback(t), nacks: -1}
	_, err := New(b, 0x45, &Opts{Sleep: func(time.Duration) {}})
	if err == nil || !errors.Is(err, errNACK) || !strings.Contains(err.Error(), "sht3x: soft reset (command 0x30a2) at 0x45") {
		t.Fatalf("New() error = %v, want the soft reset's NACK", err)
	}
}

func TestSense(t *testing.T) {
	c := physic.ZeroCelsius
	for _, tc := range []struct {
		name    string
		rep     Repeatability
		t, rh   uint16
		wantT   physic.Temperature
		wantRH  physic.RelativeHumidity
		cmd     uint16
		measure time.Duration
	}{
		// -45 + 175·26214/65535 = -45 + 175·0.4 = 25 °C; 100·0.4 = 40 %.
		{"0x6666 high", High, 0x6666, 0x6666, c + 25*physic.Celsius, 40 * physic.PercentRH, 0x2400, 15 * time.Millisecond},
		{"0x6666 medium", Medium, 0x6666, 0x6666, c + 25*physic.Celsius, 40 * physic.PercentRH, 0x240B, 6 * time.Millisecond},
		{"0x6666 low", Low, 0x6666, 0x6666, c + 25*physic.Celsius, 40 * physic.PercentRH, 0x2416, 4 * time.Millisecond},
		// The ends of the range: -45 °C and 130 °C, 0 % and 100 %.
		{"0x0000", High, 0x0000, 0x0000, c - 45*physic.Celsius, 0, 0x2400, 15 * time.Millisecond},
		{"0xFFFF", High, 0xFFFF, 0xFFFF, c + 130*physic.Celsius, 100 * physic.PercentRH, 0x2400, 15 * time.Millisecond},
		// -45 + 175·32768/65535 = 42.501335164… °C; 100·32768/65535 = 50.0007629… %.
		{"0x8000", High, 0x8000, 0x8000, c - 45*physic.Celsius + 87_501_335_164, 5_000_076, 0x2400, 15 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, s := newDev(t, &Opts{Repeatability: tc.rep}, cmdIO(0x44, tc.cmd), readIO(0x44, tc.t, tc.rh))
			e := physic.Env{Pressure: 101325 * physic.Pascal}
			if err := d.Sense(&e); err != nil {
				t.Fatal(err)
			}
			want := physic.Env{Temperature: tc.wantT, Pressure: 101325 * physic.Pascal, Humidity: tc.wantRH}
			if e != want {
				t.Errorf("Sense() = %+v, want %+v", e, want)
			}
			if got, want := s.got(), []time.Duration{tc.measure}; !slices.Equal(got, want) {
				t.Errorf("Sense waited %v, want %v (maximum measurement duration, datasheet Table 4)", got, want)
			}
		})
	}
}

func TestSenseCRCMismatch(t *testing.T) {
	good := readIO(0x44, 0x6666, 0x6666)
	badT := slices.Clone(good.R)
	badT[2] ^= 0x10
	badRH := slices.Clone(good.R)
	badRH[5] = 0x00
	for _, tc := range []struct {
		name string
		r    []byte
		want string
	}{
		{"temperature", badT, "sht3x: CRC mismatch in temperature word 0x6666: got 0x83, want 0x93"},
		{"humidity", badRH, "sht3x: CRC mismatch in humidity word 0x6666: got 0x00, want 0x93"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, _ := newDev(t, nil, cmdIO(0x44, 0x2400), i2ctest.IO{Addr: 0x44, R: tc.r})
			before := physic.Env{Temperature: 1, Pressure: 2, Humidity: 3}
			e := before
			err := d.Sense(&e)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Sense() error = %v, want %q", err, tc.want)
			}
			if e != before {
				t.Errorf("Sense() wrote %+v into the Env despite the bad CRC", e)
			}
		})
	}
}

// errNACK stands for a host bus's NACK error.
var errNACK = errors.New("i2c: remote I/O error")

// nackBus fails the first nacks read-only transactions (all when nacks is
// negative) as a sensor still measuring does, and passes the rest on.
type nackBus struct {
	i2c.Bus
	mu    sync.Mutex
	nacks int
	reads int
}

func (b *nackBus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	if len(w) == 0 {
		b.reads++
		if b.nacks != 0 {
			b.nacks--
			b.mu.Unlock()
			return errNACK
		}
	} else if b.nacks < 0 {
		b.mu.Unlock()
		return errNACK
	}
	b.mu.Unlock()
	return b.Bus.Tx(addr, w, r)
}

func TestSenseRetriesNACK(t *testing.T) {
	d, p, s := newDev(t, nil, cmdIO(0x44, 0x2400), readIO(0x44, 0x6666, 0x6666))
	b := &nackBus{Bus: p, nacks: 2}
	d.c.Bus = b
	var e physic.Env
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	if want := physic.ZeroCelsius + 25*physic.Celsius; e.Temperature != want {
		t.Errorf("temperature = %v, want %v", e.Temperature, want)
	}
	if b.reads != 3 {
		t.Errorf("read attempts = %d, want 3 (2 NACKs, then the data)", b.reads)
	}
	if got, want := s.got(), []time.Duration{15 * time.Millisecond, time.Millisecond, time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("Sense waited %v, want %v", got, want)
	}
}

func TestSenseGivesUp(t *testing.T) {
	d, p, s := newDev(t, nil, cmdIO(0x44, 0x2400))
	d.c.Bus = &readNACKs{Bus: p}
	before := physic.Env{Temperature: 1, Humidity: 2}
	e := before
	err := d.Sense(&e)
	want := "sht3x: read measurement at 0x44: no data after 5 attempts 1ms apart: i2c: remote I/O error"
	if err == nil || err.Error() != want || !errors.Is(err, errNACK) {
		t.Fatalf("Sense() error = %v, want %q wrapping the bus error", err, want)
	}
	if e != before {
		t.Errorf("Sense() wrote %+v into the Env after giving up", e)
	}
	if got := len(s.got()); got != 5 {
		t.Errorf("Sense waited %d times, want 5 (the measurement, then 4 retries)", got)
	}
}

// readNACKs NACKs every read-only transaction.
type readNACKs struct{ i2c.Bus }

func (b *readNACKs) Tx(addr uint16, w, r []byte) error {
	if len(w) == 0 {
		return errNACK
	}
	return b.Bus.Tx(addr, w, r)
}

func TestHeater(t *testing.T) {
	t.Run("on, off", func(t *testing.T) {
		d, _, _ := newDev(t, nil, cmdIO(0x44, 0x306D), cmdIO(0x44, 0x3066))
		if err := d.Heater(true); err != nil {
			t.Fatal(err)
		}
		if err := d.Heater(false); err != nil {
			t.Fatal(err)
		}
		// Off already: Halt sends nothing.
		if err := d.Halt(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Halt switches it off", func(t *testing.T) {
		d, _, _ := newDev(t, nil, cmdIO(0x44, 0x306D), cmdIO(0x44, 0x3066))
		if err := d.Heater(true); err != nil {
			t.Fatal(err)
		}
		if err := d.Halt(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Reset switches it off", func(t *testing.T) {
		d, _, _ := newDev(t, nil, cmdIO(0x44, 0x306D), cmdIO(0x44, 0x30A2))
		if err := d.Heater(true); err != nil {
			t.Fatal(err)
		}
		if err := d.Reset(); err != nil {
			t.Fatal(err)
		}
		if err := d.Halt(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReset(t *testing.T) {
	d, _, s := newDev(t, nil, cmdIO(0x44, 0x30A2))
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	if got, want := s.got(), []time.Duration{1500 * time.Microsecond}; !slices.Equal(got, want) {
		t.Errorf("Reset waited %v, want %v", got, want)
	}
}

func TestStatus(t *testing.T) {
	d, _, _ := newDev(t, nil,
		cmdIO(0x44, 0x306D),
		cmdIO(0x44, 0x3041),
		cmdIO(0x44, 0xF32D), readIO(0x44, 0x2000))
	if err := d.Heater(true); err != nil {
		t.Fatal(err)
	}
	if err := d.ClearStatus(); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st != StatusHeaterOn {
		t.Errorf("Status() = %#04x, want %#04x (heater on, flags cleared)", st, StatusHeaterOn)
	}
}

func TestPrecision(t *testing.T) {
	d, _, _ := newDev(t, nil)
	var e physic.Env
	d.Precision(&e)
	// One raw step: 175 K/65535 and 100 %/65535.
	if want := physic.Temperature(2_670_328); e.Temperature != want {
		t.Errorf("temperature precision = %d nK, want %d", e.Temperature, want)
	}
	if want := physic.RelativeHumidity(152); e.Humidity != want {
		t.Errorf("humidity precision = %d, want %d", e.Humidity, want)
	}
}
