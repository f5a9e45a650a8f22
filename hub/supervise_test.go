package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

func status(h *hub.Hub, name string) hub.ModuleStatus {
	for _, s := range h.ModuleStatus() {
		if s.Name == name {
			return s
		}
	}
	return hub.ModuleStatus{}
}

// TestRestartPolicies runs a module that ends in each way under each
// policy and checks whether it was started again.
func TestRestartPolicies(t *testing.T) {
	type exit int
	const (
		clean exit = iota
		fail
		panics
		unhealthy
	)
	tests := []struct {
		policy  hub.RestartPolicy
		exit    exit
		restart bool
	}{
		{hub.RestartNever, clean, false},
		{hub.RestartNever, fail, false},
		{hub.RestartNever, panics, false},
		{hub.RestartOnFailure, clean, false},
		{hub.RestartOnFailure, fail, true},
		{hub.RestartOnFailure, panics, true},
		{hub.RestartOnFailure, unhealthy, false},
		{hub.RestartOnUnhealthy, clean, false},
		{hub.RestartOnUnhealthy, fail, true},
		{hub.RestartOnUnhealthy, panics, true},
		{hub.RestartOnUnhealthy, unhealthy, true},
		{hub.RestartAlways, clean, true},
		{hub.RestartAlways, fail, true},
		{hub.RestartAlways, panics, true},
		{hub.RestartAlways, unhealthy, true},
	}
	names := map[exit]string{clean: "clean", fail: "error", panics: "panic", unhealthy: "unhealthy"}
	for _, tt := range tests {
		t.Run(string(tt.policy)+"/"+names[tt.exit], func(t *testing.T) {
			h := newHub(t, &hubtest.Recorder{})
			var runs atomic.Int32
			mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
				if runs.Add(1) > 1 {
					<-ctx.Done() // the restarted run stays up
					return nil
				}
				switch tt.exit {
				case fail:
					return errors.New("boom")
				case panics:
					panic("kaboom")
				case unhealthy:
					c.SetHealthy(false, "sensor stuck")
					<-ctx.Done()
					return ctx.Err()
				}
				return nil
			})
			if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: mod, RestartPolicy: tt.policy}}}); err != nil {
				t.Fatal(err)
			}
			if tt.restart {
				hubtest.WaitFor(t, "a restart", func() bool { return runs.Load() == 2 && status(h, "m").State == hub.StateRunning })
				if st := status(h, "m"); st.RestartCount != 1 {
					t.Errorf("restart count = %d, want 1", st.RestartCount)
				}
				return
			}
			if tt.exit == unhealthy {
				// Unhealthy without a policy that acts on it: the module
				// keeps running.
				time.Sleep(30 * time.Millisecond)
				if st := status(h, "m"); st.State != hub.StateRunning || runs.Load() != 1 {
					t.Errorf("state %s after %d runs, want still running once", st.State, runs.Load())
				}
				if st := status(h, "m"); st.Healthy || st.Health != "sensor stuck" {
					t.Errorf("status healthy=%v %q, want unhealthy with the module's reason", st.Healthy, st.Health)
				}
				return
			}
			want := hub.StateStopped
			if tt.exit != clean {
				want = hub.StateFailed
			}
			hubtest.WaitFor(t, "the module to end", func() bool { return status(h, "m").State == want })
			time.Sleep(30 * time.Millisecond)
			if n := runs.Load(); n != 1 {
				t.Errorf("ran %d times, want once", n)
			}
			if tt.exit == panics && status(h, "m").LastExit == "" {
				t.Error("the panic is not in the status")
			}
		})
	}
}

