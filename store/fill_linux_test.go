package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// TestFillAhead: while the file grows, the writer keeps its blocks
// written past bbolt's high water mark (no hole there for a commit to
// allocate in), and the zeros never touch a stored message.
func TestFillAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	o := &Options{SweepInterval: -1} // fsync on: fillFile runs only then
	s := openT(t, path, o)
	payload := bytes.Repeat([]byte("f"), 300)
	const producers, each = 8, 200
	var wg sync.WaitGroup
	for i := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				if _, err := s.Append(context.Background(), []Target{up(0)}, payload, Meta{Properties: []byte(fmt.Sprint(i, "/", j))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s.checkpointNow()
	var hwm int64
	s.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil })
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hole, err := unix.Seek(int(f.Fd()), hwm, unix.SEEK_HOLE)
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		t.Skipf("SEEK_HOLE not supported here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if want := min(hwm+fillAhead/2, fi.Size()); hole < want {
		t.Errorf("first hole after the high water mark %d is at %d, want at least %d", hwm, hole, want)
	}
	check := func(when string) {
		t.Helper()
		s.Rewind("$upstream")
		items := readT(t, s, "$upstream", producers*each+1)
		if len(items) != producers*each {
			t.Fatalf("%s: read %d messages, want %d", when, len(items), producers*each)
		}
		seen := map[string]bool{}
		for _, it := range items {
			if !bytes.Equal(it.Payload, payload) || seen[string(it.Meta.Properties)] {
				t.Fatalf("%s: message %d: %q %q", when, it.Seq, it.Meta.Properties, it.Payload)
			}
			seen[string(it.Meta.Properties)] = true
		}
	}
	check("written")
	crashClose(t, s)
	s = openT(t, path, o)
	check("after a crash")
}
