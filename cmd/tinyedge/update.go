package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tinyedge/tinyedge/build/bundle"
	"github.com/tinyedge/tinyedge/build/ota"
	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/deploy"
)

// keysDir is where a device keeps the public keys it trusts for updates:
// <data-dir>/keys/*.pub, several for key rotation.
func keysDir(dataDir string) string { return filepath.Join(dataDir, "keys") }

// trustedKeys loads every *.pub in dir.
func trustedKeys(dir string) ([]ed25519.PublicKey, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no trusted update keys in %s: copy the public key(s) made by `tinyedge bundle keygen` there (NAME.pub)", dir)
	}
	return bundle.LoadPublicKeys(files...)
}

// currentVersion is the running version as a semver for update checks: a
// development build ("dev", or a bare commit) counts as 0.0.0-dev, older
// than any release.
func currentVersion() string {
	if _, err := bundle.ParseVersion(version); err == nil {
		return strings.TrimPrefix(version, "v")
	}
	return "0.0.0-dev"
}

// deviceUpdater installs bundles into the data directory's slots; it is
// what the ota module and `tinyedge update apply` use.
type deviceUpdater struct {
	dataDir        string
	allowDowngrade bool
	restart        func(reason string)
}

func (u *deviceUpdater) Current() string { return currentVersion() }

func (u *deviceUpdater) Apply(ctx context.Context, r io.Reader, progress func(done, total int64)) (string, error) {
	keys, err := trustedKeys(keysDir(u.dataDir))
	if err != nil {
		return "", err
	}
	a, err := ota.Apply(ctx, u.dataDir, r, ota.ApplyOpts{
		TrustedKeys:    keys, // GOARCH/GOARM: the running binary's
		CurrentVersion: currentVersion(), AllowDowngrade: u.allowDowngrade, Progress: progress,
	})
	if err != nil {
		return "", err
	}
	return a.Version, nil
}

func (u *deviceUpdater) Restart(reason string) {
	if u.restart != nil {
		u.restart(reason)
	}
}

// cmdUpdate runs `tinyedge update apply|status|rollback`.
func cmdUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: want `tinyedge update apply FILE`, `update status` or `update rollback`", errUsage)
	}
	fs := flag.NewFlagSet("update "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "tinyedge's data `DIR`")
	downgrade := fs.Bool("allow-downgrade", false, "install an older version on purpose")
	reason := fs.String("reason", "asked for with `tinyedge update rollback`", "why, for the record")
	// Flags may come before or after the bundle FILE.
	var rest []string
	for a := args[1:]; ; {
		if err := fs.Parse(a); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		a = fs.Args()[1:]
	}
	switch args[0] {
	case "apply":
		if len(rest) != 1 {
			return fmt.Errorf("%w: update apply takes one bundle FILE", errUsage)
		}
		f, err := os.Open(rest[0])
		if err != nil {
			return err
		}
		defer f.Close()
		u := &deviceUpdater{dataDir: *dataDir, allowDowngrade: *downgrade}
		bar := newProgressBar(stderr)
		v, err := u.Apply(ctx, f, bar.update)
		bar.done()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "installed %s on trial; restart tinyedge to boot it (it rolls back unless it confirms itself healthy)\n", v)
		return nil
	case "status":
		if len(rest) > 0 {
			return fmt.Errorf("%w: update status takes no arguments", errUsage)
		}
		st, err := ota.Status(*dataDir)
		if err != nil {
			return err
		}
		printStatus(stdout, st)
		return nil
	case "rollback":
		if err := ota.Rollback(*dataDir, *reason); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "rolled back; restart tinyedge to boot the previous version")
		return nil
	}
	return fmt.Errorf("%w: unknown update command %q", errUsage, args[0])
}

