package hub_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

// sendN is an in-process module that sends n messages on output "out".
func sendN(n int, done chan<- error) hub.Module {
	return hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		for i := range n {
			m := message.New(fmt.Appendf(nil, "%d", i))
			m.Properties["n"] = fmt.Sprint(i)
			if err := c.SendOutput(ctx, "out", m); err != nil {
				done <- err
				return err
			}
		}
		done <- nil
		<-ctx.Done()
		return nil
	})
}

func readAll(t *testing.T, in *hub.Inputs, want int) []hub.Input {
	t.Helper()
	var got []hub.Input
	deadline := time.Now().Add(hubtest.Patience)
	for len(got) < want {
		batch, err := in.Read(want-len(got), nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, batch...)
		if len(batch) == 0 {
			select {
			case <-in.Ready():
			case <-time.After(time.Until(deadline)):
				t.Fatalf("read %d inputs, want %d", len(got), want)
			}
		}
	}
	return got
}

// TestExternalInputs routes an in-process module's output to two inputs
// of an external module and reads them back through the queue API: in
// order, input names stamped, rewound messages come back, acknowledged
// ones do not — with the store and without.
func TestExternalInputs(t *testing.T) {
	for _, durable := range []bool{true, false} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) {
			var opts []func(*hub.Options)
			if durable {
				st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
				t.Cleanup(func() { _ = st.Close() })
				opts = append(opts, func(o *hub.Options) { o.Store = st })
			}
			h := newHub(t, nil, opts...)
			done := make(chan error, 1)
			if err := h.Deploy(hub.Deployment{
				Modules: []hub.ModuleSpec{{Name: "src", Module: sendN(10, done)}, {Name: "ext", External: true}},
				Routes: []*route.Route{
					hubtest.MustRoute(t, "a", "FROM /messages/modules/src/* INTO BrokeredEndpoint(\"/modules/ext/inputs/a\")"),
					hubtest.MustRoute(t, "b", "FROM /messages/modules/src/* WHERE n = '3' INTO BrokeredEndpoint(\"/modules/ext/inputs/b\")"),
				},
			}); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			in, err := h.ExternalInputs("ext")
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, in, 11)
			var a []string
			nb := 0
			for _, x := range got {
				switch x.Message.System.InputName {
				case "a":
					a = append(a, string(x.Message.Body))
				case "b":
					nb++
				default:
					t.Errorf("input name %q", x.Message.System.InputName)
				}
				if x.Message.System.ConnectionModuleID != "src" {
					t.Errorf("connectionModuleId %q, want src", x.Message.System.ConnectionModuleID)
				}
			}
			if fmt.Sprint(a) != "[0 1 2 3 4 5 6 7 8 9]" || nb != 1 {
				t.Fatalf("input a got %v, b got %d messages; want 0…9 in order and 1", a, nb)
			}
			// Acknowledge the first five of a; the rest comes again after a rewind.
			var ack []hub.Input
			for _, x := range got {
				if x.Message.System.InputName == "a" && len(ack) < 5 {
					ack = append(ack, x)
				}
			}
			if err := in.Ack(ack...); err != nil {
				t.Fatal(err)
			}
			if err := in.Rewind(); err != nil {
				t.Fatal(err)
			}
			again := readAll(t, in, 6)
			a = a[:0]
			for _, x := range again {
				if x.Message.System.InputName == "a" {
					a = append(a, string(x.Message.Body))
				}
			}
			if fmt.Sprint(a) != "[5 6 7 8 9]" {
				t.Fatalf("after rewind input a got %v, want [5 6 7 8 9]", a)
			}
		})
	}
}

func TestExternalNotAnInputReader(t *testing.T) {
	h := newHub(t, nil)
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "in", Module: idle}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ExternalInputs("in"); !errors.Is(err, hub.ErrNotExternal) {
		t.Fatalf("ExternalInputs(in-process) = %v, want ErrNotExternal", err)
	}
	if _, err := h.ExternalInputs("nobody"); !errors.Is(err, hub.ErrUnknownModule) {
		t.Fatalf("ExternalInputs(unknown) = %v, want ErrUnknownModule", err)
	}
}

