package hub

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// Module is an in-process module: Go code that runs against a Client until
// ctx ends. Returning nil means a clean exit, an error a failure; a panic
// is recovered and counts as a failure.
type Module interface {
	Run(ctx context.Context, c *Client) error
}

// ModuleFunc adapts a function to Module.
type ModuleFunc func(ctx context.Context, c *Client) error

// Run calls f.
func (f ModuleFunc) Run(ctx context.Context, c *Client) error { return f(ctx, c) }

// RestartPolicy is IoT Edge's restartPolicy.
type RestartPolicy string

// The restart policies of IoT Edge deployment manifests.
const (
	RestartNever       RestartPolicy = "never"        // never restart
	RestartOnFailure   RestartPolicy = "on-failure"   // restart after an error or a panic
	RestartOnUnhealthy RestartPolicy = "on-unhealthy" // also when the module reports itself unhealthy
	RestartAlways      RestartPolicy = "always"       // also after a clean exit
)

// Desired statuses of a module.
const (
	StatusRunning = "running"
	StatusStopped = "stopped"
)

// ModuleSpec is one module of a deployment.
type ModuleSpec struct {
	Name          string
	Image         string // what the module is (e.g. "builtin:simtemp"); a change restarts it
	Version       string // a change restarts the module
	Module        Module
	Env           map[string]string
	Desired       map[string]any // desired properties of the module twin
	Status        string         // StatusRunning (default) or StatusStopped
	RestartPolicy RestartPolicy  // default RestartAlways, as in IoT Edge
	StartupOrder  int64          // lower starts first
	// External marks a module that talks to the hub through the local
	// MQTT endpoint rather than a Client (see external.go): its inputs
	// are queues the endpoint delivers, its methods are called over
	// MQTT. A process module is external and has a Module (the hub runs
	// its program); an external module without a Module is started
	// elsewhere, and the hub neither starts nor restarts it.
	External bool
}

// Deployment is what the hub runs: modules and routes.
type Deployment struct {
	Modules []ModuleSpec
	Routes  []*route.Route
	// TimeToLive is storeAndForwardConfiguration.timeToLiveSecs: how long
	// a message waits in the store for a route without its own; 0 leaves
	// the store's default, negative means forever.
	TimeToLive time.Duration
}

// Backoff paces restarts: Initial, doubling up to Max, back to Initial after
// a run that lasted ResetAfter. Each delay has up to 20% jitter so that
// modules failing together do not restart in lockstep.
type Backoff struct {
	Initial    time.Duration // default 1 s
	Max        time.Duration // default 5 min
	ResetAfter time.Duration // default 1 min
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Minute
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = time.Minute
	}
	return b
}

func (b Backoff) delay(attempt int) time.Duration {
	d := b.Initial
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// ModuleState is what a module is doing now.
type ModuleState string

// Module states reported by ModuleStatus.
const (
	StateRunning ModuleState = "running"
	StateBackoff ModuleState = "backoff" // failed, waiting to restart
	StateStopped ModuleState = "stopped" // exited and not restarted, or status stopped
	StateFailed  ModuleState = "failed"  // exited with an error and not restarted
)

// ModuleStatus reports one module's runtime state.
type ModuleStatus struct {
	Name         string
	State        ModuleState
	RestartCount int
	LastExit     string    // the last run's error, "" for a clean exit
	Healthy      bool      // as the module last reported (Client.SetHealthy); true at each start
	Health       string    // the reason it gave for being unhealthy
	Since        time.Time // when the module entered State (for running: when this run started)
}

type supervisor struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	status ModuleStatus
}

func (s *supervisor) set(f func(*ModuleStatus)) {
	s.mu.Lock()
	prev := s.status.State
	f(&s.status)
	if s.status.State != prev || s.status.Since.IsZero() {
		s.status.Since = time.Now()
	}
	s.mu.Unlock()
}

