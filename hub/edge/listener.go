package edge

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// connectWait is how long a new connection has to finish TLS and send
// CONNECT; after CONNECT mochi keeps the deadline to the keep-alive.
const connectWait = 10 * time.Second

// slots bounds the open connections of every listener of an endpoint.
type slots struct {
	free    chan struct{}
	refused atomic.Uint64
	logged  atomic.Int64 // unix seconds of the last refusal logged
}

// logRefusal says once a second at most that connections are refused: a
// flood must not flood the log too.
func (s *slots) logRefusal(log *slog.Logger, remote string) {
	now := time.Now().Unix()
	if last := s.logged.Load(); now > last && s.logged.CompareAndSwap(last, now) {
		log.Warn("connections refused: too many connections", "remote", remote, "max", cap(s.free), "refusedSoFar", s.refused.Load())
	}
}

func newSlots(n int) *slots {
	s := &slots{free: make(chan struct{}, n)}
	for range n {
		s.free <- struct{}{}
	}
	return s
}

// listener is a mochi listener that refuses connections beyond the
// endpoint's maximum before any TLS work and gives every connection a
// deadline to connect. mochi's own TCP listener does neither.
type listener struct {
	id    string
	addr  string
	tls   *tls.Config // nil: plain
	slots *slots
	log   *slog.Logger

	ln      net.Listener
	mu      sync.Mutex
	closed  bool
	serving sync.WaitGroup // Serve
	wg      sync.WaitGroup // connection goroutines
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string { return l.id }

func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

func (l *listener) Protocol() string {
	if l.tls != nil {
		return "mqtts"
	}
	return "mqtt"
}

func (l *listener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.addr, err)
	}
	l.ln = ln
	return nil
}

func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
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
		select {
		case <-l.slots.free:
		default:
			l.slots.refused.Add(1)
			l.slots.logRefusal(l.log, conn.RemoteAddr().String())
			_ = conn.Close()
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			l.slots.free <- struct{}{}
			return
		}
		l.wg.Add(1)
		l.mu.Unlock()
		_ = conn.SetDeadline(time.Now().Add(connectWait))
		var c net.Conn = &slotConn{Conn: conn, slots: l.slots}
		if l.tls != nil {
			c = tls.Server(c, l.tls)
		}
		go func() {
			defer l.wg.Done()
			defer c.Close()
			if err := establish(l.id, c); err != nil {
				l.log.Debug("connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	closeClients(l.id)
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.serving.Wait()
	l.wg.Wait()
}

// slotConn gives its slot back when closed.
type slotConn struct {
	net.Conn
	slots *slots
	once  sync.Once
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.slots.free <- struct{}{} })
	return err
}

// checkLoopback refuses a plain listener address that is not loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("plain listener %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("plain listener %q: an address without TLS must be a loopback address such as 127.0.0.1:1883 (clients on other hosts must use TLS)", addr)
	}
	return nil
}
