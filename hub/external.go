package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
	"github.com/tinyedge/tinyedge/store"
)

// External modules and leaf devices.
//
// An external module (ModuleSpec.External) is a program outside this
// process that connects to the hub's local MQTT endpoint (hub/edge) with
// its module identity, as it would connect to edgeHub. The hub keeps its
// twin like an in-process module's, and what routes send to its inputs
// waits in a queue per input until the endpoint delivers it:
//
//   - With Options.Store, each input of an external module is a durable
//     store queue, InputQueue(module, input), appended in the same commit
//     as the message's other durable targets ($upstream, other external
//     inputs): Send returns only after that commit. The endpoint reads the
//     queues with Inputs, acknowledges what the module acknowledged and
//     rewinds on disconnect, so nothing routed to an external module is
//     lost across disconnects, restarts or power cuts.
//   - Without a store (tests), each input is a bounded queue in memory
//     (Options.InputCapacity messages; a full queue blocks the sender).
//     Its messages are lost when the process ends.
//
// Leaf devices are downstream devices that connect to the endpoint with
// their own device identity. Their telemetry enters the router with
// source /messages and their own connectionDeviceId (SendLeaf); their
// twins are kept by the hub, and cached in the store, like a module's,
// and synced with the cloud on the leaf's own upstream connection when
// Options.CloudLeaves names them (cloud.go). Their sessions are counted
// (SetConnected) so the upstream link knows when they need that
// connection (ConnectedLeaves).

// ErrNotExternal is returned (wrapped) for a module that is deployed but
// runs in-process, where an external module is needed.
var ErrNotExternal = errors.New("module is not external")

// InputQueue is the name of the store queue holding what routes send to
// input of the external module.
func InputQueue(module, input string) string {
	return inputQueuePrefix(module) + input
}

func inputQueuePrefix(module string) string { return "$module/" + module + "/inputs/" }

// externalModuleOf returns the module whose input queue is named queue.
func externalModuleOf(queue string) (string, bool) {
	rest, ok := strings.CutPrefix(queue, "$module/")
	if !ok {
		return "", false
	}
	module, _, ok := strings.Cut(rest, "/inputs/")
	return module, ok
}

// Identity is who connects to the local endpoint: a module of this edge
// device (DeviceID is the edge device's id) or a leaf device (ModuleID
// empty).
type Identity struct {
	DeviceID string
	ModuleID string
}

// String is "device/module", or "device" for a device.
func (id Identity) String() string {
	if id.ModuleID == "" {
		return id.DeviceID
	}
	return id.DeviceID + "/" + id.ModuleID
}

// RemoteMethodHandler answers a direct method for an identity connected
// to the local endpoint. ctx ends at the caller's timeout; the handler
// returns an error wrapping ErrMethodTimeout when no answer came in time.
type RemoteMethodHandler func(ctx context.Context, req MethodRequest) (MethodResponse, error)

// externals is the hub's state for external modules and leaf devices.
// Its zero value is ready; mu is taken after Hub.mu when both are held.
type externals struct {
	mu        sync.Mutex
	queues    map[string]map[string]*extQueue // by module, input
	ready     map[string]chan struct{}        // by module: something was queued; capacity 1
	leaves    map[string]*module              // leaf twins, by device id
	watchers  map[*module]map[chan struct{}]struct{}
	methods   map[Identity]*methodReg
	connected map[string]int    // by module: open sessions
	leafConns map[string]int    // by leaf device: open sessions
	leafGen   map[string]uint64 // by leaf device: sessions opened so far
	leavesCh  chan struct{}     // closed when a leaf's session opens or closes
}

type methodReg struct{ f RemoteMethodHandler }

// extQueue is one input of an external module.
type extQueue struct {
	module, input string
	name          string    // the store queue
	mem           *memQueue // without a store
}

func (e *externals) init() {
	if e.queues == nil {
		e.queues = map[string]map[string]*extQueue{}
		e.ready = map[string]chan struct{}{}
		e.leaves = map[string]*module{}
		e.watchers = map[*module]map[chan struct{}]struct{}{}
		e.methods = map[Identity]*methodReg{}
		e.connected = map[string]int{}
		e.leafConns = map[string]int{}
		e.leafGen = map[string]uint64{}
	}
}

