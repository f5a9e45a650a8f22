package upstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubsim"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/upstream"
	"github.com/tinyedge/tinyedge/store"
)

// startSim starts an IoT Hub emulator on 127.0.0.1 and a free port.
func startSim(t testing.TB) *hubsim.Sim {
	t.Helper()
	return startSimKeeping(t, 0)
}

// startSimKeeping is startSim with the emulator keeping keep events in
// memory (0: its default).
func startSimKeeping(t testing.TB, keep int) *hubsim.Sim {
	t.Helper()
	sim, err := hubsim.New(hubsim.Options{DataDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", Hostname: hubHost, Logger: testLogger(t), KeepEvents: keep})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// simTLS trusts the emulator's CA.
func simTLS(t testing.TB, sim *hubsim.Sim) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sim.CAPEM()) {
		t.Fatal("hubsim CA is not PEM")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func simKey(t testing.TB, id hubsim.Identity) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(id.PrimaryKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// simLink is a link to the emulator for device gw1 and the given module
// identities, which it registers, and leaf devices, which it does not.
func simLink(t testing.TB, sim *hubsim.Sim, st *store.Store, modules []string, opts *upstream.Options, leaves ...upstream.LeafIdentity) *upstream.Link {
	t.Helper()
	dev, err := sim.AddDevice("gw1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := upstream.IoTHubConfig{HostName: sim.Hostname(), DeviceID: "gw1", SharedAccessKey: simKey(t, dev),
		Broker: "ssl://" + sim.Addr(), TLS: simTLS(t, sim)}
	for _, m := range modules {
		id, err := sim.AddModule("gw1", m)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Modules = append(cfg.Modules, upstream.ModuleIdentity{ModuleID: m, SharedAccessKey: simKey(t, id)})
	}
	cfg.Leaves = leaves
	if opts == nil {
		opts = &upstream.Options{}
	}
	if opts.Backoff == (upstream.Backoff{}) {
		opts.Backoff = fast
	}
	opts.Logger, opts.Store = testLogger(t), st
	link, err := upstream.NewIoTHub(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// simBodies are the event bodies the emulator has, in order.
func simBodies(sim *hubsim.Sim) []string {
	evs, _, _ := sim.Events(0)
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Body)
	}
	return out
}

// checkBodies checks that every message of every stream (bodies
// "s<stream>:<i>") arrived, and that their first arrivals are in order;
// it returns the duplicates.
func checkBodies(t testing.TB, bodies []string, streams, n int) int {
	t.Helper()
	next := make([]int, streams)
	seen := map[string]bool{}
	dups := 0
	for _, body := range bodies {
		if seen[body] {
			dups++
			continue
		}
		seen[body] = true
		s, i, ok := strings.Cut(strings.TrimPrefix(body, "s"), ":")
		if !ok {
			t.Fatalf("unexpected body %q", body)
		}
		si, _ := strconv.Atoi(s)
		ii, _ := strconv.Atoi(i)
		if ii != next[si] {
			t.Fatalf("stream s%d: message %d arrived (first time) when %d was due", si, ii, next[si])
		}
		next[si]++
	}
	for s, v := range next {
		if v != n {
			t.Errorf("stream s%d: %d of %d messages arrived", s, v, n)
		}
	}
	return dups
}

// TestHubsimRestarts stops and restarts the emulator's MQTT server 20
// times during a stream of 20,000 numbered messages: every message
// arrives, in order within a priority, duplicates only around restarts.
func TestHubsimRestarts(t *testing.T) {
	sim := startSim(t)
	streams, n, restarts := 4, 5000, 20
	if testing.Short() || emulated() {
		n, restarts = 1000, 5
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, simLink(t, sim, st, nil, nil), st)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		g.send(t, streams, n)
	}()
	total := streams * n
	for r := 1; r <= restarts; r++ {
		hubtest.WaitFor(t, "the stream to progress", func() bool { return len(simBodies(sim)) >= r*total/(restarts+1) })
		before := g.link.Status().Identities[0].Connects
		if err := sim.StopMQTT(); err != nil {
			t.Fatal(err)
		}
		if err := sim.StartMQTT(); err != nil {
			t.Fatal(err)
		}
		hubtest.WaitFor(t, "the link to reconnect", func() bool { return g.link.Status().Identities[0].Connects > before })
	}
	<-sent
	hubtest.WaitFor(t, "the queue to drain", func() bool { return g.queued(t) == 0 })
	dups := checkBodies(t, simBodies(sim), streams, n)
	s := g.link.Status().Identities[0]
	t.Logf("%d messages, %d restarts, %d duplicates, %d connects", total, restarts, dups, s.Connects)
	if limit := restarts * 16; dups > limit {
		t.Errorf("%d duplicates, want at most %d (the window per restart)", dups, limit)
	}
	if s.Connects < uint64(restarts+1) {
		t.Errorf("%d connects, want at least %d (one per restart)", s.Connects, restarts+1)
	}
}

// TestHubsimModule: a module identity's telemetry reaches IoT Hub stamped
// with its $connectionModuleId; the cloud's desired properties, changed
// online and while offline, reach the module; its reported properties,
// made online and offline, reach the cloud in order; a direct method from
// the cloud is answered.
func TestHubsimModule(t *testing.T) {
	sim := startSim(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	link := simLink(t, sim, st, []string{"filter"}, nil)
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: link, Store: st, CloudModules: []string{"filter"}, Logger: testLogger(t)})
	defer func() {
		_ = h.Close()
		_ = link.Close()
		_ = st.Close()
	}()
	var client atomic.Pointer[hub.Client]
	filter := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		c.OnMethod("reset", func(_ context.Context, req hub.MethodRequest) hub.MethodResponse {
			return hub.MethodResponse{Status: 200, Payload: json.RawMessage(`{"was":` + string(req.Payload) + `}`)}
		})
		c.OnDesiredChange(func(ctx context.Context, patch map[string]any, _ int64) {
			if v, ok := patch["threshold"]; ok {
				_, _ = c.UpdateReported(ctx, map[string]any{"threshold": v})
			}
		})
		client.Store(c)
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{
		Routes:  []*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/* INTO $upstream")},
		Modules: []hub.ModuleSpec{{Name: "filter", Module: filter, Desired: map[string]any{"mode": "local"}}},
	}); err != nil {
		t.Fatal(err)
	}
	link.Start(h)
	hubtest.WaitFor(t, "the module", func() bool { return client.Load() != nil })
	m := message.New([]byte(`{"t":31}`))
	m.Properties["alert"] = "yes"
	if err := client.Load().SendOutput(context.Background(), "output1", m); err != nil {
		t.Fatal(err)
	}
	evs, err := sim.WaitEvents(ctxFor(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if e := evs[0]; e.ModuleID != "filter" || e.System.ConnectionModuleID != "filter" || e.System.OutputName != "output1" || e.Properties["alert"] != "yes" {
		t.Errorf("event %+v, want filter's, output1, alert=yes", e)
	}

	// Desired, online: to the module, which reports it back.
	hubtest.WaitFor(t, "the module's twin subscription", func() bool {
		return sim.Subscribed("gw1", "filter", iothub.TwinDesiredTopic(1))
	})
	if _, err := sim.PatchDesired("gw1", "filter", map[string]any{"threshold": 30.0}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the reported threshold in the cloud", func() bool {
		tw, err := sim.Twin("gw1", "filter")
		return err == nil && tw.Reported.Doc["threshold"] == 30.0
	})
	if tw, _ := h.Twin("filter"); tw.Desired.Doc["mode"] != "local" || tw.Desired.Doc["threshold"] != 30.0 {
		t.Errorf("module desired %v, want the manifest's mode and the cloud's threshold", tw.Desired.Doc)
	}

	// Offline: both sides change; after the reconnect both are synced.
	if err := sim.StopMQTT(); err != nil {
		t.Fatal(err)
	}
	if _, err := sim.PatchDesired("gw1", "filter", map[string]any{"threshold": 40.0}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := client.Load().UpdateReported(context.Background(), map[string]any{"offline": float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.StartMQTT(); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the sync after the outage", func() bool {
		tw, err := sim.Twin("gw1", "filter")
		return err == nil && tw.Reported.Doc["offline"] == 2.0 && tw.Reported.Doc["threshold"] == 40.0
	})

	// A direct method from the cloud.
	hubtest.WaitFor(t, "the method subscription", func() bool {
		return sim.Subscribed("gw1", "filter", iothub.MethodRequestTopic("reset", "1"))
	})
	res, err := sim.InvokeMethod(context.Background(), "gw1", "filter", "reset", json.RawMessage(`{"hard":true}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || string(res.Payload) != `{"was":{"hard":true}}` {
		t.Errorf("method result %d %s, want 200 and the handler's payload", res.Status, res.Payload)
	}
}

// TestHubsimCredentials: a wrong key, an unknown device and an expired
// token are refused by the emulator; the link says so and backs off.
func TestHubsimCredentials(t *testing.T) {
	sim := startSim(t)
	dev, err := sim.AddDevice("gw1")
	if err != nil {
		t.Fatal(err)
	}
	key := simKey(t, dev)
	for _, tc := range []struct {
		name, device string
		key          []byte
		now          func() time.Time
	}{
		{"wrong key", "gw1", []byte("not the key"), nil},
		{"unknown device", "gw9", key, nil},
		{"expired token", "gw1", key, func() time.Time { return time.Now().Add(-2 * time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			link, err := upstream.NewIoTHub(upstream.IoTHubConfig{HostName: sim.Hostname(), DeviceID: tc.device,
				SharedAccessKey: tc.key, Broker: "ssl://" + sim.Addr(), TLS: simTLS(t, sim)},
				&upstream.Options{Logger: testLogger(t), Now: tc.now, Backoff: upstream.Backoff{Min: 200 * time.Millisecond, Max: time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			defer link.Close()
			link.Start(nil)
			start := time.Now()
			hubtest.WaitFor(t, "three refusals", func() bool {
				s := link.Status().Identities[0]
				return s.Attempts >= 3 && s.State == upstream.StateBackingOff
			})
			if took := time.Since(start); took < 200*time.Millisecond {
				t.Errorf("3 attempts in %s: no backoff", took)
			}
			if s := link.Status().Identities[0]; !strings.Contains(s.LastError, "refused") {
				t.Errorf("last error %q, want a refusal", s.LastError)
			}
			if sim.Connected(tc.device, "") {
				t.Error("the emulator has the device connected")
			}
		})
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), hubtest.Patience)
	t.Cleanup(cancel)
	return ctx
}

// simBaseline publishes n messages from a bare paho client, connected to
// the emulator as the device, for BenchmarkUpstreamDrain/hubsim.
func simBaseline(b *testing.B, sim *hubsim.Sim, key []byte, n int) float64 {
	b.StopTimer()
	user := iothub.FormatUsername(sim.Hostname(), "gw1", "", nil)
	pass := iothub.SignToken(key, iothub.Resource(sim.Hostname(), "gw1", ""), time.Now().Add(time.Hour), "")
	cli := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + sim.Addr()).SetClientID("gw1").
		SetUsername(user).SetPassword(pass).SetTLSConfig(simTLS(b, sim)).
		SetCleanSession(true).SetAutoReconnect(false).SetStore(paho.NewMemoryStore()).SetProtocolVersion(4))
	if tok := cli.Connect(); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		b.Fatalf("baseline connect: %v", tok.Error())
	}
	defer cli.Disconnect(100)
	return publishWindowed(b, cli, iothubTopic, n, 16)
}

// TestHubsimTwinBeforeDeploy: a link started before its module is
// deployed fetches the twin again until the module is there, so the
// cloud's desired properties are not missed.
func TestHubsimTwinBeforeDeploy(t *testing.T) {
	sim := startSim(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	link := simLink(t, sim, st, []string{"filter"}, nil)
	if _, err := sim.PatchDesired("gw1", "filter", map[string]any{"threshold": 25.0}); err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: link, Store: st, CloudModules: []string{"filter"}, Logger: testLogger(t)})
	defer func() {
		_ = h.Close()
		_ = link.Close()
		_ = st.Close()
	}()
	link.Start(h)
	hubtest.WaitFor(t, "the module identity's connection", func() bool { return sim.Connected("gw1", "filter") })
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "filter", Module: hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		<-ctx.Done()
		return nil
	})}}}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the cloud's desired properties", func() bool {
		tw, err := h.Twin("filter")
		return err == nil && tw.Desired.Doc["threshold"] == 25.0
	})
}
