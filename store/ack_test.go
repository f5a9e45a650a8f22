package store

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// crashClose stops s as a process kill would after its last commit: the
// writer stops and the file is closed without the clean record, so the
// next Open counts the queues.
func crashClose(t *testing.T, s *Store) {
	t.Helper()
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	close(s.quit)
	s.wg.Wait()
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
}

// queueKeys counts the keys of endpoint ep in the queues bucket, whether
// acknowledged or not.
func queueKeys(t *testing.T, s *Store, ep string) int {
	t.Helper()
	s.checkpointNow()
	s.mu.Lock()
	id := s.eps[ep].id
	s.mu.Unlock()
	n := 0
	s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQueues).Cursor()
		prefix := queueKey(id, 0, 0)[:4]
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n
}

// TestAckedInOrderNeverComesBack: keys acknowledged in order stay in the
// file until they are purged in bulk; neither Rewind, nor a crash, nor a
// clean restart returns them, and the counts leave them out.
func TestAckedInOrderNeverComesBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s := openT(t, path, testOptions(nil))
	var p0, p3 []uint64
	for i := range 20 {
		p0 = append(p0, appendT(t, s, fmt.Sprint("a", i), up(0)))
	}
	for i := range 5 {
		p3 = append(p3, appendT(t, s, fmt.Sprint("b", i), up(3)))
	}
	shared := appendT(t, s, "shared", up(3), Target{Endpoint: "other"})
	s.checkpointNow() // acknowledgements of messages in bbolt are what this tests
	if got := len(readT(t, s, "$upstream", 100)); got != 26 {
		t.Fatalf("read %d, want 26", got)
	}
	// In order: a0–a9 and b0, b1, shared (the prefix of priority 3 only
	// when b2–b4 are acknowledged, which they are not: shared is out of
	// order). Out of order: a15.
	if err := s.Ack("$upstream", append(append([]uint64{}, p0[:10]...), p3[0], p3[1], shared, p0[15])...); err != nil {
		t.Fatal(err)
	}
	want := "a10,a11,a12,a13,a14,a16,a17,a18,a19,b2,b3,b4"
	check := func(when string, keys int) {
		t.Helper()
		s.Rewind("$upstream")
		if got := payloads(readT(t, s, "$upstream", 100)); got != want {
			t.Errorf("%s: read %s, want %s", when, got, want)
		}
		es, err := s.EndpointStats("$upstream")
		if err != nil {
			t.Fatal(err)
		}
		if es.Depth[0] != 9 || es.Depth[3] != 3 || es.Queued != 12 || es.Checkpoint != shared {
			t.Errorf("%s: stats %+v, want depths 9 and 3, checkpoint %d", when, es, shared)
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		// 12 bodies in $upstream's queue, "shared" for "other".
		if st.Messages != 13 {
			t.Errorf("%s: %d messages, want 13", when, st.Messages)
		}
		if got := queueKeys(t, s, "$upstream"); got != keys {
			t.Errorf("%s: %d keys in the file, want %d", when, got, keys)
		}
		if got := payloads(readT(t, s, "other", 10)); got != "shared" {
			t.Errorf("%s: other read %s, want shared", when, got)
		}
		s.Rewind("other")
	}
	// a0–a9, b0, b1 wait for purge; a15 and shared are gone.
	check("acknowledged", 24)
	crashClose(t, s)
	s = openT(t, path, testOptions(nil))
	check("after a crash", 24)
	// An acknowledgement again, of a purged or waiting key, changes
	// nothing.
	if err := s.Ack("$upstream", p0[3], p0[15]); err != nil {
		t.Fatal(err)
	}
	check("acknowledged twice", 24)
	// A clean close deletes the acknowledged keys.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path, testOptions(nil))
	check("after a clean close", 12)
	// The rest, acknowledged in order, then a crash.
	if err := s.Ack("$upstream", p0[10:]...); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("$upstream", p3[2:]...); err != nil {
		t.Fatal(err)
	}
	want = ""
	crashClose(t, s)
	s = openT(t, path, testOptions(nil))
	s.Rewind("$upstream")
	if got := payloads(readT(t, s, "$upstream", 100)); got != "" {
		t.Errorf("everything acknowledged, read %s", got)
	}
	if es, _ := s.EndpointStats("$upstream"); es.Queued != 0 || es.OldestAge != 0 {
		t.Errorf("everything acknowledged: stats %+v", es)
	}
}

