package ota

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadVersionRolledBack boots a new version that never confirms
// itself (it exits at start, hangs until killed, or runs unhealthy): it
// gets its three tries, and the fourth boot is back on the old version
// with the reason recorded.
func TestBadVersionRolledBack(t *testing.T) {
	dir := newDevice(t)
	mustApply(t, dir, "2.0.0", "1.0.0")
	for try := 1; try <= DefaultTries; try++ {
		d, v := bootVersion(t, dir)
		if v != "2.0.0" || !d.Trial || d.Slot != SlotB {
			t.Fatalf("boot %d runs %s in %s (trial %v), want 2.0.0 in b on trial", try, v, d.Slot, d.Trial)
		}
		if want := fmt.Sprintf("try %d of %d", try, DefaultTries); !strings.Contains(d.Reason, want) {
			t.Errorf("boot %d reason %q, want it to say %q", try, d.Reason, want)
		}
		if st := mustStatus(t, dir); st.TriesLeft != DefaultTries-try {
			t.Errorf("after boot %d: %d tries left, want %d", try, st.TriesLeft, DefaultTries-try)
		}
	}
	const reason = "rolled back: did not become healthy after 3 tries"
	for boot := DefaultTries + 1; boot <= DefaultTries+2; boot++ {
		d, v := bootVersion(t, dir)
		if v != "1.0.0" || d.Trial || d.Slot != SlotA {
			t.Fatalf("boot %d runs %s in %s (trial %v), want 1.0.0 in a", boot, v, d.Slot, d.Trial)
		}
		if boot == DefaultTries+1 && !strings.Contains(d.Reason, reason) {
			t.Errorf("boot %d reason %q, want %q", boot, d.Reason, reason)
		}
	}
	st := mustStatus(t, dir)
	if st.Trial != NoSlot || st.Active != SlotA || st.Last.Outcome != OutcomeRolledBack || st.Last.Reason != reason || st.Last.Version != "2.0.0" {
		t.Errorf("state %+v, want a active, no trial, last rolled back 2.0.0: %q", st, reason)
	}
	// The failed version can be replaced by a fixed one.
	mustApply(t, dir, "2.0.1", "1.0.0")
	if _, v := bootVersion(t, dir); v != "2.0.1" {
		t.Errorf("boot after applying the fix runs %s, want 2.0.1", v)
	}
}

func TestOneTry(t *testing.T) {
	dir := newDevice(t)
	opts := applyOpts("1.0.0")
	opts.Tries = 1
	if _, err := Apply(t.Context(), dir, strings.NewReader(string(update(t, "2.0.0"))), opts); err != nil {
		t.Fatal(err)
	}
	if _, v := bootVersion(t, dir); v != "2.0.0" {
		t.Fatalf("first boot runs %s, want 2.0.0", v)
	}
	if d, v := bootVersion(t, dir); v != "1.0.0" || !strings.Contains(d.Reason, "after 1 tries") {
		t.Fatalf("second boot runs %s (%s), want 1.0.0 after 1 try", v, d.Reason)
	}
}

// TestConfirmKeepsRollbackTarget confirms an update and rolls back from
// the confirmed version by hand, and forward again.
func TestConfirmKeepsRollbackTarget(t *testing.T) {
	dir := confirmedDevice(t)
	st := mustStatus(t, dir)
	if st.Active != SlotB || st.Previous != SlotA || st.Last.Outcome != OutcomeOK || st.Last.Version != "2.0.0" {
		t.Fatalf("after confirm: %+v, want b active, a previous, last ok 2.0.0", st)
	}
	if st.A.Version != "1.0.0" || st.B.Version != "2.0.0" || st.B.Size != binSize || len(st.B.SHA256) != 64 {
		t.Errorf("slot records a %+v b %+v, want 1.0.0 and 2.0.0 with size and digest", st.A, st.B)
	}
	for i := range DefaultTries + 2 {
		if d, v := bootVersion(t, dir); v != "2.0.0" || d.Trial {
			t.Fatalf("boot %d after confirm runs %s (trial %v), want 2.0.0 for good", i, v, d.Trial)
		}
	}
	if err := Confirm(dir); !errors.Is(err, ErrNoTrial) {
		t.Errorf("second Confirm: %v, want ErrNoTrial", err)
	}
	if err := Rollback(dir, "sensor readings wrong"); err != nil {
		t.Fatal(err)
	}
	if _, v := bootVersion(t, dir); v != "1.0.0" {
		t.Errorf("boot after rollback runs %s, want 1.0.0", v)
	}
	st = mustStatus(t, dir)
	if st.Last.Outcome != OutcomeRolledBack || st.Last.Reason != "sensor readings wrong" || st.Last.Version != "2.0.0" {
		t.Errorf("last result %+v, want rolled back 2.0.0 with the reason", st.Last)
	}
	if err := Rollback(dir, "back to 2.0.0"); err != nil {
		t.Fatal(err)
	}
	if _, v := bootVersion(t, dir); v != "2.0.0" {
		t.Errorf("boot after the second rollback runs %s, want 2.0.0", v)
	}
}

