package sim_test

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/physic"

	"github.com/tinyedge/tinyedge/hw/sht3x"
	"github.com/tinyedge/tinyedge/hw/sim"
)

// sht3xClock is a fake clock that moves only when told to: the driver's
// Sleep advances it, so no test waits.
type sht3xClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *sht3xClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *sht3xClock) Sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// sht3xSetup returns a bus with a simulated SHT3x at 0x44 measuring a
// climate on a fake clock.
func sht3xSetup(opts *sim.SHT3xOpts) (*sim.Bus, *sim.SHT3x, *sim.Climate, *sht3xClock) {
	clk := &sht3xClock{t: time.Date(2025, 1, 15, 8, 30, 0, 0, time.UTC)}
	c := &sim.Climate{Now: clk.Now, Seed: 0.25}
	chip := sim.NewSHT3x(c, opts)
	bus := sim.NewBus()
	bus.Attach(0x44, chip)
	return bus, chip, c, clk
}

func sht3xClose(t *testing.T, got, want physic.Env, tolT float64) {
	t.Helper()
	if d := math.Abs(got.Temperature.Celsius() - want.Temperature.Celsius()); d > tolT {
		t.Errorf("temperature %v, climate %v: off by %.4f °C, want ≤ %v", got.Temperature, want.Temperature, d, tolT)
	}
	dh := math.Abs(float64(got.Humidity-want.Humidity)) / float64(physic.PercentRH)
	if dh > 0.01 {
		t.Errorf("humidity %v, climate %v: off by %.4f %%rH, want ≤ 0.01", got.Humidity, want.Humidity, dh)
	}
}

// TestSHT3xDriverReadsClimate runs the real driver on the simulated bus:
// every reading is within 0.01 °C and 0.01 %rH of the climate at that
// moment and costs two transactions.
func TestSHT3xDriverReadsClimate(t *testing.T) {
	for _, rep := range []sht3x.Repeatability{sht3x.High, sht3x.Medium, sht3x.Low} {
		t.Run(rep.String(), func(t *testing.T) {
			bus, _, c, clk := sht3xSetup(nil)
			d, err := sht3x.New(bus, 0x44, &sht3x.Opts{Repeatability: rep, Sleep: clk.Sleep})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				clk.Sleep(97 * time.Second) // across the climate's curves
				tx := bus.Transactions()
				e := physic.Env{Pressure: 1}
				if err := d.Sense(&e); err != nil {
					t.Fatalf("reading %d: %v", i, err)
				}
				if got := bus.Transactions() - tx; got != 2 {
					t.Errorf("reading %d took %d transactions, want 2", i, got)
				}
				want := c.Current()
				sht3xClose(t, e, want, 0.01)
				if e.Pressure != 1 {
					t.Errorf("Sense changed the pressure to %v", e.Pressure)
				}
			}
		})
	}
}

// TestSHT3xNACKsWhileMeasuring checks the single shot timing without
// clock stretching: the read header is not acknowledged until the
// datasheet's maximum duration has passed.
func TestSHT3xNACKsWhileMeasuring(t *testing.T) {
	for _, tc := range []struct {
		cmd []byte
		dur time.Duration
	}{
		{[]byte{0x24, 0x00}, 15 * time.Millisecond},
		{[]byte{0x24, 0x0B}, 6 * time.Millisecond},
		{[]byte{0x24, 0x16}, 4 * time.Millisecond},
	} {
		bus, _, _, clk := sht3xSetup(nil)
		if err := bus.Tx(0x44, tc.cmd, nil); err != nil {
			t.Fatal(err)
		}
		var r [6]byte
		if err := bus.Tx(0x44, nil, r[:]); !errors.Is(err, sim.ErrBusy) {
			t.Errorf("read right after % x: %v, want ErrBusy", tc.cmd, err)
		}
		clk.Sleep(tc.dur - time.Microsecond)
		if err := bus.Tx(0x44, nil, r[:]); !errors.Is(err, sim.ErrBusy) {
			t.Errorf("read 1 µs before the end of % x: %v, want ErrBusy", tc.cmd, err)
		}
		if err := bus.Tx(0x44, []byte{0x30, 0xA2}, nil); !errors.Is(err, sim.ErrBusy) {
			t.Errorf("command during % x: %v, want ErrBusy", tc.cmd, err)
		}
		clk.Sleep(time.Microsecond)
		if err := bus.Tx(0x44, nil, r[:]); err != nil {
			t.Errorf("read after % x: %v", tc.cmd, err)
		}
		// The data is read once; another read has nothing to send.
		if err := bus.Tx(0x44, nil, r[:]); !errors.Is(err, sim.ErrBusy) || !strings.Contains(err.Error(), "no data") {
			t.Errorf("second read after % x: %v, want ErrBusy with no data", tc.cmd, err)
		}
	}
}

