package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket names of the on-disk layout (see doc.go).
var (
	bucketMeta      = []byte("meta")
	bucketTrust     = []byte("trust") // seq -> first trusted time after it
	bucketEndpoints = []byte("endpoints")
	bucketQueues    = []byte("queues")
	bucketMessages  = []byte("messages")
	bucketRefs      = []byte("refs")
	bucketTwins     = []byte("twins")
	bucketPatches   = []byte("patches")

	keyFormat    = []byte("format")
	keyUntrusted = []byte("untrusted") // highest seq enqueued on an untrusted clock
	keyClean     = []byte("clean")     // cleanRecord, present only while closed cleanly
	keyJournaled = []byte("journaled") // highest seq journaled that the last checkpoint covers
)

// lockTimeout bounds the wait for bbolt's file lock, so that a second
// process (a CLI next to a running hub) gets ErrInUse instead of hanging.
const lockTimeout = 2 * time.Second

// regatherWait bounds how long the writer waits to gather a batch as large
// as the previous one (see gather).
const regatherWait = 1 * time.Millisecond

// applyDepth is how many batches the writer may hand over ahead of the
// applier.
const applyDepth = 64

// regatherSkip is how many batches the writer gathers without that wait
// after a wait that did not fill the batch.
const regatherSkip = 64

// Store is a durable message queue store in one bbolt file. Its methods
// are safe for concurrent use. A Store owns three goroutines, the writer
// (group commit, the journal), the applier (bbolt commits) and the
// sweeper; Close stops them.
type Store struct {
	path    string
	db      *bolt.DB
	opts    Options
	limit   int64
	reserve int64 // part of limit kept free for copy-on-write (see cowReserve)

	ops          chan *op
	jnl          *journal // the writer's; nil without a journal
	nextSeq      uint64   // the writer's: the last sequence number given
	applyCh      chan applyItem
	fill         *os.File // the applier's: see fillFile
	filled       int64    // the file is written up to here
	zeros        []byte
	lastBatch    int // size of the previous batch; the writer's own
	skipRegather int // batches left to gather without waiting; the writer's own
	quit         chan struct{}
	wg           sync.WaitGroup

	closeMu sync.RWMutex // held shared by every call, exclusively by Close
	closed  bool

	readMu sync.Mutex // serialises Read, which moves read positions

	mu        sync.Mutex // guards the fields below
	eps       map[string]*endpointState
	messages  int64
	untrusted uint64 // highest seq enqueued on an untrusted clock
	trust     []trustMark
	sweepErr  error

	applyErr   error // the last journaled append bbolt refused (noteApplyError)
	journalErr error // why the store runs without its journal

	// The journal and the applier (see hand and applier).
	lastJournaled  uint64            // the writer's: highest sequence number journaled
	acksJournaled  uint64            // the writer's: acknowledgements journaled
	acksAnswered   atomic.Uint64     // acksJournaled, for waitAcks
	hotCount       atomic.Int64      // journaled appends and acknowledgements not yet settled
	ckptThrough    atomic.Uint64     // what the last checkpoint covers
	ckptWant       chan struct{}     // the writer found the journal full
	hotThrough     uint64            // the applier's: highest journaled sequence number it has
	lazyAcks       []*op             // the applier's: acknowledgements waiting for a commit
	hotCkpt        map[string]uint64 // the applier's: endpoint checkpoints moved in memory
	ackSeen        uint64            // the applier's: highest acknowledgement number it applied
	pendingEst     atomic.Int64      // estimated bytes of appends not in bbolt
	usedBytes      atomic.Int64      // pages in use after the last commit
	pendMu         sync.Mutex        // guards pend, hot and the ops' settled and ackedT
	pend           []applyItem       // batches handed to the applier that Read may need, in order
	pendIx         pendIndex         // what pendingFor needs of pend
	hot            map[uint64]*op
	applyMu        sync.Mutex // guards the two fields below; applyCond's lock
	applyCond      *sync.Cond
	acksApplied    atomic.Uint64 // written under applyMu; Read loads it holding pendMu (taken after applyMu, never before)
	applyStopped   bool
	journalCommits atomic.Uint64
	journalNanos   atomic.Int64

	commits     atomic.Uint64
	commitNanos atomic.Int64 // wall time of the commits counted
}

// trustMark records that the store first saw a trusted clock at time at,
// after the messages up to seq had been enqueued on an untrusted one.
type trustMark struct {
	seq uint64
	at  time.Time
}

