package simtemp

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
)

// Names the module uses on the hub, the original's.
const (
	Output       = "temperatureOutput"
	ControlInput = "control"
	ResetMethod  = "reset"
)

// timeCreatedFormat is how the original's JSON serializer writes a UTC
// DateTime: seven fractional digits and a Z.
const timeCreatedFormat = "2006-01-02T15:04:05.0000000Z"

// Ticker paces the messages. The default is a *time.Ticker; tests inject
// one they drive by hand.
type Ticker interface {
	// C delivers the ticks.
	C() <-chan time.Time
	// Reset stops the ticker and restarts it with period d.
	Reset(d time.Duration)
	// Stop stops the ticker.
	Stop()
}

// Options configure a Module. A nil *Options means defaults.
type Options struct {
	// Now stamps timeCreated; default time.Now.
	Now func() time.Time
	// NewTicker starts the ticker that paces messages; default
	// time.NewTicker.
	NewTicker func(d time.Duration) Ticker
	// Rand drives the simulation. Default: a generator seeded from the
	// operating system for each run. A Rand given here is used by every
	// run of the module (one at a time), so a seed makes the sequence of
	// readings repeatable.
	Rand *rand.Rand
}

// Module is the simulated temperature sensor. One Module serves one
// deployment entry.
type Module struct {
	now       func() time.Time
	newTicker func(time.Duration) Ticker
	rng       *rand.Rand
}

var _ hub.Module = (*Module)(nil)

// New returns a simulated temperature sensor.
func New(opts *Options) *Module {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewTicker == nil {
		o.NewTicker = func(d time.Duration) Ticker { return timeTicker{time.NewTicker(d)} }
	}
	return &Module{now: o.Now, newTicker: o.NewTicker, rng: o.Rand}
}

type timeTicker struct{ t *time.Ticker }

func (t timeTicker) C() <-chan time.Time   { return t.t.C }
func (t timeTicker) Reset(d time.Duration) { t.t.Reset(d) }
func (t timeTicker) Stop()                 { t.t.Stop() }

// run is the state of one run of the module.
type run struct {
	m     *Module
	c     *hub.Client
	log   *slog.Logger
	cfg   config
	model *model
	batch string

	reset           atomic.Bool   // set by the reset method and control input, taken by the send loop
	intervalChanged chan struct{} // a new SendInterval is waiting, capacity 1

	mu  sync.Mutex
	set settings
}

// Run sends readings until ctx ends. It fails only when the environment
// holds an invalid setting.
func (m *Module) Run(ctx context.Context, c *hub.Client) error {
	cfg, err := readConfig(c)
	if err != nil {
		return err
	}
	rng := m.rng
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	r := &run{
		m:               m,
		c:               c,
		log:             c.Logger(),
		cfg:             cfg,
		model:           newModel(cfg.params, rng),
		batch:           newGUID(),
		intervalChanged: make(chan struct{}, 1),
		set:             settings{sendData: true, interval: cfg.interval},
	}

	tw, err := c.Twin(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read module twin: %w", err)
	}
	r.applyDesired(ctx, tw.Desired.Doc)

	// Patches that arrive between the twin read and here wait for the
	// handler; applying one twice is harmless.
	c.OnMethod(ResetMethod, r.onReset)
	c.OnInput(ControlInput, r.onControl)
	c.OnDesiredChange(func(ctx context.Context, patch map[string]any, _ int64) { r.applyDesired(ctx, patch) })

	limit := "unlimited"
	if cfg.messageCount >= 0 {
		limit = strconv.Itoa(cfg.messageCount)
	}
	s := r.settings()
	r.log.Info("simulated temperature sensor starting", "messages", limit, "interval", s.interval, "sendData", s.sendData, "batchId", r.batch)
	r.sendLoop(ctx)
	return nil
}

func (r *run) settings() settings {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set
}

// applyDesired applies a desired document or patch and reports the
// settings in effect.
func (r *run) applyDesired(ctx context.Context, doc map[string]any) {
	def := settings{sendData: true, interval: r.cfg.interval}
	r.mu.Lock()
	prev := r.set
	next, errs := prev.apply(doc, def)
	r.set = next
	r.mu.Unlock()
	for _, err := range errs {
		r.log.Warn("ignoring desired property", "err", err)
	}
	if next.interval != prev.interval {
		r.log.Info("send interval changed", "interval", next.interval)
		select {
		case r.intervalChanged <- struct{}{}:
		default:
		}
	}
	if next.sendData != prev.sendData {
		if next.sendData {
			r.log.Info("sending data enabled")
		} else {
			r.log.Info("sending data disabled; set desired SendData to true to start sending again")
		}
	}
	if _, err := r.c.UpdateReported(ctx, next.reported()); err != nil && ctx.Err() == nil {
		r.log.Warn("report settings", "err", err)
	}
}

func (r *run) onReset(context.Context, hub.MethodRequest) hub.MethodResponse {
	r.log.Info("direct method reset: resetting the temperature ramp")
	r.reset.Store(true)
	return hub.MethodResponse{Status: 200}
}

