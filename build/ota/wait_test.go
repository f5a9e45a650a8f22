package ota

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeClock jumps forward by each wait at once.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// TestUnhealthyRolledBack runs a new version whose health check never
// passes: WaitHealthy gives up after the window, and Rollback with its
// error sends the next boot to the old version with the reason recorded.
func TestUnhealthyRolledBack(t *testing.T) {
	dir := newDevice(t)
	mustApply(t, dir, "2.0.0", "1.0.0")
	if _, v := bootVersion(t, dir); v != "2.0.0" {
		t.Fatalf("boot runs %s, want 2.0.0", v)
	}
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	start := clock.now
	checks := 0
	err := HealthWait{Clock: clock}.Wait(context.Background(), func() error {
		checks++
		return errors.New("hub is not routing: module sensor is not running")
	})
	var ue *UnhealthyError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Wait = %v, want an UnhealthyError", err)
	}
	if waited := clock.now.Sub(start); waited != DefaultHealthWindow {
		t.Errorf("waited %v, want the default window %v", waited, DefaultHealthWindow)
	}
	if want := int(DefaultHealthWindow/DefaultPollInterval) + 1; checks != want || ue.Checks != want {
		t.Errorf("%d checks (error says %d), want %d: one at once, one per interval, one at the end", checks, ue.Checks, want)
	}
	if err := Rollback(dir, err.Error()); err != nil {
		t.Fatal(err)
	}
	if d, v := bootVersion(t, dir); v != "1.0.0" || d.Trial {
		t.Errorf("boot after the rollback runs %s (trial %v), want 1.0.0", v, d.Trial)
	}
	st := mustStatus(t, dir)
	if st.Last.Outcome != OutcomeRolledBack || st.Last.Version != "2.0.0" ||
		!strings.Contains(st.Last.Reason, "not healthy within 2m0s") || !strings.Contains(st.Last.Reason, "module sensor is not running") {
		t.Errorf("last result %+v, want rolled back 2.0.0 with the window and the check's error", st.Last)
	}
}

// TestHealthyConfirmed runs a version that becomes healthy on its third
// check.
func TestHealthyConfirmed(t *testing.T) {
	dir := newDevice(t)
	mustApply(t, dir, "2.0.0", "1.0.0")
	bootVersion(t, dir)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	start := clock.now
	checks := 0
	err := HealthWait{Window: time.Minute, Interval: 5 * time.Second, Clock: clock}.Wait(context.Background(), func() error {
		if checks++; checks < 3 {
			return errors.New("upstream not connected")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Wait = %v, want nil", err)
	}
	if waited := clock.now.Sub(start); waited != 10*time.Second {
		t.Errorf("waited %v, want 10s (two intervals)", waited)
	}
	if err := Confirm(dir); err != nil {
		t.Fatal(err)
	}
	for range DefaultTries + 1 {
		if d, v := bootVersion(t, dir); v != "2.0.0" || d.Trial {
			t.Fatalf("boot after confirm runs %s (trial %v), want 2.0.0", v, d.Trial)
		}
	}
}

// TestWaitShortWindow checks that the last wait is cut to the window.
func TestWaitShortWindow(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	checks := 0
	err := HealthWait{Window: 5 * time.Second, Interval: 2 * time.Second, Clock: clock}.Wait(context.Background(), func() error {
		checks++
		return errors.New("no")
	})
	if !errors.Is(err, ErrUnhealthy) || checks != 4 || clock.now != time.Unix(5, 0) {
		t.Errorf("Wait = %v after %d checks at %v, want ErrUnhealthy after 4 checks (0, 2, 4, 5 s) at 5s", err, checks, clock.now.Unix())
	}
}

func TestWaitHealthyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := WaitHealthy(ctx, time.Hour, func() error { return errors.New("not yet") })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "not yet") {
		t.Errorf("WaitHealthy = %v, want context.Canceled with the last check", err)
	}
}

func TestWaitHealthyRealClock(t *testing.T) {
	checks := 0
	err := WaitHealthy(context.Background(), time.Second, func() error {
		checks++
		return nil
	})
	if err != nil || checks != 1 {
		t.Errorf("WaitHealthy = %v after %d checks, want nil after 1", err, checks)
	}
}
