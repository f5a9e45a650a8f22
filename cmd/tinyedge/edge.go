package main

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/certs"
	"github.com/tinyedge/tinyedge/hub/edge"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// certsDir is where the device CA lives in a data directory; the trust
// bundle (the CA certificate) is written next to it for modules and leaf
// devices.
func certsDir(dataDir string) string { return filepath.Join(dataDir, "certs") }

// trustBundlePath is the trust bundle file in a data directory.
func trustBundlePath(dataDir string) string {
	return filepath.Join(certsDir(dataDir), "trust-bundle.pem")
}

// startEdge builds the local MQTT endpoint from the config's [edge]
// section and starts it: the device CA (created in the data directory
// on first use), the trust bundle file, a self-renewing server
// certificate for the gateway's host name, and the leaf devices' keys
// and thumbprints. moduleKeys holds the modules' keys (the workload
// API's key store); nil means only leaf devices can connect. The caller
// closes the endpoint.
func startEdge(cfg *Config, h *hub.Hub, dataDir string, moduleKeys edge.Keys, log *slog.Logger) (*edge.Endpoint, *certs.Authority, error) {
	gateway := cfg.Hostname
	if gateway == "" {
		gateway = hostname()
	}
	iotHub := cfg.Provisioning.IoTHubHostname
	if cs := cfg.Provisioning.ConnectionString; cs != "" {
		c, err := iothub.ParseConnectionString(cs)
		if err != nil {
			return nil, nil, fmt.Errorf("config %s: provisioning.connection_string: %w", cfg.path, err)
		}
		iotHub = c.HostName
	}
	keys := edgeKeys{modules: moduleKeys, leaves: map[string][]byte{}}
	thumbs := edge.Thumbprints{}
	for i, l := range cfg.Edge.LeafDevices {
		where := fmt.Sprintf("config %s: edge.leaf_devices[%d]", cfg.path, i)
		switch {
		case l.ID == "":
			return nil, nil, fmt.Errorf("%s: id is missing", where)
		case l.SharedAccessKey == "" && l.Thumbprint == "":
			return nil, nil, fmt.Errorf("%s (%s): give shared_access_key (base64) or thumbprint (SHA-256 hex of its certificate)", where, l.ID)
		}
		if l.SharedAccessKey != "" {
			k, err := base64.StdEncoding.DecodeString(l.SharedAccessKey)
			if err != nil {
				return nil, nil, fmt.Errorf("%s (%s): shared_access_key is not base64: %v", where, l.ID, err)
			}
			keys.leaves[l.ID] = k
		}
		if l.Thumbprint != "" {
			thumbs[l.ID] = l.Thumbprint
		}
	}
	ca, err := certs.Open(certsDir(dataDir), nil)
	if err != nil {
		return nil, nil, err
	}
	if err := ca.WriteTrustBundle(trustBundlePath(dataDir)); err != nil {
		return nil, nil, err
	}
	sc, err := ca.NewServerCert(certs.ServerOptions{Hostname: gateway})
	if err != nil {
		return nil, nil, err
	}
	ep, err := edge.New(edge.Options{
		Hub:             h,
		Keys:            keys,
		Thumbprints:     thumbs,
		IoTHubHostname:  iotHub,
		GatewayHostname: gateway,
		Listen:          cfg.Edge.Listen,
		PlainListen:     cfg.Edge.PlainListen,
		MethodsListen:   cfg.Edge.MethodsListen,
		ServerCert:      sc,
		MaxConnections:  cfg.Edge.MaxConnections,
		Logger:          log.With("component", "edge"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: [edge]: %w", cfg.path, err)
	}
	if err := ep.Start(); err != nil {
		return nil, nil, err
	}
	return ep, ca, nil
}

// edgeKeys are the keys of the identities that may connect: modules'
// from the key store, leaf devices' from the config.
type edgeKeys struct {
	modules edge.Keys
	leaves  map[string][]byte
}

func (k edgeKeys) Key(deviceID, moduleID string) ([]byte, bool) {
	if moduleID == "" {
		v, ok := k.leaves[deviceID]
		return v, ok
	}
	if k.modules == nil {
		return nil, false
	}
	return k.modules.Key(deviceID, moduleID)
}
