package sensor

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/physic"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeDevice reads temperatures from a script and fails when told to.
type fakeDevice struct {
	mu     sync.Mutex
	temps  []float64 // °C, one per reading, the last repeats
	fail   int       // the next fail readings fail
	reads  int
	halted bool
}

func (d *fakeDevice) Sense(e *physic.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail > 0 {
		d.fail--
		return errors.New("i2c: remote I/O error")
	}
	t := d.temps[min(d.reads, len(d.temps)-1)]
	d.reads++
	e.Temperature = physic.ZeroCelsius + physic.Temperature(t*float64(physic.Celsius))
	e.Pressure = 101325 * physic.Pascal
	e.Humidity = 45 * physic.PercentRH
	return nil
}

func (d *fakeDevice) Halt() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.halted = true
	return nil
}

func (d *fakeDevice) String() string { return "fake BME280 at 0x76" }
func (d *fakeDevice) Chip() string   { return "BME280" }

type opener struct {
	mu       sync.Mutex
	dev      *fakeDevice
	failOpen int
	opened   []Config
}

func (o *opener) open(cfg Config) (Device, func() error, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.opened = append(o.opened, cfg)
	if o.failOpen > 0 {
		o.failOpen--
		return nil, nil, errors.New("bme280: no device at 0x76 on sim")
	}
	return o.dev, func() error { return nil }, nil
}

func (o *opener) opens() []Config {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Config(nil), o.opened...)
}

func start(t *testing.T, o *opener, env map[string]string, desired map[string]any, routes ...*route.Route) (*hub.Hub, *hubtest.Recorder) {
	t.Helper()
	rec := &hubtest.Recorder{}
	h := hub.New(hub.Options{DeviceID: "dev", Upstream: rec})
	t.Cleanup(func() { _ = h.Close() })
	if len(routes) == 0 {
		routes = []*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/modules/climate/outputs/telemetry INTO $upstream")}
	}
	err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "climate", Image: "builtin:sensor", Env: env, Desired: desired,
			Module: New(&Options{Open: o.open, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond})}},
		Routes: routes,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, rec
}

func body(t *testing.T, b []byte) Reading {
	t.Helper()
	var r Reading
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("body %s: %v", b, err)
	}
	return r
}

func TestTelemetryWithUnits(t *testing.T) {
	o := &opener{dev: &fakeDevice{temps: []float64{21.5}}}
	h, rec := start(t, o, map[string]string{"CHIP": "bme280", "BUS": "sim"}, map[string]any{"interval": 0.01})
	hubtest.WaitFor(t, "a reading", func() bool { return rec.Len() >= 1 })
	hubtest.WaitFor(t, "the reported reading time", func() bool {
		tw, _ := h.Twin("climate")
		last, _ := tw.Reported.Doc["lastReading"].(string)
		return last != "" && tw.Reported.Doc["chip"] == "bme280"
	})
	m := rec.Messages()[0]
	if m.System.ContentType != "application/json" || m.System.ContentEncoding != "utf-8" || m.System.OutputName != Output {
		t.Errorf("system properties = %+v", m.System)
	}
	r := body(t, m.Body)
	if r.Chip != "BME280" || r.Temperature == nil || r.Temperature.Value != 21.5 || r.Temperature.Unit != "°C" ||
		r.Pressure == nil || r.Pressure.Value != 1013.25 || r.Pressure.Unit != "hPa" ||
		r.Humidity == nil || r.Humidity.Value != 45 || r.Humidity.Unit != "%RH" || r.Time == "" {
		t.Errorf("body = %s", m.Body)
	}
	cfg := o.opens()[0]
	if cfg.Chip != "bme280" || cfg.Bus != "sim" || cfg.Address != 0x76 || cfg.Oversampling != 1 {
		t.Errorf("opened %+v", cfg)
	}
}

