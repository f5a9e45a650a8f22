package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExitRestart is the exit status with which the service asks for a
// reboot: it installed or rolled back an update, and the boot stage must
// choose the slot again (cmd/tinyedge's exitRestart, EX_TEMPFAIL).
const ExitRestart = 75

// Options configures Supervise.
type Options struct {
	Machine *Machine
	Logger  *slog.Logger
	// Service is the program PID 1 keeps running: an absolute path and
	// its arguments (argv[0] included).
	Service []string
	Env     []string
	// OneShot runs the service once (a maintenance command given on the
	// kernel command line) and powers off when it ends.
	OneShot bool
	// Trial is true when the running version is on trial: a service that
	// fails reboots (the boot stage counts a try) instead of restarting,
	// and TrialExpired is called if Confirmed is still false after
	// TrialWindow.
	Trial        bool
	TrialWindow  time.Duration
	Confirmed    func() bool
	TrialExpired func()
	// DataDir is the mount point of the data partition, unmounted last.
	DataDir string
	// BeforeShutdown runs after the service stopped and before the file
	// systems are synced and unmounted (save the clock, say).
	BeforeShutdown func()
	// StopTimeout is how long the service has to stop after SIGTERM
	// before everything is killed; 0 means 10 s.
	StopTimeout time.Duration
	// StatusInterval, when positive, logs a status line (uptime, memory)
	// that often.
	StatusInterval time.Duration
	// Signals delivers the signals that shut down (SIGTERM, SIGINT:
	// reboot; SIGUSR2, SIGPWR: power off); nil means the process's.
	Signals <-chan os.Signal
}

// exit is a reaped process.
type exit struct {
	pid    int
	status unix.WaitStatus
}

func (e exit) String() string {
	switch {
	case e.status.Exited():
		return fmt.Sprintf("exit status %d", e.status.ExitStatus())
	case e.status.Signaled():
		return "killed by " + e.status.Signal().String()
	}
	return fmt.Sprintf("wait status %#x", uint32(e.status))
}

// reaper collects every child that exits: PID 1 inherits orphans, and
// one not waited for stays a zombie.
type reaper struct {
	exits chan exit
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

func startReaper() *reaper {
	ctx, cancel := context.WithCancel(context.Background())
	r := &reaper{exits: make(chan exit, 64), stop: cancel}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer signal.Stop(sig)
		for {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
				select {
				case r.exits <- exit{pid, ws}:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-sig:
			case <-time.After(time.Second): // a SIGCHLD coalesced away
			case <-ctx.Done():
				return
			}
		}
	}()
	return r
}

func (r *reaper) close() {
	r.stop()
	r.wg.Wait()
}

