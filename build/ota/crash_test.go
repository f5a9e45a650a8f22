package ota

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// crashScenario is one operation run with a crash injected at each of its
// steps in turn.
type crashScenario struct {
	name string
	// setup returns a device just before the operation.
	setup func(t *testing.T) string
	// op is the operation.
	op func(dir string) error
	// before and after are the versions the device runs before and after
	// the operation; each boot after a crash must choose one of them.
	before, after string
	// done reports whether the operation took effect, judged from the
	// state after the crash and one boot; if not, it is run again.
	done func(st State) bool
	// check, if set, asserts more on the state after the crash and boot.
	check func(t *testing.T, st State)
	// confirm: a version found on trial after the crash is healthy and
	// confirms itself before the final boot.
	confirm bool
}

func crashScenarios(t *testing.T) []crashScenario {
	u2, u3 := update(t, "2.0.0"), update(t, "3.0.0")
	trial3 := func(t *testing.T) string { // 2.0.0 confirmed in b, 3.0.0 applied to a and booted once
		dir := confirmedDevice(t)
		mustApply(t, dir, "3.0.0", "2.0.0")
		if _, v := bootVersion(t, dir); v != "3.0.0" {
			t.Fatalf("boot after apply runs %s, want 3.0.0", v)
		}
		return dir
	}
	isTrial := func(st State) bool { return st.Trial != NoSlot }
	return []crashScenario{
		{
			name:   "apply first update",
			setup:  newDevice,
			op:     func(dir string) error { _, err := applyBytes(dir, u2, "1.0.0"); return err },
			before: "1.0.0", after: "2.0.0",
			done: isTrial,
		},
		{
			name:  "apply over rollback target",
			setup: confirmedDevice,
			op:    func(dir string) error { _, err := applyBytes(dir, u3, "2.0.0"); return err },
			// The update overwrites slot a, which held 1.0.0, the
			// rollback target of 2.0.0.
			before: "2.0.0", after: "3.0.0",
			done: isTrial,
		},
		{
			name:   "confirm",
			setup:  trial3,
			op:     Confirm,
			before: "2.0.0", after: "3.0.0",
			done: func(st State) bool { return st.Trial == NoSlot },
			check: func(t *testing.T, st State) {
				if st.Trial == NoSlot && (st.Active != SlotA || st.Previous != SlotB) {
					t.Errorf("after confirm active %s previous %s, want a and b (2.0.0 kept as rollback target)", st.Active, st.Previous)
				}
			},
		},
		{
			name:   "rollback of a trial",
			setup:  trial3,
			op:     func(dir string) error { return Rollback(dir, "operator said so") },
			before: "3.0.0", after: "2.0.0",
			done: func(st State) bool { return st.Trial == NoSlot },
		},
		{
			name:   "rollback of a confirmed version",
			setup:  confirmedDevice,
			op:     func(dir string) error { return Rollback(dir, "operator said so") },
			before: "2.0.0", after: "1.0.0",
			done: func(st State) bool { return st.Active == SlotA },
		},
		{
			name: "boot counting a try",
			setup: func(t *testing.T) string {
				dir := confirmedDevice(t)
				mustApply(t, dir, "3.0.0", "2.0.0")
				return dir
			},
			op:     func(dir string) error { _, err := Boot(dir, nil); return err },
			before: "3.0.0", after: "3.0.0",
			done: func(State) bool { return true },
			check: func(t *testing.T, st State) {
				// The crashed boot may or may not have counted its try;
				// the boot after it did.
				if st.Trial != SlotA || st.TriesLeft < DefaultTries-2 || st.TriesLeft > DefaultTries-1 {
					t.Errorf("trial %s with %d tries left, want a with %d or %d", st.Trial, st.TriesLeft, DefaultTries-2, DefaultTries-1)
				}
			},
		},
		{
			name: "boot rolling back a trial out of tries",
			setup: func(t *testing.T) string {
				dir := trial3(t)
				for range DefaultTries - 1 {
					mustBoot(t, dir)
				}
				return dir
			},
			op:     func(dir string) error { _, err := Boot(dir, nil); return err },
			before: "2.0.0", after: "2.0.0",
			done: func(State) bool { return true },
			check: func(t *testing.T, st State) {
				if st.Trial != NoSlot || st.Last.Outcome != OutcomeRolledBack || !strings.Contains(st.Last.Reason, "did not become healthy after 3 tries") {
					t.Errorf("state after the out-of-tries boot: trial %q, last %+v; want no trial, rolled back after 3 tries", st.Trial, st.Last)
				}
			},
		},
		{
			name: "boot repairing a torn state",
			setup: func(t *testing.T) string {
				dir := confirmedDevice(t)
				tear(t, filepath.Join(dir, StateFile))
				return dir
			},
			op: func(dir string) error { _, err := Boot(dir, nil); return err },
			// PrevStateFile holds the trial of 2.0.0 before its confirm:
			// 2.0.0 is on trial again, and confirms itself again.
			before: "2.0.0", after: "2.0.0",
			done:    func(State) bool { return true },
			confirm: true,
		},
	}
}

