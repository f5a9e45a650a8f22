package upstream

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The link opens its own connections for paho (ClientOptions'
// CustomOpenConnectionFn) so that it can buffer them. paho writes every
// packet with its own write call and reads every PUBACK with three reads
// (type, length, body), each a system call; on a loopback drain those
// calls are most of the CPU the whole process spends. The link's
// connection coalesces what paho writes while the previous write is in
// the kernel into one write (one TLS record, one TCP segment), and reads
// through a buffer, so a burst of PUBACKs costs one read.

// connBufferMax bounds what a connection holds unwritten: a writer that
// would pass it waits for the flusher, so a stalled peer stops paho
// rather than growing memory.
const connBufferMax = 64 << 10

// dialer opens paho's connections: TCP or TLS to the broker's URL,
// wrapped in a bufferedConn that writes within writeTimeout or fails.
func dialer(timeout, writeTimeout time.Duration) paho.OpenConnectionFunc {
	return func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
		d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
		var c net.Conn
		var err error
		switch u.Scheme {
		case "tcp":
			c, err = d.Dial("tcp", u.Host)
		case "ssl":
			c, err = tls.DialWithDialer(d, "tcp", u.Host, o.TLSConfig)
		default:
			return nil, fmt.Errorf("upstream: dial %s: scheme %q is not tcp or ssl", u.Redacted(), u.Scheme)
		}
		if err != nil {
			return nil, err
		}
		return newBufferedConn(c, writeTimeout), nil
	}
}

// bufferedConn is a net.Conn whose writes are queued and written by its
// flusher goroutine, many at a time, and whose reads go through a buffer.
// Write returns once the bytes are queued; a failed write closes the
// connection (so the reader, and with it paho, sees the failure) and is
// returned by every later Write. Reads are for one goroutine at a time,
// as paho's are. The flusher stops when the connection is closed.
type bufferedConn struct {
	net.Conn
	r            *bufio.Reader
	writeTimeout time.Duration

	mu      sync.Mutex
	cond    *sync.Cond // signalled when pending shrinks, or on failure
	pending []byte     // queued, not yet handed to the kernel
	spare   []byte     // the flusher's last buffer, for reuse
	err     error      // the write failure or close that ends the connection
	wake    chan struct{}
	done    chan struct{} // closed when the flusher has stopped
	closed  bool          // Close was called: no more writes
	closeBy time.Time     // when closed: the deadline for the last flush
}

// closeFlush bounds how long Close spends writing what is queued: paho
// closes the connection right after writing its DISCONNECT, which the
// broker should see, but a stuck peer must not hold up the close.
const closeFlush = time.Second

func newBufferedConn(c net.Conn, writeTimeout time.Duration) *bufferedConn {
	b := &bufferedConn{
		Conn:         c,
		r:            bufio.NewReaderSize(c, 4096),
		writeTimeout: writeTimeout,
		wake:         make(chan struct{}, 1),
		done:         make(chan struct{}),
	}
	b.cond = sync.NewCond(&b.mu)
	go b.flusher()
	return b
}

// errConnClosed is what Write returns after Close.
var errConnClosed = errors.New("use of closed network connection")

// Read reads through the buffer. After a failed write it returns that
// failure: fail closes the connection, and paho takes a read that ends in
// "use of closed network connection" for its own close and reports no
// loss; with the PUBACKs of a full window never coming and nothing more
// to write, the link would wait for them until the keep-alive.
func (b *bufferedConn) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.mu.Lock()
		werr, closed := b.err, b.closed
		b.mu.Unlock()
		if werr != nil && !closed {
			return n, werr
		}
	}
	return n, err
}

// Write queues p for the flusher.
func (b *bufferedConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && !b.closed && len(b.pending) > 0 && len(b.pending)+len(p) > connBufferMax {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, errConnClosed
	}
	b.pending = append(b.pending, p...)
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// flusher writes what is queued until the connection fails or is closed.
func (b *bufferedConn) flusher() {
	defer close(b.done)
	for range b.wake {
		for {
			b.mu.Lock()
			if b.err != nil {
				b.mu.Unlock()
				return
			}
			out := b.pending
			if len(out) == 0 {
				b.mu.Unlock()
				break
			}
			b.pending = b.spare[:0]
			b.cond.Broadcast()
			deadline := b.closeBy
			b.mu.Unlock()

			if deadline.IsZero() && b.writeTimeout > 0 {
				deadline = time.Now().Add(b.writeTimeout)
			}
			if !deadline.IsZero() {
				_ = b.Conn.SetWriteDeadline(deadline)
			}
			_, err := b.Conn.Write(out)
			if err != nil {
				b.fail(fmt.Errorf("write: %w", err))
				return
			}
			b.mu.Lock()
			if cap(out) <= connBufferMax {
				b.spare = out[:0]
			}
			b.mu.Unlock()
		}
	}
}

// fail ends the connection with err: writers wake and see it, and the
// underlying connection is closed so its reader sees it too.
func (b *bufferedConn) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	_ = b.Conn.Close()
}

// Close writes what is still queued (paho's DISCONNECT, usually), within
// closeFlush, then closes the connection; the flusher has stopped when
// it returns.
func (b *bufferedConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed, b.closeBy = true, time.Now().Add(closeFlush)
	b.cond.Broadcast()
	close(b.wake) // the flusher writes what is queued, then stops
	b.mu.Unlock()
	_ = b.Conn.SetWriteDeadline(b.closeBy)
	<-b.done
	b.mu.Lock()
	if b.err == nil {
		b.err = errConnClosed
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	err := b.Conn.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil // closed already by a failed write
	}
	return err
}

// SetWriteDeadline is ignored: paho sets one around each Write, which
// here only queues; the flusher puts writeTimeout on each real write.
func (b *bufferedConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only, for the same reason.
func (b *bufferedConn) SetDeadline(t time.Time) error { return b.Conn.SetReadDeadline(t) }
