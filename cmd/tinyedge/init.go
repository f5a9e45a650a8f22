package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinyedge/tinyedge/build/ota"
	"github.com/tinyedge/tinyedge/cmd/tinyedge/appliance"
	"github.com/tinyedge/tinyedge/hub"
)

// ApplianceConfig is the config file's [appliance] section: what
// `tinyedge init` does when tinyedge is the gateway's whole system.
//
//	[appliance]
//	service = ["run", "--upstream", "console"]
//	health_window = "120s"
//	watchdog = "/dev/watchdog"        # "off" to leave it alone
//	time_servers = ["pool.ntp.org"]
//	status_interval = "10m"
//
//	[[appliance.interfaces]]
//	name = "eth0"
//	dhcp = true
//
//	[[appliance.interfaces]]
//	name = "eth1"
//	address = "192.168.7.1/24"
//	gateway = "192.168.7.254"
//	dns = ["192.168.7.254"]
type ApplianceConfig struct {
	// Service is the command PID 1 keeps running: a tinyedge subcommand
	// and its flags (default: run --upstream console), or an absolute
	// path. --data-dir is added for tinyedge's own subcommands.
	Service []string `toml:"service"`
	// HealthWindow is how long an updated version has to confirm itself
	// (default 120s).
	HealthWindow Duration `toml:"health_window"`
	// Watchdog is the hardware watchdog device fed while the hub is
	// healthy (default /dev/watchdog when it exists; "off" for none).
	Watchdog string `toml:"watchdog"`
	// TimeServers are NTP servers (host or host:port); none leaves the
	// clock to the last known time and the real-time clock, if any.
	TimeServers []string `toml:"time_servers"`
	// StatusInterval, when set, logs uptime and memory that often.
	StatusInterval Duration `toml:"status_interval"`
	// Interfaces configures the network; none means DHCP on eth0.
	Interfaces []InterfaceConfig `toml:"interfaces"`
}

// InterfaceConfig is one network interface: DHCP, or a static address
// (CIDR), gateway and name servers.
type InterfaceConfig struct {
	Name    string   `toml:"name"`
	DHCP    bool     `toml:"dhcp"`
	Address string   `toml:"address"`
	Gateway string   `toml:"gateway"`
	DNS     []string `toml:"dns"`
}

// The appliance's fixed places: the data partition's mount point and the
// config file on it.
const (
	applianceDataDir = "/data"
	applianceConfig  = "config.toml"
	// applianceMedia is where a disk labelled tinyedge-media is mounted,
	// read-only: `init -- update apply /media/FILE` installs from it.
	applianceMedia = "/media"
)

// initArgs makes PID 1 run `init` whatever the kernel passed: its own
// arguments come after "init" when the command line gives it, and stray
// kernel parameters the kernel handed on come before.
func initArgs(args []string) []string {
	if os.Getpid() != 1 {
		return args
	}
	if i := slices.Index(args, "init"); i >= 0 {
		return args[i:]
	}
	return []string{"init"}
}

