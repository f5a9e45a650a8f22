package hub

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/store"
)

// Uplink is an Endpoint that sends asynchronously with a window of
// messages in flight, as an MQTT link with QoS 1 does. When
// Options.Upstream implements it, the pump of the durable $upstream queue
// keeps up to the window in flight instead of waiting for each message,
// and acknowledges a message in the store only when the uplink's ack says
// the receiver has it.
type Uplink interface {
	Endpoint
	// Publish starts sending m and returns once m is on its way. It
	// blocks while the window is full or the link is down, until ctx
	// ends. It must not send m when ctx is done by the time it would: the
	// pump cancels ctx as soon as one ack reports a failure, so that
	// nothing overtakes the messages it will send again.
	//
	// When Publish returns nil, ack is called exactly once, from any
	// goroutine and without blocking for long: with nil when the receiver
	// acknowledged m, or with the reason it will not be (the connection
	// dropped). When Publish returns an error, ack is never called.
	// Publish must not modify m.
	Publish(ctx context.Context, m *message.Message, d Delivery, ack func(error)) error
}

// uplinkBatch is how many messages the windowed pump reads from the store
// at a time.
const uplinkBatch = 256

// settleTimeout bounds how long a stopping pump waits for the acks of
// what it has in flight, so a hung link cannot hold up Close.
const settleTimeout = 2 * time.Second

// acks collects the uplink's answers for the windowed pump. A committer
// goroutine writes them to the store in batches while the pump goes on
// publishing, so the fsync of one batch overlaps the sending of the next.
type acks struct {
	mu       sync.Mutex
	seqs     []uint64 // acknowledged, not yet committed
	inflight int      // published, not yet answered
	failed   error    // the first failure since the last rewind
	writing  bool     // the committer is writing a batch
	progress bool     // some message was acknowledged since the last rewind
	cancel   context.CancelFunc

	commit chan struct{} // wakes the committer; capacity 1
	change chan struct{} // wakes the pump waiting to settle; capacity 1
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// done records the uplink's answer for seq.
func (a *acks) done(seq uint64, err error) {
	a.mu.Lock()
	a.inflight--
	if err != nil {
		if a.failed == nil {
			a.failed = err
		}
		// Stop the pump's Publish before anything else is sent.
		a.cancel()
	} else {
		a.seqs = append(a.seqs, seq)
		a.progress = true
	}
	a.mu.Unlock()
	poke(a.commit)
	poke(a.change)
}

// fail records a failure the pump saw itself.
func (a *acks) fail(err error) {
	a.mu.Lock()
	if a.failed == nil {
		a.failed = err
	}
	a.mu.Unlock()
}

func (a *acks) failure() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed
}

// wait blocks until cond holds (checked under the lock) or ctx ends.
func (a *acks) wait(ctx context.Context, cond func() bool) bool {
	for {
		a.mu.Lock()
		ok := cond()
		a.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-a.change:
		case <-ctx.Done():
			return false
		}
	}
}

// pumpUplink is the pump for an Uplink: it keeps the window full from the
// store, in priority order, and after any failure lets what is in flight
// settle, rewinds and sends again everything not acknowledged.
//
// A reader goroutine reads and decodes the next batches from the store
// while the pump publishes the current one, so the window does not run
// dry while the store is read; it holds at most readAhead batches.
func (h *Hub) pumpUplink(ctx context.Context, up Uplink) {
	st := h.opts.Store
	log := h.log.With("queue", UpstreamQueue, "endpoint", up.Name())
	a := &acks{commit: make(chan struct{}, 1), change: make(chan struct{}, 1)}

	// The committer writes acknowledgements until the pump is done with
	// it; it stops after a last flush.
	commitStop := make(chan struct{})
	commitDone := make(chan struct{})
	go func() {
		defer close(commitDone)
		a.commitLoop(st, commitStop, log)
	}()
	defer func() {
		// Give what is in flight a moment to be answered, so a clean stop
		// does not send it again after the next start.
		wctx, wcancel := context.WithTimeout(context.Background(), settleTimeout)
		a.wait(wctx, func() bool { return a.inflight == 0 })
		wcancel()
		close(commitStop)
		<-commitDone
	}()

	backoff := time.Duration(0)
	for ctx.Err() == nil {
		if backoff > 0 && !sleepCtx(ctx, backoff) {
			return
		}
		round, cancel := context.WithCancel(ctx)
		a.mu.Lock()
		a.failed, a.progress, a.cancel = nil, false, cancel
		a.mu.Unlock()
		batches := make(chan []readItem, readAhead)
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			h.readAhead(round, batches, log)
		}()
		h.publishRound(round, up, a, batches, log)
		cancel()
		<-readerDone
		if ctx.Err() != nil {
			return
		}
		// A failure: what is in flight settles (each ack a success or
		// another failure), the successes are committed, and the rest is
		// read again from the store, in order.
		log.Warn("upstream did not take every message; sending the unacknowledged ones again", "err", a.failure())
		if !a.wait(ctx, func() bool { return a.inflight == 0 && len(a.seqs) == 0 && !a.writing }) {
			return
		}
		if err := st.Rewind(UpstreamQueue); err != nil {
			log.Error("rewind", "err", err)
		}
		// The uplink paces its own reconnects (Publish waits for them);
		// the pump backs off only when nothing at all gets through.
		a.mu.Lock()
		progress := a.progress
		a.mu.Unlock()
		if progress {
			backoff = 0
		} else {
			backoff = nextBackoff(backoff)
		}
	}
}