// queue returns the queue of the external module's input, making it.
func (h *Hub) extQueue(module, input string) *extQueue {
	e := &h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	qs := e.queues[module]
	if qs == nil {
		qs = map[string]*extQueue{}
		e.queues[module] = qs
	}
	q := qs[input]
	if q == nil {
		q = &extQueue{module: module, input: input, name: InputQueue(module, input)}
		if !h.durable() {
			q.mem = newMemQueue(h.opts.InputCapacity)
		}
		qs[input] = q
	}
	return q
}

func (h *Hub) readyChan(module string) chan struct{} {
	e := &h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	c := e.ready[module]
	if c == nil {
		c = make(chan struct{}, 1)
		e.ready[module] = c
	}
	return c
}

// wakeModule tells the reader of an external module's inputs that
// something was queued.
func (h *Hub) wakeModule(module string) {
	select {
	case h.readyChan(module) <- struct{}{}:
	default:
	}
}

// IsExternal reports whether module is deployed as an external module.
func (h *Hub) IsExternal(module string) bool {
	md := h.lookupModule(module)
	if md == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return md.spec.External
}

func (h *Hub) externalModule(module string) (*module, error) {
	md := h.lookupModule(module)
	if md == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownModule, module)
	}
	h.mu.Lock()
	ext := md.spec.External
	h.mu.Unlock()
	if !ext {
		return nil, fmt.Errorf("%w: %q runs in-process", ErrNotExternal, module)
	}
	return md, nil
}

// SetConnected records that a session of an external module or a leaf
// device opened (true) or closed (false) on the local endpoint.
// ModuleStatus shows an external module as running while it has a
// session; the upstream link keeps a leaf device's own connection to the
// cloud open while the leaf has one, and fetches its twin from the cloud
// for each new session (ConnectedLeaves, SyncedTwin).
func (h *Hub) SetConnected(id Identity, connected bool) {
	leaf := id.ModuleID == ""
	if leaf && connected {
		// Before the link hears of the session, so the fetch it makes
		// for it is the one SyncedTwin waits for.
		if md, err := h.identityTwin(id); err == nil && h.cloudSync(md) {
			md.twinMu.Lock()
			if md.cloudFresh == nil {
				md.cloudFresh = make(chan struct{})
			}
			md.twinMu.Unlock()
		}
	}
	e := &h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	key, counts := id.ModuleID, e.connected
	if leaf {
		key, counts = id.DeviceID, e.leafConns
	}
	if connected {
		counts[key]++
	} else if counts[key] > 0 {
		counts[key]--
	}
	if counts[key] == 0 {
		delete(counts, key)
	}
	if leaf {
		if connected {
			e.leafGen[key]++
		}
		if e.leavesCh != nil {
			close(e.leavesCh)
			e.leavesCh = nil
		}
	}
}

// ConnectedLeaves returns the leaf devices that have a session on the
// local endpoint now, each with the number of sessions it opened so far
// (a new number is a new session), and a channel closed when that
// changes.
func (h *Hub) ConnectedLeaves() (map[string]uint64, <-chan struct{}) {
	e := &h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	leaves := make(map[string]uint64, len(e.leafConns))
	for l := range e.leafConns {
		leaves[l] = e.leafGen[l]
	}
	if e.leavesCh == nil {
		e.leavesCh = make(chan struct{})
	}
	return leaves, e.leavesCh
}

// SyncedTwin is IdentityTwin for a client's twin GET: a leaf device
// whose twin is synced with the cloud (Options.CloudLeaves) gets it once
// the upstream link has fetched it from the cloud for the leaf's current
// session, as IoT Hub would answer, or, when that takes until ctx ends
// (offline), as cached.
func (h *Hub) SyncedTwin(ctx context.Context, id Identity) (twin.Twin, error) {
	md, err := h.identityTwin(id)
	if err != nil {
		return twin.Twin{}, err
	}
	md.twinMu.Lock()
	fresh := md.cloudFresh
	md.twinMu.Unlock()
	if fresh != nil {
		select {
		case <-fresh:
		case <-ctx.Done():
		}
	}
	return md.twinSnapshot(), nil
}