// errUnhealthy ends a run whose module reported itself unhealthy.
var errUnhealthy = errors.New("module reported itself unhealthy")

// Deploy applies a deployment: it replaces the routes, stops modules that
// are gone or changed, starts new and changed ones in startup order, and
// updates the desired properties of the ones that stay. Desired
// properties of modules that keep running reach them as patches.
func (h *Hub) Deploy(d Deployment) error {
	specs := append([]ModuleSpec(nil), d.Modules...)
	seen := map[string]bool{}
	for i := range specs {
		s := &specs[i]
		if s.Name == "" {
			return errors.New("deploy: a module has no name")
		}
		if seen[s.Name] {
			return fmt.Errorf("deploy: module %q is listed twice", s.Name)
		}
		seen[s.Name] = true
		if s.Module == nil && !s.External {
			return fmt.Errorf("deploy: module %q has no implementation", s.Name)
		}
		if s.Status == "" {
			s.Status = StatusRunning
		}
		if s.RestartPolicy == "" {
			s.RestartPolicy = RestartAlways
		}
		switch s.RestartPolicy {
		case RestartNever, RestartOnFailure, RestartOnUnhealthy, RestartAlways:
		default:
			return fmt.Errorf("deploy: module %q: unknown restartPolicy %q (want never, on-failure, on-unhealthy or always)", s.Name, s.RestartPolicy)
		}
		if s.Status != StatusRunning && s.Status != StatusStopped {
			return fmt.Errorf("deploy: module %q: unknown status %q (want running or stopped)", s.Name, s.Status)
		}
	}
	sort.SliceStable(specs, func(i, j int) bool {
		if specs[i].StartupOrder != specs[j].StartupOrder {
			return specs[i].StartupOrder < specs[j].StartupOrder
		}
		return specs[i].Name < specs[j].Name
	})

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	// Stop what is gone or changed.
	var stopping []*module
	for name, md := range h.modules {
		var next *ModuleSpec
		for i := range specs {
			if specs[i].Name == name {
				next = &specs[i]
			}
		}
		if next == nil || changed(md.spec, *next) {
			stopping = append(stopping, md)
		}
		if next == nil {
			delete(h.modules, name)
			close(md.inbox.done)
		}
	}
	h.mu.Unlock()
	for _, md := range stopping {
		h.stopModule(md)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	var errs []error
	var start []*module
	for _, s := range specs {
		md, ok := h.modules[s.Name]
		if !ok {
			// The twin cached by an earlier run, if the store has one:
			// a module restarted offline starts with its last known
			// desired properties.
			tw, deployed, cached := h.loadTwin(s.Name)
			if !cached {
				var err error
				if tw, err = twin.New(s.Desired); err != nil {
					errs = append(errs, fmt.Errorf("deploy: module %q: desired properties: %w", s.Name, err))
					continue
				}
				deployed = twin.Clone(s.Desired)
			}
			md = &module{id: s.Name, hub: h, inbox: newInbox(s.Name, h.opts.InputCapacity), tw: tw, deployed: deployed}
			h.loadCloudTwin(md)
			h.modules[s.Name] = md
		}
		if err := md.applyDeployment(s.Desired); err != nil {
			errs = append(errs, fmt.Errorf("deploy: module %q: desired properties: %w", s.Name, err))
		}
		md.spec = s
		if md.sup == nil && s.Status == StatusRunning && s.Module != nil {
			start = append(start, md)
		}
	}
	h.publishModules()
	h.defaultTTL.Store(int64(d.TimeToLive))
	// The new routes, resolved against the new modules, are in place
	// before any new module starts sending.
	h.router.Store(h.compileRouter(d.Routes))
	for _, md := range start {
		md.sup = h.startSupervisor(md, md.spec)
	}
	return errors.Join(errs...)
}

// ErrNotRestartable is a restart of a deployed module the hub does not
// run: one deployed stopped, or an external module started elsewhere.
var ErrNotRestartable = errors.New("not restartable")

// Restart stops a deployed module and starts it again, as a deployment
// that changed it would: what it runs with is read anew (a process
// module's environment, with its identity's generation id). A module
// deployed as stopped, or external with nothing to run, stays as it is
// and the error wraps ErrNotRestartable; one not deployed,
// ErrUnknownModule.
func (h *Hub) Restart(name string) error {
	h.mu.Lock()
	md, ok := h.modules[name]
	closed := h.closed
	var spec ModuleSpec
	if ok {
		spec = md.spec
	}
	h.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !ok:
		return fmt.Errorf("restart: no module %q in the deployment: %w", name, ErrUnknownModule)
	case spec.Module == nil:
		return fmt.Errorf("restart: module %q is external and runs outside tinyedge, which cannot restart it: %w", name, ErrNotRestartable)
	case spec.Status != StatusRunning:
		return fmt.Errorf("restart: module %q is deployed with status %q; set it to %q in the deployment to run it: %w", name, spec.Status, StatusRunning, ErrNotRestartable)
	}
	if !h.stopModule(md) {
		return fmt.Errorf("restart: module %q did not stop within %v", name, h.opts.StopTimeout)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	// A deployment in between decided for itself.
	if h.modules[name] == md && md.sup == nil && md.spec.Status == StatusRunning && md.spec.Module != nil {
		md.sup = h.startSupervisor(md, md.spec)
	}
	return nil
}

// publishModules refreshes the lock-free copy of the module table. h.mu
// must be held.
func (h *Hub) publishModules() {
	m := maps.Clone(h.modules)
	h.mods.Store(&m)
}

func changed(a, b ModuleSpec) bool {
	return a.Image != b.Image || a.Version != b.Version || a.Status != b.Status || a.External != b.External ||
		a.RestartPolicy != b.RestartPolicy || !maps.Equal(a.Env, b.Env)
}

// stopModule ends a module's supervisor and waits for it, at most
// StopTimeout. It reports whether the module stopped.
func (h *Hub) stopModule(md *module) bool {
	h.mu.Lock()
	sup := md.sup
	md.sup = nil
	h.mu.Unlock()
	if sup == nil {
		return true
	}
	sup.cancel()
	t := time.NewTimer(h.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-sup.done:
		return true
	case <-t.C:
		h.log.Error("module did not stop in time; its goroutine is abandoned", "module", md.id, "timeout", h.opts.StopTimeout)
		return false
	}
}

// ModuleStatus reports every deployed module, by name.
func (h *Hub) ModuleStatus() []ModuleStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ModuleStatus, 0, len(h.modules))
	for name, md := range h.modules {
		st := ModuleStatus{Name: name, State: StateStopped}
		if md.spec.External {
			st = h.externalStatus(name)
		}
		if md.sup != nil {
			md.sup.mu.Lock()
			st = md.sup.status
			md.sup.mu.Unlock()
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ErrStuckModules is returned (wrapped) by Close when modules ignored
// their context and did not return within StopTimeout. Go cannot kill a
// goroutine: theirs keep running until they return.
var ErrStuckModules = errors.New("modules did not stop")

// Close stops every module, last started first, and waits for each at
// most StopTimeout.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	mods := make([]*module, 0, len(h.modules))
	for _, md := range h.modules {
		mods = append(mods, md)
	}
	h.mu.Unlock()
	sort.Slice(mods, func(i, j int) bool {
		a, b := mods[i].spec, mods[j].spec
		if a.StartupOrder != b.StartupOrder {
			return a.StartupOrder > b.StartupOrder
		}
		return a.Name > b.Name
	})
	var stuck []string
	for _, md := range mods {
		if !h.stopModule(md) {
			stuck = append(stuck, md.id)
		}
	}
	// The pump stops after the modules, so what they sent last is
	// delivered if it can be; the rest stays in the store.
	if h.pumpStop != nil {
		h.pumpStop()
		<-h.pumpDone
	}
	if len(stuck) > 0 {
		return fmt.Errorf("%w within %s: %s", ErrStuckModules, h.opts.StopTimeout, strings.Join(stuck, ", "))
	}
	h.wg.Wait()
	return nil
}

func (h *Hub) startSupervisor(md *module, spec ModuleSpec) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	s := &supervisor{cancel: cancel, done: make(chan struct{}), status: ModuleStatus{Name: md.id, State: StateRunning, Healthy: true, Since: time.Now()}}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(s.done)
		h.supervise(ctx, md, spec, s)
	}()
	return s
}