func printStatus(w io.Writer, st ota.State) {
	show := func(s ota.Slot) string {
		if s == ota.NoSlot {
			return "-"
		}
		v := st.Slot(s).Version
		if v == "" {
			v = "unknown version"
		}
		return fmt.Sprintf("%s (%s)", s, v)
	}
	fmt.Fprintf(w, "running   %s\n", currentVersion())
	fmt.Fprintf(w, "active    %s\n", show(st.Active))
	fmt.Fprintf(w, "previous  %s\n", show(st.Previous))
	if st.Trial != ota.NoSlot {
		fmt.Fprintf(w, "trial     %s, %d boot(s) left\n", show(st.Trial), st.TriesLeft)
	} else {
		fmt.Fprintln(w, "trial     -")
	}
	if st.Last.Outcome != "" {
		fmt.Fprintf(w, "last      %s %s %s %s\n", st.Last.Outcome, st.Last.Version, st.Last.At.Format(time.RFC3339), st.Last.Reason)
	}
	if st.Recovered != "" {
		fmt.Fprintf(w, "note      %s\n", st.Recovered)
	}
}

// progressBar draws apply progress on a terminal and nothing elsewhere.
type progressBar struct {
	w    io.Writer
	tty  bool
	mu   sync.Mutex
	last int
}

func newProgressBar(w io.Writer) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, tty: tty, last: -1}
}

func (p *progressBar) update(done, total int64) {
	if !p.tty || total <= 0 {
		return
	}
	pct := int(done * 100 / total)
	p.mu.Lock()
	defer p.mu.Unlock()
	if pct == p.last {
		return
	}
	p.last = pct
	fmt.Fprintf(p.w, "\r[%-40s] %3d%%", strings.Repeat("#", pct*40/100), pct)
}

func (p *progressBar) done() {
	if p.tty && p.last >= 0 {
		fmt.Fprintln(p.w)
	}
}

// errRestartForUpdate ends `tinyedge run` so the new version can boot.
var errRestartForUpdate = errors.New("restart into the updated version")

// installedEnv names the installed binary for the slot binaries it
// starts, so a restart for an update begins at the OTA start-up path.
const installedEnv = "TINYEDGE_INSTALLED"

// trialEnv marks a trial run under the watch of the installed binary.
const trialEnv = "TINYEDGE_TRIAL"

// exitRestart is the exit status of a run that ended to restart into
// another version (EX_TEMPFAIL: a supervisor starts it again).
const exitRestart = 75

// bootSlot runs the OTA start-up path: choose the slot and exec its
// binary when it is not the one running. A version on trial is not
// exec'd but run as a child under watch (superviseTrial), so a version
// that hangs is rolled back too. It returns the decision for this process
// (whose trial it must confirm), or done when a supervised trial has run
// and this process should exit with its status.
func bootSlot(ctx context.Context, dataDir string, window time.Duration, log *slog.Logger) (d ota.Decision, done *exitError) {
	// Remember the installed binary for the slot binaries started from
	// it: a restart for an update starts again from there.
	if os.Getenv(installedEnv) == "" {
		if self, err := os.Executable(); err == nil {
			os.Setenv(installedEnv, self)
		}
	}
	for {
		var err error
		d, err = ota.Boot(dataDir, &ota.BootOpts{Logger: log})
		if err != nil {
			log.Error("update state not written; running the safe choice", "err", err)
		}
		if d.Slot == ota.NoSlot {
			return d, nil
		}
		log.Info("boot", "slot", string(d.Slot), "version", d.Version, "trial", d.Trial, "reason", d.Reason)
		if d.Trial && !isSelf(d.Path) {
			code, rolledBack := superviseTrial(ctx, dataDir, d, window, log)
			if !rolledBack {
				return d, &exitError{code: code}
			}
			continue // boot again: the previous version
		}
		if err := ota.Exec(d, os.Args, os.Environ()); err != nil {
			log.Error("could not start the chosen version; going on with this one", "err", err)
			return ota.Decision{}, nil
		}
		return d, nil
	}
}

// isSelf reports whether path is the running binary.
func isSelf(path string) bool {
	self, err := os.Executable()
	if err != nil {
		return false
	}
	a, aerr := os.Stat(self)
	b, berr := os.Stat(path)
	return aerr == nil && berr == nil && os.SameFile(a, b)
}

// trialGrace is how long past its health window a trial version may take
// to record its confirmation before it is taken for hung: a quarter of
// the window (30 s for the default 120 s), at least a second.
func trialGrace(window time.Duration) time.Duration { return max(window/4, time.Second) }

