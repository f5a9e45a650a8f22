package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/certs"
	"github.com/tinyedge/tinyedge/hub/deploy"
	"github.com/tinyedge/tinyedge/hub/edge"
	"github.com/tinyedge/tinyedge/hub/identity"
	"github.com/tinyedge/tinyedge/hub/process"
	"github.com/tinyedge/tinyedge/hub/workload"
)

// identitiesPath is the identity store's file in a data directory.
func identitiesPath(dataDir string) string { return filepath.Join(dataDir, "identities.json") }

// workloadSocket is the workload API's socket in a data directory.
func workloadSocket(dataDir string) string { return filepath.Join(dataDir, "workload.sock") }

// workloadCA makes the certificate authority of the workload API for a
// data directory: the device CA (hub/certs), the same one the local MQTT
// endpoint's server certificate comes from (startEdge), so the trust
// bundle modules get verifies the endpoint. While it is nil the workload
// API has none: it still signs tokens, but trust-bundle and certificate
// requests get 503, and the Azure IoT SDKs' fromEnvironment needs the
// trust bundle.
var workloadCA = func(dataDir string) (workload.CA, error) {
	return certs.Open(certsDir(dataDir), nil)
}

// localOptions configure the local services.
type localOptions struct {
	dataDir  string
	deviceID string
	// hostname is what modules are told to connect to
	// (IOTEDGE_GATEWAYHOSTNAME) until the local endpoint says where it
	// listens (setGateway) and, without an IoT Hub, the audience of
	// their tokens (IOTEDGE_IOTHUBHOSTNAME).
	hostname       string
	iotHubHostname string // the provisioned IoT Hub; default hostname
	// workloadSocket is the workload API's socket (the config's
	// [workload] socket); default <data-dir>/workload.sock.
	workloadSocket string
	// ca issues the trust bundle and server certificates of the
	// workload API; nil answers those requests with 503.
	ca workload.CA
}

// localServices are what a running tinyedge offers on its own machine:
// module identities, the process modules and their workload API, and the
// control socket the CLI talks to.
type localServices struct {
	deviceID string
	ids      *identity.Store
	procs    *process.Host
	workload *workload.Server
	control  *control
	taps     *logTaps // keeps built-in modules' log lines; nil when the hub's logger is not tapped
	edgeEnv  *process.Edge

	wg sync.WaitGroup // the two servers
}

// startLocal opens the identity store and starts the workload API and
// the control socket in the data directory.
func startLocal(o localOptions, h *hub.Hub, taps *logTaps, log *slog.Logger) (*localServices, error) {
	ids, err := identity.Open(identitiesPath(o.dataDir))
	if rec, ok := errors.AsType[*identity.RecoveredError](err); ok {
		log.Error("IDENTITY STORE WAS UNREADABLE: moved aside, started empty", "path", rec.Path, "movedTo", rec.MovedTo, "cause", rec.Cause.Error())
	} else if err != nil {
		return nil, err
	}
	if o.iotHubHostname == "" {
		o.iotHubHostname = o.hostname
	}
	if o.ca == nil && workloadCA != nil {
		if o.ca, err = workloadCA(o.dataDir); err != nil {
			return nil, fmt.Errorf("workload API certificate authority: %w", err)
		}
	}
	sock := o.workloadSocket
	if sock == "" {
		sock = workloadSocket(o.dataDir)
	}
	ls := &localServices{deviceID: o.deviceID, ids: ids, taps: taps}
	ls.edgeEnv = &process.Edge{
		WorkloadURI:     "unix://" + sock,
		IoTHubHostname:  o.iotHubHostname,
		GatewayHostname: o.hostname,
		GenerationID: func(deviceID, moduleID string) (string, error) {
			id, err := ids.Module(deviceID, moduleID)
			return id.GenerationID, err
		},
	}
	ls.procs = process.NewHost(&process.Options{Edge: ls.edgeEnv})
	ls.workload = workload.New(workload.Options{DeviceID: o.deviceID, Identities: ids, Callers: ls.procs, CA: o.ca, Logger: log})
	wl, err := workload.Listen(sock)
	if err != nil {
		return nil, err
	}
	ls.control = newControl(h, ls.procs, o.deviceID, log)
	cl, err := listenControl(controlSocket(o.dataDir))
	if err != nil {
		wl.Close()
		return nil, err
	}
	if taps != nil {
		taps.procs.Store(ls.procs)
	}
	ls.wg.Add(2)
	go func() {
		defer ls.wg.Done()
		if err := ls.workload.Serve(wl); err != nil {
			log.Error("workload API stopped", "err", err)
		}
	}()
	go func() {
		defer ls.wg.Done()
		if err := ls.control.serve(cl); err != nil {
			log.Error("control socket stopped", "err", err)
		}
	}()
	return ls, nil
}

