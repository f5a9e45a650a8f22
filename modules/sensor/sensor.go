// Package sensor is the built-in module that reads one environmental
// sensor (a BME280, BMP280 or SHT3x on an I²C bus, or their simulators)
// every interval and sends what it reads as JSON telemetry on output
// "telemetry", with units in the body and contentType application/json so
// $body routes can select on it.
//
// Settings (the deployment entry's env): CHIP (bme280, bmp280 or sht3x),
// BUS (I2C1, /dev/i2c-1, 1 or sim; empty: the host's first bus, or the
// simulator when the host has none), ADDRESS (default 0x76 for the Bosch
// chips, 0x44 for the SHT3x).
//
// Desired properties: interval (seconds, default 10), enabled (default
// true), oversampling (1, 2, 4, 8 or 16; for the SHT3x 1 means low, 2–4
// medium and 8–16 high repeatability). Reported properties: chip,
// identity, interval, enabled, oversampling, lastReading, errorCount,
// lastError.
//
// A bus error is counted, reported and retried with backoff; it never
// ends the module. A device that does not answer is a clear error in the
// log and in the twin's lastError, and is looked for again with backoff.
package sensor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/physic"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// Output is the output readings are sent on.
const Output = "telemetry"

// Defaults of the desired properties.
const (
	DefaultInterval     = 10 * time.Second
	DefaultOversampling = 1
	minInterval         = 10 * time.Millisecond
)

// Device is what the module reads: an environmental sensor driver.
type Device interface {
	Sense(e *physic.Env) error
	Halt() error
	String() string
}

// Config says which device to open and how.
type Config struct {
	Chip         string // bme280, bmp280 or sht3x
	Bus          string // as hw.OpenI2C takes it
	Address      uint16
	Oversampling int // 1, 2, 4, 8 or 16
}

// Opener opens a device. The default opens the I²C bus with hw.OpenI2C
// and the chip's driver; tests give their own.
type Opener func(cfg Config) (dev Device, closeBus func() error, err error)

// Options configure a Module; nil means defaults.
type Options struct {
	Open Opener
	// Backoff paces retries after bus errors and failed opens: Initial,
	// doubling to Max. Defaults 1 s and 1 min.
	BackoffInitial, BackoffMax time.Duration
}

// Module is the sensor module.
type Module struct {
	open             Opener
	backoff, backMax time.Duration
}

var _ hub.Module = (*Module)(nil)

// New returns a sensor module.
func New(opts *Options) *Module {
	m := &Module{open: OpenI2C, backoff: time.Second, backMax: time.Minute}
	if opts != nil {
		if opts.Open != nil {
			m.open = opts.Open
		}
		if opts.BackoffInitial > 0 {
			m.backoff = opts.BackoffInitial
		}
		if opts.BackoffMax > 0 {
			m.backMax = opts.BackoffMax
		}
	}
	if m.backMax < m.backoff {
		m.backMax = m.backoff
	}
	return m
}

// settings are the desired properties in effect.
type settings struct {
	interval     time.Duration
	enabled      bool
	oversampling int
}

func defaults() settings {
	return settings{interval: DefaultInterval, enabled: true, oversampling: DefaultOversampling}
}

// CheckEnv checks the env settings without running the module.
func CheckEnv(env map[string]string) error {
	_, err := readConfig(hub.MapEnv(env))
	return err
}

// CheckDesired checks the desired properties without running the module.
func CheckDesired(desired map[string]any) error {
	_, errs := defaults().apply(desired)
	return errors.Join(errs...)
}

type envReader interface {
	Env(key string) (string, bool)
}

// readConfig reads CHIP, BUS and ADDRESS.
func readConfig(env envReader) (Config, error) {
	var cfg Config
	chip, _ := env.Env("CHIP")
	cfg.Chip = strings.ToLower(strings.TrimSpace(chip))
	switch cfg.Chip {
	case "bme280", "bmp280":
		cfg.Address = 0x76
	case "sht3x", "sht30", "sht31", "sht35":
		cfg.Chip, cfg.Address = "sht3x", 0x44
	case "":
		return Config{}, &hub.EnvError{Key: "CHIP", Err: errors.New("missing; set it to bme280, bmp280 or sht3x")}
	default:
		return Config{}, &hub.EnvError{Key: "CHIP", Err: fmt.Errorf("%q is not a supported chip; want bme280, bmp280 or sht3x", chip)}
	}
	bus, _ := env.Env("BUS")
	cfg.Bus = strings.TrimSpace(bus)
	if v, ok := env.Env("ADDRESS"); ok && strings.TrimSpace(v) != "" {
		a, err := strconv.ParseUint(strings.TrimSpace(v), 0, 16)
		if err != nil || a > 0x7f {
			return Config{}, &hub.EnvError{Key: "ADDRESS", Err: fmt.Errorf("%q is not a 7-bit I²C address (write it like 0x76)", v)}
		}
		cfg.Address = uint16(a)
	}
	cfg.Oversampling = DefaultOversampling
	return cfg, nil
}

