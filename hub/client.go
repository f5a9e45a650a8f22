package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// InputHandler handles one message that arrived on a module input. The
// message's System.InputName names the input. It must not keep or modify m
// after returning; Clone it to forward a changed copy.
type InputHandler func(ctx context.Context, m *message.Message) error

// DesiredHandler is told about each desired-properties patch, with the
// desired version after it.
type DesiredHandler func(ctx context.Context, patch map[string]any, version int64)

// MethodRequest is a direct-method call.
type MethodRequest struct {
	Name    string
	Payload json.RawMessage // JSON, or empty
}

// MethodResponse is a direct method's answer: an HTTP-like status and a
// JSON payload (or empty).
type MethodResponse struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// MethodHandler answers a direct method. ctx ends at the caller's timeout.
type MethodHandler func(ctx context.Context, req MethodRequest) MethodResponse

// Client is an in-process module's connection to the hub, the counterpart
// of the Azure IoT SDKs' ModuleClient. The hub makes a new Client for each
// run of a module; handlers registered on it last for that run.
//
// Input handlers and desired-property handlers are called one at a time,
// in order, from one goroutine the hub owns; method handlers may run
// concurrently with them.
type Client struct {
	hub *Hub
	md  *module
	log *slog.Logger
	env map[string]string

	mu       sync.Mutex
	inputs   atomic.Pointer[map[string]InputHandler] // copy on write: read per message without the lock
	npatches atomic.Int32                            // desired properties changed since seen; read per message without the lock
	methods  map[string]MethodHandler
	desired  DesiredHandler
	seenMu   sync.Mutex     // guards seen and seenVer: the dispatcher and Twin both move them
	seen     map[string]any // the desired document as the module last saw it (a note or Twin)
	seenVer  int64          // its version
	wake     chan struct{}  // a handler was registered or a patch queued
	healthy  bool
	stopping bool

	started time.Time                    // when the run began
	runCtx  context.Context              // ends with the run
	cancel  context.CancelCauseFunc      // ends the run, with the reason
	calls   sync.WaitGroup               // running method handlers
	restart func(reason string)          // asks the supervisor for a restart when unhealthy
	status  func(ok bool, reason string) // records the health in the module's status
}

type patchNote struct {
	patch   map[string]any
	version int64
}

func newClient(h *Hub, md *module, env map[string]string) *Client {
	c := &Client{
		hub:     h,
		md:      md,
		log:     h.log.With("module", md.id),
		env:     env,
		methods: map[string]MethodHandler{},
		wake:    make(chan struct{}, 1),
		healthy: true,
	}
	snap := md.twinSnapshot().Desired
	c.seen, c.seenVer = snap.Doc, snap.Version
	return c
}

// DeviceID is the edge device's id.
func (c *Client) DeviceID() string { return c.hub.opts.DeviceID }

// ModuleID is this module's id, its name in the deployment.
func (c *Client) ModuleID() string { return c.md.id }

// Logger is a logger tagged with the module's name.
func (c *Client) Logger() *slog.Logger { return c.log }

// Environ returns a copy of all the module's environment variables from
// its deployment entry.
func (c *Client) Environ() map[string]string {
	out := make(map[string]string, len(c.env))
	for k, v := range c.env {
		out[k] = v
	}
	return out
}

// Env returns an environment variable from the module's deployment entry
// ("env": {"K": {"value": "V"}}). Built-in modules read their settings
// here instead of from the process environment.
func (c *Client) Env(key string) (string, bool) {
	v, ok := c.env[key]
	return v, ok
}

// SendOutput sends m on the named output. It returns once every sink the
// routes select has taken m, blocking while an in-process input is full.
// SendOutput takes ownership of m.
func (c *Client) SendOutput(ctx context.Context, output string, m *message.Message) error {
	return c.hub.Send(ctx, c.md.id, output, m)
}

// OnInput registers the handler for one input, replacing any before it.
func (c *Client) OnInput(input string, h InputHandler) {
	c.mu.Lock()
	next := map[string]InputHandler{input: h}
	if cur := c.inputs.Load(); cur != nil {
		for k, v := range *cur {
			if k != input {
				next[k] = v
			}
		}
	}
	c.inputs.Store(&next)
	c.mu.Unlock()
	c.signal()
}

// OnMethod registers the handler for one direct method.
func (c *Client) OnMethod(name string, h MethodHandler) {
	c.mu.Lock()
	c.methods[name] = h
	c.mu.Unlock()
}

// OnDesiredChange registers the handler for desired-property patches.
func (c *Client) OnDesiredChange(h DesiredHandler) {
	c.mu.Lock()
	c.desired = h
	c.mu.Unlock()
	c.signal()
}