// TestPanicInHandlerDoesNotStopHub checks that a handler's panic restarts
// the module (policy always) and the hub keeps routing.
func TestPanicInHandlerDoesNotStopHub(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	var runs atomic.Int32
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		runs.Add(1)
		c.OnInput("in", func(ctx context.Context, m *message.Message) error {
			if string(m.Body) == "poison" {
				var p *struct{ x int }
				_ = p.x // nil dereference
			}
			return c.SendOutput(ctx, "out", message.New(m.Body))
		})
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "m", Module: mod}},
		Routes: []*route.Route{
			hubtest.MustRoute(t, "in", `FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint("/modules/m/inputs/in")`),
			hubtest.MustRoute(t, "out", `FROM /messages/modules/m/outputs/out INTO $upstream`),
		},
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.SendDevice(ctx, message.New([]byte("poison"))); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "a restart after the panic", func() bool { return runs.Load() == 2 })
	if err := h.SendDevice(ctx, message.New([]byte("fine"))); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the next message to go through", func() bool { return up.Len() == 1 })
}

func TestBackoffGrows(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{}, func(o *hub.Options) {
		o.Backoff = hub.Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, ResetAfter: time.Hour}
	})
	var mu sync.Mutex
	var starts []time.Time
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return errors.New("always failing")
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: mod, RestartPolicy: hub.RestartOnFailure}}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "five starts", func() bool { mu.Lock(); defer mu.Unlock(); return len(starts) >= 5 })
	mu.Lock()
	defer mu.Unlock()
	// Delays are 10, 20, 40, 40 ms less up to 20% jitter: each gap is at
	// least the jittered minimum.
	mins := []time.Duration{8, 16, 32, 32}
	for i, m := range mins {
		if gap := starts[i+1].Sub(starts[i]); gap < m*time.Millisecond {
			t.Errorf("gap %d = %v, want ≥ %v", i, gap, m*time.Millisecond)
		}
	}
}

func TestStoppedStatusIsNotStarted(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	var ran atomic.Bool
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error { ran.Store(true); <-ctx.Done(); return nil })
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: mod, Status: hub.StatusStopped}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if ran.Load() || status(h, "m").State != hub.StateStopped {
		t.Errorf("a module with status stopped ran (state %s)", status(h, "m").State)
	}
}

func TestRestart(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	var runs atomic.Int32
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		runs.Add(1)
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{
		{Name: "m", Module: mod},
		{Name: "off", Module: mod, Status: hub.StatusStopped},
		{Name: "ext", External: true},
	}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "m to run", func() bool { return runs.Load() == 1 })
	if err := h.Restart("m"); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "m to run again", func() bool { return runs.Load() == 2 && status(h, "m").State == hub.StateRunning })
	for _, tc := range []struct {
		name, want string
		is         error
	}{
		{"off", `module "off" is deployed with status "stopped"`, hub.ErrNotRestartable},
		{"ext", `module "ext" is external and runs outside tinyedge`, hub.ErrNotRestartable},
		{"ghost", `no module "ghost" in the deployment`, hub.ErrUnknownModule},
	} {
		if err := h.Restart(tc.name); !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Restart(%q) = %v, want %q (%v)", tc.name, err, tc.want, tc.is)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if runs.Load() != 2 || status(h, "off").State != hub.StateStopped {
		t.Errorf("after restarting a stopped module: %d runs, state %s; want it left stopped", runs.Load(), status(h, "off").State)
	}
}

func TestDeployRefusesBadSpecs(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	for _, d := range []hub.Deployment{
		{Modules: []hub.ModuleSpec{{Name: "m", Module: idle, RestartPolicy: "sometimes"}}},
		{Modules: []hub.ModuleSpec{{Name: "m", Module: idle, Status: "paused"}}},
		{Modules: []hub.ModuleSpec{{Name: "m", Module: idle}, {Name: "m", Module: idle}}},
		{Modules: []hub.ModuleSpec{{Name: "m"}}},
	} {
		if err := h.Deploy(d); err == nil {
			t.Errorf("Deploy(%+v) succeeded, want an error", d.Modules)
		}
	}
}

