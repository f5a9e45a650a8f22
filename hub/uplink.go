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
func (h *Hub) pumpUplink(ctx context.Context, up Uplink) {
	st := h.opts.Store
	log := h.log.With("queue", UpstreamQueue, "endpoint", up.Name())
	round, cancel := context.WithCancel(ctx)
	a := &acks{cancel: cancel, commit: make(chan struct{}, 1), change: make(chan struct{}, 1)}

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
		a.mu.Lock()
		a.cancel()
		a.mu.Unlock()
	}()

	backoff := time.Duration(0)
	poll := time.NewTimer(time.Second)
	defer poll.Stop()
	for ctx.Err() == nil {
		if backoff > 0 && !sleepCtx(ctx, backoff) {
			return
		}
		if a.failure() == nil {
			items, err := st.Read(UpstreamQueue, uplinkBatch)
			if err != nil {
				if ctx.Err() == nil {
					log.Error("read the store", "err", err)
				}
				backoff = nextBackoff(backoff)
				continue
			}
			if len(items) == 0 {
				poll.Reset(time.Second)
				select {
				case <-h.pumpWake:
				case <-poll.C:
				case <-ctx.Done():
					return
				}
				continue
			}
			for _, it := range items {
				if err := h.publishItem(round, up, a, it, log); err != nil {
					a.fail(err)
					break
				}
			}
			if a.failure() == nil {
				backoff = 0
				continue
			}
		}
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
		round, cancel = context.WithCancel(ctx)
		a.mu.Lock()
		progress := a.progress
		a.failed, a.progress, a.cancel = nil, false, cancel
		a.mu.Unlock()
		// The uplink paces its own reconnects (Publish waits for them);
		// the pump backs off only when nothing at all gets through.
		if progress {
			backoff = 0
		} else {
			backoff = nextBackoff(backoff)
		}
	}
}

// publishItem decodes one stored message and hands it to the uplink.
func (h *Hub) publishItem(ctx context.Context, up Uplink, a *acks, it store.Item, log *slog.Logger) error {
	m, err := message.Unmarshal(it.Payload)
	if err != nil {
		// A record this binary cannot read is not retried forever.
		log.Error("dropping a stored message that cannot be decoded", "seq", it.Seq, "err", err)
		h.drop("undecodable")
		a.done(it.Seq, nil)
		return nil
	}
	a.mu.Lock()
	a.inflight++
	a.mu.Unlock()
	seq := it.Seq
	err = up.Publish(ctx, m, Delivery{Priority: it.Priority, TimeToLive: it.Meta.TTL}, func(err error) { a.done(seq, err) })
	if err != nil {
		a.mu.Lock()
		a.inflight--
		a.mu.Unlock()
		poke(a.change)
		if !errors.Is(err, context.Canceled) {
			// A cancel comes from a failed ack, which says why.
			log.Warn("upstream refused a message; will retry", "messageId", m.System.MessageID, "err", err)
		}
		return err
	}
	return nil
}

// commitLoop writes collected acknowledgements to the store until stop,
// then writes what is left. Acknowledgements are written in whatever
// order they came: the store takes any sequence numbers.
func (a *acks) commitLoop(st *store.Store, stop <-chan struct{}, log *slog.Logger) {
	for {
		a.mu.Lock()
		seqs := a.seqs
		a.seqs = nil
		a.writing = len(seqs) > 0
		a.mu.Unlock()
		if len(seqs) > 0 {
			if err := st.Ack(UpstreamQueue, seqs...); err != nil {
				// Not acknowledged means sent again later: a duplicate,
				// never a loss.
				log.Error("acknowledge delivered messages", "n", len(seqs), "err", err)
			}
			a.mu.Lock()
			a.writing = false
			a.mu.Unlock()
			poke(a.change)
			continue
		}
		select {
		case <-a.commit:
		case <-stop:
			a.mu.Lock()
			seqs := a.seqs
			a.seqs = nil
			a.mu.Unlock()
			if len(seqs) > 0 {
				if err := st.Ack(UpstreamQueue, seqs...); err != nil {
					log.Error("acknowledge delivered messages", "n", len(seqs), "err", err)
				}
			}
			return
		}
	}
}
