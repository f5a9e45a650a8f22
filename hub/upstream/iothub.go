package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/store"
)

// DefaultTokenLifetime is how long minted SAS tokens live by default.
const DefaultTokenLifetime = time.Hour

// Cloud is what the link needs of the hub to serve module and leaf
// device twins and direct methods from the cloud, and to know which leaf
// devices are connected locally; *hub.Hub implements it.
type Cloud interface {
	InvokeMethod(ctx context.Context, deviceID, moduleID string, req hub.MethodRequest, timeout time.Duration) (hub.MethodResponse, error)
	ApplyCloudDesired(id hub.Identity, doc map[string]any, version int64) (int64, error)
	ApplyCloudDesiredPatch(id hub.Identity, patch map[string]any, version int64) (int64, error)
	PendingReported(id hub.Identity) ([]store.Patch, error)
	AckReported(id hub.Identity, seq uint64) error
	ReportedChanged() <-chan struct{}
	ConnectedLeaves() (map[string]uint64, <-chan struct{})
}

var _ Cloud = (*hub.Hub)(nil)

// IoTHubConfig is an Azure IoT Hub upstream.
type IoTHubConfig struct {
	HostName string
	DeviceID string
	// SharedAccessKey is the device's key (decoded); nil for an X.509
	// identity, whose certificate is in TLS.Certificates.
	SharedAccessKey []byte
	// GatewayHostName, when set, is connected to instead of HostName (a
	// parent gateway, or an emulator; it may carry a port); HostName stays
	// in the user name and the tokens.
	GatewayHostName string
	// Broker overrides the URL connected to; default
	// ssl://{GatewayHostName or HostName}:8883 (the port only when the
	// name has none).
	Broker string
	// TLS verifies the server (RootCAs nil: the system roots) and holds
	// the device's X.509 certificate; nil means system roots, TLS 1.2+.
	TLS *tls.Config
	// TokenLifetime is how long minted SAS tokens live; default 1 h. The
	// link reconnects with a new token when four fifths of it are gone.
	TokenLifetime time.Duration
	// Modules are the module identities that connect on their own: their
	// messages go up on their connection, and their twins and direct
	// methods are served from the cloud.
	Modules []ModuleIdentity
	// Leaves are the leaf devices that connect as themselves, when needed
	// (see leaf.go): their messages go up on their connection, their
	// twins are synced and their direct methods served from the cloud.
	Leaves []LeafIdentity
}

// LeafIdentity is a leaf (downstream) device's identity in IoT Hub. Only
// a shared access key will do: the gateway does not hold an X.509 leaf's
// private key, so such a leaf's messages go on the device's connection.
type LeafIdentity struct {
	DeviceID        string
	SharedAccessKey []byte // decoded
}

// ModuleIdentity is one module's identity in IoT Hub.
type ModuleIdentity struct {
	ModuleID        string
	SharedAccessKey []byte           // decoded; nil for X.509
	Certificate     *tls.Certificate // X.509 identity
}