// TestExternalMethodsAndTwins calls a method on an external module from an
// in-process one, watches desired changes, and reports.
func TestExternalMethodsAndTwins(t *testing.T) {
	h := newHub(t, nil)
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "ext", External: true, Desired: map[string]any{"a": 1.0}}}}); err != nil {
		t.Fatal(err)
	}
	id := hub.Identity{DeviceID: "gw1", ModuleID: "ext"}
	// Not connected: 404, as IoT Hub answers.
	r, err := h.InvokeMethod(context.Background(), "gw1", "ext", hub.MethodRequest{Name: "m"}, 0)
	if err != nil || r.Status != 404 {
		t.Fatalf("unserved method = %+v, %v; want 404", r, err)
	}
	stop := h.ServeMethods(id, func(ctx context.Context, req hub.MethodRequest) (hub.MethodResponse, error) {
		if req.Name == "slow" {
			<-ctx.Done()
			return hub.MethodResponse{}, hub.ErrMethodTimeout
		}
		return hub.MethodResponse{Status: 200, Payload: []byte(`"` + req.Name + `"`)}, nil
	})
	r, err = h.InvokeMethod(context.Background(), "gw1", "ext", hub.MethodRequest{Name: "ping"}, 0)
	if err != nil || r.Status != 200 || string(r.Payload) != `"ping"` {
		t.Fatalf("method = %+v, %v", r, err)
	}
	start := time.Now()
	_, err = h.InvokeMethod(context.Background(), "gw1", "ext", hub.MethodRequest{Name: "slow"}, hub.MinMethodTimeout)
	if !errors.Is(err, hub.ErrMethodTimeout) || time.Since(start) < hub.MinMethodTimeout {
		t.Fatalf("slow method = %v after %v, want a timeout after %v", err, time.Since(start), hub.MinMethodTimeout)
	}
	stop()
	if r, _ := h.InvokeMethod(context.Background(), "gw1", "ext", hub.MethodRequest{Name: "ping"}, 0); r.Status != 404 {
		t.Fatalf("after stop: status %d, want 404", r.Status)
	}

	changed, unwatch, err := h.WatchDesired(id)
	if err != nil {
		t.Fatal(err)
	}
	defer unwatch()
	if _, err := h.PatchDesired("ext", map[string]any{"b": 2.0}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(hubtest.Patience):
		t.Fatal("no desired-change signal")
	}
	v, err := h.PatchReported(id, map[string]any{"r": "x"})
	if err != nil || v != 2 {
		t.Fatalf("PatchReported = %d, %v; want version 2", v, err)
	}
	tw, err := h.IdentityTwin(id)
	if err != nil || tw.Reported.Doc["r"] != "x" || tw.Desired.Doc["b"] != 2.0 {
		t.Fatalf("twin = %+v, %v", tw, err)
	}
}

// TestLeafDevice sends telemetry as a leaf device and keeps its twin.
func TestLeafDevice(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "dev", "FROM /messages INTO $upstream")})
	if err := h.SendLeaf(context.Background(), "leaf1", message.New([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "leaf message upstream", func() bool { return up.Len() == 1 })
	m := up.Messages()[0]
	if m.System.ConnectionDeviceID != "leaf1" || m.System.ConnectionModuleID != "" || m.Source() != "/messages" {
		t.Fatalf("leaf message from %q/%q source %s", m.System.ConnectionDeviceID, m.System.ConnectionModuleID, m.Source())
	}
	if err := h.SendLeaf(context.Background(), "gw1", message.New(nil)); err == nil {
		t.Fatal("SendLeaf as the edge device itself succeeded")
	}
	leaf := hub.Identity{DeviceID: "leaf1"}
	changed, unwatch, err := h.WatchDesired(leaf)
	if err != nil {
		t.Fatal(err)
	}
	defer unwatch()
	if _, err := h.PatchLeafDesired("leaf1", map[string]any{"x": 1.0}); err != nil {
		t.Fatal(err)
	}
	<-changed
	tw, err := h.IdentityTwin(leaf)
	if err != nil || tw.Desired.Doc["x"] != 1.0 || tw.Desired.Version != 2 {
		t.Fatalf("leaf twin = %+v, %v", tw, err)
	}
}

// TestSendBatch: a batch from an external module keeps its order in the
// durable queue, and a message the hub refuses stops the batch there.
func TestSendBatch(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	t.Cleanup(func() { _ = st.Close() })
	h := newHub(t, nil, func(o *hub.Options) { o.Store = st })
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "a", External: true}, {Name: "b", External: true}},
		Routes:  []*route.Route{hubtest.MustRoute(t, "ab", `FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/b/inputs/in")`)},
	}); err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := range 50 {
		m := message.New(fmt.Append(nil, i))
		m.System.OutputName = "out"
		if i == 40 {
			m.Body = make([]byte, message.MaxSize+1)
		}
		msgs = append(msgs, m)
	}
	n, err := h.SendBatch(context.Background(), hub.Identity{DeviceID: "gw1", ModuleID: "a"}, msgs)
	if n != 40 || !errors.Is(err, message.ErrTooLarge) {
		t.Fatalf("SendBatch = %d, %v; want 40 taken and ErrTooLarge", n, err)
	}
	in, err := h.ExternalInputs("b")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, in, 40)
	for i, x := range got {
		if string(x.Message.Body) != fmt.Sprint(i) || x.Message.System.OutputName != "out" || x.Message.System.ConnectionModuleID != "a" {
			t.Fatalf("message %d: %q from %s output %q", i, x.Message.Body, x.Message.System.ConnectionModuleID, x.Message.System.OutputName)
		}
	}
	if _, err := h.SendBatch(context.Background(), hub.Identity{DeviceID: "gw1"}, msgs[:1]); err == nil {
		t.Fatal("SendBatch as the edge device itself succeeded")
	}
}

// TestExternalWithModuleIsSupervised: an external module with a Module
// (a process module) is run by the hub and still reached over the
// endpoint's API.
func TestExternalWithModuleIsSupervised(t *testing.T) {
	h := newHub(t, nil)
	started := make(chan struct{}, 1)
	run := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		started <- struct{}{}
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "proc", External: true, Module: run}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(hubtest.Patience):
		t.Fatal("the external module's program was not started")
	}
	if _, err := h.ExternalInputs("proc"); err != nil {
		t.Fatal(err)
	}
	r, err := h.InvokeMethod(context.Background(), "gw1", "proc", hub.MethodRequest{Name: "m"}, 0)
	if err != nil || r.Status != 404 {
		t.Fatalf("method on an unconnected external module = %d, %v; want 404 (not the in-process client)", r.Status, err)
	}
}
