package edge_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// twinClient is an external module's twin conversation.
type twinClient struct {
	t   *testing.T
	c   paho.Client
	res chan paho.Message
}

func newTwinClient(t *testing.T, c paho.Client) *twinClient {
	tc := &twinClient{t: t, c: c, res: make(chan paho.Message, 16)}
	subscribe(t, c, iothub.FilterTwinResponses, 0, func(_ paho.Client, m paho.Message) { tc.res <- m })
	return tc
}

func (tc *twinClient) request(topic string, body []byte) (iothub.Topic, []byte) {
	tc.t.Helper()
	mustPublish(tc.t, tc.c, topic, 0, body)
	select {
	case m := <-tc.res:
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			tc.t.Fatal(err)
		}
		return tp, m.Payload()
	case <-time.After(wait):
		tc.t.Fatalf("no answer to %s", topic)
	}
	return iothub.Topic{}, nil
}

func TestTwin(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod"}})
	c := e.mustDial(t, "gw1/mod", clientOpts{})
	tc := newTwinClient(t, c)

	tp, body := tc.request(iothub.TwinGetTopic("1"), nil)
	var doc struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if tp.Status != 200 || tp.RID != "1" || doc.Desired["threshold"] != 25.0 || doc.Desired["$version"] != 1.0 {
		t.Fatalf("GET: %d rid %s %s", tp.Status, tp.RID, body)
	}

	tp, _ = tc.request(iothub.TwinReportedTopic("2"), []byte(`{"status":"ok","n":{"a":1}}`))
	if tp.Status != 204 || tp.RID != "2" || tp.Version != 2 {
		t.Fatalf("reported: status %d rid %s version %d, want 204 2 2", tp.Status, tp.RID, tp.Version)
	}
	tw, _ := e.h.Twin("mod")
	if tw.Reported.Doc["status"] != "ok" {
		t.Fatalf("reported not applied: %v", tw.Reported.Doc)
	}
	tp, _ = tc.request(iothub.TwinReportedTopic("3"), []byte(`{not json`))
	if tp.Status != 400 {
		t.Fatalf("bad JSON: status %d, want 400", tp.Status)
	}

	// Desired notifications: a patch reaches the subscribed module.
	desired := make(chan paho.Message, 4)
	subscribe(t, c, iothub.FilterTwinDesired, 0, func(_ paho.Client, m paho.Message) { desired <- m })
	if _, err := e.h.PatchDesired("mod", map[string]any{"threshold": 30.0, "extra": "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-desired:
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			t.Fatal(err)
		}
		var patch map[string]any
		if err := json.Unmarshal(m.Payload(), &patch); err != nil {
			t.Fatal(err)
		}
		if tp.Kind != iothub.TwinDesired || tp.Version != 2 || patch["threshold"] != 30.0 || patch["$version"] != 2.0 {
			t.Fatalf("desired notification %s %s", m.Topic(), m.Payload())
		}
	case <-time.After(wait):
		t.Fatal("no desired notification")
	}
}

func TestMethodsHubToExternal(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod"}})
	c := e.mustDial(t, "gw1/mod", clientOpts{})
	subscribe(t, c, iothub.FilterMethods, 0, func(c paho.Client, m paho.Message) {
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			t.Error(err)
			return
		}
		if tp.Method == "slow" {
			return // never answers
		}
		c.Publish(iothub.MethodResponseTopic(201, tp.RID), 0, false, []byte(`{"got":`+string(m.Payload())+`}`))
	})
	r, err := e.h.InvokeMethod(context.Background(), "gw1", "mod", hub.MethodRequest{Name: "reset", Payload: []byte(`{"x":1}`)}, 0)
	if err != nil || r.Status != 201 || string(r.Payload) != `{"got":{"x":1}}` {
		t.Fatalf("method = %d %s, %v", r.Status, r.Payload, err)
	}
	if _, err := e.h.InvokeMethod(context.Background(), "gw1", "mod", hub.MethodRequest{Name: "slow"}, hub.MinMethodTimeout); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("slow method = %v, want a timeout", err)
	}
	c.Disconnect(0)
	hubtest.WaitFor(t, "disconnect seen", func() bool { return e.ep.Stats().Connected == 0 })
	r, err = e.h.InvokeMethod(context.Background(), "gw1", "mod", hub.MethodRequest{Name: "reset"}, 0)
	if err != nil || r.Status != 404 {
		t.Fatalf("method on a disconnected module = %d, %v; want 404", r.Status, err)
	}
}

// TestLeafTwinAndMethods: a leaf device has its own twin and direct
// methods through the gateway.
func TestLeafTwinAndMethods(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.mustDial(t, "leaf1", clientOpts{})
	tc := newTwinClient(t, c)
	if tp, _ := tc.request(iothub.TwinReportedTopic("1"), []byte(`{"fw":"1.2"}`)); tp.Status != 204 {
		t.Fatalf("leaf reported: %d", tp.Status)
	}
	if tw, err := e.h.IdentityTwin(hub.Identity{DeviceID: "leaf1"}); err != nil || tw.Reported.Doc["fw"] != "1.2" {
		t.Fatalf("leaf twin %+v, %v", tw, err)
	}
	desired := make(chan paho.Message, 1)
	subscribe(t, c, iothub.FilterTwinDesired, 0, func(_ paho.Client, m paho.Message) { desired <- m })
	if _, err := e.h.PatchLeafDesired("leaf1", map[string]any{"interval": 5.0}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-desired:
		if !strings.Contains(string(m.Payload()), `"interval":5`) {
			t.Fatalf("leaf desired notification %s", m.Payload())
		}
	case <-time.After(wait):
		t.Fatal("no desired notification at the leaf")
	}
	subscribe(t, c, iothub.FilterMethods, 0, func(c paho.Client, m paho.Message) {
		tp, _ := iothub.ParseTopic(m.Topic())
		c.Publish(iothub.MethodResponseTopic(200, tp.RID), 0, false, []byte(`"rebooting"`))
	})
	r, err := e.h.InvokeMethod(context.Background(), "leaf1", "", hub.MethodRequest{Name: "reboot"}, 0)
	if err != nil || r.Status != 200 || string(r.Payload) != `"rebooting"` {
		t.Fatalf("leaf method = %d %s, %v", r.Status, r.Payload, err)
	}
	// A leaf cannot subscribe to a module's inputs.
	if q := subscribe(t, c, "devices/gw1/modules/sink/#", 1, nil); q != 0x80 {
		t.Fatalf("leaf subscribed to a module's inputs: %#x", q)
	}
}
