// Package hub is tinyedge's message hub: it stamps and routes messages with
// the edgeHub route language, delivers them to in-process module inputs and
// to $upstream, keeps module twins, dispatches direct methods and
// supervises in-process modules.
//
// Subpackages hold the pieces that stand alone: message (the message
// model), route (the route language), twin (twin documents) and deploy
// (deployment manifests).
package hub

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/twin"
	"github.com/tinyedge/tinyedge/store"
)

// Errors returned (wrapped) by the hub.
var (
	ErrClosed          = errors.New("hub closed")
	ErrUnknownModule   = errors.New("unknown module")
	ErrNoUpstream      = errors.New("no upstream endpoint configured")
	ErrMethodTimeout   = errors.New("direct method timed out")
	ErrModuleNotActive = errors.New("module is not running")
)

// Options configure a Hub. The zero value works for tests: device id
// "tinyedge", a discarding logger, no upstream.
type Options struct {
	DeviceID string
	Logger   *slog.Logger
	// Upstream receives what routes send to $upstream.
	Upstream Endpoint
	// Store, when set, makes $upstream durable: messages routed there are
	// committed to the store before Send returns and a pump delivers them
	// to Upstream, acknowledging each only after Upstream took it. Module
	// twins are cached there too. The hub does not close it.
	Store *store.Store
	// InputCapacity is the number of messages each in-process module's
	// inputs buffer before senders block (backpressure). Default 256.
	InputCapacity int
	// HandlerWait is how long after a module starts a message for one of
	// its inputs waits for the module to register a handler before it is
	// dropped (and counted as no_handler). Default 5 s.
	HandlerWait time.Duration
	// Backoff paces restarts of failed modules. Zero fields take defaults.
	Backoff Backoff
	// StopTimeout is how long Close waits for each module to return after
	// its context is cancelled. Default 10 s.
	StopTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// CloudModules are the modules whose twins are synced with the cloud
	// by the upstream link (they have their own identity there): with a
	// Store, their reported patches are queued durably for the link.
	CloudModules []string
	// CloudLeaves are the leaf devices whose twins are synced with the
	// cloud by the upstream link, on their own connection: with a Store,
	// their reported patches are queued durably for the link.
	CloudLeaves []string
}

// Stats are the hub's counters, named after edgeHub's metrics.
type Stats struct {
	Received uint64            // edgehub_messages_received_total
	Sent     uint64            // edgehub_messages_sent_total (deliveries)
	Dropped  map[string]uint64 // edgehub_messages_dropped_total by reason
}

// Hub is the message hub. Make one with New, give it a deployment with
// Deploy, and Close it to stop every module.
type Hub struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	router atomic.Pointer[router]

	mu      sync.Mutex                         // guards modules, closed and writes to mods
	modules map[string]*module                 // by module id
	mods    atomic.Pointer[map[string]*module] // read-only copy of modules for the delivery path
	closed  bool

	seq       atomic.Uint64
	idPrefix  string
	idCounter atomic.Uint64
	idBlock   atomic.Pointer[idBlock]

	received atomic.Uint64
	sent     atomic.Uint64
	dropMu   sync.Mutex
	dropped  map[string]uint64

	wg sync.WaitGroup // supervisors

	ext externals // external modules and leaf devices (external.go)

	defaultTTL atomic.Int64  // the deployment's storeAndForwardConfiguration TTL
	pumpWake   chan struct{} // an append happened; capacity 1
	pumpStop   context.CancelFunc
	pumpDone   chan struct{}

	repMu sync.Mutex
	repCh chan struct{} // closed when a reported patch is queued for the cloud
}