// tear cuts a file in half, as a write torn by a power cut on a file
// system that does not order data before metadata would.
func tear(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCrashAtEveryStep runs each operation once to record the steps it
// hits, then once per step with a crash injected there, and boots after
// each crash. After every crash the device must boot a complete binary of
// the version before or after the operation, the state record must parse
// and agree with the slots, a trial must have a complete rollback target,
// and the operation must still be able to finish.
func TestCrashAtEveryStep(t *testing.T) {
	for _, sc := range crashScenarios(t) {
		t.Run(sc.name, func(t *testing.T) {
			template := sc.setup(t)
			dir := copyDevice(t, template)
			steps, err := withFailpoint(dir, -1, func() error { return sc.op(dir) })
			if err != nil {
				t.Fatalf("clean run: %v", err)
			}
			if len(steps) == 0 {
				t.Fatal("the operation hit no failpoint")
			}
			t.Logf("%d steps: %s", len(steps), strings.Join(steps, " | "))
			for i, step := range steps {
				t.Run(step, func(t *testing.T) {
					t.Parallel()
					dir := copyDevice(t, template)
					stateBefore, _ := os.ReadFile(filepath.Join(dir, StateFile))
					hit, err := withFailpoint(dir, i, func() error { return sc.op(dir) })
					if !errors.Is(err, errInjected) || hit[len(hit)-1] != step {
						t.Fatalf("crash at step %d (%s): got error %v after steps %q", i, step, err, hit)
					}
					afterCrash(t, dir, sc, stateBefore)
				})
			}
		})
	}
}

func afterCrash(t *testing.T, dir string, sc crashScenario, stateBefore []byte) {
	t.Helper()
	// The state record is whole: the old one or the new one (or, when
	// the scenario starts from a torn one, that one untouched).
	for _, name := range []string{StateFile, PrevStateFile} {
		p := filepath.Join(dir, name)
		_, err := readState(p)
		if b, _ := os.ReadFile(p); err != nil && !errors.Is(err, os.ErrNotExist) && !(name == StateFile && bytes.Equal(b, stateBefore)) {
			t.Fatalf("%s after the crash: %v", name, err)
		}
	}
	d, v := bootVersion(t, dir)
	if v != sc.before && v != sc.after {
		t.Fatalf("boot after the crash runs %s, want %s or %s", v, sc.before, sc.after)
	}
	st := mustStatus(t, dir)
	if st.Recovered != "" {
		t.Errorf("state after the boot was recovered (%s), want it read from %s", st.Recovered, StateFile)
	}
	checkConsistent(t, dir, st)
	if d.Trial != (st.Trial == d.Slot && d.Slot != NoSlot) {
		t.Errorf("decision trial %v for %s, state trial %s", d.Trial, d.Slot, st.Trial)
	}
	if sc.check != nil {
		sc.check(t, st)
	}
	// The operation can still finish: run it again unless it took effect.
	if !sc.done(st) {
		if err := sc.op(dir); err != nil {
			t.Fatalf("running the operation again after the crash: %v", err)
		}
	}
	if sc.confirm && st.Trial != NoSlot {
		if err := Confirm(dir); err != nil {
			t.Fatalf("confirm after the crash: %v", err)
		}
	}
	if _, v := bootVersion(t, dir); v != sc.after {
		t.Fatalf("boot after finishing runs %s, want %s", v, sc.after)
	}
	checkConsistent(t, dir, mustStatus(t, dir))
}

// checkConsistent asserts that every version the state records for a slot
// is what the slot holds, and that a trial has a complete rollback target.
func checkConsistent(t *testing.T, dir string, st State) {
	t.Helper()
	for _, s := range []Slot{SlotA, SlotB} {
		if want := st.Slot(s).Version; want != "" {
			if got := versionOf(t, BinaryPath(dir, s)); got != want {
				t.Errorf("%s holds %s, the state says %s", s, got, want)
			}
		}
	}
	if st.Trial != NoSlot {
		if st.Active == NoSlot {
			t.Fatalf("trial of %s without a rollback target", st.Trial)
		}
		versionOf(t, BinaryPath(dir, st.Active)) // complete
	}
	if st.Previous != NoSlot {
		versionOf(t, BinaryPath(dir, st.Previous))
	}
	// No leftover that Boot could take for a binary.
	for _, s := range []Slot{SlotA, SlotB} {
		entries, _ := os.ReadDir(filepath.Dir(BinaryPath(dir, s)))
		for _, e := range entries {
			if !slices.Contains([]string{BinaryName, BinaryName + newSuffix}, e.Name()) {
				t.Errorf("unexpected file %s in %s", e.Name(), s)
			}
		}
	}
}
