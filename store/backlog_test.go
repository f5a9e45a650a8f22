package store

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// procStatus returns the kB fields of /proc/self/status named in keys.
func procStatus(keys ...string) (map[string]int64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for _, want := range keys {
			if k == want {
				n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err == nil {
					out[k] = n
				}
			}
		}
	}
	return out, len(out) == len(keys)
}

func memNow(t *testing.T) map[string]int64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	m, ok := procStatus("VmRSS", "RssAnon", "RssFile")
	if !ok {
		t.Skip("no VmRSS/RssAnon/RssFile in /proc/self/status here")
	}
	return m
}

// TestBacklogSoak queues 1,000,000 messages of 256 bytes, then measures
// the memory of a store holding them (reopened after a clean close)
// against an empty one, and the rate
// at which a consumer drains them (Read and Ack in batches of 256, fsync
// on). The fill runs with fsync off to save time; the drain does not.
// It runs only with TINYEDGE_SOAK set (make soak):
//
//	TINYEDGE_SOAK=1 go test -run TestBacklogSoak -v ./store/
//
// Set TINYEDGE_SOAK_DIR to put the file on a particular disk (default: the
// test's temporary directory).
func TestBacklogSoak(t *testing.T) {
	if os.Getenv("TINYEDGE_SOAK") == "" {
		t.Skip("set TINYEDGE_SOAK=1 to queue and drain a 1,000,000-message backlog")
	}
	const n, size, batch, producers = 1_000_000, 256, 256, 64
	dir := t.TempDir()
	if d := os.Getenv("TINYEDGE_SOAK_DIR"); d != "" {
		var err error
		if dir, err = os.MkdirTemp(d, "backlog"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	path := filepath.Join(dir, "s.db")
	o := Options{SweepInterval: -1, MaxSizeBytes: 1 << 30, DefaultTTL: -1}
	if runtime.GOARCH == "arm" {
		t.Skip("a 1,000,000-message backlog needs more than the 32-bit ARM limit")
	}

	empty, err := Open(path, &o)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 { // warm up the code paths the drain uses
		if _, err := empty.Append(context.Background(), []Target{up(0)}, make([]byte, size), Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	drainAll(t, empty, batch)
	memEmpty := memNow(t)

	fill := o
	fill.NoSync = true
	empty.Close()
	s, err := Open(path, &fill)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	p := make([]byte, size)
	for i := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < n; j += producers {
				if _, err := s.Append(context.Background(), []Target{up(0)}, p, Meta{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("fill: %d messages in %v (fsync off)", n, time.Since(start).Round(time.Millisecond))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)

	start = time.Now()
	s, err = Open(path, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("open with backlog: %v, file %d MiB", time.Since(start).Round(time.Millisecond), st.Size()>>20)
	memFull := memNow(t)
	t.Logf("RSS empty store: VmRSS %d kB (anon %d, file %d)", memEmpty["VmRSS"], memEmpty["RssAnon"], memEmpty["RssFile"])
	t.Logf("RSS %d queued:   VmRSS %d kB (anon %d, file %d)", n, memFull["VmRSS"], memFull["RssAnon"], memFull["RssFile"])
	t.Logf("difference: VmRSS %+d kB, anon %+d kB, file (bbolt's mapping) %+d kB",
		memFull["VmRSS"]-memEmpty["VmRSS"], memFull["RssAnon"]-memEmpty["RssAnon"], memFull["RssFile"]-memEmpty["RssFile"])
	// Open reads counts from the clean record and bbolt's freelist from
	// its page, and the page check reads with pread: nothing walks the
	// backlog through the memory map.
	if d := memFull["VmRSS"] - memEmpty["VmRSS"]; d > 10<<10 {
		t.Errorf("VmRSS grew by %d kB with the backlog, want at most 10 MiB", d)
	}

	w0, _ := writeBytes()
	start = time.Now()
	got := drainAll(t, s, batch)
	el := time.Since(start)
	w1, _ := writeBytes()
	if got != n {
		t.Errorf("drained %d messages, want %d", got, n)
	}
	t.Logf("drain: %d messages in %v, %.0f msg/s (Read+Ack of %d, fsync on), %.0f bytes written per message", got, el.Round(time.Millisecond), float64(got)/el.Seconds(), batch, float64(w1-w0)/float64(got))
}

// drainAll reads and acknowledges everything queued for $upstream.
func drainAll(t *testing.T, s *Store, batch int) int {
	t.Helper()
	total := 0
	seqs := make([]uint64, 0, batch)
	for {
		items, err := s.Read("$upstream", batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) == 0 {
			return total
		}
		seqs = seqs[:0]
		for _, it := range items {
			seqs = append(seqs, it.Seq)
		}
		if err := s.Ack("$upstream", seqs...); err != nil {
			t.Fatal(err)
		}
		total += len(items)
	}
}
