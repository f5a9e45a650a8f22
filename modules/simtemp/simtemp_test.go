package simtemp

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// patience bounds every wait; generous for qemu-user and -race.
const patience = hubtest.Patience

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// logs is a slog handler that keeps the messages logged.
type logs struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logs) WithGroup(string) slog.Handler      { return l }

func (l *logs) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.msgs, msg)
}

// fakeTicker is a Ticker the test drives: tick sends one tick.
type fakeTicker struct {
	c chan time.Time

	mu      sync.Mutex
	period  []time.Duration // the first period and each Reset
	stopped bool
}

func (f *fakeTicker) C() <-chan time.Time { return f.c }
func (f *fakeTicker) Reset(d time.Duration) {
	f.mu.Lock()
	f.period = append(f.period, d)
	f.mu.Unlock()
}
func (f *fakeTicker) Stop() {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
}

func (f *fakeTicker) periods() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.period)
}

func (f *fakeTicker) isStopped() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopped
}

// tick hands the module one tick; it returns once the send loop took it,
// that is once the loop has finished the previous message.
func (f *fakeTicker) tick(t *testing.T) {
	t.Helper()
	select {
	case f.c <- time.Time{}:
	case <-time.After(patience):
		t.Fatal("the send loop did not take a tick")
	}
}

// tickers hands out fake tickers and lets the test wait for them.
type tickers chan *fakeTicker

func (ts tickers) newTicker(d time.Duration) Ticker {
	f := &fakeTicker{c: make(chan time.Time), period: []time.Duration{d}}
	ts <- f
	return f
}

func (ts tickers) next(t *testing.T) *fakeTicker {
	t.Helper()
	select {
	case f := <-ts:
		return f
	case <-time.After(patience):
		t.Fatal("the module did not start its ticker")
		return nil
	}
}

type setup struct {
	opts    *Options
	desired map[string]any
	env     map[string]string
	policy  hub.RestartPolicy
	logs    *logs
}

// start deploys simtemp on a fresh hub, with its outputs routed upstream
// and the output of a module "ctl" routed to its control input.
func start(t *testing.T, s setup) (*hub.Hub, *hubtest.Recorder) {
	t.Helper()
	rec := &hubtest.Recorder{}
	var logger *slog.Logger
	if s.logs != nil {
		logger = slog.New(s.logs)
	}
	h := hub.New(hub.Options{DeviceID: "dev", Upstream: rec, Logger: logger})
	t.Cleanup(func() { _ = h.Close() })
	err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{
			Name: "simtemp", Image: "builtin:simtemp", Module: New(s.opts),
			Desired: s.desired, Env: s.env, RestartPolicy: s.policy,
		}},
		Routes: []*route.Route{
			hubtest.MustRoute(t, "up", "FROM /messages/modules/simtemp/outputs/* INTO $upstream"),
			hubtest.MustRoute(t, "ctl", `FROM /messages/modules/ctl/outputs/* INTO BrokeredEndpoint("/modules/simtemp/inputs/control")`),
		},
	})
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	return h, rec
}

func waitMessages(t *testing.T, rec *hubtest.Recorder, n int) []*message.Message {
	t.Helper()
	hubtest.WaitFor(t, strconv.Itoa(n)+" messages upstream", func() bool { return rec.Len() >= n })
	return rec.Messages()
}

func waitReported(t *testing.T, h *hub.Hub, key string, want any) {
	t.Helper()
	hubtest.WaitFor(t, "reported "+key+" = "+strconv.Quote(toString(want)), func() bool {
		tw, err := h.Twin("simtemp")
		return err == nil && tw.Reported.Doc[key] == want
	})
}

func toString(v any) string { b, _ := json.Marshal(v); return string(b) }

// temp is the machine temperature in a message.
func temp(t *testing.T, m *message.Message) float64 {
	t.Helper()
	var b struct {
		Machine struct{ Temperature float64 }
	}
	if err := json.Unmarshal(m.Body, &b); err != nil {
		t.Fatalf("body %q: %v", m.Body, err)
	}
	return b.Machine.Temperature
}

