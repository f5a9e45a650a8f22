package ota

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// BootOpts configures Boot. A nil *BootOpts means defaults.
type BootOpts struct {
	// Self is the path of the running binary; "" means os.Executable().
	// When it is a slot's binary, Boot was called by a binary that Boot
	// already chose and exec'd, and it returns that slot without counting
	// another try.
	Self string
	// Now is the clock for the state's timestamps; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per decision that recovered or changed the
	// state; nil means none (the Decision's Reason says the same).
	Logger *slog.Logger
}

// Decision is Boot's choice of the binary to run.
type Decision struct {
	// Slot is the chosen slot; NoSlot means the installed binary, the one
	// that called Boot: keep running it.
	Slot Slot
	// Path is the absolute path of the binary to exec, "" for NoSlot.
	Path string
	// Trial is true when the chosen slot is on trial: the binary must
	// Confirm once healthy, or it is rolled back after its tries.
	Trial bool
	// Version is the chosen binary's version as the state records it, ""
	// if unknown.
	Version string
	// Reason says why this binary, for the log.
	Reason string
}

// Boot chooses the binary to run at start-up, and is what the installed
// tinyedge calls before anything else. If a slot is on trial and has tries
// left, it counts a try, persisting the count before it returns, so a
// crash during the try counts too; if the trial has no tries left, it
// rolls back to the active slot and records why. A chosen binary is always
// complete: one that is missing or damaged is never chosen.
//
// The Decision is usable even when the error is not nil: the error then
// says the state could not be written, and the Decision is the safe choice
// (never a trial whose try could not be counted).
func Boot(dataDir string, opts *BootOpts) (Decision, error) {
	var o BootOpts
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	st := load(dataDir)
	if s, ok := runningSlot(dataDir, o.Self); ok {
		return Decision{Slot: s, Path: BinaryPath(dataDir, s), Trial: st.Trial == s, Version: st.Slot(s).Version,
			Reason: fmt.Sprintf("already running %s", s)}, nil
	}
	b := booter{dir: dataDir, old: st, st: st, now: o.Now()}
	d, err := b.decide()
	if err != nil && isCrash(err) {
		return d, err
	}
	if st.Recovered != "" {
		d.Reason = st.Recovered + "; " + d.Reason
	}
	if o.Logger != nil && (st.Recovered != "" || b.changed || err != nil) {
		o.Logger.Warn("ota boot", "slot", string(d.Slot), "path", d.Path, "trial", d.Trial, "reason", d.Reason, "err", err)
	}
	return d, err
}

type booter struct {
	dir     string
	old, st State
	now     time.Time
	changed bool
}

func (b *booter) decide() (Decision, error) {
	st := &b.st
	why := ""
	if st.Trial != NoSlot {
		info := st.Slot(st.Trial)
		switch _, err := checkBinary(b.dir, st.Trial, info); {
		case err != nil:
			b.rollback(fmt.Sprintf("rolled back: the binary %s in %s cannot run: %v", versionText(info.Version), st.Trial, err))
		case st.TriesLeft <= 0:
			b.rollback(fmt.Sprintf("rolled back: did not become healthy after %d tries", max(st.Tries, 1)))
		default:
			st.TriesLeft--
			try := st.Tries - st.TriesLeft
			d := b.decision(st.Trial, true, fmt.Sprintf("%s in %s on trial, try %d of %d", versionText(info.Version), st.Trial, try, st.Tries))
			if err := save(b.dir, b.old, b.st, b.now, "boot count try"); err != nil {
				if isCrash(err) {
					return d, err
				}
				// An uncounted try could loop forever: run the rollback
				// target instead and let the next boot try again.
				st.TriesLeft++
				return b.chooseActive(fmt.Sprintf("could not count a try of %s, running the rollback target: %v", st.Trial, err)), err
			}
			return d, nil
		}
		why = st.Last.Reason
	}
	d := b.chooseActive(why)
	if b.changed || b.old.Recovered != "" {
		if err := save(b.dir, b.old, b.st, b.now, "boot"); err != nil {
			return d, err
		}
	}
	return d, nil
}

// rollback ends the trial and records why.
func (b *booter) rollback(reason string) {
	st := &b.st
	st.Last = LastResult{Outcome: OutcomeRolledBack, Version: st.Slot(st.Trial).Version, Reason: reason, At: b.now.UTC()}
	st.Trial, st.Tries, st.TriesLeft, st.TrialStarted = NoSlot, 0, 0, time.Time{}
	b.changed = true
}

// chooseActive returns the active slot if its binary can run, else the
// previous slot (making it active), else the installed binary.
func (b *booter) chooseActive(why string) Decision {
	st := &b.st
	join := func(s string) string {
		if why == "" {
			return s
		}
		return why + "; " + s
	}
	if st.Active == NoSlot {
		return b.decision(NoSlot, false, join("no slot is active; running the installed binary"))
	}
	_, err := checkBinary(b.dir, st.Active, st.Slot(st.Active))
	if err == nil {
		return b.decision(st.Active, false, join(fmt.Sprintf("%s is active", st.Active)))
	}
	bad := st.Active
	st.Last = LastResult{Outcome: OutcomeRolledBack, Version: st.Slot(bad).Version, Reason: fmt.Sprintf("rolled back: the binary of active %s cannot run: %v", bad, err), At: b.now.UTC()}
	b.changed = true
	if st.Previous != NoSlot {
		if _, perr := checkBinary(b.dir, st.Previous, st.Slot(st.Previous)); perr == nil {
			st.Active, st.Previous = st.Previous, NoSlot
			return b.decision(st.Active, false, join(st.Last.Reason+"; running previous "+string(st.Active)))
		}
	}
	st.Active, st.Previous = NoSlot, NoSlot
	return b.decision(NoSlot, false, join(st.Last.Reason+"; running the installed binary"))
}

func (b *booter) decision(s Slot, trial bool, reason string) Decision {
	d := Decision{Slot: s, Trial: trial, Reason: reason}
	if s != NoSlot {
		d.Path = BinaryPath(b.dir, s)
		d.Version = b.st.Slot(s).Version
	}
	return d
}

// runningSlot reports whether self (or the running executable) is one of
// the slots' binaries.
func runningSlot(dataDir, self string) (Slot, bool) {
	if self == "" {
		var err error
		if self, err = executable(); err != nil {
			return NoSlot, false
		}
	}
	sfi, err := os.Stat(self)
	if err != nil {
		return NoSlot, false
	}
	for _, s := range []Slot{SlotA, SlotB} {
		if fi, err := os.Stat(BinaryPath(dataDir, s)); err == nil && os.SameFile(sfi, fi) {
			return s, true
		}
	}
	return NoSlot, false
}

// Seams for Exec, replaced by tests.
var (
	executable = os.Executable
	execve     = syscall.Exec
)

// Exec replaces the running process with the binary d chose, with argv
// and env (argv[0] included). It returns nil without exec'ing when d
// chose the installed binary or the binary already running: the caller
// goes on. It returns only on failure otherwise.
func Exec(d Decision, argv, env []string) error {
	if d.Path == "" {
		return nil
	}
	if self, err := executable(); err == nil {
		sfi, serr := os.Stat(self)
		dfi, derr := os.Stat(d.Path)
		if serr == nil && derr == nil && os.SameFile(sfi, dfi) {
			return nil
		}
	}
	if err := execve(d.Path, argv, env); err != nil {
		return fmt.Errorf("ota: exec %s: %w", d.Path, err)
	}
	return nil
}
