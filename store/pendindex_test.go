package store

import (
	"slices"
	"testing"
)

// TestFifo pushes and pops in rounds that make the queue compact its
// array and start it again, and checks it always holds what a slice would.
func TestFifo(t *testing.T) {
	var q fifo[int]
	var want []int
	next := 0
	for round := range 200 {
		for range round % 97 {
			q.push(next)
			want = append(want, next)
			next++
		}
		// Pop about two thirds of what is there.
		cut := 0
		if len(want) > 0 {
			cut = want[0] + (len(want)*2)/3
		}
		q.popWhile(func(v int) bool { return v < cut })
		for len(want) > 0 && want[0] < cut {
			want = want[1:]
		}
		if got := q.items(); !slices.Equal(got, want) {
			t.Fatalf("round %d: queue holds %v, want %v", round, got, want)
		}
	}
	q.popWhile(func(int) bool { return true })
	if len(q.items()) != 0 || q.head != 0 {
		t.Fatalf("emptied queue: items %v, head %d", q.items(), q.head)
	}
}
