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

// Cloud is what the link needs of the hub to serve module twins and
// direct methods from the cloud; *hub.Hub implements it.
type Cloud interface {
	InvokeMethod(ctx context.Context, deviceID, moduleID string, req hub.MethodRequest, timeout time.Duration) (hub.MethodResponse, error)
	ApplyCloudDesired(module string, doc map[string]any, version int64) (int64, error)
	ApplyCloudDesiredPatch(module string, patch map[string]any, version int64) (int64, error)
	PendingReported(module string) ([]store.Patch, error)
	AckReported(module string, seq uint64) error
	ReportedChanged() <-chan struct{}
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
	mk := func(module string, key []byte, cert *tls.Certificate) account {
		a := account{identity: cfg.DeviceID, module: module, clientID: cfg.DeviceID, broker: broker}
		if module != "" {
			a.identity = cfg.DeviceID + "/" + module
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
		user := iothub.FormatUsername(cfg.HostName, cfg.DeviceID, module, nil)
		if key == nil {
			a.creds = func(time.Time) (credentials, error) { return credentials{username: user}, nil }
			return a
		}
		resource := iothub.Resource(cfg.HostName, cfg.DeviceID, module)
		a.needsClock = true
		a.creds = func(now time.Time) (credentials, error) {
			exp := now.Add(lifetime)
			return credentials{username: user, password: iothub.SignToken(key, resource, exp, ""), expires: exp}, nil
		}
		return a
	}
	accts := []account{mk("", cfg.SharedAccessKey, nil)}
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
		accts = append(accts, mk(m.ModuleID, m.SharedAccessKey, m.Certificate))
	}
	l := newLink("iothub", accts, opts)
	devicePrefix := iothub.EventsTopic(cfg.DeviceID, "", "")
	l.encode = func(m *message.Message, _ hub.Delivery) (string, []byte, error) {
		prefix := devicePrefix
		if _, ok := l.byMod[m.System.ConnectionModuleID]; ok {
			prefix = iothub.EventsTopic(cfg.DeviceID, m.System.ConnectionModuleID, "")
		}
		// The topic is built in one buffer: this is on every message's path.
		var buf [256]byte
		topic := iothub.AppendBag(append(buf[:0], prefix...), m, iothub.BagOptions{Output: true})
		return string(topic), m.Body, nil
	}
	for _, id := range l.ids {
		if id.acct.module != "" {
			id.acct.ready = l.moduleReady(cfg.DeviceID, id)
		}
	}
	return l, nil
}

// requestTimeout bounds the wait for IoT Hub's answer to a twin request.
const requestTimeout = 30 * time.Second
