package edge_test

import (
	"testing"
	"time"

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
	tok := token("gw1/mod", iotHub, keyOf("gw1/mod"), 2*time.Second)
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
