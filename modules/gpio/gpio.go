// Package gpio is the built-in module for GPIO pins: inputs (buttons, PIR
// sensors, door contacts) send an event on each debounced edge, outputs
// (relays) are driven by a direct method and by the desired properties and
// start at a safe level.
//
// Settings (the deployment entry's env):
//
//	INPUTS    pins to watch, comma-separated: GPIO17,GPIO27 (sim:GPIO17 for a simulated pin)
//	OUTPUTS   pins to drive with their safe level: GPIO22=low,GPIO23=high
//	DEBOUNCE  how long a level must hold to count: 20ms (default)
//
// Each debounced edge of an input is sent on output "events" as
// {"pin": "GPIO17", "level": "high", "time": "…"} (contentType
// application/json). The direct method "set" takes {"pin": "GPIO22",
// "level": "high"} and answers 200 with the new state, or 400 for a pin
// that is not a configured output or a level that is not high or low.
// The desired property "outputs" ({"GPIO22": "high"}) sets outputs too;
// the reported property "outputs" holds the state actually set.
package gpio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	gpiopkg "periph.io/x/conn/v3/gpio"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hw"
	"github.com/tinyedge/tinyedge/hw/pins"
)

// Output is the output events are sent on; SetMethod the direct method
// that drives outputs.
const (
	Output    = "events"
	SetMethod = "set"
)

// DefaultDebounce is how long a level must hold before it counts.
const DefaultDebounce = 20 * time.Millisecond

// Options configure a Module; nil means defaults.
type Options struct {
	// Pin finds a pin by name; default hw.Pin.
	Pin func(name string) (gpiopkg.PinIO, error)
}

// Module is the GPIO module.
type Module struct {
	pin func(name string) (gpiopkg.PinIO, error)
}

var _ hub.Module = (*Module)(nil)

// New returns a GPIO module.
func New(opts *Options) *Module {
	m := &Module{pin: hw.Pin}
	if opts != nil && opts.Pin != nil {
		m.pin = opts.Pin
	}
	return m
}

// config is what the env says.
type config struct {
	inputs   []string
	outputs  []outputConfig
	debounce time.Duration
}

type outputConfig struct {
	name string
	safe gpiopkg.Level
}

type envReader interface {
	Env(key string) (string, bool)
}

// CheckEnv checks the env settings without running the module.
func CheckEnv(env map[string]string) error {
	_, err := readConfig(hub.MapEnv(env))
	return err
}

// CheckDesired checks the desired properties without running the module.
func CheckDesired(desired map[string]any) error {
	v, ok := desired["outputs"]
	if !ok || v == nil {
		return nil
	}
	outs, ok := v.(map[string]any)
	if !ok {
		return &hub.PropertyError{Name: "outputs", Err: fmt.Errorf("%v is not an object of pin names to levels", v)}
	}
	var errs []error
	for pin, lv := range outs {
		if _, err := parseLevel(lv); err != nil {
			errs = append(errs, &hub.PropertyError{Name: "outputs", Err: fmt.Errorf("%s: %w", pin, err)})
		}
	}
	return errors.Join(errs...)
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func readConfig(env envReader) (config, error) {
	cfg := config{debounce: DefaultDebounce}
	seen := map[string]string{}
	if v, ok := env.Env("INPUTS"); ok {
		for _, name := range splitList(v) {
			if prev, dup := seen[name]; dup {
				return config{}, &hub.EnvError{Key: "INPUTS", Err: fmt.Errorf("pin %s is listed twice (also in %s)", name, prev)}
			}
			seen[name] = "INPUTS"
			cfg.inputs = append(cfg.inputs, name)
		}
	}
	if v, ok := env.Env("OUTPUTS"); ok {
		for _, f := range splitList(v) {
			name, lv, ok := strings.Cut(f, "=")
			name = strings.TrimSpace(name)
			if !ok {
				return config{}, &hub.EnvError{Key: "OUTPUTS", Err: fmt.Errorf("%q has no safe level; write %s=low or %s=high", f, name, name)}
			}
			level, err := parseLevel(strings.TrimSpace(lv))
			if err != nil {
				return config{}, &hub.EnvError{Key: "OUTPUTS", Err: fmt.Errorf("%s: %w", name, err)}
			}
			if prev, dup := seen[name]; dup {
				return config{}, &hub.EnvError{Key: "OUTPUTS", Err: fmt.Errorf("pin %s is listed twice (also in %s)", name, prev)}
			}
			seen[name] = "OUTPUTS"
			cfg.outputs = append(cfg.outputs, outputConfig{name: name, safe: level})
		}
	}
	if v, ok := env.Env("DEBOUNCE"); ok && strings.TrimSpace(v) != "" {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			ms, err2 := strconv.Atoi(strings.TrimSpace(v))
			if err2 != nil {
				return config{}, &hub.EnvError{Key: "DEBOUNCE", Err: fmt.Errorf("%q is not a duration like 20ms", v)}
			}
			d = time.Duration(ms) * time.Millisecond
		}
		if d < 0 || d > 10*time.Second {
			return config{}, &hub.EnvError{Key: "DEBOUNCE", Err: fmt.Errorf("%s is outside 0–10s", d)}
		}
		cfg.debounce = d
	}
	if len(cfg.inputs) == 0 && len(cfg.outputs) == 0 {
		return config{}, &hub.EnvError{Key: "INPUTS", Err: errors.New("no pins: set INPUTS and/or OUTPUTS")}
	}
	return cfg, nil
}

