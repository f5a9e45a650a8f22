package main

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/upstream"
	"github.com/tinyedge/tinyedge/store"
)

// buildTime is when the binary was built (RFC 3339), stamped by the
// Makefile with -ldflags -X main.buildTime=…. A clock reading earlier
// than it is not trusted: no SAS token is minted on it.
var buildTime = ""

// trustedAfter is the earliest clock reading tinyedge believes: the build
// time, or store.TrustedAfter for a binary built without one.
func trustedAfter() time.Time {
	if t, err := time.Parse(time.RFC3339, buildTime); err == nil && t.After(store.TrustedAfter) {
		return t
	}
	return store.TrustedAfter
}

// upstreamFlags are run's flags about the upstream.
type upstreamFlags struct {
	kind   string // --upstream
	broker string // --mqtt-broker
	topic  string // --mqtt-topic
}

// upstreamSetup is what run needs to wire the upstream.
type upstreamSetup struct {
	endpoint hub.Endpoint
	link     *upstream.Link // nil for the console
	deviceID string         // from the provisioning, when there is one
	modules  []string       // modules with their own cloud identity
	leaves   []string       // leaf devices with their own cloud identity
}

// upstreamKind decides the upstream: the flag, else the config's
// protocol, else iothub when the device is provisioned, else the IoT Hub
// emulator embedded on loopback (hubsim), so a gateway nobody configured
// still shows the whole loop.
func upstreamKind(flagKind string, c *Config) string {
	switch {
	case flagKind != "":
		return flagKind
	case c.Upstream.Protocol != "":
		return c.Upstream.Protocol
	case c.Provisioning.ConnectionString != "" || c.Provisioning.IoTHubHostname != "":
		return "iothub"
	}
	return "hubsim"
}