func TestRedeploy(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	patches := make(chan map[string]any, 4)
	var runs atomic.Int32
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		runs.Add(1)
		c.OnDesiredChange(func(_ context.Context, p map[string]any, v int64) { patches <- p })
		<-ctx.Done()
		return nil
	})
	spec := hub.ModuleSpec{Name: "m", Module: mod, Version: "1", Desired: map[string]any{"a": 1.0, "b": 2.0}}
	gone := hub.ModuleSpec{Name: "gone", Module: idle}
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{spec, gone}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "m to run", func() bool { return runs.Load() == 1 })
	spec.Desired = map[string]any{"a": 1.0, "c": 3.0}
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{spec}}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-patches:
		want := `{"b":null,"c":3}`
		if b, _ := json.Marshal(p); string(b) != want {
			t.Errorf("patch = %s, want %s", b, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no desired patch after a redeploy changed the desired properties")
	}
	if runs.Load() != 1 {
		t.Errorf("an unchanged module was restarted")
	}
	if len(h.ModuleStatus()) != 1 {
		t.Errorf("modules = %v, want only m after redeploy", h.ModuleStatus())
	}
	spec.Version = "2"
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{spec}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "a restart for the new version", func() bool { return runs.Load() == 2 })
}

func TestMethods(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	block := make(chan struct{})
	defer close(block)
	callee := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		c.OnMethod("echo", func(_ context.Context, r hub.MethodRequest) hub.MethodResponse {
			return hub.MethodResponse{Status: 200, Payload: r.Payload}
		})
		c.OnMethod("hang", func(ctx context.Context, r hub.MethodRequest) hub.MethodResponse {
			<-block // ignores its context, as a badly written handler would
			return hub.MethodResponse{Status: 200}
		})
		<-ctx.Done()
		return nil
	})
	result := make(chan hub.MethodResponse, 1)
	caller := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		// Like a real module, retry until the callee is up (404) and has
		// registered its handler (501).
		for {
			r, err := c.InvokeMethod(ctx, "", "callee", hub.MethodRequest{Name: "echo", Payload: json.RawMessage(`{"x":1}`)}, 5*time.Second)
			if err != nil {
				return err
			}
			if r.Status != 404 && r.Status != 501 {
				result <- r
				break
			}
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return nil
			}
		}
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{
		{Name: "callee", Module: callee, StartupOrder: 0},
		{Name: "caller", Module: caller, StartupOrder: 1},
		{Name: "off", Module: idle, Status: hub.StatusStopped},
	}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-result:
		if r.Status != 200 || string(r.Payload) != `{"x":1}` {
			t.Errorf("module-to-module call = %d %s, want 200 {\"x\":1}", r.Status, r.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("module-to-module method call got no answer")
	}
	ctx := context.Background()
	call := func(dev, mod, name string, timeout time.Duration) (hub.MethodResponse, error) {
		return h.InvokeMethod(ctx, dev, mod, hub.MethodRequest{Name: name}, timeout)
	}
	if r, err := call("gw1", "callee", "nope", 0); err != nil || r.Status != 501 {
		t.Errorf("unknown method: %v %v, want 501", r.Status, err)
	}
	if r, err := call("gw1", "off", "echo", 0); err != nil || r.Status != 404 {
		t.Errorf("stopped module: %v %v, want 404", r.Status, err)
	}
	if r, err := call("gw1", "ghost", "echo", 0); err != nil || r.Status != 404 {
		t.Errorf("unknown module: %v %v, want 404", r.Status, err)
	}
	if r, err := call("other", "callee", "echo", 0); err != nil || r.Status != 404 {
		t.Errorf("other device: %v %v, want 404", r.Status, err)
	}
	if _, err := call("gw1", "callee", "echo", time.Second); err == nil {
		t.Error("a 1 s timeout (below IoT Hub's 5 s minimum) was accepted")
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := h.InvokeMethod(tctx, "gw1", "callee", hub.MethodRequest{Name: "hang"}, 0); !errors.Is(err, hub.ErrMethodTimeout) {
		t.Errorf("hanging method: err = %v, want ErrMethodTimeout", err)
	}
}

func TestTwin(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	type note struct {
		patch   map[string]any
		version int64
	}
	notes := make(chan note, 4)
	reported := make(chan int64, 1)
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		c.OnDesiredChange(func(_ context.Context, p map[string]any, v int64) { notes <- note{p, v} })
		tw, err := c.Twin(ctx)
		if err != nil {
			return err
		}
		v, err := c.UpdateReported(ctx, map[string]any{"threshold": tw.Desired.Doc["threshold"]})
		if err != nil {
			return err
		}
		reported <- v
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: mod, Desired: map[string]any{"threshold": 25.0}}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-reported:
		if v != 2 {
			t.Errorf("reported version = %d, want 2", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("module never reported")
	}
	v, err := h.PatchDesired("m", map[string]any{"threshold": 30.0})
	if err != nil || v != 2 {
		t.Fatalf("PatchDesired = %d, %v; want version 2", v, err)
	}
	select {
	case n := <-notes:
		if n.version != 2 || n.patch["threshold"] != 30.0 {
			t.Errorf("note = %+v, want threshold 30 at version 2", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("desired patch never reached the module")
	}
	tw, err := h.Twin("m")
	if err != nil {
		t.Fatal(err)
	}
	if tw.Reported.Doc["threshold"] != 25.0 || tw.Desired.Doc["threshold"] != 30.0 {
		t.Errorf("twin = %+v", tw)
	}
	if _, err := h.Twin("other"); !errors.Is(err, hub.ErrUnknownModule) {
		t.Errorf("twin of an unknown module: %v", err)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	h := hub.New(hub.Options{})
	stubborn := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		c.OnInput("in", func(ctx context.Context, m *message.Message) error { <-ctx.Done(); return nil })
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "a", Module: stubborn}, {Name: "b", Module: idle}},
		Routes:  []*route.Route{hubtest.MustRoute(t, "r", `FROM /* INTO BrokeredEndpoint("/modules/a/inputs/in")`)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.SendDevice(context.Background(), message.New(nil)); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Deploy(hub.Deployment{}); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Deploy after Close: %v, want ErrClosed", err)
	}
	// goleak in TestMain checks that no module goroutine is left.
}

func TestMethodPayloadsMustBeJSON(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		c.OnMethod("bad", func(context.Context, hub.MethodRequest) hub.MethodResponse {
			return hub.MethodResponse{Status: 200, Payload: json.RawMessage("not json")}
		})
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: mod}}}); err != nil {
		t.Fatal(err)
	}
	var r hub.MethodResponse
	hubtest.WaitFor(t, "the method handler", func() bool {
		var err error
		r, err = h.InvokeMethod(context.Background(), "gw1", "m", hub.MethodRequest{Name: "bad"}, 0)
		return err == nil && r.Status != 404
	})
	if r.Status != 500 || !json.Valid(r.Payload) {
		t.Errorf("a handler's non-JSON payload came back as %d %s, want 500 with a JSON error", r.Status, r.Payload)
	}
	if _, err := h.InvokeMethod(context.Background(), "gw1", "m", hub.MethodRequest{Name: "bad", Payload: json.RawMessage("{")}, 0); err == nil {
		t.Error("a request payload that is not JSON was sent")
	}
}

