package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	// NumPriorities is the number of queues per endpoint: route
	// priorities 0–9 and LowestPriority.
	NumPriorities = 11
	// LowestPriority is the queue of messages whose route gives no
	// priority (edgeHub uses 2,000,000,000 for those). Any Target.Priority
	// above 9 is stored, and reported, as LowestPriority.
	LowestPriority uint32 = 10

	maxEndpointLen = 1024
	sweepChunk     = 1024
	sweepPassMax   = 64 << 10
)

// Target is one endpoint a message is routed to.
type Target struct {
	Endpoint string
	// Priority 0 is delivered first; 0–9 are route priorities, anything
	// larger means LowestPriority.
	Priority uint32
	// TTL is how long the message may wait for this endpoint: 0 means
	// Options.DefaultTTL, negative means forever.
	TTL time.Duration
}

// Meta is what the store keeps about a message besides its payload.
// Append reads Properties and Enqueued; Read fills in the rest.
type Meta struct {
	// Properties is opaque caller data stored with the payload (the hub
	// keeps the message's system and application properties there).
	Properties []byte
	// Enqueued is the enqueue time; zero means Options.Now at Append.
	Enqueued time.Time
	// Trusted reports whether Enqueued was read from a trusted clock.
	Trusted bool
	// TTL is the message's time to live for the endpoint it was read
	// from; negative means forever.
	TTL time.Duration
	// Size is the size of the stored record in bytes.
	Size int
}

// Item is a message read from an endpoint's queue.
type Item struct {
	Seq      uint64
	Payload  []byte
	Meta     Meta
	Priority uint32
}

func normPriority(p uint32) uint32 {
	if p > LowestPriority {
		return LowestPriority
	}
	return p
}

func checkEndpoint(op, name string) error {
	if name == "" || len(name) > maxEndpointLen {
		return fmt.Errorf("%w: %s: endpoint name must be 1 to %d bytes, got %d", ErrInvalid, op, maxEndpointLen, len(name))
	}
	return nil
}

// Append stores payload once, with a reference in the queue of each
// target, and returns the message's sequence number. It returns only once
// the message is on disk: in a journal frame, or in a bbolt transaction,
// committed and synced (see the package documentation); concurrent
// appends share the frame or the transaction, and its fsync (group
// commit). Read returns it from then on.
//
// ctx bounds only the wait for room in the writer's queue (MaxPending):
// once the writer has the message, Append waits for the commit, so a nil
// error always means "on disk" and an error always means "not stored".
func (s *Store) Append(ctx context.Context, targets []Target, payload []byte, meta Meta) (uint64, error) {
	a, err := s.prepareAppend(targets, payload, meta)
	if err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.closeMu.RUnlock()
	if err := s.submit(ctx, &op{name: "append", app: a}); err != nil {
		return 0, err
	}
	return a.seq, nil
}

// Entry is one message of AppendBatch.
type Entry struct {
	Targets []Target
	Payload []byte
	Meta    Meta
}

// AppendBatch appends entries as Append would one after the other, but
// hands them to the writer together: they are committed in the same
// transaction, with sequence numbers increasing in the order given (so
// one producer's messages keep their order in every queue). It returns
// when each entry has committed or failed; errs[i] is nil when entry i
// is on disk, with seqs[i] its sequence number. An entry that fails (a
// full store refuses it) does not stop the others: a caller that must
// not skip one stops at the first error and sends the rest again (they
// are then stored twice, which at-least-once delivery allows).
//
// ctx bounds only the wait for room in the writer's queue.
func (s *Store) AppendBatch(ctx context.Context, entries []Entry) (seqs []uint64, errs []error) {
	return s.StartAppendBatch(ctx, entries).Wait()
}

// PendingBatch is a batch of appends handed to the writer and not yet
// waited for (StartAppendBatch).
type PendingBatch struct {
	ops  []*op // nil for an entry refused before it reached the writer
	seqs []uint64
	errs []error
}

