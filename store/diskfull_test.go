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
	"time"
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

// appender returns what appends message i (700 bytes of i) to $upstream
// and records it in want when it is stored.
func appender(s *Store, want map[uint64][]byte) func(i int) error {
	return func(i int) error {
		p := bytes.Repeat([]byte{byte(i)}, 700)
		seq, err := s.Append(context.Background(), []Target{up(0)}, p, Meta{})
		if err == nil {
			want[seq] = p
		}
		return err
	}
}

// appendThenFill appends 50 messages, then fills the file system in dir
// up to 16 KiB, and returns the filler file.
func appendThenFill(t *testing.T, dir string, appendMsg func(int) error) string {
	t.Helper()
	for i := range 50 {
		if err := appendMsg(i); err != nil {
			t.Fatalf("append %d before the disk is full: %v", i, err)
		}
	}
	return fill(t, dir, 16<<10)
}

// appendUntilFull appends messages 50 on until one fails, at most 5000,
// and returns that failure (nil if none did).
func appendUntilFull(appendMsg func(int) error) error {
	for i := 50; i < 5000; i++ {
		if err := appendMsg(i); err != nil {
			return err
		}
	}
	return nil
}

// TestDiskFull runs the store on a file system that fills up: appends fail
// with the OS error, nothing committed is lost or damaged, and appends
// work again once there is space.
func TestDiskFull(t *testing.T) {
	dir := tinyFS(t, 1<<20)
	path := filepath.Join(dir, "s.db")
	// The size limit is far above the file system: the disk fills first.
	// The default journal does not fit it either: the store runs without
	// one, every append waiting for its bbolt commit.
	o := &Options{SweepInterval: -1, MaxSizeBytes: 64 << 20}
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	if st, err := s.Stats(); err != nil || !errors.Is(st.JournalError, syscall.ENOSPC) {
		t.Fatalf("Stats: journal error %v, %v; want ENOSPC for a 4 MiB journal on a 1 MiB file system", st.JournalError, err)
	}
	if _, err := os.Stat(path + journalSuffix); err != nil {
		t.Fatal(err)
	}

	want := map[uint64][]byte{}
	appendMsg := appender(s, want)
	filler := appendThenFill(t, dir, appendMsg)

	full := appendUntilFull(appendMsg)
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
		got := readAll(t, s)
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
	appendMsg = appender(s, want)

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

// readAll rewinds $upstream and reads all of it.
func readAll(t *testing.T, s *Store) map[uint64][]byte {
	t.Helper()
	if err := s.Rewind("$upstream"); err != nil {
		t.Fatal(err)
	}
	got := map[uint64][]byte{}
	for {
		items, err := s.Read("$upstream", 256)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(items) == 0 {
			return got
		}
		for _, it := range items {
			got[it.Seq] = it.Payload
		}
	}
}

// TestDiskFullJournal: appends the journal took while bbolt cannot commit
// them (the disk is full) wait for the space and are committed then,
// across a restart; readers are not held up by them meanwhile, and once
// the journal is full appends fail with the OS error.
func TestDiskFullJournal(t *testing.T) {
	dir := tinyFS(t, 1<<20)
	path := filepath.Join(dir, "s.db")
	o := &Options{SweepInterval: -1, MaxSizeBytes: 64 << 20, JournalBytes: MinJournalBytes}
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	if st, err := s.Stats(); err != nil || st.JournalError != nil {
		t.Fatalf("Stats: journal error %v, %v", st.JournalError, err)
	}
	want := map[uint64][]byte{}
	appendMsg := appender(s, want)
	filler := appendThenFill(t, dir, appendMsg)
	full := appendUntilFull(appendMsg)
	if !errors.Is(full, syscall.ENOSPC) || !strings.Contains(full.Error(), "append") || !strings.Contains(full.Error(), path) {
		t.Fatalf("append on a full disk: %v; want an error naming the append and %s, matching ENOSPC", full, path)
	}
	// The journaled appends bbolt cannot take are read from memory.
	check := func(when string) {
		t.Helper()
		read := make(chan map[uint64][]byte, 1)
		go func() { read <- readAll(t, s) }()
		var got map[uint64][]byte
		select {
		case got = <-read:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Read waits for appends a full disk keeps from being committed", when)
		}
		for seq, p := range want {
			if !bytes.Equal(got[seq], p) {
				t.Fatalf("%s: message %d = %d bytes, want %d: %d of %d read", when, seq, len(got[seq]), len(p), len(got), len(want))
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: read %d messages, want the %d stored: failed appends must not be delivered", when, len(got), len(want))
		}
	}
	check("full")
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	held := len(want) - int(st.Messages)
	t.Logf("full after %d appends, %d of them journaled and waiting for the disk: %v", len(want), held, full)
	if held <= 0 {
		t.Fatalf("bbolt has %d of the %d messages appended: none is waiting, so the journal took none after the disk filled", st.Messages, len(want))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close on a full disk: %v", err)
	}
	if s, err = Open(path, o); err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	check("reopened on a full disk")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The applier checkpoints again every checkpointEvery, and Stats
	// asks for one: allow many times that.
	wait := 30 * checkpointEvery
	deadline := time.Now().Add(wait)
	for {
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages == int64(len(want)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("space freed %v ago: bbolt has %d of %d messages", wait, st.Messages, len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
	check("after space was freed")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, o); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s); len(got) != len(want) {
		t.Fatalf("reopened: %d messages, want %d", len(got), len(want))
	}
	if st, err := s.Stats(); err != nil || st.Messages != int64(len(want)) || st.ApplyError != nil {
		t.Errorf("Stats() = %d messages, apply error %v, %v; want %d", st.Messages, st.ApplyError, err, len(want))
	}
}
