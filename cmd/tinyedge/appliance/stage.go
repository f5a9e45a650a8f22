package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tinyedge/tinyedge/build/ota"
)

// ErrNothingToRun means the boot stage found no tinyedge binary it could
// start on the data partition.
var ErrNothingToRun = errors.New("no tinyedge binary to run")

// Stage is the boot stage: what /init in the initramfs (cmd/tinyedge-boot)
// does between the kernel and the slot binary. Prepare loads the kernel
// modules and mounts the data partition; Handover asks build/ota which
// slot runs (counting a try for a version on trial) and execs that slot's
// binary as `init`, handing it the decision in its environment (Handoff).
// The caller mounts the kernel's file systems first (MountBase) and, if
// Handover returns, reboots: PID 1 must never exit.
type Stage struct {
	Machine *Machine
	// Logger gets the console lines; nil means none.
	Logger *slog.Logger
	// Version is the boot stage's own version, handed to the slot binary.
	Version string
	// Args are the arguments the kernel gave /init (after argv[0]); the
	// slot binary gets them unchanged after its own path.
	Args []string
	// Env is the environment the slot binary gets, with the Handoff.
	Env []string
	// Label is the data partition's file system label; "" means DataLabel.
	Label string
	// DataDir is where the data partition is mounted; "" means /data.
	DataDir string
	// MediaDir is where a disk labelled MediaLabel is mounted for a first
	// boot's install; "" means /media.
	MediaDir string
	// Wait is how long block devices may take to appear; 0 means 10 s.
	Wait time.Duration
	// Mkfs formats a blank data partition; nil means mkfs.ext4.
	Mkfs func(dev, label string) error
	// Exec replaces the process with path (execve(2)); nil means
	// syscall.Exec. It returns only on failure.
	Exec func(path string, argv, env []string) error
}

func (s *Stage) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return s.Logger
}

func (s *Stage) dataDir() string {
	if s.DataDir == "" {
		return "/data"
	}
	return s.DataDir
}

// Prepare loads the kernel modules the image lists and mounts the data
// partition, formatting it first if it is blank (first boot). Module
// failures are logged and boot goes on; a missing data partition is the
// error.
func (s *Stage) Prepare(ctx context.Context) (DataResult, error) {
	log := s.log()
	m := s.Machine
	if r, err := m.LoadModules(); err != nil {
		log.Error("load kernel modules", "err", err)
	} else if len(r.Loaded) > 0 || len(r.Failed) > 0 {
		log.Info("kernel modules", "loaded", len(r.Loaded), "already", strings.Join(r.Already, ","), "failed", len(r.Failed))
		for _, e := range r.Failed {
			log.Warn("kernel module", "err", e)
		}
	}
	dr, err := m.MountData(ctx, DataOpts{Label: s.Label, Target: s.dataDir(), Wait: s.Wait, Mkfs: s.Mkfs})
	if err != nil {
		return dr, err
	}
	if !dr.Already {
		log.Info("data partition", "device", dr.Device, "dir", dr.Target, "created", dr.Created)
	}
	return dr, nil
}

// Handover execs the binary of the slot build/ota.Boot chooses. If the
// exec fails, that slot cannot run: its version is rolled back
// (ota.Rollback, recording why) and Boot chooses again, so a trial falls
// back to its rollback target and an active version to the previous one.
// A data partition with no update state and no binary (the first boot of
// a blank one) gets slot a from the media disk's tinyedge, if there is
// one. Handover returns only when nothing could be exec'd, with an error
// saying why.
func (s *Stage) Handover() error {
	log := s.log()
	m := s.Machine
	dir := m.path(s.dataDir())
	exec := s.Exec
	if exec == nil {
		exec = syscall.Exec
	}
	tried := map[string]error{}
	installed := false
	for {
		d, err := ota.Boot(dir, &ota.BootOpts{Logger: log})
		if err != nil {
			log.Error("update state not written; running the safe choice", "err", err)
		}
		if d.Path == "" {
			// ota's "installed binary" is this boot stage, which cannot
			// run the hub.
			log.Warn("no slot holds a tinyedge binary to boot", "reason", d.Reason)
			if installed {
				return fmt.Errorf("%w: installed %s from the media, yet build/ota chose none", ErrNothingToRun, ota.BinaryPath(dir, ota.SlotA))
			}
			if len(tried) > 0 {
				return fmt.Errorf("%w: every slot failed to start (%v)", ErrNothingToRun, joinTried(tried))
			}
			ok, err := s.installFromMedia(dir)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrNothingToRun, err)
			}
			if !ok {
				return fmt.Errorf("%w: the data partition %s has no slot binary (%s) and no disk labelled %s holds a tinyedge to install; write the image's data.img to it (see build/image)",
					ErrNothingToRun, s.dataDir(), filepath.Join(s.dataDir(), ota.SlotsDir, "a", ota.BinaryName), MediaLabel)
			}
			installed = true
			continue
		}
		log.Info("boot", "slot", string(d.Slot), "version", d.Version, "trial", d.Trial, "reason", d.Reason)
		if err, ok := tried[d.Path]; ok {
			return fmt.Errorf("%w: %s chosen again after it failed to start: %v", ErrNothingToRun, d.Path, err)
		}
		argv := append([]string{d.Path}, s.Args...)
		env := Handoff{Stage: s.Version, Slot: d.Slot, Trial: d.Trial}.Environ(s.Env)
		err = exec(d.Path, argv, env)
		if err == nil {
			return nil // a fake Exec: the real one does not return on success
		}
		tried[d.Path] = err
		reason := fmt.Sprintf("rolled back: the boot stage could not start %s: %v", d.Path, err)
		log.Error("could not start the chosen version; rolling it back", "slot", string(d.Slot), "version", d.Version, "err", err)
		if rerr := ota.Rollback(dir, reason); rerr != nil {
			return fmt.Errorf("%w: %s failed to start (%v) and there is nothing to roll back to: %v", ErrNothingToRun, d.Path, err, rerr)
		}
	}
}