// setGateway makes addr the IOTEDGE_GATEWAYHOSTNAME of process modules:
// the local endpoint's address as moduleGateway gives it. Call it before
// the first deployment; module processes read it when they start.
func (ls *localServices) setGateway(addr string) { ls.edgeEnv.GatewayHostname = addr }

// syncIdentities gives every module of m an identity and removes those of
// modules m no longer has.
func (ls *localServices) syncIdentities(m *deploy.Manifest, log *slog.Logger) error {
	names := make([]string, len(m.Modules))
	for i, mod := range m.Modules {
		names[i] = mod.Name
	}
	gone, err := ls.ids.Retain(ls.deviceID, names)
	if err != nil {
		return fmt.Errorf("module identities: %w", err)
	}
	for _, g := range gone {
		log.Info("module identity removed", "module", g)
	}
	for _, n := range names {
		if _, err := ls.ids.Module(ls.deviceID, n); err != nil {
			return fmt.Errorf("module identities: %w", err)
		}
	}
	return nil
}

// rotate gives an identity a new key and generation id, as IoT Edge does
// when it creates a module anew: for a key that leaked, or by policy. A
// process module restarts, so that it runs with its new generation id
// (the workload API signs only for the current one); then every
// connection made with the old key is closed (Revalidate). A leaf device
// needs its new connection string (`tinyedge identities --show-keys`).
func (ls *localServices) rotate(h *hub.Hub, ep *edge.Endpoint, deviceID, moduleID string, log *slog.Logger) (rotation, error) {
	if _, ok := ls.ids.Lookup(deviceID, moduleID); !ok || (moduleID == "" && deviceID == ls.deviceID) {
		if moduleID != "" {
			return rotation{}, fmt.Errorf("%w: module %q has no identity here (`tinyedge identities` lists them)", errNoIdentity, moduleID)
		}
		return rotation{}, fmt.Errorf("%w: leaf device %q has no key that tinyedge generated (a key or certificate thumbprint given in the config is changed there; `tinyedge identities` lists the generated ones)", errNoIdentity, deviceID)
	}
	id, err := ls.ids.Rotate(deviceID, moduleID)
	if err != nil {
		return rotation{}, fmt.Errorf("rotate: %w", err)
	}
	out := rotation{DeviceID: deviceID, ModuleID: moduleID, GenerationID: id.GenerationID}
	if moduleID != "" && (*ls.control.mods.Load())[moduleID].typ == "process" {
		switch err := h.Restart(moduleID); {
		case errors.Is(err, hub.ErrNotRestartable):
			// Deployed stopped: it gets its new generation when it runs.
		case err != nil:
			return out, fmt.Errorf("rotated, but the module did not restart: %w", err)
		default:
			out.Restarted = true
		}
	}
	if ep != nil {
		out.Closed = ep.Revalidate()
	}
	log.Info("identity rotated", "device", deviceID, "module", moduleID, "generationId", id.GenerationID, "restarted", out.Restarted, "connectionsClosed", out.Closed)
	return out, nil
}

// deployed records the deployment now in force.
func (ls *localServices) deployed(m *deploy.Manifest) {
	names := make([]string, len(m.Modules))
	var builtin []string
	for i, mod := range m.Modules {
		names[i] = mod.Name
		if mod.Process == nil {
			builtin = append(builtin, mod.Name)
		}
	}
	ls.procs.Retain(names)
	if ls.taps != nil {
		ls.taps.setBuiltin(builtin)
	}
	ls.control.setDeployment(m)
}

// close stops both servers; the hub, and with it every module process,
// is closed before.
func (ls *localServices) close(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ls.control.shutdown(ctx); err != nil {
		log.Warn("control socket shutdown", "err", err)
	}
	if err := ls.workload.Shutdown(ctx); err != nil {
		log.Warn("workload API shutdown", "err", err)
	}
	ls.wg.Wait()
}

// leafIdentities gives each leaf device the config declares without a
// key or certificate thumbprint an identity with a generated key (kept
// across restarts; `tinyedge identities --show-keys` prints it), and
// removes the generated identities of devices no longer declared or now
// given their own key. It returns the devices that have a generated key.
func leafIdentities(ids *identity.Store, deviceID string, leaves []LeafDeviceConfig) ([]string, error) {
	want := map[string]bool{}
	for _, l := range leaves {
		if l.SharedAccessKey == "" && l.Thumbprint == "" {
			want[l.ID] = true
		}
	}
	for _, id := range ids.List() {
		if id.ModuleID == "" && id.DeviceID != deviceID && !want[id.DeviceID] {
			if err := ids.Remove(id.DeviceID, ""); err != nil {
				return nil, fmt.Errorf("leaf device identities: %w", err)
			}
		}
	}
	var out []string
	for _, l := range leaves {
		if !want[l.ID] {
			continue
		}
		if _, err := ids.Device(l.ID); err != nil {
			return nil, fmt.Errorf("leaf device %q: %w", l.ID, err)
		}
		out = append(out, l.ID)
	}
	return out, nil
}
