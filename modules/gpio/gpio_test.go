package gpio

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	gpiopkg "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/route"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// board is a set of simulated pins.
type board struct {
	mu   sync.Mutex
	pins map[string]*gpiotest.Pin
}

func newBoard(names ...string) *board {
	b := &board{pins: map[string]*gpiotest.Pin{}}
	for i, n := range names {
		b.pins[n] = &gpiotest.Pin{N: n, Num: i, EdgesChan: make(chan gpiopkg.Level)}
	}
	return b
}

func (b *board) pin(name string) (gpiopkg.PinIO, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pins[name]
	if !ok {
		return nil, fmt.Errorf("no pin %s", name)
	}
	return p, nil
}

func (b *board) level(name string) gpiopkg.Level { return b.pins[name].Read() }

// press drives an input through levels, each with its edge, like a
// bouncing contact.
func (b *board) press(t *testing.T, name string, levels ...gpiopkg.Level) {
	t.Helper()
	for _, l := range levels {
		select {
		case b.pins[name].EdgesChan <- l:
		case <-time.After(hubtest.Patience):
			t.Fatalf("pin %s: edge not taken", name)
		}
	}
}

func start(t *testing.T, b *board, env map[string]string, desired map[string]any) (*hub.Hub, *hubtest.Recorder) {
	t.Helper()
	rec := &hubtest.Recorder{}
	h := hub.New(hub.Options{DeviceID: "dev", Upstream: rec})
	t.Cleanup(func() { _ = h.Close() })
	err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "io", Image: "builtin:gpio", Env: env, Desired: desired, Module: New(&Options{Pin: b.pin})}},
		Routes:  []*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/modules/io/outputs/events INTO $upstream")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, rec
}