// parseLevel reads a level: "high"/"low", true/false, 1/0.
func parseLevel(v any) (gpiopkg.Level, error) {
	switch x := v.(type) {
	case bool:
		return gpiopkg.Level(x), nil
	case float64:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "high", "1", "true", "on":
			return gpiopkg.High, nil
		case "low", "0", "false", "off":
			return gpiopkg.Low, nil
		}
	}
	return gpiopkg.Low, fmt.Errorf("level %v is not high or low", v)
}

func levelName(l gpiopkg.Level) string {
	if l {
		return "high"
	}
	return "low"
}

// Event is the body of an input event.
type Event struct {
	Pin   string `json:"pin"`
	Level string `json:"level"`
	Time  string `json:"time"`
}

type setRequest struct {
	Pin   string `json:"pin"`
	Level any    `json:"level"`
}

type setResponse struct {
	Pin   string `json:"pin"`
	Level string `json:"level"`
}

// run is one run of the module.
type run struct {
	c       *hub.Client
	log     *slog.Logger
	inputs  map[string]*pins.Input
	outputs map[string]*pins.Output

	mu     sync.Mutex // serializes output changes, their reports and halt
	halted bool
}

// Run opens the pins and serves them until ctx ends; outputs go back to
// their safe levels when it returns.
func (m *Module) Run(ctx context.Context, c *hub.Client) error {
	cfg, err := readConfig(c)
	if err != nil {
		return err
	}
	r := &run{c: c, log: c.Logger(), inputs: map[string]*pins.Input{}, outputs: map[string]*pins.Output{}}
	defer r.halt()
	// Outputs first: a relay must be at its safe level before anything
	// else happens.
	for _, o := range cfg.outputs {
		p, err := m.pin(o.name)
		if err != nil {
			return fmt.Errorf("output %s: %w", o.name, err)
		}
		out, err := pins.NewOutput(p, o.safe)
		if err != nil {
			return fmt.Errorf("output %s: %w", o.name, err)
		}
		r.outputs[o.name] = out
	}
	for _, name := range cfg.inputs {
		p, err := m.pin(name)
		if err != nil {
			return fmt.Errorf("input %s: %w", name, err)
		}
		in, err := pins.NewInput(p, &pins.InputOpts{Debounce: cfg.debounce})
		if err != nil {
			return fmt.Errorf("input %s: %w", name, err)
		}
		r.inputs[name] = in
	}
	tw, err := c.Twin(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read module twin: %w", err)
	}
	r.applyDesired(ctx, tw.Desired.Doc)
	c.OnDesiredChange(func(ctx context.Context, patch map[string]any, _ int64) { r.applyDesired(ctx, patch) })
	c.OnMethod(SetMethod, r.onSet)
	r.report(ctx)
	r.log.Info("gpio module started", "inputs", cfg.inputs, "outputs", len(cfg.outputs), "debounce", cfg.debounce)

	var wg sync.WaitGroup
	for name, in := range r.inputs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.watch(ctx, name, in)
		}()
	}
	<-ctx.Done()
	r.halt() // closes the inputs' event channels, so the watchers end
	wg.Wait()
	return nil
}

