package store

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestPurgeQueue deletes acknowledged prefixes from queues that span
// many leaf pages, beside other endpoints' and priorities' keys, after
// deletes earlier in the same transaction (as a sweep or an earlier purge
// makes) have emptied leaves in the middle. Exactly the keys of the
// purged queue up to the sequence number must go.
func TestPurgeQueue(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 40 {
		db, err := openBolt(filepath.Join(t.TempDir(), "q.db"), true, false)
		if err != nil {
			t.Fatal(err)
		}
		const n = 600
		// The model: every key present, by queue.
		type queue struct{ id, prio uint32 }
		present := map[queue]map[uint64]bool{}
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketQueues)
			if err != nil {
				return err
			}
			for id := uint32(1); id <= 3; id++ {
				for prio := uint32(0); prio < 2; prio++ {
					q := queue{id, prio}
					present[q] = map[uint64]bool{}
					for seq := uint64(1); seq <= n; seq++ {
						if err := b.Put(queueKey(id, prio, seq), make([]byte, rng.IntN(300))); err != nil {
							return err
						}
						present[q][seq] = true
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		q := queue{uint32(1 + rng.IntN(3)), uint32(rng.IntN(2))}
		check := func(when string, tx *bolt.Tx) {
			t.Helper()
			got := map[queue]int{}
			c := tx.Bucket(bucketQueues).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				id, prio, seq, _ := parseQueueKey(k)
				if !present[queue{id, prio}][seq] {
					t.Fatalf("round %d %s: key %d/%d/%d is still there", round, when, id, prio, seq)
				}
				got[queue{id, prio}]++
			}
			for qq, seqs := range present {
				if got[qq] != len(seqs) {
					t.Fatalf("round %d %s: queue %v has %d keys, want %d", round, when, qq, got[qq], len(seqs))
				}
			}
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketQueues)
			// Empty a run of keys in the middle, whole leaves of it.
			// The first round is the case that stops the walk back
			// at an emptied leaf, with keys before it to delete.
			from, run := uint64(1+rng.IntN(n)), uint64(rng.IntN(200))
			if round == 0 {
				from, run = 100, 200
			}
			for seq := from; seq < from+run && seq <= n; seq++ {
				if err := b.Delete(queueKey(q.id, q.prio, seq)); err != nil {
					return err
				}
				delete(present[q], seq)
			}
			// Purge once or twice, as two acknowledgements in one
			// transaction would.
			upTo := uint64(rng.IntN(n + 10))
			if round == 0 {
				upTo = 500
			}
			for range 1 + rng.IntN(2) {
				if err := purgeQueue(b.Cursor(), q.id, q.prio, upTo); err != nil {
					return err
				}
				for seq := range present[q] {
					if seq <= upTo {
						delete(present[q], seq)
					}
				}
				check("in the transaction", tx)
				upTo += uint64(rng.IntN(100))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.View(func(tx *bolt.Tx) error {
			check("after the commit", tx)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}
