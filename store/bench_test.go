package store

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Durable append benchmarks. They use b.TempDir, which must be on a real
// disk (not tmpfs) for the fsync figures to mean anything. Run with
//
//	go test -run '^$' -bench . ./store/
//
// The baseline, one bbolt Update (and fsync) per message, runs first in
// the same process; the store benchmarks report their rate as a multiple
// of it (x_baseline).

var baselineRate float64

func payload256() []byte { return bytes.Repeat([]byte("m"), 256) }

func BenchmarkDurableAppend(b *testing.B) {
	b.Run("baseline_update_per_message", func(b *testing.B) {
		db, err := bolt.Open(filepath.Join(b.TempDir(), "base.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		p := payload256()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if err := db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("q"))
				if err != nil {
					return err
				}
				seq, _ := bk.NextSequence()
				return bk.Put(u64(seq), p)
			}); err != nil {
				b.Fatal(err)
			}
		}
		baselineRate = float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(baselineRate, "msg/s")
	})
	for _, producers := range []int{1, 64} {
		b.Run("producers="+strconv.Itoa(producers), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "s.db"), &Options{SweepInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			st0 := s.db.Stats()
			rate, commits := appendParallel(b, s, producers, payload256())
			st1 := s.db.Stats()
			b.ReportMetric(rate, "msg/s")
			b.ReportMetric(float64(b.N)/float64(commits), "msg/commit")
			b.ReportMetric(float64(st1.TxStats.GetWrite()-st0.TxStats.GetWrite())/float64(commits), "pages/commit")
			if baselineRate > 0 {
				b.ReportMetric(rate/baselineRate, "x_baseline")
			}
		})
	}
}

// appendParallel appends b.N messages from producers goroutines and
// returns the rate and the number of commits.
func appendParallel(b *testing.B, s *Store, producers int, p []byte) (float64, uint64) {
	before := s.commits.Load()
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range producers {
		n := b.N / producers
		if i < b.N%producers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if _, err := s.Append(context.Background(), []Target{{Endpoint: "$upstream"}}, p, Meta{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	return float64(b.N) / el.Seconds(), s.commits.Load() - before
}

// writeBytes returns this process's write_bytes from /proc/self/io: bytes
// it caused to be written to storage.
func writeBytes() (int64, bool) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// BenchmarkBytesWrittenPerMessage measures disk writes per message at
// steady state: 64 producers append while a consumer reads and
// acknowledges, so every message is written, then deleted.
func BenchmarkBytesWrittenPerMessage(b *testing.B) {
	for _, size := range []int{256, 1024} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			if _, ok := writeBytes(); !ok {
				b.Skip("no /proc/self/io write_bytes here")
			}
			s, err := Open(filepath.Join(b.TempDir(), "s.db"), &Options{SweepInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			p := bytes.Repeat([]byte("w"), size)
			// Warm up: grow the file and its tree to a steady shape.
			for range 2000 {
				s.Append(context.Background(), []Target{{Endpoint: "$upstream"}}, p, Meta{})
			}
			drain(s)
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if drain(s) == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
			w0, _ := writeBytes()
			st0 := s.db.Stats()
			c0 := s.commits.Load()
			rate, _ := appendParallel(b, s, 64, p)
			close(stop)
			<-done
			drain(s)
			w1, _ := writeBytes()
			st1 := s.db.Stats()
			commits := s.commits.Load() - c0
			b.ReportMetric(float64(b.N)/float64(commits), "msg/commit")
			b.ReportMetric(float64(st1.TxStats.GetWrite()-st0.TxStats.GetWrite())/float64(commits), "pages/commit")
			per := float64(w1-w0) / float64(b.N)
			b.ReportMetric(per, "B/msg")
			b.ReportMetric(per/float64(size), "x_size")
			b.ReportMetric(rate, "msg/s")
		})
	}
}

// drain reads and acknowledges what is queued, in batches of 64 like the
// upstream pump, and returns how many it acknowledged.
func drain(s *Store) int {
	total := 0
	for {
		items, err := s.Read("$upstream", 64)
		if err != nil || len(items) == 0 {
			return total
		}
		seqs := make([]uint64, len(items))
		for i, it := range items {
			seqs[i] = it.Seq
		}
		if s.Ack("$upstream", seqs...) != nil {
			return total
		}
		total += len(items)
	}
}
