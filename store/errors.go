package store

import (
	"errors"
	"fmt"
)

// Errors returned by the store. Callers compare with errors.Is; the store
// wraps them with the operation and, where there is one, the file name.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store: closed")

	// ErrFull is returned by Append when the store is at MaxSizeBytes and
	// the policy is Refuse, or when a single message could never fit. The
	// message was not stored; the sender sees the failure.
	ErrFull = errors.New("store: full")

	// ErrNewerVersion is matched by a *VersionError: the file or a record
	// was written by a newer tinyedge and is refused rather than misread.
	ErrNewerVersion = errors.New("store: written by a newer version")

	// ErrCorrupt is returned when a record cannot be decoded. Open never
	// returns it for a damaged file: it moves such a file aside instead
	// (see RecoveredError).
	ErrCorrupt = errors.New("store: corrupt record")

	// ErrInUse is returned by Open and Compact when another process holds
	// the file (bbolt takes an exclusive lock).
	ErrInUse = errors.New("store: file in use by another process")

	// ErrNotStore is returned by Open for a valid bbolt file that is not a
	// tinyedge store. The file is left alone.
	ErrNotStore = errors.New("store: not a tinyedge store")

	// ErrInvalid is returned for arguments or options the store cannot
	// honour; the wrapping message says which and why.
	ErrInvalid = errors.New("store: invalid argument")
)

// VersionError reports a file format or record written by a newer binary.
// It matches ErrNewerVersion.
type VersionError struct {
	What  string // "record" or "file format"
	Got   uint64 // version found
	Known uint64 // newest version this binary understands
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("store: %s version %d is newer than this binary understands (%d); upgrade tinyedge", e.What, e.Got, e.Known)
}

// Is makes errors.Is(err, ErrNewerVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrNewerVersion }

// RecoveredError is returned by Open together with a usable, empty Store
// when the file at Path could not be read as a store: it was moved to
// MovedTo and a fresh store was created in its place. The caller should log
// it loudly (with both paths), count it in a metric, and carry on: the
// messages in the old file are lost to the running gateway but kept on
// disk for inspection.
type RecoveredError struct {
	Path    string
	MovedTo string
	Cause   error
}

func (e *RecoveredError) Error() string {
	return fmt.Sprintf("store: %s was unreadable (%v); moved it to %s and started an empty store", e.Path, e.Cause, e.MovedTo)
}

// Unwrap returns the reason the file was unreadable.
func (e *RecoveredError) Unwrap() error { return e.Cause }
