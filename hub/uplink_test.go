package hub_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/store"
)

// windowed is an Uplink with a window, acknowledging from its own
// goroutine like an MQTT client's PUBACKs. Every dropEvery-th publish
// "drops the connection": that message never arrives and every message
// still waiting for its ack gets an error, although the receiver has it.
type windowed struct {
	window    chan struct{}
	dropEvery int

	mu       sync.Mutex
	n        int
	maxIn    int
	dead     bool // the connection dropped; cleared once every ack failed
	inflight int
	pending  []pendingAck
	got      []*message.Message // what the receiver saw, duplicates included
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

type pendingAck struct {
	ack  func(error)
	fail bool
}

var _ hub.Uplink = (*windowed)(nil)

func newWindowed(window, dropEvery int) *windowed {
	w := &windowed{window: make(chan struct{}, window), dropEvery: dropEvery,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *windowed) Name() string { return "$upstream" }

func (w *windowed) Deliver(context.Context, *message.Message, hub.Delivery) error {
	return errors.New("windowed: Deliver is not used by the windowed pump")
}

func (w *windowed) Publish(ctx context.Context, m *message.Message, _ hub.Delivery, ack func(error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case w.window <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		<-w.window
		return err
	}
	w.mu.Lock()
	w.n++
	// After a drop, nothing more gets through that connection.
	drop := w.dead || (w.dropEvery > 0 && w.n%w.dropEvery == 0)
	w.dead = drop
	if !drop {
		w.got = append(w.got, m)
	}
	w.inflight++
	w.maxIn = max(w.maxIn, w.inflight)
	w.pending = append(w.pending, pendingAck{ack: ack, fail: drop})
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

func (w *windowed) run() {
	defer close(w.done)
	for {
		select {
		case <-w.wake:
		case <-w.stop:
			return
		}
		// PUBACKs come back a round trip later: let the window fill.
		time.Sleep(200 * time.Microsecond)
		w.mu.Lock()
		p := w.pending
		w.pending = nil
		// A drop fails every ack still outstanding, before and after it.
		drop := false
		for _, x := range p {
			drop = drop || x.fail
		}
		w.inflight -= len(p)
		w.mu.Unlock()
		for _, x := range p {
			if drop {
				x.ack(errors.New("connection lost"))
			} else {
				x.ack(nil)
			}
			<-w.window
		}
		if drop {
			// Reconnected, after every ack of the old connection failed.
			w.mu.Lock()
			w.dead = false
			w.mu.Unlock()
		}
	}
}

func (w *windowed) close() {
	close(w.stop)
	<-w.done
}

func (w *windowed) received() []*message.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*message.Message(nil), w.got...)
}

// firstSeen returns the bodies in the order of their first arrival, and
// how many arrivals were duplicates.
func firstSeen(msgs []*message.Message) (order []int, dups int) {
	seen := map[string]bool{}
	for _, m := range msgs {
		if seen[string(m.Body)] {
			dups++
			continue
		}
		seen[string(m.Body)] = true
		n, _ := strconv.Atoi(string(m.Body))
		order = append(order, n)
	}
	return order, dups
}

// TestUplinkPumpWindowAndResend streams numbered messages through a
// windowed uplink that drops the connection every 97 publishes: every
// message arrives, the first arrivals are in order, the window is never
// exceeded and the store ends empty.
func TestUplinkPumpWindowAndResend(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer st.Close()
	up := newWindowed(16, 97)
	defer up.close()
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: up, Store: st})
	defer h.Close()
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "all", "FROM /* INTO $upstream")})
	const n = 3000
	for i := range n {
		if err := h.SendDevice(context.Background(), message.New(fmt.Appendf(nil, "%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	hubtest.WaitFor(t, "the store to drain", func() bool {
		es, err := st.EndpointStats(hub.UpstreamQueue)
		return err == nil && es.Queued == 0
	})
	order, dups := firstSeen(up.received())
	if len(order) != n {
		t.Fatalf("%d distinct messages arrived, want %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("arrival %d is message %d, want %d (first arrivals must be in order)", i, v, i)
		}
	}
	up.mu.Lock()
	maxIn := up.maxIn
	up.mu.Unlock()
	if maxIn > 16 {
		t.Errorf("%d in flight at once, want at most the window of 16", maxIn)
	}
	// Each drop resends at most the window.
	if limit := (n/97 + 1) * 16; dups > limit {
		t.Errorf("%d duplicates, want at most %d (a window per drop)", dups, limit)
	}
	t.Logf("%d messages, %d duplicates, at most %d in flight", n, dups, maxIn)
}

// TestUplinkPumpPriority checks that a backlog drains highest priority
// first through the windowed pump.
func TestUplinkPumpPriority(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer st.Close()
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: down{}, Store: st})
	hi := hubtest.MustRoute(t, "alerts", "FROM /messages/* WHERE kind = 'alert' INTO $upstream")
	hi.Priority = 0
	lo := hubtest.MustRoute(t, "all", "FROM /messages/* INTO $upstream")
	lo.Priority = 5
	h.SetRoutes([]*route.Route{hi, lo})
	for i := range 10 {
		m := message.New(fmt.Appendf(nil, "%d", i))
		if i%3 == 0 {
			m.Properties["kind"] = "alert"
		}
		if err := h.SendDevice(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	up := newWindowed(4, 0)
	defer up.close()
	h = hub.New(hub.Options{DeviceID: "gw1", Upstream: up, Store: st})
	defer h.Close()
	hubtest.WaitFor(t, "the backlog", func() bool { return len(up.received()) == 10 })
	var got []string
	for _, m := range up.received() {
		got = append(got, string(m.Body))
	}
	if want := "[0 3 6 9 1 2 4 5 7 8]"; fmt.Sprint(got) != want {
		t.Errorf("delivered %v, want %s", got, want)
	}
}

// TestUplinkPumpDropsUndecodable: a stored record this binary cannot read
// is dropped (and counted), and the messages behind it still go.
func TestUplinkPumpDropsUndecodable(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer st.Close()
	if _, err := st.Append(context.Background(), []store.Target{{Endpoint: hub.UpstreamQueue}}, []byte("not a message"), store.Meta{}); err != nil {
		t.Fatal(err)
	}
	up := newWindowed(16, 0)
	defer up.close()
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: up, Store: st})
	defer h.Close()
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "all", "FROM /* INTO $upstream")})
	if err := h.SendDevice(context.Background(), message.New([]byte("0"))); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the store to drain", func() bool {
		es, err := st.EndpointStats(hub.UpstreamQueue)
		return err == nil && es.Queued == 0
	})
	if got := up.received(); len(got) != 1 || string(got[0].Body) != "0" {
		t.Errorf("received %d messages, want the one good message", len(got))
	}
	if d := h.Stats().Dropped["undecodable"]; d != 1 {
		t.Errorf("undecodable drops %d, want 1", d)
	}
}