// Supervise runs the service until the machine shuts down, then shuts it
// down: it stops the service, syncs, unmounts the data partition and
// calls reboot(2). It returns only when reboot(2) did (with the fake Sys
// of the tests, or on a failure the caller can only log).
func Supervise(o Options) How {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	signals := o.Signals
	if signals == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGPWR)
		defer signal.Stop(ch)
		signals = ch
	}
	r := startReaper()
	defer r.close()

	var trialC <-chan time.Time
	if o.Trial && o.TrialWindow > 0 {
		t := time.NewTimer(o.TrialWindow)
		defer t.Stop()
		trialC = t.C
	}
	var statusC <-chan time.Time
	if o.StatusInterval > 0 {
		t := time.NewTicker(o.StatusInterval)
		defer t.Stop()
		statusC = t.C
	}
	backoff := time.Second
	var restartC <-chan time.Time
	pid, started := 0, time.Time{}
	start := func() {
		p, err := os.StartProcess(o.Service[0], o.Service, &os.ProcAttr{Env: o.Env, Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
		if err != nil {
			log.Error("start the service", "cmd", strings.Join(o.Service, " "), "err", err)
			restartC = time.After(backoff)
			backoff = min(2*backoff, 30*time.Second)
			return
		}
		pid, started = p.Pid, time.Now()
		p.Release() // the reaper waits for it
		log.Info("service started", "pid", pid, "cmd", strings.Join(o.Service, " "))
	}
	start()
	how := Restart
loop:
	for {
		select {
		case e := <-r.exits:
			if e.pid != pid {
				continue // an orphan: reaped, nothing more
			}
			pid = 0
			ran := time.Since(started)
			switch {
			case e.status.Exited() && e.status.ExitStatus() == ExitRestart:
				log.Info("service asks for a reboot", "status", e.String())
				how = Restart
				break loop
			case o.OneShot:
				log.Info("service ended; powering off", "status", e.String(), "ran", ran.Round(time.Millisecond))
				how = PowerOff
				break loop
			case o.Trial:
				log.Error("service on trial failed; rebooting so the boot stage counts the try", "status", e.String())
				how = Restart
				break loop
			}
			if ran > time.Minute {
				backoff = time.Second
			}
			log.Error("service ended; restarting it", "status", e.String(), "ran", ran.Round(time.Millisecond), "in", backoff)
			restartC = time.After(backoff)
			backoff = min(2*backoff, 30*time.Second)
		case <-restartC:
			restartC = nil
			start()
		case <-trialC:
			trialC = nil
			if o.Confirmed != nil && o.Confirmed() {
				continue
			}
			log.Error("the version on trial did not confirm itself in time; rolling back", "window", o.TrialWindow)
			if o.TrialExpired != nil {
				o.TrialExpired()
			}
			how = Restart
			break loop
		case s := <-signals:
			how = Restart
			if s == syscall.SIGUSR2 || s == syscall.SIGPWR {
				how = PowerOff
			}
			log.Info("shutdown requested", "signal", s.String(), "then", how.String())
			break loop
		case <-statusC:
			log.Info("status", statusAttrs(o.Machine, pid)...)
		}
	}
	if pid != 0 {
		stopService(r, pid, o.StopTimeout, log)
	}
	if o.BeforeShutdown != nil {
		o.BeforeShutdown()
	}
	o.Machine.shutdown(how, o.DataDir, log)
	return how
}

// stopService sends SIGTERM and waits for the service to exit; past the
// timeout, or if it does not exist, every process is killed.
func stopService(r *reaper, pid int, timeout time.Duration, log *slog.Logger) {
	if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		log.Error("stop the service", "pid", pid, "err", err)
	}
	deadline := time.After(timeout)
	for {
		select {
		case e := <-r.exits:
			if e.pid == pid {
				log.Info("service stopped", "status", e.String())
				return
			}
		case <-deadline:
			log.Error("service did not stop; killing it", "pid", pid, "after", timeout)
			_ = unix.Kill(pid, unix.SIGKILL)
			return
		}
	}
}

// shutdown syncs, unmounts the data partition (or remounts it read-only
// when something still holds it) and calls reboot(2).
func (m *Machine) shutdown(how How, dataDir string, log *slog.Logger) {
	m.Sys.Sync()
	if dataDir != "" {
		// PID 1 runs from a slot's binary on the data partition, which
		// is then busy: remounting it read-only flushes it just as well.
		if err := m.Sys.Unmount(m.path(dataDir), 0); err != nil {
			log.Info("data partition in use; remounting it read-only", "dir", dataDir, "err", err)
			if err := m.Sys.Mount("", m.path(dataDir), "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				log.Error("remount the data partition read-only", "dir", dataDir, "err", err)
			}
		}
		m.Sys.Sync()
	}
	log.Info("shutting down", "then", how.String())
	if err := m.Sys.Reboot(how); err != nil {
		log.Error("reboot(2) failed", "how", how.String(), "err", err)
	}
}

// statusAttrs reports uptime and the resident memory of PID 1 and of the
// service, from /proc.
func statusAttrs(m *Machine, pid int) []any {
	attrs := []any{}
	if up := readTrim(m.path("/proc/uptime")); up != "" {
		attrs = append(attrs, "uptime", strings.Fields(up)[0]+"s")
	}
	attrs = append(attrs, "initRSS", rss(m, "self"))
	if pid != 0 {
		attrs = append(attrs, "servicePID", pid, "serviceRSS", rss(m, fmt.Sprint(pid)))
	}
	return attrs
}

func rss(m *Machine, pid string) string {
	b, err := os.ReadFile(m.path("/proc/" + pid + "/status"))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}
