package hw

import (
	"fmt"
	"sync"
	"sync/atomic"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"
	"periph.io/x/host/v3/gpioioctl"
	"periph.io/x/host/v3/sysfs"
)

// State is what Init found on the host.
type State struct {
	// Loaded names the periph drivers that started, sorted.
	Loaded []string
	// Skipped lists drivers that do not apply to this host, with why
	// (no such CPU, no /dev/gpiochip*, no /dev/i2c-*). Normal on a laptop.
	Skipped []DriverNote
	// Failed lists drivers that apply but could not start, with why
	// (permissions, a busy device): the operator should hear of these.
	// A failure of sysfs-gpio, whose pins tinyedge does not use, is listed
	// in Skipped instead.
	Failed []DriverNote
	// GPIO names the driver that serves pins: "bcm283x-gpio" on a
	// Raspberry Pi, "ioctl-gpio" for the GPIO character device elsewhere,
	// "" when the host has no GPIO.
	GPIO string
	// I2C names the host's I²C buses, such as "/dev/i2c-1".
	I2C []string
	// SysfsPinsRemoved counts the legacy sysfs GPIO pins taken out of the
	// pin registry so that no name resolves to them.
	SysfsPinsRemoved int
}

// sysfsGPIO is the name of periph's driver for the deprecated sysfs GPIO
// interface, which tinyedge does not use.
const sysfsGPIO = "sysfs-gpio"

// DriverNote is a periph driver that did not load, and why.
type DriverNote struct {
	Driver string
	Reason string
}

// NoHardware reports whether the host has neither GPIO nor I²C, as on a
// laptop, in CI or under qemu-user; only the simulated bus and pins are
// there.
func (s *State) NoHardware() bool { return s.GPIO == "" && len(s.I2C) == 0 }

var (
	initOnce  sync.Once
	initState *State
	initErr   error
	// initDone lets lookups tell "not found" from "Init has not run".
	initDone atomic.Bool
)

// Init initialises periph's host drivers (host.Init) once and describes
// what it found; later calls return the first call's result. Only
// cmd/tinyedge calls it, before it starts modules: no init function of
// tinyedge touches hardware.
//
// A host without GPIO or I²C is not an error: Init returns a State whose
// NoHardware is true, and the simulated bus and pins still work. Drivers
// that apply to the host but fail to start (no permission on
// /dev/gpiomem, say) are listed in State.Failed, not returned as an
// error, so that the rest of the hardware stays usable; the caller should
// log them. The error is non-nil only when periph itself cannot order its
// drivers, which is a build problem.
func Init() (*State, error) {
	initOnce.Do(func() {
		initState, initErr = initHost()
		initDone.Store(true)
	})
	return initState, initErr
}

func initHost() (*State, error) {
	ds, err := host.Init()
	s := &State{}
	if ds != nil {
		for _, d := range ds.Loaded {
			s.Loaded = append(s.Loaded, d.String())
		}
		s.Skipped = notes(ds.Skipped)
		for _, f := range notes(ds.Failed) {
			if f.Driver == sysfsGPIO {
				// Its pins are dropped below anyway, so its failure (often
				// no write access to /sys/class/gpio/export) is no
				// operator's concern.
				f.Reason = "not used, the GPIO character device is: " + f.Reason
				s.Skipped = append(s.Skipped, f)
				continue
			}
			s.Failed = append(s.Failed, f)
		}
	}
	if err != nil {
		return s, fmt.Errorf("hw: initialise periph host drivers: %w", err)
	}
	s.SysfsPinsRemoved = dropSysfsPins()
	for _, name := range s.Loaded {
		switch name {
		case "bcm283x-gpio":
			s.GPIO = name
		case "ioctl-gpio":
			if s.GPIO == "" {
				s.GPIO = name
			}
		}
	}
	if s.GPIO != "" && len(gpioreg.All()) == 0 {
		s.GPIO = ""
	}
	for _, r := range i2creg.All() {
		s.I2C = append(s.I2C, r.Name)
	}
	return s, nil
}

func notes(fs []driverreg.DriverFailure) []DriverNote {
	var out []DriverNote
	for _, f := range fs {
		n := DriverNote{Driver: f.D.String()}
		if f.Err != nil {
			n.Reason = f.Err.Error()
		}
		out = append(out, n)
	}
	return out
}

// dropSysfsPins removes the pins of periph's sysfs-gpio driver from the
// pin registry, with the aliases that led to them, and puts back the
// character-device line of the same name where there is one. It returns
// how many pins it removed.
func dropSysfsPins() int {
	return dropPins(func(p gpio.PinIO) bool {
		_, ok := p.(*sysfs.Pin)
		return ok
	}, charDevLine)
}

// dropPins unregisters every pin for which drop is true and every alias
// that resolved to one; a pin for which replace returns another pin is
// replaced by it under the same name, so its aliases keep working.
func dropPins(drop func(gpio.PinIO) bool, replace func(name string) gpio.PinIO) int {
	type alias struct{ name, dest string }
	var aliases []alias
	for _, a := range gpioreg.Aliases() {
		r, ok := a.(gpio.RealPin)
		if !ok {
			continue
		}
		if p := r.Real(); drop(p) {
			aliases = append(aliases, alias{a.Name(), p.Name()})
		}
	}
	removed := 0
	for _, p := range gpioreg.All() {
		if !drop(p) || gpioreg.Unregister(p.Name()) != nil {
			continue
		}
		removed++
		if q := replace(p.Name()); q != nil {
			// The name is free: it was just unregistered.
			_ = gpioreg.Register(q)
		}
	}
	for _, a := range aliases {
		if gpioreg.ByName(a.dest) == nil {
			_ = gpioreg.Unregister(a.name)
		}
	}
	return removed
}

// charDevLine returns the GPIO character-device line called name, or nil.
func charDevLine(name string) gpio.PinIO {
	for _, c := range gpioioctl.Chips {
		if l := c.ByName(name); l != nil {
			return l
		}
	}
	return nil
}