func TestSHT3xHeaterAndStatus(t *testing.T) {
	bus, _, c, clk := sht3xSetup(&sim.SHT3xOpts{HeaterRise: 3 * physic.Celsius})
	d, err := sht3x.New(bus, 0x44, &sht3x.Opts{Sleep: clk.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if want := sht3x.StatusAlertPending | sht3x.StatusResetDetected; st != want {
		t.Errorf("status after New = %#04x, want %#04x (datasheet defaults after a reset)", st, want)
	}
	if err := d.ClearStatus(); err != nil {
		t.Fatal(err)
	}
	if err := d.Heater(true); err != nil {
		t.Fatal(err)
	}
	if st, err = d.Status(); err != nil || st != sht3x.StatusHeaterOn {
		t.Errorf("status with heater on = %#04x, %v; want %#04x", st, err, sht3x.StatusHeaterOn)
	}
	var e physic.Env
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	warm := c.Current()
	warm.Temperature += 3 * physic.Celsius
	sht3xClose(t, e, warm, 0.01)

	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	if st, err = d.Status(); err != nil || st != sht3x.StatusAlertPending|sht3x.StatusResetDetected {
		t.Errorf("status after reset = %#04x, %v; want heater off and reset flagged", st, err)
	}
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	sht3xClose(t, e, c.Current(), 0.01)
}

func TestSHT3xHeaterDefaultRise(t *testing.T) {
	bus, _, c, clk := sht3xSetup(nil)
	d, err := sht3x.New(bus, 0x44, &sht3x.Opts{Sleep: clk.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Heater(true); err != nil {
		t.Fatal(err)
	}
	var e physic.Env
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	warm := c.Current()
	warm.Temperature += 2 * physic.Celsius
	sht3xClose(t, e, warm, 0.01)
	if err := d.Halt(); err != nil {
		t.Fatal(err)
	}
	if st, err := d.Status(); err != nil || st&sht3x.StatusHeaterOn != 0 {
		t.Errorf("status after Halt = %#04x, %v; want the heater off", st, err)
	}
}

func TestSHT3xCorruptNextCRC(t *testing.T) {
	bus, chip, c, clk := sht3xSetup(nil)
	d, err := sht3x.New(bus, 0x44, &sht3x.Opts{Sleep: clk.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	for word, name := range []string{"temperature", "humidity"} {
		chip.CorruptNextCRC(word)
		before := physic.Env{Temperature: 1, Humidity: 2, Pressure: 3}
		e := before
		err := d.Sense(&e)
		if err == nil || !strings.Contains(err.Error(), "sht3x: CRC mismatch in "+name+" word") {
			t.Errorf("Sense with a corrupted %s CRC: %v, want a CRC mismatch", name, err)
		}
		if e != before {
			t.Errorf("Sense with a corrupted %s CRC wrote %+v", name, e)
		}
		// Only the next read is corrupted.
		if err := d.Sense(&e); err != nil {
			t.Fatalf("Sense after the corrupted one: %v", err)
		}
		sht3xClose(t, e, c.Current(), 0.01)
	}
	chip.CorruptNextCRC(0)
	if _, err := d.Status(); err == nil || !strings.Contains(err.Error(), "CRC mismatch in status word") {
		t.Errorf("Status with a corrupted CRC: %v, want a CRC mismatch", err)
	}
}

func TestSHT3xRefusesUnknownCommands(t *testing.T) {
	bus, _, _, _ := sht3xSetup(nil)
	if err := bus.Tx(0x44, []byte{0x2C, 0x06}, nil); err == nil || !strings.Contains(err.Error(), "0x2c06 is not simulated") {
		t.Errorf("clock stretching command: %v, want refused", err)
	}
	if err := bus.Tx(0x44, []byte{0x61, 0x1D, 0x00, 0x00, 0x81}, nil); err == nil {
		t.Error("alert limit write accepted")
	}
	var r [3]byte
	if err := bus.Tx(0x44, []byte{0xF3, 0x2D}, r[:]); err != nil {
		t.Fatal(err)
	}
	// Command status (bit 1) was set by the refused commands and is
	// cleared by the status read itself, which is a valid command.
	if got := uint16(r[0])<<8 | uint16(r[1]); got&sht3x.StatusCommandFailed != 0 {
		t.Errorf("status = %#04x after a valid command, want command status clear", got)
	}
	if err := bus.Tx(0x44, nil, r[:]); !errors.Is(err, sim.ErrBusy) {
		t.Errorf("read with no command: %v, want ErrBusy", err)
	}
}

func TestSHT3xWallClock(t *testing.T) {
	// With no injected clock the simulator and the driver use real time.
	bus := sim.NewBus()
	bus.Attach(0x45, sim.NewSHT3x(nil, nil))
	d, err := sht3x.New(bus, 0x45, &sht3x.Opts{Repeatability: sht3x.Low})
	if err != nil {
		t.Fatal(err)
	}
	var e physic.Env
	if err := d.Sense(&e); err != nil {
		t.Fatal(err)
	}
	sht3xClose(t, e, (&sim.Climate{}).Current(), 0.05)
}
