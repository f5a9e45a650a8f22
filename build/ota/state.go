package ota

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// File and directory names under the data directory.
const (
	// StateFile holds the state record.
	StateFile = "ota-state.json"
	// PrevStateFile holds the state record as it was before the last
	// change; it is read when StateFile is missing or unreadable.
	PrevStateFile = StateFile + ".prev"
	// SlotsDir holds one directory per slot.
	SlotsDir = "slots"
	// BinaryName is the name of the binary in a slot directory and of the
	// bundle payload that carries it.
	BinaryName = "tinyedge"

	newSuffix = ".new" // a binary being written, never executed
	tmpSuffix = ".tmp" // a state record being written, never read
)

// StateFormat is the version of the state record this package writes and
// the newest it reads.
const StateFormat = 1

// DefaultTries is how many boots a new version gets to confirm itself.
const DefaultTries = 3

// maxTries bounds ApplyOpts.Tries.
const maxTries = 100

// Slot names one of the two binary slots. The zero Slot, NoSlot, stands
// for the binary installed outside the slots (the one that calls Boot).
type Slot string

// The slots.
const (
	NoSlot Slot = ""
	SlotA  Slot = "a"
	SlotB  Slot = "b"
)

// Other returns the slot that is not s; for NoSlot it returns SlotA, the
// slot a device with nothing in its slots is updated into.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

func (s Slot) String() string {
	if s == NoSlot {
		return "installed binary"
	}
	return "slot " + string(s)
}

// versionText names a recorded version for messages.
func versionText(v string) string {
	if v == "" {
		return "of unknown version"
	}
	return "version " + v
}

func (s Slot) valid() bool { return s == NoSlot || s == SlotA || s == SlotB }

// BinaryPath returns the path of slot s's binary under dataDir.
func BinaryPath(dataDir string, s Slot) string {
	return filepath.Join(dataDir, SlotsDir, string(s), BinaryName)
}

// SlotInfo is what the state records of a slot's binary. The zero value
// means the slot holds nothing known: empty, being written, or a binary
// found on disk without a record.
type SlotInfo struct {
	Version   string    `json:"version,omitempty"`
	Size      int64     `json:"size,omitempty"`
	SHA256    string    `json:"sha256,omitempty"`
	Installed time.Time `json:"installed,omitzero"`
}

// Outcome is the kind of the last result.
type Outcome string

// Outcomes.
const (
	// OutcomeTrial: a version was applied and is on trial.
	OutcomeTrial Outcome = "trial"
	// OutcomeOK: the trial version confirmed itself.
	OutcomeOK Outcome = "ok"
	// OutcomeRolledBack: the trial failed, or a rollback was asked for.
	OutcomeRolledBack Outcome = "rolled_back"
	// OutcomeApplyFailed: Apply failed after the payload was verified
	// (an I/O error while installing it).
	OutcomeApplyFailed Outcome = "apply_failed"
)

// LastResult is the last thing that happened to the device's version.
type LastResult struct {
	Outcome Outcome   `json:"outcome,omitempty"`
	Version string    `json:"version,omitempty"` // the version it concerns
	Reason  string    `json:"reason,omitempty"`  // why, for rollbacks and failures
	At      time.Time `json:"at,omitzero"`
}

// State is the state record.
//
// Active is the slot that boots when no update is on trial; while one is,
// Active is its rollback target. Trial is the slot on trial (NoSlot for
// none) and TriesLeft the boots it has left. Previous is the slot that held
// the version before Active, the target of a Rollback when no update is on
// trial (NoSlot for none).
type State struct {
	Format       int        `json:"format"`
	Active       Slot       `json:"active"`
	Previous     Slot       `json:"previous"`
	Trial        Slot       `json:"trial"`
	Tries        int        `json:"tries,omitempty"` // boots the trial was given
	TriesLeft    int        `json:"tries_left"`
	TrialStarted time.Time  `json:"trial_started,omitzero"`
	A            SlotInfo   `json:"a"`
	B            SlotInfo   `json:"b"`
	Last         LastResult `json:"last"`
	Updated      time.Time  `json:"updated,omitzero"`
	Generation   uint64     `json:"generation"` // +1 on each write

	// Recovered says why the state was not read from StateFile, when it
	// was not: read from PrevStateFile or rebuilt from the slots.
	Recovered string `json:"-"`
}

