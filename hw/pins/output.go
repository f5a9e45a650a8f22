package pins

import (
	"fmt"
	"sync"

	"periph.io/x/conn/v3/gpio"
)

// Output is a GPIO output with a safe level: the level it is driven to
// as soon as it is opened and again when it is halted, such as "relay
// off". Its methods are safe for concurrent use.
type Output struct {
	p    gpio.PinIO
	safe gpio.Level

	mu    sync.Mutex
	level gpio.Level
}

// NewOutput drives p to safe before doing anything else with it, so a
// relay never sees another level while the gateway starts.
func NewOutput(p gpio.PinIO, safe gpio.Level) (*Output, error) {
	if p == nil {
		return nil, ErrNilPin
	}
	if err := p.Out(safe); err != nil {
		return nil, fmt.Errorf("pins: drive %s to its safe level %s: %w", p.Name(), safe, err)
	}
	return &Output{p: p, safe: safe, level: safe}, nil
}

// Set drives the pin to l. If the pin refuses, the error says so and
// Level keeps the last level that was set.
func (o *Output) Set(l gpio.Level) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.p.Out(l); err != nil {
		return fmt.Errorf("pins: set %s %s: %w", o.p.Name(), l, err)
	}
	o.level = l
	return nil
}

// Level returns the level the pin was last driven to.
func (o *Output) Level() gpio.Level {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.level
}

// Safe returns the output's safe level.
func (o *Output) Safe() gpio.Level { return o.safe }

// Name returns the pin's name.
func (o *Output) Name() string { return o.p.Name() }

// Halt drives the pin back to its safe level. The Output stays usable:
// Set after Halt drives the pin again.
func (o *Output) Halt() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.p.Out(o.safe); err != nil {
		return fmt.Errorf("pins: return %s to its safe level %s: %w", o.p.Name(), o.safe, err)
	}
	o.level = o.safe
	return nil
}
