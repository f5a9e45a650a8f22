package ota

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/tinyedge/tinyedge/build/bundle"
)

// copyBufSize is the one buffer a payload streams through: Apply's memory
// does not grow with the payload.
const copyBufSize = 32 << 10

// ApplyOpts configures Apply.
type ApplyOpts struct {
	// TrustedKeys verify the bundle's signature; any one of them may have
	// signed it (several allow rotating the signing key). Required.
	TrustedKeys []ed25519.PublicKey
	// GOARCH and GOARM are this device's target; "" means the running
	// binary's (runtime.GOARCH and the GOARM it was built with).
	GOARCH, GOARM string
	// CurrentVersion is the running version, for the downgrade and
	// minimum-version checks. Required.
	CurrentVersion string
	// AllowDowngrade lets an older version be installed on purpose.
	AllowDowngrade bool
	// Progress, if set, is called with the payload bytes written so far
	// and the payload size: first with 0, then after each write, last
	// with done == total.
	Progress func(done, total int64)
	// Tries is how many boots the new version gets to confirm itself;
	// 0 means DefaultTries.
	Tries int
	// Now is the clock for the state's timestamps; nil means time.Now.
	Now func() time.Time
}

// Result describes the bundle that Apply installed.
type Result struct {
	Slot    Slot   // the slot written, now on trial
	Path    string // its binary
	Version string
	Size    int64
	SHA256  string // hex, as signed
	KeyID   string // the trusted key that verified the bundle
	Tries   int
}

// Apply verifies the bundle read from r and installs its binary in the
// inactive slot, on trial: the next Boot runs it. In order: the signature
// against opts.TrustedKeys, the target architecture, the version (no
// downgrade unless allowed, the bundle's minimum version), the payload
// list (exactly one payload, "tinyedge"), no update already on trial;
// then the payload streams to slots/<inactive>/tinyedge.new, hashed as it
// goes, and only if it verifies is it fsynced and renamed over
// slots/<inactive>/tinyedge; last, the state puts that slot on trial.
//
// A refusal (any check above, or payload bytes that do not match the
// signed digest, or a bundle cut short) returns an error saying why and
// what to do, and leaves the slots and the state as they were. The slot
// that runs (Active) is never written.
func Apply(ctx context.Context, dataDir string, r io.Reader, opts ApplyOpts) (Result, error) {
	if opts.CurrentVersion == "" {
		return Result{}, invalid("ApplyOpts.CurrentVersion is empty; pass the running version")
	}
	if opts.Tries == 0 {
		opts.Tries = DefaultTries
	}
	if opts.Tries < 1 || opts.Tries > maxTries {
		return Result{}, invalid("ApplyOpts.Tries is %d; give 1 to %d", opts.Tries, maxTries)
	}
	if opts.GOARCH == "" {
		opts.GOARCH, opts.GOARM = runtime.GOARCH, BuildGOARM()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		return Result{}, fmt.Errorf("ota: data directory %s is not a directory (%v); create it or fix --data-dir", dataDir, err)
	}

	br, err := bundle.Open(r, opts.TrustedKeys)
	if err != nil {
		return Result{}, refused(err)
	}
	m := br.Manifest()
	if err := m.CheckTarget(opts.GOARCH, opts.GOARM); err != nil {
		return Result{}, refused(err)
	}
	if err := m.CheckUpgrade(opts.CurrentVersion, opts.AllowDowngrade); err != nil {
		return Result{}, refused(err)
	}
	if len(m.Payloads) != 1 || m.Payloads[0].Name != BinaryName {
		names := make([]string, len(m.Payloads))
		for i, p := range m.Payloads {
			names[i] = p.Name
		}
		return Result{}, refused(fmt.Errorf("%w: it carries payloads %q, a tinyedge update carries exactly one, %q; make it with `tinyedge bundle create --binary`", ErrNoBinary, names, BinaryName))
	}
	st := load(dataDir)
	if st.Trial != NoSlot {
		return Result{}, fmt.Errorf("%w: the binary %s in %s has %d of %d tries left; wait for it to confirm itself or roll back (`tinyedge update rollback`), then apply again",
			ErrTrialInProgress, versionText(st.Slot(st.Trial).Version), st.Trial, st.TriesLeft, st.Tries)
	}
	a := applier{dir: dataDir, st: st, target: st.Active.Other(), opts: opts}
	return a.install(ctx, br, m)
}

// refused wraps a verification error.
func refused(err error) error {
	return fmt.Errorf("ota: bundle refused, nothing was installed: %w", err)
}

type applier struct {
	dir    string
	st     State
	target Slot
	opts   ApplyOpts
}