// Twin returns a copy of the module's own twin.
func (c *Client) Twin(ctx context.Context) (twin.Twin, error) {
	if err := ctx.Err(); err != nil {
		return twin.Twin{}, err
	}
	tw := c.md.twinSnapshot()
	// What the module reads is what it has seen: the next desired-change
	// note is relative to it. Otherwise a change made and undone between
	// the read and the next note (a member added, then deleted) would fold
	// into nothing, and the module would keep the member it read.
	c.seenMu.Lock()
	if tw.Desired.Version >= c.seenVer {
		c.seen, c.seenVer = tw.Desired.Doc, tw.Desired.Version
	}
	c.seenMu.Unlock()
	return tw, nil
}

// UpdateReported merges patch into the module's reported properties (null
// deletes a member) and returns the new reported version.
func (c *Client) UpdateReported(ctx context.Context, patch map[string]any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return c.md.patchReported(patch)
}

// SetHealthy reports the module's health. A module whose restart policy is
// on-unhealthy or always is restarted when it reports itself unhealthy.
func (c *Client) SetHealthy(ok bool, reason string) {
	c.mu.Lock()
	changed := c.healthy != ok
	c.healthy = ok
	restart, status := c.restart, c.status
	c.mu.Unlock()
	if changed && status != nil {
		status(ok, reason)
	}
	if changed && !ok {
		c.log.Warn("module reports itself unhealthy", "reason", reason)
		if restart != nil {
			restart(reason)
		}
	}
}

// InvokeMethod calls a direct method on another module of this device
// (deviceID empty or the edge device's id) and waits at most timeout for
// the answer (30 s when zero).
func (c *Client) InvokeMethod(ctx context.Context, deviceID, moduleID string, req MethodRequest, timeout time.Duration) (MethodResponse, error) {
	if deviceID == "" {
		deviceID = c.hub.opts.DeviceID
	}
	return c.hub.InvokeMethod(ctx, deviceID, moduleID, req, timeout)
}

func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// queuePatch tells the client that the desired properties changed. The
// patch itself is not queued: the dispatcher sends the module the
// difference between what it last saw and what is current, so patches
// arriving faster than the module takes them fold into one and nothing
// piles up.
func (c *Client) queuePatch() {
	c.npatches.Store(1)
	c.signal()
}

// nextPatch returns the change to the desired properties since the module
// last saw them, if there is one and a handler to take it.
func (c *Client) nextPatch() (patchNote, DesiredHandler, bool) {
	if c.npatches.Load() == 0 {
		return patchNote{}, nil, false
	}
	c.mu.Lock()
	h := c.desired
	c.mu.Unlock()
	if h == nil {
		return patchNote{}, nil, false
	}
	c.npatches.Store(0)
	cur := c.md.twinSnapshot().Desired
	c.seenMu.Lock()
	patch := twin.Diff(c.seen, cur.Doc)
	c.seen, c.seenVer = cur.Doc, cur.Version
	c.seenMu.Unlock()
	if len(patch) == 0 {
		return patchNote{}, nil, false
	}
	return patchNote{patch: patch, version: cur.Version}, h, true
}

func (c *Client) inputHandler(name string) InputHandler {
	if m := c.inputs.Load(); m != nil {
		return (*m)[name]
	}
	return nil
}

// errPanic marks a run that ended in a recovered panic.
var errPanic = errors.New("module panicked")

// recovered turns a recovered panic value into an error with the stack,
// and ends the run with it.
func (c *Client) recovered(where string, r any) error {
	err := fmt.Errorf("%w in %s: %v", errPanic, where, r)
	c.log.Error("recovered panic", "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if c.cancel != nil {
		c.cancel(err)
	}
	return err
}

