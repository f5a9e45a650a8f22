package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testdata/v1.db was written by tinyedge with format 1 (one bucket per
// endpoint and priority, every body in messages; commit 633d4cb), on a
// clock that was untrusted for the first message and then trusted at
// trustedT, a minute before it was closed:
//
//	seq 1  "untrusted"  $upstream p0, TTL 1h, on the untrusted clock
//	seq 2–7 "a0"–"a5"   $upstream p(i%3), no TTL; a0 and a3 acknowledged
//	seq 8  "shared"     $upstream p5 and mod/inputs/in1 p10
//	seq 9  "shared3"    $upstream p5, mod/inputs/in1 p0 and x p0
//	seq 10 "expires"    x, TTL 1s, swept: x has one expired drop
//	twin "filter" desired {"d":1} v3, reported {"r":2} v4; reported
//	patches 1–3 of filter, 1 acknowledged.
func TestConvertV1(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.db")
	if err := os.WriteFile(path, fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	// A conversion cut short by a crash leaves its copy behind; the next
	// Open starts again from the format 1 file.
	if err := os.WriteFile(path+".v2", []byte("half a copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClock(trustedT.Add(30 * time.Minute))
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatalf("Open of a format 1 file: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := os.Stat(path + ".v2"); !os.IsNotExist(err) {
		t.Errorf("conversion left %s.v2 behind: %v", path, err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		var f formatRecord
		decMode.Unmarshal(tx.Bucket(bucketMeta).Get(keyFormat), &f)
		if f.V != formatVersion {
			t.Errorf("format after conversion = %d, want %d", f.V, formatVersion)
		}
		return nil
	})

	check := func(when string) {
		t.Helper()
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages != 7 {
			t.Errorf("%s: %d messages, want 7", when, st.Messages)
		}
		want := map[string]EndpointStats{
			"$upstream":      {Depth: [NumPriorities]int64{1, 2, 2, 0, 0, 2}, Queued: 7, Checkpoint: 5, OldestAge: 30 * time.Minute},
			"mod/inputs/in1": {Depth: [NumPriorities]int64{0: 1, 10: 1}, Queued: 2, OldestAge: 30 * time.Minute},
			"x":              {Depth: [NumPriorities]int64{1}, Queued: 1, OldestAge: 30 * time.Minute, Dropped: map[DropReason]uint64{ReasonExpired: 1}},
		}
		if len(st.Endpoints) != len(want) {
			t.Fatalf("%s: endpoints %+v", when, st.Endpoints)
		}
		for _, got := range st.Endpoints {
			w := want[got.Endpoint]
			w.Endpoint = got.Endpoint
			w.Dropped = map[DropReason]uint64{ReasonExpired: w.Dropped[ReasonExpired], ReasonSizeLimit: 0}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("%s: stats\n got %+v\nwant %+v", when, got, w)
			}
		}
		s.Rewind("$upstream")
		s.Rewind("mod/inputs/in1")
		if got, want := payloads(readT(t, s, "$upstream", 100)), "untrusted,a1,a4,a2,a5,shared,shared3"; got != want {
			t.Errorf("%s: $upstream read %s, want %s", when, got, want)
		}
		items := readT(t, s, "mod/inputs/in1", 100)
		if got, want := fmt.Sprintf("%s %v %d", payloads(items), seqs(items), items[1].Priority), "shared3,shared [9 8] 10"; got != want {
			t.Errorf("%s: mod/inputs/in1 read %s, want %s", when, got, want)
		}
		if string(items[0].Meta.Properties) != "props-shared3" || items[0].Meta.TTL != -1 {
			t.Errorf("%s: meta %+v", when, items[0].Meta)
		}
		tw, ok, err := s.Twin("filter")
		if !ok || err != nil || string(tw.Desired) != `{"d":1}` || string(tw.Reported) != `{"r":2}` || tw.DesiredVersion != 3 || tw.ReportedVersion != 4 {
			t.Errorf("%s: twin %+v %v %v", when, tw, ok, err)
		}
		ps, err := s.ReportedPatches("filter")
		if err != nil || len(ps) != 2 || ps[0].Seq != 2 || string(ps[1].Patch) != `{"p":2}` {
			t.Errorf("%s: patches %+v %v", when, ps, err)
		}
	}
	check("converted")
	// The untrusted message ages from the trust mark, which survived.
	c.Add(31 * time.Minute)
	s.Rewind("$upstream")
	if got := payloads(readT(t, s, "$upstream", 1)); got != "a1" {
		t.Errorf("after the TTL of the untrusted message, read %q", got)
	}
	c.Set(trustedT.Add(30 * time.Minute))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, testOptions(c))
	check("reopened")

	// Shared messages are released by their last endpoint; sequence
	// numbers and patch numbers continue.
	if err := s.Ack("mod/inputs/in1", 8, 9); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("$upstream", 8); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Stats(); st.Messages != 6 {
		t.Errorf("after acking shared everywhere: %d messages, want 6", st.Messages)
	}
	if seq := appendT(t, s, "new", up(0)); seq != 11 {
		t.Errorf("first seq after conversion = %d, want 11", seq)
	}
	if seq, err := s.QueueReportedPatch("filter", []byte(`{}`)); err != nil || seq != 4 {
		t.Errorf("patch seq after conversion = %d, %v; want 4", seq, err)
	}
}

func TestCleanCloseCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	o := testOptions(nil)
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		appendT(t, s, fmt.Sprint(i), up(uint32(i%2)))
	}
	appendT(t, s, "both", up(3), Target{Endpoint: "b"})
	wantStats := func(s *Store, when string) {
		t.Helper()
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages != 21 || len(st.Endpoints) != 2 || st.Endpoints[0].Depth != [NumPriorities]int64{10, 10, 0, 1} || st.Endpoints[1].Queued != 1 {
			t.Fatalf("%s: %+v", when, st)
		}
	}
	wantStats(s, "before close")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean close leaves the counts and bbolt's freelist in the file.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyClean) == nil {
			t.Error("no clean record after Close")
		}
		return nil
	})
	db.Close()
	s = openT(t, path, o)
	wantStats(s, "after a clean close")
	// Open removed the record: a crash now must not find stale counts.
	s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyClean) != nil {
			t.Error("clean record still there after Open")
		}
		return nil
	})
}

// TestConvertV1Damaged: a format 1 file with a record the conversion
// cannot read is moved aside like any damaged file, so the gateway does
// not fail to start on it at every boot.
func TestConvertV1Damaged(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.db")
	if err := os.WriteFile(path, fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueues).Bucket([]byte("x")).Put(v1KeyState, []byte{0xff, 0x13})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path, testOptions(newClock(trustedT)))
	var re *RecoveredError
	if !errors.As(err, &re) || s == nil {
		t.Fatalf("Open = %v, %v; want a fresh store and a *RecoveredError", s, err)
	}
	defer s.Close()
	if _, err := os.Stat(re.MovedTo); err != nil {
		t.Fatalf("moved-aside file: %v", err)
	}
	if _, err := os.Stat(path + ".v2"); !os.IsNotExist(err) {
		t.Errorf("failed conversion left %s.v2 behind: %v", path, err)
	}
	t.Log(err)
}