func (a *applier) install(ctx context.Context, br *bundle.Reader, m bundle.Manifest) (Result, error) {
	p, pr, err := br.Next()
	if err != nil {
		return Result{}, refused(err)
	}
	slotDir := filepath.Join(a.dir, SlotsDir, string(a.target))
	newPath := filepath.Join(slotDir, BinaryName+newSuffix)
	made, err := a.mkdirs(slotDir)
	if err != nil {
		return Result{}, err
	}
	if err := a.stream(ctx, newPath, pr, p.Size); err != nil {
		if !isCrash(err) {
			// Leave the slots as they were: no .new, no new directory.
			os.Remove(newPath)
			for i := len(made) - 1; i >= 0; i-- {
				os.Remove(made[i])
			}
		}
		return Result{}, err
	}

	// The payload is verified and durable in .new. From here on the
	// target slot changes, so first the state stops naming it as a
	// rollback target and forgets its old version.
	now := a.opts.Now()
	old := a.st
	next := a.st
	if next.Previous == a.target {
		next.Previous = NoSlot
	}
	next.setSlot(a.target, SlotInfo{})
	if info := next.Slot(next.Active); next.Active != NoSlot && info.Version == "" {
		info.Version = a.opts.CurrentVersion // the running version, unrecorded until now
		next.setSlot(next.Active, info)
	}
	if next != old || old.Recovered != "" {
		if err := save(a.dir, old, next, now, "apply release slot"); err != nil {
			return Result{}, a.failed(err, newPath, next)
		}
		old = next
	}
	binPath := filepath.Join(slotDir, BinaryName)
	if err := os.Rename(newPath, binPath); err != nil {
		return Result{}, a.failed(fmt.Errorf("ota: install %s: %w", binPath, err), newPath, old)
	}
	if err := hit(a.dir, "apply: binary renamed"); err != nil {
		return Result{}, err
	}
	if err := syncDir(slotDir); err != nil {
		return Result{}, a.failed(err, "", old)
	}
	if err := hit(a.dir, "apply: slot dir synced"); err != nil {
		return Result{}, err
	}
	next = old
	next.setSlot(a.target, SlotInfo{Version: m.Version, Size: p.Size, SHA256: p.Digest(), Installed: now.UTC()})
	next.Trial, next.Tries, next.TriesLeft, next.TrialStarted = a.target, a.opts.Tries, a.opts.Tries, now.UTC()
	next.Last = LastResult{Outcome: OutcomeTrial, Version: m.Version, At: now.UTC()}
	if err := save(a.dir, old, next, now, "apply start trial"); err != nil {
		return Result{}, a.failed(err, "", old)
	}
	return Result{Slot: a.target, Path: binPath, Version: m.Version, Size: p.Size, SHA256: p.Digest(), KeyID: br.KeyID(), Tries: a.opts.Tries}, nil
}

// failed records an I/O failure after the state changed and returns err.
// It removes the .new file, if any, and best-effort records the failure.
// A crash is returned as it is.
func (a *applier) failed(err error, newPath string, st State) error {
	if isCrash(err) {
		return err
	}
	if newPath != "" {
		os.Remove(newPath)
	}
	next := st
	next.Last = LastResult{Outcome: OutcomeApplyFailed, Reason: err.Error(), At: a.opts.Now().UTC()}
	if serr := save(a.dir, st, next, a.opts.Now(), "apply record failure"); serr != nil && !isCrash(serr) {
		return fmt.Errorf("%w (and recording the failure: %v)", err, serr)
	}
	return err
}

// mkdirs creates what is missing of dataDir/slots/<target>, fsyncing each
// parent it adds an entry to, and returns the directories it created.
func (a *applier) mkdirs(slotDir string) ([]string, error) {
	var made []string
	for _, d := range []string{filepath.Dir(slotDir), slotDir} {
		err := os.Mkdir(d, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return made, fmt.Errorf("ota: create %s: %w", d, err)
		}
		made = append(made, d)
		if err := hit(a.dir, "apply: mkdir "+filepath.Base(d)); err != nil {
			return made, err
		}
		if err := syncDir(filepath.Dir(d)); err != nil {
			return made, err
		}
	}
	return made, nil
}

// stream copies the payload to path through one fixed buffer, then
// fsyncs it. It fails, leaving path for the caller to remove, unless the
// payload reader ended without error: its digest matched.
func (a *applier) stream(ctx context.Context, path string, pr io.Reader, total int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("ota: create %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Chmod(0o755); err != nil { // the umask may have narrowed it
		return fmt.Errorf("ota: chmod %s: %w", path, err)
	}
	if err := hit(a.dir, "apply: new file created"); err != nil {
		return err
	}
	progress := a.opts.Progress
	if progress == nil {
		progress = func(int64, int64) {}
	}
	progress(0, total)
	buf := make([]byte, copyBufSize)
	var done int64
	half := false
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("ota: apply canceled after %d of %d bytes: %w", done, total, err)
		}
		n, rerr := pr.Read(buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return fmt.Errorf("ota: write %s: %w", path, err)
			}
			done += int64(n)
			progress(done, total)
			if !half && done >= total/2 && done < total {
				half = true
				if err := hit(a.dir, "apply: new file half written"); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return refused(rerr)
		}
	}
	if err := hit(a.dir, "apply: new file written"); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("ota: fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ota: close %s: %w", path, err)
	}
	return hit(a.dir, "apply: new file synced")
}

// BuildGOARM returns the GOARM the running binary was built with, "" if
// unknown or not arm.
func BuildGOARM() string {
	if runtime.GOARCH != "arm" {
		return ""
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				return s.Value
			}
		}
	}
	return ""
}