// TestBodyRouteSelectsHotReadings routes only readings above 25 °C, with
// a $body condition, as a deployment would.
func TestBodyRouteSelectsHotReadings(t *testing.T) {
	o := &opener{dev: &fakeDevice{temps: []float64{20, 26, 24, 30, 22}}}
	r := hubtest.MustRoute(t, "hot", "FROM /messages/modules/climate/outputs/telemetry WHERE $body.temperature.value > 25 INTO $upstream")
	_, rec := start(t, o, map[string]string{"CHIP": "bme280"}, map[string]any{"interval": 0.01}, r)
	hubtest.WaitFor(t, "the device to be read 5 times", func() bool {
		o.dev.mu.Lock()
		defer o.dev.mu.Unlock()
		return o.dev.reads >= 6
	})
	hubtest.WaitFor(t, "two hot readings", func() bool { return rec.Len() >= 2 })
	for _, m := range rec.Messages() {
		if v := body(t, m.Body).Temperature.Value; v <= 25 {
			t.Errorf("a %.1f °C reading passed the route", v)
		}
	}
	if n := rec.Len(); n != 2 {
		t.Errorf("%d readings routed, want the 2 above 25 °C", n)
	}
}

func TestBusErrorsAreRetriedAndReported(t *testing.T) {
	o := &opener{dev: &fakeDevice{temps: []float64{21}, fail: 3}, failOpen: 2}
	h, rec := start(t, o, map[string]string{"CHIP": "sht3x"}, map[string]any{"interval": 0.01})
	hubtest.WaitFor(t, "a reading after the errors", func() bool { return rec.Len() >= 1 })
	tw, err := h.Twin("climate")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := tw.Reported.Doc["errorCount"].(float64); n != 5 {
		t.Errorf("errorCount = %v, want 5 (2 failed opens, 3 failed reads)", tw.Reported.Doc["errorCount"])
	}
	if e, _ := tw.Reported.Doc["lastError"].(string); !strings.Contains(e, "remote I/O error") {
		t.Errorf("lastError = %q", e)
	}
	if id := tw.Reported.Doc["identity"]; id != "fake BME280 at 0x76" {
		t.Errorf("identity = %v", id)
	}
	if cfg := o.opens()[0]; cfg.Address != 0x44 {
		t.Errorf("SHT3x default address = %#x, want 0x44", cfg.Address)
	}
	for _, st := range h.ModuleStatus() {
		if st.RestartCount != 0 || st.State != hub.StateRunning {
			t.Errorf("module %s: %+v; a bus error must not end it", st.Name, st)
		}
	}
}

func TestDesiredProperties(t *testing.T) {
	o := &opener{dev: &fakeDevice{temps: []float64{21}}}
	h, rec := start(t, o, map[string]string{"CHIP": "bme280"}, map[string]any{"interval": 3600})
	hubtest.WaitFor(t, "the first reading", func() bool { return rec.Len() == 1 })
	// A long interval: nothing more until a patch shortens it.
	if _, err := h.PatchDesired("climate", map[string]any{"interval": 0.01, "oversampling": 4}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "readings at the new interval", func() bool { return rec.Len() >= 5 })
	hubtest.WaitFor(t, "a reopen with oversampling 4", func() bool {
		ops := o.opens()
		return len(ops) >= 2 && ops[len(ops)-1].Oversampling == 4
	})
	if _, err := h.PatchDesired("climate", map[string]any{"enabled": false}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the device to be halted", func() bool {
		o.dev.mu.Lock()
		defer o.dev.mu.Unlock()
		return o.dev.halted
	})
	n := rec.Len()
	time.Sleep(30 * time.Millisecond)
	if rec.Len() > n+1 {
		t.Errorf("%d readings while disabled", rec.Len()-n)
	}
	tw, _ := h.Twin("climate")
	if tw.Reported.Doc["enabled"] != false || tw.Reported.Doc["interval"] != 0.01 || tw.Reported.Doc["oversampling"] != 4.0 {
		t.Errorf("reported = %v", tw.Reported.Doc)
	}
}

var envCases = []struct {
	env  map[string]string
	key  string // "" when valid
	want string
}{
	{map[string]string{"CHIP": "bme280"}, "", ""},
	{map[string]string{"CHIP": "BMP280", "BUS": "I2C1", "ADDRESS": "0x77"}, "", ""},
	{map[string]string{"CHIP": "sht31", "ADDRESS": "69"}, "", ""},
	{map[string]string{}, "CHIP", "missing"},
	{map[string]string{"CHIP": "dht22"}, "CHIP", "not a supported chip"},
	{map[string]string{"CHIP": "bme280", "ADDRESS": "0x80"}, "ADDRESS", "7-bit"},
	{map[string]string{"CHIP": "bme280", "ADDRESS": "seventy"}, "ADDRESS", "7-bit"},
}

