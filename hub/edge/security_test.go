package edge_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/edge"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

func ptr[T any](v T) *T { return &v }

func TestConnectRefused(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod", "other"}})
	for _, tc := range []struct {
		name string
		id   string
		co   clientOpts
	}{
		{"wrong key", "gw1/mod", clientOpts{password: ptr(token("gw1/mod", iotHub, []byte("not the key"), time.Hour))}},
		{"expired token", "gw1/mod", clientOpts{password: ptr(token("gw1/mod", iotHub, keyOf("gw1/mod"), -time.Second))}},
		{"another module's token", "gw1/mod", clientOpts{password: ptr(token("gw1/other", iotHub, keyOf("gw1/other"), time.Hour))}},
		{"token for a foreign hub", "gw1/mod", clientOpts{password: ptr(token("gw1/mod", "evil.azure-devices.net", keyOf("gw1/mod"), time.Hour))}},
		{"not a token", "gw1/mod", clientOpts{password: ptr("hunter2")}},
		{"client id of another identity", "gw1/mod", clientOpts{clientID: "gw1/other"}},
		{"in-process module", "gw1/sink", clientOpts{}},
		{"undeployed module", "gw1/ghost", clientOpts{}},
		{"the edge device itself", "gw1", clientOpts{}},
		{"module without a key", "gw1/mod", clientOpts{password: ptr("")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := e.dial(t, tc.id, tc.co); err == nil {
				c.Disconnect(0)
				t.Fatal("connected")
			}
		})
	}
	// The gateway's host name is an accepted audience too.
	if _, err := e.dial(t, "gw1/mod", clientOpts{password: ptr(token("gw1/mod", gateway, keyOf("gw1/mod"), time.Hour))}); err != nil {
		t.Fatalf("token for the gateway host: %v", err)
	}
}

func TestSubscribeRefused(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod", "other"}})
	c := e.mustDial(t, "gw1/mod", clientOpts{})
	for _, f := range []string{
		"devices/gw1/modules/other/inputs/#",
		"devices/gw1/modules/other/#",
		"devices/gw1/modules/+/inputs/#",
		"devices/#",
		"#",
		"$iothub/#",
		"$iothub/twin/PATCH/properties/desired/+",
		"$SYS/#",
	} {
		if q := subscribe(t, c, f, 1, nil); q != 0x80 {
			t.Errorf("subscribe %s: granted %#x, want 0x80 (refused)", f, q)
		}
	}
	if q := subscribe(t, c, "devices/gw1/modules/mod/inputs/#", 1, nil); q != 1 {
		t.Errorf("own inputs: %#x, want 1", q)
	}
}

func TestPublishAsAnotherIdentityRefused(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"mod", "other"},
		routes:    []string{`FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in1")`},
	})
	lost := make(chan error, 1)
	c := e.mustDial(t, "gw1/mod", clientOpts{onLost: func(err error) { lost <- err }})
	for _, topic := range []string{
		eventsTopic("gw1/other", iothub.Bag{{Key: "$.on", Value: "o"}}),
		eventsTopic("gw1", nil),
		"devices/gw1/modules/other/inputs/in/",
		"anything/else",
	} {
		c.Publish(topic, 1, false, []byte("forged"))
		select {
		case <-lost:
		case <-time.After(wait):
			t.Fatalf("publish on %s: connection not closed", topic)
		}
		c = e.mustDial(t, "gw1/mod", clientOpts{onLost: func(err error) { lost <- err }})
	}
	// Its own output works.
	mustPublish(t, c, eventsTopic("gw1/mod", iothub.Bag{{Key: "$.on", Value: "o"}}), 1, []byte("mine"))
	hubtest.WaitFor(t, "own message", func() bool { return len(e.sink.messages()) == 1 })
	if m := e.sink.messages()[0]; string(m.Body) != "mine" {
		t.Fatalf("routed %q; a forged message got through", m.Body)
	}
}

func TestTokenExpiryCloses(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod"}})
	lost := make(chan error, 1)
	tok := token("gw1/mod", iotHub, keyOf("gw1/mod"), 4*time.Second)
	if _, err := e.dial(t, "gw1/mod", clientOpts{password: &tok, onLost: func(err error) { lost <- err }}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("connection outlived its token")
	}
	// Connecting again with a new token is the way to stay.
	if _, err := e.dial(t, "gw1/mod", clientOpts{}); err != nil {
		t.Fatal(err)
	}
}

func TestQoS2Refused(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod"}})
	lost := make(chan error, 1)
	c := e.mustDial(t, "gw1/mod", clientOpts{onLost: func(err error) { lost <- err }})
	c.Publish(eventsTopic("gw1/mod", nil), 2, false, []byte("qos2"))
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("a QoS 2 publish did not close the connection")
	}
	if n := len(e.sink.messages()); n != 0 {
		t.Fatalf("%d messages routed", n)
	}
}

