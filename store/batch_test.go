package store

import (
	"context"
	"errors"
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

// TestStartAppendBatchPipelines: batches started one after the other
// without waiting keep their order in the queue, may share commits, and
// what was started before Close is committed by it.
func TestStartAppendBatchPipelines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path, &Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var pending []*PendingBatch
	n := 0
	for range 50 {
		var entries []Entry
		for range 7 {
			entries = append(entries, Entry{Targets: []Target{{Endpoint: "a"}}, Payload: fmt.Append(nil, n)})
			n++
		}
		pending = append(pending, s.StartAppendBatch(context.Background(), entries))
	}
	last := pending[len(pending)-1]
	for _, p := range pending[:len(pending)-1] {
		_, errs := p.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, errs := last.Wait(); errs[6] != nil {
		t.Fatalf("last batch, started before Close: %v", errs[6])
	}
	{
		p := s.StartAppendBatch(context.Background(), []Entry{{Targets: []Target{{Endpoint: "a"}}, Payload: []byte("x")}})
		if _, errs := p.Wait(); !errors.Is(errs[0], ErrClosed) {
			t.Fatalf("append after Close: %v, want ErrClosed", errs[0])
		}
	}

	s, err = Open(path, &Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	items, err := s.Read("a", 2*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != n {
		t.Fatalf("read %d, want %d", len(items), n)
	}
	for i, it := range items {
		if string(it.Payload) != fmt.Sprint(i) {
			t.Fatalf("item %d is %s", i, it.Payload)
		}
	}
}
