package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// journalOps prepares appends with s's options and gives them the
// sequence numbers from first on.
func journalOps(t testing.TB, s *Store, first uint64, payloads ...string) []*op {
	t.Helper()
	var ops []*op
	for i, p := range payloads {
		targets := []Target{up(0)}
		if i%3 == 2 {
			targets = append(targets, Target{Endpoint: "mod/inputs/in1", Priority: 4, TTL: time.Hour})
		}
		a, err := s.prepareAppend(targets, []byte(p), Meta{Properties: []byte(fmt.Sprint("n=", i))})
		if err != nil {
			t.Fatal(err)
		}
		a.seq = first + uint64(i)
		ops = append(ops, &op{name: "append", app: a})
	}
	return ops
}

// frames encodes batches as consecutive frames from number 1.
func frames(batches ...[]*op) []byte {
	var b []byte
	for i, batch := range batches {
		b = encodeFrame(b, uint64(i+1), batch, nil)
	}
	return b
}

func TestReadJournal(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
	f1 := journalOps(t, s, 1, "a", "b", "c")
	f2 := journalOps(t, s, 4, "d")
	f3 := journalOps(t, s, 5, "e", "f")
	all := frames(f1, f2, f3)
	len12 := len(frames(f1, f2))
	pad := func(b []byte) []byte { return append(b, make([]byte, 4096)...) }
	gap := append(frames(f1, f2), encodeFrame(nil, 7, f3, nil)...) // frame 3 missing
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, ""},
		{"zeros", make([]byte, 1<<12), ""},
		{"three frames", pad(all), "abcdef"},
		{"three frames to the end", all, "abcdef"},
		{"torn last frame", all[:len(all)-1], "abcd"},
		{"flipped byte in the last frame", func() []byte { b := pad(bytes.Clone(all)); b[len12+40] ^= 1; return b }(), "abcd"},
		{"number gap", pad(gap), "abcd"},
		{"older frame after a wrap", pad(append(encodeFrame(nil, 9, f3, nil), frames(f1, f2)...)), "ef"},
		{"frame longer than the file", all[:frameHeaderLen+3], ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			entries, _, _, end, err := readJournal(bytes.NewReader(c.data), int64(len(c.data)))
			if err != nil {
				t.Fatal(err)
			}
			var got string
			for _, e := range entries {
				rec, err := decodeMessage(e.app.rec)
				if err != nil {
					t.Fatal(err)
				}
				got += string(rec.Payload)
				if e.seq != uint64(rec.Payload[0]-'a'+1) && c.name != "older frame after a wrap" {
					t.Errorf("%q has seq %d", rec.Payload, e.seq)
				}
			}
			if got != c.want {
				t.Fatalf("read %q, want %q", got, c.want)
			}
			if c.want == "abcdef" && end != int64(len(all)) {
				t.Errorf("end at %d, want %d", end, len(all))
			}
		})
	}
	// Entries come back as they were written.
	entries, _, _, _, _ := readJournal(bytes.NewReader(all), int64(len(all)))
	want := append(append(append([]*op(nil), f1...), f2...), f3...)
	for i, e := range entries {
		w := want[i].app
		if e.seq != w.seq || !bytes.Equal(e.app.rec, w.rec) || e.app.trusted != w.trusted || e.app.est != w.est || fmt.Sprint(e.app.targets) != fmt.Sprint(w.targets) {
			t.Errorf("entry %d = %+v, want %+v", i, *e.app, *w)
		}
	}
}

