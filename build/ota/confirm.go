package ota

import (
	"fmt"
	"os"
	"time"
)

// Confirm marks the version on trial good: its slot becomes active, and
// the slot that was active is kept as the rollback target of a later
// Rollback. The version on trial calls it once WaitHealthy succeeds.
func Confirm(dataDir string) error {
	if err := checkDir(dataDir); err != nil {
		return err
	}
	st := load(dataDir)
	if st.Trial == NoSlot {
		return fmt.Errorf("%w: nothing to confirm (%s)", ErrNoTrial, describeLast(st))
	}
	next := st
	info := st.Slot(st.Trial)
	next.Active, next.Previous, next.Trial = st.Trial, st.Active, NoSlot
	next.Tries, next.TriesLeft, next.TrialStarted = 0, 0, time.Time{}
	next.Last = LastResult{Outcome: OutcomeOK, Version: info.Version, At: time.Now().UTC()}
	if err := save(dataDir, st, next, time.Now(), "confirm"); err != nil {
		return fmt.Errorf("ota: confirm %s: %w", versionText(info.Version), err)
	}
	return nil
}

// Rollback goes back to the previous version at the next Boot, recording
// reason. With an update on trial, the trial ends and the active slot,
// its rollback target, stays. Otherwise the previous slot becomes active
// and the slot left becomes the previous one, so a second Rollback goes
// forward again. It returns an ErrNoRollbackTarget error when there is no
// previous slot, or its binary cannot run.
func Rollback(dataDir string, reason string) error {
	if err := checkDir(dataDir); err != nil {
		return err
	}
	if reason == "" {
		reason = "rollback requested"
	}
	st := load(dataDir)
	next := st
	now := time.Now().UTC()
	if st.Trial != NoSlot {
		next.Trial, next.Tries, next.TriesLeft, next.TrialStarted = NoSlot, 0, 0, time.Time{}
		next.Last = LastResult{Outcome: OutcomeRolledBack, Version: st.Slot(st.Trial).Version, Reason: reason, At: now}
	} else {
		if st.Previous == NoSlot {
			return fmt.Errorf("%w: %s runs and no earlier version is kept (one is kept once an update is confirmed)", ErrNoRollbackTarget, st.Active)
		}
		if _, err := checkBinary(dataDir, st.Previous, st.Slot(st.Previous)); err != nil {
			return fmt.Errorf("%w: the binary %s in previous %s cannot run: %v", ErrNoRollbackTarget, versionText(st.Slot(st.Previous).Version), st.Previous, err)
		}
		next.Active, next.Previous = st.Previous, st.Active
		next.Last = LastResult{Outcome: OutcomeRolledBack, Version: st.Slot(st.Active).Version, Reason: reason, At: now}
	}
	if err := save(dataDir, st, next, now, "rollback"); err != nil {
		return fmt.Errorf("ota: rollback: %w", err)
	}
	return nil
}

func describeLast(st State) string {
	if st.Last.Outcome == "" {
		return fmt.Sprintf("%s runs, no update was applied", st.Active)
	}
	s := fmt.Sprintf("last result: %s", st.Last.Outcome)
	if st.Last.Version != "" {
		s += " of version " + st.Last.Version
	}
	if st.Last.Reason != "" {
		s += ": " + st.Last.Reason
	}
	return s
}

func checkDir(dataDir string) error {
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("ota: data directory %s is not a directory (%v); create it or fix --data-dir", dataDir, err)
	}
	return nil
}
