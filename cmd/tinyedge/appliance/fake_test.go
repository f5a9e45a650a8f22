package appliance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(serviceEnv); mode != "" {
		fakeService(mode)
		return
	}
	goleak.VerifyTestMain(m)
}

// fakeSys records the calls PID 1 makes to the kernel.
type fakeSys struct {
	mu      sync.Mutex
	calls   []string
	modErrs map[string]error // by base name without .ko
	mountFn func(target string) error
	clock   []unix.Timeval
}

var _ Sys = (*fakeSys)(nil)

func (f *fakeSys) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeSys) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeSys) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.record("mount %s %s %s", filepath.Base(source), filepath.Base(target), fstype)
	if f.mountFn != nil {
		return f.mountFn(target)
	}
	return nil
}

func (f *fakeSys) Unmount(target string, flags int) error {
	f.record("unmount %s", filepath.Base(target))
	return nil
}

func (f *fakeSys) LoadModule(path string) error {
	name := strings.TrimSuffix(filepath.Base(path), ".ko")
	f.record("load %s", name)
	if _, err := os.Stat(path); err != nil {
		return err
	}
	return f.modErrs[name]
}

func (f *fakeSys) Sethostname(name string) error { f.record("hostname %s", name); return nil }
func (f *fakeSys) Sync()                         { f.record("sync") }
func (f *fakeSys) Reboot(how How) error          { f.record("reboot %s", how); return nil }
func (f *fakeSys) Settimeofday(t unix.Timeval) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock = append(f.clock, t)
	return nil
}

// writeFile writes data to root/p, creating directories.
func writeFile(t *testing.T, root, p string, data []byte) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The service the supervision tests run: this test binary, re-executed
// with serviceEnv set to what it should do.
const serviceEnv = "APPLIANCE_TEST_SERVICE"

func fakeService(mode string) {
	if f := os.Getenv("APPLIANCE_TEST_COUNT"); f != "" {
		// Count the starts: one byte per start.
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fh.Write([]byte{'x'})
			fh.Close()
		}
		if b, _ := os.ReadFile(f); len(b) == 1 && mode == "fail-then-restart" {
			os.Exit(1)
		}
	}
	switch mode {
	case "restart", "fail-then-restart":
		os.Exit(ExitRestart)
	case "ok":
		os.Exit(0)
	case "fail":
		os.Exit(3)
	case "orphan":
		// Leave a child behind that outlives us, then ask for a reboot
		// once it is written down where the test finds it.
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), serviceEnv+"=sleep-briefly")
		if err := cmd.Start(); err != nil {
			os.Exit(1)
		}
		os.WriteFile(os.Getenv("APPLIANCE_TEST_ORPHAN"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o644)
		os.Exit(0)
	case "sleep-briefly":
		select {
		case <-sigterm():
		case <-after(300):
		}
		os.Exit(0)
	case "wait-term":
		<-sigterm()
		os.Exit(0)
	}
	os.Exit(2)
}

func skipUnlessExecSelf(t *testing.T) {
	t.Helper()
	if err := exec.Command(os.Args[0], "-test.run=^$").Run(); errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("cannot exec the test binary here (emulated?): %v", err)
	}
}
