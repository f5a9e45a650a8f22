package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/deploy"
	"github.com/tinyedge/tinyedge/hub/process"
	"github.com/tinyedge/tinyedge/hw"
	"github.com/tinyedge/tinyedge/store"
)

// quickstartManifest is the deployment `tinyedge run` uses without
// --manifest: the IoT Edge quickstart's simulated temperature sensor, the
// tutorial's filter module, and routes to $upstream.
//
//go:embed quickstart.json
var quickstartManifest []byte

func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, format)
}

// loadManifest reads and checks a manifest; name is what messages call it.
func loadManifest(path string) (*deploy.Manifest, string, error) {
	data, name := quickstartManifest, "the built-in quickstart manifest"
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, path, err
		}
		data, name = b, path
	}
	m, err := deploy.ParseWith(data, resolveModule, checkSettings)
	if err != nil {
		return nil, name, err
	}
	return m, name, nil
}

// initHardware starts periph's host drivers once, when a deployment has a
// module that uses buses or pins; a host without hardware is fine (the
// simulated bus and pins remain).
func initHardware(m *deploy.Manifest, log *slog.Logger) {
	need := false
	for _, mod := range m.Modules {
		need = need || builtins[mod.Builtin].hardware
	}
	if !need {
		return
	}
	st, err := hw.Init()
	if err != nil {
		log.Error("hardware init failed; only simulated buses and pins work", "err", err)
		return
	}
	for _, f := range st.Failed {
		log.Warn("hardware driver failed", "driver", f.Driver, "reason", f.Reason)
	}
	if st.NoHardware() {
		log.Info("no I²C buses or GPIO pins on this host; use bus \"sim\" and sim: pins")
		return
	}
	log.Info("hardware ready", "gpio", st.GPIO, "i2c", st.I2C)
}

// storePath is where the store lives in a data directory.
func storePath(dataDir string) string { return filepath.Join(dataDir, "store.db") }

// openStore opens the data directory's store with the manifest's size
// limit. A store that was unreadable has been moved aside and replaced by
// an empty one: that is logged loudly and tinyedge goes on, rather than
// crash-looping the gateway.
// It reports how many stores were recovered that way (0 or 1), for the
// stop log line and, later, the metrics.
func openStore(dataDir string, m *deploy.Manifest, log *slog.Logger) (*store.Store, int, error) {
	st, err := store.Open(storePath(dataDir), &store.Options{MaxSizeBytes: m.StoreAndForward.MaxSizeBytes, DefaultTTL: m.StoreAndForward.TimeToLive,
		Trusted: storeClockTrust()})
	if rec, ok := errors.AsType[*store.RecoveredError](err); ok {
		log.Error("STORE WAS UNREADABLE: moved aside, started empty; messages in it were not delivered",
			"path", rec.Path, "movedTo", rec.MovedTo, "cause", rec.Cause.Error())
		return st, 1, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open store: %w", err)
	}
	return st, 0, nil
}

// deployment turns a checked manifest into what the hub runs.
func deployment(m *deploy.Manifest, rt *runtimeEnv) hub.Deployment {
	d := hub.Deployment{Routes: m.Routes, TimeToLive: m.StoreAndForward.TimeToLive}
	for _, mod := range m.Modules {
		spec := hub.ModuleSpec{
			Name:          mod.Name,
			Image:         mod.Type + ":" + mod.Builtin,
			Version:       mod.Version,
			Env:           mod.Env,
			Desired:       m.Desired[mod.Name],
			Status:        mod.Status,
			RestartPolicy: hub.RestartPolicy(mod.RestartPolicy),
			StartupOrder:  mod.StartupOrder,
		}
		if pr := mod.Process; pr != nil {
			// The program and its arguments are what the module is: a
			// change restarts it, as a new image would.
			var what strings.Builder
			enc := json.NewEncoder(&what)
			enc.SetEscapeHTML(false)
			enc.Encode(pr)
			spec.Image = mod.Type + ":" + strings.TrimSpace(what.String())
			procs := process.NewHost(nil)
			if rt != nil && rt.local != nil {
				procs = rt.local.procs
			}
			spec.Module = procs.Module(process.Settings{Path: pr.Path, Args: pr.Args, WorkingDir: pr.WorkingDir})
			// Its outputs, inputs, twin and methods go over the local
			// MQTT endpoint, and its inputs queue durably for it.
			spec.External = true
		} else {
			spec.Module = builtins[mod.Builtin].new(rt)
		}
		d.Modules = append(d.Modules, spec)
	}
	return d
}

