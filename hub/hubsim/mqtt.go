package hubsim

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
)

// hook makes the mochi server behave as IoT Hub: it authenticates,
// authorizes and handles every publish itself; nothing is routed between
// clients.
type hook struct {
	mqtt.HookBase
	sim *Sim
	// stopped is set before the server closes: a connection accepted at
	// that moment is still set up while the listener closes it, and that
	// straggler must not authenticate or record anything.
	stopped atomic.Bool
}

var _ mqtt.Hook = (*hook)(nil)

func (h *hook) ID() string { return "iothub" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnDisconnect}, []byte{b})
}

// Errors of authentication, in the log of refused connections.
var (
	errClientID   = errors.New("client id does not match the user name")
	errAudience   = errors.New("SAS token is for another resource")
	errNoPassword = errors.New("no SAS token and no client certificate")
	errNoCert     = errors.New("client certificate not registered")
)

// OnConnect refuses what IoT Hub refuses before authentication: anything
// but MQTT 3.1.1.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if pk.ProtocolVersion != 4 {
		h.sim.log.Info("connection refused", "client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote, "error", fmt.Sprintf("MQTT protocol level %d, IoT Hub speaks 3.1.1 (4)", pk.ProtocolVersion))
		// 3.1.1's CONNACK code 1: unacceptable protocol version.
		cl.Properties.ProtocolVersion = 4
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: packets.Err3UnsupportedProtocolVersion.Code})
		return packets.ErrUnsupportedProtocolVersion
	}
	return nil
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.stopped.Load() {
		return false
	}
	if err := h.sim.authenticate(cl, pk); err != nil {
		h.sim.log.Info("connection refused", "client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote, "error", err)
		return false
	}
	h.sim.log.Info("connected", "client", cl.ID, "remote", cl.Net.Remote)
	return true
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.sim.log.Info("disconnected", "client", cl.ID, "error", err)
}

// authenticate checks a CONNECT as IoT Hub does: client id {d} or {d}/{m}
// matching the user name, a registered identity, and a SAS token signed
// with its key for its resource, or a client certificate it registered.
func (s *Sim) authenticate(cl *mqtt.Client, pk packets.Packet) error {
	clientID := pk.Connect.ClientIdentifier
	u, err := iothub.ParseUsername(string(pk.Connect.Username))
	if err != nil {
		return err
	}
	if clientID != (Identity{DeviceID: u.DeviceID, ModuleID: u.ModuleID}).ID() {
		return fmt.Errorf("%w: client id %q, user name for %s/%s", errClientID, clientID, u.DeviceID, u.ModuleID)
	}
	s.mu.Lock()
	e := s.reg[clientID]
	var id Identity
	if e != nil {
		id = e.Identity
	}
	s.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, clientID)
	}
	if len(pk.Connect.Password) > 0 {
		return s.checkToken(id, string(pk.Connect.Password))
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return errNoPassword
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return errNoPassword
	}
	s256, s1 := sha256.Sum256(certs[0].Raw), sha1.Sum(certs[0].Raw)
	for _, tp := range id.X509Thumbprints {
		if strings.EqualFold(tp, hex.EncodeToString(s256[:])) || strings.EqualFold(tp, hex.EncodeToString(s1[:])) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", errNoCert, clientID)
}

