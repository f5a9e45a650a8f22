package edge_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/certs"
	"github.com/tinyedge/tinyedge/hub/edge"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/store"
)

// TestExternalToInProcess: an external module's output reaches an
// in-process module's input through a route, as the authenticated
// identity whatever it claims.
func TestExternalToInProcess(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"sender"},
		routes:    []string{`FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")`},
	})
	c := e.mustDial(t, "gw1/sender", clientOpts{})
	bag := iothub.Bag{{Key: "$.on", Value: "out1"}, {Key: "$.cdid", Value: "forged"}, {Key: "$.cmid", Value: "other"},
		{Key: "$.ct", Value: "application/json"}, {Key: "temp", Value: "21 °C"}}
	mustPublish(t, c, eventsTopic("gw1/sender", bag), 1, []byte(`{"t":21}`))
	hubtest.WaitFor(t, "message at sink", func() bool { return len(e.sink.messages()) == 1 })
	m := e.sink.messages()[0]
	s := m.System
	if s.ConnectionDeviceID != "gw1" || s.ConnectionModuleID != "sender" || s.OutputName != "out1" || s.InputName != "in1" {
		t.Errorf("system properties %+v, want from gw1/sender output out1 to input in1", s)
	}
	if string(m.Body) != `{"t":21}` || m.Properties["temp"] != "21 °C" || s.ContentType != "application/json" {
		t.Errorf("message %q %v %q", m.Body, m.Properties, s.ContentType)
	}
}

// TestInProcessToExternal: an in-process module's output reaches an
// external module subscribed with either SDK's filter.
func TestInProcessToExternal(t *testing.T) {
	for _, sdk := range []struct{ name, filter string }{
		{"C", "devices/gw1/modules/recv/#"},
		{"Node", "devices/gw1/modules/recv/inputs/#"},
		{"one input", "devices/gw1/modules/recv/inputs/control/#"},
	} {
		t.Run(sdk.name, func(t *testing.T) {
			e := newEnv(t, envOpts{
				externals: []string{"recv"},
				routes:    []string{`FROM /messages/modules/sink/* INTO BrokeredEndpoint("/modules/recv/inputs/control")`},
			})
			c := e.mustDial(t, "gw1/recv", clientOpts{})
			var got inbox
			if q := subscribe(t, c, sdk.filter, 1, got.handle); q != 1 {
				t.Fatalf("SUBACK %#x, want QoS 1", q)
			}
			for i := range 3 {
				m := message.New(fmt.Appendf(nil, `{"n":%d}`, i))
				m.Properties["n"] = fmt.Sprint(i)
				if err := e.h.Send(context.Background(), "sink", "alerts", m); err != nil {
					t.Fatal(err)
				}
			}
			hubtest.WaitFor(t, "3 inputs at recv", func() bool { return got.len() == 3 })
			for i, m := range got.all() {
				tp, err := iothub.ParseTopic(m.Topic())
				if err != nil {
					t.Fatal(err)
				}
				if tp.Kind != iothub.Input || tp.DeviceID != "gw1" || tp.ModuleID != "recv" || tp.Input != "control" {
					t.Errorf("topic %s", m.Topic())
				}
				bag, _ := iothub.ParseBag(tp.Bag)
				if v, _ := bag.Get("n"); v != fmt.Sprint(i) {
					t.Errorf("message %d: property n = %q (topic %s)", i, v, m.Topic())
				}
				if v, _ := bag.Get("$.cmid"); v != "sink" {
					t.Errorf("message %d: $.cmid = %q, want sink", i, v)
				}
				if string(m.Payload()) != fmt.Sprintf(`{"n":%d}`, i) {
					t.Errorf("message %d: payload %s", i, m.Payload())
				}
			}
		})
	}
}

// TestExternalToExternal routes between two external modules.
func TestExternalToExternal(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"a", "b"},
		routes:    []string{`FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/b/inputs/x")`},
	})
	b := e.mustDial(t, "gw1/b", clientOpts{})
	var got inbox
	subscribe(t, b, "devices/gw1/modules/b/#", 1, got.handle)
	a := e.mustDial(t, "gw1/a", clientOpts{})
	for i := range 20 {
		mustPublish(t, a, eventsTopic("gw1/a", iothub.Bag{{Key: "$.on", Value: "o"}}), 1, fmt.Append(nil, i))
	}
	hubtest.WaitFor(t, "20 at b", func() bool { return got.len() == 20 })
	for i, m := range got.all() {
		if string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d is %s: out of order", i, m.Payload())
		}
	}
}

