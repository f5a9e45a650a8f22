package upstream

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
)

// MQTTConfig is a plain-MQTT upstream: any MQTT 3.1.1 broker.
type MQTTConfig struct {
	// Broker is the broker's URL: tcp://host:1883, or ssl://host:8883
	// (mqtt:// and mqtts:// are accepted as the same).
	Broker string
	// DeviceID is the edge device's id, for {deviceId} and the default
	// client id.
	DeviceID string
	// ClientID is the MQTT client id; default DeviceID.
	ClientID string
	Username string
	Password string
	// Credentials, when set, mints the username and password for each
	// connection attempt (a broker taking JWTs or tokens): the link
	// reconnects when four fifths of the lifetime up to expires are gone,
	// and waits for a trusted clock before minting. It overrides Username
	// and Password.
	Credentials func(now time.Time) (username, password string, expires time.Time, err error)
	// Topic is the topic template (see Template); default DefaultTopic.
	Topic string
	// TLS configures ssl:// brokers; nil means the system roots and TLS
	// 1.2 or later. See TLSConfig.
	TLS *tls.Config
}

// NewMQTT returns a link that publishes the body of every message with
// QoS 1 on the topic its template makes, to one broker, as one client.
func NewMQTT(cfg MQTTConfig, opts *Options) (*Link, error) {
	broker, secure, err := brokerURL(cfg.Broker)
	if err != nil {
		return nil, err
	}
	if cfg.DeviceID == "" {
		return nil, fmt.Errorf("upstream mqtt: no device id")
	}
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	tmpl, err := ParseTemplate(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("upstream mqtt: %w", err)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = cfg.DeviceID
	}
	a := account{
		identity: cfg.DeviceID,
		clientID: cfg.ClientID,
		broker:   broker,
	}
	if secure {
		a.tls = cfg.TLS
		if a.tls == nil {
			a.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		a.insecure = a.tls.InsecureSkipVerify
	}
	if cfg.Credentials != nil {
		a.needsClock = true
		a.creds = func(now time.Time) (credentials, error) {
			u, p, exp, err := cfg.Credentials(now)
			return credentials{username: u, password: p, expires: exp}, err
		}
	} else {
		a.creds = func(time.Time) (credentials, error) {
			return credentials{username: cfg.Username, password: cfg.Password}, nil
		}
	}
	l := newLink("mqtt", []account{a}, opts)
	l.encode = func(_ *identity, m *message.Message, d hub.Delivery) (string, []byte, error) {
		return tmpl.Expand(m, d), m.Body, nil
	}
	return l, nil
}

// brokerURL checks a broker URL and returns it as paho wants it, and
// whether it uses TLS.
func brokerURL(s string) (string, bool, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "", false, fmt.Errorf("upstream broker %q: want a URL such as tcp://host:1883 or ssl://host:8883", s)
	}
	switch strings.ToLower(u.Scheme) {
	case "tcp", "mqtt":
		u.Scheme = "tcp"
		return u.String(), false, nil
	case "ssl", "tls", "mqtts":
		u.Scheme = "ssl"
		return u.String(), true, nil
	}
	return "", false, fmt.Errorf("upstream broker %q: scheme %q is not tcp, mqtt, ssl or mqtts", s, u.Scheme)
}
