package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// patchLog is a module that keeps the desired properties as it has been
// told them: its twin at start, then every patch merged in.
type patchLog struct {
	mu      sync.Mutex
	started bool
	doc     twin.Properties
	pending []versionedPatch // patches that came before the module read its twin
}

type versionedPatch struct {
	patch   map[string]any
	version int64
}

// module keeps the desired properties the way a module should: patches
// that arrive before its twin read are held, and only those newer than
// the twin it read are applied, so a deletion is never lost to the race
// between the two.
func (p *patchLog) module() hub.Module {
	return hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		c.OnDesiredChange(func(_ context.Context, patch map[string]any, v int64) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.started {
				p.pending = append(p.pending, versionedPatch{patch, v})
				return
			}
			p.apply(patch, v)
		})
		tw, err := c.Twin(ctx)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.doc = twin.Properties{Doc: tw.Desired.Doc, Version: tw.Desired.Version}
		for _, q := range p.pending {
			p.apply(q.patch, q.version)
		}
		p.pending, p.started = nil, true
		p.mu.Unlock()
		<-ctx.Done()
		return nil
	})
}

// apply merges a patch newer than what the module has; p.mu is held.
func (p *patchLog) apply(patch map[string]any, v int64) {
	if v <= p.doc.Version {
		return
	}
	_, _ = p.doc.Apply(patch)
	p.doc.Version = v
}

// sees returns the desired properties the module knows, as JSON.
func (p *patchLog) sees() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return ""
	}
	b, _ := json.Marshal(p.doc.Doc)
	return string(b)
}

// TestCloudDesired follows a module twin through twin GETs and desired
// notifications from the cloud: the manifest's properties stay, what the
// cloud changed (also while offline) reaches the module as a patch, stale
// versions are ignored, and the cloud document survives a restart.
func TestCloudDesired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	st := openStore(t, path)
	pl := &patchLog{}
	h := hub.New(hub.Options{DeviceID: "gw1", Store: st, CloudModules: []string{"m"}})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: pl.module(), Desired: map[string]any{"a": 1.0}}}}); err != nil {
		t.Fatal(err)
	}
	desired := func() string {
		tw, err := h.Twin("m")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(tw.Desired.Doc)
		return string(b)
	}
	steps := []struct {
		name    string
		apply   func() (int64, error)
		desired string
	}{
		{"an empty cloud twin keeps the manifest's", func() (int64, error) {
			return h.ApplyCloudDesired(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"$version": 1.0}, 1)
		}, `{"a":1}`},
		{"a cloud property is added", func() (int64, error) {
			return h.ApplyCloudDesired(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"b": 2.0, "$version": 3.0}, 3)
		}, `{"a":1,"b":2}`},
		{"a stale GET is ignored", func() (int64, error) {
			return h.ApplyCloudDesired(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"b": 9.0}, 2)
		}, `{"a":1,"b":2}`},
		{"removed in the cloud while offline", func() (int64, error) {
			return h.ApplyCloudDesired(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"$version": 4.0}, 4)
		}, `{"a":1}`},
		{"a desired notification", func() (int64, error) {
			return h.ApplyCloudDesiredPatch(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"c": 3.0, "$version": 5.0}, 5)
		}, `{"a":1,"c":3}`},
		{"the same notification again", func() (int64, error) {
			return h.ApplyCloudDesiredPatch(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"c": 4.0}, 5)
		}, `{"a":1,"c":3}`},
	}
	for _, s := range steps {
		if _, err := s.apply(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := desired(); got != s.desired {
			t.Errorf("%s: desired %s, want %s", s.name, got, s.desired)
		}
	}
	defer func() {
		if t.Failed() {
			t.Logf("the module sees %s", pl.sees())
		}
	}()
	hubtest.WaitFor(t, "the module to see the patches", func() bool { return pl.sees() == `{"a":1,"c":3}` })
	if _, err := h.ApplyCloudDesired(hub.Identity{DeviceID: "gw1", ModuleID: "nope"}, nil, 1); err == nil {
		t.Error("a twin for an unknown module was applied")
	}
	_ = h.Close()
	_ = st.Close()

	// After a restart the cloud document is remembered: the same GET
	// changes nothing, a newer one applies only its change.
	st = openStore(t, path)
	defer st.Close()
	pl = &patchLog{}
	h = hub.New(hub.Options{DeviceID: "gw1", Store: st, CloudModules: []string{"m"}})
	defer h.Close()
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: pl.module(), Desired: map[string]any{"a": 1.0}}}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the module to start", func() bool { return pl.sees() != "" })
	if _, err := h.ApplyCloudDesired(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"c": 3.0}, 5); err != nil {
		t.Fatal(err)
	}
	if got := desired(); got != `{"a":1,"c":3}` {
		t.Errorf("after restart desired %s, want a and c kept", got)
	}
	if _, err := h.ApplyCloudDesired(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, map[string]any{"c": 3.0, "d": 4.0}, 6); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the patch after restart", func() bool { return pl.sees() == `{"a":1,"c":3,"d":4}` })
}

