package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// State is where one identity's connection is.
type State string

// The states of a connection, as Status reports them.
const (
	StateConnecting   State = "connecting"
	StateConnected    State = "connected"
	StateWaitingClock State = "waiting for a trusted clock"
	StateBackingOff   State = "backing off"
	StateStopped      State = "stopped"
	// StateIdle is a leaf device's identity with no connection because
	// nothing needs one: it connects when the leaf sends or connects to
	// the local endpoint.
	StateIdle State = "idle"
)

// Status is the link's state, for `tinyedge status`; it marshals to JSON.
type Status struct {
	Mode       string           `json:"mode"` // "iothub" or "mqtt"
	Broker     string           `json:"broker"`
	Identities []IdentityStatus `json:"identities"`
	// QueueDepth is the number of messages waiting in $upstream, -1 when
	// unknown.
	QueueDepth int64 `json:"queueDepth"`
	// ClockTrusted reports whether the clock reads after the build time,
	// which minting SAS tokens requires.
	ClockTrusted bool `json:"clockTrusted"`
}

// IdentityStatus is the state of one identity's connection.
type IdentityStatus struct {
	// Identity is the device id, or device/module for a module identity;
	// a leaf device's identity is its device id.
	Identity string `json:"identity"`
	// Leaf marks a leaf device's identity.
	Leaf  bool  `json:"leaf,omitempty"`
	State State `json:"state"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
	// LastError says why the last attempt or connection failed; it stays
	// after a successful reconnect until the next failure.
	LastError string `json:"lastError,omitempty"`
	// RetryAt is when the next attempt is due while backing off.
	RetryAt *time.Time `json:"retryAt,omitempty"`
	// Attempts counts connection attempts, Connects successful ones,
	// Renewals reconnects made to renew a token.
	Attempts uint64 `json:"attempts"`
	Connects uint64 `json:"connects"`
	Renewals uint64 `json:"renewals"`
	// InFlight is how many publishes await their PUBACK.
	InFlight int `json:"inFlight"`
	// TokenExpires is when the current SAS token expires.
	TokenExpires *time.Time `json:"tokenExpires,omitempty"`
	// Refused says the broker refused the credentials at the last
	// attempt and none succeeded since. A module's or leaf device's
	// messages go on the device's connection meanwhile.
	Refused bool `json:"refused,omitempty"`
}

// explain turns a connection error into what a user can act on.
func explain(err error, broker string) string {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		rh  tls.RecordHeaderError
		vf  *tls.CertificateVerificationError
		ne  net.Error
		dns *net.DNSError
	)
	switch {
	case errors.As(err, &ua):
		return fmt.Sprintf("server certificate of %s is signed by an unknown authority: give the CA that signed it in upstream.ca_file (%v)", broker, err)
	case errors.As(err, &he):
		return fmt.Sprintf("server certificate does not match the host name (hostname mismatch): %v", err)
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return fmt.Sprintf("server certificate expired or not yet valid; check the clock: %v", err)
	case errors.As(err, &vf):
		return fmt.Sprintf("server certificate of %s not trusted: %v", broker, err)
	case errors.As(err, &rh):
		return fmt.Sprintf("%s does not answer TLS; is it a plain port (use tcp://)? %v", broker, err)
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return "broker refused the credentials (wrong key, expired token or unknown device)"
	case errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return "broker refused the connection: not authorized (unknown device or module identity, wrong key or expired token)"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return "broker rejected the client id"
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return "server unavailable (throttled or in maintenance)"
	case errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return "broker does not speak MQTT 3.1.1"
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot reach %s: connection refused", broker)
	case errors.As(err, &dns):
		return fmt.Sprintf("cannot resolve %s: %v", dns.Name, err)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("%s did not answer in time: %v", broker, err)
	}
	return err.Error()
}
