package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// op is one unit of work for the writer goroutine: an append, or any other
// write (ack, sweep, twin). The appends of a batch are made durable by one
// journal write and fdatasync, or with the rest of the batch by one bbolt
// transaction (see hand).
type op struct {
	name string // the operation, for errors: "append", "ack", …
	app  *appendReq
	fn   func(w *wtx) error
	done chan error // buffered: the writer never blocks on a caller

	err  error // set when the op is refused before it runs (ErrFull)
	skip bool

	ack  *ackReq // an acknowledgement (Ack)
	ckpt bool    // a checkpoint (checkpointNow)

	// journaled says the append or acknowledgement was answered when its
	// journal frame was synced: the applier must not answer it again.
	journaled bool
	ackNo     uint64 // a journaled acknowledgement's number (waitAcks)
	// failed says an append that was not journaled was answered with an
	// error (see pendingFor).
	failed atomic.Bool
	// settled says an append is in bbolt or acknowledged by all its
	// targets, and ackedT which targets acknowledged it while it was hot
	// (see applier). Guarded by pendMu.
	settled bool
	ackedT  []bool

	// rest are ops handed over with this one (AppendBatch): the writer
	// takes them into the same batch, in order.
	rest []*op
}

// withRest appends o and the ops handed over with it to batch.
func withRest(batch []*op, o *op) []*op {
	return append(append(batch, o), o.rest...)
}

type appendReq struct {
	targets []targetRecord
	rec     []byte
	est     int64 // estimated bytes the message takes in the file
	trusted bool
	seq     uint64 // given by the writer before the op is written
}

// wtx is a write transaction with the in-memory effects that are applied
// only if it commits.
type wtx struct {
	s   *Store
	tx  *bolt.Tx
	now time.Time

	msgs, refs, queues, endpoints *bolt.Bucket
	ids                           map[string]uint32 // endpoints the batch used
	newEps                        map[string]uint32 // endpoints the batch created

	depth     map[string]*[NumPriorities]int64
	acks      map[string]*ackState
	ckpt      map[string]uint64
	expired   map[string]uint64
	sizeLimit map[string]uint64
	dirty     map[string]bool // endpoints whose state record must be rewritten
	messages  int64
	untrusted uint64
	mark      *trustMark
	maxSeq    uint64 // highest sequence number appended
}

// ackState is a transaction's copy of an endpoint's acknowledged
// prefixes and of the bytes their keys still take, made visible when the
// transaction commits.
type ackState struct {
	acked   [NumPriorities]uint64
	garbage int64
	changed bool // acked moved: the endpoint record must be rewritten
}

// purgeBytes is how many bytes of acknowledged keys an endpoint may keep
// before a commit deletes them. Deleting a run of keys frees the leaf
// pages it covers whole and rewrites the one it ends in, so a commit that
// deletes in bulk writes a page or two for hundreds of messages, where
// deleting at every Ack rewrote the head of the queue (and, when the head
// leaf fell under a quarter full, its neighbour) at every commit.
const purgeBytes = 256 << 10

// submit hands o to the writer and waits for its outcome. The caller holds
// s.closeMu shared (see enter), so the writer is running. ctx bounds only
// the wait for room in the pending queue: once the writer has the op, its
// outcome is always waited for, so the caller never has to guess whether
// a message was stored.
func (s *Store) submit(ctx context.Context, o *op) error {
	if err := s.send(ctx, o); err != nil {
		return err
	}
	return <-o.done
}

