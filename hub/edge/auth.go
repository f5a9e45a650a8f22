package edge

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// Keys looks up the shared access key (decoded from base64) of a module
// of the edge device or of a leaf device (moduleID ""). ok is false for
// an identity that has none.
type Keys interface {
	Key(deviceID, moduleID string) (key []byte, ok bool)
}

// KeyMap is Keys from a map keyed by "device" or "device/module", for
// tests and fixed configurations.
type KeyMap map[string][]byte

// Key implements Keys.
func (m KeyMap) Key(deviceID, moduleID string) ([]byte, bool) {
	k, ok := m[hub.Identity{DeviceID: deviceID, ModuleID: moduleID}.String()]
	return k, ok
}

// Thumbprints maps leaf device ids to the SHA-256 thumbprint (hex, any
// case, colons allowed) of the client certificate they authenticate with.
type Thumbprints map[string]string

// Errors of authentication, wrapped with details; a refused CONNECT is
// logged with them.
var (
	ErrUnknownIdentity = errors.New("unknown identity")
	ErrBadCredentials  = errors.New("bad credentials")
)

// connectInfo is what a CONNECT claims.
type connectInfo struct {
	clientID string
	username string
	password string
	tls      *tls.ConnectionState // nil on the plain listener
}

// credential is what a connection authenticated with, so that it can
// be checked again while the connection lasts (credentialHolds): the
// SHA-256 of the identity's key for a SAS token, or the thumbprint of
// its client certificate.
type credential struct {
	key   [sha256.Size]byte
	thumb string // lower-case hex, no colons; set for a certificate
}

// authenticate checks a CONNECT and returns the identity, when its
// credentials expire (zero for a certificate) and what it authenticated
// with.
func (e *Endpoint) authenticate(c connectInfo) (hub.Identity, time.Time, credential, error) {
	u, err := iothub.ParseUsername(c.username)
	if err != nil {
		return hub.Identity{}, time.Time{}, credential{}, fmt.Errorf("%w: %v", ErrBadCredentials, err)
	}
	id := hub.Identity{DeviceID: u.DeviceID, ModuleID: u.ModuleID}
	fail := func(err error) (hub.Identity, time.Time, credential, error) {
		return id, time.Time{}, credential{}, err
	}
	if c.clientID != id.String() {
		return fail(fmt.Errorf("%w: client id %q does not match the user name's identity %q", ErrBadCredentials, c.clientID, id))
	}
	if !e.hostAllowed(u.Host) {
		return fail(fmt.Errorf("%w: user name host %q is neither the IoT Hub (%q) nor the gateway (%q)", ErrBadCredentials, u.Host, e.opts.IoTHubHostname, e.opts.GatewayHostname))
	}
	if err := e.identityAllowed(id); err != nil {
		return fail(err)
	}
	if c.password == "" {
		thumb, err := e.checkCertificate(id, c.tls)
		if err != nil {
			return fail(err)
		}
		return id, time.Time{}, credential{thumb: thumb}, nil
	}
	tok, err := iothub.ParseToken(c.password)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrBadCredentials, err))
	}
	if !e.resourceMatches(tok.Resource, id) {
		return fail(fmt.Errorf("%w: token is for %q, not for %s on %q or %q", ErrBadCredentials, tok.Resource, id, e.opts.IoTHubHostname, e.opts.GatewayHostname))
	}
	key, ok := e.opts.Keys.Key(id.DeviceID, id.ModuleID)
	if !ok {
		return fail(fmt.Errorf("%w: no key for %s", ErrUnknownIdentity, id))
	}
	if err := tok.Verify(key, e.now()); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrBadCredentials, err))
	}
	return id, tok.Expiry, credential{key: sha256.Sum256(key)}, nil
}

