package bme280

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"

	"github.com/tinyedge/tinyedge/hw/sim"
)

// newSim returns a Dev on a simulated BME280 whose climate is frozen at a
// fixed time, and its bus; forced readings do not wait.
func newSim(t testing.TB, opts *Opts) (*Dev, *sim.Bus) {
	t.Helper()
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	bus := sim.NewBus()
	bus.Attach(0x77, sim.NewBME280(&sim.Climate{Now: func() time.Time { return at }}, nil))
	d, err := New(bus, 0x77, opts)
	if err != nil {
		t.Fatal(err)
	}
	d.sleep = func(time.Duration) {}
	return d, bus
}

// BenchmarkSenseSim measures one forced reading on the simulator: the
// driver's CPU time plus the simulator's (which inverts the compensation
// by bisection, so it dominates), and the I²C transactions per reading.
func BenchmarkSenseSim(b *testing.B) {
	d, bus := newSim(b, nil)
	var e physic.Env
	start := bus.Transactions()
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Sense(&e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(bus.Transactions()-start)/float64(b.N), "tx/reading")
}

// BenchmarkCompensate is the driver's share of a reading: turning the
// eight data bytes into a physic.Env, the baseline for BenchmarkSenseSim.
func BenchmarkCompensate(b *testing.B) {
	d := &Dev{cal: exampleCal, opts: DefaultOpts}
	var e physic.Env
	b.ReportAllocs()
	for b.Loop() {
		if err := d.compensate(exampleData, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSenseContinuous(t *testing.T) {
	defer goleak.VerifyNone(t)
	d, bus := newSim(t, nil)
	ch, err := d.SenseContinuous(time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SenseContinuous(time.Millisecond); !errors.Is(err, ErrBusy) {
		t.Errorf("second SenseContinuous = %v, want ErrBusy", err)
	}
	for range 3 {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed early: %v", d.Err())
			}
			if c := e.Temperature.Celsius(); c < 10 || c > 35 {
				t.Errorf("reading %v, want an indoor temperature", e.Temperature)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no reading within 10s")
		}
	}
	if err := d.Halt(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		// At most the reading in flight may still arrive.
		if _, ok := <-ch; ok {
			t.Fatal("channel still open after Halt")
		}
	}
	if d.Err() != nil {
		t.Errorf("Err() = %v after Halt, want nil", d.Err())
	}
	// Halt put the chip to sleep: ctrl_meas mode bits 00.
	var meas [1]byte
	if err := bus.Tx(0x77, []byte{0xF4}, meas[:]); err != nil || meas[0]&3 != 0 {
		t.Errorf("ctrl_meas after Halt = %#02x, %v; want sleep mode", meas[0], err)
	}
}

// breakingBus fails every transaction once broken is set.
type breakingBus struct {
	i2c.Bus
	broken chan struct{}
}

func (b *breakingBus) Tx(addr uint16, w, r []byte) error {
	select {
	case <-b.broken:
		return errors.New("remote I/O error")
	default:
		return b.Bus.Tx(addr, w, r)
	}
}

func TestSenseContinuousStopsOnError(t *testing.T) {
	defer goleak.VerifyNone(t)
	d, bus := newSim(t, nil)
	bb := &breakingBus{Bus: bus, broken: make(chan struct{})}
	d.d.Bus = bb
	ch, err := d.SenseContinuous(time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	close(bb.broken)
	deadline := time.After(10 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-ch:
		case <-deadline:
			t.Fatal("channel not closed after the bus failed")
		}
	}
	if err := d.Err(); err == nil || err.Error() != "bme280: start forced measurement at 0x77: remote I/O error" {
		t.Errorf("Err() = %v", err)
	}
	// A new continuous sensing may start once the bus works again.
	d.d.Bus = bus
	ch, err = d.SenseContinuous(time.Millisecond)
	if err != nil {
		t.Fatalf("SenseContinuous after a failure: %v", err)
	}
	<-ch
	if err := d.Halt(); err != nil {
		t.Fatal(err)
	}
}
