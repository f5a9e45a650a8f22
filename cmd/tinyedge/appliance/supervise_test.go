package appliance

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// supervise runs Supervise with the fake service doing mode.
func supervise(t *testing.T, o Options, mode string, env ...string) (How, *fakeSys) {
	t.Helper()
	skipUnlessExecSelf(t)
	sys := &fakeSys{}
	o.Machine = &Machine{Sys: sys, Root: t.TempDir()}
	o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	o.Service = []string{os.Args[0], "-test.run=^$"}
	o.Env = append(append(os.Environ(), serviceEnv+"="+mode), env...)
	o.DataDir = "/data"
	if o.Signals == nil {
		o.Signals = make(chan os.Signal)
	}
	done := make(chan How, 1)
	go func() { done <- Supervise(o) }()
	select {
	case how := <-done:
		return how, sys
	case <-time.After(30 * time.Second):
		t.Fatal("Supervise did not end")
	}
	return 0, nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestServiceAskingForARebootReboots(t *testing.T) {
	how, sys := supervise(t, Options{}, "restart")
	if how != Restart {
		t.Errorf("how = %v, want reboot", how)
	}
	if want := []string{"sync", "unmount data", "sync", "reboot reboot"}; !slices.Equal(sys.Calls(), want) {
		t.Errorf("calls %q, want %q", sys.Calls(), want)
	}
}

func TestOneShotPowersOff(t *testing.T) {
	how, sys := supervise(t, Options{OneShot: true}, "fail")
	if how != PowerOff || !slices.Contains(sys.Calls(), "reboot power off") {
		t.Errorf("how = %v, calls %q; want power off", how, sys.Calls())
	}
}

func TestFailedServiceIsRestarted(t *testing.T) {
	count := t.TempDir() + "/starts"
	how, _ := supervise(t, Options{}, "fail-then-restart", "APPLIANCE_TEST_COUNT="+count)
	b, _ := os.ReadFile(count)
	if how != Restart || len(b) != 2 {
		t.Errorf("how = %v after %d starts, want a restart after the failure, then the reboot asked for", how, len(b))
	}
}

func TestFailedTrialRebootsToCountATry(t *testing.T) {
	count := t.TempDir() + "/starts"
	how, _ := supervise(t, Options{Trial: true}, "fail-then-restart", "APPLIANCE_TEST_COUNT="+count)
	b, _ := os.ReadFile(count)
	if how != Restart || len(b) != 1 {
		t.Errorf("how = %v after %d starts, want a reboot after the first failure", how, len(b))
	}
}

func TestTrialThatNeverConfirmsIsRolledBack(t *testing.T) {
	expired := false
	how, sys := supervise(t, Options{Trial: true, TrialWindow: 200 * time.Millisecond,
		Confirmed: func() bool { return false }, TrialExpired: func() { expired = true }}, "wait-term")
	if how != Restart || !expired {
		t.Errorf("how = %v, expired = %v; want the rollback and a reboot", how, expired)
	}
	if !slices.Contains(sys.Calls(), "unmount data") {
		t.Errorf("calls %q: the service must be stopped and the data unmounted first", sys.Calls())
	}
}

func TestSignalStopsTheServiceThenPowersOff(t *testing.T) {
	sig := make(chan os.Signal, 1)
	stopped := false
	go func() {
		time.Sleep(200 * time.Millisecond)
		sig <- syscall.SIGUSR2
	}()
	how, _ := supervise(t, Options{Signals: sig, BeforeShutdown: func() { stopped = true }}, "wait-term")
	if how != PowerOff || !stopped {
		t.Errorf("how = %v, BeforeShutdown run = %v; want power off after it", how, stopped)
	}
}

func TestOrphansAreReaped(t *testing.T) {
	// The test process stands in for PID 1: orphans come to it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	orphanFile := t.TempDir() + "/orphan"
	count := t.TempDir() + "/starts"
	sig := make(chan os.Signal, 1)
	var orphan int
	go func() {
		// The service exits at once and is restarted; wait for its
		// orphan to have exited too, then shut down.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if b, err := os.ReadFile(orphanFile); err == nil {
				orphan, _ = strconv.Atoi(string(b))
				if orphan > 0 && !exists(orphan) {
					break // exited and reaped
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		sig <- syscall.SIGTERM
	}()
	supervise(t, Options{Signals: sig}, "orphan", "APPLIANCE_TEST_ORPHAN="+orphanFile, "APPLIANCE_TEST_COUNT="+count)
	if orphan == 0 {
		t.Fatal("the service left no orphan")
	}
	if exists(orphan) {
		t.Errorf("orphan %d is still there (a zombie?): not reaped", orphan)
	}
}

// exists reports whether process pid exists, zombies included.
func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil
}