// newUpstream builds the upstream endpoint the flags and the config ask
// for. Errors name the config file and key.
func newUpstream(f upstreamFlags, c *Config, deviceID string, st *store.Store, stdout io.Writer, log *slog.Logger) (*upstreamSetup, error) {
	u := c.Upstream
	opts := &upstream.Options{
		Logger:    log,
		Window:    u.Window,
		RateLimit: u.RateLimit,
		Trusted:   clockTrust(), // see init.go
		Store:     st,
	}
	where := "config " + c.path
	if c.path == "" {
		where = "config"
	}
	if u.Window < 0 || u.Window > 65535 {
		return nil, fmt.Errorf("%s: upstream.window %d: want 1 to 65535 (IoT Hub allows 16)", where, u.Window)
	}
	if u.RateLimit < 0 {
		return nil, fmt.Errorf("%s: upstream.rate_limit %v: want messages per second, 0 for no limit", where, u.RateLimit)
	}
	switch kind := upstreamKind(f.kind, c); kind {
	case "console":
		return &upstreamSetup{endpoint: hub.NewConsole(stdout), deviceID: deviceID}, nil
	case "mqtt":
		m := u.MQTT
		if f.broker != "" {
			m.Broker = f.broker
		}
		if f.topic != "" {
			m.Topic = f.topic
		}
		if m.Broker == "" {
			return nil, fmt.Errorf("%w: --upstream mqtt needs a broker: --mqtt-broker tcp://host:1883 or upstream.mqtt.broker in the config", errUsage)
		}
		tc, err := upstream.TLSConfig(u.CAFile, fileURI(m.IdentityCert), fileURI(m.IdentityPK), u.InsecureSkipVerify)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		link, err := upstream.NewMQTT(upstream.MQTTConfig{
			Broker: m.Broker, DeviceID: deviceID, ClientID: m.ClientID,
			Username: m.Username, Password: m.Password, Topic: m.Topic, TLS: tc,
		}, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return &upstreamSetup{endpoint: link, link: link, deviceID: deviceID}, nil
	case "iothub":
		cfg, err := iotHubConfig(c, where)
		if err != nil {
			return nil, err
		}
		link, err := upstream.NewIoTHub(cfg, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		s := &upstreamSetup{endpoint: link, link: link, deviceID: cfg.DeviceID}
		for _, m := range cfg.Modules {
			s.modules = append(s.modules, m.ModuleID)
		}
		for _, l := range cfg.Leaves {
			s.leaves = append(s.leaves, l.DeviceID)
		}
		logLeavesAsGateway(c.Edge.LeafDevices, log)
		return s, nil
	default:
		return nil, fmt.Errorf("%w: --upstream %q: want console, iothub or mqtt", errUsage, kind)
	}
}

// iotHubConfig reads the device and module identities from the config.
func iotHubConfig(c *Config, where string) (upstream.IoTHubConfig, error) {
	p, u := c.Provisioning, c.Upstream
	var cfg upstream.IoTHubConfig
	fail := func(format string, args ...any) (upstream.IoTHubConfig, error) {
		return upstream.IoTHubConfig{}, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...))
	}
	certFile, keyFile := "", ""
	switch {
	case p.ConnectionString != "":
		cs, err := iothub.ParseConnectionString(p.ConnectionString)
		if err != nil {
			return fail("provisioning.connection_string: %v", err)
		}
		if cs.ModuleID != "" {
			return fail("provisioning.connection_string is a module's (ModuleId=%s); give the device's", cs.ModuleID)
		}
		if cs.SharedAccessSignature != "" {
			return fail("provisioning.connection_string holds a fixed SharedAccessSignature, which expires; give the SharedAccessKey so tokens are minted and renewed")
		}
		cfg.HostName, cfg.DeviceID, cfg.GatewayHostName = cs.HostName, cs.DeviceID, cs.GatewayHostName
		cfg.SharedAccessKey = cs.SharedAccessKey
		if cs.X509 {
			certFile, keyFile = fileURI(p.Authentication.IdentityCert), fileURI(p.Authentication.IdentityPK)
			if certFile == "" || keyFile == "" {
				return fail("provisioning.connection_string says x509=true: give provisioning.authentication.identity_cert and identity_pk")
			}
		}
	case p.IoTHubHostname != "":
		if p.DeviceID == "" {
			return fail("provisioning.device_id is missing")
		}
		cfg.HostName, cfg.DeviceID = p.IoTHubHostname, p.DeviceID
		switch a := p.Authentication; a.Method {
		case "sas", "":
			key, err := base64.StdEncoding.DecodeString(a.SharedAccessKey)
			if err != nil || len(key) == 0 {
				return fail("provisioning.authentication.shared_access_key: want the base64 key from IoT Hub")
			}
			cfg.SharedAccessKey = key
		case "x509":
			certFile, keyFile = fileURI(a.IdentityCert), fileURI(a.IdentityPK)
			if certFile == "" || keyFile == "" {
				return fail("provisioning.authentication: method x509 needs identity_cert and identity_pk")
			}
		default:
			return fail("provisioning.authentication.method %q: want sas or x509", a.Method)
		}
	default:
		return fail("--upstream iothub needs the device identity: provisioning.connection_string, or provisioning.iothub_hostname with device_id and authentication")
	}
	tc, err := upstream.TLSConfig(u.CAFile, certFile, keyFile, u.InsecureSkipVerify)
	if err != nil {
		return fail("%v", err)
	}
	cfg.TLS = tc
	cfg.TokenLifetime = u.TokenLifetime.Duration
	if u.Port != 0 {
		host := cfg.HostName
		if cfg.GatewayHostName != "" {
			host = cfg.GatewayHostName
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h // upstream.port wins over a port in the connection string
		}
		cfg.Broker = "ssl://" + net.JoinHostPort(host, strconv.Itoa(u.Port))
	}
	names := make([]string, 0, len(u.Modules))
	for n := range u.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := u.Modules[n]
		mi := upstream.ModuleIdentity{ModuleID: n}
		switch a.Method {
		case "sas", "":
			key, err := base64.StdEncoding.DecodeString(a.SharedAccessKey)
			if err != nil || len(key) == 0 {
				return fail("upstream.modules.%s.shared_access_key: want the module's base64 key from IoT Hub", n)
			}
			mi.SharedAccessKey = key
		case "x509":
			cert, err := tls.LoadX509KeyPair(fileURI(a.IdentityCert), fileURI(a.IdentityPK))
			if err != nil {
				return fail("upstream.modules.%s: X.509 identity: %v", n, err)
			}
			mi.Certificate = &cert
		default:
			return fail("upstream.modules.%s.method %q: want sas or x509", n, a.Method)
		}
		cfg.Modules = append(cfg.Modules, mi)
	}
	// A leaf's key checks its local connections and is its IoT Hub key:
	// the link connects as the leaf with it (see hub/upstream/leaf.go).
	for i, l := range c.Edge.LeafDevices {
		if l.SharedAccessKey == "" {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(l.SharedAccessKey)
		if err != nil || len(key) == 0 {
			return fail("edge.leaf_devices[%d] (%s): shared_access_key: want the leaf's base64 key from IoT Hub", i, l.ID)
		}
		cfg.Leaves = append(cfg.Leaves, upstream.LeafIdentity{DeviceID: l.ID, SharedAccessKey: key})
	}
	return cfg, nil
}

// logLeavesAsGateway says, once per leaf device at startup, which leaves
// cannot connect to IoT Hub as themselves, so that their messages go up
// on the gateway's connection, as the gateway's.
func logLeavesAsGateway(leaves []LeafDeviceConfig, log *slog.Logger) {
	for _, l := range leaves {
		switch {
		case l.SharedAccessKey != "":
		case l.Thumbprint != "":
			log.Warn("leaf device authenticates with an X.509 certificate, whose private key tinyedge does not hold: it cannot connect to IoT Hub as itself, so its messages go up on the gateway's connection, as the gateway's",
				"leaf", l.ID)
		default:
			log.Warn("leaf device has a key tinyedge generated, which IoT Hub does not know: its messages go up on the gateway's connection, as the gateway's; give it shared_access_key (its IoT Hub key) to send as itself",
				"leaf", l.ID)
		}
	}
}

// fileURI turns IoT Edge's file:///path into a path; a plain path stays.
func fileURI(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme == "file" {
		return u.Path
	}
	return s
}

// checkDeviceID reconciles --device-id with the provisioned identity.
func checkDeviceID(flagSet bool, flagID string, s *upstreamSetup) (string, error) {
	if s.deviceID == "" || s.deviceID == flagID {
		return flagID, nil
	}
	if flagSet {
		return "", fmt.Errorf("%w: --device-id %s but the config provisions device %s", errUsage, flagID, s.deviceID)
	}
	return s.deviceID, nil
}
