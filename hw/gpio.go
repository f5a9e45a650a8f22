package hw

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// Pin returns the GPIO pin a user named: "GPIO17", "gpio17" and "17" all
// mean GPIO 17 (BCM numbering on a Raspberry Pi, not the header position);
// any other name is a gpiochip line name as gpioinfo lists it. A "sim:"
// prefix ("sim:GPIO17") gives the simulated pin of SimPin instead, on
// every host. Errors say how to find the host's names.
func Pin(name string) (gpio.PinIO, error) {
	n, err := parsePinName(name)
	if err != nil {
		return nil, err
	}
	if n.sim {
		return simPin(n), nil
	}
	for _, c := range pinCandidates(n) {
		if p := gpioreg.ByName(c); p != nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w: %q; %s; names are GPIO<n>, <n> or a line name as `gpioinfo` (libgpiod) lists them, and %q gives a simulated pin", ErrUnknownPin, name, pinsWhy(), "sim:"+n.name)
}

// pinCandidates lists the registry names to try for n, most exact first:
// on a Raspberry Pi GPIO17 and 17 are both registered, on other hosts a
// numbered line may only exist under its line name GPIO17.
func pinCandidates(n pinName) []string {
	c := []string{n.given}
	if n.number >= 0 {
		for _, s := range []string{n.name, strconv.Itoa(n.number)} {
			if s != n.given {
				c = append(c, s)
			}
		}
	}
	return c
}

// pinsWhy describes the pin registry for an error.
func pinsWhy() string {
	if !initDone.Load() {
		return "hw.Init has not run"
	}
	all := gpioreg.All()
	if len(all) == 0 {
		why := "this host has no GPIO (no /dev/gpiochip*)"
		if initState != nil {
			for _, f := range initState.Failed {
				if strings.Contains(f.Driver, "gpio") {
					why += fmt.Sprintf("; driver %s failed: %s", f.Driver, f.Reason)
				}
			}
		}
		return why
	}
	driver := ""
	if initState != nil && initState.GPIO != "" {
		driver = " from " + initState.GPIO
	}
	return fmt.Sprintf("this host has %d pins%s, such as %s", len(all), driver, all[0].Name())
}

// SimEdgeBuffer is the capacity of a simulated pin's EdgesChan.
const SimEdgeBuffer = 16

var (
	simPinsMu sync.Mutex
	simPins   = map[string]*gpiotest.Pin{}
)

// SimPin returns the simulated pin called name (with or without the
// "sim:" prefix; "17" and "GPIO17" are the same pin), creating it on
// first use. It is the pin Pin("sim:"+name) returns, shared by the whole
// process, so a demo or test drives the very pin a module reads: send a
// level on its EdgesChan and a watcher in WaitForEdge sees the edge and
// the new level. EdgesChan holds SimEdgeBuffer edges; a sender with no
// watcher should not block on it (use select). Outputs set with Out are
// read back with Read.
func SimPin(name string) (*gpiotest.Pin, error) {
	s := name
	if !hasSimPrefix(s) {
		s = SimName + ":" + s
	}
	n, err := parsePinName(s)
	if err != nil {
		return nil, err
	}
	return simPin(n), nil
}

func simPin(n pinName) *gpiotest.Pin {
	simPinsMu.Lock()
	defer simPinsMu.Unlock()
	if p, ok := simPins[n.name]; ok {
		return p
	}
	p := &gpiotest.Pin{
		N:         n.name,
		Num:       n.number,
		EdgesChan: make(chan gpio.Level, SimEdgeBuffer),
	}
	simPins[n.name] = p
	return p
}
