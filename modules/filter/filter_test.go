package filter

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// warnings is a slog handler that keeps the warnings logged, with their
// messageId attribute.
type warnings struct {
	mu  sync.Mutex
	ids []string // messageId of each warning, "" when it had none
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	id := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "messageId" {
			id = a.Value.String()
		}
		return true
	})
	w.mu.Lock()
	w.ids = append(w.ids, id)
	w.mu.Unlock()
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ids)
}

type setup struct {
	opts    *Options
	desired map[string]any
	logs    *warnings
}

// start deploys the filter on a fresh hub as in the tutorial: what module
// "sensor" sends goes to inputFromSensor, what module "legacy" sends to
// input1, and the filter's output1 goes upstream.
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
		Modules: []hub.ModuleSpec{{Name: "filter", Image: "builtin:filter", Module: New(s.opts), Desired: s.desired}},
		Routes: []*route.Route{
			hubtest.MustRoute(t, "sensorToFilter", `FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint("/modules/filter/inputs/inputFromSensor")`),
			hubtest.MustRoute(t, "legacyToFilter", `FROM /messages/modules/legacy/outputs/* INTO BrokeredEndpoint("/modules/filter/inputs/input1")`),
			hubtest.MustRoute(t, "filterToUpstream", "FROM /messages/modules/filter/outputs/output1 INTO $upstream"),
		},
	})
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	return h, rec
}

func waitReported(t *testing.T, h *hub.Hub, want float64) {
	t.Helper()
	hubtest.WaitFor(t, fmt.Sprintf("reported TemperatureThreshold %g", want), func() bool {
		tw, err := h.Twin("filter")
		return err == nil && tw.Reported.Doc["TemperatureThreshold"] == want
	})
}

// sensorMsg is a SimulatedTemperatureSensor message with an id.
func sensorMsg(id string, temp float64) *message.Message {
	m := message.New(fmt.Appendf(nil, `{"machine":{"temperature":%g,"pressure":1.5},"ambient":{"temperature":21.2,"humidity":25},"timeCreated":"2024-01-02T03:04:05.1234567Z"}`, temp))
	m.System.MessageID = id
	m.System.ContentType = "application/json"
	m.System.ContentEncoding = "utf-8"
	m.Properties["sequenceNumber"] = id
	m.Properties["batchId"] = "b"
	return m
}

func send(t *testing.T, h *hub.Hub, from string, m *message.Message) {
	t.Helper()
	output := "temperatureOutput"
	if err := h.Send(context.Background(), from, output, m); err != nil {
		t.Fatalf("send from %s: %v", from, err)
	}
}

// sendThenMarker sends the messages and then a marker far above any
// threshold, and returns the ids of what came out before the marker. The
// filter takes its input in order, so when the marker is out, everything
// before it has been filtered.
func sendThenMarker(t *testing.T, h *hub.Hub, rec *hubtest.Recorder, from string, msgs ...*message.Message) []string {
	t.Helper()
	before := len(rec.Messages())
	for _, m := range msgs {
		send(t, h, from, m)
	}
	send(t, h, from, sensorMsg("marker", 1e6))
	var out []string
	hubtest.WaitFor(t, "the marker to come through", func() bool {
		out = out[:0]
		// The filter makes new messages, which the hub gives ids of
		// their own: the sequenceNumber property tells which is which.
		for _, m := range rec.Messages()[before:] {
			out = append(out, m.Properties["sequenceNumber"])
		}
		return len(out) > 0 && out[len(out)-1] == "marker"
	})
	return out[:len(out)-1]
}

func TestDefaultThreshold(t *testing.T) {
	h, rec := start(t, setup{})
	waitReported(t, h, 25)
	got := sendThenMarker(t, h, rec, "sensor",
		sensorMsg("cold", 21.3), sensorMsg("just-below", 24.99), sensorMsg("at", 25), sensorMsg("above", 25.01), sensorMsg("hot", 101.2))
	if want := []string{"above", "hot"}; !slices.Equal(got, want) {
		t.Errorf("forwarded %q, want %q (strictly above 25)", got, want)
	}
}

