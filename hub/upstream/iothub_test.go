package upstream_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/upstream"
	"github.com/tinyedge/tinyedge/store"
)

// twinService plays IoT Hub's twin and method side over a broker: it
// answers twin GETs and reported patches and records method answers.
type twinService struct {
	cli paho.Client

	mu       sync.Mutex
	desired  string // the desired section GET answers with
	reported []string
	answers  map[string]string // method answers by topic
	gets     int
}

func startTwinService(t *testing.T, b *broker, desired string) *twinService {
	t.Helper()
	s := &twinService{desired: desired, answers: map[string]string{}}
	// A persistent session, on a broker that queues QoS 0 too: requests
	// made while the service reconnects after a broker restart wait for it.
	s.cli = paho.NewClient(paho.NewClientOptions().AddBroker(b.url()).SetClientID("twin-service").SetOrderMatters(true).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(50 * time.Millisecond))
	if tok := s.cli.Connect(); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatalf("twin service connect: %v", tok.Error())
	}
	t.Cleanup(func() { s.cli.Disconnect(100) })
	on := func(filter string, h paho.MessageHandler) {
		if tok := s.cli.Subscribe(filter, 1, h); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
			t.Fatalf("twin service subscribe %s: %v", filter, tok.Error())
		}
	}
	on("$iothub/twin/GET/#", func(c paho.Client, m paho.Message) {
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			return
		}
		s.mu.Lock()
		s.gets++
		desired := s.desired
		s.mu.Unlock()
		c.Publish(iothub.TwinResponseTopic(200, tp.RID, 0), 0, false, `{"desired":`+desired+`,"reported":{"$version":1}}`)
	})
	on("$iothub/twin/PATCH/properties/reported/#", func(c paho.Client, m paho.Message) {
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			return
		}
		s.mu.Lock()
		s.reported = append(s.reported, string(m.Payload()))
		n := len(s.reported)
		s.mu.Unlock()
		c.Publish(iothub.TwinResponseTopic(204, tp.RID, int64(n+1)), 0, false, "")
	})
	on("$iothub/methods/res/#", func(_ paho.Client, m paho.Message) {
		s.mu.Lock()
		s.answers[m.Topic()] = string(m.Payload())
		s.mu.Unlock()
	})
	return s
}

func (s *twinService) setDesired(doc string) {
	s.mu.Lock()
	s.desired = doc
	s.mu.Unlock()
}

func (s *twinService) answer(topic string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.answers[topic]
	return a, ok
}

func (s *twinService) reports() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reported...)
}

