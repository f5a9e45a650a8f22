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

func TestFormatIDsCounts(t *testing.T) {
	h := New(Options{})
	// Start just before a carry through every counter digit.
	b := h.formatIDs(1<<64 - 3)
	want := []string{"fffffffffffd", "fffffffffffe", "ffffffffffff", "000000000000", "000000000001"}
	for i, w := range want {
		id := b.ids[i*idLen : (i+1)*idLen]
		if got := id[24:]; got != w || id[19:23] != map[bool]string{true: "ffff", false: "0000"}[i < 3] {
			t.Errorf("id %d = %s, want counter ...%s", i, id, w)
		}
		if id[:18] != h.idPrefix[0:8]+"-"+h.idPrefix[8:12]+"-"+h.idPrefix[12:16] {
			t.Errorf("id %d = %s lost the prefix %s", i, id, h.idPrefix)
		}
	}
}