// send hands o to the writer without waiting for it to run; o.done
// receives the outcome.
func (s *Store) send(ctx context.Context, o *op) error {
	o.done = make(chan error, 1)
	select {
	case s.ops <- o:
	default:
		select {
		case s.ops <- o:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// writer gathers pending ops into batches, gives their appends sequence
// numbers, writes batches of appends to the journal and hands every batch
// to the applier, in order.
func (s *Store) writer() {
	defer s.wg.Done()
	defer close(s.applyCh)
	for {
		select {
		case o := <-s.ops:
			s.hand(s.gather(withRest(make([]*op, 0, s.lastBatch+8), o)))
		case <-s.quit:
			// Close sets closed before quit is closed and waits for every
			// caller holding closeMu, so nothing is pending here; draining
			// is a guard, not a path.
			for {
				select {
				case o := <-s.ops:
					s.hand(withRest(nil, o))
				default:
					return
				}
			}
		}
	}
}

// applyItem is a batch on its way from the writer to the applier.
type applyItem struct {
	batch []*op
	est   int64 // estimated bytes of its appends
}

// hand gives the appends of batch their sequence numbers and hands the
// batch to the applier. The appends and acknowledgements of the batch are
// first written to the journal, as one frame, and answered once it is
// synced, when the appends surely fit the size limit and take at most
// journalMaxBatch bytes; otherwise, and for the other writes (twin
// writes, sweeps), the applier answers once bbolt committed them. No
// write of a batch depends on another of the same batch, so they may be
// answered in any order.
func (s *Store) hand(batch []*op) {
	var est int64
	var apps, acks []*op
	for _, o := range batch {
		switch {
		case o.app != nil:
			s.nextSeq++
			o.app.seq = s.nextSeq
			est += o.app.est
			apps = append(apps, o)
		case o.ack != nil:
			acks = append(acks, o)
		}
	}
	journaled := false
	if s.jnl != nil && len(apps)+len(acks) > 0 && est <= journalMaxBatch && s.fits(est) {
		// The start of the file may be written over once no frame is
		// needed: nothing journaled waits for bbolt, and the last
		// checkpoint covers every sequence number journaled.
		wrap := s.hotCount.Load() == 0 && s.ckptThrough.Load() >= s.lastJournaled
		start := time.Now()
		err := s.jnl.write(apps, acks, wrap)
		if err == nil {
			journaled = true
			s.journalCommits.Add(1)
			s.journalNanos.Add(int64(time.Since(start)))
			s.hotCount.Add(int64(len(apps) + len(acks)))
			var untrusted uint64
			for _, o := range apps {
				o.journaled = true
				if !o.app.trusted {
					untrusted = o.app.seq
				}
			}
			if len(apps) > 0 {
				s.lastJournaled = s.nextSeq
			}
			for _, o := range acks {
				o.journaled = true
				s.acksJournaled++
				o.ackNo = s.acksJournaled
			}
			s.acksAnswered.Store(s.acksJournaled)
			if untrusted > 0 {
				// noteClock's: a trust mark covers it from now on.
				s.mu.Lock()
				s.untrusted = max(s.untrusted, untrusted)
				s.mu.Unlock()
			}
		} else {
			// The journal is full (or failing): the batch goes to bbolt,
			// and a checkpoint makes its start free again.
			select {
			case s.ckptWant <- struct{}{}:
			default:
			}
		}
	}
	it := applyItem{batch: batch, est: est}
	// Readable (pendingFor) before it is answered, and until it is in
	// bbolt or acknowledged.
	s.pushPend(it)
	if journaled {
		s.pendingEst.Add(est) // until a checkpoint or the acknowledgements
		for _, o := range apps {
			o.done <- nil
		}
		for _, o := range acks {
			o.done <- nil
		}
	}
	s.applyCh <- it
}

// journalMaxBatch bounds the (estimated) bytes of the appends of a batch
// the writer journals, so that a frame never takes more than a part of
// the journal; a larger batch goes to bbolt straight away.
const journalMaxBatch = 1 << 20

// fits says whether appends of est bytes surely fit the size limit, with
// what is not yet in bbolt, so that no size policy need apply to them.
// Estimates are doubled: committed in small transactions, bbolt's pages
// may end up half full.
func (s *Store) fits(est int64) bool {
	return s.usedBytes.Load()+2*(s.pendingEst.Load()+est) <= s.limit-s.reserve
}

// checkpointEvery is how often the applier commits the journaled appends
// not yet acknowledged to bbolt (a checkpoint), when anything was
// journaled since the last one. It bounds the memory they hold, and what a
// crash makes Open read back from the journal.
const checkpointEvery = 500 * time.Millisecond

// applyDelay is how long the applier waits for more batches when all it
// has are journaled appends and acknowledgements: the acknowledgements of
// messages still in memory cost no commit, and those of messages in bbolt
// are committed together. Any other write, whose caller waits for its
// commit, ends the wait.
const applyDelay = 2 * time.Millisecond

// applier applies the batches the writer hands it. Journaled appends stay
// in memory (hot: readable through pendingFor) until a checkpoint commits
// those not yet acknowledged; an acknowledgement of a hot message costs
// no write. Everything else is committed to bbolt as it comes, the
// batches queued together in one transaction.
func (s *Store) applier() {
	defer s.wg.Done()
	defer s.setApplyState(func() { s.applyStopped = true })
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	for {
		select {
		case it, ok := <-s.applyCh:
			if !ok {
				// Closing: what the last checkpoint cannot commit stays in
				// the journal for the next Open.
				s.checkpoint()
				return
			}
			s.applyItems(s.moreApply([]applyItem{it}, applyDelay))
		case <-s.ckptWant:
			s.checkpoint()
		case <-tick.C:
			if len(s.hot) > 0 || s.hotThrough > s.ckptThrough.Load() || len(s.lazyAcks) > 0 {
				s.checkpoint()
			}
		}
	}
}

// applyItems applies a run of handed-over batches, in order.
func (s *Store) applyItems(items []applyItem) {
	var now, ckpts []*op
	ckptFirst := false
	for _, it := range items {
		for _, o := range it.batch {
			switch {
			case o.app != nil && o.journaled:
				s.addHot(o)
			case o.ack != nil:
				rest := s.ackHot(o.ack)
				switch {
				case !o.journaled:
					// Not in the journal (it was full): what it
					// acknowledged in memory is durable only once a
					// checkpoint has moved past it.
					ckptFirst = ckptFirst || len(rest) < len(o.ack.seqs)
					o.ack.seqs = rest
					now = append(now, o)
				case len(rest) > 0:
					// Answered from the journal: committed with the next
					// transaction, not answered again.
					s.lazyAcks = append(s.lazyAcks, &op{name: "ack", ack: &ackReq{endpoint: o.ack.endpoint, seqs: rest}, journaled: true, ackNo: o.ackNo})
				default:
					s.hotCount.Add(-1)
					s.noteAck(o.ackNo)
				}
			case o.ckpt:
				ckpts = append(ckpts, o)
			default:
				now = append(now, o)
			}
		}
	}
	if len(s.hot) > 0 && slices.ContainsFunc(now, func(o *op) bool { return o.app != nil }) {
		// Appends that were not journaled are near the size limit: the
		// policy must see the older, hot messages in bbolt to drop the
		// oldest first.
		ckptFirst = true
	}
	if ckptFirst {
		if err := s.checkpoint(); err != nil {
			// What the acknowledgements did in memory is not durable:
			// they fail, and their callers deliver again, as after any
			// failed Ack.
			now = slices.DeleteFunc(now, func(o *op) bool {
				if o.ack == nil {
					return false
				}
				o.done <- fmt.Errorf("store: %s: %w", o.name, err)
				return true
			})
		}
	}
	if len(now) > 0 || (len(s.lazyAcks) > 0 && len(ckpts) == 0) {
		s.commitNow(now)
	}
	if len(ckpts) > 0 {
		err := s.checkpoint()
		for _, o := range ckpts {
			o.done <- err
		}
	}
	s.popPend()
}

// commitNow commits ops, which are not journaled, with the acknowledgements
// waiting for a commit (lazyAcks), and answers them.
func (s *Store) commitNow(ops []*op) {
	lazy := s.lazyAcks
	s.lazyAcks = nil
	if len(lazy) > 0 && slices.ContainsFunc(ops, func(o *op) bool { return o.app != nil }) {
		// First, so that the size limit sees the room they free: their
		// callers were answered, and expect it.
		if err := s.commit(lazy, nil); err != nil {
			s.lazyAcks = lazy
			lazy = nil
		} else {
			s.hotCount.Add(-int64(len(lazy)))
			n := lastAckNo(lazy)
			lazy = nil
			s.noteAck(n)
		}
	}
	batch := append(ops, lazy...)
	ackNo := lastAckNo(lazy)
	err := s.commit(batch, func() {
		s.pendMu.Lock()
		for _, o := range ops {
			if o.app != nil {
				o.settled = true
			}
		}
		s.pendMu.Unlock()
	})
	if err != nil {
		// Kept for the next commit; a lost acknowledgement would only
		// mean a message delivered again.
		s.lazyAcks = append(lazy, s.lazyAcks...)
		s.setApplyState(func() {}) // pendingFor: failed appends
		return
	}
	s.noteUsed()
	s.fillFile()
	s.hotCount.Add(-int64(len(lazy)))
	s.noteAck(ackNo)
}

// addHot keeps a journaled append in memory until a checkpoint or its
// acknowledgement.
func (s *Store) addHot(o *op) {
	s.pendMu.Lock()
	s.hot[o.app.seq] = o
	s.pendMu.Unlock()
	s.hotThrough = max(s.hotThrough, o.app.seq)
}

// ackHot acknowledges what a is for hot messages, in memory, and returns
// the sequence numbers left for bbolt. A message acknowledged by every
// target is gone: it never reaches bbolt.
func (s *Store) ackHot(a *ackReq) []uint64 {
	var rest []uint64
	var gone int
	var est int64
	var top uint64
	s.pendMu.Lock()
	for _, seq := range a.seqs {
		o := s.hot[seq]
		if o == nil {
			rest = append(rest, seq)
			continue
		}
		i := slices.IndexFunc(o.app.targets, func(t targetRecord) bool { return t.Endpoint == a.endpoint })
		if i < 0 {
			continue // not queued for this endpoint: nothing to acknowledge
		}
		if o.ackedT == nil {
			o.ackedT = make([]bool, len(o.app.targets))
		}
		if o.ackedT[i] {
			continue
		}
		o.ackedT[i] = true
		top = max(top, seq)
		s.hotCkpt[a.endpoint] = max(s.hotCkpt[a.endpoint], seq)
		if !slices.Contains(o.ackedT, false) {
			o.settled = true
			delete(s.hot, seq)
			gone++
			est += o.app.est
		}
	}
	s.pendMu.Unlock()
	if top > 0 {
		s.mu.Lock()
		if st := s.eps[a.endpoint]; st != nil && top > st.checkpoint {
			st.checkpoint = top
		}
		s.mu.Unlock()
	}
	s.hotCount.Add(-int64(gone))
	s.pendingEst.Add(-est)
	return rest
}

// checkpoint commits the hot messages, for the targets that have not
// acknowledged them, and the acknowledgements waiting for a commit, with
// the highest sequence number journaled: Open reads back from the journal
// only what comes after it.
func (s *Store) checkpoint() error {
	if len(s.hot) == 0 && len(s.lazyAcks) == 0 && s.hotThrough == s.ckptThrough.Load() {
		return nil // nothing since the last one
	}
	s.pendMu.Lock()
	hot := make([]*op, 0, len(s.hot))
	for _, o := range s.hot {
		hot = append(hot, o)
	}
	s.pendMu.Unlock()
	slices.SortFunc(hot, func(a, b *op) int { return cmp.Compare(a.app.seq, b.app.seq) })
	batch := make([]*op, 0, len(hot)+1)
	var est int64
	for _, o := range hot {
		a := o.app
		if o.ackedT != nil {
			c := *a
			c.targets = nil
			for i, t := range a.targets {
				if !o.ackedT[i] {
					c.targets = append(c.targets, t)
				}
			}
			a = &c
		}
		est += o.app.est
		batch = append(batch, &op{name: "append", app: a, journaled: true})
	}
	through := s.hotThrough
	acked := s.hotCkpt
	batch = append(batch, &op{name: "checkpoint", journaled: true, fn: func(w *wtx) error {
		// The endpoints' checkpoints moved by acknowledgements in memory;
		// an endpoint whose messages were all acknowledged in memory gets
		// its record (Stats lists it) as it would have with its first.
		for ep, seq := range acked {
			id, err := w.endpointID(ep, true)
			if err != nil || id == 0 {
				continue
			}
			w.ckpt[ep] = max(w.ckpt[ep], seq)
			w.dirty[ep] = true
		}
		return w.tx.Bucket(bucketMeta).Put(keyJournaled, u64(through))
	}})
	lazy := s.lazyAcks
	s.lazyAcks = nil
	batch = append(batch, lazy...)
	ackNo := lastAckNo(lazy)
	err := s.commit(batch, func() {
		s.pendMu.Lock()
		for _, o := range hot {
			o.settled = true
			delete(s.hot, o.app.seq)
		}
		s.pendMu.Unlock()
	})
	if err != nil {
		s.lazyAcks = append(lazy, s.lazyAcks...)
		return err
	}
	s.hotCount.Add(-int64(len(hot) + len(lazy)))
	s.pendingEst.Add(-est)
	s.ckptThrough.Store(through)
	s.hotCkpt = make(map[string]uint64)
	s.noteAck(ackNo)
	s.noteUsed()
	s.fillFile()
	s.popPend()
	return nil
}

// lastAckNo is the highest acknowledgement number among ops.
func lastAckNo(ops []*op) uint64 {
	var n uint64
	for _, o := range ops {
		n = max(n, o.ackNo)
	}
	return n
}

// noteAck records that the journaled acknowledgements are applied up to
// number n but for those still waiting for a commit (lazyAcks), and wakes
// waitAcks and waitCommitted.
func (s *Store) noteAck(n uint64) {
	s.ackSeen = max(s.ackSeen, n)
	done := s.ackSeen
	for _, o := range s.lazyAcks {
		done = min(done, o.ackNo-1)
	}
	s.setApplyState(func() { s.acksApplied.Store(max(s.acksApplied.Load(), done)) })
}

// waitAcks waits until the acknowledgements answered so far are applied
// (see Rewind), or the applier stopped.
func (s *Store) waitAcks() {
	target := s.acksAnswered.Load()
	s.applyMu.Lock()
	for s.acksApplied.Load() < target && !s.applyStopped {
		s.applyCond.Wait()
	}
	s.applyMu.Unlock()
}

// checkpointNow has the applier checkpoint, after everything handed over
// before, and waits for it: then bbolt has every message answered so far
// that is not acknowledged, which Stats, EndpointStats and Sweep count.
// A failed checkpoint (a full disk) leaves the hot messages in memory.
func (s *Store) checkpointNow() {
	_ = s.submit(context.Background(), &op{name: "checkpoint", ckpt: true})
}

// popPend drops the batches at the front of pend that Read no longer
// needs: their appends are in bbolt, acknowledged or failed, and their
// acknowledgements applied.
func (s *Store) popPend() {
	applied := s.acksApplied.Load()
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	n := 0
	for _, it := range s.pend {
		if !it.done(applied) {
			break
		}
		n++
	}
	if n == 0 {
		return
	}
	s.pendIx.drop(s.pend[:n])
	clear(s.pend[:n])
	s.pend = s.pend[n:]
}

// pushPend makes a batch readable (pendingFor): it joins pend and its
// index.
func (s *Store) pushPend(it applyItem) {
	s.pendMu.Lock()
	s.pend = append(s.pend, it)
	s.pendIx.add(it)
	s.pendMu.Unlock()
}

// done says whether Read no longer needs the batch, when the journaled
// acknowledgements are applied through number applied. pendMu is held.
func (it applyItem) done(applied uint64) bool {
	for _, o := range it.batch {
		if o.app != nil && !o.settled && !o.failed.Load() {
			return false
		}
		if o.ack != nil && o.journaled && o.ackNo > applied {
			return false
		}
	}
	return true
}

// moreApply adds to items the batches queued for the applier, and with
// wait > 0 those handed over within wait while each of them can wait (see
// applyDelay), up to MaxBatch operations.
func (s *Store) moreApply(items []applyItem, wait time.Duration) []applyItem {
	n := 0
	for _, it := range items {
		n += len(it.batch)
		if !it.canWait() {
			wait = 0
		}
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for n < s.opts.MaxBatch {
		var it applyItem
		var ok bool
		if timeout == nil {
			select {
			case it, ok = <-s.applyCh:
			default:
				return items
			}
		} else {
			select {
			case it, ok = <-s.applyCh:
			case <-timeout:
				return items
			}
		}
		if !ok {
			return items
		}
		items = append(items, it)
		n += len(it.batch)
		if !it.canWait() {
			timeout = nil // take what is queued, wait no more
		}
	}
	return items
}

// canWait says whether every operation of the batch was journaled.
func (it applyItem) canWait() bool {
	for _, o := range it.batch {
		if !o.journaled {
			return false
		}
	}
	return true
}

// freshEntry is an append not in bbolt (yet), as Read needs it.
type freshEntry struct {
	seq uint64
	ttl int64
	rec []byte
}

// pendingFor returns the appends to endpoint that were answered and are
// not in bbolt, nor acknowledged by endpoint, by priority, oldest first:
// those after the sequence numbers in after, at most max of each
// priority (Read returns no more). An append that is neither answered
// nor failed (not journaled: it is answered once bbolt has it) ends the
// list, since nothing after it may be read before it; wait is then true.
//
// acked has the sequence numbers of endpoint's acknowledgements that
// were answered (from the journal) and are not applied yet, in memory
// or in bbolt: Read must not return them.
func (s *Store) pendingFor(endpoint string, after *[NumPriorities]uint64, max int) (fresh [NumPriorities][]freshEntry, acked []uint64, wait bool) {
	applied := s.acksApplied.Load()
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	x := &s.pendIx
	acks := x.acks.items()
	i, _ := slices.BinarySearchFunc(acks, applied, func(o *op, n uint64) int { return cmp.Compare(o.ackNo, n+1) })
	for _, o := range acks[i:] {
		if o.ack.endpoint == endpoint {
			acked = append(acked, o.ack.seqs...)
		}
	}
	limit := uint64(math.MaxUint64)
	for _, o := range x.slow.items() {
		if !o.settled && !o.failed.Load() {
			limit, wait = o.app.seq, true
			break
		}
	}
	qs := x.fresh[endpoint]
	if qs == nil {
		return fresh, acked, wait
	}
	for p := range qs {
		refs := qs[p].items()
		i, _ := slices.BinarySearchFunc(refs, after[p], func(r pendRef, seq uint64) int { return cmp.Compare(r.o.app.seq, seq+1) })
		for _, r := range refs[i:] {
			o := r.o
			if o.app.seq >= limit || len(fresh[p]) >= max {
				break
			}
			if o.settled || (o.ackedT != nil && o.ackedT[r.t]) {
				continue
			}
			fresh[p] = append(fresh[p], freshEntry{seq: o.app.seq, ttl: o.app.targets[r.t].TTL, rec: o.app.rec})
		}
	}
	return fresh, acked, wait
}

// waitCommitted waits until the appends handed over so far that were not
// journaled are committed or failed (pendingFor's wait).
func (s *Store) waitCommitted() {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	for {
		if _, _, wait := s.pendingFor("", &[NumPriorities]uint64{}, 0); !wait || s.applyStopped {
			return
		}
		s.applyCond.Wait()
	}
}

// noteUsed records the bytes of the file's pages in use, for fits. A
// View fails only on a closed database, which has nothing to record.
func (s *Store) noteUsed() {
	_ = s.db.View(func(tx *bolt.Tx) error {
		s.usedBytes.Store(tx.Size() - int64(s.db.Stats().FreeAlloc))
		return nil
	})
}

// setApplyState changes the applier's state under applyMu and wakes the
// waiters.
func (s *Store) setApplyState(f func()) {
	s.applyMu.Lock()
	f()
	s.applyMu.Unlock()
	s.applyCond.Broadcast()
}

// gather adds the ops already waiting to batch. With CommitDelay it waits
// that long for more. Without, it waits only when the previous batch was
// larger than what is queued now, at most regatherWait, and only until
// the batch is as large as the previous one: the producers of the last
// batch are being woken by its commit and are about to append again, and
// taking them into this batch instead of the next halves the commits (and
// the pages written) per message under load. With 64 producers on two
// cores, waking them all takes longer than 200 µs, so regatherWait is a
// millisecond: batches then stay full (64, not ~45) for a wait that is
// short next to the fsync it saves. A lone producer never waits, and a
// shrinking load waits at most once per step down.
//
// A wait that ends without filling the batch says the producers do not
// come back as a crowd: a pipeline, such as a local MQTT client that
// sends its next messages when the PUBACKs of this commit reach it, a
// network round trip later, and whose batches vary in size. For such a
// load every wait is a millisecond added to every message, so the
// writer then gathers the next regatherSkip batches without waiting.
func (s *Store) gather(batch []*op) []*op {
	batch = s.drainReady(batch)
	wait, target := s.opts.CommitDelay, s.opts.MaxBatch
	adaptive := wait == 0
	if adaptive {
		wait, target = regatherWait, min(s.lastBatch, s.opts.MaxBatch)
		if s.skipRegather > 0 {
			// The last wait was in vain: the producers are not coming
			// back at once (a pipeline, not a crowd), and waiting would
			// only delay them.
			s.skipRegather--
			wait = 0
		}
	}
	if wait > 0 && len(batch) < target {
		t := time.NewTimer(wait)
		defer t.Stop()
	loop:
		for len(batch) < target {
			select {
			case o := <-s.ops:
				batch = s.drainReady(withRest(batch, o))
			case <-t.C:
				break loop
			case <-s.quit:
				break loop
			}
		}
	}
	if adaptive && wait > 0 {
		if len(batch) < target {
			s.skipRegather = regatherSkip
		} else {
			s.skipRegather = 0
		}
	}
	s.lastBatch = len(batch)
	return batch
}

// drainReady adds the ops waiting in the queue, up to MaxBatch.
func (s *Store) drainReady(batch []*op) []*op {
	for len(batch) < s.opts.MaxBatch {
		select {
		case o := <-s.ops:
			batch = withRest(batch, o)
		default:
			return batch
		}
	}
	return batch
}

// commit runs batch in one transaction and answers its ops, but for the
// journaled appends, answered when their frame was synced. An op whose
// function fails is taken out and answered with its error, and the rest
// is run again, so one bad op never fails the others. commit returns the
// error of a transaction that failed as a whole: nothing of batch is in
// bbolt then. committed, if not nil, runs once the transaction is
// committed, before the answers.
func (s *Store) commit(batch []*op, committed func()) error {
	now := s.opts.Now()
	trustedNow := s.opts.Trusted(now)
	for {
		var w *wtx
		failed := -1
		start := time.Now()
		err := s.db.Update(func(tx *bolt.Tx) error {
			w = s.newWtx(tx, now)
			for _, o := range batch {
				o.err, o.skip = nil, false
			}
			if trustedNow {
				if err := w.noteTrust(); err != nil {
					return err
				}
			}
			if err := w.makeRoom(batch); err != nil {
				return err
			}
			for i, o := range batch {
				if o.skip {
					continue
				}
				var err error
				switch {
				case o.app != nil:
					err = w.append(o.app)
				case o.ack != nil:
					err = w.ackReq(o.ack)
				default:
					err = o.fn(w)
				}
				if err != nil {
					failed = i
					return err
				}
			}
			if w.maxSeq > w.msgs.Sequence() {
				if err := w.msgs.SetSequence(w.maxSeq); err != nil {
					return err
				}
			}
			if err := w.purgeFull(); err != nil {
				return err
			}
			return w.flushState()
		})
		if err != nil && failed >= 0 {
			o := batch[failed]
			err = fmt.Errorf("store: %s: %w", o.name, err)
			if o.journaled {
				// Answered already: bbolt refused what the journal
				// took (it cannot: appends are checked before).
				s.noteApplyError(o.name, err)
			} else {
				o.failed.Store(o.app != nil)
				o.done <- err
			}
			if len(batch) == 1 {
				if committed != nil {
					committed()
				}
				return nil
			}
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			continue
		}
		if err == nil {
			s.commits.Add(1)
			s.commitNanos.Add(int64(time.Since(start)))
			s.apply(w)
			if committed != nil {
				committed()
			}
		} else {
			err = s.commitError(err)
		}
		for _, o := range batch {
			switch {
			case o.journaled:
			case o.skip:
				o.failed.Store(o.app != nil)
				o.done <- o.err
			case err != nil:
				o.failed.Store(o.app != nil)
				o.done <- fmt.Errorf("store: %s: %w", o.name, err)
			default:
				o.done <- nil
			}
		}
		return err
	}
}

// noteApplyError records that a journaled write could not be committed
// and is lost; Stats reports the last such error.
func (s *Store) noteApplyError(name string, err error) {
	s.mu.Lock()
	s.applyErr = fmt.Errorf("a journaled %s cannot be committed, and is lost: %w", name, err)
	s.mu.Unlock()
}

// commitError wraps the error of a failed commit. bbolt rolls the
// transaction back: nothing of the batch is in the file, the pages it had
// written are free again and the next transaction starts from the last
// committed state, so a full disk fails the batch and nothing else.
// bbolt reports a failed growth of its memory map without wrapping the
// cause and then refuses every transaction; that is said here, since
// only reopening the store recovers from it.
func (s *Store) commitError(err error) error {
	if errors.Is(err, berrors.ErrInvalidMapping) || strings.Contains(err.Error(), "mmap allocate error") {
		return fmt.Errorf("commit %s: %w (bbolt could not map the grown file into memory; close and reopen the store)", s.path, err)
	}
	return fmt.Errorf("commit %s: %w", s.path, err)
}

func (s *Store) newWtx(tx *bolt.Tx, now time.Time) *wtx {
	w := &wtx{
		s: s, tx: tx, now: now,
		msgs:      tx.Bucket(bucketMessages),
		refs:      tx.Bucket(bucketRefs),
		queues:    tx.Bucket(bucketQueues),
		endpoints: tx.Bucket(bucketEndpoints),
		ids:       make(map[string]uint32),
		newEps:    make(map[string]uint32),
		depth:     make(map[string]*[NumPriorities]int64),
		acks:      make(map[string]*ackState),
		ckpt:      make(map[string]uint64),
		expired:   make(map[string]uint64),
		sizeLimit: make(map[string]uint64),
		dirty:     make(map[string]bool),
	}
	// Keys grow at the end of these buckets (in queues, at the end of
	// each endpoint's and priority's range), so full pages waste nothing
	// and halve the pages a backlog needs and a commit writes.
	w.msgs.FillPercent = 1.0
	w.refs.FillPercent = 1.0
	w.queues.FillPercent = 1.0
	return w
}

// apply makes the effects of a committed transaction visible.
func (s *Store) apply(w *wtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ep, id := range w.newEps {
		if st := s.eps[ep]; st != nil {
			st.id = id // Read made its state (see Read)
		} else {
			s.eps[ep] = &endpointState{id: id}
		}
	}
	for ep, d := range w.depth {
		st := s.endpoint(ep)
		for p := range d {
			st.depth[p] += d[p]
		}
	}
	for ep, a := range w.acks {
		if st := s.endpoint(ep); st != nil {
			st.acked, st.garbage = a.acked, a.garbage
		}
	}
	for ep, c := range w.ckpt {
		if st := s.endpoint(ep); c > st.checkpoint {
			st.checkpoint = c
		}
	}
	for ep, n := range w.expired {
		s.endpoint(ep).expired += n
	}
	for ep, n := range w.sizeLimit {
		s.endpoint(ep).sizeLimit += n
	}
	s.messages += w.messages
	if w.untrusted > s.untrusted {
		s.untrusted = w.untrusted
	}
	if w.mark != nil {
		s.trust = append(s.trust, *w.mark)
	}
}

// endpointID returns the id of endpoint name, giving it one when create
// is set; 0 when it has none.
func (w *wtx) endpointID(name string, create bool) (uint32, error) {
	if id, ok := w.ids[name]; ok {
		return id, nil
	}
	w.s.mu.Lock()
	var id uint32
	if st := w.s.eps[name]; st != nil {
		id = st.id
	}
	w.s.mu.Unlock()
	if id == 0 && create {
		n, err := w.endpoints.NextSequence()
		if err != nil {
			return 0, err
		}
		if n > math.MaxUint32 {
			return 0, fmt.Errorf("create queue %q: out of endpoint ids", name)
		}
		id = uint32(n)
		w.newEps[name] = id
		w.dirty[name] = true
	}
	if id != 0 {
		w.ids[name] = id
	}
	return id, nil
}

func (w *wtx) addDepth(ep string, prio uint32, n int64) {
	d := w.depth[ep]
	if d == nil {
		d = new([NumPriorities]int64)
		w.depth[ep] = d
	}
	d[prio] += n
}

// append stores one message. A message for one endpoint is stored in
// that endpoint's queue, as the value of its queue key: one bucket, one
// run of pages per commit. A message for several endpoints is stored once
// in messages, with a reference count in refs, and each queue key has an
// empty value.
func (w *wtx) append(a *appendReq) error {
	seq := a.seq
	w.maxSeq = max(w.maxSeq, seq)
	if len(a.targets) == 1 {
		t := a.targets[0]
		id, err := w.endpointID(t.Endpoint, true)
		if err != nil {
			return err
		}
		if err := w.queues.Put(queueKey(id, t.Priority, seq), a.rec); err != nil {
			return fmt.Errorf("queue %q: put %d: %w", t.Endpoint, seq, err)
		}
		w.addDepth(t.Endpoint, t.Priority, 1)
	} else {
		key := u64(seq)
		if err := w.msgs.Put(key, a.rec); err != nil {
			return fmt.Errorf("put message %d: %w", seq, err)
		}
		for _, t := range a.targets {
			id, err := w.endpointID(t.Endpoint, true)
			if err != nil {
				return err
			}
			if err := w.queues.Put(queueKey(id, t.Priority, seq), []byte{}); err != nil {
				return fmt.Errorf("queue %q: put %d: %w", t.Endpoint, seq, err)
			}
			w.addDepth(t.Endpoint, t.Priority, 1)
		}
		if err := w.refs.Put(key, u64(uint64(len(a.targets)))); err != nil {
			return err
		}
	}
	if meta := w.tx.Bucket(bucketMeta); !a.trusted && seq > getU64(meta.Get(keyUntrusted)) {
		// A checkpoint commits messages older than some committed before.
		if err := meta.Put(keyUntrusted, u64(seq)); err != nil {
			return err
		}
		w.untrusted = seq
	}
	w.messages++
	return nil
}

// release drops one reference to the shared message seq and deletes the
// message with its last reference. refs holds the count only while it is
// above one: a shared message without an entry has one reference left.
// It returns the bytes the message occupied when it was deleted.
func (w *wtx) release(seq uint64) (int64, error) {
	key := u64(seq)
	if v := w.refs.Get(key); v != nil {
		if n := getU64(v); n > 2 {
			return 0, w.refs.Put(key, u64(n-1))
		}
		return 0, w.refs.Delete(key)
	}
	v := w.msgs.Get(key)
	if v == nil {
		return 0, nil
	}
	size := int64(len(v)) + int64(len(key)) + elementSize
	if err := w.msgs.Delete(key); err != nil {
		return 0, err
	}
	w.messages--
	return size, nil
}

// unqueue removes the key of seq from endpoint ep's queue of priority
// prio, if it is there, and the message with it (its last reference). It
// returns the bytes freed.
func (w *wtx) unqueue(ep string, id, prio uint32, seq uint64) (bool, int64, error) {
	if seq <= w.ackState(ep).acked[prio] {
		return false, 0, nil // acknowledged: the key waits for purge
	}
	key := queueKey(id, prio, seq)
	v := w.queues.Get(key)
	if v == nil {
		return false, 0, nil
	}
	inline := int64(len(v))
	if err := w.queues.Delete(key); err != nil {
		return false, 0, err
	}
	w.addDepth(ep, prio, -1)
	w.dirty[ep] = true
	freed := inline + queueKeyLen + elementSize
	if inline > 0 {
		w.messages--
		return true, freed, nil
	}
	n, err := w.release(seq)
	return true, freed + n, err
}

// ackState returns the transaction's copy of the acknowledged prefixes of
// endpoint ep.
func (w *wtx) ackState(ep string) *ackState {
	a := w.acks[ep]
	if a == nil {
		a = new(ackState)
		w.s.mu.Lock()
		if st := w.s.eps[ep]; st != nil {
			a.acked, a.garbage = st.acked, st.garbage
		}
		w.s.mu.Unlock()
		w.acks[ep] = a
	}
	return a
}

// ack acknowledges seqs for endpoint ep (id). A key that continues the
// acknowledged prefix of its priority (the oldest keys, as a consumer
// acknowledges in order) only moves the prefix, which is saved in the
// endpoint record; the key stays in the file until purge deletes it with
// others. A key acknowledged out of order is deleted at once. Either way
// the message counts as gone: its depth, its body when the queue holds it,
// its reference when it is shared.
func (w *wtx) ack(ep string, id uint32, seqs []uint64) error {
	a := w.ackState(ep)
	var found [NumPriorities][]uint64
	// Consumers acknowledge what they read, mostly of one priority: try
	// the priority of the previous hit first.
	last := uint32(0)
	for _, seq := range seqs {
		for i := uint32(0); i < NumPriorities; i++ {
			p := (last + i) % NumPriorities
			if seq <= a.acked[p] {
				continue
			}
			if w.queues.Get(queueKey(id, p, seq)) != nil {
				found[p] = append(found[p], seq)
				last = p
				break
			}
		}
	}
	for p := range found {
		list := found[p]
		if len(list) == 0 {
			continue
		}
		slices.Sort(list)
		list = slices.Compact(list)
		prefix := queuePrefix(id, uint32(p))
		c := w.queues.Cursor()
		i := 0
		for k, v := c.Seek(queueKey(id, uint32(p), a.acked[p]+1)); k != nil && i < len(list) && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			_, _, seq, _ := parseQueueKey(k)
			if seq != list[i] {
				break
			}
			if len(v) > 0 {
				w.messages--
			} else if _, err := w.release(seq); err != nil {
				return fmt.Errorf("endpoint %q seq %d: %w", ep, seq, err)
			}
			w.addDepth(ep, uint32(p), -1)
			a.garbage += int64(len(v)) + queueKeyLen + elementSize
			a.acked[p], a.changed = seq, true
			i++
		}
		for _, seq := range list[i:] {
			if _, _, err := w.unqueue(ep, id, uint32(p), seq); err != nil {
				return fmt.Errorf("endpoint %q seq %d: %w", ep, seq, err)
			}
		}
		if n := list[len(list)-1]; n > w.ckpt[ep] {
			w.ckpt[ep] = n
		}
	}
	return nil
}

// ackReq acknowledges a in bbolt, as Ack.
func (w *wtx) ackReq(a *ackReq) error {
	if len(a.seqs) == 0 {
		return nil
	}
	id, err := w.endpointID(a.endpoint, false)
	if id == 0 || err != nil {
		return err
	}
	return w.ack(a.endpoint, id, a.seqs)
}

// purge deletes the acknowledged keys of endpoint ep (id) and returns the
// bytes they took.
func (w *wtx) purge(ep string, id uint32) (int64, error) {
	a := w.ackState(ep)
	if a.garbage == 0 {
		return 0, nil
	}
	c := w.queues.Cursor()
	for p, upTo := range a.acked {
		if err := purgeQueue(c, id, uint32(p), upTo); err != nil {
			return 0, fmt.Errorf("endpoint %q: delete acknowledged: %w", ep, err)
		}
	}
	freed := a.garbage
	a.garbage = 0
	return freed, nil
}

// purgeQueue deletes the keys of one endpoint's queue of one priority up
// to sequence number upTo. It walks back from the last of them: a bbolt
// cursor stays valid across a Delete for the keys before it, while
// walking forward may skip the key after a deleted one. A leaf emptied
// earlier in the transaction looks like the start of the bucket to Prev,
// so when the walk stops early, what is left is deleted with a Seek per
// key.
func purgeQueue(c *bolt.Cursor, id, prio uint32, upTo uint64) error {
	if upTo == 0 {
		return nil
	}
	prefix := queuePrefix(id, prio)
	k, _ := c.Seek(queueKey(id, prio, upTo+1))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if _, _, seq, _ := parseQueueKey(k); seq > upTo {
			break
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// purgeFull purges the endpoints of this transaction whose acknowledged
// keys reached purgeBytes.
func (w *wtx) purgeFull() error {
	for ep, a := range w.acks {
		if a.garbage < purgeBytes {
			continue
		}
		if id := w.ids[ep]; id != 0 {
			if _, err := w.purge(ep, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// purgeAll purges every endpoint and returns the bytes freed.
func (w *wtx) purgeAll() (int64, error) {
	w.s.mu.Lock()
	ids := make(map[string]uint32, len(w.s.eps))
	for ep, st := range w.s.eps {
		ids[ep] = st.id
	}
	w.s.mu.Unlock()
	var freed int64
	for ep, id := range ids {
		n, err := w.purge(ep, id)
		if err != nil {
			return freed, err
		}
		freed += n
	}
	return freed, nil
}

// flushState rewrites the state record of every endpoint that is new or
// whose checkpoint, acknowledged prefixes or drop counters changed. The
// endpoints bucket is small and bbolt keeps it inline in the root page,
// which every commit writes anyway.
func (w *wtx) flushState() error {
	for ep, a := range w.acks {
		if a.changed {
			w.dirty[ep] = true
		}
	}
	for ep := range w.dirty {
		id := w.ids[ep]
		if id == 0 {
			continue
		}
		r := endpointRecord{ID: id}
		if v := w.endpoints.Get([]byte(ep)); v != nil {
			var err error
			if r, err = decodeEndpoint(v); err != nil {
				return fmt.Errorf("endpoint %q state: %w", ep, err)
			}
		}
		c := r.Checkpoint
		if n := w.ckpt[ep]; n > c {
			c = n
		}
		a := w.acks[ep]
		if w.newEps[ep] == 0 && c == r.Checkpoint && w.expired[ep] == 0 && w.sizeLimit[ep] == 0 && (a == nil || !a.changed) {
			continue
		}
		if a != nil && a.changed {
			r.setAcked(&a.acked)
		}
		r.V, r.Checkpoint = recordVersion, c
		r.Expired += w.expired[ep]
		r.SizeLimit += w.sizeLimit[ep]
		b, err := encodeRecord(r)
		if err != nil {
			return err
		}
		if err := w.endpoints.Put([]byte(ep), b); err != nil {
			return err
		}
	}
	return nil
}

// noteTrust records the first moment the store sees a trusted clock after
// messages were enqueued on an untrusted one: their age counts from here.
func (w *wtx) noteTrust() error {
	w.s.mu.Lock()
	hw := w.s.untrusted
	var last uint64
	if n := len(w.s.trust); n > 0 {
		last = w.s.trust[n-1].seq
	}
	w.s.mu.Unlock()
	if hw == 0 || hw <= last {
		return nil
	}
	if err := w.tx.Bucket(bucketTrust).Put(u64(hw), u64(uint64(w.now.UnixNano()))); err != nil {
		return err
	}
	w.mark = &trustMark{seq: hw, at: w.now}
	return nil
}

// used returns the bytes of the file's pages in use: the high water mark
// less the free and pending pages.
func (w *wtx) used() int64 {
	st := w.s.db.Stats()
	return w.tx.Size() - int64(st.FreeAlloc)
}

// makeRoom applies the size policy to the appends of batch before any of
// them runs. Appends that cannot be stored are marked skip with ErrFull.
func (w *wtx) makeRoom(batch []*op) error {
	var need int64
	for _, o := range batch {
		if o.app != nil {
			need += o.app.est
		}
	}
	if need == 0 {
		return nil
	}
	room := w.s.limit - w.s.reserve - w.used()
	if !slices.ContainsFunc(batch, func(o *op) bool { return o.journaled && o.app != nil }) {
		// The journaled appends not in bbolt yet are older, and will be
		// stored whatever the policy: the room is theirs first.
		room -= w.s.pendingEst.Load()
	}
	if need > room {
		// Acknowledged keys waiting for purge are free space first.
		freed, err := w.purgeAll()
		if err != nil {
			return err
		}
		room += freed
	}
	if need > room && w.s.opts.OnFull == DropOldest {
		freed, err := w.dropOldest(need - room)
		if err != nil {
			return err
		}
		room += freed
	}
	if need <= room {
		return nil
	}
	// Journaled appends were answered: they are stored, whatever the
	// policy (the writer journals only appends that fit).
	for _, o := range batch {
		if o.app != nil && o.journaled {
			room -= o.app.est
		}
	}
	for _, o := range batch {
		if o.app == nil || o.journaled {
			continue
		}
		if o.app.est <= room {
			room -= o.app.est
			continue
		}
		o.skip = true
		if o.app.est > (w.s.limit-w.s.reserve)/2 {
			o.err = fmt.Errorf("%w: a message of %d bytes can never fit a store limited to %d bytes", ErrFull, len(o.app.rec), w.s.limit)
		} else {
			o.err = fmt.Errorf("%w: %s is at its limit of %d bytes (policy %s)", ErrFull, w.s.path, w.s.limit, w.s.opts.OnFull)
		}
	}
	return nil
}

// dropOldest drops the oldest references of the lowest priority first,
// across endpoints in sequence order, until want bytes were freed or
// nothing is left. Each drop is counted with reason size_limit.
func (w *wtx) dropOldest(want int64) (int64, error) {
	var freed int64
	type head struct {
		ep string
		id uint32
	}
	var all []head
	w.s.mu.Lock()
	for ep, st := range w.s.eps {
		all = append(all, head{ep, st.id})
	}
	w.s.mu.Unlock()
	for ep, id := range w.newEps {
		all = append(all, head{ep, id})
	}
	for p := NumPriorities - 1; p >= 0 && freed < want; p-- {
		heads := append([]head(nil), all...)
		for freed < want && len(heads) > 0 {
			best, bestSeq := -1, uint64(0)
			for i := 0; i < len(heads); i++ {
				seq, ok := w.first(heads[i].ep, heads[i].id, uint32(p))
				if !ok {
					heads = append(heads[:i], heads[i+1:]...)
					i--
					continue
				}
				if best < 0 || seq < bestSeq {
					best, bestSeq = i, seq
				}
			}
			if best < 0 {
				break
			}
			h := heads[best]
			w.ids[h.ep] = h.id
			_, n, err := w.unqueue(h.ep, h.id, uint32(p), bestSeq)
			if err != nil {
				return freed, err
			}
			w.sizeLimit[h.ep]++
			freed += n
		}
	}
	return freed, nil
}

// first returns the oldest unacknowledged seq in the queue of endpoint ep
// (id) and priority p.
func (w *wtx) first(ep string, id, p uint32) (uint64, bool) {
	return firstSeq(w.queues.Cursor(), id, p, w.ackState(ep).acked[p])
}

// firstSeq returns the oldest seq after acked in the queue of endpoint id
// and priority p.
func firstSeq(c *bolt.Cursor, id, p uint32, acked uint64) (uint64, bool) {
	prefix := queuePrefix(id, p)
	k, _ := c.Seek(queueKey(id, p, acked+1))
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return 0, false
	}
	_, _, seq, ok := parseQueueKey(k)
	return seq, ok
}
