package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

var (
	trustedT   = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	untrustedT = time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC)
)

func testOptions(c *clock) *Options {
	o := &Options{NoSync: true, SweepInterval: -1}
	if c != nil {
		o.Now = c.Now
	}
	return o
}

func openT(t *testing.T, path string, o *Options) *Store {
	t.Helper()
	s, err := Open(path, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendT(t *testing.T, s *Store, payload string, targets ...Target) uint64 {
	t.Helper()
	seq, err := s.Append(context.Background(), targets, []byte(payload), Meta{})
	if err != nil {
		t.Fatalf("Append(%q): %v", payload, err)
	}
	return seq
}

func readT(t *testing.T, s *Store, ep string, max int) []Item {
	t.Helper()
	items, err := s.Read(ep, max)
	if err != nil {
		t.Fatalf("Read(%s): %v", ep, err)
	}
	return items
}

func payloads(items []Item) string {
	var b []string
	for _, it := range items {
		b = append(b, string(it.Payload))
	}
	return strings.Join(b, ",")
}

func seqs(items []Item) []uint64 {
	var out []uint64
	for _, it := range items {
		out = append(out, it.Seq)
	}
	return out
}

func up(p uint32) Target { return Target{Endpoint: "$upstream", Priority: p} }

func TestOrderWithinAndAcrossPriorities(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
	appendT(t, s, "low1", up(2000000000))
	appendT(t, s, "p5a", up(5))
	appendT(t, s, "p0a", up(0))
	appendT(t, s, "p5b", up(5))
	appendT(t, s, "low2", up(LowestPriority))
	appendT(t, s, "p0b", up(0))
	items := readT(t, s, "$upstream", 100)
	if got, want := payloads(items), "p0a,p0b,p5a,p5b,low1,low2"; got != want {
		t.Fatalf("read order = %s, want %s", got, want)
	}
	if got := items[4].Priority; got != LowestPriority {
		t.Errorf("priority 2000000000 read back as %d, want LowestPriority", got)
	}
}

func TestReadContinuesUntilRewind(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
	for i := range 5 {
		appendT(t, s, fmt.Sprint(i), up(1))
	}
	if got := payloads(readT(t, s, "$upstream", 2)); got != "0,1" {
		t.Fatalf("first read = %s", got)
	}
	if got := payloads(readT(t, s, "$upstream", 2)); got != "2,3" {
		t.Fatalf("second read before ack = %s, want 2,3 (in flight messages are not returned twice)", got)
	}
	// A new message of a higher priority comes before older lower ones.
	appendT(t, s, "urgent", up(0))
	if got := payloads(readT(t, s, "$upstream", 5)); got != "urgent,4" {
		t.Fatalf("third read = %s, want urgent,4", got)
	}
	if err := s.Ack("$upstream", 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Rewind("$upstream"); err != nil {
		t.Fatal(err)
	}
	if got := payloads(readT(t, s, "$upstream", 10)); got != "urgent,2,3,4" {
		t.Fatalf("read after rewind = %s, want every unacknowledged message", got)
	}
}

func TestAckPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	var all []uint64
	for i := range 10 {
		all = append(all, appendT(t, s, fmt.Sprint(i), up(0)))
	}
	items := readT(t, s, "$upstream", 10)
	if err := s.Ack("$upstream", seqs(items[:4])...); err != nil {
		t.Fatal(err)
	}
	// Out of order acknowledgement: 7 before 4..6.
	if err := s.Ack("$upstream", all[7]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read("$upstream", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
	// Payloads read before Close stay valid: they are copies, not views
	// of bbolt's (now unmapped) file.
	if got := string(items[9].Payload); got != "9" {
		t.Fatalf("payload after close = %q", got)
	}

	s = openT(t, path, testOptions(nil))
	if got, want := payloads(readT(t, s, "$upstream", 100)), "4,5,6,8,9"; got != want {
		t.Fatalf("after reopen read %s, want %s", got, want)
	}
	es, err := s.EndpointStats("$upstream")
	if err != nil {
		t.Fatal(err)
	}
	if es.Checkpoint != all[7] || es.Queued != 5 || es.Depth[0] != 5 {
		t.Fatalf("stats after reopen = %+v, want checkpoint %d and 5 queued", es, all[7])
	}
	// New messages continue the sequence.
	if seq := appendT(t, s, "10", up(0)); seq <= all[9] {
		t.Fatalf("seq after reopen = %d, want > %d", seq, all[9])
	}
}

func TestSharedMessageStoredOnce(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
	seq := appendT(t, s, "both", Target{Endpoint: "$upstream", Priority: 0}, Target{Endpoint: "mod/inputs/in1", Priority: 3})
	appendT(t, s, "one", up(0))
	// Bodies: shared ones in messages, the others as queue values.
	count := func() (msgs, refs int) {
		s.checkpointNow()
		s.db.View(func(tx *bolt.Tx) error {
			msgs = tx.Bucket(bucketMessages).Stats().KeyN
			tx.Bucket(bucketQueues).ForEach(func(_, v []byte) error {
				if len(v) > 0 {
					msgs++
				}
				return nil
			})
			refs = tx.Bucket(bucketRefs).Stats().KeyN
			return nil
		})
		return
	}
	if m, r := count(); m != 2 || r != 1 {
		t.Fatalf("stored %d bodies and %d ref counts, want 2 and 1", m, r)
	}
	if err := s.Ack("$upstream", seq); err != nil {
		t.Fatal(err)
	}
	if m, r := count(); m != 2 || r != 0 {
		t.Fatalf("after first ack: %d bodies, %d ref counts; want 2 and 0", m, r)
	}
	items := readT(t, s, "mod/inputs/in1", 10)
	if len(items) != 1 || string(items[0].Payload) != "both" || items[0].Priority != 3 {
		t.Fatalf("second endpoint read %+v", items)
	}
	if err := s.Ack("mod/inputs/in1", seq); err != nil {
		t.Fatal(err)
	}
	if m, _ := count(); m != 1 {
		t.Fatalf("after both acks %d bodies stored, want 1", m)
	}
	// Acking again, or a seq never queued there, is harmless.
	if err := s.Ack("mod/inputs/in1", seq, 999); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 1 {
		t.Fatalf("Stats.Messages = %d, want 1", st.Messages)
	}
}

func TestTTL(t *testing.T) {
	c := newClock(trustedT)
	o := testOptions(c)
	o.DefaultTTL = time.Hour
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), o)
	appendT(t, s, "default", Target{Endpoint: "a"})
	appendT(t, s, "short", Target{Endpoint: "a", TTL: 10 * time.Minute}, Target{Endpoint: "b"})
	appendT(t, s, "forever", Target{Endpoint: "a", TTL: -1})

	c.Add(11 * time.Minute)
	if got := payloads(readT(t, s, "a", 10)); got != "default,forever" {
		t.Fatalf("after 11m read %s", got)
	}
	if got := payloads(readT(t, s, "b", 10)); got != "short" {
		t.Fatalf("b (default TTL 1h) after 11m read %s", got)
	}
	n, err := s.Sweep()
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	c.Add(time.Hour)
	s.Rewind("a")
	if got := payloads(readT(t, s, "a", 10)); got != "forever" {
		t.Fatalf("after 71m read %s", got)
	}
	if n, err := s.Sweep(); err != nil || n != 2 {
		t.Fatalf("second Sweep = %d, %v; want 2 (a: default, b: short)", n, err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, e := range st.Endpoints {
		got[e.Endpoint] = e.Dropped[ReasonExpired]
	}
	if got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("expired drops = %v, want a:2 b:1", got)
	}
	if st.Messages != 1 {
		t.Fatalf("%d messages left, want 1 (forever)", st.Messages)
	}
}

// TestReadSkipsExpiredInMemory: Read takes from memory no more messages
// than it returns; when those it took had expired, it reads on, in order,
// and a lower priority still comes after what is left of a higher one.
func TestReadSkipsExpiredInMemory(t *testing.T) {
	c := newClock(trustedT)
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(c))
	for _, p := range []string{"e0", "e1", "e2"} {
		appendT(t, s, p, Target{Endpoint: "a", TTL: 10 * time.Minute})
	}
	appendT(t, s, "f0", Target{Endpoint: "a", TTL: -1})
	appendT(t, s, "f1", Target{Endpoint: "a", TTL: -1})
	appendT(t, s, "g0", Target{Endpoint: "a", Priority: 1})
	c.Add(11 * time.Minute)
	for _, max := range []int{1, 2, 10} {
		var got []string
		for {
			items := readT(t, s, "a", max)
			if len(items) == 0 {
				break
			}
			if len(items) > max {
				t.Fatalf("Read(a, %d) returned %d", max, len(items))
			}
			got = append(got, payloads(items))
		}
		want := map[int]string{1: "f0 f1 g0", 2: "f0,f1 g0", 10: "f0,f1,g0"}[max]
		if g := strings.Join(got, " "); g != want {
			t.Errorf("Read(a, %d) in turn: %s, want %s", max, g, want)
		}
		if err := s.Rewind("a"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUntrustedClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	c := newClock(untrustedT)
	o := testOptions(c)
	o.DefaultTTL = time.Hour
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	appendT(t, s, "early", Target{Endpoint: "a"})
	// Hours pass on the untrusted clock: nothing expires.
	c.Add(5 * time.Hour)
	if n, _ := s.Sweep(); n != 0 {
		t.Fatalf("swept %d on an untrusted clock", n)
	}
	// NTP syncs: the message's age counts from now, not from 1970.
	c.Set(trustedT)
	if got := payloads(readT(t, s, "a", 10)); got != "early" {
		t.Fatalf("just after trust, read %q", got)
	}
	es, _ := s.EndpointStats("a")
	if es.OldestAge != 0 {
		t.Fatalf("oldest age just after trust = %v, want 0", es.OldestAge)
	}
	// The trust moment survives a restart.
	s.Close()
	c.Add(30 * time.Minute)
	s = openT(t, path, o)
	appendT(t, s, "late", Target{Endpoint: "a"})
	es, _ = s.EndpointStats("a")
	if es.OldestAge != 30*time.Minute {
		t.Fatalf("oldest age after restart = %v, want 30m", es.OldestAge)
	}
	c.Add(31 * time.Minute)
	if got := payloads(readT(t, s, "a", 10)); got != "late" {
		t.Fatalf("61m after trust read %q, want only late", got)
	}
	// The clock goes back to 1970 (reboot without RTC): nothing expires.
	c.Set(untrustedT.Add(time.Minute))
	s.Rewind("a")
	if got := payloads(readT(t, s, "a", 10)); got != "early,late" {
		t.Fatalf("on an untrusted clock read %q, want both", got)
	}
	appendT(t, s, "third", Target{Endpoint: "a"})
	// Trusted again much later: "third" ages from this second trust
	// moment, not from the first one.
	c.Set(trustedT.Add(10 * time.Hour))
	if n, err := s.Sweep(); err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2", n, err)
	}
	s.Rewind("a")
	if got := payloads(readT(t, s, "a", 10)); got != "third" {
		t.Fatalf("after the second trust moment read %q, want third", got)
	}
	c.Add(time.Hour)
	if n, err := s.Sweep(); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestSizeLimitDropOldest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	o := testOptions(nil)
	o.MaxSizeBytes = 512 << 10
	s := openT(t, path, o)
	payload := bytes.Repeat([]byte("x"), 1024)
	ctx := context.Background()
	for i := range 50 {
		if _, err := s.Append(ctx, []Target{up(0)}, payload, Meta{Properties: []byte(fmt.Sprint("keep", i))}); err != nil {
			t.Fatal(err)
		}
	}
	var last uint64
	for i := range 3000 {
		seq, err := s.Append(ctx, []Target{up(9), {Endpoint: "other", Priority: LowestPriority}}, payload, Meta{Properties: []byte(fmt.Sprint(i))})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		last = seq
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	limit := o.MaxSizeBytes + int64(growthStep(o.MaxSizeBytes))
	if st.FileBytes > limit {
		t.Errorf("file is %d bytes, want at most limit+growth step = %d", st.FileBytes, limit)
	}
	if st.UsedBytes > o.MaxSizeBytes+64<<10 {
		t.Errorf("%d bytes in use, limit %d", st.UsedBytes, o.MaxSizeBytes)
	}
	drops := map[string]uint64{}
	for _, e := range st.Endpoints {
		drops[e.Endpoint] = e.Dropped[ReasonSizeLimit]
	}
	if drops["$upstream"] == 0 || drops["other"] == 0 {
		t.Fatalf("size_limit drops = %v, want some on both endpoints", drops)
	}
	items := readT(t, s, "$upstream", 5000)
	// Priority 0 survived; priority 9 kept its newest messages, contiguous.
	for i := range 50 {
		if got := string(items[i].Meta.Properties); got != fmt.Sprint("keep", i) {
			t.Fatalf("item %d = %s, want keep%d (priority 0 must survive)", i, got, i)
		}
	}
	rest := items[50:]
	if len(rest) == 0 || rest[len(rest)-1].Seq != last {
		t.Fatalf("newest message missing")
	}
	for i := 1; i < len(rest); i++ {
		if rest[i].Seq != rest[i-1].Seq+1 {
			t.Fatalf("gap in kept messages: %d then %d (oldest should go first)", rest[i-1].Seq, rest[i].Seq)
		}
	}
	t.Logf("kept %d of 3050 messages; file %d bytes, used %d, dropped %v", len(items), st.FileBytes, st.UsedBytes, drops)
	if uint64(len(rest))+drops["$upstream"] != 3000 {
		t.Fatalf("kept %d + dropped %d != 3000", len(rest), drops["$upstream"])
	}
}

func TestSizeLimitRefuse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	o := testOptions(nil)
	o.MaxSizeBytes = 256 << 10
	o.OnFull = Refuse
	s := openT(t, path, o)
	payload := bytes.Repeat([]byte("y"), 1000)
	ctx := context.Background()
	var stored []uint64
	for {
		seq, err := s.Append(ctx, []Target{up(0)}, payload, Meta{})
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, seq)
		if len(stored) > 1000 {
			t.Fatal("never refused")
		}
	}
	// 1 KiB records appended one per transaction fill bbolt's pages about
	// half (a node splits at five keys, keeping two), and 64 KiB of the
	// limit is the copy-on-write reserve: about 80 fit.
	if len(stored) < 50 {
		t.Fatalf("refused after %d KiB in a 256 KiB store", len(stored))
	}
	es, _ := s.EndpointStats("$upstream")
	if es.Queued != int64(len(stored)) || es.Dropped[ReasonSizeLimit] != 0 {
		t.Fatalf("stats %+v, want %d queued and nothing dropped", es, len(stored))
	}
	// Freeing space lets appends through again.
	if err := s.Ack("$upstream", stored[:len(stored)/2]...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, []Target{up(0)}, payload, Meta{}); err != nil {
		t.Fatalf("append after ack: %v", err)
	}
	// A message that could never fit says so.
	_, err := s.Append(ctx, []Target{up(0)}, make([]byte, 300<<10), Meta{})
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "can never fit") {
		t.Fatalf("huge append: %v", err)
	}
}

func TestTwinCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Twin("filter"); ok || err != nil {
		t.Fatalf("Twin of unknown module: %v, %v", ok, err)
	}
	if err := s.PutTwin("filter", []byte(`{"TemperatureThreshold":25}`), []byte(`{}`), 3, 1); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.QueueReportedPatch("filter", []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.QueueReportedPatch("other", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openT(t, path, testOptions(nil))
	tw, ok, err := s.Twin("filter")
	if err != nil || !ok {
		t.Fatalf("Twin after reopen: %v %v", ok, err)
	}
	if string(tw.Desired) != `{"TemperatureThreshold":25}` || tw.DesiredVersion != 3 || tw.ReportedVersion != 1 {
		t.Fatalf("twin = %+v", tw)
	}
	ps, err := s.ReportedPatches("filter")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, string(p.Patch))
	}
	if strings.Join(got, "") != `{"n":0}{"n":1}{"n":2}{"n":3}{"n":4}` {
		t.Fatalf("patches = %v", got)
	}
	if err := s.AckReportedPatch("filter", ps[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := s.AckReportedPatch("filter", ps[1].Seq); err != nil {
		t.Fatal(err)
	}
	ps, _ = s.ReportedPatches("filter")
	if len(ps) != 3 || string(ps[0].Patch) != `{"n":2}` {
		t.Fatalf("after acks patches = %+v", ps)
	}
	// Later patches keep increasing sequence numbers after acks.
	seq, _ := s.QueueReportedPatch("filter", []byte(`{"n":5}`))
	if seq <= ps[2].Seq {
		t.Fatalf("new patch seq %d not after %d", seq, ps[2].Seq)
	}
	if other, _ := s.ReportedPatches("other"); len(other) != 1 {
		t.Fatalf("other module's patches = %v", other)
	}
}

func TestVersionRefusal(t *testing.T) {
	t.Run("record", func(t *testing.T) {
		s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
		seq := appendT(t, s, "ok", up(0))
		s.checkpointNow() // the record is rewritten in bbolt below
		future, err := encMode.Marshal(map[string]any{"v": 3, "t": 1, "e": []map[string]any{{"n": "$upstream", "l": -1}}, "new": "field"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketQueues).Put(queueKey(s.eps["$upstream"].id, 0, seq), future)
		}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Read("$upstream", 10)
		want := "store: record version 3 is newer than this binary understands (1); upgrade tinyedge"
		if !errors.Is(err, ErrNewerVersion) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Read of a future record: %v, want %q", err, want)
		}
	})
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.db")
		s, err := Open(path, testOptions(nil))
		if err != nil {
			t.Fatal(err)
		}
		appendT(t, s, "kept", up(0))
		s.checkpointNow()
		future, _ := encMode.Marshal(formatRecord{V: formatVersion + 1})
		if err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyFormat, future)
		}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		_, err = Open(path, testOptions(nil))
		want := fmt.Sprintf("file format version %d is newer than this binary understands (%d); upgrade tinyedge", formatVersion+1, formatVersion)
		if !errors.Is(err, ErrNewerVersion) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Open of a future file: %v, want %q", err, want)
		}
		// A newer file is never moved aside.
		if matches, _ := filepath.Glob(path + ".corrupt-*"); len(matches) != 0 || fileSize(t, path) == 0 {
			t.Fatalf("future file was touched: %v", matches)
		}
	})
}