func seq(t *testing.T, m *message.Message) int {
	t.Helper()
	n, err := strconv.Atoi(m.Properties["sequenceNumber"])
	if err != nil {
		t.Fatalf("sequenceNumber %q: %v", m.Properties["sequenceNumber"], err)
	}
	return n
}

func moduleStatus(t *testing.T, h *hub.Hub) hub.ModuleStatus {
	t.Helper()
	for _, st := range h.ModuleStatus() {
		if st.Name == "simtemp" {
			return st
		}
	}
	t.Fatal("simtemp is not in the module status")
	return hub.ModuleStatus{}
}

func TestMessages(t *testing.T) {
	clock := time.Date(2024, 5, 6, 7, 8, 9, 123456700, time.FixedZone("CEST", 2*3600))
	h, rec := start(t, setup{
		opts:    &Options{Now: func() time.Time { return clock }, Rand: rand.New(rand.NewPCG(1, 2))},
		desired: map[string]any{"SendInterval": 0.005},
		env:     map[string]string{"MessageCount": "5"},
	})
	msgs := waitMessages(t, rec, 5)
	batch := msgs[0].Properties["batchId"]
	if !guidRE.MatchString(batch) {
		t.Errorf("batchId = %q, want a GUID", batch)
	}
	for i, m := range msgs {
		if got, want := m.Properties, map[string]string{"sequenceNumber": strconv.Itoa(i + 1), "batchId": batch}; !mapsEqual(got, want) {
			t.Errorf("message %d properties = %v, want %v", i, got, want)
		}
		s := &m.System
		if s.ContentType != "application/json" || s.ContentEncoding != "utf-8" {
			t.Errorf("message %d contentType, contentEncoding = %q, %q; want application/json, utf-8", i, s.ContentType, s.ContentEncoding)
		}
		if s.ConnectionDeviceID != "dev" || s.ConnectionModuleID != "simtemp" || s.OutputName != "temperatureOutput" {
			t.Errorf("message %d came from %s/%s output %q, want dev/simtemp output temperatureOutput", i, s.ConnectionDeviceID, s.ConnectionModuleID, s.OutputName)
		}
		if !s.CreationTime.Equal(clock) {
			t.Errorf("message %d creation time = %v, want %v", i, s.CreationTime, clock)
		}
		checkBody(t, m.Body)
	}
	if got, want := string(msgs[0].Body), `"timeCreated":"2024-05-06T05:08:09.1234567Z"}`; !strings.HasSuffix(got, want) {
		t.Errorf("body = %s, want it to end with %s", got, want)
	}
	if t0 := temp(t, msgs[0]); t0 < 20.75 || t0 >= 22.25 {
		t.Errorf("first temperature = %g, want one step from 21", t0)
	}
	waitReported(t, h, "SendInterval", 0.005)
	waitReported(t, h, "SendData", true)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// checkBody checks the body's schema exactly: the members, their order and
// their types.
func checkBody(t *testing.T, body []byte) {
	t.Helper()
	re := regexp.MustCompile(`^\{"machine":\{"temperature":(-?[0-9.e+-]+),"pressure":(-?[0-9.e+-]+)\},"ambient":\{"temperature":(-?[0-9.e+-]+),"humidity":([0-9]+)\},"timeCreated":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z)"\}$`)
	g := re.FindSubmatch(body)
	if g == nil {
		t.Fatalf("body %s does not have the SimulatedTemperatureSensor schema", body)
	}
	f := func(b []byte) float64 { x, _ := strconv.ParseFloat(string(b), 64); return x }
	mt, mp, at := f(g[1]), f(g[2]), f(g[3])
	hum, _ := strconv.Atoi(string(g[4]))
	if want := 1 + (mt-21)*9/79; mp < want-1e-9 || mp > want+1e-9 {
		t.Errorf("pressure %g at %g °C, want %g", mp, mt, want)
	}
	if at < 20.5 || at >= 21.5 || hum < 24 || hum > 26 {
		t.Errorf("ambient %g °C %d %%, want 21 ± 0.5 °C and 24–26 %%", at, hum)
	}
}

func TestMessageCountThenIdle(t *testing.T) {
	for _, tc := range []struct {
		count string
		ticks int
		want  int
	}{{"3", 2, 3}, {"0", 0, 0}, {"1", 0, 1}} {
		t.Run("MessageCount="+tc.count, func(t *testing.T) {
			ts := make(tickers, 1)
			h, rec := start(t, setup{opts: &Options{NewTicker: ts.newTicker}, env: map[string]string{"MessageCount": tc.count}})
			ft := ts.next(t)
			for range tc.ticks {
				ft.tick(t)
			}
			hubtest.WaitFor(t, "the send loop to finish", ft.isStopped)
			if got := rec.Len(); got != tc.want {
				t.Errorf("sent %d messages, want %d", got, tc.want)
			}
			// Idle, not exited: still running, never restarted, still
			// answering.
			resp, err := h.InvokeMethod(context.Background(), "dev", "simtemp", hub.MethodRequest{Name: "reset"}, 0)
			if err != nil || resp.Status != 200 {
				t.Fatalf("reset after the last message = %+v, %v; want status 200", resp, err)
			}
			if st := moduleStatus(t, h); st.State != hub.StateRunning || st.RestartCount != 0 {
				t.Errorf("status after the last message = %+v, want running without restarts", st)
			}
		})
	}
}

func TestUnlimited(t *testing.T) {
	ts := make(tickers, 1)
	_, rec := start(t, setup{opts: &Options{NewTicker: ts.newTicker}, env: map[string]string{"MessageCount": "-1"}})
	ft := ts.next(t)
	for range 600 {
		ft.tick(t)
	}
	msgs := waitMessages(t, rec, 601)
	if got := seq(t, msgs[600]); got != 601 {
		t.Errorf("sequenceNumber of message 601 = %d", got)
	}
	if ft.isStopped() {
		t.Error("the ticker stopped with MessageCount -1")
	}
}

func TestSendDataOffAndOn(t *testing.T) {
	ts := make(tickers, 1)
	h, rec := start(t, setup{opts: &Options{NewTicker: ts.newTicker}, env: map[string]string{"MessageCount": "-1"}})
	ft := ts.next(t)
	ft.tick(t)
	waitMessages(t, rec, 2)
	waitReported(t, h, "SendData", true)

	if _, err := h.PatchDesired("simtemp", map[string]any{"SendData": false}); err != nil {
		t.Fatal(err)
	}
	waitReported(t, h, "SendData", false)
	ft.tick(t) // the loop is past the message it may have been sending
	n := rec.Len()
	for range 5 {
		ft.tick(t)
	}
	if got := rec.Len(); got != n {
		t.Fatalf("with SendData false %d messages were sent", got-n)
	}

	if _, err := h.PatchDesired("simtemp", map[string]any{"SendData": true}); err != nil {
		t.Fatal(err)
	}
	waitReported(t, h, "SendData", true)
	ft.tick(t)
	ft.tick(t)
	msgs := waitMessages(t, rec, n+1)
	for i, m := range msgs {
		if got := seq(t, m); got != i+1 {
			t.Errorf("message %d has sequenceNumber %d, want %d (no gaps while paused)", i, got, i+1)
		}
	}
}

func TestSendDataFalseAtStart(t *testing.T) {
	ts := make(tickers, 1)
	h, rec := start(t, setup{
		opts:    &Options{NewTicker: ts.newTicker},
		desired: map[string]any{"SendData": false, "SendInterval": 0.5},
	})
	ft := ts.next(t)
	waitReported(t, h, "SendData", false)
	waitReported(t, h, "SendInterval", 0.5)
	if p := ft.periods(); p[len(p)-1] != 500*time.Millisecond {
		t.Errorf("ticker periods = %v, want the desired 500ms", p)
	}
	ft.tick(t)
	ft.tick(t)
	if got := rec.Len(); got != 0 {
		t.Errorf("sent %d messages with SendData false", got)
	}
}

func TestSendIntervalPatch(t *testing.T) {
	ts := make(tickers, 1)
	h, _ := start(t, setup{opts: &Options{NewTicker: ts.newTicker}, env: map[string]string{"MessageDelay": "00:00:07"}})
	ft := ts.next(t)
	if got := ft.periods(); !slices.Equal(got, []time.Duration{7 * time.Second}) {
		t.Errorf("first period = %v, want MessageDelay 7s", got)
	}
	waitReported(t, h, "SendInterval", 7.0)
	if _, err := h.PatchDesired("simtemp", map[string]any{"SendInterval": 2.5}); err != nil {
		t.Fatal(err)
	}
	waitReported(t, h, "SendInterval", 2.5)
	hubtest.WaitFor(t, "the ticker to restart with 2.5s", func() bool { return slices.Contains(ft.periods(), 2500*time.Millisecond) })

	// A bad value is ignored; the last good one stays in effect.
	if _, err := h.PatchDesired("simtemp", map[string]any{"SendInterval": "never", "SendData": false}); err != nil {
		t.Fatal(err)
	}
	waitReported(t, h, "SendData", false)
	if tw, _ := h.Twin("simtemp"); tw.Reported.Doc["SendInterval"] != 2.5 {
		t.Errorf("reported SendInterval after a bad patch = %v, want 2.5", tw.Reported.Doc["SendInterval"])
	}

	// Deleting it restores MessageDelay.
	if _, err := h.PatchDesired("simtemp", map[string]any{"SendInterval": nil}); err != nil {
		t.Fatal(err)
	}
	waitReported(t, h, "SendInterval", 7.0)
}

// TestSendIntervalPace checks with the real clock that a shorter interval
// takes effect at once rather than after the current wait.
func TestSendIntervalPace(t *testing.T) {
	h, rec := start(t, setup{desired: map[string]any{"SendInterval": 3600}, env: map[string]string{"MessageCount": "-1"}})
	waitMessages(t, rec, 1) // the first message goes at once
	waitReported(t, h, "SendInterval", 3600.0)
	if _, err := h.PatchDesired("simtemp", map[string]any{"SendInterval": 0.01}); err != nil {
		t.Fatal(err)
	}
	waitReported(t, h, "SendInterval", 0.01)
	start := time.Now()
	waitMessages(t, rec, 6)
	if d := time.Since(start); d > patience/2 {
		t.Errorf("5 messages at 10ms took %s", d)
	}
}

// climb ticks until the temperature is well above the start, and returns
// the messages so far.
func climb(t *testing.T, ft *fakeTicker, rec *hubtest.Recorder) []*message.Message {
	t.Helper()
	for i := 0; ; i++ {
		msgs := waitMessages(t, rec, i+1)
		if temp(t, msgs[i]) > 35 {
			return msgs
		}
		if i > 200 {
			t.Fatalf("temperature did not climb past 35 in %d messages", i)
		}
		ft.tick(t)
	}
}

func TestResetMethod(t *testing.T) {
	ts := make(tickers, 1)
	h, rec := start(t, setup{opts: &Options{NewTicker: ts.newTicker, Rand: rand.New(rand.NewPCG(5, 5))}, env: map[string]string{"MessageCount": "-1"}})
	ft := ts.next(t)
	n := len(climb(t, ft, rec))

	resp, err := h.InvokeMethod(context.Background(), "dev", "simtemp", hub.MethodRequest{Name: "reset"}, 0)
	if err != nil || resp.Status != 200 {
		t.Fatalf("reset = %+v, %v; want status 200", resp, err)
	}
	ft.tick(t)
	msgs := waitMessages(t, rec, n+1)
	if got := temp(t, msgs[n]); got < 20.75 || got >= 22.25 {
		t.Errorf("temperature after reset = %g, want back at the start, in [20.75, 22.25)", got)
	}
	if got := seq(t, msgs[n]); got != n+1 {
		t.Errorf("sequenceNumber after reset = %d, want %d (reset restarts the ramp, not the count)", got, n+1)
	}
}

func TestControlInput(t *testing.T) {
	for _, body := range []string{`{"command":"reset"}`, `[{"command":"noOperation"},{"command":"Reset"}]`, `{"command":0}`} {
		t.Run(body, func(t *testing.T) {
			ts := make(tickers, 1)
			lg := &logs{}
			h, rec := start(t, setup{opts: &Options{NewTicker: ts.newTicker}, env: map[string]string{"MessageCount": "-1"}, logs: lg})
			ft := ts.next(t)
			n := len(climb(t, ft, rec))

			// Ignored first: an unknown command and a body that is not JSON.
			for _, b := range []string{`{"command":"explode"}`, `not json`} {
				if err := h.Send(context.Background(), "ctl", "out", message.New([]byte(b))); err != nil {
					t.Fatal(err)
				}
			}
			hubtest.WaitFor(t, "the unknown command to be logged", func() bool { return lg.has("ignoring unknown control command") })
			hubtest.WaitFor(t, "the bad body to be logged", func() bool { return lg.has("ignoring control message") })
			ft.tick(t)
			msgs := waitMessages(t, rec, n+1)
			if got := temp(t, msgs[n]); got < 30 {
				t.Fatalf("temperature after ignored commands = %g, want it still high", got)
			}

			if err := h.Send(context.Background(), "ctl", "out", message.New([]byte(body))); err != nil {
				t.Fatal(err)
			}
			hubtest.WaitFor(t, "the reset to be logged", func() bool { return lg.has("control command reset: resetting the temperature ramp") })
			ft.tick(t)
			msgs = waitMessages(t, rec, n+2)
			if got := temp(t, msgs[n+1]); got < 20.75 || got >= 22.25 {
				t.Errorf("temperature after control reset = %g, want back at the start", got)
			}
			if st := moduleStatus(t, h); st.State != hub.StateRunning || st.RestartCount != 0 {
				t.Errorf("status = %+v, want running without restarts", st)
			}
		})
	}
}

func TestInvalidEnv(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"MessageCount", "abc"},
		{"MessageDelay", "5"},
		{"machineTempMin", "warm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, rec := start(t, setup{env: map[string]string{tc.name: tc.value}, policy: hub.RestartNever})
			hubtest.WaitFor(t, "the module to fail", func() bool { return moduleStatus(t, h).State == hub.StateFailed })
			st := moduleStatus(t, h)
			if !strings.Contains(st.LastExit, tc.name) || !strings.Contains(st.LastExit, strconv.Quote(tc.value)) {
				t.Errorf("LastExit = %q, want it to name %s and its value %q", st.LastExit, tc.name, tc.value)
			}
			if rec.Len() != 0 {
				t.Errorf("a misconfigured module sent %d messages", rec.Len())
			}
		})
	}
}

func TestRestartStartsOver(t *testing.T) {
	h, rec := start(t, setup{desired: map[string]any{"SendInterval": 3600}, env: map[string]string{"MessageCount": "-1"}})
	first := waitMessages(t, rec, 1)[0]
	// A new deployment with a different version restarts the module: a new
	// run numbers from 1 with a new batch.
	err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "simtemp", Image: "builtin:simtemp", Version: "2", Module: New(nil),
			Desired: map[string]any{"SendInterval": 3600}, Env: map[string]string{"MessageCount": "-1"}}},
		Routes: []*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/modules/simtemp/outputs/* INTO $upstream")},
	})
	if err != nil {
		t.Fatal(err)
	}
	second := waitMessages(t, rec, 2)[1]
	if seq(t, second) != 1 || second.Properties["batchId"] == first.Properties["batchId"] {
		t.Errorf("after a restart: sequenceNumber %s batchId %s (before: %s); want 1 and a new batch",
			second.Properties["sequenceNumber"], second.Properties["batchId"], first.Properties["batchId"])
	}
	if !bytes.Contains(second.Body, []byte(`"machine"`)) {
		t.Errorf("body %s", second.Body)
	}
}
