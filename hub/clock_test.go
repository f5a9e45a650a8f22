package hub

import (
	"testing"
	"time"
)

func TestClockFollowsWallClock(t *testing.T) {
	c := newClock()
	for range 1000 {
		got, want := c.now(), time.Now()
		if d := want.Sub(got); d < 0 || d > 50*time.Millisecond {
			t.Fatalf("clock reads %v, wall clock %v", got, want)
		}
	}
	// A base older than a second is refreshed from the wall clock.
	old := time.Now().Add(-2 * time.Second).Round(0) // no monotonic reading
	c.base.Store(&old)
	if d := time.Since(c.now()); d < 0 || d > 50*time.Millisecond {
		t.Errorf("a stale base was not refreshed: off by %v", d)
	}
}
