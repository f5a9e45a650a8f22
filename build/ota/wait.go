package ota

import (
	"context"
	"fmt"
	"time"
)

// Health defaults.
const (
	// DefaultHealthWindow is how long a new version has to become healthy.
	DefaultHealthWindow = 120 * time.Second
	// DefaultPollInterval is how often the health check runs.
	DefaultPollInterval = 2 * time.Second
)

// Clock is the time source of HealthWait. Tests give a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// HealthWait polls a health check until it succeeds or a window passes.
type HealthWait struct {
	Window   time.Duration // 0 means DefaultHealthWindow
	Interval time.Duration // 0 means DefaultPollInterval
	Clock    Clock         // nil means the system clock
}

// UnhealthyError is WaitHealthy's error when the window passed: Last is
// the check's last error, fit for Rollback's reason.
type UnhealthyError struct {
	Window time.Duration
	Checks int
	Last   error
}

func (e *UnhealthyError) Error() string {
	return fmt.Sprintf("not healthy within %v (%d checks): %v", e.Window, e.Checks, e.Last)
}

// Unwrap returns ErrUnhealthy and the last check error.
func (e *UnhealthyError) Unwrap() []error { return []error{ErrUnhealthy, e.Last} }

// WaitHealthy calls check every DefaultPollInterval until it returns nil
// (then it returns nil, and the caller calls Confirm) or window passes
// (then it returns an *UnhealthyError, and the caller calls Rollback with
// its text as the reason). A window of 0 means DefaultHealthWindow. It
// returns ctx's error if ctx ends first.
func WaitHealthy(ctx context.Context, window time.Duration, check func() error) error {
	return HealthWait{Window: window}.Wait(ctx, check)
}

// Wait is WaitHealthy with h's window, interval and clock. check runs on
// the calling goroutine, first at once, last at or after the end of the
// window; it should return within an interval, as a check that hangs holds
// Wait past the window.
func (h HealthWait) Wait(ctx context.Context, check func() error) error {
	if h.Window <= 0 {
		h.Window = DefaultHealthWindow
	}
	if h.Interval <= 0 {
		h.Interval = DefaultPollInterval
	}
	if h.Clock == nil {
		h.Clock = realClock{}
	}
	deadline := h.Clock.Now().Add(h.Window)
	for checks := 1; ; checks++ {
		err := check()
		if err == nil {
			return nil
		}
		left := deadline.Sub(h.Clock.Now())
		if left <= 0 {
			return &UnhealthyError{Window: h.Window, Checks: checks, Last: err}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ota: waiting to become healthy: %w (last check: %v)", ctx.Err(), err)
		case <-h.Clock.After(min(h.Interval, left)):
		}
	}
}