// TestDurableAcrossReconnect: messages routed to an external module while
// it is away, and while it is taking them without acknowledging, all
// arrive in order after it reconnects.
func TestDurableAcrossReconnect(t *testing.T) {
	const n = 60
	e := newEnv(t, envOpts{
		externals: []string{"recv"},
		routes:    []string{`FROM /messages/modules/sink/* INTO BrokeredEndpoint("/modules/recv/inputs/in")`},
	})
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := e.h.Send(context.Background(), "sink", "o", message.New(fmt.Append(nil, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(0, 20) // before the module ever connected
	// First connection: acknowledge the first 10 it gets, then vanish
	// with the rest unacknowledged.
	c1 := e.mustDial(t, "gw1/recv", clientOpts{noAutoAck: true})
	var first inbox
	subscribe(t, c1, "devices/gw1/modules/recv/inputs/#", 1, func(c paho.Client, m paho.Message) {
		first.handle(c, m)
		if first.len() <= 10 {
			m.Ack()
		}
	})
	hubtest.WaitFor(t, "first deliveries", func() bool { return first.len() >= 16 })
	send(20, 40) // while connected
	c1.Disconnect(0)
	send(40, n) // while away
	var second inbox
	c2 := e.mustDial(t, "gw1/recv", clientOpts{})
	subscribe(t, c2, "devices/gw1/modules/recv/inputs/#", 1, second.handle)
	hubtest.WaitFor(t, "the rest", func() bool { return second.len() >= n-10 })
	var seq []string
	for _, m := range second.all() {
		seq = append(seq, string(m.Payload()))
	}
	want := make([]string, 0, n-10)
	for i := 10; i < n; i++ {
		want = append(want, fmt.Sprint(i))
	}
	if strings.Join(seq, ",") != strings.Join(want, ",") {
		t.Fatalf("after reconnect got\n%v\nwant\n%v", seq, want)
	}
	// Everything was acknowledged: the queue is empty.
	hubtest.WaitFor(t, "empty queue", func() bool {
		st, err := e.st.EndpointStats("$module/recv/inputs/in")
		return err == nil && st.Queued == 0
	})
}

// smallStoreSender is a hub whose store refuses messages past 2 MiB,
// routing module a's output to module b's input x, and a connected as
// a client; lost receives when a's connection is lost.
func smallStoreSender(t *testing.T) (e *env, c paho.Client, lost <-chan error) {
	e = newEnv(t, envOpts{
		externals: []string{"a", "b"},
		routes:    []string{`FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/b/inputs/x")`},
		store:     &store.Options{MaxSizeBytes: 2 << 20, OnFull: store.Refuse},
	})
	ch := make(chan error, 1)
	c = e.mustDial(t, "gw1/a", clientOpts{onLost: func(err error) { ch <- err }})
	return e, c, ch
}

// TestNoPubackWhenNotStored: a message the store refuses (full) gets no
// PUBACK, and the connection closes so the client sends it again.
func TestNoPubackWhenNotStored(t *testing.T) {
	e, c, lost := smallStoreSender(t)
	body := bytes.Repeat([]byte("x"), 100*1024)
	var last paho.Token
	for i := 0; ; i++ {
		if i > 4*(2<<20)/len(body) {
			t.Fatal("the store never refused")
		}
		last = c.Publish(eventsTopic("gw1/a", nil), 1, false, body)
		if !last.WaitTimeout(wait) {
			t.Fatal("publish neither acknowledged nor failed")
		}
		if last.Error() != nil {
			break
		}
	}
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("connection not closed after the refusal")
	}
	st, err := e.st.EndpointStats("$module/b/inputs/x")
	if err != nil {
		t.Fatal(err)
	}
	if st.Queued == 0 {
		t.Fatal("nothing was stored before the store filled up")
	}
}

// TestPipelinedRefusal: a client with many publishes in flight when the
// store fills up gets PUBACKs for a prefix of them, each of which is
// stored, and none after the first refused one.
func TestPipelinedRefusal(t *testing.T) {
	e, c, lost := smallStoreSender(t)
	const n = 4 * (2 << 20) / (50 * 1024)
	var toks []paho.Token
	for i := range n {
		body := append(fmt.Appendf(nil, "%04d:", i), bytes.Repeat([]byte("x"), 50*1024)...)
		toks = append(toks, c.Publish(eventsTopic("gw1/a", nil), 1, false, body))
	}
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("connection not closed after the store refused")
	}
	acked := 0
	for i, tok := range toks {
		ok := tok.WaitTimeout(wait) && tok.Error() == nil
		if ok && acked < i {
			t.Fatalf("message %d acknowledged after message %d was not", i, acked)
		}
		if ok {
			acked++
		}
	}
	if acked == 0 || acked == n {
		t.Fatalf("%d of %d acknowledged; want some, not all", acked, n)
	}
	items, err := e.st.Read("$module/b/inputs/x", n)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[int]bool{}
	for _, it := range items {
		m, err := message.Unmarshal(it.Payload)
		if err != nil {
			t.Fatal(err)
		}
		var i int
		if _, err := fmt.Sscanf(string(m.Body[:4]), "%04d", &i); err != nil {
			t.Fatal(err)
		}
		stored[i] = true
	}
	for i := range acked {
		if !stored[i] {
			t.Fatalf("message %d was acknowledged and is not stored (%d acknowledged, %d stored)", i, acked, len(stored))
		}
	}
}

// TestSessionTakeover: a module that connects again while its old
// connection is still open (a restart the hub has not noticed) takes the
// inputs over; nothing is lost, order is kept.
func TestSessionTakeover(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"recv"},
		routes:    []string{`FROM /messages/modules/sink/* INTO BrokeredEndpoint("/modules/recv/inputs/in")`},
	})
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := e.h.Send(context.Background(), "sink", "o", message.New(fmt.Append(nil, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := e.mustDial(t, "gw1/recv", clientOpts{noAutoAck: true})
	var first inbox
	subscribe(t, old, "devices/gw1/modules/recv/#", 1, first.handle) // never acknowledges
	send(0, 10)
	hubtest.WaitFor(t, "a full window at the old connection", func() bool { return first.len() == 10 })
	var second inbox
	c := e.mustDial(t, "gw1/recv", clientOpts{})
	subscribe(t, c, "devices/gw1/modules/recv/#", 1, second.handle)
	send(10, 20)
	hubtest.WaitFor(t, "everything at the new connection", func() bool { return second.len() >= 20 })
	var got []string
	for _, m := range second.all() {
		got = append(got, string(m.Payload()))
	}
	if want := "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19"; strings.Join(got, " ") != want {
		t.Fatalf("new connection got %v, want %s", got, want)
	}
}

// TestExternalModuleStatus: an external module shows as running while it
// is connected.
func TestExternalModuleStatus(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod"}})
	state := func() hub.ModuleState {
		for _, st := range e.h.ModuleStatus() {
			if st.Name == "mod" {
				return st.State
			}
		}
		return ""
	}
	if s := state(); s != hub.StateStopped {
		t.Fatalf("before connecting: %s, want stopped", s)
	}
	c := e.mustDial(t, "gw1/mod", clientOpts{})
	hubtest.WaitFor(t, "running", func() bool { return state() == hub.StateRunning })
	c.Disconnect(0)
	hubtest.WaitFor(t, "stopped", func() bool { return state() == hub.StateStopped })
}

// TestInputsAtQoS0: a module that subscribes at QoS 0 gets its inputs
// at most once: they leave the queue when written.
func TestInputsAtQoS0(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"recv"},
		routes:    []string{`FROM /messages/modules/sink/* INTO BrokeredEndpoint("/modules/recv/inputs/in")`},
	})
	c := e.mustDial(t, "gw1/recv", clientOpts{})
	var got inbox
	if q := subscribe(t, c, "devices/gw1/modules/recv/inputs/#", 0, got.handle); q != 0 {
		t.Fatalf("granted %d, want 0", q)
	}
	for i := range 40 {
		if err := e.h.Send(context.Background(), "sink", "o", message.New(fmt.Append(nil, i))); err != nil {
			t.Fatal(err)
		}
	}
	hubtest.WaitFor(t, "40 inputs", func() bool { return got.len() == 40 })
	for i, m := range got.all() {
		if m.Qos() != 0 || string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("input %d: QoS %d payload %s", i, m.Qos(), m.Payload())
		}
	}
	hubtest.WaitFor(t, "an empty queue", func() bool {
		st, err := e.st.EndpointStats("$module/recv/inputs/in")
		return err == nil && st.Queued == 0
	})
}