// apply applies a desired document or patch; a member set to null goes
// back to its default. It returns what it could not apply, as
// *hub.PropertyError, and keeps the old value for those.
func (s settings) apply(doc map[string]any) (settings, []error) {
	var errs []error
	def := defaults()
	if v, ok := doc["interval"]; ok {
		if v == nil {
			s.interval = def.interval
		} else if f, ok := twin.Number(v); !ok || math.IsNaN(f) || f*float64(time.Second) < float64(minInterval) || f > 86400 {
			errs = append(errs, &hub.PropertyError{Name: "interval", Err: fmt.Errorf("%v is not a number of seconds from %g to 86400", v, minInterval.Seconds())})
		} else {
			s.interval = time.Duration(f * float64(time.Second))
		}
	}
	if v, ok := doc["enabled"]; ok {
		switch b := v.(type) {
		case nil:
			s.enabled = def.enabled
		case bool:
			s.enabled = b
		default:
			errs = append(errs, &hub.PropertyError{Name: "enabled", Err: fmt.Errorf("%v is not true or false", v)})
		}
	}
	if v, ok := doc["oversampling"]; ok {
		if v == nil {
			s.oversampling = def.oversampling
		} else if f, ok := twin.Number(v); !ok || (f != 1 && f != 2 && f != 4 && f != 8 && f != 16) {
			errs = append(errs, &hub.PropertyError{Name: "oversampling", Err: fmt.Errorf("%v is not one of 1, 2, 4, 8, 16", v)})
		} else {
			s.oversampling = int(f)
		}
	}
	return s, errs
}

// Reading is the telemetry body.
type Reading struct {
	Chip        string    `json:"chip"`
	Temperature *Quantity `json:"temperature,omitempty"`
	Pressure    *Quantity `json:"pressure,omitempty"`
	Humidity    *Quantity `json:"humidity,omitempty"`
	Time        string    `json:"time"`
}