// onControl takes {"command":"reset"} or an array of such commands, as
// the original does. Commands are matched like the original's enum:
// "reset" or 0, "noOperation" or 1, in any case.
func (r *run) onControl(_ context.Context, m *message.Message) error {
	cmds, err := parseControl(m.Body)
	if err != nil {
		r.log.Warn("ignoring control message", "messageId", m.System.MessageID, "err", err)
		return nil
	}
	for _, cmd := range cmds {
		switch cmd {
		case cmdReset:
			r.log.Info("control command reset: resetting the temperature ramp", "messageId", m.System.MessageID)
			r.reset.Store(true)
		case cmdNoOperation:
			r.log.Info("control command noOperation", "messageId", m.System.MessageID)
		default:
			r.log.Warn("ignoring unknown control command", "messageId", m.System.MessageID, "command", cmd)
		}
	}
	return nil
}

const (
	cmdReset       = "reset"
	cmdNoOperation = "nooperation"
)

// parseControl returns the commands of a control message, lower-cased,
// with the original's numeric values turned into names.
func parseControl(body []byte) ([]string, error) {
	type command struct {
		Command json.RawMessage `json:"command"`
	}
	var cmds []command
	b := bytes.TrimSpace(body)
	if len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &cmds); err != nil {
			return nil, fmt.Errorf("body is not a JSON array of commands: %w", err)
		}
	} else {
		var c command
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf(`body is not a JSON command such as {"command":"reset"}: %w`, err)
		}
		cmds = []command{c}
	}
	out := make([]string, 0, len(cmds))
	for _, c := range cmds {
		var name string
		var num float64
		switch {
		case len(c.Command) == 0:
			return nil, fmt.Errorf(`a command has no "command" member`)
		case json.Unmarshal(c.Command, &name) == nil:
			out = append(out, strings.ToLower(name))
		case json.Unmarshal(c.Command, &num) == nil:
			switch num {
			case 0:
				out = append(out, cmdReset)
			case 1:
				out = append(out, cmdNoOperation)
			default:
				out = append(out, strconv.FormatFloat(num, 'g', -1, 64))
			}
		default:
			return nil, fmt.Errorf("command %s is neither a name nor a number", c.Command)
		}
	}
	return out, nil
}

// sendLoop sends a reading now and then once per interval until the
// message count is reached or ctx ends; then it waits for ctx.
func (r *run) sendLoop(ctx context.Context) {
	t := r.m.newTicker(r.settings().interval)
	sent := 0
	done := func() bool { return r.cfg.messageCount >= 0 && sent >= r.cfg.messageCount }
	for !done() {
		if r.reset.Swap(false) {
			r.model.reset()
		}
		rd := r.model.next()
		// As in the original, the ramp goes on while sending is off, and
		// only messages sent are numbered and counted.
		if r.settings().sendData {
			sent++
			r.send(ctx, rd, sent)
			if done() {
				break
			}
		}
		if !r.wait(ctx, t) {
			t.Stop()
			return
		}
	}
	t.Stop()
	r.log.Info("done sending messages; staying idle", "messages", sent)
	<-ctx.Done()
}

// wait waits for the next tick, restarting the ticker when the interval
// changes. It returns false when ctx ends.
func (r *run) wait(ctx context.Context, t Ticker) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C():
			return true
		case <-r.intervalChanged:
			t.Reset(r.settings().interval)
		}
	}
}

type body struct {
	Machine struct {
		Temperature float64 `json:"temperature"`
		Pressure    float64 `json:"pressure"`
	} `json:"machine"`
	Ambient struct {
		Temperature float64 `json:"temperature"`
		Humidity    int     `json:"humidity"`
	} `json:"ambient"`
	TimeCreated string `json:"timeCreated"`
}

func (r *run) send(ctx context.Context, rd reading, seq int) {
	now := r.m.now().UTC()
	var b body
	b.Machine.Temperature = rd.machineTemp
	b.Machine.Pressure = rd.machinePressure
	b.Ambient.Temperature = rd.ambientTemp
	b.Ambient.Humidity = rd.ambientHumidity
	b.TimeCreated = now.Format(timeCreatedFormat)
	data, err := json.Marshal(&b)
	if err != nil {
		// Only NaN or infinities fail, which parameters checked at start
		// cannot produce; skip the reading rather than send a bad body.
		r.log.Error("encode reading", "err", err)
		return
	}
	m := message.New(data)
	m.System.ContentType = "application/json"
	m.System.ContentEncoding = "utf-8"
	m.System.CreationTime = now
	m.Properties["sequenceNumber"] = strconv.Itoa(seq)
	m.Properties["batchId"] = r.batch
	r.log.Debug("sending message", "sequenceNumber", seq, "body", string(data))
	if err := r.c.SendOutput(ctx, Output, m); err != nil && ctx.Err() == nil {
		r.log.Warn("send reading", "sequenceNumber", seq, "err", err)
	}
}

// newGUID returns a random (version 4) GUID in its usual text form.
func newGUID() string {
	var u [16]byte
	_, _ = crand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
