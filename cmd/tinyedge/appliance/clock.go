package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ClockFile, in the data directory, holds the last known time: saved at
// every shutdown, every hour and after every NTP sync, so a gateway
// without a real-time clock starts from there instead of 1970.
const ClockFile = "clock"

// SyncedMarker exists once NTP has set the clock since boot, like
// systemd-timesyncd's /run/systemd/timesync/synchronized.
const SyncedMarker = "/run/tinyedge/clock-synced"

// RestoreClock moves the clock forward to the last known time (or floor,
// the binary's build time, if later) when it reads earlier: it never goes
// back. It reports the time it set, or the zero time if it left the clock
// alone. The clock stays untrusted until NTP has synced.
func (m *Machine) RestoreClock(dataDir string, floor, now time.Time) (time.Time, error) {
	last, err := readClock(m.path(filepath.Join(dataDir, ClockFile)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		err = fmt.Errorf("restore clock: %w", err)
	} else {
		err = nil
	}
	if last.Before(floor) {
		last = floor
	}
	if !now.Before(last) {
		return time.Time{}, err
	}
	if serr := m.Sys.Settimeofday(unix.NsecToTimeval(last.UnixNano())); serr != nil {
		return time.Time{}, errors.Join(err, fmt.Errorf("set clock to %s: %w", last.Format(time.RFC3339), serr))
	}
	return last, err
}

// readClock parses the clock file: one RFC 3339 time.
func readClock(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// SaveClock records now as the last known time: written to a temporary
// file, fsynced, renamed over the old one, so a power cut leaves the old
// time or the new one, never an empty file.
func (m *Machine) SaveClock(dataDir string, now time.Time) error {
	p := m.path(filepath.Join(dataDir, ClockFile))
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("save clock: %w", err)
	}
	_, err = f.WriteString(now.UTC().Format(time.RFC3339Nano) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save clock: %w", err)
	}
	if d, err := os.Open(filepath.Dir(p)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// MarkClockSynced creates SyncedMarker, saying where the time came from:
// from then on the clock is trusted.
func (m *Machine) MarkClockSynced(source string) error {
	marker := m.path(SyncedMarker)
	if err := os.MkdirAll(filepath.Dir(marker), 0o755); err != nil {
		return fmt.Errorf("mark clock synced: %w", err)
	}
	if err := os.WriteFile(marker, []byte(source+"\n"), 0o644); err != nil {
		return fmt.Errorf("mark clock synced: %w", err)
	}
	return nil
}

// ClockOpts configures KeepClock.
type ClockOpts struct {
	DataDir string
	Servers []string      // NTP servers, host:port (port 123 if left out)
	Every   time.Duration // resync and save interval; 0 means an hour
	Logger  *slog.Logger
	// Query asks one server; nil means SNTP (QuerySNTP).
	Query func(ctx context.Context, server string) (time.Duration, error)
}

// KeepClock syncs the clock from the NTP servers (retrying with backoff
// until one answers), marks it synced, and saves it every o.Every, until
// ctx ends; then it saves it a last time.
func (m *Machine) KeepClock(ctx context.Context, o ClockOpts) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Every <= 0 {
		o.Every = time.Hour
	}
	if o.Query == nil {
		o.Query = QuerySNTP
	}
	defer func() {
		if err := m.SaveClock(o.DataDir, time.Now()); err != nil {
			log.Error("save the clock", "err", err)
		}
	}()
	retry := 2 * time.Second
	for {
		wait := o.Every
		if len(o.Servers) > 0 {
			if err := m.syncOnce(ctx, o, log); err != nil {
				log.Warn("clock not synced", "err", err, "retryIn", retry)
				wait, retry = retry, min(2*retry, 5*time.Minute)
			} else {
				retry = 2 * time.Second
			}
		}
		if err := m.SaveClock(o.DataDir, time.Now()); err != nil {
			log.Error("save the clock", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (m *Machine) syncOnce(ctx context.Context, o ClockOpts, log *slog.Logger) error {
	var errs []error
	for _, s := range o.Servers {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		off, err := o.Query(qctx, s)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		now := time.Now().Add(off)
		if off > 100*time.Millisecond || off < -100*time.Millisecond {
			if err := m.Sys.Settimeofday(unix.NsecToTimeval(now.UnixNano())); err != nil {
				return fmt.Errorf("set clock from %s: %w", s, err)
			}
		}
		if err := m.MarkClockSynced("ntp " + s); err != nil {
			log.Error("clock synced, but not marked", "err", err)
		}
		log.Info("clock synced", "server", s, "offset", off)
		return nil
	}
	return errors.Join(errs...)
}
