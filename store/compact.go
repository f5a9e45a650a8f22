package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	bolt "go.etcd.io/bbolt"
)

// compactTxSize bounds each transaction of Compact so that compacting a
// large store does not hold it all in memory.
const compactTxSize = 16 << 20

// Compact copies the store at src into a new file dst, leaving out free
// pages, so dst is as small as the live data allows. It is an offline
// operation (tinyedge store compact): src must not be open elsewhere
// (ErrInUse). dst must not exist; the caller renames it over src once
// Compact returned nil. A damaged src is reported, not moved aside.
func Compact(src, dst string) error {
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: compact: %s already exists", ErrInvalid, dst)
	}
	if _, err := precheck(src); err != nil {
		var ce *corruptError
		if errors.As(err, &ce) {
			return fmt.Errorf("store: compact %s: damaged file: %v", src, ce.err)
		}
		return err
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	in, err := openBolt(src, false, true)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := openBolt(dst, false, false)
	if err != nil {
		return err
	}
	if err := bolt.Compact(out, in, compactTxSize); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("store: compact %s to %s: %w", src, dst, err)
	}
	// Write bbolt's freelist, so that Open need not walk the new file
	// when it was copied from a cleanly closed one (see markClean).
	out.NoFreelistSync = false
	if err := out.Update(func(*bolt.Tx) error { return nil }); err != nil {
		out.Close()
		return fmt.Errorf("store: compact %s to %s: %w", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("store: compact %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("store: compact %s to %s: %w", src, dst, err)
	}
	return nil
}
