package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/tinyedge/tinyedge/hub/hubsim"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// embeddedKeepEvents is how many events the embedded emulator keeps in
// memory: a few hundred KiB, where hubsim's default would grow to
// hundreds of MiB over a long run.
const embeddedKeepEvents = 1000

// embeddedHub gives a gateway that is not provisioned an IoT Hub to talk
// to, so `make run` shows the whole loop on one machine: the IoT Hub
// emulator of the default hubsim data directory — the one `tinyedge
// hubsim serve` already runs there, or else one started in this process on
// loopback. The device and each module of the manifest are registered
// (kept when they exist), and the returned provisioning and upstream
// sections connect the link to it with their keys, trusting its CA. The
// `tinyedge hubsim` client commands find it through that directory.
//
// Leaf devices the config declares with a shared access key are
// registered with that key, so they send to the emulator as themselves,
// as they would to IoT Hub. A leaf the emulator already knows with
// another key, or whose key it refuses, is logged: its messages then go
// up as the gateway's.
//
// Modules added by a later re-deployment get no cloud identity until the
// next start.
func embeddedHub(deviceID string, modules []string, leaves []LeafDeviceConfig, log *slog.Logger) (ProvisioningConfig, UpstreamConfig, func(), error) {
	dir, err := hubsim.DefaultDataDir()
	if err != nil {
		return ProvisioningConfig{}, UpstreamConfig{}, nil, err
	}
	var (
		register     func(device, module string) (string, error)
		registerLeaf func(device, key string) (string, error)
		stop         = func() {}
	)
	// The embedded emulator runs inside the gateway's process for as long
	// as it does: it keeps few events in memory (the monitor shows the
	// newest; events.jsonl has them all).
	sim, err := hubsim.New(hubsim.Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Logger: log.With("component", "hubsim"), KeepEvents: embeddedKeepEvents})
	switch {
	case errors.Is(err, hubsim.ErrDataDirInUse):
		// A hubsim already serves that directory: use it.
		c, derr := hubsim.Dial(dir)
		if derr != nil {
			return ProvisioningConfig{}, UpstreamConfig{}, nil, fmt.Errorf("the IoT Hub emulator in %s is locked but does not answer: %w", dir, derr)
		}
		register = func(device, module string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			id, err := c.AddIdentity(ctx, device, module)
			return id.ConnectionString, err
		}
		registerLeaf = func(device, key string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			id, err := c.AddDeviceWithKey(ctx, device, key)
			return id.ConnectionString, err
		}
		log.Info("using the running IoT Hub emulator", "dataDir", dir)
	case err != nil:
		return ProvisioningConfig{}, UpstreamConfig{}, nil, fmt.Errorf("start the embedded IoT Hub emulator: %w", err)
	default:
		if err := sim.Start(); err != nil {
			sim.Close()
			return ProvisioningConfig{}, UpstreamConfig{}, nil, fmt.Errorf("start the embedded IoT Hub emulator: %w", err)
		}
		stop = func() {
			if err := sim.Close(); err != nil {
				log.Error("stop the embedded IoT Hub emulator", "err", err)
			}
		}
		register = func(device, module string) (string, error) {
			id, err := sim.AddIdentity(hubsim.Identity{DeviceID: device, ModuleID: module})
			if errors.Is(err, hubsim.ErrExists) {
				id, err = sim.Identity(device, module)
			}
			if err != nil {
				return "", err
			}
			return sim.ConnectionString(id), nil
		}
		registerLeaf = func(device, key string) (string, error) {
			id, err := sim.AddIdentity(hubsim.Identity{DeviceID: device, PrimaryKey: key})
			if errors.Is(err, hubsim.ErrExists) {
				id, err = sim.Identity(device, "")
			}
			if err != nil {
				return "", err
			}
			return sim.ConnectionString(id), nil
		}
		log.Info("not provisioned: IoT Hub emulator started on loopback; watch it with `tinyedge hubsim monitor`",
			"mqtt", sim.Addr(), "api", sim.HTTPAddr(), "dataDir", dir)
	}
	fail := func(err error) (ProvisioningConfig, UpstreamConfig, func(), error) {
		stop()
		return ProvisioningConfig{}, UpstreamConfig{}, nil, fmt.Errorf("register with the IoT Hub emulator: %w", err)
	}
	dcs, err := register(deviceID, "")
	if err != nil {
		return fail(err)
	}
	p := ProvisioningConfig{Source: "manual", ConnectionString: dcs}
	u := UpstreamConfig{CAFile: filepath.Join(dir, "ca.pem"), Modules: map[string]AuthConfig{}}
	for _, m := range modules {
		cs, err := register(deviceID, m)
		if err != nil {
			return fail(err)
		}
		c, err := iothub.ParseConnectionString(cs)
		if err != nil {
			return fail(err)
		}
		u.Modules[m] = AuthConfig{SharedAccessKey: c.SharedAccessKeyRaw}
	}
	for _, l := range leaves {
		if l.SharedAccessKey == "" {
			continue // X.509 or a generated key: not a device of its own upstream
		}
		cs, err := registerLeaf(l.ID, l.SharedAccessKey)
		if err != nil {
			log.Warn("leaf device not registered with the IoT Hub emulator: its messages go up as the gateway's", "leaf", l.ID, "err", err)
			continue
		}
		key, _ := base64.StdEncoding.DecodeString(l.SharedAccessKey)
		if c, err := iothub.ParseConnectionString(cs); err != nil || !bytes.Equal(c.SharedAccessKey, key) {
			log.Warn("leaf device is registered with the IoT Hub emulator with another key: its messages go up as the gateway's; give the leaf that key, or remove it from the emulator's state.json",
				"leaf", l.ID, "dataDir", dir)
		}
	}
	return p, u, stop, nil
}