type endpointState struct {
	id         uint32 // key prefix in the queues bucket
	depth      [NumPriorities]int64
	readPos    [NumPriorities]uint64 // highest seq handed out by Read
	acked      [NumPriorities]uint64 // acknowledged prefix of each priority
	garbage    int64                 // bytes of acknowledged keys not yet deleted
	checkpoint uint64
	expired    uint64
	sizeLimit  uint64
}

// Open opens the store file at path, creating it if needed.
//
// A file that is not a readable bbolt file, or whose store metadata is
// damaged, is moved aside and replaced by an empty store: Open then
// returns the new Store and a *RecoveredError. A file written by a newer
// tinyedge is refused with a *VersionError and left alone.
func Open(path string, opts *Options) (*Store, error) {
	o, err := opts.resolve(hostArch)
	if err != nil {
		return nil, err
	}
	var recovered *RecoveredError
	format, err := precheck(path)
	if err == nil && format == 1 {
		// A format 1 file that cannot be converted because of a damaged
		// record is as unreadable as a damaged page.
		if err = convertV1(path); errors.Is(err, ErrCorrupt) {
			err = &corruptError{err}
		}
	}
	if err != nil {
		var ce *corruptError
		if !errors.As(err, &ce) {
			return nil, err
		}
		moved, err := moveAside(path, o.Now())
		if err != nil {
			return nil, fmt.Errorf("store: %s is unreadable (%v) and could not be moved aside: %w", path, ce.err, err)
		}
		recovered = &RecoveredError{Path: path, MovedTo: moved, Cause: ce.err}
	}
	db, err := openBolt(path, o.NoSync, false)
	if err != nil {
		return nil, err
	}
	db.AllocSize = growthStep(o.MaxSizeBytes)
	s := &Store{
		path:    path,
		db:      db,
		opts:    o,
		limit:   o.MaxSizeBytes,
		reserve: cowReserve(o.MaxSizeBytes, db.Info().PageSize),
		ops:     make(chan *op, o.MaxPending),
		quit:    make(chan struct{}),
		eps:     make(map[string]*endpointState),
	}
	var size int64
	if err := s.db.Update(func(tx *bolt.Tx) error {
		size = tx.Size()
		return s.init(tx)
	}); err != nil {
		db.Close()
		return nil, err
	}
	dropCache(db, path, size)
	s.fill = openFill(path, o.NoSync)
	s.applyCond = sync.NewCond(&s.applyMu)
	s.applyCh = make(chan applyItem, applyDepth)
	s.ckptWant = make(chan struct{}, 1)
	s.hot = make(map[uint64]*op)
	s.pendIx.fresh = make(map[string]*[NumPriorities]fifo[pendRef])
	s.hotCkpt = make(map[string]uint64)
	var through uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		s.nextSeq = tx.Bucket(bucketMessages).Sequence()
		through = getU64(tx.Bucket(bucketMeta).Get(keyJournaled))
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	s.nextSeq = max(s.nextSeq, through)
	s.lastJournaled, s.hotThrough = through, through
	s.ckptThrough.Store(through)
	var replay applyItem
	if o.JournalBytes > 0 {
		if recovered != nil {
			// Its frames belong to the file moved aside.
			if err := os.Rename(path+journalSuffix, recovered.MovedTo+journalSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
				db.Close()
				return nil, fmt.Errorf("store: move the journal aside: %w", err)
			}
		}
		j, entries, acks, err := openJournal(path, o.JournalBytes, o.NoSync)
		// Without a journal (it cannot be created: a full disk) the store
		// commits every batch to bbolt, as it would with JournalBytes < 0;
		// Stats says why.
		s.jnl, s.journalErr = j, err
		// What the last checkpoint did not cover is hot again; the
		// acknowledgements are applied again (they are idempotent).
		for _, e := range entries {
			if e.seq > through {
				replay.batch = append(replay.batch, &op{name: "append", app: e.app, journaled: true})
				replay.est += e.app.est
				s.nextSeq = max(s.nextSeq, e.seq)
				if !e.app.trusted {
					s.untrusted = max(s.untrusted, e.seq)
				}
			}
		}
		for i := range acks {
			s.acksJournaled++
			replay.batch = append(replay.batch, &op{name: "ack", ack: &acks[i], journaled: true, ackNo: s.acksJournaled})
		}
		s.acksAnswered.Store(s.acksJournaled)
		s.lastJournaled = s.nextSeq
	}
	s.noteUsed()
	if len(replay.batch) > 0 {
		// Appends answered from the journal before a crash and not in
		// bbolt, and the acknowledgements, applied before anything is
		// read.
		s.hotCount.Add(int64(len(replay.batch)))
		s.pendingEst.Add(replay.est)
		s.pushPend(replay)
		s.applyItems([]applyItem{replay})
	}
	s.wg.Add(2)
	go s.writer()
	go s.applier()
	if o.SweepInterval > 0 {
		s.wg.Add(1)
		go s.sweeper(o.SweepInterval)
	}
	if recovered != nil {
		return s, recovered
	}
	return s, nil
}