// TestAckPurgesInBulk: acknowledging in order writes the endpoint record
// and not the queue's pages, and the keys are deleted together once they
// add up to purgeBytes.
func TestAckPurgesInBulk(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
	payload := bytes.Repeat([]byte("p"), 1000)
	n := 2 * purgeBytes / 1000
	for range n {
		if _, err := s.Append(context.Background(), []Target{up(0)}, payload, Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	s.checkpointNow() // measure the acknowledgements' commits alone
	maxPages, acked, present, purged := 0, 0, n, 0
	for {
		items := readT(t, s, "$upstream", 10)
		if len(items) == 0 {
			break
		}
		st0 := s.db.Stats()
		if err := s.Ack("$upstream", seqs(items)...); err != nil {
			t.Fatal(err)
		}
		st1 := s.db.Stats()
		acked += len(items)
		pages := int(st1.TxStats.GetWrite() - st0.TxStats.GetWrite())
		switch keys := queueKeys(t, s, "$upstream"); keys {
		case present:
			maxPages = max(maxPages, pages)
		case n - acked:
			// This commit purged: it may write a few pages.
			t.Logf("purged %d keys after %d acknowledged, writing %d pages", acked-purged, acked, pages)
			if min := purgeBytes / 1100; acked-purged < min {
				t.Errorf("purged %d keys, want at least %d at once", acked-purged, min)
			}
			present, purged = keys, acked
		default:
			t.Fatalf("after %d acknowledged %d keys left, want %d (none purged) or %d (all)", acked, keys, present, n-acked)
		}
	}
	// bbolt counts its meta page as a write.
	if maxPages > 2 {
		t.Errorf("an acknowledgement in order wrote %d pages, want 2 (the root, holding the endpoint record, and the meta page)", maxPages)
	}
	if purged == 0 {
		t.Errorf("%d keys acknowledged in order were never purged", n)
	}
}

// TestAckedKeysMakeRoomFirst: acknowledged keys waiting for purge are
// free space: the size limit deletes them before it drops or refuses a
// message.
func TestAckedKeysMakeRoomFirst(t *testing.T) {
	for _, policy := range []Policy{DropOldest, Refuse} {
		t.Run(policy.String(), func(t *testing.T) {
			o := testOptions(nil)
			o.MaxSizeBytes = 512 << 10
			o.OnFull = policy
			s := openT(t, filepath.Join(t.TempDir(), "s.db"), o)
			payload := bytes.Repeat([]byte("x"), 1024)
			ctx := context.Background()
			// Under purgeBytes of acknowledged keys, most of the limit.
			for range 3 {
				var batch []uint64
				for range 70 {
					seq, err := s.Append(ctx, []Target{up(0)}, payload, Meta{})
					if err != nil {
						t.Fatal(err)
					}
					batch = append(batch, seq)
				}
				if err := s.Ack("$upstream", batch...); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 150 {
				if _, err := s.Append(ctx, []Target{up(0)}, payload, Meta{}); err != nil {
					t.Fatalf("append %d with acknowledged keys to purge: %v", i, err)
				}
			}
			es, err := s.EndpointStats("$upstream")
			if err != nil {
				t.Fatal(err)
			}
			if es.Queued != 150 || es.Dropped[ReasonSizeLimit] != 0 {
				t.Fatalf("stats %+v, want 150 queued and no drops", es)
			}
		})
	}
}

// TestSweepSkipsAcknowledged: acknowledged keys waiting for purge never
// count as expired.
func TestSweepSkipsAcknowledged(t *testing.T) {
	c := newClock(trustedT)
	o := testOptions(c)
	o.DefaultTTL = time.Minute
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), o)
	var all []uint64
	for i := range 6 {
		all = append(all, appendT(t, s, fmt.Sprint(i), up(0)))
	}
	if err := s.Ack("$upstream", all[:4]...); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Minute)
	if n, err := s.Sweep(); err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2", n, err)
	}
	es, err := s.EndpointStats("$upstream")
	if err != nil {
		t.Fatal(err)
	}
	if es.Queued != 0 || es.Dropped[ReasonExpired] != 2 {
		t.Fatalf("stats %+v, want nothing queued and 2 expired", es)
	}
}

