package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/store/internal/crashtest"
)

const (
	crashPathEnv = "TINYEDGE_CRASH_CHILD"
	crashRunEnv  = "TINYEDGE_CRASH_RUN"
)

// lockedBuffer is a bytes.Buffer the test can poll while exec copies the
// child's output into it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestMain(m *testing.M) {
	if path := os.Getenv(crashPathEnv); path != "" {
		run, _ := strconv.ParseUint(os.Getenv(crashRunEnv), 10, 32)
		if err := crashtest.Write(context.Background(), path, uint32(run), 8, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// TestCrashRecovery kills a writer process with SIGKILL at random moments,
// restarts it each time, and finally checks that every committed message
// was delivered and no acknowledged one came back. TINYEDGE_SOAK=1 runs
// 60 kills instead of 10.
func TestCrashRecovery(t *testing.T) {
	kills := 10
	if os.Getenv("TINYEDGE_SOAK") == "1" {
		kills = 60
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "store.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var logs []string
	for run := 1; run <= kills; run++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashPathEnv+"="+path, crashRunEnv+"="+strconv.Itoa(run))
		var stdout, stderr lockedBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			if errors.Is(err, syscall.ENOEXEC) {
				t.Skipf("cannot re-execute the test binary here (%v): under qemu-user without binfmt_misc the crash test cannot start its writer process; run it natively", err)
			}
			t.Fatal(err)
		}
		// Let it get going (open, rebuild the freelist), then kill it at a
		// random moment.
		wait := time.Duration(30+rng.IntN(200)) * time.Millisecond
		deadline := time.Now().Add(10 * time.Second)
		for stdout.Len() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(wait)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: writer ended with %v before the kill: %s", run, err, stderr.String())
		}
		logs = append(logs, stdout.String())
	}
	drained, err := crashtest.Drain(path)
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	r, err := crashtest.Check(logs, drained)
	t.Logf("%d kills: committed %d, delivered %d, drained %d, redelivered %d", kills, r.Committed, r.Delivered, r.Drained, r.Redelivered)
	if err != nil {
		t.Fatal(err)
	}
	if r.Committed == 0 {
		t.Fatal("the writers committed nothing")
	}
}
