package edge

import (
	"context"
	"testing"
	"time"
)

// TestBudget: take waits while the bytes would exceed the limit, lets
// one oversized take in when nothing is held, wakes when bytes are given
// back, and gives up when its context ends.
func TestBudget(t *testing.T) {
	b := budget{limit: 100, room: make(chan struct{}, 1)}
	ctx := context.Background()
	if !b.take(ctx, 300) {
		t.Fatal("an oversized take with nothing held waited")
	}
	got := make(chan bool)
	go func() { got <- b.take(ctx, 10) }()
	select {
	case <-got:
		t.Fatal("take did not wait for room")
	case <-time.After(20 * time.Millisecond):
	}
	b.give(300)
	if !<-got {
		t.Fatal("take failed after room was given back")
	}
	if !b.take(ctx, 90) {
		t.Fatal("a take that fits failed")
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if b.take(short, 1) {
		t.Fatal("a take beyond the limit succeeded")
	}
	b.give(0)
	b.give(100)
	if b.used != 0 {
		t.Fatalf("used %d after everything was given back", b.used)
	}
}
