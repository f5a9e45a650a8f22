package broker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// ConnectWait is how long a new connection has to finish TLS and send
// CONNECT; after CONNECT mochi keeps the deadline to the keep-alive.
const ConnectWait = 10 * time.Second

// Slots bounds the open connections of the listeners that share it.
type Slots struct {
	free    chan struct{}
	refused atomic.Uint64
	logged  atomic.Int64 // unix seconds of the last refusal logged
}

// NewSlots returns room for n connections.
func NewSlots(n int) *Slots {
	s := &Slots{free: make(chan struct{}, n)}
	for range n {
		s.free <- struct{}{}
	}
	return s
}

// Refused is how many connections were refused for want of a slot.
func (s *Slots) Refused() uint64 { return s.refused.Load() }

// logRefusal says once a second at most that connections are refused: a
// flood must not flood the log too.
func (s *Slots) logRefusal(log *slog.Logger, remote string) {
	now := time.Now().Unix()
	if last := s.logged.Load(); now > last && s.logged.CompareAndSwap(last, now) {
		log.Warn("connections refused: too many connections", "remote", remote, "max", cap(s.free), "refusedSoFar", s.refused.Load())
	}
}

// Listener is a mochi listener over TCP, with TLS when it has a config.
// It does what mochi's own listeners do not:
//   - it refuses connections beyond its Slots before any TLS work;
//   - it gives every connection ConnectWait to connect;
//   - it passes mochi's per-packet keep-alive deadlines on coarsely
//     (coarseDeadline);
//   - its Close ends its own connections and waits for them, instead of
//     going through mochi's GetByListener (see the package comment), and
//     starts no connection once Close has begun, so that mochi's client
//     WaitGroup is never added to while Server.Close waits on it.
type Listener struct {
	id    string
	addr  string
	tls   *tls.Config // nil: plain
	slots *Slots      // nil: no limit
	log   *slog.Logger

	ln      net.Listener
	mu      sync.Mutex
	closed  bool
	conns   map[net.Conn]struct{}
	serving sync.WaitGroup // Serve
	wg      sync.WaitGroup // connection goroutines
}

var _ listeners.Listener = (*Listener)(nil)

// NewListener returns a listener on addr named id. cfg nil means plain
// MQTT; slots nil means no limit on connections; log nil discards.
func NewListener(id, addr string, cfg *tls.Config, slots *Slots, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{id: id, addr: addr, tls: cfg, slots: slots, log: log, conns: map[net.Conn]struct{}{}}
}

// ID is the listener's name.
func (l *Listener) ID() string { return l.id }

// Address is the address bound once mochi has called Init, the
// configured one before.
func (l *Listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Bound reports whether Init has bound the address.
func (l *Listener) Bound() bool { return l.ln != nil }

// TLS reports whether the listener speaks TLS.
func (l *Listener) TLS() bool { return l.tls != nil }

// Protocol is "mqtts" or "mqtt".
func (l *Listener) Protocol() string {
	if l.tls != nil {
		return "mqtts"
	}
	return "mqtt"
}

// Init binds the address; mochi calls it from AddListener.
func (l *Listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.addr, err)
	}
	l.ln = ln
	return nil
}

// Serve accepts connections and hands each to establish in its own
// goroutine until Close.
func (l *Listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed || l.ln == nil {
		l.mu.Unlock()
		return
	}
	l.serving.Add(1)
	l.mu.Unlock()
	defer l.serving.Done()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		if l.slots != nil {
			select {
			case <-l.slots.free:
				conn = &slotConn{Conn: conn, slots: l.slots}
			default:
				l.slots.refused.Add(1)
				l.slots.logRefusal(l.log, conn.RemoteAddr().String())
				_ = conn.Close()
				continue
			}
		}
		conn = &coarseDeadline{Conn: conn}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			return
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		_ = conn.SetDeadline(time.Now().Add(ConnectWait))
		go l.handle(conn, establish)
	}
}

func (l *Listener) handle(raw net.Conn, establish listeners.EstablishFn) {
	defer l.wg.Done()
	defer func() {
		_ = raw.Close()
		l.mu.Lock()
		delete(l.conns, raw)
		l.mu.Unlock()
	}()
	c := raw
	if l.tls != nil {
		c = tls.Server(raw, l.tls)
	}
	if err := establish(l.id, c); err != nil {
		l.log.Debug("connection ended", "listener", l.id, "remote", raw.RemoteAddr().String(), "err", err)
	}
}

// Close stops accepting, closes every connection and waits until their
// goroutines have returned. It does not call closeClients: closing the
// connections ends mochi's clients, which then clean up after themselves.
func (l *Listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.serving.Wait()
	l.wg.Wait()
}

// slotConn gives its slot back when closed.
type slotConn struct {
	net.Conn
	slots *Slots
	once  sync.Once
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.slots.free <- struct{}{} })
	return err
}

// coarseDeadline passes on a deadline only when it moves by a second or
// more, or comes near. mochi sets the connection's deadline to 1.5 times
// the keep-alive after every packet it reads; a pipelining module sends
// tens of thousands a second, and each new deadline resets a runtime
// timer. Skipping an update shortens the idle time a client is allowed
// by under a second, and only while at least deadlineNear remains.
type coarseDeadline struct {
	net.Conn
	mu   sync.Mutex
	last time.Time // the deadline passed on; zero: none
}

// deadlineNear is how far off the deadline in force must be for an
// update to be skipped: keep-alives of a few seconds get every one.
const deadlineNear = 10 * time.Second

func (c *coarseDeadline) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.IsZero() && !c.last.IsZero() && !t.Before(c.last) && t.Sub(c.last) < time.Second && time.Until(c.last) >= deadlineNear {
		return nil
	}
	c.last = t
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline and SetWriteDeadline set one side only: the deadline
// passed on for both is no longer known.
func (c *coarseDeadline) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = time.Time{}
	return c.Conn.SetReadDeadline(t)
}

func (c *coarseDeadline) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = time.Time{}
	return c.Conn.SetWriteDeadline(t)
}
