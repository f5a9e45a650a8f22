package hw

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"

	"github.com/tinyedge/tinyedge/hw/sim"
)

// Addresses of the chips on the simulated bus, the chips' default
// addresses (BME280 with SDO to ground, SHT3x with ADDR to ground).
const (
	SimBME280Addr uint16 = 0x76
	SimSHT3xAddr  uint16 = 0x44
)

// OpenI2C opens the I²C bus a user named: "I2C1", "1" and "/dev/i2c-1"
// all mean bus 1; "" means the host's first bus; "sim" means the
// simulated bus (see NewSimBus), which is there on every host. Any other
// name is looked up among the names and aliases periph registered (a USB
// adapter's bus, say). Errors name what was asked for and what exists.
func OpenI2C(name string) (i2c.BusCloser, error) {
	n, err := parseBusName(name)
	if err != nil {
		return nil, err
	}
	if n.sim {
		return sharedSimBus(), nil
	}
	refs := i2creg.All()
	if len(refs) == 0 {
		what := "the host's first I²C bus"
		if name != "" {
			what = fmt.Sprintf("I²C bus %q", name)
		}
		return nil, fmt.Errorf("%w: %s asked for, but %s; the simulated bus %q is always there", ErrNoBus, what, noBusWhy(), SimName)
	}
	key := n.other
	if n.number >= 0 {
		key = strconv.Itoa(n.number)
	}
	if !busExists(refs, n) {
		return nil, fmt.Errorf("%w: %q; this host has %s, and %q", ErrUnknownBus, name, listBuses(refs), SimName)
	}
	b, err := i2creg.Open(key)
	if err != nil {
		return nil, fmt.Errorf("hw: open I²C bus %q: %w", name, err)
	}
	return b, nil
}

// noBusWhy explains an empty bus registry.
func noBusWhy() string {
	if !initDone.Load() {
		return "hw.Init has not run"
	}
	why := "this host has no /dev/i2c-* (on a Raspberry Pi, enable I²C with dtparam=i2c_arm=on in config.txt)"
	if initState != nil {
		for _, f := range initState.Failed {
			if strings.Contains(f.Driver, "i2c") {
				why += fmt.Sprintf("; driver %s failed: %s", f.Driver, f.Reason)
			}
		}
	}
	return why
}

func busExists(refs []*i2creg.Ref, n busName) bool {
	if n.number < 0 && n.other == "" {
		return true
	}
	for _, r := range refs {
		if n.number >= 0 && r.Number == n.number {
			return true
		}
		if n.other != "" && (r.Name == n.other || contains(r.Aliases, n.other)) {
			return true
		}
	}
	return false
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// listBuses names buses as "/dev/i2c-1 (I2C1)".
func listBuses(refs []*i2creg.Ref) string {
	var parts []string
	for _, r := range refs {
		s := r.Name
		if len(r.Aliases) > 0 {
			s += " (" + strings.Join(r.Aliases, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// NewSimBus returns a new simulated I²C bus with a BME280 at SimBME280Addr
// and an SHT3x at SimSHT3xAddr, both measuring c, so their readings
// agree. A nil c is a default sim.Climate.
func NewSimBus(c *sim.Climate) *sim.Bus {
	if c == nil {
		c = &sim.Climate{}
	}
	b := sim.NewBus()
	b.Attach(SimBME280Addr, sim.NewBME280(c, nil))
	b.Attach(SimSHT3xAddr, sim.NewSHT3x(c, nil))
	return b
}

var simBus = sync.OnceValue(func() *sim.Bus { return NewSimBus(nil) })

// sharedSimBus is the process's simulated bus: like a real bus, every open
// reaches the same chips.
func sharedSimBus() *sim.Bus { return simBus() }
