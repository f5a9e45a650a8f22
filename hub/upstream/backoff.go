package upstream

import (
	"math/rand/v2"
	"time"
)

// Backoff paces reconnect attempts: exponential from Min to Max, each wait
// drawn at random from its upper half so a fleet that lost its uplink
// together does not come back together.
type Backoff struct {
	Min time.Duration // first wait; default 1 s
	Max time.Duration // longest wait; default 60 s
	// StableAfter is how long a connection must last for the next wait to
	// start from Min again; default 1 min.
	StableAfter time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max <= 0 {
		b.Max = 60 * time.Second
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	if b.StableAfter <= 0 {
		b.StableAfter = time.Minute
	}
	return b
}

// retry counts consecutive failures and gives the wait after each.
type retry struct {
	b Backoff
	n int
}

// next returns the wait before the next attempt and counts a failure.
func (r *retry) next() time.Duration {
	d := r.b.Min
	for i := 0; i < r.n && d < r.b.Max; i++ {
		d *= 2
	}
	d = min(d, r.b.Max)
	r.n++
	half := d / 2
	return half + rand.N(half+1)
}

// reset starts again from Min.
func (r *retry) reset() { r.n = 0 }