func (h *Hub) externalStatus(name string) ModuleStatus {
	e := &h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.connected[name] > 0 {
		return ModuleStatus{Name: name, State: StateRunning, Healthy: true}
	}
	return ModuleStatus{Name: name, State: StateStopped, Healthy: true}
}

// SendLeaf accepts telemetry from a leaf device connected to the local
// endpoint: its route source is /messages, its connectionDeviceId the
// leaf's id.
func (h *Hub) SendLeaf(ctx context.Context, deviceID string, m *message.Message) error {
	if deviceID == "" || deviceID == h.opts.DeviceID {
		return fmt.Errorf("send from leaf device %q: not a leaf device id", deviceID)
	}
	return h.accept(ctx, deviceID, "", "", m)
}

// SendBatch accepts messages from an identity connected to the local
// endpoint, in order, as Send (a module; each message's output is its
// System.OutputName, the $.on the sender gave) or SendLeaf (a leaf
// device) would one after the other — except that the durable appends
// of the whole batch share store commits and keep their order. It
// returns how many messages, from the first, the hub took; err says why
// the next one was not taken. Messages after it may have reached some
// sinks: the sender sends them again (at-least-once).
func (h *Hub) SendBatch(ctx context.Context, from Identity, msgs []*message.Message) (int, error) {
	return h.StartSendBatch(ctx, from, msgs).Wait()
}

// PendingSend is a batch of messages routed and on its way to its store
// commit (StartSendBatch).
type PendingSend struct {
	h       *Hub
	msgs    []*message.Message
	batch   []pendingMessage
	taken   int
	failed  error
	appends *store.PendingBatch // nil when nothing goes to the store
}

type pendingMessage struct {
	m       *message.Message
	targets []store.Target
}

// StartSendBatch is SendBatch without the wait for the store: it routes
// the messages (in-memory sinks have them when it returns) and hands
// their durable appends to the store's writer; Wait waits for the commit
// and returns what SendBatch would. A connection that starts its next
// batch while the last one commits keeps its messages' order (see
// store.StartAppendBatch) and has them in the next commit instead of one
// round trip later. If a batch fails, batches started after it may still
// be committed: the sender sends their messages again after the failed
// one, so a sink may see those twice and out of order (at-least-once).
// Every started batch must be waited for: Wait is what tells the
// readers of the queues that the messages are there.
func (h *Hub) StartSendBatch(ctx context.Context, from Identity, msgs []*message.Message) *PendingSend {
	p := &PendingSend{h: h, msgs: msgs, taken: len(msgs)}
	if from.ModuleID == "" && (from.DeviceID == "" || from.DeviceID == h.opts.DeviceID) {
		p.taken, p.failed = 0, fmt.Errorf("send from device %q: not a leaf device id", from.DeviceID)
		return p
	}
	p.batch = make([]pendingMessage, 0, len(msgs))
	entries := make([]store.Entry, 0, len(msgs))
	for i, m := range msgs {
		output := ""
		if from.ModuleID != "" {
			output = m.System.OutputName
		}
		keys, err := h.stamp(from.DeviceID, from.ModuleID, output, m)
		if err == nil {
			var targets []store.Target
			if targets, err = h.routeMemory(ctx, m, keys); err == nil && len(targets) > 0 {
				p.batch = append(p.batch, pendingMessage{m, targets})
				entries = append(entries, store.Entry{Targets: targets, Payload: message.Marshal(m), Meta: store.Meta{Enqueued: m.System.EnqueuedTime}})
			}
		}
		if err != nil {
			p.taken, p.failed = i, err
			break
		}
	}
	if len(entries) > 0 {
		p.appends = h.opts.Store.StartAppendBatch(ctx, entries)
	}
	return p
}

