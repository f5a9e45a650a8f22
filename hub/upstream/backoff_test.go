package upstream

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	r := retry{b: Backoff{}.withDefaults()}
	wantCap := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 60 * time.Second, 60 * time.Second}
	for i, c := range wantCap {
		d := r.next()
		if d < c/2 || d > c {
			t.Errorf("wait %d = %s, want within [%s, %s]", i, d, c/2, c)
		}
	}
	r.reset()
	if d := r.next(); d > time.Second {
		t.Errorf("after reset wait = %s, want at most 1s", d)
	}
	if b := (Backoff{}).withDefaults(); b.StableAfter != time.Minute {
		t.Errorf("StableAfter default %s, want 1m", b.StableAfter)
	}
}