func TestGroupCommit(t *testing.T) {
	o := testOptions(nil)
	o.CommitDelay = 5 * time.Millisecond
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), o)
	before := s.commits.Load()
	const producers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Append(context.Background(), []Target{up(0)}, []byte(fmt.Sprint(p, "-", i)), Meta{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits := s.commits.Load() - before
	if commits*4 > producers*each {
		t.Fatalf("%d appends took %d commits, want at most a quarter", producers*each, commits)
	}
	t.Logf("%d appends in %d commits", producers*each, commits)
	if got := len(readT(t, s, "$upstream", 10000)); got != producers*each {
		t.Fatalf("read %d messages, want %d", got, producers*each)
	}
}

func TestAppendWaitsForRoomUntilContextDone(t *testing.T) {
	o := testOptions(nil)
	o.MaxPending = 1
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), o)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With a cancelled context, an Append either got into the queue and
	// committed, or reports the context error; never anything else.
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(ctx, []Target{up(0)}, []byte("x"), Meta{})
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Append: %v", err)
			}
		}()
	}
	wg.Wait()
}

func writeStore(t *testing.T, path string, n int) {
	t.Helper()
	s, err := Open(path, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		appendT(t, s, strings.Repeat("z", 500)+fmt.Sprint(i), up(0))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptFileRecovery(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			b := bytes.Repeat([]byte("not a database "), 5000)
			os.WriteFile(path, b, 0o600)
		}},
		{"truncated", func(t *testing.T, path string) {
			writeStore(t, path, 2000)
			if err := os.Truncate(path, fileSize(t, path)/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"tiny", func(t *testing.T, path string) {
			os.WriteFile(path, []byte("x"), 0o600)
		}},
		{"damaged page", func(t *testing.T, path string) {
			writeStore(t, path, 2000)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Overwrite pages 2.. with junk, leaving the meta pages valid.
			f.WriteAt(bytes.Repeat([]byte{0xA5}, 64<<10), 2*4096)
		}},
		{"damaged freelist", func(t *testing.T, path string) {
			// A clean close leaves bbolt's freelist in the file, and the
			// next Open reads it instead of walking the file.
			writeStore(t, path, 200)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var metas [2]boltMeta
			for i := range metas {
				p := make([]byte, 4096)
				f.ReadAt(p, int64(i)*4096)
				metas[i], _ = parseMeta(p)
			}
			m := metas[0]
			if metas[1].txid > m.txid {
				m = metas[1]
			}
			if m.freelist == noFreelist {
				t.Fatal("a clean close left no freelist")
			}
			f.WriteAt(bytes.Repeat([]byte{0x5A}, 4096), int64(m.freelist)*4096)
		}},
		{"garbage meta record", func(t *testing.T, path string) {
			writeStore(t, path, 1)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{0xff, 0x00, 0x13}) })
			db.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "s.db")
			tt.spoil(t, path)
			c := newClock(trustedT)
			s, err := Open(path, testOptions(c))
			var re *RecoveredError
			if !errors.As(err, &re) || s == nil {
				t.Fatalf("Open = %v, %v; want a store and a *RecoveredError", s, err)
			}
			defer s.Close()
			want := path + ".corrupt-20250601T120000Z"
			if re.Path != path || re.MovedTo != want || re.Cause == nil {
				t.Fatalf("RecoveredError = %+v, want moved to %s", re, want)
			}
			if _, err := os.Stat(want); err != nil {
				t.Fatalf("moved-aside file: %v", err)
			}
			t.Logf("%v", err)
			appendT(t, s, "fresh", up(0))
			if got := payloads(readT(t, s, "$upstream", 10)); got != "fresh" {
				t.Fatalf("fresh store read %q", got)
			}
		})
	}
}

func TestNotAStoreIsLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("someone-else")); return err })
	db.Close()
	if _, err := Open(path, testOptions(nil)); !errors.Is(err, ErrNotStore) {
		t.Fatalf("Open of a foreign bbolt file: %v, want ErrNotStore", err)
	}
}

func TestSecondOpenIsInUse(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the lock timeout")
	}
	path := filepath.Join(t.TempDir(), "s.db")
	openT(t, path, testOptions(nil))
	if _, err := Open(path, testOptions(nil)); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	if matches, _ := filepath.Glob(path + ".corrupt-*"); len(matches) != 0 {
		t.Fatalf("a busy file was moved aside: %v", matches)
	}
}

func TestLimitsPerArch(t *testing.T) {
	tests := []struct {
		arch    string
		max     int64
		want    int64
		wantErr string
	}{
		{"amd64", 0, 256 << 20, ""},
		{"arm64", 4 << 30, 4 << 30, ""},
		{"arm", 0, 128 << 20, ""},
		{"arm", 1 << 30, 1 << 30, ""},
		{"arm", 2 << 30, 0, "too large for 32-bit ARM"},
		{"amd64", 1000, 0, "below the minimum"},
	}
	for _, tt := range tests {
		o, err := (&Options{MaxSizeBytes: tt.max}).resolve(tt.arch)
		if tt.wantErr != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s %d: err %v, want %q", tt.arch, tt.max, err, tt.wantErr)
			}
			continue
		}
		if err != nil || o.MaxSizeBytes != tt.want {
			t.Errorf("%s %d: %d, %v; want %d", tt.arch, tt.max, o.MaxSizeBytes, err, tt.want)
		}
	}
}

