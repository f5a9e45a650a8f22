package filter

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// Names the module uses on the hub, the tutorial's.
const (
	Input       = "inputFromSensor"
	LegacyInput = "input1"
	Output      = "output1"

	// ThresholdProperty is the desired and reported property that holds
	// the threshold.
	ThresholdProperty = "TemperatureThreshold"
)

// DefaultThreshold is the tutorial's threshold, in °C.
const DefaultThreshold = 25.0

// Options configure a Module. A nil *Options means defaults.
type Options struct {
	// Threshold applies while the desired properties do not set
	// TemperatureThreshold. Zero means DefaultThreshold; set the desired
	// property for a threshold of zero.
	Threshold float64
}

// Module is the temperature filter. One Module serves one deployment entry.
type Module struct {
	def float64
}

var _ hub.Module = (*Module)(nil)

// New returns a temperature filter.
func New(opts *Options) *Module {
	m := &Module{def: DefaultThreshold}
	if opts != nil && opts.Threshold != 0 {
		m.def = opts.Threshold
	}
	return m
}

// run is the state of one run.
type run struct {
	def float64
	c   *hub.Client

	mu        sync.Mutex
	threshold float64
}

// Run filters messages until ctx ends.
func (m *Module) Run(ctx context.Context, c *hub.Client) error {
	r := &run{def: m.def, c: c, threshold: m.def}
	tw, err := c.Twin(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read module twin: %w", err)
	}
	r.applyDesired(tw.Desired.Doc)
	r.report(ctx)

	// Patches that arrive between the twin read and here wait for the
	// handler; applying one twice is harmless.
	c.OnDesiredChange(func(ctx context.Context, patch map[string]any, _ int64) {
		if r.applyDesired(patch) {
			r.report(ctx)
		}
	})
	c.OnInput(Input, r.filter)
	c.OnInput(LegacyInput, r.filter)
	c.Logger().Info("temperature filter starting", "threshold", r.current())
	<-ctx.Done()
	return nil
}

func (r *run) current() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.threshold
}

// applyDesired applies a desired document or patch. It returns whether
// the document mentions the threshold, which then needs reporting.
func (r *run) applyDesired(doc map[string]any) bool {
	v, ok := doc[ThresholdProperty]
	if !ok {
		return false
	}
	next := r.def
	if v != nil {
		f, ok := twin.Number(v)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
			r.c.Logger().Warn("ignoring desired property: not a number", "property", ThresholdProperty, "value", fmt.Sprint(v))
			return true
		}
		next = f
	}
	r.mu.Lock()
	prev := r.threshold
	r.threshold = next
	r.mu.Unlock()
	if prev != next {
		r.c.Logger().Info("temperature threshold changed", "threshold", next)
	}
	return true
}

func (r *run) report(ctx context.Context) {
	if _, err := r.c.UpdateReported(ctx, map[string]any{ThresholdProperty: r.current()}); err != nil && ctx.Err() == nil {
		r.c.Logger().Warn("report threshold", "err", err)
	}
}

// reading is the part of a SimulatedTemperatureSensor body the filter
// looks at.
type reading struct {
	Machine *struct {
		Temperature *float64 `json:"temperature"`
	} `json:"machine"`
}

// filter forwards m to the output as an alert when its machine temperature
// exceeds the threshold.
func (r *run) filter(ctx context.Context, m *message.Message) error {
	log := r.c.Logger()
	if !json.Valid(m.Body) {
		log.Warn("skipping message: body is not JSON", "messageId", m.System.MessageID, "input", m.System.InputName)
		return nil
	}
	var rd reading
	if err := json.Unmarshal(m.Body, &rd); err != nil || rd.Machine == nil || rd.Machine.Temperature == nil {
		log.Warn("skipping message: body has no number at machine.temperature", "messageId", m.System.MessageID, "input", m.System.InputName)
		return nil
	}
	t, threshold := *rd.Machine.Temperature, r.current()
	if t <= threshold {
		return nil
	}
	log.Debug("machine temperature exceeds threshold", "temperature", t, "threshold", threshold, "messageId", m.System.MessageID)
	out := message.New(m.Body)
	for k, v := range m.Properties {
		out.Properties[k] = v
	}
	out.Properties["MessageType"] = "Alert"
	out.System.ContentType = m.System.ContentType
	out.System.ContentEncoding = m.System.ContentEncoding
	if err := r.c.SendOutput(ctx, Output, out); err != nil {
		return fmt.Errorf("forward alert on %s: %w", Output, err)
	}
	return nil
}