// identityAllowed says whether id may connect at all: an external module
// of the deployment in force, or a leaf device.
func (e *Endpoint) identityAllowed(id hub.Identity) error {
	h := e.opts.Hub
	switch {
	case id.ModuleID != "" && id.DeviceID != h.DeviceID():
		return fmt.Errorf("%w: module %s belongs to device %q, not to this edge device %q", ErrUnknownIdentity, id, id.DeviceID, h.DeviceID())
	case id.ModuleID != "" && !h.IsExternal(id.ModuleID):
		return fmt.Errorf("%w: %s is not an external module of the deployment", ErrUnknownIdentity, id)
	case id.ModuleID == "" && id.DeviceID == h.DeviceID():
		return fmt.Errorf("%w: the edge device itself cannot connect as a leaf device", ErrUnknownIdentity)
	}
	return nil
}

// credentialHolds says whether a connection that authenticated as id
// with c may go on: the identity is still allowed, and its key (or
// registered certificate) is still the one it authenticated with. A
// deployment that removes a module, or a key rotated or regenerated,
// ends what the old credentials opened; the expiry of a token is
// checked apart (checkExpiry).
func (e *Endpoint) credentialHolds(id hub.Identity, c credential) error {
	if err := e.identityAllowed(id); err != nil {
		return err
	}
	if c.thumb != "" {
		want, ok := e.opts.Thumbprints[id.DeviceID]
		if !ok || normThumbprint(want) != c.thumb {
			return fmt.Errorf("%w: the client certificate %s authenticated with is no longer the one registered", ErrBadCredentials, id)
		}
		return nil
	}
	key, ok := e.opts.Keys.Key(id.DeviceID, id.ModuleID)
	if !ok {
		return fmt.Errorf("%w: %s no longer has a key", ErrUnknownIdentity, id)
	}
	if sha256.Sum256(key) != c.key {
		return fmt.Errorf("%w: the key of %s changed since it connected (rotated or generated anew)", ErrBadCredentials, id)
	}
	return nil
}

func (e *Endpoint) hostAllowed(host string) bool {
	return host != "" && (strings.EqualFold(host, e.opts.IoTHubHostname) || strings.EqualFold(host, e.opts.GatewayHostname))
}

// resourceMatches compares a token's resource with the identity's, on
// either audience host; the host is case-insensitive, the ids are not.
func (e *Endpoint) resourceMatches(resource string, id hub.Identity) bool {
	host, rest, ok := strings.Cut(resource, "/")
	if !ok || !e.hostAllowed(host) {
		return false
	}
	return rest == strings.TrimPrefix(iothub.Resource("", id.DeviceID, id.ModuleID), "/")
}

// checkCertificate authenticates a leaf device by its client certificate
// and returns its thumbprint.
func (e *Endpoint) checkCertificate(id hub.Identity, cs *tls.ConnectionState) (string, error) {
	if id.ModuleID != "" {
		return "", fmt.Errorf("%w: empty password; modules authenticate with a SAS token", ErrBadCredentials)
	}
	want, ok := e.opts.Thumbprints[id.DeviceID]
	if !ok {
		return "", fmt.Errorf("%w: empty password and no certificate thumbprint registered for %s", ErrBadCredentials, id)
	}
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("%w: empty password and no client certificate", ErrBadCredentials)
	}
	leaf := cs.PeerCertificates[0]
	// Only expiry is checked, and only on a trusted clock: a gateway
	// without an RTC must not lock its devices out before NTP syncs.
	if now := e.now(); e.opts.Trusted(now) && now.After(leaf.NotAfter) {
		return "", fmt.Errorf("%w: client certificate of %s expired at %s", ErrBadCredentials, id, leaf.NotAfter.Format(time.RFC3339))
	}
	sum := sha256.Sum256(leaf.Raw)
	got := hex.EncodeToString(sum[:])
	if normThumbprint(want) != got {
		return "", fmt.Errorf("%w: client certificate thumbprint %s is not the one registered for %s", ErrBadCredentials, got, id)
	}
	return got, nil
}

// normThumbprint is a thumbprint as hex.EncodeToString writes it.
func normThumbprint(s string) string { return strings.ToLower(strings.ReplaceAll(s, ":", "")) }
