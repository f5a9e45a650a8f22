package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket names of the on-disk layout (see doc.go).
var (
	bucketMeta     = []byte("meta")
	bucketMessages = []byte("messages")
	bucketRefs     = []byte("refs")
	bucketQueues   = []byte("queues")
	bucketTwins    = []byte("twins")
	bucketPatches  = []byte("patches")

	keyFormat    = []byte("format")
	keyUntrusted = []byte("untrusted") // highest seq enqueued on an untrusted clock
	bucketTrust  = []byte("trust")     // in meta: seq -> first trusted time after it
	keyState     = []byte("state")     // in an endpoint bucket: endpointRecord
)

// lockTimeout bounds the wait for bbolt's file lock, so that a second
// process (a CLI next to a running hub) gets ErrInUse instead of hanging.
const lockTimeout = 2 * time.Second

// regatherWait bounds how long the writer waits to gather a batch as large
// as the previous one (see gather).
const regatherWait = 1 * time.Millisecond

// Store is a durable message queue store in one bbolt file. Its methods
// are safe for concurrent use. A Store owns two goroutines, the writer
// (group commit) and the sweeper; Close stops both.
type Store struct {
	path    string
	db      *bolt.DB
	opts    Options
	limit   int64
	reserve int64 // part of limit kept free for copy-on-write (see cowReserve)

	ops       chan *op
	lastBatch int // size of the previous batch; the writer's own
	quit      chan struct{}
	wg        sync.WaitGroup

	closeMu sync.RWMutex // held shared by every call, exclusively by Close
	closed  bool

	readMu sync.Mutex // serialises Read, which moves read positions

	mu        sync.Mutex // guards the fields below
	eps       map[string]*endpointState
	messages  int64
	untrusted uint64 // highest seq enqueued on an untrusted clock
	trust     []trustMark
	sweepErr  error

	commits atomic.Uint64
}

// trustMark records that the store first saw a trusted clock at time at,
// after the messages up to seq had been enqueued on an untrusted one.
type trustMark struct {
	seq uint64
	at  time.Time
}

type endpointState struct {
	depth      [NumPriorities]int64
	readPos    [NumPriorities]uint64 // highest seq handed out by Read
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
	if err := precheck(path); err != nil {
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
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.writer()
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
// rewritten by every transaction, which is pure SD card wear; without it
// bbolt rebuilds the freelist at open by walking the file once, which
// costs a read of the file at boot and nothing at run time. The map
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

// precheck validates an existing file before it is opened for writing.
func precheck(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	if st.Size() == 0 {
		return nil // bbolt initialises an empty file
	}
	// A shared lock keeps a running writer from changing the file while
	// it is checked, and makes a busy file ErrInUse rather than "corrupt".
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return fmt.Errorf("store: open %s: %w", path, ErrInUse)
		case errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("store: open %s: %w", path, err)
		}
		return &corruptError{err}
	}
	defer db.Close()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	defer f.Close()
	if err := checkBoltFile(f); err != nil {
		return &corruptError{err}
	}
	return db.View(func(tx *bolt.Tx) error { return checkFormat(tx, path) })
}

// checkFormat checks the store's own format record.
func checkFormat(tx *bolt.Tx, path string) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if empty {
			return nil
		}
		return fmt.Errorf("store: open %s: %w: it holds other buckets and no tinyedge meta bucket; give the store its own file", path, ErrNotStore)
	}
	v := meta.Get(keyFormat)
	if v == nil {
		return &corruptError{errors.New("meta bucket without a format version")}
	}
	var f formatRecord
	if err := decodeRecord(v, &f); err != nil {
		var ve *VersionError
		if errors.As(err, &ve) {
			ve.What = "file format"
			ve.Known = formatVersion
			return fmt.Errorf("store: open %s: %w", path, ve)
		}
		return &corruptError{fmt.Errorf("format record: %w", err)}
	}
	if f.V > formatVersion {
		return fmt.Errorf("store: open %s: %w", path, &VersionError{What: "file format", Got: f.V, Known: formatVersion})
	}
	return nil
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

// init creates the buckets of a new file and checks the format of an
// existing one.
func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := checkFormat(tx, s.path); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if meta.Get(keyFormat) == nil {
			rec, err := encodeRecord(formatRecord{V: formatVersion})
			if err != nil {
				return err
			}
			if err := meta.Put(keyFormat, rec); err != nil {
				return err
			}
		}
		if _, err := meta.CreateBucketIfNotExists(bucketTrust); err != nil {
			return err
		}
		for _, name := range [][]byte{bucketMessages, bucketRefs, bucketQueues, bucketTwins, bucketPatches} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
}

// load reads the in-memory state: queue depths, checkpoints, drop
// counters and the clock-trust marks.
func (s *Store) load() error {
	return s.db.View(func(tx *bolt.Tx) error {
		s.messages = int64(tx.Bucket(bucketMessages).Stats().KeyN)
		meta := tx.Bucket(bucketMeta)
		s.untrusted = getU64(meta.Get(keyUntrusted))
		if err := meta.Bucket(bucketTrust).ForEach(func(k, v []byte) error {
			s.trust = append(s.trust, trustMark{seq: getU64(k), at: time.Unix(0, int64(getU64(v)))})
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketQueues).ForEachBucket(func(name []byte) error {
			eb := tx.Bucket(bucketQueues).Bucket(name)
			st := &endpointState{}
			if v := eb.Get(keyState); v != nil {
				var r endpointRecord
				if err := decodeRecord(v, &r); err != nil {
					return fmt.Errorf("store: open %s: endpoint %q: %w", s.path, name, err)
				}
				st.checkpoint, st.expired, st.sizeLimit = r.Checkpoint, r.Expired, r.SizeLimit
			}
			for p := 0; p < NumPriorities; p++ {
				if qb := eb.Bucket(priorityKey(uint32(p))); qb != nil {
					st.depth[p] = int64(qb.Stats().KeyN)
				}
			}
			s.eps[string(name)] = st
			return nil
		})
	})
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

// endpoint returns the state of an endpoint, creating it. s.mu is held.
func (s *Store) endpoint(name string) *endpointState {
	st := s.eps[name]
	if st == nil {
		st = &endpointState{}
		s.eps[name] = st
	}
	return st
}