func TestRollbackWithoutTarget(t *testing.T) {
	dir := newDevice(t)
	mustBoot(t, dir)
	if err := Rollback(dir, ""); !errors.Is(err, ErrNoRollbackTarget) {
		t.Errorf("Rollback on a device never updated: %v, want ErrNoRollbackTarget", err)
	}
	dir = confirmedDevice(t)
	if err := os.Remove(BinaryPath(dir, SlotA)); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	if err := Rollback(dir, ""); !errors.Is(err, ErrNoRollbackTarget) {
		t.Errorf("Rollback to a missing binary: %v, want ErrNoRollbackTarget", err)
	}
	if d := diffSnapshots(before, snapshot(t, dir)); d != "" {
		t.Errorf("the refused rollback changed the data directory:\n%s", d)
	}
}

// TestBootDamagedBinaries checks that Boot never chooses a binary that is
// missing, cut short or not executable.
func TestBootDamagedBinaries(t *testing.T) {
	t.Run("trial binary cut short", func(t *testing.T) {
		dir := newDevice(t)
		res := mustApply(t, dir, "2.0.0", "1.0.0")
		if err := os.Truncate(res.Path, binSize/2); err != nil {
			t.Fatal(err)
		}
		d, v := bootVersion(t, dir)
		if v != "1.0.0" || !strings.Contains(d.Reason, "damaged") {
			t.Errorf("boot runs %s (%s), want 1.0.0 because 2.0.0 is damaged", v, d.Reason)
		}
		if st := mustStatus(t, dir); st.Trial != NoSlot || st.Last.Outcome != OutcomeRolledBack {
			t.Errorf("state %+v, want the trial rolled back", st)
		}
	})
	t.Run("active binary missing", func(t *testing.T) {
		dir := confirmedDevice(t)
		if err := os.Remove(BinaryPath(dir, SlotB)); err != nil {
			t.Fatal(err)
		}
		d, v := bootVersion(t, dir)
		if v != "1.0.0" || d.Slot != SlotA {
			t.Errorf("boot runs %s in %s (%s), want 1.0.0, the previous version", v, d.Slot, d.Reason)
		}
		if st := mustStatus(t, dir); st.Active != SlotA || st.Previous != NoSlot {
			t.Errorf("state active %s previous %s, want a and none", st.Active, st.Previous)
		}
	})
	t.Run("active binary not executable", func(t *testing.T) {
		dir := newDevice(t)
		mustBoot(t, dir)
		if err := os.Chmod(BinaryPath(dir, SlotA), 0o644); err != nil {
			t.Fatal(err)
		}
		d := mustBoot(t, dir)
		if d.Slot != NoSlot || d.Path != "" || !strings.Contains(d.Reason, "not executable") {
			t.Errorf("boot chose %s %q (%s), want the installed binary", d.Slot, d.Path, d.Reason)
		}
	})
}