// halt stops the inputs and puts the outputs back to their safe levels;
// calling it twice is harmless.
func (r *run) halt() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.halted {
		return
	}
	r.halted = true
	for name, in := range r.inputs {
		if err := in.Halt(); err != nil {
			r.log.Warn("halt input", "pin", name, "err", err)
		}
	}
	for name, out := range r.outputs {
		if err := out.Halt(); err != nil {
			r.log.Warn("halt output", "pin", name, "err", err)
		}
	}
}

// watch sends an event for each debounced edge of one input.
func (r *run) watch(ctx context.Context, name string, in *pins.Input) {
	for ev := range in.Events() {
		body, _ := json.Marshal(Event{Pin: name, Level: levelName(ev.Level), Time: ev.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
		m := message.New(body)
		m.System.ContentType = "application/json"
		m.System.ContentEncoding = "utf-8"
		m.System.CreationTime = ev.Time
		if err := r.c.SendOutput(ctx, Output, m); err != nil && ctx.Err() == nil {
			r.log.Warn("send event", "pin", name, "err", err)
		}
	}
}

// set drives one output; it fails for a pin that is not an output.
func (r *run) set(name string, level gpiopkg.Level) error {
	out, ok := r.outputs[name]
	if !ok {
		names := make([]string, 0, len(r.outputs))
		for n := range r.outputs {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("pin %q is not a configured output (outputs: %s)", name, strings.Join(names, ", "))
	}
	return out.Set(level)
}

func (r *run) onSet(ctx context.Context, req hub.MethodRequest) hub.MethodResponse {
	var sr setRequest
	if err := json.Unmarshal(req.Payload, &sr); err != nil || sr.Pin == "" {
		return errResponse(400, `want {"pin": "GPIO22", "level": "high"}`)
	}
	level, err := parseLevel(sr.Level)
	if err != nil {
		return errResponse(400, err.Error())
	}
	r.mu.Lock()
	err = r.set(sr.Pin, level)
	r.mu.Unlock()
	if err != nil {
		return errResponse(400, err.Error())
	}
	r.report(ctx)
	b, _ := json.Marshal(setResponse{Pin: sr.Pin, Level: levelName(r.outputs[sr.Pin].Level())})
	return hub.MethodResponse{Status: 200, Payload: b}
}

func errResponse(status int, msg string) hub.MethodResponse {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return hub.MethodResponse{Status: status, Payload: b}
}

// applyDesired sets the outputs a desired document or patch names.
func (r *run) applyDesired(ctx context.Context, doc map[string]any) {
	outs, ok := doc["outputs"].(map[string]any)
	if !ok {
		return
	}
	r.mu.Lock()
	for name, v := range outs {
		if v == nil {
			continue // a deleted member leaves the pin as it is
		}
		level, err := parseLevel(v)
		if err == nil {
			err = r.set(name, level)
		}
		if err != nil {
			r.log.Warn("ignoring desired output", "pin", name, "err", err)
		}
	}
	r.mu.Unlock()
	r.report(ctx)
}

// report writes the outputs' actual state.
func (r *run) report(ctx context.Context) {
	r.mu.Lock()
	outs := map[string]any{}
	for name, o := range r.outputs {
		outs[name] = levelName(o.Level())
	}
	r.mu.Unlock()
	if _, err := r.c.UpdateReported(ctx, map[string]any{"outputs": outs}); err != nil && ctx.Err() == nil {
		r.log.Warn("report", "err", err)
	}
}