func joinTried(tried map[string]error) string {
	var parts []string
	for p, err := range tried {
		parts = append(parts, p+": "+err.Error())
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// installFromMedia makes slot a of a data partition that has never held
// tinyedge (no update state, no slot binary) a copy of the media disk's
// tinyedge; it reports whether it did. build/ota then finds one binary
// and makes its slot active (its recovery rule 3).
func (s *Stage) installFromMedia(dataDir string) (bool, error) {
	for _, f := range []string{ota.StateFile, ota.PrevStateFile} {
		if fileExists(filepath.Join(dataDir, f)) {
			return false, nil // not a first boot: the state says what is wrong
		}
	}
	media := s.MediaDir
	if media == "" {
		media = "/media"
	}
	dev, err := s.Machine.MountMedia(media)
	if err != nil {
		return false, fmt.Errorf("first boot: %w", err)
	}
	src := s.Machine.path(filepath.Join(media, ota.BinaryName))
	if !fileExists(src) {
		return false, nil
	}
	dst := ota.BinaryPath(dataDir, ota.SlotA)
	if err := copyBinary(src, dst); err != nil {
		return false, fmt.Errorf("first boot: install %s as %s: %w", src, dst, err)
	}
	s.log().Info("first boot: installed tinyedge from the media into slot a", "device", dev, "from", filepath.Join(media, ota.BinaryName))
	return true, nil
}

// copyBinary copies src to dst as build/ota writes a slot: to dst.new,
// synced, then renamed over dst and the directory synced, so a power cut
// leaves no partial binary where build/ota looks.
func copyBinary(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".new"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Halt syncs and reboots (or powers off) through reboot(2), again every
// `every` if that fails; it never returns. It is where PID 1 ends.
func (m *Machine) Halt(how How, every time.Duration, log *slog.Logger) {
	for {
		m.Sys.Sync()
		if err := m.Sys.Reboot(how); err != nil && log != nil {
			log.Error("reboot(2)", "how", how.String(), "err", err)
		}
		time.Sleep(every)
	}
}

// The environment variables of the Handoff.
const (
	// HandoffStageEnv is the boot stage's version; set, it says the boot
	// stage ran: the kernel's file systems and the data partition are
	// mounted, the modules loaded, and build/ota.Boot counted the try.
	HandoffStageEnv = "TINYEDGE_BOOT_STAGE"
	// HandoffSlotEnv is the slot the boot stage exec'd: a or b.
	HandoffSlotEnv = "TINYEDGE_BOOT_SLOT"
	// HandoffTrialEnv is "true" when that slot runs on trial.
	HandoffTrialEnv = "TINYEDGE_BOOT_TRIAL"
)

// Handoff is what the boot stage tells the slot binary it execs, so that
// `tinyedge init` does not do the boot stage's work again — above all,
// does not call build/ota.Boot, which would find a try already counted.
type Handoff struct {
	Stage string   // the boot stage's version
	Slot  ota.Slot // the slot exec'd
	Trial bool     // the slot runs on trial: it must confirm itself
}

// Environ returns env without any earlier handoff, plus h's.
func (h Handoff) Environ(env []string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == HandoffStageEnv || k == HandoffSlotEnv || k == HandoffTrialEnv {
			continue
		}
		out = append(out, kv)
	}
	stage := h.Stage
	if stage == "" {
		stage = "unknown"
	}
	return append(out, HandoffStageEnv+"="+stage, HandoffSlotEnv+"="+string(h.Slot), HandoffTrialEnv+"="+strconv.FormatBool(h.Trial))
}

// ReadHandoff reads the boot stage's Handoff through getenv (os.Getenv).
// It reports false when there is none: the binary was not exec'd by the
// boot stage, and does the boot stage's work itself. A handoff that is
// there but garbled is an error.
func ReadHandoff(getenv func(string) string) (Handoff, bool, error) {
	h := Handoff{Stage: getenv(HandoffStageEnv)}
	if h.Stage == "" {
		return Handoff{}, false, nil
	}
	switch s := ota.Slot(getenv(HandoffSlotEnv)); s {
	case ota.SlotA, ota.SlotB:
		h.Slot = s
	default:
		return h, true, fmt.Errorf("boot stage handoff: %s=%q, want a or b", HandoffSlotEnv, string(s))
	}
	switch t := getenv(HandoffTrialEnv); t {
	case "true":
		h.Trial = true
	case "false", "":
	default:
		return h, true, fmt.Errorf("boot stage handoff: %s=%q, want true or false", HandoffTrialEnv, t)
	}
	return h, true, nil
}