// TestBootRecovery checks the recovery rule for a missing or unreadable
// state record.
func TestBootRecovery(t *testing.T) {
	t.Run("nothing installed", func(t *testing.T) {
		dir := t.TempDir()
		d := mustBoot(t, dir)
		if d.Slot != NoSlot || d.Path != "" {
			t.Errorf("boot chose %s %q, want the installed binary", d.Slot, d.Path)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("boot of a device never updated wrote %d files, want none", len(entries))
		}
	})
	t.Run("no state, slot a", func(t *testing.T) {
		dir := newDevice(t)
		var log bytes.Buffer
		d, err := Boot(dir, &BootOpts{Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		v := versionOf(t, d.Path)
		if !strings.Contains(log.String(), "no state record") {
			t.Errorf("log %q does not say the state was rebuilt", log.String())
		}
		if v != "1.0.0" || d.Slot != SlotA || d.Trial || !strings.Contains(d.Reason, "no state record") {
			t.Errorf("boot %+v, want slot a, no trial, saying there was no state", d)
		}
		if st, err := readState(filepath.Join(dir, StateFile)); err != nil || st.Active != SlotA {
			t.Errorf("state written by boot: %+v, %v; want a active", st, err)
		}
	})
	t.Run("unreadable state, good backup", func(t *testing.T) {
		dir := newDevice(t)
		mustApply(t, dir, "2.0.0", "1.0.0")
		tear(t, filepath.Join(dir, StateFile))
		// The backup is the state before the trial started: 1.0.0.
		d, v := bootVersion(t, dir)
		if v != "1.0.0" || !strings.Contains(d.Reason, PrevStateFile) {
			t.Errorf("boot runs %s (%s), want 1.0.0 from %s", v, d.Reason, PrevStateFile)
		}
		if _, err := readState(filepath.Join(dir, StateFile)); err != nil {
			t.Errorf("boot did not repair the state: %v", err)
		}
		// The update can be applied again.
		mustApply(t, dir, "2.0.0", "1.0.0")
		if _, v := bootVersion(t, dir); v != "2.0.0" {
			t.Errorf("boot after applying again runs %s, want 2.0.0", v)
		}
	})
	t.Run("missing state, good backup", func(t *testing.T) {
		dir := confirmedDevice(t)
		if err := os.Remove(filepath.Join(dir, StateFile)); err != nil {
			t.Fatal(err)
		}
		d, v := bootVersion(t, dir)
		if v != "2.0.0" || !d.Trial || !strings.Contains(d.Reason, "missing") {
			t.Errorf("boot runs %s trial %v (%s), want 2.0.0 on trial again from the backup", v, d.Trial, d.Reason)
		}
	})
	t.Run("both unreadable, both slots", func(t *testing.T) {
		dir := confirmedDevice(t)
		// Slot b was written last.
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(BinaryPath(dir, SlotA), old, old); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{StateFile, PrevStateFile} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("\x00\x00garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d, v := bootVersion(t, dir)
		if v != "2.0.0" || !d.Trial || !strings.Contains(d.Reason, "written last") {
			t.Errorf("boot runs %s trial %v (%s), want 2.0.0, written last, on trial", v, d.Trial, d.Reason)
		}
		st := mustStatus(t, dir)
		if st.Active != SlotA || st.Trial != SlotB {
			t.Errorf("recovered state active %s trial %s, want a with b on trial", st.Active, st.Trial)
		}
	})
	t.Run("both unreadable, one slot", func(t *testing.T) {
		dir := newDevice(t)
		mustBoot(t, dir)
		mustBoot(t, dir)
		tear(t, filepath.Join(dir, StateFile))
		tear(t, filepath.Join(dir, PrevStateFile))
		if d, v := bootVersion(t, dir); v != "1.0.0" || d.Trial {
			t.Errorf("boot runs %s trial %v, want 1.0.0", v, d.Trial)
		}
	})
	t.Run("newer format", func(t *testing.T) {
		dir := confirmedDevice(t)
		b, err := os.ReadFile(filepath.Join(dir, StateFile))
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.Replace(string(b), `"format": 1`, `"format": 2`, 1))
		if err := os.WriteFile(filepath.Join(dir, StateFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		d, v := bootVersion(t, dir)
		if v != "2.0.0" || !strings.Contains(d.Reason, "newer") {
			t.Errorf("boot runs %s (%s), want 2.0.0 from the backup, saying the record is newer", v, d.Reason)
		}
	})
}

// TestBootFromSlot checks that the binary Boot exec'd does not count
// another try when it calls Boot itself.
func TestBootFromSlot(t *testing.T) {
	dir := newDevice(t)
	res := mustApply(t, dir, "2.0.0", "1.0.0")
	d := mustBoot(t, dir)
	before := mustStatus(t, dir)
	again, err := Boot(dir, &BootOpts{Self: d.Path})
	if err != nil {
		t.Fatal(err)
	}
	if again.Slot != res.Slot || again.Path != d.Path || !again.Trial {
		t.Errorf("Boot from the slot binary = %+v, want the same slot on trial", again)
	}
	if after := mustStatus(t, dir); after.TriesLeft != before.TriesLeft || after.Generation != before.Generation {
		t.Errorf("Boot from the slot binary changed the state: %d tries left, was %d", after.TriesLeft, before.TriesLeft)
	}
}

func TestExec(t *testing.T) {
	dir := newDevice(t)
	d := mustBoot(t, dir)
	var calls []string
	execve = func(path string, argv, env []string) error {
		calls = append(calls, fmt.Sprint(path, argv, env))
		return errors.New("exec format error")
	}
	self := os.Args[0]
	executable = func() (string, error) { return self, nil }
	defer func() { execve, executable = realExecve, realExecutable }()

	if err := Exec(Decision{Reason: "installed"}, []string{"tinyedge"}, nil); err != nil || len(calls) != 0 {
		t.Errorf("Exec of the installed binary: %v, %d execs; want none", err, len(calls))
	}
	self = d.Path
	if err := Exec(d, []string{"tinyedge"}, nil); err != nil || len(calls) != 0 {
		t.Errorf("Exec of the running binary: %v, %d execs; want none", err, len(calls))
	}
	self = os.Args[0]
	err := Exec(d, []string{"tinyedge", "run"}, []string{"A=1"})
	if want := fmt.Sprint(d.Path, []string{"tinyedge", "run"}, []string{"A=1"}); len(calls) != 1 || calls[0] != want {
		t.Errorf("execs %q, want one: %q", calls, want)
	}
	if err == nil || !strings.Contains(err.Error(), d.Path) {
		t.Errorf("failed exec returned %v, want an error naming %s", err, d.Path)
	}
}

var realExecve, realExecutable = execve, executable

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"format":1,"active":"a","previous":"","trial":"b","tries":3,"tries_left":2}`))
	f.Add([]byte(`{"format":1,"active":"b","previous":"a","trial":"","tries_left":0,"a":{"version":"1.0.0","size":10}}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{"format":1,"active":"a","trial":"a"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			return
		}
		if err := st.validate(); err != nil {
			t.Fatalf("decodeState accepted an invalid state: %v", err)
		}
		again, err := decodeState(encodeState(st))
		if err != nil {
			t.Fatalf("a decoded state does not decode after encoding: %v", err)
		}
		if string(encodeState(again)) != string(encodeState(st)) {
			t.Fatalf("state changed in a round trip")
		}
	})
}
