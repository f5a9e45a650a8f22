// Package ota is the device side of tinyedge's over-the-air updates: two
// slots for the tinyedge binary, a state record saying which one runs,
// and the operations that change it — Apply a signed bundle to the
// inactive slot, Boot into it on trial, Confirm it once healthy, or Roll
// it back — such that a power cut at any moment leaves a device that
// boots a complete binary, old or new. It returns errors and does not
// log, except through BootOpts.Logger.
//
// # Files
//
// Under the data directory:
//
//	slots/a/tinyedge          the binary of slot a (mode 0755)
//	slots/b/tinyedge          the binary of slot b
//	slots/<s>/tinyedge.new    a binary being written; never executed, and
//	                          removed or replaced by the next Apply
//	ota-state.json            the state record (JSON, see State)
//	ota-state.json.prev       the state record before its last change
//	ota-state.json[.prev].tmp a record being written; never read
//
// The installed binary (say /usr/local/bin/tinyedge, started by systemd or
// as PID 1) is not in a slot. It calls Boot first thing and Exec's the
// binary Boot chose; a device whose slots are empty keeps running it.
//
// # States
//
// The record names an active slot (or none: the installed binary), a
// trial slot (or none), the tries the trial has left, the previous slot
// (the version before the active one, or none), each slot's version, size
// and SHA-256, and the last result (trial, ok, rolled_back, apply_failed,
// with the version, the reason and the time).
//
// Transitions (A and B stand for either slot; "none" for the installed
// binary as active slot works the same, without a previous slot):
//
//	from                        event                  to                          runs
//	active A                    Apply                  active A, trial B, tries N  A until restarted
//	active A, trial B, k > 0    Boot                   active A, trial B, k-1      B
//	active A, trial B, k = 0    Boot                   active A, rolled back       A
//	active A, trial B           Boot, B damaged        active A, rolled back       A
//	active A, trial B           Rollback(reason)       active A, rolled back       A at next Boot
//	active A, trial B           Confirm                active B, previous A, ok    B
//	active B, previous A        Rollback(reason)       active A, previous B        A at next Boot
//	active B, previous A        Apply                  active B, trial A           B until restarted
//	active A, A damaged         Boot                   active = previous, or none  previous, or installed
//
// Apply refuses to run while a trial is on: the trial slot runs and the
// active slot is its rollback target, so there is no slot it may write.
// The active slot is never written; Apply writes the other one, which
// stops being the previous slot as soon as it is about to change.
//
// Boot counts a try by writing the decremented count before it returns,
// so a trial binary that crashes, hangs until a watchdog kills it, or
// never confirms uses up its tries (DefaultTries, 3) and the boot after
// the last is back on the active slot, with "rolled back: did not become
// healthy after 3 tries" recorded. A trial or active binary that is
// missing, not executable, or not the size the record says is never
// chosen. A binary Boot chose calls Boot too when it starts; it recognises
// itself (BootOpts.Self) and counts nothing.
//
// Health is the caller's: the new version runs WaitHealthy with its check
// (hub routing, modules running, upstream connected) and calls Confirm on
// success, or Rollback with the error as the reason when the window
// (DefaultHealthWindow, 120 s) passes.
//
// # Power cuts
//
// Every change is ordered so that what Boot may choose is complete and
// durable before the record names it:
//
//   - Apply streams the payload to tinyedge.new through one buffer,
//     checking the signed SHA-256 as it goes, and fsyncs it; only if the
//     bundle's payload reader ended without error does it go on. It then
//     writes a record in which the target slot has no version and is not
//     the previous slot, renames tinyedge.new over tinyedge, fsyncs the
//     slot directory, and writes the record that puts the slot on trial.
//   - Every record is written as PrevStateFile (the record being
//     replaced), then StateFile, each by writing a temporary file,
//     fsyncing it, renaming it over the old one and fsyncing the
//     directory. A crash leaves StateFile old or new, and PrevStateFile
//     parsing whenever StateFile may not.
//
// A crash before the trial record leaves the old state, naming the old
// binary, which was never touched; a crash after it leaves a complete new
// binary on trial with its rollback target intact. The tests stop each
// operation at each of these steps in turn and boot after it.
//
// # Recovery
//
// Boot, Apply, Confirm, Rollback and Status read the state by this rule:
//
//  1. StateFile, if it parses and is consistent;
//  2. else PrevStateFile, the state before the last change (a version
//     confirmed by that change is on trial again and confirms itself
//     again; a try counted by it is counted again);
//  3. else a state rebuilt from the slots: no binary — the installed
//     binary runs; one — its slot is active; two — the one written last
//     (modification time) is on trial with DefaultTries and the other is
//     its rollback target, so a bad newer binary still goes back by
//     itself. Rebuilt versions are unknown.
//
// State.Recovered and the Decision's Reason say which rule applied and
// why; Boot writes the recovered state back, so the next start reads
// StateFile again. A device never updated (no record, empty slots) is not
// a recovery and gets no record.
//
// # Caveats
//
//   - One operation at a time: nothing locks the data directory. The ota
//     module owns updates; the CLI must not apply while it does.
//   - The crash tests stop the process between steps, with everything
//     written so far kept. A real power cut may also lose writes not yet
//     fsynced; the order above never depends on one (each rename follows
//     the fsync of what it renames), but file systems that do not honour
//     fsync (some SD cards, mounts with barriers off) void the guarantee.
//   - Rule 3 relies on modification times, which a Raspberry Pi without a
//     real-time clock may have wrong; it picks a bootable binary either
//     way, and puts the newer-looking one on trial, not in charge.
//   - The installed binary runs Boot with its own version of this
//     package: later versions must keep the record readable by it
//     (StateFormat; a newer format is treated as unreadable, rule 2).
//   - WaitHealthy runs the check on the caller's goroutine; a check that
//     hangs holds it past the window. Give the check its own timeout.
//   - Confirm does not know which binary calls it: only the version on
//     trial should, once healthy.
//   - Tries are counted by the installed binary's Boot. A service manager
//     must start the installed binary, never a slot's: a slot binary that
//     calls Boot counts nothing, so started directly it would never be
//     rolled back.
//   - After a trial is rolled back its binary stays in its slot, unused,
//     until the next Apply overwrites it; it is never a rollback target.
package ota
