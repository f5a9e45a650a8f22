package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// TestAppendBatchKeepsOrder: a batch's entries commit in the order given,
// sharing commits, and a bad entry fails alone.
func TestAppendBatchKeepsOrder(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), &Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := s.commits.Load()
	var entries []Entry
	for i := range 100 {
		e := Entry{Targets: []Target{{Endpoint: "a"}}, Payload: fmt.Append(nil, i)}
		if i%10 == 0 {
			e.Targets = append(e.Targets, Target{Endpoint: "b"})
		}
		if i == 50 {
			e.Targets = nil // invalid
		}
		entries = append(entries, e)
	}
	seqs, errs := s.AppendBatch(context.Background(), entries)
	for i, err := range errs {
		if (err != nil) != (i == 50) {
			t.Fatalf("entry %d: %v", i, err)
		}
		if i > 0 && i != 50 && i != 51 && seqs[i] <= seqs[i-1] {
			t.Fatalf("seq of entry %d is %d, after %d", i, seqs[i], seqs[i-1])
		}
	}
	if c := s.commits.Load() - before; c > 2 {
		t.Errorf("%d commits for 100 messages handed over at once", c)
	}
	items, err := s.Read("a", 200)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 99 {
		t.Fatalf("read %d, want 99", len(items))
	}
	want := 0
	for _, it := range items {
		if want == 50 {
			want++
		}
		if string(it.Payload) != fmt.Sprint(want) {
			t.Fatalf("read %s, want %d", it.Payload, want)
		}
		want++
	}
}