// Wait waits for the batch's store commit and returns how many messages,
// from the first, the hub took; err says why the next one was not taken.
// Call it once.
func (p *PendingSend) Wait() (int, error) {
	if p.appends == nil {
		return p.taken, p.failed
	}
	h := p.h
	_, errs := p.appends.Wait()
	select {
	case h.pumpWake <- struct{}{}:
	default:
	}
	for i, err := range errs {
		if err != nil {
			if errors.Is(err, store.ErrFull) {
				h.drop("store_full")
			}
			// Messages before this one were all taken; find its index.
			for j, m := range p.msgs {
				if m == p.batch[i].m {
					return j, fmt.Errorf("store for %s: %w", durableNames(p.batch[i].targets), err)
				}
			}
		}
		h.durableDone(p.batch[i].targets)
	}
	return p.taken, p.failed
}

// IdentityTwin returns a copy of an identity's twin: a deployed module's
// or a leaf device's.
func (h *Hub) IdentityTwin(id Identity) (twin.Twin, error) {
	md, err := h.identityTwin(id)
	if err != nil {
		return twin.Twin{}, err
	}
	return md.twinSnapshot(), nil
}

// PatchReported merges a reported-properties patch into the identity's
// twin (null deletes a member) and returns the new reported version.
func (h *Hub) PatchReported(id Identity, patch map[string]any) (int64, error) {
	md, err := h.identityTwin(id)
	if err != nil {
		return 0, err
	}
	return md.patchReported(patch)
}

// PatchLeafDesired applies a desired-properties patch to a leaf device's
// twin, as the cloud would, and notifies its watchers.
func (h *Hub) PatchLeafDesired(deviceID string, patch map[string]any) (int64, error) {
	md, err := h.identityTwin(Identity{DeviceID: deviceID})
	if err != nil {
		return 0, err
	}
	return md.patchDesired(patch)
}

// identityTwin returns the module record holding the identity's twin.
// A leaf device's is made (from the store's cache, if it has one) the
// first time it is asked for.
func (h *Hub) identityTwin(id Identity) (*module, error) {
	if id.ModuleID != "" {
		if id.DeviceID != h.opts.DeviceID {
			return nil, fmt.Errorf("%w %q of device %q: modules of other devices are not kept here", ErrUnknownModule, id.ModuleID, id.DeviceID)
		}
		return h.twinFor(id.ModuleID)
	}
	if id.DeviceID == "" || id.DeviceID == h.opts.DeviceID {
		return nil, fmt.Errorf("twin of device %q: only leaf devices' twins are kept here", id.DeviceID)
	}
	e := &h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	if md := e.leaves[id.DeviceID]; md != nil {
		return md, nil
	}
	key := twinKey(id)
	tw, deployed, ok := h.loadTwin(key)
	if !ok {
		tw, _ = twin.New(nil)
	}
	md := &module{id: key, hub: h, tw: tw, deployed: deployed}
	h.loadCloudTwin(md)
	e.leaves[id.DeviceID] = md
	return md, nil
}

// WatchDesired returns a channel that receives a signal (capacity 1, so
// signals fold) after each change of the identity's desired properties,
// and a function that stops the watch.
func (h *Hub) WatchDesired(id Identity) (<-chan struct{}, func(), error) {
	md, err := h.identityTwin(id)
	if err != nil {
		return nil, nil, err
	}
	c := make(chan struct{}, 1)
	e := &h.ext
	e.mu.Lock()
	e.init()
	ws := e.watchers[md]
	if ws == nil {
		ws = map[chan struct{}]struct{}{}
		e.watchers[md] = ws
	}
	ws[c] = struct{}{}
	e.mu.Unlock()
	return c, func() {
		e.mu.Lock()
		delete(e.watchers[md], c)
		if len(e.watchers[md]) == 0 {
			delete(e.watchers, md)
		}
		e.mu.Unlock()
	}, nil
}

// desiredChanged signals the watchers of md's desired properties.
func (h *Hub) desiredChanged(md *module) {
	e := &h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := range e.watchers[md] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// ServeMethods makes f answer the direct methods of an identity connected
// to the local endpoint, replacing any handler before it; InvokeMethod
// calls it. The returned function removes f (and only f).
func (h *Hub) ServeMethods(id Identity, f RemoteMethodHandler) func() {
	reg := &methodReg{f: f}
	e := &h.ext
	e.mu.Lock()
	e.init()
	e.methods[id] = reg
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		if e.methods[id] == reg {
			delete(e.methods, id)
		}
		e.mu.Unlock()
	}
}