// apply deploys a checked manifest: module identities first (a module
// gone from the manifest loses its identity, so when it comes back it is
// a new generation with a new key), then the hub's deployment.
func apply(h *hub.Hub, m *deploy.Manifest, rt *runtimeEnv, log *slog.Logger) error {
	if ls := rt.local; ls != nil {
		if err := ls.syncIdentities(m, log); err != nil {
			return err
		}
	}
	err := h.Deploy(deployment(m, rt))
	if ls := rt.local; ls != nil {
		ls.deployed(m)
	}
	if rt.revalidate != nil {
		// A module gone, or back as a new generation with a new key: what
		// it connected with before no longer holds.
		if n := rt.revalidate(); n > 0 {
			log.Info("closed connections of identities the deployment removed or renewed", "connections", n)
		}
	}
	return err
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	manifest := fs.String("manifest", "", "deployment manifest `FILE` (default: the built-in quickstart)")
	dataDir := fs.String("data-dir", defaultDataDir(), "`DIR` for tinyedge's state; one tinyedge at a time may use it")
	envConfig, envNamed := configPathFromEnv()
	configPath := fs.String("config", envConfig, "device config `FILE` (TOML): identity, upstream and local endpoint settings (default $"+configEnv+", else "+defaultConfigPath+")")
	var upf upstreamFlags
	fs.StringVar(&upf.kind, "upstream", "", "where $upstream goes: iothub (the provisioned IoT Hub), mqtt (any MQTT broker, see --mqtt-broker), hubsim (the IoT Hub emulator, started on loopback unless `tinyedge hubsim serve` runs) or console (print each message like `az iot hub monitor-events`); default: iothub when the config provisions the device, else hubsim")
	fs.StringVar(&upf.broker, "mqtt-broker", "", "broker `URL` for --upstream mqtt: tcp://host:1883 or ssl://host:8883 (default: upstream.mqtt.broker)")
	fs.StringVar(&upf.topic, "mqtt-topic", "", "topic `TEMPLATE` for --upstream mqtt, e.g. 'tinyedge/{deviceId}/{moduleId}/{outputName}' (default: upstream.mqtt.topic)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	deviceID := fs.String("device-id", hostname(), "the edge device's id (default: the provisioned one, else the host name)")
	healthWindow := fs.Duration("health-window", 120*time.Second, "how long an updated version has to become healthy before it is rolled back")
	watchdog := fs.String("watchdog", "", "feed the hardware watchdog `DEVICE` while the hub is healthy (tinyedge init passes /dev/watchdog)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: run takes no arguments, got %q", errUsage, fs.Args())
	}
	log, err := newLogger(*logFormat, stderr)
	if err != nil {
		return err
	}
	named := envNamed
	fs.Visit(func(f *flag.Flag) {
		named = named || f.Name == "config"
	})
	cfg, err := loadConfig(*configPath, named)
	if err != nil {
		return err
	}
	switch k := upstreamKind(upf.kind, cfg); k {
	case "console", "iothub", "mqtt", "hubsim":
	default:
		return fmt.Errorf("%w: --upstream %q: want console, iothub, mqtt or hubsim", errUsage, k)
	}

	// The OTA start-up path, before anything else: run the binary of the
	// chosen slot (exec'ing it when it is not this one), counting a try
	// when it is on trial.
	boot, done := bootSlot(ctx, *dataDir, *healthWindow, log)
	if done != nil {
		return done
	}

	m, name, err := loadManifest(*manifest)
	if err != nil {
		return fmt.Errorf("%s:\n%w", name, err)
	}
	for _, w := range m.Warnings {
		log.Warn("manifest", "warning", w.String())
	}
	unlock, err := lockDataDir(*dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	st, recoveries, err := openStore(*dataDir, m, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close the store", "err", err)
		}
	}()

	if upstreamKind(upf.kind, cfg) == "hubsim" {
		names := make([]string, len(m.Modules))
		for i, mod := range m.Modules {
			names[i] = mod.Name
		}
		prov, ups, stopSim, err := embeddedHub(*deviceID, names, cfg.Edge.LeafDevices, log)
		if err != nil {
			return err
		}
		// Stopped after the link, which is closed by a later defer.
		defer stopSim()
		ups.Window, ups.RateLimit, ups.TokenLifetime = cfg.Upstream.Window, cfg.Upstream.RateLimit, cfg.Upstream.TokenLifetime
		cfg.Provisioning, cfg.Upstream = prov, ups
		upf.kind = "iothub"
	}
	up, err := newUpstream(upf, cfg, *deviceID, st, stdout, log)
	if err != nil {
		return err
	}
	deviceSet := false
	fs.Visit(func(f *flag.Flag) {
		deviceSet = deviceSet || f.Name == "device-id"
	})
	if *deviceID, err = checkDeviceID(deviceSet, *deviceID, up); err != nil {
		return err
	}
	initHardware(m, log)
	// The hub's log, and with it every module's, is tapped so that
	// `tinyedge logs` shows built-in modules' lines too.
	tap, taps := newLogTap(log.Handler())
	h := hub.New(hub.Options{DeviceID: *deviceID, Logger: slog.New(tap), Upstream: up.endpoint, Store: st, CloudModules: up.modules, CloudLeaves: up.leaves})
	if up.link != nil {
		// Started once the deployment is applied (below), so the first
		// twin fetch finds the modules.
		defer func() {
			if err := up.link.Close(); err != nil {
				log.Error("close the upstream link", "err", err)
			}
		}()
	}
	log.Info("tinyedge starting", "version", version, "device", *deviceID, "manifest", name, "dataDir", *dataDir,
		"modules", len(m.Modules), "routes", len(m.Routes))
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	gateway := gatewayHostname(cfg)
	iotHub, err := iotHubHostname(cfg)
	if err != nil {
		_ = h.Close()
		return err
	}
	local, err := startLocal(localOptions{dataDir: *dataDir, deviceID: *deviceID, hostname: gateway, iotHubHostname: iotHub}, h, taps, log)
	if err != nil {
		_ = h.Close()
		return err
	}
	defer local.close(log)
	if up.link != nil {
		local.control.Register("upstream", func() any { return up.link.Status() })
	}
	// Leaf devices declared without a key or thumbprint authenticate
	// with one tinyedge generates and keeps.
	generated, err := leafIdentities(local.ids, *deviceID, cfg.Edge.LeafDevices)
	if err != nil {
		_ = h.Close()
		return err
	}
	for _, l := range generated {
		log.Info("leaf device with a generated key: `tinyedge identities --show-keys` prints its connection string", "leaf", l)
	}
	ep, err := startEdgeOrWarn(cfg, h, *dataDir, local.ids, log)
	if err != nil {
		_ = h.Close()
		return err
	}
	if ep != nil && ep.Addr() != "" {
		// Process modules connect where the endpoint really listens.
		local.setGateway(moduleGateway(gateway, ep.Addr()))
	}
	closeEdge := func() {
		if ep != nil {
			if err := ep.Close(); err != nil {
				log.Error("close the local MQTT endpoint", "err", err)
			}
		}
	}
	rt := &runtimeEnv{dataDir: *dataDir, local: local, restart: func(reason string) {
		log.Info("restarting", "reason", reason)
		stop(errRestartForUpdate)
	}}
	if ep != nil {
		rt.revalidate = ep.Revalidate
	}
	local.control.setRotate(func(deviceID, moduleID string) (rotation, error) {
		return local.rotate(h, ep, deviceID, moduleID, log)
	})
	if err := apply(h, m, rt, log); err != nil {
		closeEdge()
		_ = h.Close()
		return err
	}
	if up.link != nil {
		up.link.Start(h)
	}
	var confirming sync.WaitGroup
	if *watchdog != "" {
		confirming.Add(1)
		go func() {
			defer confirming.Done()
			feedWatchdog(ctx, *watchdog, h, log)
		}()
	}
	if boot.Trial {
		confirming.Add(1)
		go func() {
			defer confirming.Done()
			confirmWhenHealthy(ctx, *dataDir, h, m, *healthWindow, log, stop)
		}()
	}
	// SIGHUP re-reads the manifest and applies it: changed routes and
	// desired properties take effect without a restart, changed modules
	// restart, and a manifest with problems is refused while the running
	// deployment goes on.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			redeploy(h, *manifest, rt, log)
		}
	}
	log.Info("tinyedge stopping")
	confirming.Wait()
	start := time.Now()
	// External clients go first, so nothing arrives while modules stop.
	closeEdge()
	err = h.Close()
	hs := h.Stats()
	log.Info("tinyedge stopped", "took", time.Since(start).Round(time.Millisecond),
		"received", hs.Received, "sent", hs.Sent, "dropped", hs.Dropped, "storeRecoveries", recoveries)
	if err == nil && errors.Is(context.Cause(ctx), errRestartForUpdate) {
		return errRestartForUpdate
	}
	return err
}

// redeploy applies the manifest at path again, keeping the running
// deployment when the manifest has problems.
func redeploy(h *hub.Hub, path string, rt *runtimeEnv, log *slog.Logger) {
	m, name, err := loadManifest(path)
	if err != nil {
		log.Error("manifest not applied; the running deployment goes on", "manifest", name, "err", err.Error())
		return
	}
	for _, w := range m.Warnings {
		log.Warn("manifest", "warning", w.String())
	}
	initHardware(m, log)
	if err := apply(h, m, rt, log); err != nil {
		log.Error("deployment partly applied", "manifest", name, "err", err)
		return
	}
	log.Info("deployment applied", "manifest", name, "modules", len(m.Modules), "routes", len(m.Routes))
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "tinyedge"
	}
	return h
}

// defaultDataDir is /var/lib/tinyedge for root and a directory under the
// user's cache otherwise, so `make run` works without privileges.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/tinyedge"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "tinyedge")
	}
	return filepath.Join(os.TempDir(), "tinyedge")
}

// lockDataDir creates dir and takes an exclusive lock on it, so a second
// tinyedge on the same data never runs beside the first.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another tinyedge (lock %s); stop it or give --data-dir", dir, path)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