// checkToken verifies a SAS token for id: the resource is
// {host}/devices/{d}[/modules/{m}] with the hub's host name (a port
// after it is allowed), signed by the primary or the secondary key, not
// expired.
func (s *Sim) checkToken(id Identity, password string) error {
	tok, err := iothub.ParseToken(password)
	if err != nil {
		return err
	}
	host, path, _ := strings.Cut(tok.Resource, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	want := iothub.Resource("", id.DeviceID, id.ModuleID)[1:]
	if !strings.EqualFold(host, s.opts.Hostname) || path != want {
		return fmt.Errorf("%w: %q, want %q", errAudience, tok.Resource, iothub.Resource(s.opts.Hostname, id.DeviceID, id.ModuleID))
	}
	err = iothub.ErrBadSignature
	for _, k := range []string{id.PrimaryKey, id.SecondaryKey} {
		if k == "" {
			continue
		}
		key, _ := base64.StdEncoding.DecodeString(k)
		if err = tok.Verify(key, time.Now()); !errors.Is(err, iothub.ErrBadSignature) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", id.ID(), err)
	}
	return nil
}

// splitID splits an MQTT client id into device and module.
func splitID(id string) (device, module string) {
	device, module, _ = strings.Cut(id, "/")
	return device, module
}

// OnACLCheck: an identity subscribes only to its own filters and
// publishes only to its events topic and the $iothub request topics.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	dev, mod := splitID(cl.ID)
	if !write {
		ok := iothub.SubscriptionAllowed(topic, dev, mod)
		if !ok {
			h.sim.log.Info("subscription refused", "client", cl.ID, "filter", topic)
		}
		return ok
	}
	t, err := iothub.ParseTopic(topic)
	if err == nil {
		switch t.Kind {
		case iothub.Events:
			if t.DeviceID == dev && t.ModuleID == mod {
				return true
			}
		case iothub.TwinGet, iothub.TwinPatchReported, iothub.MethodResponse:
			return true
		}
	}
	h.sim.log.Info("publish refused", "client", cl.ID, "topic", topic)
	return false
}

var errServerStopped = errors.New("the MQTT server is stopping")

// errQoS2 closes a connection that publishes with QoS 2, as IoT Hub does.
var errQoS2 = errors.New("QoS 2 is not supported by IoT Hub")

func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 2 {
		h.sim.log.Info("connection closed", "client", cl.ID, "error", errQoS2)
		// A rejection is the one error that makes mochi drop the
		// connection here.
		return pk, fmt.Errorf("%w: %w", packets.ErrRejectPacket, errQoS2)
	}
	return pk, nil
}

// OnPublish handles every publish; CodeSuccessIgnore acknowledges it
// without routing it to subscribers. A publish that breaks the rules
// closes the connection, without a PUBACK.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	err := errServerStopped
	if !h.stopped.Load() {
		err = h.sim.handlePublish(cl.ID, pk.TopicName, pk.Payload)
	}
	if err != nil {
		h.sim.log.Info("connection closed", "client", cl.ID, "topic", pk.TopicName, "error", err)
		cl.Stop(err)
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// handlePublish acts on a publish from the identity id. An error closes
// the connection.
func (s *Sim) handlePublish(id, topic string, payload []byte) error {
	t, err := iothub.ParseTopic(topic)
	if err != nil {
		return err
	}
	switch t.Kind {
	case iothub.Events:
		return s.receiveEvent(id, t, payload)
	case iothub.TwinGet:
		s.twinGet(id, t.RID)
	case iothub.TwinPatchReported:
		s.twinReported(id, t.RID, payload)
	case iothub.MethodResponse:
		s.methodAnswered(id, t.RID, t.Status, payload)
	default:
		return fmt.Errorf("%v topics are not for clients to publish", t.Kind)
	}
	return nil
}

// receiveEvent records a telemetry message: the bag's properties, the
// sender's identity as $.cdid/$.cmid whatever the bag claimed, the
// enqueued time; over 256 KiB closes the connection as IoT Hub does.
func (s *Sim) receiveEvent(id string, t iothub.Topic, payload []byte) error {
	bag, err := iothub.ParseBag(t.Bag)
	if err != nil {
		return err
	}
	m := message.New(payload)
	if err := iothub.MessageFromBag(bag, m); err != nil {
		return err
	}
	// The limit counts what the sender sent, not what the hub adds.
	m.System.ConnectionDeviceID, m.System.ConnectionModuleID = "", ""
	if err := m.CheckSize(); err != nil {
		return err
	}
	dev, mod := splitID(id)
	m.System.ConnectionDeviceID, m.System.ConnectionModuleID = dev, mod
	m.System.EnqueuedTime = time.Now().UTC()
	ev, err := s.events.add(Event{DeviceID: dev, ModuleID: mod, Body: payload, Properties: m.Properties, System: m.System})
	if err != nil {
		s.log.Error("event not recorded", "client", id, "error", err)
		return err
	}
	s.log.Debug("event", "client", id, "seq", ev.Seq, "bytes", len(payload))
	return nil
}