func call(t *testing.T, h *hub.Hub, payload string) hub.MethodResponse {
	t.Helper()
	var r hub.MethodResponse
	hubtest.WaitFor(t, "the set method", func() bool {
		var err error
		r, err = h.InvokeMethod(t.Context(), "dev", "io", hub.MethodRequest{Name: SetMethod, Payload: json.RawMessage(payload)}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status != 404
	})
	return r
}

func TestOutputsStartSafeAndFollowMethodAndTwin(t *testing.T) {
	b := newBoard("GPIO22", "GPIO23")
	b.pins["GPIO23"].L = gpiopkg.Low
	h, _ := start(t, b, map[string]string{"OUTPUTS": "GPIO22=low, GPIO23=high"}, nil)
	hubtest.WaitFor(t, "safe levels", func() bool { return b.level("GPIO22") == gpiopkg.Low && b.level("GPIO23") == gpiopkg.High })

	r := call(t, h, `{"pin": "GPIO22", "level": "high"}`)
	if r.Status != 200 || string(r.Payload) != `{"pin":"GPIO22","level":"high"}` || b.level("GPIO22") != gpiopkg.High {
		t.Errorf("set: %d %s, pin %v", r.Status, r.Payload, b.level("GPIO22"))
	}
	for _, bad := range []string{`{"pin": "GPIO99", "level": "high"}`, `{"pin": "GPIO22", "level": "sideways"}`, `{"level": "high"}`, `{"pin": "GPIO22"}`} {
		if r := call(t, h, bad); r.Status != 400 {
			t.Errorf("set %s: status %d, want 400", bad, r.Status)
		}
	}
	if _, err := h.PatchDesired("io", map[string]any{"outputs": map[string]any{"GPIO23": "low"}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the desired output", func() bool { return b.level("GPIO23") == gpiopkg.Low })
	hubtest.WaitFor(t, "the reported outputs", func() bool {
		tw, _ := h.Twin("io")
		outs, _ := tw.Reported.Doc["outputs"].(map[string]any)
		return outs["GPIO22"] == "high" && outs["GPIO23"] == "low"
	})
	// Stopping the module puts the relays back to safe.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if b.level("GPIO22") != gpiopkg.Low || b.level("GPIO23") != gpiopkg.High {
		t.Errorf("after stop: GPIO22 %v, GPIO23 %v; want the safe levels", b.level("GPIO22"), b.level("GPIO23"))
	}
}

func TestInputEdgesBecomeEvents(t *testing.T) {
	b := newBoard("GPIO17")
	_, rec := start(t, b, map[string]string{"INPUTS": "GPIO17", "DEBOUNCE": "20ms"}, nil)
	// A bouncing press: one event, high.
	b.press(t, "GPIO17", gpiopkg.High, gpiopkg.Low, gpiopkg.High, gpiopkg.Low, gpiopkg.High)
	hubtest.WaitFor(t, "the press event", func() bool { return rec.Len() == 1 })
	time.Sleep(60 * time.Millisecond)
	b.press(t, "GPIO17", gpiopkg.Low)
	hubtest.WaitFor(t, "the release event", func() bool { return rec.Len() == 2 })
	var evs []Event
	for _, m := range rec.Messages() {
		var ev Event
		if err := json.Unmarshal(m.Body, &ev); err != nil {
			t.Fatal(err)
		}
		if m.System.ContentType != "application/json" || m.System.OutputName != Output {
			t.Errorf("system properties %+v", m.System)
		}
		evs = append(evs, ev)
	}
	if evs[0].Pin != "GPIO17" || evs[0].Level != "high" || evs[1].Level != "low" || evs[0].Time == "" {
		t.Errorf("events = %+v", evs)
	}
}

var envCases = []struct {
	env map[string]string
	key string
}{
	{map[string]string{"INPUTS": "GPIO17", "OUTPUTS": "GPIO22=low"}, ""},
	{map[string]string{"INPUTS": "GPIO17,sim:GPIO27", "DEBOUNCE": "50"}, ""},
	{map[string]string{}, "INPUTS"},
	{map[string]string{"OUTPUTS": "GPIO22"}, "OUTPUTS"},
	{map[string]string{"OUTPUTS": "GPIO22=maybe"}, "OUTPUTS"},
	{map[string]string{"INPUTS": "GPIO22", "OUTPUTS": "GPIO22=low"}, "OUTPUTS"},
	{map[string]string{"INPUTS": "GPIO17", "DEBOUNCE": "soon"}, "DEBOUNCE"},
	{map[string]string{"INPUTS": "GPIO17", "DEBOUNCE": "1m"}, "DEBOUNCE"},
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
		if ee, ok := errors.AsType[*hub.EnvError](err); !ok || ee.Key != tt.key {
			t.Errorf("CheckEnv(%v) = %v, want an EnvError on %s", tt.env, err, tt.key)
		}
	}
	if err := CheckDesired(map[string]any{"outputs": map[string]any{"GPIO22": "purple"}}); err == nil || !strings.Contains(err.Error(), "GPIO22") {
		t.Errorf("CheckDesired accepted a bad level: %v", err)
	}
	if err := CheckDesired(map[string]any{"outputs": map[string]any{"GPIO22": true, "GPIO23": "low"}}); err != nil {
		t.Errorf("CheckDesired: %v", err)
	}
}

func FuzzReadConfig(f *testing.F) {
	for _, tt := range envCases {
		f.Add(tt.env["INPUTS"], tt.env["OUTPUTS"], tt.env["DEBOUNCE"])
	}
	f.Fuzz(func(t *testing.T, in, out, deb string) {
		cfg, err := readConfig(hub.MapEnv{"INPUTS": in, "OUTPUTS": out, "DEBOUNCE": deb})
		if err != nil {
			if _, ok := errors.AsType[*hub.EnvError](err); !ok {
				t.Errorf("error %v is not an EnvError", err)
			}
			return
		}
		if len(cfg.inputs)+len(cfg.outputs) == 0 || cfg.debounce < 0 {
			t.Errorf("accepted %+v", cfg)
		}
	})
}