// Slot returns what the state records of slot s.
func (st State) Slot(s Slot) SlotInfo {
	switch s {
	case SlotA:
		return st.A
	case SlotB:
		return st.B
	}
	return SlotInfo{}
}

func (st *State) setSlot(s Slot, info SlotInfo) {
	switch s {
	case SlotA:
		st.A = info
	case SlotB:
		st.B = info
	}
}

// Running returns the slot that runs after the next Boot, unless a trial
// runs out of tries: the trial slot if any, else Active.
func (st State) Running() Slot {
	if st.Trial != NoSlot {
		return st.Trial
	}
	return st.Active
}

// validate checks the record's invariants.
func (st State) validate() error {
	switch {
	case st.Format < 1:
		return fmt.Errorf("format %d is not a state format", st.Format)
	case st.Format > StateFormat:
		return fmt.Errorf("format %d is newer than this tinyedge reads (%d)", st.Format, StateFormat)
	case !st.Active.valid() || !st.Previous.valid() || !st.Trial.valid():
		return fmt.Errorf("slots %q, %q, %q: a slot is \"a\", \"b\" or empty", st.Active, st.Previous, st.Trial)
	case st.Trial != NoSlot && st.Trial == st.Active:
		return fmt.Errorf("slot %s is both active and on trial", st.Trial)
	case st.Previous != NoSlot && st.Previous == st.Active:
		return fmt.Errorf("slot %s is both active and previous", st.Previous)
	case st.TriesLeft < 0 || st.TriesLeft > maxTries || st.Tries < 0 || st.Tries > maxTries:
		return fmt.Errorf("tries %d, tries left %d: out of range 0 to %d", st.Tries, st.TriesLeft, maxTries)
	}
	return nil
}

// decodeState parses and validates a state record.
func decodeState(b []byte) (State, error) {
	var st State
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return State{}, err
	}
	if dec.More() {
		return State{}, errors.New("data after the record")
	}
	if err := st.validate(); err != nil {
		return State{}, err
	}
	return st, nil
}

func encodeState(st State) []byte {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		// State has only strings, numbers and times: it always encodes.
		panic(err)
	}
	return append(b, '\n')
}

func readState(path string) (State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return State{}, err
	}
	st, err := decodeState(b)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// load reads the state of dataDir by the recovery rule (see doc.go):
// StateFile; if it is missing or unreadable, PrevStateFile; if that is too,
// a state rebuilt from the slots' binaries. It never fails: whatever is on
// disk, it returns a state under which some binary can boot. State.Recovered
// says when it did not come from StateFile.
func load(dataDir string) State {
	st, err := readState(filepath.Join(dataDir, StateFile))
	if err == nil {
		return st
	}
	missing := errors.Is(err, fs.ErrNotExist)
	prev, perr := readState(filepath.Join(dataDir, PrevStateFile))
	if perr == nil {
		prev.Recovered = fmt.Sprintf("%s unreadable (%v); using %s, the state before the last change", StateFile, err, PrevStateFile)
		if missing {
			prev.Recovered = fmt.Sprintf("%s missing; using %s, the state before the last change", StateFile, PrevStateFile)
		}
		return prev
	}
	st = scan(dataDir, time.Now())
	if missing && errors.Is(perr, fs.ErrNotExist) {
		if st.Active == NoSlot && st.Trial == NoSlot {
			// A device that was never updated: nothing to recover.
			return State{Format: StateFormat}
		}
		st.Recovered = fmt.Sprintf("no state record; %s", st.Recovered)
		return st
	}
	st.Recovered = fmt.Sprintf("%s unreadable (%v) and %s unreadable (%v); %s", StateFile, err, PrevStateFile, perr, st.Recovered)
	return st
}

