package broker

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// start serves a mochi server on a free port of 127.0.0.1.
func start(t *testing.T) (*mqtt.Server, string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(allow), nil); err != nil {
		t.Fatal(err)
	}
	ln := NewListener("t", "127.0.0.1:0", nil, nil, nil)
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	return srv, ln.Address()
}

// allow lets every client connect: mochi refuses all without an
// authentication hook.
type allow struct{ mqtt.HookBase }

func (*allow) ID() string { return "allow" }

func (*allow) Provides(b byte) bool { return b == mqtt.OnConnectAuthenticate }

func (*allow) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// connectPacket is an MQTT 3.1.1 CONNECT with a clean session.
func connectPacket(id string) []byte {
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(id))}
	body = append(body, id...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// connect opens a connection and waits up to wait for its CONNACK.
func connect(addr, id string, wait time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(connectPacket(id)); err != nil {
		c.Close()
		return nil, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, err
	}
	if ack != [4]byte{0x20, 2, 0, 0} {
		c.Close()
		return nil, fmt.Errorf("CONNACK % x, want 20 02 00 00", ack)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// closeWithin fails the test when Close has not returned after d.
func closeWithin(t *testing.T, srv *mqtt.Server, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(d):
		t.Fatalf("Close has not returned after %v", d)
	}
}

func TestCloseDisconnectsClients(t *testing.T) {
	srv, addr := start(t)
	var conns []net.Conn
	for i := range 5 {
		c, err := connect(addr, "c"+strconv.Itoa(i), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	closeWithin(t, srv, 30*time.Second)
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		// A DISCONNECT may come first; then the connection ends.
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("client %d: connection still open after Close: %v", i, err)
		}
		c.Close()
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

// TestCloseWhileClientsChurn stops servers while clients connect and
// disconnect: every connection ends, including those accepted as the
// listener closes, and nothing is left waiting.
func TestCloseWhileClientsChurn(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 5
	}
	for r := range rounds {
		srv, addr := start(t)
		var stop atomic.Bool
		var wg sync.WaitGroup
		var connected atomic.Int64
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					// A connection accepted as the listener closes
					// gets no answer: give up on it soon.
					c, err := connect(addr, "w"+strconv.Itoa(w)+"-"+strconv.Itoa(i), time.Second)
					if err != nil {
						continue
					}
					connected.Add(1)
					c.Close()
				}
			}()
		}
		// Let the churn start before closing.
		deadline := time.Now().Add(10 * time.Second)
		for connected.Load() < 20 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		closeWithin(t, srv, 30*time.Second)
		stop.Store(true)
		wg.Wait()
		if connected.Load() == 0 {
			t.Fatalf("round %d: no client connected", r)
		}
	}
}

// TestCloseWithWritersQueued builds the interleaving of mochi issue 488:
// a reader holds the clients' lock and two writers wait. With mochi's
// listeners, Close waits for the read lock in GetByListener; when the
// reader lets go, the first writer runs, the second queues again, and
// GetByListener's second read lock waits behind it for ever. Listener
// must close with the same locks held.
func TestCloseWithWritersQueued(t *testing.T) {
	srv, addr := start(t)
	c, err := connect(addr, "c", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	srv.Clients.RLock()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeClients(srv)
		}()
	}
	waitBlocked(t, "broker.writeClients", 2)
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	// mochi's listeners wait in GetByListener here, Listener's client
	// goroutine in Delete.
	waitBlocked(t, "(*Clients).", 1)
	srv.Clients.RUnlock()

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close has not returned after 30s")
	}
	wg.Wait()
}

// writeClients takes the clients' write lock, as a client connecting or
// disconnecting does.
//
//go:noinline
func writeClients(srv *mqtt.Server) {
	srv.Clients.Lock()
	defer srv.Clients.Unlock()
}

// waitBlocked waits until n goroutines whose stack names fn wait for a
// lock.
func waitBlocked(t *testing.T, fn string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := 0
		dump := buf[:runtime.Stack(buf, true)]
		for _, g := range bytes.Split(dump, []byte("\n\n")) {
			header, _, _ := bytes.Cut(g, []byte("\n"))
			if bytes.Contains(header, []byte("[sync.")) && bytes.Contains(g, []byte(fn)) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines in %s wait for a lock, want %d\n%s", got, fn, n, dump)
		}
		time.Sleep(time.Millisecond)
	}
}

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

func (c *deadlineConn) SetReadDeadline(time.Time) error { return nil }

func TestCoarseDeadline(t *testing.T) {
	now := time.Now()
	far := now.Add(90 * time.Second)
	tests := []struct {
		name   string
		before func(c *coarseDeadline)
		t      time.Time
		passed bool
	}{
		{"first", nil, far, true},
		{"later by under a second, far off", func(c *coarseDeadline) { c.SetDeadline(far) }, far.Add(500 * time.Millisecond), false},
		{"later by a second", func(c *coarseDeadline) { c.SetDeadline(far) }, far.Add(time.Second), true},
		{"earlier", func(c *coarseDeadline) { c.SetDeadline(far) }, far.Add(-time.Millisecond), true},
		{"none", func(c *coarseDeadline) { c.SetDeadline(far) }, time.Time{}, true},
		{"in force one is near", func(c *coarseDeadline) { c.SetDeadline(now.Add(5 * time.Second)) }, now.Add(5*time.Second + 100*time.Millisecond), true},
		{"after a read deadline", func(c *coarseDeadline) { c.SetDeadline(far); c.SetReadDeadline(now) }, far.Add(100 * time.Millisecond), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := &deadlineConn{}
			c := &coarseDeadline{Conn: raw}
			if tt.before != nil {
				tt.before(c)
			}
			n := len(raw.set)
			if err := c.SetDeadline(tt.t); err != nil {
				t.Fatal(err)
			}
			if got := len(raw.set) > n; got != tt.passed {
				t.Errorf("deadline %v passed on: %v, want %v", tt.t.Sub(now), got, tt.passed)
			}
		})
	}
}