// supervise runs the module and restarts it per its policy until ctx ends.
func (h *Hub) supervise(ctx context.Context, md *module, spec ModuleSpec, s *supervisor) {
	log := h.log.With("module", md.id)
	attempt := 0
	for {
		start := time.Now()
		s.set(func(st *ModuleStatus) { st.State, st.Healthy, st.Health, st.Since = StateRunning, true, "", time.Now() })
		log.Info("module starting", "image", spec.Image, "restarts", attempt)
		err := h.runOnce(ctx, md, spec, s)
		if ctx.Err() != nil {
			s.set(func(st *ModuleStatus) { st.State = StateStopped })
			log.Info("module stopped")
			return
		}
		exit := ""
		if err != nil {
			exit = err.Error()
		}
		restart := false
		switch spec.RestartPolicy {
		case RestartAlways:
			restart = true
		case RestartOnFailure:
			restart = err != nil && !errors.Is(err, errUnhealthy)
		case RestartOnUnhealthy:
			restart = err != nil
		}
		if !restart {
			state := StateStopped
			if err != nil {
				state = StateFailed
				log.Error("module failed; restart policy says no restart", "err", err, "restartPolicy", spec.RestartPolicy)
			} else {
				log.Info("module exited", "restartPolicy", spec.RestartPolicy)
			}
			s.set(func(st *ModuleStatus) { st.State, st.LastExit = state, exit })
			// Keep the supervisor's slot until the module is stopped or
			// redeployed, so status shows why it is not running.
			<-ctx.Done()
			return
		}
		if time.Since(start) >= h.opts.Backoff.ResetAfter {
			attempt = 0
		}
		delay := h.opts.Backoff.delay(attempt)
		attempt++
		s.set(func(st *ModuleStatus) { st.State, st.LastExit, st.RestartCount = StateBackoff, exit, st.RestartCount+1 })
		if err != nil {
			log.Warn("module failed; restarting", "err", err, "in", delay)
		} else {
			log.Info("module exited; restarting", "in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			s.set(func(st *ModuleStatus) { st.State = StateStopped })
			return
		}
	}
}

// runOnce runs the module once with a fresh client and returns why it
// ended: its own error, a recovered panic, or errUnhealthy.
func (h *Hub) runOnce(parent context.Context, md *module, spec ModuleSpec, s *supervisor) (err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	c := newClient(h, md, maps.Clone(spec.Env))
	c.cancel = cancel
	c.status = func(ok bool, reason string) {
		s.set(func(st *ModuleStatus) { st.Healthy, st.Health = ok, reason })
	}
	c.runCtx = ctx
	c.started = time.Now()
	if spec.RestartPolicy == RestartOnUnhealthy || spec.RestartPolicy == RestartAlways {
		c.restart = func(reason string) { cancel(fmt.Errorf("%w: %s", errUnhealthy, reason)) }
	}
	md.active.Store(c)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.dispatch(ctx)
	}()

	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = c.recovered("Run", r)
			}
		}()
		return spec.Module.Run(ctx, c)
	}()
	// A handler's panic or an unhealthy report cancels the run with a
	// cause; that, not what Run made of the cancellation, is why it ended.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	cancel(nil)
	md.active.CompareAndSwap(c, nil)
	wg.Wait()
	c.stop()
	if parent.Err() != nil {
		return nil
	}
	return err
}
