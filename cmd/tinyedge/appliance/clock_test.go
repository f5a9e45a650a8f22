package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRestoreClock(t *testing.T) {
	build := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	saved := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		saved time.Time // zero: no clock file
		now   time.Time
		want  time.Time // zero: left alone
	}{
		{"no RTC, 1970, saved time", saved, time.Unix(0, 0), saved},
		{"no RTC, first boot", time.Time{}, time.Unix(0, 0), build},
		{"saved time older than the build", build.Add(-time.Hour), time.Unix(0, 0), build},
		{"clock ahead of the saved time", saved, saved.Add(time.Hour), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := &fakeSys{}
			m := &Machine{Sys: sys, Root: t.TempDir()}
			os.MkdirAll(m.path("/data"), 0o755)
			if !tt.saved.IsZero() {
				if err := m.SaveClock("/data", tt.saved); err != nil {
					t.Fatal(err)
				}
			}
			got, err := m.RestoreClock("/data", build, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("set to %v, want %v", got, tt.want)
			}
			if tt.want.IsZero() != (len(sys.clock) == 0) {
				t.Errorf("settimeofday calls %v, want one exactly when the clock moves", sys.clock)
			} else if len(sys.clock) == 1 && int64(sys.clock[0].Sec) != tt.want.Unix() {
				t.Errorf("settimeofday(%d), want %d", sys.clock[0].Sec, tt.want.Unix())
			}
		})
	}
}

func TestRestoreClockWithAGarbledFile(t *testing.T) {
	sys := &fakeSys{}
	m := &Machine{Sys: sys, Root: t.TempDir()}
	writeFile(t, m.Root, "/data/"+ClockFile, []byte("yesterday"))
	build := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got, err := m.RestoreClock("/data", build, time.Unix(0, 0))
	if err == nil || !got.Equal(build) {
		t.Errorf("got %v, %v; want the build time and the file's error reported", got, err)
	}
}

func TestKeepClockSyncsMarksAndSaves(t *testing.T) {
	sys := &fakeSys{}
	m := &Machine{Sys: sys, Root: t.TempDir()}
	os.MkdirAll(m.path("/data"), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	asked := make(chan string, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.KeepClock(ctx, ClockOpts{DataDir: "/data", Servers: []string{"down:123", "up:123"}, Every: time.Hour,
			Query: func(_ context.Context, s string) (time.Duration, error) {
				asked <- s
				if s == "down:123" {
					return 0, errors.New("timeout")
				}
				return time.Hour, nil
			}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !fileExists(m.path(SyncedMarker)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if !fileExists(m.path(SyncedMarker)) {
		t.Fatal("no synced marker")
	}
	if len(sys.clock) != 1 || time.Unix(int64(sys.clock[0].Sec), 0).Before(time.Now().Add(59*time.Minute)) {
		t.Errorf("settimeofday %v, want one call an hour ahead", sys.clock)
	}
	if got := []string{<-asked, <-asked}; got[0] != "down:123" || got[1] != "up:123" {
		t.Errorf("asked %q, want the servers in order", got)
	}
	saved, err := readClock(filepath.Join(m.Root, "data", ClockFile))
	if err != nil || time.Since(saved) > time.Minute {
		t.Errorf("saved clock %v, %v; want now", saved, err)
	}
}