// New returns a hub with no routes and no modules.
func New(opts Options) *Hub {
	if opts.DeviceID == "" {
		opts.DeviceID = "tinyedge"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.InputCapacity <= 0 {
		opts.InputCapacity = 256
	}
	if opts.HandlerWait <= 0 {
		opts.HandlerWait = 5 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	opts.Backoff = opts.Backoff.withDefaults()
	now := opts.Now
	if now == nil {
		now = newClock().now
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := &Hub{
		opts:     opts,
		log:      opts.Logger,
		now:      now,
		modules:  map[string]*module{},
		dropped:  map[string]uint64{},
		idPrefix: fmt.Sprintf("%016x", b[:8]),
	}
	// Ids continue from a random point so they look as random as the
	// SDKs' and do not repeat a previous run's pattern.
	h.idCounter.Store(binary.BigEndian.Uint64(b[8:]))
	h.router.Store(&router{})
	h.mods.Store(&map[string]*module{})
	if opts.Store != nil && opts.Upstream != nil {
		ctx, cancel := context.WithCancel(context.Background())
		h.pumpWake = make(chan struct{}, 1)
		h.pumpStop, h.pumpDone = cancel, make(chan struct{})
		go func() {
			defer close(h.pumpDone)
			h.pump(ctx)
		}()
	}
	return h
}

// DeviceID is the edge device's identity.
func (h *Hub) DeviceID() string { return h.opts.DeviceID }

// SetRoutes replaces the routing table atomically: messages already being
// routed finish with the old table.
func (h *Hub) SetRoutes(routes []*route.Route) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.router.Store(h.compileRouter(routes))
}

// Routes returns the routes in effect, sorted by name.
func (h *Hub) Routes() []*route.Route {
	rs := append([]*route.Route(nil), h.router.Load().routes...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs
}

// Stats returns a snapshot of the counters.
func (h *Hub) Stats() Stats {
	h.dropMu.Lock()
	d := make(map[string]uint64, len(h.dropped))
	for k, v := range h.dropped {
		d[k] = v
	}
	h.dropMu.Unlock()
	return Stats{Received: h.received.Load(), Sent: h.sent.Load(), Dropped: d}
}

func (h *Hub) drop(reason string) {
	h.dropMu.Lock()
	h.dropped[reason]++
	h.dropMu.Unlock()
}

// clock stamps enqueue times. Reading the wall clock costs about twice a
// monotonic reading, and every message is stamped, so it reads the wall
// clock at most once a second and adds the monotonic time elapsed since.
// A step of the wall clock (NTP's first sync on a board without an RTC)
// shows within a second; ordering never depends on it (Message.Seq does).
type clock struct {
	base atomic.Pointer[time.Time]
}

func newClock() *clock {
	c := &clock{}
	t := time.Now()
	c.base.Store(&t)
	return c
}

func (c *clock) now() time.Time {
	b := c.base.Load()
	if d := time.Since(*b); d >= 0 && d < time.Second {
		return b.Add(d)
	}
	t := time.Now()
	c.base.Store(&t)
	return t
}

// idBatch is how many message ids newMessageID formats at a time: one
// string holds them all, so an id costs a slice of it, not an allocation.
const idBatch = 64

const idLen = 36 // 8-4-4-4-12 hex digits

type idBlock struct {
	ids  string
	next atomic.Int32
}

// newMessageID returns an id unique to this hub process: a random prefix
// chosen at start and a counter, shaped like a UUID (8-4-4-4-12 hex
// digits) so IoT Hub tooling shows it as it shows SDK-generated ids.
// Senders take ids from the current block with one atomic add; the one
// that finds it used up formats the next.
func (h *Hub) newMessageID() string {
	for {
		b := h.idBlock.Load()
		if b != nil {
			if i := int(b.next.Add(1)) - 1; i < idBatch {
				return b.ids[i*idLen : (i+1)*idLen]
			}
		}
		nb := h.formatIDs(h.idCounter.Add(idBatch) - idBatch)
		nb.next.Store(1)
		if h.idBlock.CompareAndSwap(b, nb) {
			return nb.ids[:idLen]
		}
		// Another sender installed a block first; the ids formatted
		// here are never used, which keeps every id unique.
	}
}

// idCounterPos are the positions, last digit first, of the counter's 16
// hex digits in an id: the last two groups. The first three groups are
// the hub's random prefix.
var idCounterPos = func() (pos [16]int) {
	p := idLen - 1
	for i := range pos {
		if p == 23 {
			p-- // skip the dash
		}
		pos[i] = p
		p--
	}
	return pos
}()

func (h *Hub) formatIDs(first uint64) *idBlock {
	const digits = "0123456789abcdef"
	buf := make([]byte, idBatch*idLen)
	id := buf[:idLen]
	p := h.idPrefix
	copy(id[0:8], p[0:8])
	copy(id[9:13], p[8:12])
	copy(id[14:18], p[12:16])
	id[8], id[13], id[18], id[23] = '-', '-', '-', '-'
	c := first
	for _, pos := range idCounterPos {
		id[pos] = digits[c&0xf]
		c >>= 4
	}
	// Each next id is the one before plus one: copy it and carry.
	for k := 1; k < idBatch; k++ {
		prev, id := buf[(k-1)*idLen:k*idLen], buf[k*idLen:(k+1)*idLen]
		copy(id, prev)
		for _, pos := range idCounterPos {
			if id[pos] != 'f' {
				id[pos] = digits[strings.IndexByte(digits, id[pos])+1]
				break
			}
			id[pos] = '0'
		}
	}
	return &idBlock{ids: string(buf)}
}

// Send accepts a message from an in-process module's output: it stamps the
// system properties the hub owns, checks the size limit and routes it. It
// returns when every sink has taken the message (for in-process inputs:
// once it is in the input's buffer). Send takes ownership of m.
func (h *Hub) Send(ctx context.Context, moduleID, output string, m *message.Message) error {
	return h.accept(ctx, h.opts.DeviceID, moduleID, output, m)
}

// SendDevice accepts device telemetry (source /messages) from the edge
// device itself.
func (h *Hub) SendDevice(ctx context.Context, m *message.Message) error {
	return h.accept(ctx, h.opts.DeviceID, "", "", m)
}

func (h *Hub) accept(ctx context.Context, deviceID, moduleID, output string, m *message.Message) error {
	keys, err := h.stamp(deviceID, moduleID, output, m)
	if err != nil {
		return err
	}
	return h.route(ctx, m, keys)
}

// stamp sets the system properties the hub owns and checks the size.
func (h *Hub) stamp(deviceID, moduleID, output string, m *message.Message) (message.PropertyKeys, error) {
	if m == nil {
		return 0, errors.New("send: nil message")
	}
	s := &m.System
	// The hub, not the sender, says who sent it.
	s.ConnectionDeviceID = deviceID
	s.ConnectionModuleID = moduleID
	s.OutputName = output
	s.InputName = ""
	m.Kind = message.Telemetry
	size, keys := m.Measure()
	if err := message.CheckSize(size); err != nil {
		h.drop("too_large")
		return 0, fmt.Errorf("send on output %q: %w", output, err)
	}
	seq := h.seq.Add(1)
	m.Seq = seq
	if s.MessageID == "" {
		s.MessageID = h.newMessageID()
	}
	s.EnqueuedTime = h.now()
	h.received.Add(1)
	return keys, nil
}

// twinFor returns the module's twin, for code outside the module (the CLI,
// tests, and later the upstream link).
func (h *Hub) twinFor(moduleID string) (*module, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	md, ok := h.modules[moduleID]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownModule, moduleID)
	}
	return md, nil
}

// Twin returns a copy of a module's twin.
func (h *Hub) Twin(moduleID string) (twin.Twin, error) {
	md, err := h.twinFor(moduleID)
	if err != nil {
		return twin.Twin{}, err
	}
	return md.twinSnapshot(), nil
}

// PatchDesired applies a desired-properties patch to a module's twin, as a
// deployment update or the cloud would, and notifies the running module.
// It returns the new desired version.
func (h *Hub) PatchDesired(moduleID string, patch map[string]any) (int64, error) {
	md, err := h.twinFor(moduleID)
	if err != nil {
		return 0, err
	}
	return md.patchDesired(patch)
}