// TestWillNotForwarded: a will naming another module's input topic does
// not reach that module when its client vanishes.
func TestWillNotForwarded(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod", "other"}})
	other := e.mustDial(t, "gw1/other", clientOpts{})
	var got inbox
	subscribe(t, other, "devices/gw1/modules/other/#", 1, got.handle)
	conn, err := net.Dial("tcp", e.ep.PlainAddr())
	if err != nil {
		t.Fatal(err)
	}
	// A raw CONNECT with a will, then the connection just drops.
	pkt := connectPacket("gw1/mod", iothub.FormatUsername(iotHub, "gw1", "mod", nil),
		token("gw1/mod", iotHub, keyOf("gw1/mod"), time.Hour), "devices/gw1/modules/other/inputs/x/", "will")
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
	conn.Close()
	hubtest.WaitFor(t, "the dropped connection seen", func() bool { return e.ep.Stats().Connected == 1 })
	// mochi sends a will before the disconnect is seen; a round trip on
	// other's connection brings anything queued for it before.
	subscribe(t, other, iothub.FilterTwinResponses, 0, nil)
	if n := got.len(); n != 0 {
		t.Fatalf("the will reached another module (%d messages)", n)
	}
}

// connectPacket encodes an MQTT 3.1.1 CONNECT with a QoS 0 will.
func connectPacket(clientID, user, pass, willTopic, willMsg string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4, 0x04|0x80|0x40|0x02, 0, 60) // will, username, password, clean session; keep-alive 60 s
	body = append(body, str(clientID)...)
	body = append(body, str(willTopic)...)
	body = append(body, str(willMsg)...)
	body = append(body, str(user)...)
	body = append(body, str(pass)...)
	pkt := []byte{0x10}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	return append(pkt, body...)
}

// lockedKeys is Keys that a test may change while the endpoint reads it,
// as the identity store is when a key is rotated.
type lockedKeys struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (k *lockedKeys) Key(deviceID, moduleID string) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, ok := k.m[hub.Identity{DeviceID: deviceID, ModuleID: moduleID}.String()]
	return key, ok
}

func (k *lockedKeys) set(id string, key []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[id] = key
}

// TestRevalidateCloses: a connection lasts only as long as what it
// authenticated with. A rotated key ends the connections made with the
// old one, and a deployment that removes a module ends its connections,
// once the endpoint is told (Revalidate); the others go on.
func TestRevalidateCloses(t *testing.T) {
	keys := &lockedKeys{m: map[string][]byte{}}
	e := newEnv(t, envOpts{
		externals: []string{"mod", "other"},
		routes:    []string{`FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in1")`},
		edge:      func(o *edge.Options) { o.Keys = keys },
	})
	for id, k := range e.keys {
		keys.set(id, k)
	}
	lostMod, lostOther := make(chan error, 1), make(chan error, 1)
	e.mustDial(t, "gw1/mod", clientOpts{onLost: func(err error) { lostMod <- err }})
	other := e.mustDial(t, "gw1/other", clientOpts{onLost: func(err error) { lostOther <- err }})
	if n := e.ep.Revalidate(); n != 0 {
		t.Fatalf("Revalidate with nothing changed closed %d connections", n)
	}

	newKey := []byte("rotated key of gw1/mod")
	keys.set("gw1/mod", newKey)
	if n := e.ep.Revalidate(); n != 1 {
		t.Fatalf("Revalidate after a rotation closed %d connections, want 1", n)
	}
	select {
	case <-lostMod:
	case <-time.After(wait):
		t.Fatal("the connection made with the old key is still open")
	}
	if c, err := e.dial(t, "gw1/mod", clientOpts{}); err == nil {
		c.Disconnect(0)
		t.Fatal("connected with a token signed with the old key")
	}
	e.mustDial(t, "gw1/mod", clientOpts{password: ptr(token("gw1/mod", iotHub, newKey, time.Hour)), onLost: func(err error) { lostMod <- err }})
	mustPublish(t, other, eventsTopic("gw1/other", iothub.Bag{{Key: "$.on", Value: "o"}}), 1, []byte("still here"))
	hubtest.WaitFor(t, "the other module's message", func() bool { return len(e.sink.messages()) == 1 })

	// A deployment without "other".
	if err := e.h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{
		{Name: "sink", Module: e.sink},
		{Name: "mod", External: true},
	}}); err != nil {
		t.Fatal(err)
	}
	if n := e.ep.Revalidate(); n != 1 {
		t.Fatalf("Revalidate after the module was removed closed %d connections, want 1", n)
	}
	select {
	case <-lostOther:
	case <-time.After(wait):
		t.Fatal("a module removed from the deployment is still connected")
	}
	select {
	case err := <-lostMod:
		t.Fatalf("the module that stays lost its connection: %v", err)
	default:
	}
}