// StartAppendBatch is AppendBatch without the wait: it returns once the
// entries are in the writer's queue, and Wait returns what AppendBatch
// would. A producer that starts its next batch before the last one
// committed keeps its order across batches too: batches are taken from
// the queue, and committed, in the order they were started, each one
// whole in one transaction or spread over consecutive ones. So one
// producer can have its next messages in the writer's queue while a
// commit runs, instead of a commit apart.
//
// Entries that reached the queue are committed even if the store is
// closed before Wait (Close commits what is queued); Wait may be called
// after Close.
func (s *Store) StartAppendBatch(ctx context.Context, entries []Entry) *PendingBatch {
	p := &PendingBatch{
		ops:  make([]*op, len(entries)),
		seqs: make([]uint64, len(entries)),
		errs: make([]error, len(entries)),
	}
	var carrier *op
	for i, e := range entries {
		a, err := s.prepareAppend(e.Targets, e.Payload, e.Meta)
		if err != nil {
			p.errs[i] = err
			continue
		}
		o := &op{name: "append", app: a}
		p.ops[i] = o
		if carrier == nil {
			carrier = o
		} else {
			carrier.rest = append(carrier.rest, o)
		}
	}
	if carrier == nil {
		return p
	}
	for _, o := range carrier.rest {
		o.done = make(chan error, 1) // send makes the carrier's
	}
	fail := func(err error) *PendingBatch {
		for i, o := range p.ops {
			if o != nil {
				p.errs[i] = err
			}
		}
		clear(p.ops)
		return p
	}
	if err := s.enter(); err != nil {
		return fail(err)
	}
	// Released once the ops are queued: Close, which waits for it,
	// commits what is queued before it returns.
	defer s.closeMu.RUnlock()
	if err := s.send(ctx, carrier); err != nil {
		return fail(err)
	}
	return p
}

// Wait waits until each entry of the batch has committed or failed and
// returns their sequence numbers and errors as AppendBatch does. It may
// be called more than once.
func (p *PendingBatch) Wait() (seqs []uint64, errs []error) {
	for i, o := range p.ops {
		if o == nil {
			continue
		}
		if p.errs[i] = <-o.done; p.errs[i] == nil {
			p.seqs[i] = o.app.seq
		}
		p.ops[i] = nil
	}
	return p.seqs, p.errs
}

// prepareAppend checks an append's targets and encodes its record.
func (s *Store) prepareAppend(targets []Target, payload []byte, meta Meta) (*appendReq, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: append: no targets", ErrInvalid)
	}
	rec := messageRecord{V: recordVersion, Props: meta.Properties, Payload: payload}
	enq := meta.Enqueued
	if enq.IsZero() {
		enq = s.opts.Now()
	}
	rec.Enqueued = enq.UnixNano()
	rec.Trusted = s.opts.Trusted(enq)
	var seen map[string]bool
	if len(targets) > 1 {
		seen = make(map[string]bool, len(targets))
	}
	rec.Targets = make([]targetRecord, 0, len(targets))
	for _, t := range targets {
		if err := checkEndpoint("append", t.Endpoint); err != nil {
			return nil, err
		}
		if seen[t.Endpoint] {
			return nil, fmt.Errorf("%w: append: endpoint %q listed twice", ErrInvalid, t.Endpoint)
		}
		if seen != nil {
			seen[t.Endpoint] = true
		}
		ttl := t.TTL
		if ttl == 0 {
			ttl = s.opts.DefaultTTL
		}
		if ttl < 0 {
			ttl = -1
		}
		rec.Targets = append(rec.Targets, targetRecord{Endpoint: t.Endpoint, Priority: normPriority(t.Priority), TTL: int64(ttl)})
	}
	trs := rec.Targets
	if len(trs) == 1 {
		// The record is the value of the queue key, which names the
		// endpoint and the priority: only the TTL is left to say.
		rec.Targets = []targetRecord{{TTL: trs[0].TTL}}
	}
	data := encodeMessage(&rec)
	a := &appendReq{targets: trs, rec: data, trusted: rec.Trusted}
	a.est = estimate(len(data), len(targets))
	return a, nil
}

// estimate is the bytes a message of recLen bytes with n references adds
// to the file: keys, values and bbolt's element headers, plus a quarter
// for the unused tail of pages and the branch pages above them.
func estimate(recLen, n int) int64 {
	b := int64(recLen + n*(queueKeyLen+elementSize))
	if n > 1 {
		b += 8 + elementSize + 16 + elementSize // messages and refs
	}
	return b + b/4
}