// TestConvertV2: a format 2 file (the same layout without acknowledged
// prefixes) opens as format 3 with everything in it.
func TestConvertV2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s := openT(t, path, testOptions(nil))
	var all []uint64
	for i := range 5 {
		all = append(all, appendT(t, s, fmt.Sprint(i), up(0)))
	}
	appendT(t, s, "shared", up(1), Target{Endpoint: "other"})
	if err := s.Ack("$upstream", all[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := encMode.Marshal(formatRecord{V: 2})
	if err := db.Update(func(tx *bolt.Tx) error {
		// A format 2 file has no acknowledged prefixes.
		if err := tx.Bucket(bucketEndpoints).ForEach(func(k, v []byte) error {
			var r endpointRecord
			if err := decodeRecord(v, &r); err != nil || len(r.Acked) != 0 {
				return fmt.Errorf("endpoint %s: %+v, %v; want no acknowledged prefixes", k, r, err)
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyFormat, v2)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = openT(t, path, testOptions(nil))
	s.db.View(func(tx *bolt.Tx) error {
		var f formatRecord
		decMode.Unmarshal(tx.Bucket(bucketMeta).Get(keyFormat), &f)
		if f.V != formatVersion {
			t.Errorf("format after Open = %d, want %d", f.V, formatVersion)
		}
		return nil
	})
	if got := payloads(readT(t, s, "$upstream", 10)); got != "0,2,3,4,shared" {
		t.Errorf("read %s", got)
	}
	if err := s.Ack("$upstream", all[0], all[2]); err != nil {
		t.Fatal(err)
	}
	crashClose(t, s)
	s = openT(t, path, testOptions(nil))
	if got := payloads(readT(t, s, "$upstream", 10)); got != "3,4,shared" {
		t.Errorf("after acknowledging and a crash, read %s", got)
	}
}

// TestAckHidesAtOnce: once Ack returns, Read passes the messages over,
// though the applier may not have applied the acknowledgement yet: one
// of a message never read, in memory or in bbolt, and one that comes
// after a Rewind (a late acknowledgement of a connection that was lost).
func TestAckHidesAtOnce(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "s.db"), testOptions(nil))
	var seq []uint64
	for i := range 6 {
		seq = append(seq, appendT(t, s, fmt.Sprint("m", i), up(0)))
	}
	for round, where := range []string{"in memory", "in bbolt"} {
		if round == 1 {
			s.checkpointNow()
		}
		if err := s.Ack("$upstream", seq[3*round+1]); err != nil {
			t.Fatal(err)
		}
		want := map[int]string{0: "m0,m2,m3,m4,m5", 1: "m0,m3,m5"}[round]
		if got := payloads(readT(t, s, "$upstream", 10)); got != want {
			t.Errorf("%s, acknowledged before it was read: read %s, want %s", where, got, want)
		}
		if err := s.Rewind("$upstream"); err != nil {
			t.Fatal(err)
		}
		if err := s.Ack("$upstream", seq[3*round+2]); err != nil {
			t.Fatal(err)
		}
		want = map[int]string{0: "m0,m3,m4,m5", 1: "m0,m3"}[round]
		if got := payloads(readT(t, s, "$upstream", 10)); got != want {
			t.Errorf("%s, acknowledged after a Rewind: read %s, want %s", where, got, want)
		}
		if err := s.Rewind("$upstream"); err != nil {
			t.Fatal(err)
		}
	}
}
