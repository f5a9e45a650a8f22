package upstream

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// gatedConn is a net.Conn whose writes wait for the gate while it is
// shut, and are counted.
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	writes  int
	gate    chan struct{} // writes wait for it to be closed
	once    sync.Once
	entered chan struct{} // receives when a write starts waiting
	fail    error         // when set, writes fail with it
}

func (g *gatedConn) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gatedConn) Write(p []byte) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	g.mu.Lock()
	g.writes++
	err := g.fail
	g.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return g.Conn.Write(p)
}

func (g *gatedConn) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}

// pipe is a buffered connection over one end of a TCP pair on loopback
// whose writes wait for the returned gate; the other end is returned to
// read what arrives.
func pipe(t *testing.T) (*bufferedConn, *gatedConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	g := &gatedConn{Conn: c, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	b := newBufferedConn(g, 5*time.Second)
	t.Cleanup(func() {
		g.open()
		b.Close()
		peer.Close()
	})
	return b, g, peer
}

// TestBufferedConnCoalesces: packets queued while a write is in the
// kernel go out together, in order and whole.
func TestBufferedConnCoalesces(t *testing.T) {
	b, g, peer := pipe(t)
	var want bytes.Buffer
	for i := range 200 {
		p := []byte(strings.Repeat(string(rune('a'+i%26)), 1+i%50))
		want.Write(p)
		if n, err := b.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write %d = %d, %v", i, n, err)
		}
	}
	g.open()
	got := make([]byte, want.Len())
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the peer read other bytes than were written")
	}
	// The first write may have taken one packet before the rest came.
	if n := g.count(); n > 2 {
		t.Errorf("200 packets took %d writes, want at most 2", n)
	}
}

// TestBufferedConnBounded: a writer waits while the unwritten bytes
// would pass connBufferMax, and goes on once they are written.
func TestBufferedConnBounded(t *testing.T) {
	b, g, peer := pipe(t)
	// The flusher takes the first write and waits at the gate; then the
	// queue is filled to the bound exactly.
	if _, err := b.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	chunk := make([]byte, connBufferMax/4)
	for range 4 {
		if _, err := b.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := b.Write([]byte("one more"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("a write past the bound returned (%v) before anything was written", err)
	case <-time.After(50 * time.Millisecond):
	}
	g.open()
	go io.Copy(io.Discard, peer)
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting write never went on")
	}
}

// TestBufferedConnWriteFailure: a failed write fails every later write
// and the reader, so paho sees the connection lost.
func TestBufferedConnWriteFailure(t *testing.T) {
	b, g, _ := pipe(t)
	g.fail = errors.New("wire cut")
	g.open()
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatalf("the first write only queues, got %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = b.Write([]byte("y"))
		time.Sleep(time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "wire cut") {
		t.Fatalf("write after the failure = %v, want the failure", err)
	}
	// paho reports a lost connection for any read error but "use of
	// closed network connection", which it takes for its own close.
	b.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = b.Read(make([]byte, 1))
	if err == nil || !strings.Contains(err.Error(), "wire cut") || strings.Contains(err.Error(), "use of closed network connection") {
		t.Fatalf("read on a failed connection = %v, want the write failure", err)
	}
}

// TestBufferedConnClose: Close stops the flusher (goleak checks at the
// end) even while a write is stuck, and later writes fail.
func TestBufferedConnClose(t *testing.T) {
	b, g, _ := pipe(t)
	if _, err := b.Write([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		g.open()
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("late")); !errors.Is(err, errConnClosed) {
		t.Fatalf("write after close = %v, want %v", err, errConnClosed)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// TestBufferedConnCloseFlushes: what was queued when Close came (paho's
// DISCONNECT, written just before it closes) reaches the peer.
func TestBufferedConnCloseFlushes(t *testing.T) {
	b, g, peer := pipe(t)
	if _, err := b.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the flusher holds "first" at the gate
	if _, err := b.Write([]byte(" and the DISCONNECT")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	g.open()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "first and the DISCONNECT" {
		t.Errorf("the peer read %q before the close", got)
	}
}