// TestIoTHubDialect runs the IoT Hub dialect through mosquitto, with the
// test playing IoT Hub's twin and method service: telemetry goes up on
// the connection of the identity that sent it with its properties in the
// bag, the cloud's desired properties reach the module without wiping
// the manifest's, reported patches go up in order, and a direct method
// call is answered on its $rid.
func TestIoTHubDialect(t *testing.T) {
	b := startBroker(t, "queue_qos0_messages true\n")
	events := subscribe(t, b, "devices/#")
	svc := startTwinService(t, b, `{"threshold":30,"$version":3}`)

	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	link, err := upstream.NewIoTHub(upstream.IoTHubConfig{
		HostName: "hub.example.net", DeviceID: "gw1", SharedAccessKey: []byte("device-key"),
		Broker:  b.url(),
		Modules: []upstream.ModuleIdentity{{ModuleID: "filter", SharedAccessKey: []byte("module-key")}},
	}, &upstream.Options{Backoff: fast, Logger: testLogger(t), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: link, Store: st, CloudModules: []string{"filter"}, Logger: testLogger(t)})
	defer func() {
		_ = h.Close()
		_ = link.Close()
		_ = st.Close()
	}()
	var filterClient atomic.Pointer[hub.Client]
	filter := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		filterClient.Store(c)
		c.OnMethod("reset", func(_ context.Context, req hub.MethodRequest) hub.MethodResponse {
			return hub.MethodResponse{Status: 200, Payload: json.RawMessage(`{"was":` + string(req.Payload) + `}`)}
		})
		for i := range 3 {
			if _, err := c.UpdateReported(ctx, map[string]any{"n": float64(i)}); err != nil {
				return err
			}
		}
		m := message.New([]byte(`{"t":31}`))
		m.Properties["alert"] = "yes"
		m.System.ContentType = "application/json"
		if err := c.SendOutput(ctx, "output1", m); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	sensor := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		if err := c.SendOutput(ctx, "temperatureOutput", message.New([]byte(`{"t":20}`))); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{Routes: []*route.Route{hubtest.MustRoute(t, "up", "FROM /messages/* INTO $upstream")}, Modules: []hub.ModuleSpec{
		{Name: "filter", Module: filter, Desired: map[string]any{"mode": "local"}},
		{Name: "sensor", Module: sensor},
	}}); err != nil {
		t.Fatal(err)
	}
	link.Start(h)

	waitSubscriberN(t, st, link, b, events, 2)
	byModule := map[string]iothub.Bag{}
	for _, m := range events.messages() {
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil || tp.Kind != iothub.Events || tp.DeviceID != "gw1" {
			t.Fatalf("message on %q (%v), want an events topic of gw1", m.Topic(), err)
		}
		bag, err := iothub.ParseBag(tp.Bag)
		if err != nil {
			t.Fatal(err)
		}
		byModule[tp.ModuleID] = bag
	}
	// filter has its own identity: its connection, so IoT Hub stamps its
	// $connectionModuleId; sensor has none and goes up on the device's.
	fb, ok := byModule["filter"]
	if !ok {
		t.Fatalf("no message on filter's events topic; got %v", byModule)
	}
	for k, want := range map[string]string{"$.on": "output1", "$.ct": "application/json", "alert": "yes"} {
		if v, _ := fb.Get(k); v != want {
			t.Errorf("filter's bag %s = %q, want %q (bag %v)", k, v, want, fb)
		}
	}
	if v, ok := fb.Get("$.mid"); !ok || v == "" {
		t.Error("filter's bag has no $.mid")
	}
	if _, ok := fb.Get("$.cmid"); ok {
		t.Error("the bag carries $.cmid: IoT Hub sets it from the connection")
	}
	sb, ok := byModule[""]
	if !ok {
		t.Fatalf("no message on the device's events topic; got %v", byModule)
	}
	if v, _ := sb.Get("$.on"); v != "temperatureOutput" {
		t.Errorf("sensor's bag $.on = %q, want temperatureOutput", v)
	}

	// The cloud's desired properties join the manifest's.
	hubtest.WaitFor(t, "the cloud's desired properties", func() bool {
		tw, _ := h.Twin("filter")
		return tw.Desired.Doc["threshold"] == 30.0
	})
	if tw, _ := h.Twin("filter"); tw.Desired.Doc["mode"] != "local" {
		t.Errorf("desired %v: the manifest's mode was wiped by the cloud's twin", tw.Desired.Doc)
	}
	// Reported patches arrive in order, and leave the queue.
	hubtest.WaitFor(t, "the reported patches", func() bool { return len(svc.reports()) >= 3 })
	if got := strings.Join(svc.reports(), " "); got != `{"n":0} {"n":1} {"n":2}` {
		t.Errorf("reported patches %s, want n=0,1,2 in order", got)
	}
	hubtest.WaitFor(t, "the patch queue to empty", func() bool {
		ps, _ := h.PendingReported(hub.Identity{DeviceID: "gw1", ModuleID: "filter"})
		return len(ps) == 0
	})

	// A desired notification.
	svc.cli.Publish(iothub.TwinDesiredTopic(4), 1, false, `{"threshold":35,"$version":4}`)
	hubtest.WaitFor(t, "the desired notification", func() bool {
		tw, _ := h.Twin("filter")
		return tw.Desired.Doc["threshold"] == 35.0
	})

	// A direct method, answered on its $rid.
	svc.cli.Publish(iothub.MethodRequestTopic("reset", "7"), 1, false, `{"hard":true}`)
	want := iothub.MethodResponseTopic(200, "7")
	hubtest.WaitFor(t, "the method answer", func() bool { _, ok := svc.answer(want); return ok })
	if a, _ := svc.answer(want); a != `{"was":{"hard":true}}` {
		t.Errorf("method answer %s, want the handler's payload", a)
	}
	// Offline: the cloud changes the twin and the module reports; after
	// the reconnect the twin is fetched again and the patch goes up.
	b.stop()
	hubtest.WaitFor(t, "the link to notice", func() bool {
		return link.Status().Identities[1].State != upstream.StateConnected
	})
	svc.setDesired(`{"threshold":40,"$version":6}`)
	if _, err := filterClient.Load().UpdateReported(context.Background(), map[string]any{"offline": true}); err != nil {
		t.Fatal(err)
	}
	b.start()
	hubtest.WaitFor(t, "the change made offline", func() bool {
		tw, _ := h.Twin("filter")
		return tw.Desired.Doc["threshold"] == 40.0
	})
	hubtest.WaitFor(t, "the patch made offline", func() bool { return len(svc.reports()) >= 4 })
	if r := svc.reports(); r[3] != `{"offline":true}` {
		t.Errorf("after reconnect reported %s, want the offline patch", r[3])
	}
	if tw, _ := h.Twin("filter"); tw.Desired.Doc["mode"] != "local" {
		t.Errorf("desired %v after reconnect: the manifest's mode was wiped", tw.Desired.Doc)
	}

	ids := link.Status().Identities
	if len(ids) != 2 || ids[0].Identity != "gw1" || ids[1].Identity != "gw1/filter" {
		t.Errorf("status identities %+v, want gw1 and gw1/filter", ids)
	}
}

func waitSubscriberN(t *testing.T, st *store.Store, link *upstream.Link, b *broker, sub *subscriber, n int) {
	t.Helper()
	hubtest.WaitFor(t, "the subscriber", func() bool {
		if sub.len() >= n {
			return true
		}
		es, _ := st.EndpointStats(hub.UpstreamQueue)
		if es.Queued > 0 && testing.Verbose() {
			t.Logf("queued %d, link %+v", es.Queued, link.Status())
		}
		return false
	})
}