// FuzzReadJournal: no input makes the reader fail or panic, and what it
// returns has a target and a record per entry, in sequence order.
func FuzzReadJournal(f *testing.F) {
	s, err := Open(filepath.Join(f.TempDir(), "s.db"), testOptions(nil))
	if err != nil {
		f.Fatal(err)
	}
	all := frames(journalOps(f, s, 1, "a", "b", "c"), journalOps(f, s, 4, "d"))
	s.Close()
	f.Add(all)
	f.Add(all[:len(all)-2])
	f.Add(append(encodeFrame(nil, 1, nil, nil), all...))
	f.Add(encodeFrame(nil, 1, nil, []*op{{ack: &ackReq{endpoint: "$upstream", seqs: []uint64{1, 5, 1 << 40}}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Make the header's CRC right, so the fuzzer gets past it.
		if h, ok := parseFrameHeader(data); ok && int(h.length) <= len(data)-frameHeaderLen {
			crc := crc32cOf(data[:28], data[frameHeaderLen:frameHeaderLen+int(h.length)])
			binary.BigEndian.PutUint32(data[28:], crc)
		}
		entries, acks, _, end, err := readJournal(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if end > int64(len(data)) {
			t.Fatalf("end %d past %d bytes", end, len(data))
		}
		for i, e := range entries {
			if len(e.app.targets) == 0 || e.app.seq != e.seq {
				t.Fatalf("entry %d: %+v", i, *e.app)
			}
		}
		for i, a := range acks {
			if checkEndpoint("ack", a.endpoint) != nil {
				t.Fatalf("acknowledgement %d of %q", i, a.endpoint)
			}
		}
	})
}

// TestJournalReplay: appends answered from the journal and not committed
// to bbolt when the process died are committed by the next Open, in
// order, once; frames bbolt already has are skipped.
func TestJournalReplay(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	o := testOptions(nil)
	o.JournalBytes = MinJournalBytes
	s := openT(t, path, o)
	appendT(t, s, "0", up(0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What a writer killed between its journal write and the applier's
	// commit leaves behind: frames after bbolt's last sequence number,
	// following the frames bbolt has.
	other := openT(t, filepath.Join(dir, "other.db"), o)
	j, entries, _, err := openJournal(path, o.JournalBytes, true)
	if err != nil || len(entries) != 1 {
		t.Fatalf("journal: %d entries, %v; want the 1 appended", len(entries), err)
	}
	// Seqs 2–4, 5, and 8–9: 6 and 7 were a batch that went to bbolt
	// (not journaled) and never committed.
	for _, b := range []struct {
		first    uint64
		payloads []string
	}{{2, []string{"1", "2", "3"}}, {5, []string{"4"}}, {8, []string{"5", "6"}}} {
		if err := j.write(journalOps(t, other, b.first, b.payloads...), nil, false); err != nil {
			t.Fatal(err)
		}
	}
	// "2" (seq 3) was acknowledged, and "x" (seq 10) both appended and
	// acknowledged, before the crash: neither comes back.
	x := journalOps(t, other, 10, "x")
	if err := j.write(x, []*op{{ack: &ackReq{endpoint: "$upstream", seqs: []uint64{3}}}}, false); err != nil {
		t.Fatal(err)
	}
	if err := j.write(nil, []*op{{ack: &ackReq{endpoint: "$upstream", seqs: []uint64{10}}}}, false); err != nil {
		t.Fatal(err)
	}
	j.close()

	s = openT(t, path, o)
	items := readT(t, s, "$upstream", 100)
	if got := payloads(items); got != "0,1,3,4,5,6" {
		t.Fatalf("after replay read %q, want 0 to 6 but 2", got)
	}
	if got := payloads(readT(t, s, "mod/inputs/in1", 100)); got != "3" {
		t.Fatalf("after replay mod/inputs/in1 read %q, want 3", got)
	}
	if st, err := s.Stats(); err != nil || st.Messages != 6 {
		t.Fatalf("Stats: %d messages, %v; want 6", st.Messages, err)
	}
	if seq := appendT(t, s, "7", up(0)); seq != 11 {
		t.Fatalf("the next append got seq %d after %v", seq, seqs(items))
	}
	if err := s.Ack("$upstream", seqs(items)...); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened: nothing comes back twice, acknowledged or not.
	s = openT(t, path, o)
	if got := payloads(readT(t, s, "$upstream", 100)); got != "7" {
		t.Fatalf("reopened, read %q, want only 7", got)
	}
	if got := payloads(readT(t, s, "mod/inputs/in1", 100)); got != "3" {
		t.Fatalf("reopened, mod/inputs/in1 read %q, want 3", got)
	}
}

// TestJournalWraps: with a journal much smaller than what goes through
// it, every message is stored once, in order, across closes and opens.
func TestJournalWraps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	o := testOptions(nil)
	o.JournalBytes = MinJournalBytes
	var next, acked int
	for round := range 3 {
		s := openT(t, path, o)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for p := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 300 {
					ep := fmt.Sprintf("p%d", p)
					if _, err := s.Append(context.Background(), []Target{{Endpoint: ep}}, bytes.Repeat([]byte{byte(i)}, 200), Meta{Properties: []byte(fmt.Sprint(round*300 + i))}); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatal(errs[0])
		}
		next += 300
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.JournalCommits == 0 {
			t.Fatalf("round %d: %d journal commits", round, st.JournalCommits)
		}
		for p := range 4 {
			ep := fmt.Sprintf("p%d", p)
			items := readT(t, s, ep, 10000)
			if len(items) != next-acked {
				t.Fatalf("round %d: %s has %d messages, want %d", round, ep, len(items), next-acked)
			}
			for i, it := range items {
				if want := fmt.Sprint(acked + i); string(it.Meta.Properties) != want {
					t.Fatalf("round %d: %s message %d is %s, want %s", round, ep, i, it.Meta.Properties, want)
				}
			}
			// Acknowledge the first half.
			if err := s.Ack(ep, seqs(items[:(next-acked)/2])...); err != nil {
				t.Fatal(err)
			}
		}
		acked += (next - acked) / 2
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadBeforeCommit: messages answered from the journal are readable
// before bbolt commits them, for a known endpoint and for a new one, and
// once committed they are neither lost nor read twice.
func TestReadBeforeCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s := openT(t, path, testOptions(nil))
	appendT(t, s, "a", Target{Endpoint: "q"})
	if got := payloads(readT(t, s, "q", 10)); got != "a" {
		t.Fatalf("read %q, want a", got)
	}
	// Hold bbolt's writer lock: the applier cannot commit.
	holding, release, released := make(chan struct{}), make(chan struct{}), make(chan error)
	go func() {
		released <- s.db.Update(func(*bolt.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	commits := s.commits.Load()
	appendT(t, s, "b", Target{Endpoint: "q"})
	appendT(t, s, "c", Target{Endpoint: "q"}, Target{Endpoint: "new", Priority: 2})
	if got := payloads(readT(t, s, "q", 1)); got != "b" {
		t.Fatalf("before the commit read %q, want b", got)
	}
	if got := payloads(readT(t, s, "q", 10)); got != "c" {
		t.Fatalf("before the commit read %q, want c", got)
	}
	if got := payloads(readT(t, s, "new", 10)); got != "c" {
		t.Fatalf("before the commit, a new endpoint read %q, want c", got)
	}
	if s.commits.Load() != commits {
		t.Fatal("bbolt committed while its writer lock was held")
	}
	close(release)
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	s.checkpointNow()
	if got := payloads(readT(t, s, "q", 10)); got != "" {
		t.Fatalf("after the commit read %q again", got)
	}
	items := func(ep string) []Item {
		s.Rewind(ep)
		return readT(t, s, ep, 10)
	}
	if got := payloads(items("new")); got != "c" {
		t.Fatalf("after the commit and Rewind, new read %q, want c", got)
	}
	if err := s.Ack("q", seqs(items("q"))[:2]...); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, testOptions(nil))
	if got := payloads(readT(t, s, "q", 10)); got != "c" {
		t.Fatalf("reopened, q read %q, want c", got)
	}
	if got := payloads(readT(t, s, "new", 10)); got != "c" {
		t.Fatalf("reopened, new read %q, want c", got)
	}
}

// TestHotAckNeverReachesBbolt: messages acknowledged before a checkpoint
// are never written to bbolt, and do not come back after a restart.
func TestHotAckNeverReachesBbolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s := openT(t, path, testOptions(nil))
	before := s.commits.Load()
	for i := range 100 {
		appendT(t, s, fmt.Sprint(i), Target{Endpoint: "q"})
	}
	items := readT(t, s, "q", 1000)
	if len(items) != 100 {
		t.Fatalf("read %d, want 100", len(items))
	}
	if err := s.Ack("q", seqs(items)...); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var keys, msgs int
	s.db.View(func(tx *bolt.Tx) error {
		keys = tx.Bucket(bucketQueues).Stats().KeyN
		msgs = tx.Bucket(bucketMessages).Stats().KeyN
		return nil
	})
	if keys != 0 || msgs != 0 || st.Messages != 0 {
		t.Fatalf("after the acknowledgements bbolt has %d queue keys and %d messages (Stats: %d); want none", keys, msgs, st.Messages)
	}
	if n := s.commits.Load() - before; n > 2 {
		t.Errorf("%d bbolt commits for 100 appends acknowledged in memory, want at most 2 (checkpoints)", n)
	}
	if st.JournalCommits < 100 {
		t.Errorf("%d journal commits, want one per append", st.JournalCommits)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, testOptions(nil))
	if got := readT(t, s, "q", 1000); len(got) != 0 {
		t.Fatalf("reopened, read %d acknowledged messages again", len(got))
	}
	// The endpoint is known, with what it acknowledged, as if its
	// messages had been in bbolt.
	if es, err := s.EndpointStats("q"); err != nil || es.Checkpoint != items[len(items)-1].Seq || es.Queued != 0 {
		t.Fatalf("reopened, EndpointStats(q) = %+v, %v; want checkpoint %d and nothing queued", es, err, items[len(items)-1].Seq)
	}
	if st, err := s.Stats(); err != nil || len(st.Endpoints) != 1 || st.Endpoints[0].Endpoint != "q" {
		t.Fatalf("reopened, Stats endpoints %+v, %v; want q", st.Endpoints, err)
	}
	if seq := appendT(t, s, "next", Target{Endpoint: "q"}); seq <= items[len(items)-1].Seq {
		t.Fatalf("reopened, the next append got seq %d, not after %d", seq, items[len(items)-1].Seq)
	}
}
