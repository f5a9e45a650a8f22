package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/store"
)

// Errors returned (wrapped) by the link.
var (
	ErrClosed       = errors.New("upstream link closed")
	ErrDisconnected = errors.New("upstream connection lost before the PUBACK")
	ErrRenewing     = errors.New("upstream connection closed to renew its token")
)

// Options tune a Link. The zero value (or nil) takes the defaults.
type Options struct {
	Logger *slog.Logger
	// Window is how many QoS 1 publishes may await their PUBACK per
	// connection; default 16, IoT Hub's limit.
	Window int
	// RateLimit caps publishes per second over all connections, to spare
	// a small IoT Hub tier during a backlog drain; 0 means no cap.
	RateLimit float64
	// Backoff paces reconnects; zero fields take defaults (1 s to 60 s).
	Backoff Backoff
	// Trusted reports whether the clock can be believed; no token is
	// minted while it says no. Default: after store.TrustedAfter.
	Trusted func(time.Time) bool
	// Now is the clock; default time.Now.
	Now func() time.Time
	// ConnectTimeout bounds one connection attempt; default 10 s.
	ConnectTimeout time.Duration
	// KeepAlive is the MQTT keep-alive; default 60 s.
	KeepAlive time.Duration
	// Store, when set, gives Status the depth of the $upstream queue.
	Store *store.Store
	// LeafIdle is how long a leaf device's own connection stays open
	// after its last message while the leaf is not connected to the
	// local endpoint; default 10 minutes (see leaf.go).
	LeafIdle time.Duration
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.Window <= 0 {
		r.Window = 16
	}
	r.Backoff = r.Backoff.withDefaults()
	if r.Trusted == nil {
		r.Trusted = func(t time.Time) bool { return t.After(store.TrustedAfter) }
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.ConnectTimeout <= 0 {
		r.ConnectTimeout = 10 * time.Second
	}
	if r.KeepAlive <= 0 {
		r.KeepAlive = 60 * time.Second
	}
	if r.LeafIdle <= 0 {
		r.LeafIdle = 10 * time.Minute
	}
	return r
}

// credentials are what one connection attempt presents.
type credentials struct {
	username, password string
	// expires is when the password (a token) stops working; zero for a
	// password that does not expire. The link reconnects before then.
	expires time.Time
}

// account says how one identity connects.
type account struct {
	identity string // device or device/module, for status and logs
	module   string // "" for the device's own connection
	leaf     bool   // a leaf device's own connection (leaf.go)
	topic    string // the events topic prefix, in IoT Hub mode
	clientID string
	broker   string
	tls      *tls.Config
	insecure bool // tls skips server verification: said loudly at every connect
	// creds mints what to present; it is called for every attempt.
	creds func(now time.Time) (credentials, error)
	// needsClock: creds mints tokens, which a wrong clock makes invalid.
	needsClock bool
	// ready runs once connected, before publishes flow: subscriptions,
	// twin sync. An error drops the connection and backs off.
	ready func(ctx context.Context, s *session) error
}

// Link is the upstream link: a hub.Uplink that publishes to the cloud.
// Make one with NewMQTT (or NewIoTHub), give it to hub.Options.Upstream,
// Start it, and Close it after the hub.
type Link struct {
	opts   Options
	log    *slog.Logger
	mode   string
	encode func(id *identity, m *message.Message, d hub.Delivery) (topic string, payload []byte, err error)
	rate   *limiter

	cloud Cloud // twins and methods; nil serves none

	ids    []*identity
	byMod  map[string]*identity // module identities by module id
	device *identity
	leaves map[string]*identity // leaf devices' identities by device id; they run only while needed

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	start  bool
}

var _ hub.Uplink = (*Link)(nil)

func newLink(mode string, accts []account, opts *Options) *Link {
	o := opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{opts: o, log: o.Logger.With("upstream", mode), mode: mode, byMod: map[string]*identity{}, leaves: map[string]*identity{}, ctx: ctx, cancel: cancel}
	if o.RateLimit > 0 {
		l.rate = &limiter{interval: time.Duration(float64(time.Second) / o.RateLimit)}
	}
	for _, a := range accts {
		id := newIdentity(l, a)
		l.ids = append(l.ids, id)
		switch {
		case a.leaf:
			id.lazy = true
			id.fallback = l.device // the device's account comes first
			id.st.State = StateIdle
			l.leaves[a.identity] = id
		case a.module == "":
			l.device = id
		default:
			id.fallback = l.device
			l.byMod[a.module] = id
		}
	}
	return l
}

// Name is "$upstream".
func (l *Link) Name() string { return hub.UpstreamQueue }

// Start connects every identity; each reconnects by itself until Close.
// Leaf devices' identities connect when needed (see leaf.go). cloud (the
// hub) serves the twins and direct methods of module and leaf identities
// in IoT Hub mode; it may be nil.
func (l *Link) Start(cloud Cloud) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start || l.ctx.Err() != nil {
		return
	}
	l.start, l.cloud = true, cloud
	for _, id := range l.ids {
		if id.lazy {
			if id.busy > 0 {
				l.startLocked(id) // a message waits for it
			}
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			id.run(l.ctx)
		}()
	}
	if len(l.leaves) > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.tendLeaves(l.ctx)
		}()
	}
}

