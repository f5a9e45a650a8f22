package hub_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/store"
)

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// down is an upstream that refuses everything, like a cut uplink.
type down struct{}

func (down) Name() string { return "$upstream" }
func (down) Deliver(context.Context, *message.Message, hub.Delivery) error {
	return errors.New("uplink down")
}

// TestDurableUpstreamSurvivesRestart sends while the upstream refuses,
// restarts hub and store, and checks that everything arrives, once, in
// priority order.
func TestDurableUpstreamSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	routes := func(t *testing.T) []*route.Route {
		hi := hubtest.MustRoute(t, "alerts", "FROM /messages/* WHERE kind = 'alert' INTO $upstream")
		hi.Priority = 0
		lo := hubtest.MustRoute(t, "all", "FROM /messages/* INTO $upstream")
		lo.Priority = 5
		return []*route.Route{hi, lo}
	}

	st := openStore(t, path)
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: down{}, Store: st})
	h.SetRoutes(routes(t))
	for i := range 10 {
		m := message.New(fmt.Appendf(nil, "%d", i))
		if i%3 == 0 {
			m.Properties["kind"] = "alert"
		}
		if err := h.SendDevice(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	// Send returned: the messages are committed.
	es, err := st.EndpointStats(hub.UpstreamQueue)
	if err != nil || es.Queued != 10 {
		t.Fatalf("queued %d (%v), want 10 committed before Send returned", es.Queued, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, path)
	defer st.Close()
	up := &hubtest.Recorder{}
	h = hub.New(hub.Options{DeviceID: "gw1", Upstream: up, Store: st})
	defer h.Close()
	hubtest.WaitFor(t, "the backlog", func() bool { return up.Len() == 10 })
	var got []string
	for _, m := range up.Messages() {
		got = append(got, string(m.Body))
	}
	// Alerts (priority 0) first, then the rest, each in order.
	if want := "[0 3 6 9 1 2 4 5 7 8]"; fmt.Sprint(got) != want {
		t.Errorf("delivered %v, want %s", got, want)
	}
	if d := up.Deliveries()[0]; d.Priority != 0 {
		t.Errorf("first delivery priority %d, want 0", d.Priority)
	}
	hubtest.WaitFor(t, "the acknowledgements", func() bool {
		es, err := st.EndpointStats(hub.UpstreamQueue)
		return err == nil && es.Queued == 0
	})
	time.Sleep(20 * time.Millisecond)
	if up.Len() != 10 {
		t.Errorf("%d deliveries, want each message once", up.Len())
	}
}

// flaky refuses its first n deliveries.
type flaky struct {
	mu sync.Mutex
	n  int
	hubtest.Recorder
}

func (f *flaky) Deliver(ctx context.Context, m *message.Message, d hub.Delivery) error {
	f.mu.Lock()
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return errors.New("throttled")
	}
	f.mu.Unlock()
	return f.Recorder.Deliver(ctx, m, d)
}

func TestPumpRetriesInOrder(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer st.Close()
	up := &flaky{n: 3}
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: up, Store: st})
	defer h.Close()
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "all", "FROM /* INTO $upstream")})
	for i := range 5 {
		if err := h.SendDevice(context.Background(), message.New(fmt.Appendf(nil, "%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	hubtest.WaitFor(t, "all five", func() bool { return up.Len() == 5 })
	var got []string
	for _, m := range up.Messages() {
		got = append(got, string(m.Body))
	}
	if fmt.Sprint(got) != "[0 1 2 3 4]" {
		t.Errorf("delivered %v, want 0..4 in order, each once", got)
	}
}

// TestTwinCachedAcrossRestart checks that a module restarted with the
// same manifest keeps desired changes made by patches and its reported
// properties, and that a changed manifest still applies what it changed.
func TestTwinCachedAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	deploy := func(h *hub.Hub, desired map[string]any) {
		t.Helper()
		if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: idle, Desired: desired}}}); err != nil {
			t.Fatal(err)
		}
	}
	reporter := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		if _, err := c.UpdateReported(ctx, map[string]any{"seen": true}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})

	st := openStore(t, path)
	h := hub.New(hub.Options{DeviceID: "gw1", Store: st})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: reporter, Desired: map[string]any{"a": 1.0}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.PatchDesired("m", map[string]any{"b": 2.0}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the report", func() bool { tw, _ := h.Twin("m"); return tw.Reported.Doc["seen"] == true })
	before, _ := h.Twin("m")
	_ = h.Close()
	_ = st.Close()

	st = openStore(t, path)
	defer st.Close()
	h = hub.New(hub.Options{DeviceID: "gw1", Store: st})
	defer h.Close()
	deploy(h, map[string]any{"a": 1.0})
	tw, _ := h.Twin("m")
	if tw.Desired.Doc["a"] != 1.0 || tw.Desired.Doc["b"] != 2.0 || tw.Desired.Version != before.Desired.Version {
		t.Errorf("after restart desired = %v v%d, want a=1 b=2 v%d", tw.Desired.Doc, tw.Desired.Version, before.Desired.Version)
	}
	if tw.Reported.Doc["seen"] != true || tw.Reported.Version != before.Reported.Version {
		t.Errorf("after restart reported = %v v%d, want seen=true v%d", tw.Reported.Doc, tw.Reported.Version, before.Reported.Version)
	}
	deploy(h, map[string]any{"a": 5.0})
	tw, _ = h.Twin("m")
	if tw.Desired.Doc["a"] != 5.0 || tw.Desired.Doc["b"] != 2.0 {
		t.Errorf("after a new manifest desired = %v, want a=5 and b kept", tw.Desired.Doc)
	}
}
