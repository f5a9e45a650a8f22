package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// defaultConfigPath is where the device config lives, as IoT Edge keeps
// /etc/aziot/config.toml.
const defaultConfigPath = "/etc/tinyedge/config.toml"

// configEnv names the config file instead of the default path when
// --config is not given (a file it names must exist).
const configEnv = "TINYEDGE_CONFIG"

// configPathFromEnv is the default of --config: $TINYEDGE_CONFIG, else
// defaultConfigPath.
func configPathFromEnv() (path string, named bool) {
	if p := os.Getenv(configEnv); p != "" {
		return p, true
	}
	return defaultConfigPath, false
}

// Config is the device config file (TOML). Its provisioning section reads
// like IoT Edge's config.toml, so a user can copy theirs:
//
//	hostname = "gateway-1"
//
//	[provisioning]
//	source = "manual"
//	connection_string = "HostName=hub.azure-devices.net;DeviceId=gw1;SharedAccessKey=…"
//
// or, for an X.509 device identity:
//
//	[provisioning]
//	source = "manual"
//	iothub_hostname = "hub.azure-devices.net"
//	device_id = "gw1"
//	[provisioning.authentication]
//	method = "x509"
//	identity_cert = "file:///etc/tinyedge/device.pem"
//	identity_pk = "file:///etc/tinyedge/device.key.pem"
//
// The other sections are tinyedge's own.
type Config struct {
	// Hostname is the gateway's name on the local network: the name in
	// the local endpoint's server certificate and what leaf devices put in
	// GatewayHostName. Default: the host name.
	Hostname     string             `toml:"hostname"`
	Provisioning ProvisioningConfig `toml:"provisioning"`
	Upstream     UpstreamConfig     `toml:"upstream"`
	Edge         EdgeConfig         `toml:"edge"`
	Workload     WorkloadConfig     `toml:"workload"`
	Appliance    ApplianceConfig    `toml:"appliance"` // see init.go

	// path is the file it was read from, for messages.
	path string
}

// ProvisioningConfig is the device identity, as IoT Edge's config.toml
// spells it.
type ProvisioningConfig struct {
	Source           string     `toml:"source"`
	ConnectionString string     `toml:"connection_string"`
	IoTHubHostname   string     `toml:"iothub_hostname"`
	DeviceID         string     `toml:"device_id"`
	Authentication   AuthConfig `toml:"authentication"`
}

// AuthConfig is an identity's credentials: a shared access key, or an
// X.509 certificate and key given as file:// URIs or paths.
type AuthConfig struct {
	Method          string `toml:"method"` // "sas" or "x509"
	SharedAccessKey string `toml:"shared_access_key"`
	IdentityCert    string `toml:"identity_cert"`
	IdentityPK      string `toml:"identity_pk"`
}

// UpstreamConfig configures the link to the cloud.
type UpstreamConfig struct {
	// Protocol is "iothub" (default when provisioned) or "mqtt" (plain
	// MQTT to any broker, see MQTT).
	Protocol string `toml:"protocol"`
	// CAFile verifies the server instead of the system roots.
	CAFile string `toml:"ca_file"`
	// InsecureSkipVerify turns server verification off. It is logged
	// loudly at every connect.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`
	// TokenLifetime is how long minted SAS tokens live (default 1h).
	TokenLifetime Duration `toml:"token_lifetime"`
	// Window is how many QoS 1 publishes may await their PUBACK (default
	// 16, IoT Hub's limit).
	Window int `toml:"window"`
	// RateLimit caps messages per second during a backlog drain; 0 means
	// no cap.
	RateLimit float64 `toml:"rate_limit"`
	// Port overrides the MQTT port (default 8883).
	Port int `toml:"port"`
	// Modules holds module identities' credentials, by module name, for
	// modules whose twin and methods are used from the cloud.
	Modules map[string]AuthConfig `toml:"modules"`
	MQTT    MQTTConfig            `toml:"mqtt"`
}

// MQTTConfig is the plain-MQTT upstream.
type MQTTConfig struct {
	// Broker is the broker's URL: tcp://host:1883, ssl://host:8883.
	Broker   string `toml:"broker"`
	ClientID string `toml:"client_id"`
	Username string `toml:"username"`
	Password string `toml:"password"`
	// Topic is the template messages are published on; {deviceId},
	// {moduleId}, {outputName}, {messageId}, {correlationId},
	// {contentType}, {priority} and {property:NAME} are replaced.
	Topic string `toml:"topic"`
	// IdentityCert and IdentityPK are an optional X.509 client identity
	// (file:// URIs or paths) for an ssl:// broker.
	IdentityCert string `toml:"identity_cert"`
	IdentityPK   string `toml:"identity_pk"`
}

// EdgeConfig configures the local MQTT endpoint for external modules
// and leaf devices.
type EdgeConfig struct {
	// Listen is the TLS listener's address (default ":8883"); "off"
	// disables it.
	Listen string `toml:"listen"`
	// PlainListen is an optional listener without TLS. It must be a
	// loopback address.
	PlainListen string `toml:"plain_listen"`
	// MethodsListen is the HTTPS listener for module-to-module direct
	// methods (default ":443", where the SDKs call; "off" disables it).
	MethodsListen string `toml:"methods_listen"`
	// MaxConnections bounds concurrent clients (default 100).
	MaxConnections int `toml:"max_connections"`
	// LeafDevices are the downstream devices allowed to connect.
	LeafDevices []LeafDeviceConfig `toml:"leaf_devices"`
}

// LeafDeviceConfig declares one downstream device.
//
// A leaf with a SharedAccessKey goes upstream as itself, as with edgeHub:
// the key is the leaf's IoT Hub device key, so the upstream link connects
// to IoT Hub as the leaf (while the leaf is connected locally or has
// messages to send); the leaf's messages arrive there with its own
// $connectionDeviceId, its twin is synced with the cloud and the cloud's
// direct methods reach it. While IoT Hub refuses the key, its messages go
// up on the gateway's connection, as the gateway's. A leaf with a
// Thumbprint, or with neither (a key tinyedge generates, shown by
// `tinyedge identities`), cannot connect as itself: tinyedge holds no
// private key IoT Hub knows for it, so its messages go up as the
// gateway's, which is logged for each such leaf at startup.
type LeafDeviceConfig struct {
	ID string `toml:"id"`
	// SharedAccessKey (base64) for SAS: the leaf's IoT Hub key; or
	// Thumbprint (SHA-256 of the client certificate, hex) for X.509.
	SharedAccessKey string `toml:"shared_access_key"`
	Thumbprint      string `toml:"thumbprint"`
}

// WorkloadConfig configures the workload API process modules use.
type WorkloadConfig struct {
	// Socket is the unix socket path (default <data-dir>/workload.sock).
	Socket string `toml:"socket"`
}

// Duration is a time.Duration that reads from TOML as "90s", "1h".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"90s\" or \"1h\": %w", err)
	}
	d.Duration = v
	return nil
}

// loadConfig reads the config file. A missing file at the default path
// is no error (tinyedge then runs with the embedded emulator); a missing
// file the user named is. Errors name the file, and for TOML syntax the
// line and column; unknown keys are refused with their full name, since a
// misspelt key would otherwise be silently ignored.
func loadConfig(path string, named bool) (*Config, error) {
	if path == "" {
		path = defaultConfigPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if !named && errors.Is(err, fs.ErrNotExist) {
			return &Config{}, nil
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	c := &Config{path: path}
	md, err := toml.Decode(string(b), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config %s: line %d, column %d: %s", path, pe.Position.Line, pe.Position.Col, pe.Message)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	return c, nil
}