// NewIoTHub returns a link speaking IoT Hub's MQTT dialect: one connection
// for the device and one per module identity, telemetry on the events
// topic of the identity that sent it with its properties in the bag.
func NewIoTHub(cfg IoTHubConfig, opts *Options) (*Link, error) {
	if cfg.HostName == "" || cfg.DeviceID == "" {
		return nil, errors.New("upstream iothub: the host name and the device id are required")
	}
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = DefaultTokenLifetime
	}
	broker := cfg.Broker
	if broker == "" {
		host := cfg.HostName
		if cfg.GatewayHostName != "" {
			host = cfg.GatewayHostName
		}
		if _, _, err := net.SplitHostPort(host); err != nil {
			host = net.JoinHostPort(host, "8883") // no port given
		}
		broker = "ssl://" + host
	}
	broker, secure, err := brokerURL(broker)
	if err != nil {
		return nil, err
	}
	base := cfg.TLS
	if base == nil {
		base = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.SharedAccessKey == nil && len(base.Certificates) == 0 {
		return nil, fmt.Errorf("upstream iothub: device %s has neither a shared access key nor an X.509 certificate", cfg.DeviceID)
	}
	lifetime := cfg.TokenLifetime
	mk := func(device, module string, key []byte, cert *tls.Certificate) account {
		a := account{identity: device, module: module, clientID: device, broker: broker,
			leaf: device != cfg.DeviceID, topic: iothub.EventsTopic(device, module, "")}
		if module != "" {
			a.identity = device + "/" + module
			a.clientID = a.identity
		}
		if secure {
			a.tls = base.Clone()
			a.tls.ServerName = ""
			if cert != nil {
				a.tls.Certificates = []tls.Certificate{*cert}
			}
			a.insecure = a.tls.InsecureSkipVerify
		}
		user := iothub.FormatUsername(cfg.HostName, device, module, nil)
		if key == nil {
			a.creds = func(time.Time) (credentials, error) { return credentials{username: user}, nil }
			return a
		}
		resource := iothub.Resource(cfg.HostName, device, module)
		a.needsClock = true
		a.creds = func(now time.Time) (credentials, error) {
			exp := now.Add(lifetime)
			return credentials{username: user, password: iothub.SignToken(key, resource, exp, ""), expires: exp}, nil
		}
		return a
	}
	accts := []account{mk(cfg.DeviceID, "", cfg.SharedAccessKey, nil)} // first: newLink takes it as the device
	seen := map[string]bool{}
	for _, m := range cfg.Modules {
		if m.ModuleID == "" || seen[m.ModuleID] {
			return nil, fmt.Errorf("upstream iothub: module identity %q is empty or given twice", m.ModuleID)
		}
		seen[m.ModuleID] = true
		if m.SharedAccessKey == nil && m.Certificate == nil {
			return nil, fmt.Errorf("upstream iothub: module %s has neither a shared access key nor an X.509 certificate", m.ModuleID)
		}
		if m.SharedAccessKey == nil && !secure {
			return nil, fmt.Errorf("upstream iothub: module %s has an X.509 identity but %s is not TLS", m.ModuleID, broker)
		}
		accts = append(accts, mk(cfg.DeviceID, m.ModuleID, m.SharedAccessKey, m.Certificate))
	}
	for _, lf := range cfg.Leaves {
		if lf.DeviceID == "" || lf.DeviceID == cfg.DeviceID || seen["/"+lf.DeviceID] {
			return nil, fmt.Errorf("upstream iothub: leaf device %q is empty, the gateway itself or given twice", lf.DeviceID)
		}
		seen["/"+lf.DeviceID] = true // module ids cannot hold '/'
		if len(lf.SharedAccessKey) == 0 {
			return nil, fmt.Errorf("upstream iothub: leaf device %s has no shared access key", lf.DeviceID)
		}
		accts = append(accts, mk(lf.DeviceID, "", lf.SharedAccessKey, nil))
	}
	l := newLink("iothub", accts, opts)
	l.encode = func(id *identity, m *message.Message, _ hub.Delivery) (string, []byte, error) {
		// The topic is built in one buffer: this is on every message's path.
		var buf [256]byte
		topic := iothub.AppendBag(append(buf[:0], id.acct.topic...), m, iothub.BagOptions{Output: true})
		return string(topic), m.Body, nil
	}
	for _, id := range l.ids {
		switch {
		case id.acct.leaf:
			id.acct.ready = l.twinReady(hub.Identity{DeviceID: id.acct.identity}, id)
		case id.acct.module != "":
			id.acct.ready = l.twinReady(hub.Identity{DeviceID: cfg.DeviceID, ModuleID: id.acct.module}, id)
		}
	}
	return l, nil
}

// requestTimeout bounds the wait for IoT Hub's answer to a twin request.
const requestTimeout = 30 * time.Second