// cmdInit is PID 1 in the slot binary the boot stage (cmd/tinyedge-boot,
// the initramfs's /init) exec'd, or, when tinyedge itself is /init, both
// the boot stage and that (see package appliance). It never returns on a
// device.
func cmdInit(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	label := fs.String("data-label", appliance.DataLabel, "file system `LABEL` of the data partition")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if os.Getpid() != 1 {
		return fmt.Errorf("%w: init is the gateway's PID 1 (the kernel starts it); to run the hub on a running system use `tinyedge run`", errUsage)
	}
	m := &appliance.Machine{Sys: appliance.Linux{}, Root: "/"}
	h, handedOff, herr := appliance.ReadHandoff(os.Getenv)
	var mountErr error
	if !handedOff {
		mountErr = m.MountBase()
		_ = appliance.ReopenConsole()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid1", true)
	self, _ := os.Executable()
	if handedOff && herr == nil {
		// The boot stage mounted everything, loaded the modules and
		// counted the try: calling ota.Boot again must not happen.
		log.Info("tinyedge init", "version", version, "binary", self, "boot_stage", h.Stage, "slot", string(h.Slot), "trial", h.Trial, "uptime", appliance.KernelUptime())
		return runAppliance(ctx, m, ota.Decision{Slot: h.Slot, Path: self, Trial: h.Trial, Version: version}, fs.Args(), log)
	}
	log.Info("tinyedge init", "version", version, "binary", self, "uptime", appliance.KernelUptime(), "args", strings.Join(os.Args[1:], " "))
	if mountErr != nil {
		log.Error("mount the kernel file systems", "err", mountErr)
	}
	if herr != nil {
		// Doing the boot stage's work again is safe: each step is
		// idempotent, and ota.Boot run by a slot's binary counts nothing.
		log.Error("boot stage handoff unreadable; checking the boot again", "err", herr)
	}
	st := &appliance.Stage{Machine: m, Logger: log, Label: *label, DataDir: applianceDataDir}
	if _, err := st.Prepare(ctx); err != nil {
		// Nothing can run without the data partition: say so on the
		// console for a minute, then try again from the start.
		log.Error("NO DATA PARTITION; rebooting in 60 s", "err", err)
		time.Sleep(time.Minute)
		m.Halt(appliance.Restart, time.Minute, log)
	}

	// The boot stage's one decision: which slot runs. Exec replaces this
	// process (keeping PID 1) unless this binary is the chosen one; the
	// installed binary, /init, runs itself when no slot can.
	d, err := ota.Boot(applianceDataDir, &ota.BootOpts{Logger: log})
	if err != nil {
		log.Error("update state not written; running the safe choice", "err", err)
	}
	log.Info("boot", "slot", string(d.Slot), "version", d.Version, "trial", d.Trial, "reason", d.Reason)
	if err := ota.Exec(d, os.Args, os.Environ()); err != nil {
		log.Error("could not start the chosen version; going on with this one", "err", err)
		d = ota.Decision{}
	}
	return runAppliance(ctx, m, d, fs.Args(), log)
}

// runAppliance is PID 1 in the chosen binary: configuration, network,
// clock, then the service until shutdown.
func runAppliance(ctx context.Context, m *appliance.Machine, d ota.Decision, command []string, log *slog.Logger) error {
	cfgPath := filepath.Join(applianceDataDir, applianceConfig)
	cfg, err := loadConfig(cfgPath, false)
	if err != nil {
		log.Error("config unreadable; running with defaults", "err", err)
		cfg = &Config{}
	}
	a := cfg.Appliance
	if cfg.Hostname != "" {
		if err := m.Sys.Sethostname(cfg.Hostname); err != nil {
			log.Error("set the host name", "name", cfg.Hostname, "err", err)
		}
	}
	// A clock that reads earlier than the last known time has no
	// real-time clock behind it: it moves forward, and stays untrusted
	// until NTP syncs. One that reads later came from a real-time clock
	// and is trusted now.
	switch to, err := m.RestoreClock(applianceDataDir, trustedAfter(), time.Now()); {
	case err != nil:
		log.Warn("clock", "err", err)
	case !to.IsZero():
		log.Info("clock was behind the last known time; moved forward (untrusted until NTP syncs)", "to", to.Format(time.RFC3339))
	default:
		if err := m.MarkClockSynced("real-time clock"); err != nil {
			log.Error("clock", "err", err)
		}
	}
	if dev, err := m.MountMedia(applianceMedia); err != nil {
		log.Error("media", "err", err)
	} else if dev != "" {
		log.Info("media", "device", dev, "dir", applianceMedia)
	}
	if st, err := ota.Status(applianceDataDir); err == nil && st.Last.Outcome != "" {
		log.Info("last update", "outcome", string(st.Last.Outcome), "version", st.Last.Version, "reason", st.Last.Reason, "at", st.Last.At.Format(time.RFC3339))
	}

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	nw := &appliance.Network{Machine: m, Logger: log}
	if err := nw.Start(bg, interfaces(a.Interfaces)); err != nil {
		log.Error("network", "err", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.KeepClock(bg, appliance.ClockOpts{DataDir: applianceDataDir, Servers: a.TimeServers, Logger: log})
	}()

	window := a.HealthWindow.Duration
	if window <= 0 {
		window = ota.DefaultHealthWindow
	}
	oneShot := len(command) > 0
	if !oneShot {
		command = a.Service
	}
	argv := serviceArgv(command, window, watchdogDevice(a.Watchdog))
	// The service asks for a restart into an update by exiting with
	// exitRestart, as a trial run does under the installed binary's
	// watch: PID 1 then reboots, and the boot stage chooses the slot.
	env := append(withoutHandoff(os.Environ()), trialEnv+"=1", clockSyncedEnv+"="+appliance.SyncedMarker)
	if _, err := os.Stat(cfgPath); err == nil {
		env = append(env, configEnv+"="+cfgPath)
	}
	how := appliance.Supervise(appliance.Options{
		Machine: m, Logger: log,
		Service:     argv,
		Env:         env,
		OneShot:     oneShot,
		Trial:       d.Trial && !oneShot,
		TrialWindow: window + trialGrace(window),
		Confirmed: func() bool {
			st, err := ota.Status(applianceDataDir)
			return err == nil && st.Trial == ota.NoSlot
		},
		TrialExpired: func() {
			reason := fmt.Sprintf("the new version did not confirm itself within %s (hung?)", window+trialGrace(window))
			if err := ota.Rollback(applianceDataDir, reason); err != nil {
				log.Error("roll back", "err", err)
			}
		},
		DataDir: applianceDataDir,
		BeforeShutdown: func() {
			stopBG()
			wg.Wait()
			nw.Wait()
		},
		StatusInterval: a.StatusInterval.Duration,
	})
	m.Halt(how, time.Minute, log)
	return nil
}

// serviceArgv turns the configured or given command into the argv PID 1
// starts: a tinyedge subcommand runs the running binary with --data-dir
// (and, for run, the health window and the watchdog) unless given.
func serviceArgv(command []string, window time.Duration, watchdog string) []string {
	if len(command) == 0 {
		command = []string{"run", "--upstream", "console"}
	}
	if filepath.IsAbs(command[0]) {
		return command
	}
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	argv := append([]string{self}, command...)
	has := func(flag string) bool {
		return slices.ContainsFunc(command, func(a string) bool {
			return a == "--"+flag || a == "-"+flag || strings.HasPrefix(a, "--"+flag+"=") || strings.HasPrefix(a, "-"+flag+"=")
		})
	}
	switch command[0] {
	case "run", "update", "store":
		if !has("data-dir") {
			argv = append(argv, "--data-dir", applianceDataDir)
		}
	}
	if command[0] == "run" {
		if !has("health-window") {
			argv = append(argv, "--health-window", window.String())
		}
		if watchdog != "" && !has("watchdog") {
			argv = append(argv, "--watchdog", watchdog)
		}
	}
	return argv
}

// watchdogDevice is the configured watchdog, or /dev/watchdog if the
// machine has one, or "" for none.
func watchdogDevice(conf string) string {
	switch conf {
	case "off":
		return ""
	case "":
		if _, err := os.Stat(appliance.DefaultWatchdog); err == nil {
			return appliance.DefaultWatchdog
		}
		return ""
	}
	return conf
}

// withoutHandoff is env without the boot stage's handoff, which is PID
// 1's alone.
func withoutHandoff(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == appliance.HandoffStageEnv || k == appliance.HandoffSlotEnv || k == appliance.HandoffTrialEnv
	})
}