// superviseTrial runs the trial version as a child, forwarding signals,
// and waits for it to confirm itself (the state leaves trial). If it has
// not within the health window and a grace period, it is killed and
// rolled back. It returns the child's exit status once the child ends, or
// rolledBack when it gave up on it.
func superviseTrial(ctx context.Context, dataDir string, d ota.Decision, window time.Duration, log *slog.Logger) (code int, rolledBack bool) {
	cmd := exec.Command(d.Path, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), trialEnv+"=1")
	// If this supervisor dies, the trial dies with it; the next start
	// counts another try.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Error("start the trial version", "path", d.Path, "err", err)
		return 1, false
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	poll := time.NewTicker(500 * time.Millisecond)
	defer poll.Stop()
	deadline := time.NewTimer(window + trialGrace(window))
	defer deadline.Stop()
	done := ctx.Done()
	confirmed := false
	for {
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ee.ExitCode() == exitRestart {
					// It rolled itself back, or installed another
					// update: choose again.
					return 0, true
				}
				return ee.ExitCode(), false
			}
			if err != nil {
				return 1, false
			}
			return 0, false
		case <-done:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done = nil
		case <-hup:
			_ = cmd.Process.Signal(syscall.SIGHUP)
		case <-poll.C:
			if confirmed {
				continue
			}
			if st, err := ota.Status(dataDir); err == nil && st.Trial == ota.NoSlot {
				confirmed = true
				deadline.Stop()
			}
		case <-deadline.C:
			if st, err := ota.Status(dataDir); err == nil && st.Trial == ota.NoSlot {
				confirmed = true
				continue
			}
			reason := fmt.Sprintf("the new version did not confirm itself within %s (hung?)", window+trialGrace(window))
			log.Error("trial version unresponsive; rolling back", "reason", reason)
			_ = cmd.Process.Kill()
			<-exited
			if err := ota.Rollback(dataDir, reason); err != nil {
				log.Error("roll back", "err", err)
			}
			return 0, true
		}
	}
}

// confirmWhenHealthy waits for the hub to be healthy — the deployment
// applied and every module whose restartPolicy is always running and not
// reporting itself unhealthy — and
// confirms the trial version; if it is not within the window it rolls
// back and ends the run so the previous version boots.
func confirmWhenHealthy(ctx context.Context, dataDir string, h *hub.Hub, m *deploy.Manifest, window time.Duration, log *slog.Logger, stop func(error)) {
	always := map[string]bool{}
	for _, mod := range m.Modules {
		always[mod.Name] = mod.Status == hub.StatusRunning && hub.RestartPolicy(mod.RestartPolicy) == hub.RestartAlways
	}
	// A module counts as running once it has stayed up a while: one that
	// fails and restarts is "running" for moments in between.
	stable := min(10*time.Second, window/3)
	check := func() error {
		// Every module that must run has to be there: right after
		// start-up the hub may not list them all yet, and an empty list
		// is not a healthy one.
		seen := 0
		for _, st := range h.ModuleStatus() {
			if !always[st.Name] {
				continue
			}
			seen++
			if st.State != hub.StateRunning {
				return fmt.Errorf("module %s is %s %s", st.Name, st.State, st.LastExit)
			}
			if !st.Healthy {
				return fmt.Errorf("module %s reports itself unhealthy: %s", st.Name, st.Health)
			}
			if up := time.Since(st.Since); up < stable {
				return fmt.Errorf("module %s has been running only %s (restarts: %d, last exit: %s)", st.Name, up.Round(time.Millisecond), st.RestartCount, st.LastExit)
			}
		}
		if want := countTrue(always); seen < want {
			return fmt.Errorf("%d of %d modules started", seen, want)
		}
		return nil
	}
	log.Info("new version on trial; confirming it once healthy", "version", currentVersion(), "window", window)
	err := ota.WaitHealthy(ctx, window, check)
	switch {
	case err == nil:
		if err := ota.Confirm(dataDir); err != nil {
			log.Error("confirm the new version", "err", err)
			return
		}
		log.Info("new version confirmed healthy", "version", currentVersion())
	case ctx.Err() != nil:
		// Stopped before the window ended: the next boot counts a try.
	default:
		log.Error("new version did not become healthy; rolling back", "err", err)
		if err := ota.Rollback(dataDir, err.Error()); err != nil {
			log.Error("roll back", "err", err)
		}
		stop(errRestartForUpdate)
	}
}

func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}