func TestCompact(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "s.db"), filepath.Join(dir, "s.compact")
	s, err := Open(src, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	var keep uint64
	for i := range 3000 {
		seq := appendT(t, s, strings.Repeat("c", 300)+fmt.Sprint(i), up(0))
		if i == 2999 {
			keep = seq
		}
	}
	s.checkpointNow() // in bbolt, so that the acknowledgements free pages
	s.Ack("$upstream", seqs(readT(t, s, "$upstream", 2999))...)
	s.PutTwin("m", []byte("d"), nil, 1, 0)
	s.Close()
	if err := Compact(src, dst); err != nil {
		t.Fatal(err)
	}
	if a, b := fileSize(t, src), fileSize(t, dst); b >= a/2 {
		t.Fatalf("compacted %d -> %d bytes", a, b)
	}
	if err := Compact(src, dst); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Compact onto an existing file: %v", err)
	}
	s = openT(t, dst, testOptions(nil))
	items := readT(t, s, "$upstream", 10)
	if len(items) != 1 || items[0].Seq != keep {
		t.Fatalf("after compaction read %v", seqs(items))
	}
	if seq := appendT(t, s, "next", up(0)); seq != keep+1 {
		t.Fatalf("seq after compaction = %d, want %d", seq, keep+1)
	}
	if _, ok, _ := s.Twin("m"); !ok {
		t.Fatal("twin lost in compaction")
	}
}