func interfaces(cs []InterfaceConfig) []appliance.Interface {
	if len(cs) == 0 {
		return []appliance.Interface{{Name: "eth0", DHCP: true}}
	}
	out := make([]appliance.Interface, len(cs))
	for i, c := range cs {
		out[i] = appliance.Interface{Name: c.Name, DHCP: c.DHCP, Address: c.Address, Gateway: c.Gateway, DNS: c.DNS}
	}
	return out
}

// clockSyncedEnv names, for the service PID 1 starts, the file whose
// existence says the clock was synced (appliance.SyncedMarker).
const clockSyncedEnv = "TINYEDGE_CLOCK_SYNCED"

// clockTrust reports whether a clock reading can be trusted: after
// trustedAfter() (the build time). Under tinyedge init the clock may have
// been moved forward to the last known time, which passes that test
// without being right, so there it is trusted only once PID 1 marked it
// synced (NTP, or a real-time clock at boot). The marker is looked for at
// most once a second, and never again once there; callers that ask
// meanwhile wait for the look under way rather than take a no for it
// (the link's identities connect at once).
func clockTrust() func(time.Time) bool {
	after := func(t time.Time) bool { return t.After(trustedAfter()) }
	marker := os.Getenv(clockSyncedEnv)
	if marker == "" {
		return after
	}
	var (
		synced  atomic.Bool
		mu      sync.Mutex
		checked time.Time // the last look, under mu
	)
	return func(t time.Time) bool {
		if !synced.Load() {
			mu.Lock()
			if !synced.Load() && (checked.IsZero() || time.Since(checked) >= time.Second) {
				checked = time.Now()
				if _, err := os.Stat(marker); err == nil {
					synced.Store(true)
				}
			}
			mu.Unlock()
			if !synced.Load() {
				return false
			}
		}
		return after(t)
	}
}

// storeClockTrust is the store's Trusted option: nil (the store's own
// rule) outside the appliance, clockTrust under tinyedge init.
func storeClockTrust() func(time.Time) bool {
	if os.Getenv(clockSyncedEnv) == "" {
		return nil
	}
	return clockTrust()
}

// watchdogTimeout is what tinyedge asks of the hardware watchdog, and
// watchdogFeed how often the hub's health loop feeds it.
const (
	watchdogTimeout = 30 * time.Second
	watchdogFeed    = 5 * time.Second
)

// feedWatchdog feeds the hardware watchdog from the hub's health loop
// while the hub answers, until ctx ends (then disarms it): a hub that
// hangs stops answering, and the gateway reboots.
func feedWatchdog(ctx context.Context, dev string, h *hub.Hub, log *slog.Logger) {
	w, err := appliance.OpenWatchdog(dev, watchdogTimeout)
	if err != nil {
		log.Error("watchdog not fed", "err", err)
		return
	}
	log.Info("feeding the watchdog while the hub is healthy", "device", dev, "timeout", watchdogTimeout)
	appliance.FeedWhileHealthy(ctx, w, watchdogFeed, func() error {
		if len(h.ModuleStatus()) == 0 {
			return fmt.Errorf("no module is deployed")
		}
		return nil
	}, log)
}