// readAhead is how many decoded batches the reader keeps ready.
const readAhead = 2

// readItem is a message read from the store and decoded; m is nil when
// the record could not be decoded.
type readItem struct {
	seq uint64
	m   *message.Message
	d   Delivery
}

// publishRound publishes what the reader hands over until a failure or
// the end of ctx.
func (h *Hub) publishRound(ctx context.Context, up Uplink, a *acks, batches <-chan []readItem, log *slog.Logger) {
	for {
		var batch []readItem
		select {
		case batch = <-batches:
		case <-ctx.Done():
			return
		}
		for _, it := range batch {
			if it.m == nil {
				// Undecodable: acknowledged, so it is never retried.
				a.mu.Lock()
				a.seqs = append(a.seqs, it.seq)
				a.mu.Unlock()
				poke(a.commit)
				continue
			}
			if err := h.publishItem(ctx, up, a, it, log); err != nil {
				a.fail(err)
				return
			}
		}
		if a.failure() != nil {
			return
		}
	}
}

// readAhead reads and decodes batches from the store, in priority order,
// until ctx ends; it waits for appends when the queue is empty.
func (h *Hub) readAhead(ctx context.Context, out chan<- []readItem, log *slog.Logger) {
	st := h.opts.Store
	backoff := time.Duration(0)
	poll := time.NewTimer(time.Second)
	defer poll.Stop()
	for ctx.Err() == nil {
		if backoff > 0 && !sleepCtx(ctx, backoff) {
			return
		}
		items, err := st.Read(UpstreamQueue, uplinkBatch)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("read the store", "err", err)
			}
			backoff = nextBackoff(backoff)
			continue
		}
		backoff = 0
		if len(items) == 0 {
			if !h.waitAppend(ctx, poll) {
				return
			}
			continue
		}
		batch := make([]readItem, len(items))
		for i, it := range items {
			batch[i] = readItem{seq: it.Seq, d: Delivery{Priority: it.Priority, TimeToLive: it.Meta.TTL}}
			m, err := message.Unmarshal(it.Payload)
			if err != nil {
				// A record this binary cannot read is not retried forever.
				log.Error("dropping a stored message that cannot be decoded", "seq", it.Seq, "err", err)
				h.drop("undecodable")
				continue
			}
			batch[i].m = m
		}
		select {
		case out <- batch:
		case <-ctx.Done():
			return
		}
	}
}

// publishItem hands one message to the uplink.
func (h *Hub) publishItem(ctx context.Context, up Uplink, a *acks, it readItem, log *slog.Logger) error {
	a.mu.Lock()
	a.inflight++
	a.mu.Unlock()
	seq := it.seq
	err := up.Publish(ctx, it.m, it.d, func(err error) { a.done(seq, err) })
	if err != nil {
		a.mu.Lock()
		a.inflight--
		a.mu.Unlock()
		poke(a.change)
		if !errors.Is(err, context.Canceled) {
			// A cancel comes from a failed ack, which says why.
			log.Warn("upstream refused a message; will retry", "messageId", it.m.System.MessageID, "err", err)
		}
		return err
	}
	return nil
}

// Acknowledgements are committed in batches: at least ackBatch of them,
// or what came within ackLinger of the previous commit. Each commit is a
// write transaction and an fsync; committing every few PUBACKs would cost
// more than the publishing. What a crash loses of them is sent again.
const (
	ackBatch  = 256
	ackLinger = 10 * time.Millisecond
)

// commitLoop writes collected acknowledgements to the store until stop,
// then writes what is left. Acknowledgements are written in whatever
// order they came: the store takes any sequence numbers.
func (a *acks) commitLoop(st *store.Store, stop <-chan struct{}, log *slog.Logger) {
	take := func() []uint64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		seqs := a.seqs
		a.seqs = nil
		a.writing = len(seqs) > 0
		return seqs
	}
	commit := func(seqs []uint64) {
		if err := st.Ack(UpstreamQueue, seqs...); err != nil {
			// Not acknowledged means sent again later: a duplicate,
			// never a loss.
			log.Error("acknowledge delivered messages", "n", len(seqs), "err", err)
		}
		a.mu.Lock()
		a.writing = false
		a.mu.Unlock()
		poke(a.change)
	}
	var last time.Time
	for {
		a.mu.Lock()
		n := len(a.seqs)
		a.mu.Unlock()
		if wait := ackLinger - time.Since(last); n > 0 && n < ackBatch && wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-stop:
				t.Stop()
				if seqs := take(); len(seqs) > 0 {
					commit(seqs)
				}
				return
			}
		}
		if seqs := take(); len(seqs) > 0 {
			commit(seqs)
			last = time.Now()
			continue
		}
		select {
		case <-a.commit:
		case <-stop:
			if seqs := take(); len(seqs) > 0 {
				commit(seqs)
			}
			return
		}
	}
}
