package sht3x

import (
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/physic"

	"github.com/tinyedge/tinyedge/hw/sim"
)

// simClock is a fake clock that moves only when the driver sleeps, so
// tests and benchmarks on the simulator never wait.
type simClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *simClock) Sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// onSim returns a Dev on a simulated bus with an SHT3x at 0x44.
func onSim(t testing.TB, rep Repeatability) (*Dev, *sim.SHT3x, *sim.Bus) {
	t.Helper()
	clk := &simClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	chip := sim.NewSHT3x(&sim.Climate{Now: clk.Now}, nil)
	bus := sim.NewBus()
	bus.Attach(0x44, chip)
	d, err := New(bus, 0x44, &Opts{Repeatability: rep, Sleep: clk.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	return d, chip, bus
}

func TestSenseContinuous(t *testing.T) {
	defer goleak.VerifyNone(t)
	d, _, _ := onSim(t, Low)
	if _, err := d.SenseContinuous(time.Millisecond); err == nil || !strings.Contains(err.Error(), "shorter than a low repeatability measurement (4ms)") {
		t.Errorf("SenseContinuous(1ms) error = %v, want the interval refused", err)
	}
	ch, err := d.SenseContinuous(5 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SenseContinuous(5 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second SenseContinuous error = %v, want already running", err)
	}
	for i := range 3 {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d readings", i)
			}
			if c := e.Temperature.Celsius(); c < 15 || c > 30 {
				t.Errorf("reading %d: %v, want an indoor temperature", i, e.Temperature)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no reading %d within 5 s", i)
		}
	}
	if err := d.Halt(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		// A reading may have been in flight; the next receive must see
		// the close.
		if _, ok := <-ch; ok {
			t.Error("channel still open after Halt")
		}
	}
	// A new run after Halt works.
	ch, err = d.SenseContinuous(5 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	if err := d.Halt(); err != nil {
		t.Fatal(err)
	}
}

func TestSenseContinuousStopsOnError(t *testing.T) {
	defer goleak.VerifyNone(t)
	d, chip, _ := onSim(t, Low)
	ch, err := d.SenseContinuous(4 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	chip.CorruptNextCRC(1)
	deadline := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-ch:
		case <-deadline:
			t.Fatal("channel not closed within 5 s of a bad CRC")
		}
	}
	err = d.Halt()
	if err == nil || !strings.Contains(err.Error(), "sht3x: CRC mismatch in humidity word") {
		t.Fatalf("Halt() = %v, want the CRC mismatch that ended the run", err)
	}
}

// BenchmarkSenseSim measures one reading through the real driver on the
// simulated bus (the fake clock makes the waits free, so the time per
// reading is CPU time) and reports the I²C transactions per reading. The
// baseline is the same two transactions issued on the bus directly, with
// no driver, measured in the same run.
func BenchmarkSenseSim(b *testing.B) {
	d, _, bus := onSim(b, High)

	// Baseline: the bare command and read, as the driver sends them.
	const baseN = 20000
	var buf [6]byte
	start := time.Now()
	for range baseN {
		if err := bus.Tx(0x44, []byte{0x24, 0x00}, nil); err != nil {
			b.Fatal(err)
		}
		d.sleep(15 * time.Millisecond)
		if err := bus.Tx(0x44, nil, buf[:]); err != nil {
			b.Fatal(err)
		}
	}
	base := float64(time.Since(start).Nanoseconds()) / baseN

	var e physic.Env
	tx0 := bus.Transactions()
	for b.Loop() {
		if err := d.Sense(&e); err != nil {
			b.Fatal(err)
		}
	}
	tx := bus.Transactions() - tx0
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per, "cpu-ns/reading")
	b.ReportMetric(float64(tx)/float64(b.N), "tx/reading")
	b.ReportMetric(per/base, "x-bare-bus")
}