// Read returns up to max messages queued for endpoint that it has not
// returned before: priority 0 first, oldest first within a priority.
// Expired messages are skipped (and later removed by the sweep).
//
// Read keeps a read position per endpoint and priority in memory: a
// consumer may Read again before it acknowledges and gets the next
// messages, not the same ones. Messages read and never acknowledged are
// returned again after Rewind or after the store is reopened — never lost.
func (s *Store) Read(endpoint string, max int) ([]Item, error) {
	if err := checkEndpoint("read", endpoint); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.closeMu.RUnlock()
	if err := s.noteClock(); err != nil {
		return nil, err
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	var items []Item
	for {
		more, err := s.readRound(endpoint, max, &items)
		if err != nil {
			if len(items) > 0 {
				// Earlier rounds moved the positions past these; the
				// failing round did not, and the next Read meets it again.
				return items, nil
			}
			return nil, err
		}
		if !more || len(items) >= max {
			return items, nil
		}
	}
}

// readRound adds to items what Read returns of endpoint, up to max in
// all, and moves the read positions past it. more says that messages in
// memory may be left that pendingFor did not return (it returns at most
// what Read still needs, and expired ones were skipped): another round
// returns them before anything that follows them. readMu is held.
func (s *Store) readRound(endpoint string, max int, items *[]Item) (more bool, err error) {
	// What is answered and not yet in bbolt is read from memory: what
	// comes after the read positions (which only Read and Rewind move,
	// under readMu). Taken before the transaction below begins, so that
	// nothing the applier commits in between is missed; what both have
	// is read once.
	want := max - len(*items)
	after := s.readFrom(endpoint)
	fresh, acked, wait := s.pendingFor(endpoint, &after, want)
	if wait {
		// An append not journaled, not yet committed: what follows it
		// may be read only once it is.
		s.waitCommitted()
		fresh, acked, _ = s.pendingFor(endpoint, &after, want)
	}
	s.mu.Lock()
	st := s.eps[endpoint]
	if st == nil {
		if !slices.ContainsFunc(fresh[:], func(f []freshEntry) bool { return len(f) > 0 }) {
			s.mu.Unlock()
			return false, nil
		}
		// Messages for a new endpoint, not yet in bbolt: its state (the
		// read positions) comes before its id, which bbolt gives when it
		// commits the first of them (apply).
		st = &endpointState{}
		s.eps[endpoint] = st
	}
	// The id is taken after pendingFor: a message bbolt committed since
	// is then found under it. pos is at least after: states are never
	// dropped, and acknowledgements only move on.
	id, pos := st.id, st.from()
	s.mu.Unlock()
	ex := s.expiry()
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQueues).Cursor()
		msgs := tx.Bucket(bucketMessages)
		// A message whose acknowledgement was answered and is not
		// applied yet is passed over like one applied.
		gone := func(uint64) bool { return false }
		if len(acked) > 32 {
			set := make(map[uint64]bool, len(acked))
			for _, seq := range acked {
				set[seq] = true
			}
			gone = func(seq uint64) bool { return set[seq] }
		} else if len(acked) > 0 {
			gone = func(seq uint64) bool { return slices.Contains(acked, seq) }
		}
		// bbolt's entries of a priority and those not in bbolt yet, merged
		// in sequence order (a message committed since pendingFor is in
		// both: it is read once).
		stored := func(seq uint64, v []byte, p int) error {
			if gone(seq) {
				return nil
			}
			if len(v) == 0 {
				if v = msgs.Get(u64(seq)); v == nil {
					return nil // released by a concurrent drop; nothing to deliver
				}
			}
			rec, err := decodeMessage(v)
			if err != nil {
				return fmt.Errorf("store: read %q seq %d: %w", endpoint, seq, err)
			}
			ttl, _ := ttlFor(rec.Targets, endpoint)
			if !ex.expired(seq, rec.Enqueued, rec.Trusted, ttl) {
				*items = append(*items, newItem(seq, uint32(p), rec, ttl, len(v)))
			}
			return nil
		}
		hot := func(f freshEntry, p int) error {
			if gone(f.seq) {
				return nil
			}
			rec, err := decodeMessage(f.rec)
			if err != nil {
				return fmt.Errorf("store: read %q seq %d: %w", endpoint, f.seq, err)
			}
			ttl := time.Duration(f.ttl)
			if !ex.expired(f.seq, rec.Enqueued, rec.Trusted, ttl) {
				*items = append(*items, newItem(f.seq, uint32(p), rec, ttl, len(f.rec)))
			}
			return nil
		}
		for p := 0; p < NumPriorities && len(*items) < max; p++ {
			prefix := queuePrefix(id, uint32(p))
			fr := fresh[p]
			// When pendingFor may have left some out, what comes after
			// them, in bbolt or in a lower priority, waits for the next
			// round.
			cut := len(fr) >= want
			for len(fr) > 0 && fr[0].seq <= pos[p] {
				fr = fr[1:]
			}
			k, v := c.Seek(queueKey(id, uint32(p), pos[p]+1))
			for len(*items) < max {
				inBolt := k != nil && bytes.HasPrefix(k, prefix)
				if len(fr) == 0 {
					if cut {
						more = true
						return nil
					}
					if !inBolt {
						break
					}
				}
				var seq uint64
				if inBolt {
					_, _, seq, _ = parseQueueKey(k)
				}
				var err error
				if inBolt && (len(fr) == 0 || seq <= fr[0].seq) {
					if len(fr) > 0 && seq == fr[0].seq {
						fr = fr[1:]
					}
					pos[p] = seq
					err = stored(seq, v, p)
					k, v = c.Next()
				} else {
					pos[p] = fr[0].seq
					err = hot(fr[0], p)
					fr = fr[1:]
				}
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	st.readPos = pos
	s.mu.Unlock()
	return more, nil
}

// readFrom returns where Read of endpoint continues (see from); zero
// for an endpoint not known yet.
func (s *Store) readFrom(endpoint string) [NumPriorities]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.eps[endpoint]; st != nil {
		return st.from()
	}
	return [NumPriorities]uint64{}
}

// from returns where Read continues, by priority: after what it returned
// and after what was acknowledged (after Rewind or a restart the
// acknowledged prefix may still be in the file, waiting to be purged).
// s.mu is held.
func (st *endpointState) from() [NumPriorities]uint64 {
	pos := st.readPos
	for p, a := range st.acked {
		pos[p] = max(pos[p], a)
	}
	return pos
}

func newItem(seq uint64, prio uint32, rec *messageRecord, ttl time.Duration, size int) Item {
	return Item{
		Seq:      seq,
		Payload:  rec.Payload,
		Priority: prio,
		Meta: Meta{
			Properties: rec.Props,
			Enqueued:   time.Unix(0, rec.Enqueued),
			Trusted:    rec.Trusted,
			TTL:        ttl,
			Size:       size,
		},
	}
}

// Rewind makes every unacknowledged message of endpoint eligible for Read
// again, as after a restart. A consumer calls it when it lost what it had
// in flight (for example on reconnect).
func (s *Store) Rewind(endpoint string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	// Read positions start again from what is acknowledged: every
	// acknowledgement answered must be applied first.
	s.waitAcks()
	s.readMu.Lock()
	defer s.readMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.eps[endpoint]; st != nil {
		st.readPos = [NumPriorities]uint64{}
	}
	return nil
}

// Ack removes the references of endpoint to seqs, all together, and with
// them each message no other endpoint still needs; it returns once that
// is on disk (in a journal frame or a bbolt transaction). Acknowledged
// messages are never returned again. Unknown or already acknowledged
// sequence numbers are ignored. The keys of the oldest messages of a
// queue are deleted later, in bulk (see the package documentation).
func (s *Store) Ack(endpoint string, seqs ...uint64) error {
	if err := checkEndpoint("ack", endpoint); err != nil {
		return err
	}
	if len(seqs) == 0 {
		return nil
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.submit(context.Background(), &op{name: "ack", ack: &ackReq{endpoint: endpoint, seqs: slices.Clone(seqs)}})
}

// expiry is a snapshot of what deciding expiry needs.
type expiry struct {
	now        time.Time
	trustedNow bool
	trust      []trustMark
}

func (s *Store) expiry() expiry {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return expiry{now: now, trustedNow: s.opts.Trusted(now), trust: append([]trustMark(nil), s.trust...)}
}

// base returns the time a message's age counts from: its enqueue time if
// the clock was trusted then, else the first trusted moment after it.
func (e *expiry) base(seq uint64, enqueued int64, trusted bool) (time.Time, bool) {
	if trusted {
		return time.Unix(0, enqueued), true
	}
	i := sort.Search(len(e.trust), func(i int) bool { return e.trust[i].seq >= seq })
	if i == len(e.trust) {
		return time.Time{}, false
	}
	return e.trust[i].at, true
}

// expired applies the TTL rule: nothing expires on an untrusted clock,
// and a message enqueued on an untrusted clock ages from the first moment
// the store saw a trusted one.
func (e *expiry) expired(seq uint64, enqueued int64, trusted bool, ttl time.Duration) bool {
	if ttl < 0 || !e.trustedNow {
		return false
	}
	b, ok := e.base(seq, enqueued, trusted)
	return ok && e.now.Sub(b) >= ttl
}

// noteClock records a trust mark when messages were enqueued on an
// untrusted clock and the clock is now trusted. The caller holds closeMu.
func (s *Store) noteClock() error {
	s.mu.Lock()
	need := s.untrusted > 0 && (len(s.trust) == 0 || s.trust[len(s.trust)-1].seq < s.untrusted)
	s.mu.Unlock()
	if !need || !s.opts.Trusted(s.opts.Now()) {
		return nil
	}
	// The writer notes trust at the start of every batch; an empty op is
	// enough to get a batch.
	return s.submit(context.Background(), &op{name: "note clock", fn: func(*wtx) error { return nil }})
}

type sweepRef struct {
	ep   string
	prio uint32
	seq  uint64
}

// Sweep removes every expired message reference, counting each for its
// endpoint with reason "expired", and returns how many it removed. The
// background sweeper calls it every Options.SweepInterval.
func (s *Store) Sweep() (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.closeMu.RUnlock()
	return s.sweep()
}

func (s *Store) sweep() (int, error) {
	s.checkpointNow() // it sweeps what bbolt has
	if err := s.noteClock(); err != nil {
		return 0, err
	}
	removed := 0
	for {
		n, more, err := s.sweepPass()
		removed += n
		if err != nil || !more {
			return removed, err
		}
	}
}

// errSweepFull ends a sweep pass that collected sweepPassMax references.
var errSweepFull = errors.New("sweep pass full")

// sweepPass removes up to sweepPassMax expired references, so that a
// large expired backlog does not have to fit in memory at once; more
// reports that there may be others.
func (s *Store) sweepPass() (removed int, more bool, err error) {
	ex := s.expiry()
	if !ex.trustedNow {
		return 0, false, nil
	}
	s.mu.Lock()
	names := make(map[uint32]string, len(s.eps))
	acked := make(map[uint32][NumPriorities]uint64, len(s.eps))
	for n, st := range s.eps {
		names[st.id] = n
		acked[st.id] = st.acked
	}
	s.mu.Unlock()
	var found []sweepRef
	firstSeq := uint64(math.MaxUint64)
	err = s.db.View(func(tx *bolt.Tx) error {
		msgs := tx.Bucket(bucketMessages)
		c := tx.Bucket(bucketQueues).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			id, p, seq, _ := parseQueueKey(k)
			name, ok := names[id]
			if !ok {
				continue // created after the snapshot of names
			}
			if p < NumPriorities && seq <= acked[id][p] {
				continue // acknowledged, waiting to be purged
			}
			firstSeq = min(firstSeq, seq)
			if len(v) == 0 {
				if v = msgs.Get(u64(seq)); v == nil {
					continue
				}
			}
			h, err := decodeHeader(v)
			if err != nil {
				return fmt.Errorf("store: sweep %q seq %d: %w", name, seq, err)
			}
			ttl, _ := ttlFor(h.Targets, name)
			if ex.expired(seq, h.Enqueued, h.Trusted, ttl) {
				found = append(found, sweepRef{name, p, seq})
				if len(found) == sweepPassMax {
					return errSweepFull
				}
			}
		}
		return nil
	})
	if errors.Is(err, errSweepFull) {
		more, err = true, nil
	}
	if err != nil {
		return 0, false, err
	}
	for len(found) > 0 {
		chunk := found[:min(sweepChunk, len(found))]
		found = found[len(chunk):]
		n := 0
		err := s.submit(context.Background(), &op{name: "sweep", fn: func(w *wtx) error {
			n = 0
			for _, r := range chunk {
				id, err := w.endpointID(r.ep, false)
				if id == 0 || err != nil {
					return err
				}
				ok, _, err := w.unqueue(r.ep, id, r.prio, r.seq)
				if err != nil {
					return err
				}
				if ok {
					w.expired[r.ep]++
					n++
				}
			}
			return nil
		}})
		if err != nil {
			return removed, false, err
		}
		removed += n
	}
	// A pass that stopped early has not seen the oldest message of every
	// queue; only a complete pass may prune. With no messages, firstSeq is
	// MaxUint64: no mark is needed but the last.
	if more {
		return removed, more, nil
	}
	return removed, more, s.pruneTrust(firstSeq)
}

// pruneTrust forgets trust marks no stored message refers to: a mark
// covers the messages after the previous mark up to its own seq.
func (s *Store) pruneTrust(firstSeq uint64) error {
	s.mu.Lock()
	var old []uint64
	for i := 0; i+1 < len(s.trust) && s.trust[i].seq < firstSeq; i++ {
		old = append(old, s.trust[i].seq)
	}
	s.mu.Unlock()
	if len(old) == 0 {
		return nil
	}
	err := s.submit(context.Background(), &op{name: "sweep", fn: func(w *wtx) error {
		tb := w.tx.Bucket(bucketTrust)
		for _, seq := range old {
			if err := tb.Delete(u64(seq)); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.trust = s.trust[len(old):]
	s.mu.Unlock()
	return nil
}

// sweeper runs Sweep every interval until Close.
func (s *Store) sweeper(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := s.enter(); err != nil {
				return
			}
			_, err := s.sweep()
			s.closeMu.RUnlock()
			s.mu.Lock()
			s.sweepErr = err
			s.mu.Unlock()
		case <-s.quit:
			return
		}
	}
}