func TestInvalidArguments(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
	ctx := context.Background()
	for _, targets := range [][]Target{nil, {{Endpoint: ""}}, {{Endpoint: "a"}, {Endpoint: "a"}}} {
		if _, err := s.Append(ctx, targets, nil, Meta{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Append(%v): %v, want ErrInvalid", targets, err)
		}
	}
	if _, err := s.Read("", 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Read(\"\"): %v", err)
	}
}

func TestBackgroundSweeper(t *testing.T) {
	c := newClock(trustedT)
	o := testOptions(c)
	o.SweepInterval = 5 * time.Millisecond
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), o)
	appendT(t, s, "x", Target{Endpoint: "a", TTL: time.Second})
	c.Add(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		es, err := s.EndpointStats("a")
		if err != nil {
			t.Fatal(err)
		}
		if es.Dropped[ReasonExpired] == 1 && es.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweeper did not remove the expired message: %+v", es)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, goleak.IgnoreCurrent())
}

// TestCommitTime: Stats counts the commits and the time they took, so an
// operator (and the endpoint's benchmark) can see what a producer waits:
// with the journal, its writes; without, bbolt's commits.
func TestCommitTime(t *testing.T) {
	for _, journal := range []bool{true, false} {
		t.Run(fmt.Sprint("journal=", journal), func(t *testing.T) {
			o := &Options{}
			if !journal {
				o.JournalBytes = -1
			}
			s := openT(t, filepath.Join(t.TempDir(), "s.db"), o)
			before, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				appendT(t, s, fmt.Sprint("m", i), Target{Endpoint: "q"})
			}
			after, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			commits, took := after.Commits-before.Commits, after.CommitTime-before.CommitTime
			jcommits, jtook := after.JournalCommits-before.JournalCommits, after.JournalTime-before.JournalTime
			if journal {
				if jcommits != 3 || jtook <= 0 {
					t.Errorf("3 appends one after the other made %d journal commits in %v, want 3", jcommits, jtook)
				}
				// The applier commits what the journal took, in one
				// transaction or more.
				if commits < 1 || commits > 3 || took <= 0 {
					t.Errorf("%d bbolt commits in %v after 3 journaled appends, want 1 to 3", commits, took)
				}
				return
			}
			if commits != 3 || took <= 0 {
				t.Errorf("3 appends one after the other made %d commits in %v, want 3", commits, took)
			}
			if jcommits != 0 || after.JournalError != nil {
				t.Errorf("without a journal: %d journal commits, journal error %v", jcommits, after.JournalError)
			}
		})
	}
}