// openBolt opens the bbolt file with the store's options.
//
// NoFreelistSync: bbolt does not write its freelist on every commit. On a
// store with churn the freelist grows to several pages and would be
// rewritten by every transaction, which is pure SD card wear. Close
// writes it once (see markClean), so a cleanly closed file opens without
// a walk; after a crash bbolt rebuilds it by walking the file. The map
// freelist keeps allocation fast when the freelist is large.
func openBolt(path string, noSync, readOnly bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        lockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		NoSync:         noSync,
		ReadOnly:       readOnly,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// corruptError marks a precheck failure that means the file is damaged,
// as opposed to one that means it is busy, unreadable or newer.
type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }

// precheck validates an existing file before it is opened for writing
// (see check.go) and returns its format version, 0 for a new or empty
// file.
func precheck(path string) (uint64, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: open %s: %w", path, err)
	}
	if st.Size() == 0 {
		return 0, nil // bbolt initialises an empty file
	}
	// A shared lock keeps a running writer from changing the file while
	// it is checked, and makes a busy file ErrInUse rather than "corrupt".
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return 0, fmt.Errorf("store: open %s: %w", path, ErrInUse)
		case errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist):
			return 0, fmt.Errorf("store: open %s: %w", path, err)
		}
		return 0, &corruptError{err}
	}
	defer db.Close()
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("store: open %s: %w", path, err)
	}
	defer f.Close()
	if err := checkBoltFile(f); err != nil {
		return 0, &corruptError{err}
	}
	var format uint64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		format, err = checkFormat(tx, path)
		return err
	})
	return format, err
}

// checkFormat checks the store's own format record and returns the
// file's format version, 0 for a file without buckets.
func checkFormat(tx *bolt.Tx, path string) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if empty {
			return 0, nil
		}
		return 0, fmt.Errorf("store: open %s: %w: it holds other buckets and no tinyedge meta bucket; give the store its own file", path, ErrNotStore)
	}
	v := meta.Get(keyFormat)
	if v == nil {
		return 0, &corruptError{errors.New("meta bucket without a format version")}
	}
	// The format record's "v" is the format version itself, checked
	// against formatVersion rather than recordVersion.
	var f formatRecord
	if err := decMode.Unmarshal(v, &f); err != nil || f.V == 0 {
		return 0, &corruptError{fmt.Errorf("format record: %w: %x", ErrCorrupt, v)}
	}
	if f.V > formatVersion {
		return 0, fmt.Errorf("store: open %s: %w", path, &VersionError{What: "file format", Got: f.V, Known: formatVersion})
	}
	return f.V, nil
}

