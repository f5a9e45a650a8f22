package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"syscall"

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
// and thumbprints. keys is the identity store (hub/identity): module
// keys, and the keys generated for leaf devices the config declares
// without one; nil means only leaf devices with a key in the config can
// connect. Open the workload API's CA (workloadCA) before or after, not
// at the same time: on first start both create the CA files. The caller
// closes the endpoint.
func startEdge(cfg *Config, h *hub.Hub, dataDir string, keys edge.Keys, log *slog.Logger) (*edge.Endpoint, *certs.Authority, error) {
	gateway := gatewayHostname(cfg)
	iotHub, err := iotHubHostname(cfg)
	if err != nil {
		return nil, nil, err
	}
	ek := edgeKeys{store: keys, leaves: map[string][]byte{}}
	thumbs := edge.Thumbprints{}
	for i, l := range cfg.Edge.LeafDevices {
		where := fmt.Sprintf("config %s: edge.leaf_devices[%d]", cfg.path, i)
		switch {
		case l.ID == "":
			return nil, nil, fmt.Errorf("%s: id is missing", where)
		case l.SharedAccessKey == "" && l.Thumbprint == "" && keys == nil:
			return nil, nil, fmt.Errorf("%s (%s): give shared_access_key (base64) or thumbprint (SHA-256 hex of its certificate); without an identity store, no key is generated", where, l.ID)
		}
		ek.leaves[l.ID] = nil // declared: its key is in the identity store
		if l.SharedAccessKey != "" {
			k, err := base64.StdEncoding.DecodeString(l.SharedAccessKey)
			if err != nil {
				return nil, nil, fmt.Errorf("%s (%s): shared_access_key is not base64: %v", where, l.ID, err)
			}
			ek.leaves[l.ID] = k
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
		Keys:            ek,
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

// gatewayHostname is the gateway's name on the local network: the
// config's hostname, else the host name.
func gatewayHostname(cfg *Config) string {
	if cfg.Hostname != "" {
		return cfg.Hostname
	}
	return hostname()
}

// iotHubHostname is the provisioned IoT Hub's host name, "" when the
// device is not provisioned.
func iotHubHostname(cfg *Config) (string, error) {
	if cs := cfg.Provisioning.ConnectionString; cs != "" {
		c, err := iothub.ParseConnectionString(cs)
		if err != nil {
			return "", fmt.Errorf("config %s: provisioning.connection_string: %w", cfg.path, err)
		}
		return c.HostName, nil
	}
	return cfg.Provisioning.IoTHubHostname, nil
}

// moduleGateway is the IOTEDGE_GATEWAYHOSTNAME of process modules: where
// the local endpoint's TLS listener, bound to addr, is reached. The SDKs
// connect to that name on 8883; on another port the port goes with it
// (the Node SDK takes host:port there for MQTT). A listener bound to a
// loopback address is reached at that address (the server certificate
// names the loopback addresses), not at the gateway's name, which may
// resolve to another one.
func moduleGateway(gateway, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return gateway
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		gateway = host
	}
	if port == "8883" {
		if strings.Contains(gateway, ":") {
			return "[" + gateway + "]"
		}
		return gateway
	}
	return net.JoinHostPort(gateway, port)
}

// edgeKeys are the keys of the identities that may connect: modules'
// from the identity store; leaf devices' only when the config declares
// them, from the config or else the identity store.
type edgeKeys struct {
	store  edge.Keys
	leaves map[string][]byte // declared leaf devices; nil: the store has the key
}

func (k edgeKeys) Key(deviceID, moduleID string) ([]byte, bool) {
	if moduleID == "" {
		v, declared := k.leaves[deviceID]
		if !declared || v != nil {
			return v, declared
		}
	}
	if k.store == nil {
		return nil, false
	}
	return k.store.Key(deviceID, moduleID)
}

// startEdgeOrWarn starts the local endpoint. When the config leaves the
// address to the default (:8883) and it cannot be had — another broker
// holds it — the gateway runs on without external modules and says so;
// an address the config names must work.
func startEdgeOrWarn(cfg *Config, h *hub.Hub, dataDir string, keys edge.Keys, log *slog.Logger) (*edge.Endpoint, error) {
	ep, _, err := startEdge(cfg, h, dataDir, keys, log)
	if err != nil && cfg.Edge.Listen == "" && (errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EACCES)) {
		log.Error("local MQTT endpoint is off: external modules and leaf devices cannot connect; free the port or set [edge] listen in the config",
			"address", edge.DefaultListen, "err", err)
		return nil, nil
	}
	return ep, err
}
