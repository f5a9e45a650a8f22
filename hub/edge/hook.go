package edge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tinyedge/tinyedge/hub/iothub"
)

// hook connects mochi to the endpoint. mochi calls the connection hooks
// from each client's read goroutine, in packet order.
type hook struct {
	mqtt.HookBase
	e *Endpoint
}

var provided = []byte{
	mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
	mqtt.OnPublish, mqtt.OnPacketRead, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
}

func (h *hook) ID() string { return "tinyedge" }

func (h *hook) Provides(b byte) bool { return bytes.IndexByte(provided, b) >= 0 }

// mqtt311 is CONNECT's protocol level for MQTT 3.1.1, the only version
// the IoT Hub dialect uses.
const mqtt311 = 4

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	e := h.e
	log := e.log.With("client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote)
	if cl.Properties.ProtocolVersion != mqtt311 {
		log.Warn("connection refused: only MQTT 3.1.1 is spoken here", "protocolVersion", cl.Properties.ProtocolVersion)
		return false
	}
	info := connectInfo{
		clientID: pk.Connect.ClientIdentifier,
		username: string(pk.Connect.Username),
		password: string(pk.Connect.Password),
	}
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		info.tls = &cs
	}
	id, expiry, cred, err := e.authenticate(info)
	if err != nil {
		log.Warn("connection refused", "err", err)
		return false
	}
	now := time.Now()
	e.mu.Lock()
	// A client that fails between CONNECT and CONNACK never reaches
	// OnSessionEstablished nor OnDisconnect: forget such leftovers.
	for c, pa := range e.pending {
		if now.Sub(pa.at) > 2*connectWait {
			delete(e.pending, c)
		}
	}
	e.pending[cl] = pendingAuth{id: id, expiry: expiry, cred: cred, at: now}
	e.mu.Unlock()
	return true
}

func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	e := h.e
	e.mu.Lock()
	pa, ok := e.pending[cl]
	delete(e.pending, cl)
	if !ok || e.closed {
		e.mu.Unlock()
		cl.Stop(errors.New("endpoint closing"))
		return
	}
	s := newSession(e, cl, pa.id, pa.expiry, pa.cred)
	e.sessions[cl] = s
	e.mu.Unlock()
	// Wills are not routed (mochi would hand them to its own subscribers,
	// past the hub): drop any the client set.
	if cl.Properties.Will.Flag != 0 {
		s.log.Info("last will ignored: the hub routes only telemetry", "topic", cl.Properties.Will.TopicName)
		cl.Properties.Will = mqtt.Will{}
	}
	s.start()
	// A client that authenticated just before a revocation may have
	// joined pending after Revalidate looked: it is checked here.
	s.revoked()
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	e := h.e
	e.mu.Lock()
	s := e.sessions[cl]
	delete(e.sessions, cl)
	delete(e.pending, cl)
	e.mu.Unlock()
	if s != nil {
		s.close(err)
	}
}

func (h *hook) session(cl *mqtt.Client) *session {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	return h.e.sessions[cl]
}

// OnACLCheck allows an identity to publish only as itself and to
// subscribe only to its own inputs, twin and methods.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s := h.session(cl)
	if s == nil {
		return false
	}
	if write {
		if err := publishAllowed(topic, s.id); err != nil {
			s.log.Warn("publish refused; closing the connection", "topic", topic, "err", err)
			return false
		}
		return true
	}
	if !iothub.SubscriptionAllowed(topic, s.id.DeviceID, s.id.ModuleID) {
		s.log.Warn("subscription refused: an identity subscribes only to its own inputs, twin and methods", "filter", topic)
		return false
	}
	return true
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if s := h.session(cl); s != nil {
		s.publish(pk)
	}
	// The hub, not the broker, routes: mochi neither acknowledges nor
	// forwards anything itself.
	return pk, packets.ErrRejectPacket
}

func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 1 {
		// As IoT Hub does: QoS 2 is not spoken here.
		h.e.log.Warn("closing a connection that published at QoS 2", "client", cl.ID, "topic", pk.TopicName)
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Type == packets.Puback {
		if s := h.session(cl); s != nil {
			s.puback(pk.PacketID)
		}
	}
	return pk, nil
}

// OnSubscribed runs before mochi writes the SUBACK, so a client that
// has its SUBACK is served: a method call right after finds the handler.
// (Inputs may then arrive before the SUBACK; the SDKs route them by
// topic all the same.)
func (h *hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	if s := h.session(cl); s != nil {
		s.subscriptionsChanged()
	}
}

func (h *hook) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) {
	if s := h.session(cl); s != nil {
		s.subscriptionsChanged()
	}
}