// moveAside renames a damaged file to <path>.corrupt-<UTC timestamp>.
func moveAside(path string, now time.Time) (string, error) {
	base := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	dst := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = fmt.Sprintf("%s-%d", base, i)
	}
	if err := os.Rename(path, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// init creates the buckets of a new file, checks the format of an
// existing one and loads the in-memory state: endpoints, queue depths,
// drop counters and the clock-trust marks. It deletes the clean record,
// so that a crash from now on is seen by the next Open.
func (s *Store) init(tx *bolt.Tx) error {
	format, err := checkFormat(tx, s.path)
	if err != nil {
		return err
	}
	if format != 0 && format != 2 && format != formatVersion {
		return fmt.Errorf("store: open %s: format %d was not converted to %d", s.path, format, formatVersion)
	}
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	// Format 3 adds acknowledged prefixes to the endpoint records; a
	// format 2 file has none, which in format 3 means the same thing, so
	// converting it is writing the new version. The version must change
	// all the same: a format 2 binary would deliver the acknowledged keys
	// a format 3 file still holds.
	if meta.Get(keyFormat) == nil || format == 2 {
		rec, err := encodeRecord(formatRecord{V: formatVersion})
		if err != nil {
			return err
		}
		if err := meta.Put(keyFormat, rec); err != nil {
			return err
		}
	}
	for _, name := range [][]byte{bucketTrust, bucketEndpoints, bucketQueues, bucketMessages, bucketRefs, bucketTwins, bucketPatches} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	s.untrusted = getU64(meta.Get(keyUntrusted))
	if err := tx.Bucket(bucketTrust).ForEach(func(k, v []byte) error {
		s.trust = append(s.trust, trustMark{seq: getU64(k), at: time.Unix(0, int64(getU64(v)))})
		return nil
	}); err != nil {
		return err
	}
	byID := map[uint32]*endpointState{}
	if err := tx.Bucket(bucketEndpoints).ForEach(func(name, v []byte) error {
		r, err := decodeEndpoint(v)
		if err != nil {
			return fmt.Errorf("store: open %s: endpoint %q: %w", s.path, name, err)
		}
		if r.ID == 0 || byID[r.ID] != nil {
			return fmt.Errorf("store: open %s: endpoint %q: %w: id %d missing or used twice", s.path, name, ErrCorrupt, r.ID)
		}
		st := &endpointState{id: r.ID, checkpoint: r.Checkpoint, expired: r.Expired, sizeLimit: r.SizeLimit}
		copy(st.acked[:], r.Acked)
		s.eps[string(name)] = st
		byID[r.ID] = st
		return nil
	}); err != nil {
		return err
	}
	if v := meta.Get(keyClean); v != nil {
		var c cleanRecord
		if err := decodeRecord(v, &c); err != nil {
			return fmt.Errorf("store: open %s: clean record: %w", s.path, err)
		}
		s.messages = c.Messages
		for _, d := range c.Depths {
			if st := byID[d.ID]; st != nil {
				copy(st.depth[:], d.Depth)
			}
		}
		return meta.Delete(keyClean)
	}
	// Not closed cleanly: count what is queued, and what was acknowledged
	// and not yet deleted. This reads the whole queues bucket, which the
	// page check has just read anyway.
	c := tx.Bucket(bucketQueues).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		id, prio, seq, ok := parseQueueKey(k)
		st := byID[id]
		if !ok || st == nil || prio >= NumPriorities {
			return fmt.Errorf("store: open %s: %w: queue key %x of no endpoint", s.path, ErrCorrupt, k)
		}
		if seq <= st.acked[prio] {
			st.garbage += int64(len(v)) + queueKeyLen + elementSize
			continue
		}
		st.depth[prio]++
		if len(v) > 0 {
			s.messages++
		}
	}
	s.messages += int64(tx.Bucket(bucketMessages).Stats().KeyN)
	return nil
}

// markClean writes the clean record and bbolt's freelist in one last
// transaction, so that the next Open need not walk the file. It is best
// effort: if it fails (a full disk), the next Open walks the file.
func (s *Store) markClean() {
	s.mu.Lock()
	c := cleanRecord{V: recordVersion, Messages: s.messages}
	for _, st := range s.eps {
		c.Depths = append(c.Depths, endpointDepth{ID: st.id, Depth: append([]int64(nil), st.depth[:]...)})
	}
	s.mu.Unlock()
	sort.Slice(c.Depths, func(i, j int) bool { return c.Depths[i].ID < c.Depths[j].ID })
	rec, err := encodeRecord(c)
	if err != nil {
		return
	}
	s.db.NoFreelistSync = false
	_ = s.db.Update(func(tx *bolt.Tx) error {
		// Delete the acknowledged keys, so that Open, which trusts the
		// clean record and does not count, finds none.
		w := s.newWtx(tx, s.opts.Now())
		if _, err := w.purgeAll(); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyClean, rec)
	})
	s.db.NoFreelistSync = true
}

// cowReserve is the part of the limit kept free for bbolt's copy-on-write:
// a transaction writes every page it changes to a free page and frees the
// old copy only when it commits, and those pages become reusable one
// transaction later. About 16 pages per transaction (the branch and leaf
// pages on the paths it touches) for the running and the previous
// transaction; at most a quarter of the limit.
func cowReserve(limit int64, pageSize int) int64 {
	r := int64(32 * pageSize)
	if r > limit/4 {
		r = limit / 4
	}
	return r
}

// Close waits for pending operations to commit, stops the store's
// goroutines and closes the file. Calls after the first return nil.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.quit)
	s.wg.Wait()
	if s.fill != nil {
		s.fill.Close()
	}
	s.markClean()
	if s.jnl != nil {
		s.jnl.close()
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// Path returns the file name of the store.
func (s *Store) Path() string { return s.path }

// enter is called by every public method; it fails once Close began.
// The caller must call s.closeMu.RUnlock when enter returned nil.
func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

// endpoint returns the state of an endpoint, nil for one that was never
// given an id. s.mu is held.
func (s *Store) endpoint(name string) *endpointState { return s.eps[name] }
