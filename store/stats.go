package store

import (
	"fmt"
	"os"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DropReason says why a message was dropped without being delivered.
type DropReason string

// Drop reasons, as used in edgeHub's edgehub_messages_dropped_total.
const (
	ReasonExpired   DropReason = "expired"
	ReasonSizeLimit DropReason = "size_limit"
)

// EndpointStats describes one endpoint's queue.
type EndpointStats struct {
	Endpoint string
	// Depth[p] is the number of unacknowledged messages of priority p
	// (expired ones count until the sweep removes them).
	Depth [NumPriorities]int64
	// Queued is the sum of Depth.
	Queued int64
	// OldestAge is the age of the oldest queued message; 0 when the queue
	// is empty or that message was enqueued on an untrusted clock that
	// has not been trusted since.
	OldestAge time.Duration
	// Checkpoint is the highest sequence number acknowledged.
	Checkpoint uint64
	// Dropped counts messages dropped for this endpoint, by reason, over
	// the life of the file.
	Dropped map[DropReason]uint64
}

// Stats describes the whole store.
type Stats struct {
	Path string
	// FileBytes is the size of the file; UsedBytes the part of it in use
	// (pages holding data); LimitBytes is Options.MaxSizeBytes.
	FileBytes, UsedBytes, LimitBytes int64
	// Messages is the number of stored message bodies (each once,
	// however many endpoints it is queued for).
	Messages int64
	// Commits counts bbolt write transactions since Open, and
	// CommitTime is the wall time they took, from the start of the
	// transaction to the end of its fsyncs: without the journal,
	// CommitTime/Commits is what a producer waits per commit once its
	// message is in one.
	Commits    uint64
	CommitTime time.Duration
	// JournalCommits counts the batches of appends and acknowledgements
	// made durable by the journal since Open, and JournalTime is the wall
	// time of their writes and fdatasyncs: what a producer waits per
	// commit when the journal takes its message. JournalError says why
	// the store runs without its journal, if it does.
	JournalCommits uint64
	JournalTime    time.Duration
	JournalError   error
	// ApplyError is the last error of a journaled write that bbolt
	// then refused to commit.
	ApplyError error
	// Endpoints are sorted by name.
	Endpoints []EndpointStats
	// SweepError is the error of the last background sweep, if it failed.
	SweepError error
}

// Stats returns the state of every endpoint and of the file.
func (s *Store) Stats() (Stats, error) {
	if err := s.enter(); err != nil {
		return Stats{}, err
	}
	defer s.closeMu.RUnlock()
	s.checkpointNow()
	st := Stats{
		Path: s.path, LimitBytes: s.limit,
		Commits: s.commits.Load(), CommitTime: time.Duration(s.commitNanos.Load()),
		JournalCommits: s.journalCommits.Load(), JournalTime: time.Duration(s.journalNanos.Load()),
		JournalError: s.journalErr,
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return st, fmt.Errorf("store: stat %s: %w", s.path, err)
	}
	st.FileBytes = fi.Size()
	s.mu.Lock()
	st.Messages = s.messages
	st.SweepError = s.sweepErr
	st.ApplyError = s.applyErr
	names := make([]string, 0, len(s.eps))
	for n := range s.eps {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	ex := s.expiry()
	err = s.db.View(func(tx *bolt.Tx) error {
		st.UsedBytes = tx.Size() - int64(s.db.Stats().FreeAlloc)
		for _, n := range names {
			es, err := s.endpointStats(tx, n, &ex)
			if err != nil {
				return err
			}
			st.Endpoints = append(st.Endpoints, es)
		}
		return nil
	})
	return st, err
}

// EndpointStats returns the state of one endpoint's queue; an endpoint
// the store has never seen has empty stats.
func (s *Store) EndpointStats(endpoint string) (EndpointStats, error) {
	if err := s.enter(); err != nil {
		return EndpointStats{}, err
	}
	defer s.closeMu.RUnlock()
	s.checkpointNow()
	ex := s.expiry()
	var es EndpointStats
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		es, err = s.endpointStats(tx, endpoint, &ex)
		return err
	})
	return es, err
}

func (s *Store) endpointStats(tx *bolt.Tx, name string, ex *expiry) (EndpointStats, error) {
	es := EndpointStats{Endpoint: name, Dropped: map[DropReason]uint64{ReasonExpired: 0, ReasonSizeLimit: 0}}
	var id uint32
	var acked [NumPriorities]uint64
	s.mu.Lock()
	if st := s.eps[name]; st != nil {
		id, acked = st.id, st.acked
		es.Depth = st.depth
		es.Checkpoint = st.checkpoint
		es.Dropped[ReasonExpired] = st.expired
		es.Dropped[ReasonSizeLimit] = st.sizeLimit
	}
	s.mu.Unlock()
	for _, d := range es.Depth {
		es.Queued += d
	}
	if id == 0 {
		return es, nil
	}
	c := tx.Bucket(bucketQueues).Cursor()
	var oldest uint64
	var p uint32
	for q := uint32(0); q < NumPriorities; q++ {
		if seq, ok := firstSeq(c, id, q, acked[q]); ok && (oldest == 0 || seq < oldest) {
			oldest, p = seq, q
		}
	}
	if oldest == 0 {
		return es, nil
	}
	v := tx.Bucket(bucketQueues).Get(queueKey(id, p, oldest))
	if len(v) == 0 {
		v = tx.Bucket(bucketMessages).Get(u64(oldest))
	}
	if v == nil {
		return es, nil
	}
	h, err := decodeHeader(v)
	if err != nil {
		return es, fmt.Errorf("store: stats %q seq %d: %w", name, oldest, err)
	}
	if !ex.trustedNow {
		return es, nil
	}
	if b, ok := ex.base(oldest, h.Enqueued, h.Trusted); ok && ex.now.After(b) {
		es.OldestAge = ex.now.Sub(b)
	}
	return es, nil
}
