package store

import (
	"fmt"
	"runtime"
	"time"
)

// Policy says what Append does when the store is at its size limit.
type Policy int

const (
	// DropOldest makes room by dropping the oldest messages of the lowest
	// priority first; every drop is counted per endpoint with reason
	// "size_limit". It is the default.
	DropOldest Policy = iota
	// Refuse fails the Append with ErrFull; nothing stored is dropped.
	Refuse
)

func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop_oldest"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

const (
	// DefaultTTL is the time to live of a message whose route and
	// Options give none: edgeHub's storeAndForwardConfiguration default.
	DefaultTTL = 7200 * time.Second

	// DefaultMaxSize64 is the default size limit on 64-bit platforms.
	DefaultMaxSize64 int64 = 256 << 20
	// DefaultMaxSizeARM is the default size limit on GOARCH=arm. bbolt
	// maps the whole file into memory, and a 32-bit process has at most
	// 2–3 GiB of address space shared with the heap, stacks and the Go
	// runtime's reservations; bbolt grows the mapping by doubling up to
	// 1 GiB, so a 128 MiB file never needs more than a 128 MiB mapping.
	DefaultMaxSizeARM int64 = 128 << 20
	// MaxSizeARM is the largest explicit limit accepted on GOARCH=arm:
	// past 1 GiB bbolt's next mapping would be 2 GiB, which a 32-bit
	// address space cannot provide next to a running program.
	MaxSizeARM int64 = 1 << 30
	// MinSize is the smallest limit accepted: bbolt's two meta pages, the
	// bucket tree and one batch of messages must fit.
	MinSize int64 = 256 << 10

	// DefaultJournalBytes is the default size of the journal. It also
	// bounds the messages kept in memory between checkpoints.
	DefaultJournalBytes int64 = 4 << 20
	// MinJournalBytes is the smallest journal accepted.
	MinJournalBytes int64 = 64 << 10

	defaultSweepInterval = time.Minute
	defaultMaxBatch      = 1024
	defaultMaxPending    = 4096
)

// TrustedAfter is the default clock trust threshold: a clock reading
// earlier than this is taken to be a Raspberry Pi that has not synced NTP
// yet (no RTC: it reads 1970 or the last shutdown).
var TrustedAfter = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Options configure a Store. A nil *Options means all defaults.
type Options struct {
	// MaxSizeBytes bounds the live data in the file. 0 means
	// DefaultMaxSize64, or DefaultMaxSizeARM when GOARCH=arm. On
	// GOARCH=arm a value above MaxSizeARM is refused.
	MaxSizeBytes int64
	// OnFull is the policy applied when an Append would pass the limit.
	OnFull Policy
	// DefaultTTL applies to targets whose TTL is 0. 0 means DefaultTTL
	// (7200 s); a negative value means messages never expire.
	DefaultTTL time.Duration
	// CommitDelay is how long the writer waits for more appends after the
	// first one of a batch. 0 (the default) waits only under load: appends
	// that arrive while a commit is being synced form the next batch, and
	// the writer waits up to a millisecond for the producers of the
	// previous batch to come back, never for a lone producer.
	CommitDelay time.Duration
	// MaxBatch bounds the number of operations in one transaction.
	// 0 means 1024.
	MaxBatch int
	// MaxPending bounds the queue of operations waiting for the writer.
	// When it is full, Append waits (until its context is done). 0 means
	// 4096.
	MaxPending int
	// SweepInterval is how often the background sweeper removes expired
	// messages. 0 means one minute; a negative value disables it (Sweep
	// can still be called).
	SweepInterval time.Duration
	// Now returns the current time. nil means time.Now.
	Now func() time.Time
	// Trusted reports whether a clock reading can be trusted. nil means
	// "after TrustedAfter".
	Trusted func(time.Time) bool
	// JournalBytes is the size of the journal (<path>.journal), which
	// makes a batch of appends and acknowledgements durable with one
	// write and one fdatasync; bbolt gets the messages not acknowledged
	// by the next checkpoint (see the package documentation). 0 means
	// DefaultJournalBytes; a negative value runs without a journal, every
	// Append and Ack waiting for its bbolt commit. At least
	// MinJournalBytes.
	JournalBytes int64
	// NoSync skips fsync. For tests only: a power cut loses committed
	// messages.
	NoSync bool
}

// resolve fills in defaults and validates o for the platform goarch.
func (o *Options) resolve(goarch string) (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	switch {
	case r.MaxSizeBytes == 0 && goarch == "arm":
		r.MaxSizeBytes = DefaultMaxSizeARM
	case r.MaxSizeBytes == 0:
		r.MaxSizeBytes = DefaultMaxSize64
	case r.MaxSizeBytes < MinSize:
		return r, fmt.Errorf("%w: MaxSizeBytes %d is below the minimum of %d bytes", ErrInvalid, r.MaxSizeBytes, MinSize)
	case goarch == "arm" && r.MaxSizeBytes > MaxSizeARM:
		return r, fmt.Errorf("%w: MaxSizeBytes %d is too large for 32-bit ARM: bbolt maps the whole file into memory and a 32-bit process cannot map more than about 1 GiB next to the program; use at most %d (1 GiB), or a 64-bit OS (arm64)", ErrInvalid, r.MaxSizeBytes, MaxSizeARM)
	}
	if r.OnFull != DropOldest && r.OnFull != Refuse {
		return r, fmt.Errorf("%w: unknown OnFull policy %d", ErrInvalid, int(r.OnFull))
	}
	switch {
	case r.JournalBytes == 0:
		r.JournalBytes = DefaultJournalBytes
	case r.JournalBytes > 0 && r.JournalBytes < MinJournalBytes:
		return r, fmt.Errorf("%w: JournalBytes %d is below the minimum of %d bytes", ErrInvalid, r.JournalBytes, MinJournalBytes)
	}
	if r.DefaultTTL == 0 {
		r.DefaultTTL = DefaultTTL
	}
	if r.CommitDelay < 0 {
		r.CommitDelay = 0
	}
	if r.MaxBatch <= 0 {
		r.MaxBatch = defaultMaxBatch
	}
	if r.MaxPending <= 0 {
		r.MaxPending = defaultMaxPending
	}
	if r.SweepInterval == 0 {
		r.SweepInterval = defaultSweepInterval
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Trusted == nil {
		r.Trusted = func(t time.Time) bool { return t.After(TrustedAfter) }
	}
	return r, nil
}

// growthStep is how much bbolt grows the file at a time (bbolt's
// DB.AllocSize): an eighth of the limit, between 64 KiB and bbolt's default
// of 16 MiB, so the file never passes the limit by more than that.
func growthStep(limit int64) int {
	s := limit / 8
	if s < 64<<10 {
		s = 64 << 10
	}
	if s > 16<<20 {
		s = 16 << 20
	}
	return int(s)
}

var hostArch = runtime.GOARCH
