package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultWatchdog is the hardware watchdog's device.
const DefaultWatchdog = "/dev/watchdog"

// Watchdog is an open watchdog device (the kernel's watchdog API,
// Documentation/watchdog/watchdog-api.rst): once open it reboots the
// machine unless it is written to within its timeout.
type Watchdog struct {
	f    *os.File
	path string
}

// OpenWatchdog opens the device at path and asks for timeout. Drivers
// round it to what they support; one that cannot set it (or a file that
// is no device, as in tests) keeps its own, which is no reason not to
// feed it.
func OpenWatchdog(path string, timeout time.Duration) (*Watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	if timeout > 0 {
		_ = unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, int(timeout/time.Second))
	}
	return &Watchdog{f: f, path: path}, nil
}

// Feed restarts the watchdog's countdown.
func (w *Watchdog) Feed() error {
	if _, err := w.f.Write([]byte{'.'}); err != nil {
		return fmt.Errorf("watchdog %s: feed: %w", w.path, err)
	}
	return nil
}

// Close disarms the watchdog with the magic close ('V') and closes it: a
// clean stop must not reboot the machine.
func (w *Watchdog) Close() error {
	_, werr := w.f.Write([]byte{'V'})
	cerr := w.f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("watchdog %s: close: %w", w.path, err)
	}
	return nil
}

// FeedWhileHealthy feeds w every interval for as long as check passes,
// until ctx ends; then it disarms w. A check that fails skips a feed; one
// that hangs stops the feeding: either way a hub that stays unwell past
// the watchdog's timeout gets the machine rebooted.
func FeedWhileHealthy(ctx context.Context, w *Watchdog, interval time.Duration, check func() error, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err := w.Close(); err != nil {
			log.Error("disarm the watchdog", "err", err)
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		if err := check(); err != nil {
			if !failing {
				log.Error("unhealthy: not feeding the watchdog", "err", err)
			}
			failing = true
		} else {
			if failing {
				log.Info("healthy again: feeding the watchdog")
			}
			failing = false
			if err := w.Feed(); err != nil {
				log.Error("feed the watchdog", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
