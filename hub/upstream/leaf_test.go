package upstream_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/edge"
	"github.com/tinyedge/tinyedge/hub/hubsim"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/upstream"
	"github.com/tinyedge/tinyedge/store"
)

// leafKey is a leaf device's SAS key: the gateway checks the leaf's local
// connections with it, and the emulator, where the leaf is registered,
// knows it too.
func leafKey(device string) []byte {
	k := sha256.Sum256([]byte("key of " + device))
	return k[:]
}

// leafEnv is a gateway gw1 with the emulator as its IoT Hub, its local
// endpoint on a loopback plain listener, and leaf devices declared with
// their keys; the route sends all telemetry to $upstream.
type leafEnv struct {
	sim  *hubsim.Sim
	st   *store.Store
	h    *hub.Hub
	link *upstream.Link
	ep   *edge.Endpoint
}

// newLeafEnv declares the leaves (registered in the emulator or not) with
// their own upstream identity.
func newLeafEnv(t *testing.T, opts *upstream.Options, registered, unregistered []string) *leafEnv {
	t.Helper()
	e := &leafEnv{sim: startSim(t)}
	var leaves []upstream.LeafIdentity
	keys := edge.KeyMap{}
	for _, l := range registered {
		if _, err := e.sim.AddIdentity(hubsim.Identity{DeviceID: l, PrimaryKey: base64.StdEncoding.EncodeToString(leafKey(l))}); err != nil {
			t.Fatal(err)
		}
	}
	all := append(append([]string(nil), registered...), unregistered...)
	for _, l := range all {
		leaves = append(leaves, upstream.LeafIdentity{DeviceID: l, SharedAccessKey: leafKey(l)})
		keys[l] = leafKey(l)
	}
	var err error
	e.st, err = store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.st.Close() })
	e.link = simLink(t, e.sim, e.st, nil, opts, leaves...)
	t.Cleanup(func() { _ = e.link.Close() })
	e.h = hub.New(hub.Options{DeviceID: "gw1", Upstream: e.link, Store: e.st, CloudLeaves: all, Logger: testLogger(t)})
	t.Cleanup(func() { _ = e.h.Close() })
	e.h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/* INTO $upstream")})
	e.ep, err = edge.New(edge.Options{Hub: e.h, Keys: keys, IoTHubHostname: hubHost, GatewayHostname: "gateway.local",
		Listen: edge.Off, PlainListen: "127.0.0.1:0", MethodsListen: edge.Off, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.ep.Close() })
	e.link.Start(e.h)
	return e
}

// leafStatus is the link's status of a leaf identity.
func (e *leafEnv) leafStatus(t *testing.T, device string) upstream.IdentityStatus {
	t.Helper()
	for _, s := range e.link.Status().Identities {
		if s.Identity == device {
			return s
		}
	}
	t.Fatalf("no identity %s in the link's status", device)
	return upstream.IdentityStatus{}
}

// leafClient is a leaf device connected to the gateway's local endpoint
// as an SDK with GatewayHostName would connect, over MQTT from Go.
type leafClient struct {
	t       *testing.T
	device  string
	c       paho.Client
	mu      sync.Mutex
	answers map[string]chan []byte // twin answers by $rid
	desired chan []byte
	rid     int
}

func dialLeaf(t *testing.T, addr, device string) *leafClient {
	t.Helper()
	lc := &leafClient{t: t, device: device, answers: map[string]chan []byte{}, desired: make(chan []byte, 16)}
	lc.c = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(device).
		SetUsername(iothub.FormatUsername(hubHost, device, "", nil)).
		SetPassword(iothub.SignToken(leafKey(device), iothub.Resource(hubHost, device, ""), time.Now().Add(time.Hour), "")).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false))
	if tok := lc.c.Connect(); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatalf("leaf %s connect: %v", device, tok.Error())
	}
	t.Cleanup(func() { lc.c.Disconnect(100) })
	lc.subscribe(iothub.FilterTwinResponses, func(_ paho.Client, m paho.Message) {
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			return
		}
		lc.mu.Lock()
		ch := lc.answers[tp.RID]
		lc.mu.Unlock()
		if ch != nil {
			ch <- fmt.Appendf(nil, "%d %s", tp.Status, m.Payload())
		}
	})
	lc.subscribe(iothub.FilterTwinDesired, func(_ paho.Client, m paho.Message) { lc.desired <- m.Payload() })
	lc.subscribe(iothub.FilterMethods, func(c paho.Client, m paho.Message) {
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			return
		}
		c.Publish(iothub.MethodResponseTopic(200, tp.RID), 0, false, `{"pong":`+string(m.Payload())+`}`)
	})
	return lc
}

func (lc *leafClient) subscribe(filter string, h paho.MessageHandler) {
	lc.t.Helper()
	if tok := lc.c.Subscribe(filter, 0, h); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		lc.t.Fatalf("leaf subscribe %s: %v", filter, tok.Error())
	}
}

// twin sends a twin request and returns "status body".
func (lc *leafClient) twin(topic func(rid string) string, body string) string {
	lc.t.Helper()
	lc.mu.Lock()
	lc.rid++
	rid := fmt.Sprint(lc.rid)
	ch := make(chan []byte, 1)
	lc.answers[rid] = ch
	lc.mu.Unlock()
	lc.c.Publish(topic(rid), 0, false, body)
	select {
	case a := <-ch:
		return string(a)
	case <-time.After(hubtest.Patience):
		lc.t.Fatalf("no answer to %s", topic(rid))
		return ""
	}
}

func (lc *leafClient) send(body string, props string) {
	lc.t.Helper()
	tok := lc.c.Publish(iothub.EventsTopic(lc.device, "", props), 1, false, body)
	if !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		lc.t.Fatalf("leaf telemetry: %v", tok.Error())
	}
}

// waitEvent waits for the emulator's event with body.
func waitEvent(t *testing.T, sim *hubsim.Sim, body string) hubsim.Event {
	t.Helper()
	var found hubsim.Event
	hubtest.WaitFor(t, "event "+body+" in the emulator", func() bool {
		evs, _, _ := sim.Events(0)
		for _, e := range evs {
			if string(e.Body) == body {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// leafDesired is the desired section of the leaf's twin GET.
func leafDesired(t *testing.T, lc *leafClient) map[string]any {
	t.Helper()
	got := lc.twin(iothub.TwinGetTopic, "")
	status, body, _ := strings.Cut(got, " ")
	var tw struct {
		Desired map[string]any `json:"desired"`
	}
	if err := json.Unmarshal([]byte(body), &tw); status != "200" || err != nil {
		t.Fatalf("leaf twin GET = %s, want 200 and a twin (%v)", got, err)
	}
	return tw.Desired
}

// TestHubsimLeaf: a leaf device connected to the gateway's local
// endpoint is itself in IoT Hub: its telemetry arrives with its own
// connectionDeviceId and no module id, the cloud's desired properties
// reach it (notification and twin GET), its reported properties reach
// the cloud, and a direct method invoked in the cloud on the leaf is
// answered by the leaf. The gateway's own messages still go as the
// gateway.
func TestHubsimLeaf(t *testing.T) {
	e := newLeafEnv(t, nil, []string{"leaf1"}, nil)
	if _, err := e.sim.PatchDesired("leaf1", "", map[string]any{"color": "red"}); err != nil {
		t.Fatal(err)
	}
	// The first twin GET, at once: it has the cloud's desired properties,
	// fetched for this session.
	lc := dialLeaf(t, e.ep.PlainAddr(), "leaf1")
	if got := leafDesired(t, lc); got["color"] != "red" {
		t.Errorf("the leaf's first twin GET has desired %v, want the cloud's color red", got)
	}
	hubtest.WaitFor(t, "the leaf's own connection to the emulator", func() bool { return e.sim.Connected("leaf1", "") })

	lc.send("hello from leaf1", "kind=greeting")
	ev := waitEvent(t, e.sim, "hello from leaf1")
	if ev.DeviceID != "leaf1" || ev.ModuleID != "" || ev.System.ConnectionDeviceID != "leaf1" || ev.System.ConnectionModuleID != "" || ev.Properties["kind"] != "greeting" {
		t.Errorf("leaf event %+v, want device leaf1, no module, kind=greeting", ev)
	}
	if err := e.h.SendDevice(context.Background(), message.New([]byte("hello from gw1"))); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, e.sim, "hello from gw1"); ev.DeviceID != "gw1" || ev.System.ConnectionDeviceID != "gw1" {
		t.Errorf("gateway event %+v, want device gw1", ev)
	}

	// Desired properties from the cloud: a notification, then a GET.
	hubtest.WaitFor(t, "the leaf's desired subscription upstream", func() bool {
		return e.sim.Subscribed("leaf1", "", iothub.TwinDesiredTopic(1))
	})
	if _, err := e.sim.PatchDesired("leaf1", "", map[string]any{"interval": 7.0}); err != nil {
		t.Fatal(err)
	}
	// (The cloud's color may come first: the leaf subscribed before the
	// gateway had the cloud's copy.)
	for got := false; !got; {
		select {
		case b := <-lc.desired:
			got = strings.Contains(string(b), `"interval":7`)
		case <-time.After(hubtest.Patience):
			t.Fatal("no desired notification with the cloud's interval reached the leaf")
		}
	}
	if got := leafDesired(t, lc); got["interval"] != 7.0 || got["color"] != "red" {
		t.Errorf("leaf twin GET has desired %v, want the cloud's interval 7 and color red", got)
	}

	// Reported properties to the cloud.
	if got := lc.twin(iothub.TwinReportedTopic, `{"fw":"2.0"}`); !strings.HasPrefix(got, "204") {
		t.Fatalf("reported patch answered %s, want 204", got)
	}
	hubtest.WaitFor(t, "the leaf's reported properties in the cloud", func() bool {
		tw, err := e.sim.Twin("leaf1", "")
		return err == nil && tw.Reported.Doc["fw"] == "2.0"
	})

	// A direct method from the cloud.
	hubtest.WaitFor(t, "the leaf's method subscription upstream", func() bool {
		return e.sim.Subscribed("leaf1", "", iothub.MethodRequestTopic("ping", "1"))
	})
	res, err := e.sim.InvokeMethod(context.Background(), "leaf1", "", "ping", json.RawMessage(`{"n":1}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || string(res.Payload) != `{"pong":{"n":1}}` {
		t.Errorf("method on the leaf = %d %s, want 200 and the leaf's answer", res.Status, res.Payload)
	}
	if s := e.leafStatus(t, "leaf1"); !s.Leaf || s.State != upstream.StateConnected {
		t.Errorf("leaf status %+v, want a connected leaf", s)
	}
}

// TestHubsimLeafRefused: a leaf device the emulator does not know (as
// when its key is wrong or it is not registered) does not hold up anyone:
// its messages go up as the gateway's, the gateway's and another leaf's
// messages go as themselves, and the status says the leaf was refused.
func TestHubsimLeafRefused(t *testing.T) {
	e := newLeafEnv(t, nil, []string{"leaf1"}, []string{"ghost"})
	ctx := context.Background()
	for i := range 3 {
		if err := e.h.SendLeaf(ctx, "ghost", message.New(fmt.Appendf(nil, "ghost %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.h.SendDevice(ctx, message.New([]byte("gw after ghost"))); err != nil {
		t.Fatal(err)
	}
	if err := e.h.SendLeaf(ctx, "leaf1", message.New([]byte("leaf1 after ghost"))); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, e.sim, "gw after ghost"); ev.DeviceID != "gw1" {
		t.Errorf("gateway event from %s, want gw1", ev.DeviceID)
	}
	if ev := waitEvent(t, e.sim, "leaf1 after ghost"); ev.DeviceID != "leaf1" {
		t.Errorf("leaf1 event from %s, want leaf1", ev.DeviceID)
	}
	for i := range 3 {
		if ev := waitEvent(t, e.sim, fmt.Sprintf("ghost %d", i)); ev.DeviceID != "gw1" || ev.ModuleID != "" {
			t.Errorf("refused leaf's event from %s/%s, want it on the gateway's connection", ev.DeviceID, ev.ModuleID)
		}
	}
	if s := e.leafStatus(t, "ghost"); !s.Refused || !strings.Contains(s.LastError, "refused") {
		t.Errorf("ghost status %+v, want refused with the reason", s)
	}
}

// TestHubsimLeafIdle: a leaf's own connection opens for its message,
// closes once the leaf is idle, and opens again for the next message;
// a leaf connected to the local endpoint keeps it open.
func TestHubsimLeafIdle(t *testing.T) {
	e := newLeafEnv(t, &upstream.Options{LeafIdle: 200 * time.Millisecond}, []string{"leaf1"}, nil)
	if s := e.leafStatus(t, "leaf1"); s.State != upstream.StateIdle {
		t.Errorf("leaf state before any message %q, want idle", s.State)
	}
	ctx := context.Background()
	if err := e.h.SendLeaf(ctx, "leaf1", message.New([]byte("first"))); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, e.sim, "first"); ev.DeviceID != "leaf1" {
		t.Errorf("event from %s, want leaf1", ev.DeviceID)
	}
	hubtest.WaitFor(t, "the idle leaf's connection to close", func() bool {
		return e.leafStatus(t, "leaf1").State == upstream.StateIdle && !e.sim.Connected("leaf1", "")
	})
	if err := e.h.SendLeaf(ctx, "leaf1", message.New([]byte("second"))); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, e.sim, "second"); ev.DeviceID != "leaf1" {
		t.Errorf("event from %s, want leaf1", ev.DeviceID)
	}
	if s := e.leafStatus(t, "leaf1"); s.Connects < 2 {
		t.Errorf("%d connects, want a second one for the second message", s.Connects)
	}

	// Connected locally: the connection stays past the idle time.
	lc := dialLeaf(t, e.ep.PlainAddr(), "leaf1")
	hubtest.WaitFor(t, "the leaf's connection to the emulator", func() bool { return e.sim.Connected("leaf1", "") })
	connects := e.leafStatus(t, "leaf1").Connects
	deadline := time.Now().Add(5 * 200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if s := e.leafStatus(t, "leaf1"); s.State != upstream.StateConnected || s.Connects != connects {
			t.Fatalf("a locally connected leaf's cloud connection went %q (%d connects, was %d)", s.State, s.Connects, connects)
		}
		time.Sleep(20 * time.Millisecond)
	}
	lc.c.Disconnect(100)
	hubtest.WaitFor(t, "the connection to close after the leaf left", func() bool {
		return e.leafStatus(t, "leaf1").State == upstream.StateIdle && !e.sim.Connected("leaf1", "")
	})
}

// TestHubsimLeafStreams: the gateway's and a leaf's numbered messages
// share the pump's window across two connections while the emulator
// restarts: every message arrives, as its sender, in order per sender,
// duplicates only around the restarts.
func TestHubsimLeafStreams(t *testing.T) {
	e := newLeafEnv(t, nil, []string{"leaf1"}, nil)
	n, restarts := 2000, 3
	if testing.Short() || emulated() {
		n = 500
	}
	ctx := context.Background()
	sent := make(chan error, 2)
	for s, send := range []func(*message.Message) error{
		func(m *message.Message) error { return e.h.SendDevice(ctx, m) },
		func(m *message.Message) error { return e.h.SendLeaf(ctx, "leaf1", m) },
	} {
		go func() {
			for i := range n {
				if err := send(message.New(fmt.Appendf(nil, "s%d:%d", s, i))); err != nil {
					sent <- err
					return
				}
			}
			sent <- nil
		}()
	}
	for r := 1; r <= restarts; r++ {
		hubtest.WaitFor(t, "the streams to progress", func() bool { return len(simBodies(e.sim)) >= r*2*n/(restarts+1) })
		if err := e.sim.StopMQTT(); err != nil {
			t.Fatal(err)
		}
		if err := e.sim.StartMQTT(); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	}
	hubtest.WaitFor(t, "the queue to drain", func() bool {
		es, err := e.st.EndpointStats(hub.UpstreamQueue)
		return err == nil && es.Queued == 0
	})
	evs, _, _ := e.sim.Events(0)
	for _, ev := range evs {
		if want := map[byte]string{'0': "gw1", '1': "leaf1"}[ev.Body[1]]; ev.DeviceID != want {
			t.Fatalf("message %s came from %s, want %s", ev.Body, ev.DeviceID, want)
		}
	}
	dups := checkBodies(t, simBodies(e.sim), 2, n)
	t.Logf("%d messages from two identities, %d restarts, %d duplicates", 2*n, restarts, dups)
	if limit := restarts * 2 * 16; dups > limit {
		t.Errorf("%d duplicates, want at most %d (a window per connection per restart)", dups, limit)
	}
}

// TestHubsimModuleRefused: a module identity IoT Hub refuses (here: not
// registered) does not hold up the queue either; its messages go on the
// gateway's connection, the gateway's own messages behind them still
// arrive, and the status says the module was refused.
func TestHubsimModuleRefused(t *testing.T) {
	sim := startSim(t)
	dev, err := sim.AddDevice("gw1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cfg := upstream.IoTHubConfig{HostName: sim.Hostname(), DeviceID: "gw1", SharedAccessKey: simKey(t, dev),
		Broker: "ssl://" + sim.Addr(), TLS: simTLS(t, sim),
		Modules: []upstream.ModuleIdentity{{ModuleID: "ghostmod", SharedAccessKey: leafKey("ghostmod")}}}
	link, err := upstream.NewIoTHub(cfg, &upstream.Options{Backoff: fast, Logger: testLogger(t), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() })
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: link, Store: st, Logger: testLogger(t)})
	t.Cleanup(func() { _ = h.Close() })
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/* INTO $upstream")})
	link.Start(h)

	ctx := context.Background()
	for i := range 3 {
		if err := h.Send(ctx, "ghostmod", "out", message.New(fmt.Appendf(nil, "ghostmod %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.SendDevice(ctx, message.New([]byte("gw after ghostmod"))); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, sim, "gw after ghostmod"); ev.DeviceID != "gw1" || ev.ModuleID != "" {
		t.Errorf("gateway event from %s/%s, want gw1", ev.DeviceID, ev.ModuleID)
	}
	for i := range 3 {
		ev := waitEvent(t, sim, fmt.Sprintf("ghostmod %d", i))
		if ev.DeviceID != "gw1" || ev.ModuleID != "" {
			t.Errorf("refused module's event from %s/%s, want it on the gateway's connection", ev.DeviceID, ev.ModuleID)
		}
		if on := ev.System.OutputName; on != "out" {
			t.Errorf("refused module's event has output %q, want out", on)
		}
	}
	var s upstream.IdentityStatus
	for _, is := range link.Status().Identities {
		if strings.HasSuffix(is.Identity, "ghostmod") {
			s = is
		}
	}
	if !s.Refused || !strings.Contains(s.LastError, "refused") {
		t.Errorf("ghostmod status %+v, want refused with the reason", s)
	}
}