// invokeRemote calls the method on an identity served by the local
// endpoint; ok is false when the target is not such an identity.
func (h *Hub) invokeRemote(ctx context.Context, deviceID, moduleID string, req MethodRequest, timeout time.Duration) (MethodResponse, bool, error) {
	id := Identity{DeviceID: deviceID, ModuleID: moduleID}
	isLeaf := moduleID == "" && deviceID != h.opts.DeviceID
	external := moduleID != "" && deviceID == h.opts.DeviceID && h.IsExternal(moduleID)
	if !isLeaf && !external {
		return MethodResponse{}, false, nil
	}
	e := &h.ext
	e.mu.Lock()
	var reg *methodReg
	if e.methods != nil {
		reg = e.methods[id]
	}
	e.mu.Unlock()
	if reg == nil {
		// As IoT Hub answers for a device that is not connected or has
		// not subscribed to methods.
		return MethodResponse{Status: 404, Payload: errorPayload(fmt.Sprintf("%s is not connected or has not subscribed to direct methods", id))}, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := reg.f(ctx, req)
	if err != nil {
		return MethodResponse{}, true, fmt.Errorf("method %q on %s: %w", req.Name, id, err)
	}
	return resp, true, nil
}

// Input is a message read from an external module's input queue.
type Input struct {
	// Message has System.InputName set; it is the caller's.
	Message *message.Message
	queue   *extQueue
	seq     uint64
}

// Inputs reads the queues of one external module's inputs, in order
// within each input. Only one reader may use a module's queues at a time:
// read positions are shared (see store.Store.Read).
type Inputs struct {
	h      *Hub
	module string
	ready  chan struct{}
	next   int // the input to read first next time, so none starves
}

// ExternalInputs returns the reader of an external module's input queues.
// With a store it also finds queues that earlier runs left messages in,
// for inputs no route names any more.
func (h *Hub) ExternalInputs(module string) (*Inputs, error) {
	if _, err := h.externalModule(module); err != nil {
		return nil, err
	}
	if h.durable() {
		st, err := h.opts.Store.Stats()
		if err != nil {
			return nil, fmt.Errorf("inputs of %s: list store queues: %w", module, err)
		}
		prefix := inputQueuePrefix(module)
		for _, ep := range st.Endpoints {
			if input, ok := strings.CutPrefix(ep.Endpoint, prefix); ok && ep.Queued > 0 {
				h.extQueue(module, input)
			}
		}
	}
	return &Inputs{h: h, module: module, ready: h.readyChan(module)}, nil
}

// Ready receives a signal when messages were queued for the module since
// the last signal. A reader that read less than it asked for waits on it.
func (q *Inputs) Ready() <-chan struct{} { return q.ready }

func (q *Inputs) queues() []*extQueue {
	e := &q.h.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	qs := make([]*extQueue, 0, len(e.queues[q.module]))
	for _, x := range e.queues[q.module] {
		qs = append(qs, x)
	}
	// Map order is random; a stable order keeps the rotation fair.
	slices.SortFunc(qs, func(a, b *extQueue) int { return strings.Compare(a.input, b.input) })
	return qs
}

// Read returns up to max messages not returned before (since the last
// Rewind), taking the inputs in turn; want, if not nil, says which inputs
// to read (the ones the module subscribed to). Undecodable stored records
// are dropped (counted as undecodable) rather than returned forever.
func (q *Inputs) Read(max int, want func(input string) bool) ([]Input, error) {
	qs := q.queues()
	var out []Input
	for i := 0; i < len(qs) && len(out) < max; i++ {
		x := qs[(q.next+i)%len(qs)]
		if want != nil && !want(x.input) {
			continue
		}
		n := len(out)
		var err error
		out, err = q.readQueue(x, max-len(out), out)
		if err != nil {
			return out, err
		}
		if len(out) > n {
			q.next = (q.next + i + 1) % len(qs)
		}
	}
	return out, nil
}

func (q *Inputs) readQueue(x *extQueue, max int, out []Input) ([]Input, error) {
	if x.mem != nil {
		for _, it := range x.mem.read(max) {
			m := it.m.Clone()
			m.System.InputName = x.input
			out = append(out, Input{Message: m, queue: x, seq: it.seq})
		}
		return out, nil
	}
	st := q.h.opts.Store
	items, err := st.Read(x.name, max)
	if err != nil {
		return out, fmt.Errorf("read inputs of %s: %w", q.module, err)
	}
	var bad []uint64
	for _, it := range items {
		m, err := message.Unmarshal(it.Payload)
		if err != nil {
			q.h.log.Error("dropping a stored message that cannot be decoded", "queue", x.name, "seq", it.Seq, "err", err)
			q.h.drop("undecodable")
			bad = append(bad, it.Seq)
			continue
		}
		m.System.InputName = x.input
		out = append(out, Input{Message: m, queue: x, seq: it.Seq})
	}
	if len(bad) > 0 {
		if err := st.Ack(x.name, bad...); err != nil {
			return out, fmt.Errorf("drop undecodable inputs of %s: %w", q.module, err)
		}
	}
	return out, nil
}

// Ack removes delivered messages from their queues for good.
func (q *Inputs) Ack(ins ...Input) error {
	byQueue := map[*extQueue][]uint64{}
	for _, in := range ins {
		byQueue[in.queue] = append(byQueue[in.queue], in.seq)
	}
	var errs []error
	for x, seqs := range byQueue {
		if x.mem != nil {
			x.mem.ack(seqs)
			continue
		}
		if err := q.h.opts.Store.Ack(x.name, seqs...); err != nil {
			errs = append(errs, fmt.Errorf("acknowledge inputs of %s: %w", q.module, err))
		}
	}
	return errors.Join(errs...)
}

// Rewind makes every message read and not acknowledged readable again, in
// order: the reader lost them (the module disconnected).
func (q *Inputs) Rewind() error {
	var errs []error
	for _, x := range q.queues() {
		if x.mem != nil {
			x.mem.rewind()
			continue
		}
		if err := q.h.opts.Store.Rewind(x.name); err != nil {
			errs = append(errs, fmt.Errorf("rewind inputs of %s: %w", q.module, err))
		}
	}
	return errors.Join(errs...)
}

// Deliver implements Endpoint for an external input without a store.
func (x *extQueue) Deliver(ctx context.Context, m *message.Message, _ Delivery) error {
	return x.mem.put(ctx, m)
}

// Name is the queue's name.
func (x *extQueue) Name() string { return x.name }

var _ Endpoint = (*extQueue)(nil)

// memQueue is an external input's queue without a store: a bounded list
// with a read position, acknowledged by sequence number.
type memQueue struct {
	capacity int

	mu    sync.Mutex
	items []memItem
	pos   int           // items before it were returned by read
	space chan struct{} // closed (and replaced) when an ack makes room
	seq   uint64
}

type memItem struct {
	seq uint64
	m   *message.Message
}

func newMemQueue(capacity int) *memQueue {
	return &memQueue{capacity: capacity, space: make(chan struct{})}
}

func (q *memQueue) put(ctx context.Context, m *message.Message) error {
	for {
		q.mu.Lock()
		if len(q.items) < q.capacity {
			q.seq++
			q.items = append(q.items, memItem{seq: q.seq, m: m})
			q.mu.Unlock()
			return nil
		}
		space := q.space
		q.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return fmt.Errorf("external input queue is full: %w", ctx.Err())
		}
	}
}

func (q *memQueue) read(max int) []memItem {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(max, len(q.items)-q.pos)
	out := append([]memItem(nil), q.items[q.pos:q.pos+n]...)
	q.pos += n
	return out
}

func (q *memQueue) ack(seqs []uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	done := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		done[s] = true
	}
	kept, before := q.items[:0], 0
	for i, it := range q.items {
		if done[it.seq] {
			if i < q.pos {
				before++
			}
			continue
		}
		kept = append(kept, it)
	}
	q.pos -= before
	clear(q.items[len(kept):])
	q.items = kept
	close(q.space)
	q.space = make(chan struct{})
}

func (q *memQueue) rewind() {
	q.mu.Lock()
	q.pos = 0
	q.mu.Unlock()
}