// TestCloudReportedQueue checks that reported patches of a cloud-synced
// module are queued in order, wake the link, and go once acknowledged;
// a module not synced queues nothing.
func TestCloudReportedQueue(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer st.Close()
	h := hub.New(hub.Options{DeviceID: "gw1", Store: st, CloudModules: []string{"m"}})
	defer h.Close()
	clients := make(chan *hub.Client, 2)
	mod := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		clients <- c
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: mod}, {Name: "local", Module: mod}}}); err != nil {
		t.Fatal(err)
	}
	byID := map[string]*hub.Client{}
	for range 2 {
		c := <-clients
		byID[c.ModuleID()] = c
	}
	woke := h.ReportedChanged()
	for i := range 3 {
		if _, err := byID["m"].UpdateReported(context.Background(), map[string]any{"n": float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := byID["local"].UpdateReported(context.Background(), map[string]any{"x": 1.0}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woke:
	default:
		t.Error("ReportedChanged was not closed by a queued patch")
	}
	ps, err := h.PendingReported(hub.Identity{DeviceID: "gw1", ModuleID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, string(p.Patch))
	}
	if want := `[{"n":0} {"n":1} {"n":2}]`; fmt.Sprint(got) != want {
		t.Errorf("queued %v, want %s", got, want)
	}
	if err := h.AckReported(hub.Identity{DeviceID: "gw1", ModuleID: "m"}, ps[0].Seq); err != nil {
		t.Fatal(err)
	}
	if ps, _ := h.PendingReported(hub.Identity{DeviceID: "gw1", ModuleID: "m"}); len(ps) != 2 {
		t.Errorf("%d pending after an ack, want 2", len(ps))
	}
	if ps, _ := h.PendingReported(hub.Identity{DeviceID: "gw1", ModuleID: "local"}); len(ps) != 0 {
		t.Errorf("a module not synced with the cloud queued %d patches", len(ps))
	}
}

// TestCloudLeafTwin follows a cloud-synced leaf device's twin: the
// cloud's desired document applies to it and is remembered across a
// restart, its reported patches are queued for the link (a leaf not
// synced queues none), its local sessions are announced to the link, and
// a session's twin GET waits for the cloud's copy fetched for it.
func TestCloudLeafTwin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	st := openStore(t, path)
	h := hub.New(hub.Options{DeviceID: "gw1", Store: st, CloudLeaves: []string{"leaf1"}})
	leaf1, leaf2 := hub.Identity{DeviceID: "leaf1"}, hub.Identity{DeviceID: "leaf2"}
	desired := func(h *hub.Hub) string {
		tw, err := h.IdentityTwin(leaf1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(tw.Desired.Doc)
		return string(b)
	}

	if _, err := h.ApplyCloudDesired(leaf1, map[string]any{"a": 1.0, "$version": 2.0}, 2); err != nil {
		t.Fatal(err)
	}
	if got := desired(h); got != `{"a":1}` {
		t.Errorf("desired %s after the cloud's GET, want a=1", got)
	}
	for _, id := range []hub.Identity{leaf1, leaf2} {
		if _, err := h.PatchReported(id, map[string]any{"fw": "1.0"}); err != nil {
			t.Fatal(err)
		}
	}
	if ps, err := h.PendingReported(leaf1); err != nil || len(ps) != 1 || string(ps[0].Patch) != `{"fw":"1.0"}` {
		t.Errorf("leaf1's queued patches %v, %v; want its one patch", ps, err)
	}
	if ps, _ := h.PendingReported(leaf2); len(ps) != 0 {
		t.Errorf("a leaf not synced with the cloud queued %d patches", len(ps))
	}

	// A local session: announced, and its GET waits for the cloud.
	leaves, changed := h.ConnectedLeaves()
	if len(leaves) != 0 {
		t.Errorf("connected leaves %v before any session", leaves)
	}
	h.SetConnected(leaf1, true)
	select {
	case <-changed:
	default:
		t.Error("a leaf's session did not wake the link")
	}
	if leaves, _ := h.ConnectedLeaves(); leaves["leaf1"] != 1 || len(leaves) != 1 {
		t.Errorf("connected leaves %v, want leaf1's first session", leaves)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if tw, _ := h.SyncedTwin(done, leaf1); tw.Desired.Doc["b"] != nil {
		t.Errorf("SyncedTwin without the cloud's copy gave %v", tw.Desired.Doc)
	}
	got := make(chan twin.Twin, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), hubtest.Patience)
		defer cancel()
		tw, _ := h.SyncedTwin(ctx, leaf1)
		got <- tw
	}()
	select {
	case tw := <-got:
		t.Fatalf("SyncedTwin answered %v before the cloud's copy came", tw.Desired.Doc)
	default:
	}
	if _, err := h.ApplyCloudDesired(leaf1, map[string]any{"a": 1.0, "b": 2.0, "$version": 3.0}, 3); err != nil {
		t.Fatal(err)
	}
	if tw := <-got; tw.Desired.Doc["b"] != 2.0 {
		t.Errorf("SyncedTwin gave %v, want the cloud's copy with b", tw.Desired.Doc)
	}
	if tw, _ := h.SyncedTwin(done, leaf2); tw.Desired.Doc == nil {
		t.Error("no twin for a leaf not synced with the cloud")
	}
	h.SetConnected(leaf1, false)
	if leaves, _ := h.ConnectedLeaves(); len(leaves) != 0 {
		t.Errorf("connected leaves %v after the session closed", leaves)
	}
	_ = h.Close()
	_ = st.Close()

	// After a restart the cloud's document is remembered: the same GET
	// changes nothing.
	st = openStore(t, path)
	defer st.Close()
	h = hub.New(hub.Options{DeviceID: "gw1", Store: st, CloudLeaves: []string{"leaf1"}})
	defer h.Close()
	before, _ := h.IdentityTwin(leaf1)
	if _, err := h.ApplyCloudDesired(leaf1, map[string]any{"a": 1.0, "b": 2.0, "$version": 3.0}, 3); err != nil {
		t.Fatal(err)
	}
	after, _ := h.IdentityTwin(leaf1)
	if got := desired(h); got != `{"a":1,"b":2}` || after.Desired.Version != before.Desired.Version {
		t.Errorf("after a restart desired %s version %d (was %d), want a and b kept and no new version", got, after.Desired.Version, before.Desired.Version)
	}
}