// scan rebuilds a state from the slots' binaries alone. One binary: its
// slot is active. Two: the one written last is put on trial with the
// default tries and the other is active, so that if the newer one is a
// failed update the device goes back by itself. None: the installed binary.
func scan(dataDir string, now time.Time) State {
	st := State{Format: StateFormat}
	var found []Slot
	var mod [2]time.Time
	for _, s := range []Slot{SlotA, SlotB} {
		fi, err := checkBinary(dataDir, s, SlotInfo{})
		if err == nil {
			mod[len(found)] = fi.ModTime()
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		st.Recovered = "no binary in the slots; running the installed binary"
	case 1:
		st.Active = found[0]
		st.Recovered = fmt.Sprintf("only %s has a binary; it is active", found[0])
	default:
		older, newer := found[0], found[1]
		if mod[0].After(mod[1]) {
			older, newer = newer, older
		}
		st.Active, st.Trial = older, newer
		st.Tries, st.TriesLeft, st.TrialStarted = DefaultTries, DefaultTries, now
		st.Recovered = fmt.Sprintf("both slots have a binary; %s, written last, is on trial for %d tries with %s as rollback target", newer, DefaultTries, older)
	}
	return st
}

// checkBinary returns the file info of slot s's binary if it can be run:
// a regular, executable, non-empty file, and as large as the state says
// (a size of 0 in info means unknown).
func checkBinary(dataDir string, s Slot, info SlotInfo) (fs.FileInfo, error) {
	p := BinaryPath(dataDir, s)
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file", p)
	case fi.Mode().Perm()&0o111 == 0:
		return nil, fmt.Errorf("%s is not executable", p)
	case fi.Size() == 0:
		return nil, fmt.Errorf("%s is empty", p)
	case info.Size > 0 && fi.Size() != info.Size:
		return nil, fmt.Errorf("%s is %d bytes, the state says %d: damaged", p, fi.Size(), info.Size)
	}
	return fi, nil
}

// save replaces the state old (what load returned, even when it was
// recovered) with next: it first writes old to PrevStateFile, then next to
// StateFile, each atomically, so that a crash at any point leaves a
// StateFile that is old or next and a PrevStateFile that parses whenever
// StateFile does not. label names the steps for the failpoint.
func save(dataDir string, old, next State, now time.Time, label string) error {
	next.Format = StateFormat
	next.Generation = old.Generation + 1
	next.Updated = now.UTC()
	next.Recovered = ""
	if err := next.validate(); err != nil {
		return fmt.Errorf("ota: %s: refusing to write an invalid state: %v", label, err)
	}
	old.Format = StateFormat
	if err := writeAtomic(dataDir, PrevStateFile, encodeState(old), label+": prev"); err != nil {
		return err
	}
	return writeAtomic(dataDir, StateFile, encodeState(next), label+": state")
}

// writeAtomic replaces dir/name with b: write a temporary file in dir,
// fsync it, rename it over name, fsync dir.
func writeAtomic(dir, name string, b []byte, step string) error {
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("ota: write %s: %w", name, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
		}
	}()
	if _, err := f.Write(b); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ota: write %s: %w", tmp, err)
	}
	if err := hit(dir, step+" written"); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ota: fsync %s: %w", tmp, err)
	}
	done = true
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ota: close %s: %w", tmp, err)
	}
	if err := hit(dir, step+" synced"); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ota: rename %s: %w", tmp, err)
	}
	if err := hit(dir, step+" renamed"); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return hit(dir, step+" dir synced")
}

// syncDir fsyncs a directory, making the renames and creations in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("ota: fsync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ota: fsync directory %s: %w", dir, err)
	}
	return nil
}

// Status returns the state of dataDir by the recovery rule, without
// writing anything. A device that was never updated has the zero Active
// (the installed binary).
func Status(dataDir string) (State, error) {
	if _, err := os.Stat(dataDir); err != nil {
		return State{}, fmt.Errorf("ota: data directory: %w", err)
	}
	return load(dataDir), nil
}