// TestInputsSurviveRestart: messages queued for an external module that
// was away are delivered after the hub, the store and the endpoint
// restart.
func TestInputsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.Open(filepath.Join(dir, "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.NewServerCert(certs.ServerOptions{Hostname: gateway})
	if err != nil {
		t.Fatal(err)
	}
	keys := edge.KeyMap{"gw1/recv": keyOf("gw1/recv")}
	start := func() (*hub.Hub, *store.Store, *edge.Endpoint) {
		st, err := store.Open(filepath.Join(dir, "store.db"), &store.Options{SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		h := hub.New(hub.Options{DeviceID: device, Store: st})
		if err := h.Deploy(hub.Deployment{
			Modules: []hub.ModuleSpec{{Name: "recv", External: true}},
			Routes:  []*route.Route{hubtest.MustRoute(t, "r", `FROM /messages INTO BrokeredEndpoint("/modules/recv/inputs/in")`)},
		}); err != nil {
			t.Fatal(err)
		}
		ep, err := edge.New(edge.Options{Hub: h, Keys: keys, IoTHubHostname: iotHub, Listen: "127.0.0.1:0",
			MethodsListen: edge.Off, Certificate: sc.GetCertificate, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := ep.Start(); err != nil {
			t.Fatal(err)
		}
		return h, st, ep
	}
	h, st, ep := start()
	for i := range 30 {
		if err := h.SendDevice(context.Background(), message.New(fmt.Append(nil, i))); err != nil {
			t.Fatal(err)
		}
	}
	ep.Close()
	h.Close()
	st.Close()

	h, st, ep = start()
	defer func() {
		ep.Close()
		h.Close()
		st.Close()
	}()
	e := &env{h: h, st: st, ca: ca, ep: ep}
	c := e.mustDial(t, "gw1/recv", clientOpts{})
	var got inbox
	subscribe(t, c, "devices/gw1/modules/recv/#", 1, got.handle)
	hubtest.WaitFor(t, "30 inputs after the restart", func() bool { return got.len() == 30 })
	for i, m := range got.all() {
		if string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("input %d is %s", i, m.Payload())
		}
	}
}
