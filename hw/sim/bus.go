// Package sim holds register-level simulators of the chips tinyedge has
// drivers for, on a simulated I²C bus, so the real drivers run unchanged on
// a laptop, in CI and under QEMU: the bus answers transactions the way the
// chips do, and the readings follow a slowly varying simulated climate.
package sim

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Device is a simulated I²C device. Tx answers one transaction addressed
// to it: w is what the controller wrote, r what it wants read back.
type Device interface {
	Tx(w, r []byte) error
}

// ErrNoDevice is returned (wrapped) when no device answers at an address,
// as a real bus reports a NACK.
var ErrNoDevice = errors.New("sim: no device acknowledged")

// Bus is an i2c.Bus whose devices are simulated. It is safe for
// concurrent use; transactions are serialized as on a real bus.
type Bus struct {
	mu   sync.Mutex
	devs map[uint16]Device
	txs  uint64
}

var _ i2c.BusCloser = (*Bus)(nil)

// NewBus returns a bus with no devices.
func NewBus() *Bus { return &Bus{devs: map[uint16]Device{}} }

// Attach puts d at addr, replacing what was there.
func (b *Bus) Attach(addr uint16, d Device) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.devs[addr] = d
}

// Tx runs one transaction on the device at addr.
func (b *Bus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.txs++
	d, ok := b.devs[addr]
	if !ok {
		return fmt.Errorf("%w at %#02x", ErrNoDevice, addr)
	}
	return d.Tx(w, r)
}

// Transactions is the number of transactions run so far, for measuring
// how many a driver needs per reading.
func (b *Bus) Transactions() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.txs
}

// SetSpeed accepts any speed: the simulation has no clock.
func (b *Bus) SetSpeed(physic.Frequency) error { return nil }

// String names the bus.
func (b *Bus) String() string { return "sim" }

// Close does nothing; it makes Bus an i2c.BusCloser like a host bus.
func (b *Bus) Close() error { return nil }

// Climate is the simulated environment the chips measure: temperature,
// pressure and humidity drifting slowly around typical indoor values along
// smooth curves, the same for every chip that reads it at the same time.
type Climate struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Seed shifts the curves so two climates differ; 0 is fine.
	Seed float64
}

// At returns the climate at time t: about 22 °C ± 3, 1013 hPa ± 8,
// 45 %rH ± 15, with periods of minutes so successive readings differ a
// little.
func (c *Climate) At(t time.Time) physic.Env {
	s := float64(t.UnixNano())/1e9 + c.Seed*1000
	temp := 22 + 3*math.Sin(s/600) + 0.3*math.Sin(s/37)
	press := 1013.25 + 8*math.Sin(s/1800+1) + 0.2*math.Sin(s/53)
	hum := 45 + 15*math.Sin(s/900+2) + 1*math.Sin(s/41)
	return physic.Env{
		Temperature: physic.ZeroCelsius + physic.Temperature(temp*float64(physic.Celsius)),
		Pressure:    physic.Pressure(press * 100 * float64(physic.Pascal)),
		Humidity:    physic.RelativeHumidity(hum * float64(physic.PercentRH)),
	}
}

// Current returns the climate now.
func (c *Climate) Current() physic.Env {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	return c.At(now())
}
