package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// No watchdog can be opened by an unprivileged test; the device is a
// plain file, which records what was written to it (the driver's side is
// exercised by the system test, with QEMU's i6300esb).
func TestFeedWhileHealthy(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWatchdog(dev, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Healthy, unhealthy twice, healthy again.
		FeedWhileHealthy(ctx, w, time.Millisecond, func() error {
			switch n := checks.Add(1); {
			case n == 2 || n == 3:
				return errors.New("module down")
			case n >= 5:
				cancel()
			}
			return nil
		}, nil)
	}()
	<-done
	b, _ := os.ReadFile(dev)
	got := string(b)
	if !strings.HasSuffix(got, "V") {
		t.Errorf("wrote %q: want the magic close 'V' last, so a clean stop does not reboot", got)
	}
	feeds := strings.Count(got, ".")
	if n := int(checks.Load()); feeds != n-2 {
		t.Errorf("%d feeds for %d checks of which 2 failed; want %d", feeds, n, n-2)
	}
}

func TestFeedStopsWhenTheCheckHangs(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "watchdog")
	os.WriteFile(dev, nil, 0o600)
	w, err := OpenWatchdog(dev, 0)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var checks atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		FeedWhileHealthy(ctx, w, time.Millisecond, func() error {
			if checks.Add(1) == 3 {
				<-release // the hub hangs
			}
			return nil
		}, nil)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for checks.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	before, _ := os.ReadFile(dev)
	time.Sleep(50 * time.Millisecond) // 50 feed intervals without a feed
	after, _ := os.ReadFile(dev)
	cancel()
	close(release)
	<-done
	if string(before) != "..." && string(before) != ".." {
		t.Errorf("before the hang: %q, want two feeds", before)
	}
	if string(after) != string(before) {
		t.Errorf("fed during the hang: %q then %q", before, after)
	}
}

func TestOpenWatchdogMissing(t *testing.T) {
	if _, err := OpenWatchdog(filepath.Join(t.TempDir(), "none"), time.Second); err == nil {
		t.Error("opened a watchdog that does not exist")
	}
}