func TestAlertCopiesMessage(t *testing.T) {
	h, rec := start(t, setup{})
	in := sensorMsg("hot", 30.5)
	in.Properties["custom"] = "x=1&y"
	in.System.ContentEncoding = "utf-16"
	body := string(in.Body)
	sendThenMarker(t, h, rec, "sensor", in)
	out := rec.Messages()[0]
	if string(out.Body) != body {
		t.Errorf("body = %s, want %s", out.Body, body)
	}
	want := map[string]string{"sequenceNumber": "hot", "batchId": "b", "custom": "x=1&y", "MessageType": "Alert"}
	if !mapsEqual(out.Properties, want) {
		t.Errorf("properties = %v, want %v", out.Properties, want)
	}
	s := &out.System
	if s.ContentType != "application/json" || s.ContentEncoding != "utf-16" {
		t.Errorf("contentType, contentEncoding = %q, %q; want application/json, utf-16", s.ContentType, s.ContentEncoding)
	}
	if s.ConnectionModuleID != "filter" || s.OutputName != "output1" {
		t.Errorf("alert came from %s output %q, want filter output output1", s.ConnectionModuleID, s.OutputName)
	}
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

func TestBothInputs(t *testing.T) {
	h, rec := start(t, setup{})
	if got := sendThenMarker(t, h, rec, "legacy", sensorMsg("legacy-hot", 40), sensorMsg("legacy-cold", 20)); !slices.Equal(got, []string{"legacy-hot"}) {
		t.Errorf("from input1 forwarded %q, want [legacy-hot]", got)
	}
	if got := sendThenMarker(t, h, rec, "sensor", sensorMsg("sensor-hot", 40)); !slices.Equal(got, []string{"sensor-hot"}) {
		t.Errorf("from inputFromSensor forwarded %q, want [sensor-hot]", got)
	}
}

func TestThresholdPatch(t *testing.T) {
	h, rec := start(t, setup{})
	waitReported(t, h, 25)
	patch := func(v any) {
		t.Helper()
		if _, err := h.PatchDesired("filter", map[string]any{"TemperatureThreshold": v}); err != nil {
			t.Fatal(err)
		}
	}

	patch(30.0)
	waitReported(t, h, 30)
	if got := sendThenMarker(t, h, rec, "sensor", sensorMsg("29", 29), sensorMsg("30", 30), sensorMsg("31", 31)); !slices.Equal(got, []string{"31"}) {
		t.Errorf("threshold 30: forwarded %q, want [31]", got)
	}

	patch(20) // an int, as a deployment built in Go holds it
	waitReported(t, h, 20)
	if got := sendThenMarker(t, h, rec, "sensor", sensorMsg("19", 19), sensorMsg("21", 21)); !slices.Equal(got, []string{"21"}) {
		t.Errorf("threshold 20: forwarded %q, want [21]", got)
	}

	// Not a number: ignored, the threshold stays.
	patch("warm")
	patch(map[string]any{"x": 1.0})
	if got := sendThenMarker(t, h, rec, "sensor", sensorMsg("19", 19), sensorMsg("21", 21)); !slices.Equal(got, []string{"21"}) {
		t.Errorf("after bad patches: forwarded %q, want [21]", got)
	}
	if tw, _ := h.Twin("filter"); tw.Reported.Doc["TemperatureThreshold"] != 20.0 {
		t.Errorf("reported after bad patches = %v, want 20", tw.Reported.Doc["TemperatureThreshold"])
	}

	// Deleted: back to the default.
	patch(nil)
	waitReported(t, h, 25)
	if got := sendThenMarker(t, h, rec, "sensor", sensorMsg("24", 24), sensorMsg("26", 26)); !slices.Equal(got, []string{"26"}) {
		t.Errorf("threshold deleted: forwarded %q, want [26]", got)
	}
	if st := h.ModuleStatus(); len(st) != 1 || st[0].RestartCount != 0 {
		t.Errorf("status = %+v, want no restarts", st)
	}
}

func TestThresholdAtStart(t *testing.T) {
	t.Run("desired", func(t *testing.T) {
		h, rec := start(t, setup{desired: map[string]any{"TemperatureThreshold": 60.5}})
		waitReported(t, h, 60.5)
		if got := sendThenMarker(t, h, rec, "sensor", sensorMsg("60", 60), sensorMsg("61", 61)); !slices.Equal(got, []string{"61"}) {
			t.Errorf("forwarded %q, want [61]", got)
		}
	})
	t.Run("options", func(t *testing.T) {
		h, _ := start(t, setup{opts: &Options{Threshold: 90}})
		waitReported(t, h, 90)
	})
	t.Run("desired over options", func(t *testing.T) {
		h, _ := start(t, setup{opts: &Options{Threshold: 90}, desired: map[string]any{"TemperatureThreshold": 0.0}})
		waitReported(t, h, 0)
	})
}

func TestBadBodiesSkipped(t *testing.T) {
	lg := &warnings{}
	h, rec := start(t, setup{logs: lg})
	var bad []*message.Message
	for i, body := range []string{
		``,
		`not json`,
		`{"machine":`,
		`[1,2]`,
		`{"ambient":{"temperature":30}}`,
		`{"machine":{}}`,
		`{"machine":{"temperature":"hot"}}`,
		`{"machine":{"temperature":null}}`,
		`{"machine":7}`,
	} {
		m := message.New([]byte(body))
		m.System.MessageID = fmt.Sprintf("bad-%d", i)
		m.Properties["sequenceNumber"] = m.System.MessageID
		bad = append(bad, m)
	}
	if got := sendThenMarker(t, h, rec, "sensor", append(bad, sensorMsg("good", 30))...); !slices.Equal(got, []string{"good"}) {
		t.Errorf("forwarded %q, want [good]", got)
	}
	logged := lg.all()
	for _, m := range bad {
		if !slices.Contains(logged, m.System.MessageID) {
			t.Errorf("no warning names message %s (%q); warnings name %q", m.System.MessageID, m.Body, logged)
		}
	}
	if st := h.ModuleStatus(); len(st) != 1 || st[0].State != hub.StateRunning || st[0].RestartCount != 0 {
		t.Errorf("status = %+v, want running without restarts", st)
	}
}
