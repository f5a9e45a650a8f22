package edge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/certs"
	"github.com/tinyedge/tinyedge/hub/edge"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	device  = "gw1"
	iotHub  = "myhub.azure-devices.net"
	gateway = "gw1.local"
	wait    = hubtest.Patience
)

// env is a hub with a store, a deployment, a device CA and a started
// endpoint on 127.0.0.1.
type env struct {
	h    *hub.Hub
	st   *store.Store
	ca   *certs.Authority
	sc   *certs.ServerCert
	ep   *edge.Endpoint
	keys edge.KeyMap
	up   *hubtest.Recorder
	sink *recorder // in-process module "sink": what reaches its inputs
}

type envOpts struct {
	routes    []string
	externals []string
	edge      func(*edge.Options)
	noStore   bool
	store     *store.Options
}

func keyOf(id string) []byte { return []byte("key-of-" + id) }

// recorder is an in-process module that records what reaches its inputs
// and answers direct method "echo".
type recorder struct {
	mu  sync.Mutex
	got []*message.Message
}

func (r *recorder) Run(ctx context.Context, c *hub.Client) error {
	for _, in := range []string{"in1", "in2"} {
		c.OnInput(in, func(_ context.Context, m *message.Message) error {
			r.mu.Lock()
			r.got = append(r.got, m)
			r.mu.Unlock()
			return nil
		})
	}
	c.OnMethod("echo", func(_ context.Context, req hub.MethodRequest) hub.MethodResponse {
		return hub.MethodResponse{Status: 200, Payload: req.Payload}
	})
	<-ctx.Done()
	return nil
}

func (r *recorder) messages() []*message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*message.Message(nil), r.got...)
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{keys: edge.KeyMap{}, up: &hubtest.Recorder{}, sink: &recorder{}}
	if !o.noStore {
		so := o.store
		if so == nil {
			so = &store.Options{}
		}
		so.SweepInterval = -1
		st, err := store.Open(filepath.Join(dir, "store.db"), so)
		if err != nil {
			t.Fatal(err)
		}
		e.st = st
		t.Cleanup(func() { _ = st.Close() })
	}
	e.h = hub.New(hub.Options{DeviceID: device, Store: e.st, Upstream: e.up})
	t.Cleanup(func() { _ = e.h.Close() })
	var routes []*route.Route
	for i, r := range o.routes {
		routes = append(routes, hubtest.MustRoute(t, fmt.Sprint("r", i), r))
	}
	mods := []hub.ModuleSpec{{Name: "sink", Module: e.sink}}
	for _, x := range o.externals {
		mods = append(mods, hub.ModuleSpec{Name: x, External: true, Desired: map[string]any{"threshold": 25.0}})
		e.keys[device+"/"+x] = keyOf(device + "/" + x)
	}
	e.keys[device+"/sink"] = keyOf(device + "/sink")
	e.keys["leaf1"] = keyOf("leaf1")
	if err := e.h.Deploy(hub.Deployment{Modules: mods, Routes: routes}); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.Open(filepath.Join(dir, "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.ca = ca
	sc, err := ca.NewServerCert(certs.ServerOptions{Hostname: gateway})
	if err != nil {
		t.Fatal(err)
	}
	e.sc = sc
	eo := edge.Options{
		Hub:             e.h,
		Keys:            e.keys,
		IoTHubHostname:  iotHub,
		GatewayHostname: gateway,
		Listen:          "127.0.0.1:0",
		PlainListen:     "127.0.0.1:0",
		MethodsListen:   "127.0.0.1:0",
		Certificate:     sc.GetCertificate,
		Logger:          testLogger(t),
	}
	if o.edge != nil {
		o.edge(&eo)
	}
	ep, err := edge.New(eo)
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.Start(); err != nil {
		t.Fatal(err)
	}
	e.ep = ep
	t.Cleanup(func() { _ = ep.Close() })
	return e
}

// token is a SAS token for id ("dev" or "dev/mod") on host valid for d.
func token(id, host string, key []byte, d time.Duration) string {
	dev, mod, _ := strings.Cut(id, "/")
	return iothub.SignToken(key, iothub.Resource(host, dev, mod), time.Now().Add(d), "")
}

type clientOpts struct {
	password  *string // nil: a valid token
	clientID  string  // "": the identity
	plain     bool
	tls       *tls.Config
	noAutoAck bool
	onLost    func(error)
}

// dial connects an MQTT client as id ("gw1/mod" or "leaf1").
func (e *env) dial(t testing.TB, id string, co clientOpts) (paho.Client, error) {
	t.Helper()
	if co.plain {
		return dialAt(t, "tcp://"+e.ep.PlainAddr(), nil, id, co)
	}
	tc := co.tls
	if tc == nil {
		tc = &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"}
	}
	return dialAt(t, "ssl://"+e.ep.Addr(), tc, id, co)
}

// dialAt connects an MQTT client as id to broker, a URL; tc is its TLS
// configuration (nil for tcp://).
func dialAt(t testing.TB, broker string, tc *tls.Config, id string, co clientOpts) (paho.Client, error) {
	t.Helper()
	dev, mod, _ := strings.Cut(id, "/")
	pw := token(id, iotHub, keyOf(id), time.Hour)
	if co.password != nil {
		pw = *co.password
	}
	cid := co.clientID
	if cid == "" {
		cid = id
	}
	o := paho.NewClientOptions().
		SetClientID(cid).
		SetUsername(iothub.FormatUsername(iotHub, dev, mod, url.Values{"DeviceClientType": {"tinyedge-test"}})).
		SetPassword(pw).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(wait).
		SetOrderMatters(true).
		SetAutoAckDisabled(co.noAutoAck)
	if co.onLost != nil {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { co.onLost(err) })
	}
	o.AddBroker(broker)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, fmt.Errorf("connect as %s: timed out", id)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func (e *env) mustDial(t testing.TB, id string, co clientOpts) paho.Client {
	t.Helper()
	c, err := e.dial(t, id, co)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitToken(t testing.TB, what string, tok paho.Token) error {
	t.Helper()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("%s: timed out", what)
	}
	return tok.Error()
}

// subscribe subscribes and returns the granted QoS (0x80: refused).
func subscribe(t testing.TB, c paho.Client, filter string, qos byte, h paho.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, h)
	if err := waitToken(t, "subscribe "+filter, tok); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func mustPublish(t testing.TB, c paho.Client, topic string, qos byte, payload []byte) {
	t.Helper()
	if err := waitToken(t, "publish "+topic, c.Publish(topic, qos, false, payload)); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func eventsTopic(id string, bag iothub.Bag) string {
	dev, mod, _ := strings.Cut(id, "/")
	return iothub.EventsTopic(dev, mod, bag.Encode())
}

// inbox collects what a client receives.
type inbox struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (b *inbox) handle(_ paho.Client, m paho.Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *inbox) all() []paho.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]paho.Message(nil), b.msgs...)
}

func (b *inbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

// testLogger logs to stderr when EDGE_TEST_LOG is set, else nowhere.
func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("EDGE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