// Quantity is a value with its unit.
type Quantity struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// round keeps readings to the chips' resolution, so bodies stay short.
func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// reading turns what the driver filled in into the body; a chip that does
// not measure something leaves it zero, and it is left out.
func reading(chip string, e *physic.Env, t time.Time) Reading {
	r := Reading{Chip: chip, Time: t.UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	if e.Temperature != 0 {
		r.Temperature = &Quantity{round(e.Temperature.Celsius(), 2), "°C"}
	}
	if e.Pressure != 0 {
		r.Pressure = &Quantity{round(float64(e.Pressure)/float64(physic.Pascal)/100, 2), "hPa"}
	}
	if e.Humidity != 0 {
		r.Humidity = &Quantity{round(float64(e.Humidity)/float64(physic.PercentRH), 2), "%RH"}
	}
	return r
}

// run is one run of the module.
type run struct {
	m   *Module
	c   *hub.Client
	log *slog.Logger
	cfg Config

	mu         sync.Mutex // guards set, errorCount and lastError: the loop and the desired handler both report
	set        settings
	errorCount int
	lastError  string
	changed    chan struct{} // settings changed, capacity 1

	lastReported time.Time // when lastReading was last reported; loop only
}

// readingReportEvery spaces the lastReading reports: a reported-property
// update per reading would be throttled by IoT Hub at short intervals.
const readingReportEvery = time.Minute

// Run reads the sensor until ctx ends.
func (m *Module) Run(ctx context.Context, c *hub.Client) error {
	cfg, err := readConfig(c)
	if err != nil {
		return err
	}
	r := &run{m: m, c: c, log: c.Logger(), cfg: cfg, set: defaults(), changed: make(chan struct{}, 1)}
	tw, err := c.Twin(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read module twin: %w", err)
	}
	r.applyDesired(tw.Desired.Doc, false)
	c.OnDesiredChange(func(ctx context.Context, patch map[string]any, _ int64) {
		r.applyDesired(patch, true)
		r.report(ctx, nil)
	})
	r.loop(ctx)
	return nil
}

func (r *run) settings() settings {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set
}

// applyDesired applies a desired document or patch; wake cuts the
// loop's current wait short so a new interval or setting takes effect at
// once.
func (r *run) applyDesired(doc map[string]any, wake bool) {
	r.mu.Lock()
	next, errs := r.set.apply(doc)
	r.set = next
	r.mu.Unlock()
	for _, err := range errs {
		r.log.Warn("ignoring desired property", "err", err)
	}
	if !wake {
		return
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// report writes the reported properties; extra adds to them.
func (r *run) report(ctx context.Context, extra map[string]any) {
	r.mu.Lock()
	s := r.set
	p := map[string]any{
		"chip":         r.cfg.Chip,
		"interval":     s.interval.Seconds(),
		"enabled":      s.enabled,
		"oversampling": s.oversampling,
		"errorCount":   r.errorCount,
		"lastError":    r.lastError,
	}
	r.mu.Unlock()
	for k, v := range extra {
		p[k] = v
	}
	if _, err := r.c.UpdateReported(ctx, p); err != nil && ctx.Err() == nil {
		r.log.Warn("report", "err", err)
	}
}

// fail counts and reports an error.
func (r *run) fail(ctx context.Context, what string, err error) {
	r.mu.Lock()
	r.errorCount++
	r.lastError = fmt.Sprintf("%s: %v", what, err)
	n := r.errorCount
	r.mu.Unlock()
	r.log.Error(what, "err", err, "chip", r.cfg.Chip, "bus", r.cfg.Bus, "address", fmt.Sprintf("%#02x", r.cfg.Address), "errors", n)
	r.report(ctx, nil)
}

// loop opens the device, reads it every interval and reopens it after
// errors, with backoff, until ctx ends.
func (r *run) loop(ctx context.Context) {
	var dev Device
	var closeBus func() error
	var opened settings
	closeDev := func() {
		if dev != nil {
			if err := dev.Halt(); err != nil {
				r.log.Warn("halt device", "err", err)
			}
			dev = nil
		}
		if closeBus != nil {
			if err := closeBus(); err != nil {
				r.log.Warn("close bus", "err", err)
			}
			closeBus = nil
		}
	}
	defer closeDev()
	backoff := r.m.backoff
	wait := time.Duration(0)
	r.report(ctx, nil)
	for {
		if !r.sleep(ctx, wait) {
			return
		}
		s := r.settings()
		if !s.enabled {
			closeDev()
			wait = time.Hour // until a desired change wakes us
			continue
		}
		if dev != nil && s.oversampling != opened.oversampling {
			closeDev() // reopen with the new oversampling
		}
		if dev == nil {
			cfg := r.cfg
			cfg.Oversampling = s.oversampling
			d, cb, err := r.m.open(cfg)
			if err != nil {
				r.fail(ctx, "open sensor", err)
				wait, backoff = backoff, min(2*backoff, r.m.backMax)
				continue
			}
			dev, closeBus, opened = d, cb, s
			r.log.Info("sensor open", "device", dev.String(), "oversampling", s.oversampling)
			r.report(ctx, map[string]any{"identity": dev.String()})
		}
		var e physic.Env
		if err := dev.Sense(&e); err != nil {
			r.fail(ctx, "read sensor", err)
			// The device may have gone away or wedged the bus: start
			// afresh after the backoff.
			closeDev()
			wait, backoff = backoff, min(2*backoff, r.m.backMax)
			continue
		}
		backoff = r.m.backoff
		now := time.Now()
		body, err := json.Marshal(reading(chipName(r.cfg.Chip, dev), &e, now))
		if err != nil {
			r.fail(ctx, "encode reading", err)
			wait = s.interval
			continue
		}
		msg := message.New(body)
		msg.System.ContentType = "application/json"
		msg.System.ContentEncoding = "utf-8"
		msg.System.CreationTime = now
		if err := r.c.SendOutput(ctx, Output, msg); err != nil && ctx.Err() == nil {
			r.log.Warn("send reading", "err", err)
		}
		if now.Sub(r.lastReported) >= readingReportEvery {
			r.lastReported = now
			r.report(ctx, map[string]any{"lastReading": now.UTC().Format(time.RFC3339Nano)})
		}
		wait = s.interval
	}
}

// chipName is the chip as the driver names it when it can tell (a BMP280
// answering where a BME280 was configured), else as configured.
func chipName(configured string, d Device) string {
	if n, ok := d.(interface{ Chip() string }); ok {
		return n.Chip()
	}
	if configured == "sht3x" {
		return "SHT3x"
	}
	return strings.ToUpper(configured)
}

// sleep waits d, or less when the settings change; false when ctx ends.
func (r *run) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-r.changed:
		return true
	}
}
