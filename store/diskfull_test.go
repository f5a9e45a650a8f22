//go:build linux

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tinyFS mounts a tmpfs of size bytes under t.TempDir and returns its
// path, or skips the test when this process cannot mount one (not root,
// a container without CAP_SYS_ADMIN, qemu-user without the syscall).
func tinyFS(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("disk full test needs root to mount a tmpfs")
	}
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("disk full test: cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full, then gives
// back room bytes of it.
func fill(t *testing.T, dir string, room int64) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatalf("fill %s: %v", name, err)
		}
	}
	if err := f.Truncate(max(n-room, 0)); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestDiskFull runs the store on a file system that fills up: appends fail
// with the OS error, nothing committed is lost or damaged, and appends
// work again once there is space.
func TestDiskFull(t *testing.T) {
	dir := tinyFS(t, 1<<20)
	path := filepath.Join(dir, "s.db")
	// The size limit is far above the file system: the disk fills first.
	o := &Options{SweepInterval: -1, MaxSizeBytes: 64 << 20}
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	want := map[uint64][]byte{}
	appendMsg := func(i int) error {
		p := bytes.Repeat([]byte{byte(i)}, 700)
		seq, err := s.Append(context.Background(), []Target{up(0)}, p, Meta{})
		if err == nil {
			want[seq] = p
		}
		return err
	}
	for i := range 50 {
		if err := appendMsg(i); err != nil {
			t.Fatalf("append %d before the disk is full: %v", i, err)
		}
	}
	filler := fill(t, dir, 16<<10)

	var full error
	for i := 50; i < 5000 && full == nil; i++ {
		full = appendMsg(i)
	}
	if full == nil {
		t.Fatal("5000 appends on a full file system succeeded, want ENOSPC")
	}
	if !errors.Is(full, syscall.ENOSPC) || !strings.Contains(full.Error(), "append") || !strings.Contains(full.Error(), path) {
		t.Fatalf("append on a full disk: %v; want an error naming the append and %s, matching ENOSPC", full, path)
	}
	t.Logf("full after %d appends: %v", len(want), full)
	// Still full: a failed commit does not wedge the writer, it fails
	// again for the same reason.
	if err := appendMsg(9999); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second append on a full disk: %v, want ENOSPC", err)
	}

	check := func(s *Store, when string) {
		t.Helper()
		if err := s.Rewind("$upstream"); err != nil {
			t.Fatal(err)
		}
		got := map[uint64][]byte{}
		for {
			items, err := s.Read("$upstream", 256)
			if err != nil {
				t.Fatalf("%s: read: %v", when, err)
			}
			if len(items) == 0 {
				break
			}
			for _, it := range items {
				got[it.Seq] = it.Payload
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: read %d messages, want the %d committed", when, len(got), len(want))
		}
		for seq, p := range want {
			if !bytes.Equal(got[seq], p) {
				t.Fatalf("%s: message %d = %d bytes %.8q…, want %d bytes %.8q…", when, seq, len(got[seq]), got[seq], len(p), p)
			}
		}
	}
	check(s, "after ENOSPC")
	if err := s.Close(); err != nil {
		t.Fatalf("close on a full disk: %v", err)
	}
	if s, err = Open(path, o); err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	check(s, "reopened on a full disk")

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := appendMsg(i); err != nil {
			t.Fatalf("append %d after space was freed: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, o); err != nil {
		t.Fatalf("reopen after space was freed: %v", err)
	}
	check(s, "reopened after space was freed")
	if st, err := s.Stats(); err != nil || st.Messages != int64(len(want)) {
		t.Errorf("Stats() = %d messages, %v; want %d", st.Messages, err, len(want))
	}
}