// Close disconnects every identity and waits for the link's goroutines.
// Publishes still awaiting a PUBACK are answered with an error.
func (l *Link) Close() error {
	l.mu.Lock() // no leaf connection starts after this
	l.cancel()
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// identityFor is the connection a message goes up on, so IoT Hub stamps
// the right $connectionDeviceId and $connectionModuleId: its module's own
// identity when it has one, a leaf device's own identity for a leaf's
// message (no module id), else the device's. release must be called once
// the message is handed over (it lets an idle leaf connection close).
func (l *Link) identityFor(m *message.Message) (id *identity, release func()) {
	if mod := m.System.ConnectionModuleID; mod != "" {
		if id, ok := l.byMod[mod]; ok {
			return id, func() {}
		}
		return l.device, func() {}
	}
	if leaf, ok := l.leaves[m.System.ConnectionDeviceID]; ok {
		l.acquire(leaf)
		return leaf, func() { l.release(leaf) }
	}
	return l.device, func() {}
}

// Publish sends m with QoS 1 on its identity's connection, waiting while
// the connection is down or its window is full; ack is called with the
// PUBACK (nil) or with why it will not come.
//
// A module's or leaf device's message whose own connection IoT Hub
// refused goes on the device's connection instead (see leaf.go).
func (l *Link) Publish(ctx context.Context, m *message.Message, d hub.Delivery, ack func(error)) error {
	id, release := l.identityFor(m)
	defer release()
	for {
		topic, payload, err := l.encode(id, m, d)
		if err != nil {
			return err
		}
		if n := len(topic) + len(payload); n > message.MaxSize {
			// The hub refuses such messages; one that grew past the limit in
			// encoding would make the broker drop the connection, again and
			// again. It is acknowledged so that it does not block the queue.
			l.log.Error("message too large for the upstream once encoded; dropped", "messageId", m.System.MessageID, "bytes", n, "limit", message.MaxSize)
			ack(nil)
			return nil
		}
		err = id.publish(ctx, topic, payload, ack)
		if errors.Is(err, errRefused) {
			id = id.fallback
			continue
		}
		return err
	}
}

// Deliver publishes m and waits for its PUBACK, for a hub without a store.
func (l *Link) Deliver(ctx context.Context, m *message.Message, d hub.Delivery) error {
	done := make(chan error, 1)
	if err := l.Publish(ctx, m, d, func(err error) { done <- err }); err != nil {
		return err
	}
	return <-done
}

// Status returns the state of every identity, the queue depth and whether
// the clock is trusted.
func (l *Link) Status() Status {
	st := Status{Mode: l.mode, QueueDepth: -1, ClockTrusted: l.opts.Trusted(l.opts.Now())}
	if len(l.ids) > 0 {
		st.Broker = l.ids[0].acct.broker
	}
	for _, id := range l.ids {
		st.Identities = append(st.Identities, id.snapshot())
	}
	if l.opts.Store != nil {
		if es, err := l.opts.Store.EndpointStats(hub.UpstreamQueue); err == nil {
			st.QueueDepth = es.Queued
		}
	}
	return st
}

// limiter spaces publishes at least interval apart.
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func (r *limiter) wait(ctx context.Context) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	now := time.Now()
	at := r.next
	if at.Before(now) {
		at = now
	}
	r.next = at.Add(r.interval)
	r.mu.Unlock()
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// newPahoClient makes the paho client of one connection attempt: no
// auto-reconnect, a clean session and a memory store, since the hub's
// store is what guarantees delivery.
func (l *Link) newPahoClient(a *account, c credentials, lost func(error)) paho.Client {
	o := paho.NewClientOptions().
		AddBroker(a.broker).
		SetClientID(a.clientID).
		SetUsername(c.username).
		SetPassword(c.password).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetStore(paho.NewMemoryStore()).
		SetProtocolVersion(4).
		SetKeepAlive(l.opts.KeepAlive).
		SetPingTimeout(l.opts.ConnectTimeout).
		SetConnectTimeout(l.opts.ConnectTimeout).
		SetWriteTimeout(l.opts.ConnectTimeout).
		SetOrderMatters(true). // twin answers and notifications in order; handlers never block
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost(err) }).
		SetCustomOpenConnectionFn(dialer(l.opts.ConnectTimeout, l.opts.ConnectTimeout))
	if a.tls != nil {
		o.SetTLSConfig(a.tls)
	}
	return paho.NewClient(o)
}