func TestCloseGivesUpOnStuckModule(t *testing.T) {
	release := make(chan struct{})
	h := hub.New(hub.Options{StopTimeout: 20 * time.Millisecond})
	stuck := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		<-release // ignores ctx
		return nil
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "stuck", Module: stuck}, {Name: "fine", Module: idle}}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "both modules running", func() bool {
		return status(h, "stuck").State == hub.StateRunning && status(h, "fine").State == hub.StateRunning
	})
	err := h.Close()
	if !errors.Is(err, hub.ErrStuckModules) || !strings.Contains(err.Error(), "stuck") || strings.Contains(err.Error(), "fine") {
		t.Errorf("Close() = %v, want ErrStuckModules naming only stuck", err)
	}
	close(release)
	// Let the abandoned goroutine finish so goleak stays quiet.
	hubtest.WaitFor(t, "the stuck module to return", func() bool { return status(h, "stuck").State != hub.StateRunning })
}

// A module just deployed has been up for no time at all: a health check
// that asks how long it has been running must not see the zero time.
func TestStatusSinceIsSetAtDeploy(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	before := time.Now()
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: idle}}}); err != nil {
		t.Fatal(err)
	}
	if st := status(h, "m"); st.Since.Before(before) {
		t.Errorf("status right after Deploy: since %v, before the deploy at %v", st.Since, before)
	}
}