// dispatch hands input messages and desired patches to the handlers, one
// at a time, until ctx ends. A message whose input has no handler yet
// waits (and holds back the ones behind it) until one is registered or
// the run is HandlerWait old; after that it is dropped and counted
// (no_handler) with a warning.
func (c *Client) dispatch(ctx context.Context) {
	in := c.md.inbox
	batch, i := in.pending, 0
	in.pending = nil
	// On the way out, what was taken but not handled goes back for the
	// next run.
	defer func() {
		if i < len(batch) {
			in.pending = append([]*message.Message(nil), batch[i:]...)
		}
	}()
	for {
		if p, h, ok := c.nextPatch(); ok {
			c.callDesired(ctx, h, p)
			continue
		}
		if i == len(batch) {
			clear(batch)
			batch, i = in.take(batch), 0
			// Under load the next message is usually a moment away: yield
			// a few times before parking, so a busy sender rarely has to
			// wake this goroutine.
			for spin := 0; len(batch) == 0 && spin < 4; spin++ {
				runtime.Gosched()
				batch = in.take(batch)
			}
			if len(batch) == 0 {
				select {
				case <-in.ready:
				case <-c.wake:
				case <-ctx.Done():
					return
				}
				continue
			}
		}
		m := batch[i]
		h := c.inputHandler(m.System.InputName)
		if h == nil {
			// A module registers its handlers as it starts; give it
			// HandlerWait to do so, then drop what no handler will take,
			// loudly, so one unused input cannot stall the others.
			if wait := c.hub.opts.HandlerWait - time.Since(c.started); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-c.wake:
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
				t.Stop()
				continue
			}
			c.log.Warn("message for an input the module does not handle; dropped", "input", m.System.InputName,
				"messageId", m.System.MessageID, "from", m.Source())
			c.hub.drop("no_handler")
			batch[i] = nil
			i++
			continue
		}
		batch[i] = nil
		i++
		c.callInput(ctx, h, m)
		if ctx.Err() != nil {
			return
		}
	}
}

func (c *Client) callInput(ctx context.Context, h InputHandler, m *message.Message) {
	defer func() {
		if r := recover(); r != nil {
			_ = c.recovered("input handler "+m.System.InputName, r)
		}
	}()
	if err := h(ctx, m); err != nil && ctx.Err() == nil {
		c.log.Warn("input handler failed", "input", m.System.InputName, "messageId", m.System.MessageID, "err", err)
		c.hub.drop("handler_error")
	}
}

func (c *Client) callDesired(ctx context.Context, h DesiredHandler, p patchNote) {
	defer func() {
		if r := recover(); r != nil {
			_ = c.recovered("desired-properties handler", r)
		}
	}()
	h(ctx, p.patch, p.version)
}

// callMethod runs a method handler in a goroutine the client waits for at
// the end of the run, so a handler that outlives its caller's timeout is
// still accounted for.
func (c *Client) callMethod(ctx context.Context, req MethodRequest) (MethodResponse, error) {
	c.mu.Lock()
	h := c.methods[req.Name]
	stopping := c.stopping
	registered := len(c.methods)
	if h != nil && !stopping {
		c.calls.Add(1)
	}
	c.mu.Unlock()
	if stopping {
		return MethodResponse{}, fmt.Errorf("%w: %s is stopping", ErrModuleNotActive, c.md.id)
	}
	if h == nil && registered == 0 {
		// Like a device that has not subscribed to methods yet.
		return MethodResponse{Status: 404, Payload: errorPayload(fmt.Sprintf("module %s has not registered any direct method yet", c.md.id))}, nil
	}
	if h == nil {
		return MethodResponse{Status: 501, Payload: errorPayload(fmt.Sprintf("module %s has no handler for method %q", c.md.id, req.Name))}, nil
	}
	// The handler's context ends at the caller's timeout or with the run,
	// whichever is first.
	ctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(c.runCtx, cancel)
	done := make(chan MethodResponse, 1)
	go func() {
		defer cancel()
		defer unhook()
		defer c.calls.Done()
		defer func() {
			if r := recover(); r != nil {
				err := c.recovered("method "+req.Name, r)
				done <- MethodResponse{Status: 500, Payload: errorPayload(err.Error())}
			}
		}()
		done <- h(ctx, req)
	}()
	select {
	case r := <-done:
		return c.checkResponse(req, r), nil
	case <-ctx.Done():
		select {
		case r := <-done: // answered just as the deadline passed
			return c.checkResponse(req, r), nil
		default:
		}
		return MethodResponse{}, fmt.Errorf("method %q on %s: %w", req.Name, c.md.id, ErrMethodTimeout)
	}
}

// checkResponse turns a handler's answer that IoT Hub could not carry (a
// payload that is not JSON) into a 500 saying so.
func (c *Client) checkResponse(req MethodRequest, r MethodResponse) MethodResponse {
	if len(r.Payload) > 0 && !json.Valid(r.Payload) {
		c.log.Warn("method handler returned a payload that is not JSON", "method", req.Name, "status", r.Status)
		return MethodResponse{Status: 500, Payload: errorPayload(fmt.Sprintf("module %s: method %q returned a payload that is not JSON", c.md.id, req.Name))}
	}
	return r
}

// stop refuses new method calls and waits for running ones.
func (c *Client) stop() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.calls.Wait()
}

func errorPayload(msg string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return b
}