func TestCheckEnv(t *testing.T) {
	for _, tt := range envCases {
		err := CheckEnv(tt.env)
		if tt.key == "" {
			if err != nil {
				t.Errorf("CheckEnv(%v) = %v", tt.env, err)
			}
			continue
		}
		ee, ok := errors.AsType[*hub.EnvError](err)
		if !ok || ee.Key != tt.key || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckEnv(%v) = %v, want an EnvError on %s saying %q", tt.env, err, tt.key, tt.want)
		}
	}
}

func TestCheckDesired(t *testing.T) {
	for _, tt := range []struct {
		desired map[string]any
		bad     []string
	}{
		{map[string]any{"interval": 5.0, "enabled": true, "oversampling": 16.0}, nil},
		{map[string]any{"interval": nil, "enabled": nil}, nil},
		{map[string]any{"interval": "fast"}, []string{"interval"}},
		{map[string]any{"interval": 0.0}, []string{"interval"}},
		{map[string]any{"enabled": "yes", "oversampling": 3.0}, []string{"enabled", "oversampling"}},
	} {
		var got []string
		if err := CheckDesired(tt.desired); err != nil {
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				pe, ok := errors.AsType[*hub.PropertyError](e)
				if !ok {
					t.Fatalf("error %v is not a PropertyError", e)
				}
				got = append(got, pe.Name)
			}
		}
		if strings.Join(got, ",") != strings.Join(tt.bad, ",") {
			t.Errorf("CheckDesired(%v) named %v, want %v", tt.desired, got, tt.bad)
		}
	}
}

func FuzzReadConfig(f *testing.F) {
	for _, tt := range envCases {
		f.Add(tt.env["CHIP"], tt.env["BUS"], tt.env["ADDRESS"])
	}
	f.Fuzz(func(t *testing.T, chip, bus, addr string) {
		cfg, err := readConfig(hub.MapEnv{"CHIP": chip, "BUS": bus, "ADDRESS": addr})
		if err != nil {
			if _, ok := errors.AsType[*hub.EnvError](err); !ok {
				t.Errorf("error %v is not an EnvError", err)
			}
			return
		}
		if cfg.Address > 0x7f || cfg.Chip == "" {
			t.Errorf("accepted %+v", cfg)
		}
	})
}

// TestSimulatedChips runs the real drivers on the simulated bus, through
// the default opener, as `make run` does on a machine without I²C.
func TestSimulatedChips(t *testing.T) {
	for _, tt := range []struct {
		chip, want string
		pressure   bool
	}{
		{"bme280", "BME280", true},
		{"sht3x", "SHT3X", false},
	} {
		t.Run(tt.chip, func(t *testing.T) {
			rec := &hubtest.Recorder{}
			h := hub.New(hub.Options{DeviceID: "dev", Upstream: rec})
			defer h.Close()
			err := h.Deploy(hub.Deployment{
				Modules: []hub.ModuleSpec{{Name: "climate", Module: New(nil),
					Env: map[string]string{"CHIP": tt.chip, "BUS": "sim"}, Desired: map[string]any{"interval": 0.01, "oversampling": 16}}},
				Routes: []*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/modules/climate/* INTO $upstream")},
			})
			if err != nil {
				t.Fatal(err)
			}
			hubtest.WaitFor(t, "two readings", func() bool { return rec.Len() >= 2 })
			r := body(t, rec.Messages()[1].Body)
			if !strings.EqualFold(r.Chip, tt.want) || r.Temperature == nil || r.Temperature.Value < 15 || r.Temperature.Value > 30 ||
				r.Humidity == nil || r.Humidity.Value < 20 || r.Humidity.Value > 70 || (r.Pressure != nil) != tt.pressure {
				t.Errorf("reading = %s", rec.Messages()[1].Body)
			}
			if r.Pressure != nil && (r.Pressure.Value < 990 || r.Pressure.Value > 1035) {
				t.Errorf("pressure %v hPa", r.Pressure.Value)
			}
		})
	}
}
