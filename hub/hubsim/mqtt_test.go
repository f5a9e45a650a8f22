package hubsim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

func selfSigned(t *testing.T, cn string) (tls.Certificate, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, hex.EncodeToString(sum[:])
}

func TestAuthentication(t *testing.T) {
	s := startSim(t, "")
	dev, err := s.AddDevice("dev1")
	if err != nil {
		t.Fatal(err)
	}
	filter := addModule(t, s, "gw", "filter")
	sensor := addModule(t, s, "gw", "sensor")
	cert, thumb := selfSigned(t, "certdev")
	certDev, err := s.AddIdentity(Identity{DeviceID: "certdev", X509Thumbprints: []string{thumb}})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := selfSigned(t, "certdev")

	sign := func(id Identity, key string, expiry time.Time) string {
		k, _ := base64.StdEncoding.DecodeString(key)
		return iothub.SignToken(k, iothub.Resource(s.Hostname(), id.DeviceID, id.ModuleID), expiry, "")
	}
	hour := time.Now().Add(time.Hour)
	for _, tt := range []struct {
		name string
		id   Identity
		o    dialOpts
		ok   bool
	}{
		{"device primary key", dev, dialOpts{}, true},
		{"device secondary key", dev, dialOpts{password: sign(dev, dev.SecondaryKey, hour)}, true},
		{"module key", filter, dialOpts{}, true},
		{"x509 registered", certDev, dialOpts{cert: &cert}, true},
		{"wrong key", dev, dialOpts{password: sign(dev, base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123")), hour)}, false},
		{"unknown device", Identity{DeviceID: "ghost", PrimaryKey: dev.PrimaryKey}, dialOpts{}, false},
		{"expired token", dev, dialOpts{password: sign(dev, dev.PrimaryKey, time.Now().Add(-time.Second))}, false},
		{"module key for another module", filter, dialOpts{password: sign(filter, sensor.PrimaryKey, hour)}, false},
		{"token for another module", filter, dialOpts{password: sign(sensor, sensor.PrimaryKey, hour)}, false},
		{"device key for its module", filter, dialOpts{password: sign(filter, mustIdentity(t, s, "gw", "").PrimaryKey, hour)}, false},
		{"client id of another identity", filter, dialOpts{clientID: "gw/sensor"}, false},
		{"not a token", dev, dialOpts{password: "secret"}, false},
		{"unregistered certificate", certDev, dialOpts{cert: &other}, false},
		{"no credentials", certDev, dialOpts{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "no credentials" {
				tt.o.password = ""
				tt.id.PrimaryKey = ""
				// A password-less CONNECT without a client certificate.
				c, err := dial(t, s, tt.id, dialOpts{cert: &tls.Certificate{}})
				if err == nil {
					c.Disconnect(0)
					t.Fatal("connected")
				}
				return
			}
			c, err := dial(t, s, tt.id, tt.o)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok {
				if err == nil {
					c.Disconnect(0)
					t.Fatal("connected, want refused")
				}
				return
			}
			if !s.Connected(tt.id.DeviceID, tt.id.ModuleID) {
				t.Error("Connected = false after connecting")
			}
		})
	}
}

// IoT Hub speaks MQTT 3.1.1 only: a 3.1 CONNECT is refused.
func TestProtocolVersion(t *testing.T) {
	s := startSim(t, "")
	dev, _ := s.AddDevice("dev1")
	opts := paho.NewClientOptions().AddBroker("ssl://" + s.Addr()).SetClientID("dev1").
		SetUsername(iothub.FormatUsername(s.Hostname(), "dev1", "", nil)).
		SetPassword(iothub.SignToken(mustKey(t, dev.PrimaryKey), iothub.Resource(s.Hostname(), "dev1", ""), time.Now().Add(time.Hour), "")).
		SetTLSConfig(tlsConfig(s)).SetProtocolVersion(3).SetAutoReconnect(false)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("connect timed out")
	}
	if tok.Error() == nil {
		c.Disconnect(0)
		t.Fatal("an MQTT 3.1 client connected")
	}
}

func mustIdentity(t *testing.T, s *Sim, d, m string) Identity {
	t.Helper()
	id, err := s.Identity(d, m)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAuthorization(t *testing.T) {
	s := startSim(t, "")
	filter := addModule(t, s, "gw", "filter")
	addModule(t, s, "gw", "sensor")
	dev, _ := s.AddDevice("dev1")
	c := mustDial(t, s, filter)
	for _, tt := range []struct {
		filter string
		want   byte
	}{
		{"devices/gw/modules/filter/#", 1},
		{"devices/gw/modules/filter/inputs/#", 1},
		{"$iothub/twin/res/#", 1},
		{"$iothub/twin/PATCH/properties/desired/#", 1},
		{"$iothub/methods/POST/#", 1},
		{"devices/gw/modules/sensor/#", 0x80},
		{"devices/gw/modules/sensor/inputs/#", 0x80},
		{"devices/dev1/messages/devicebound/#", 0x80},
		{"devices/gw/modules/+/inputs/#", 0x80},
		{"#", 0x80},
		{"$SYS/#", 0x80},
	} {
		if got := c.subscribe(t, tt.filter); got != tt.want {
			t.Errorf("SUBACK for %s = %#x, want %#x", tt.filter, got, tt.want)
		}
	}
	// QoS 2 subscriptions are granted QoS 1.
	tok := c.Subscribe("devices/gw/modules/filter/inputs/in2/#", 2, nil)
	tok.Wait()
	if got := tok.(interface{ Result() map[string]byte }).Result()["devices/gw/modules/filter/inputs/in2/#"]; got != 1 {
		t.Errorf("SUBACK for a QoS 2 subscription = %d, want 1", got)
	}

	d := mustDial(t, s, dev)
	if got := d.subscribe(t, "devices/dev1/messages/devicebound/#"); got != 1 {
		t.Errorf("device's own C2D: SUBACK %#x", got)
	}

	// Publishing on another identity's events topic closes the connection
	// and records nothing.
	if err := c.publish(t, iothub.EventsTopic("gw", "sensor", ""), 1, []byte("spoof")); err == nil {
		t.Error("publish as another module was acknowledged")
	}
	c.waitLost(t)
	if evs, _, _ := s.Events(0); len(evs) != 0 {
		t.Errorf("recorded %d events, want none", len(evs))
	}
}

func TestEvents(t *testing.T) {
	s := startSim(t, "")
	filter := addModule(t, s, "gw", "filter")
	dev, _ := s.AddDevice("dev1")
	c := mustDial(t, s, filter)
	d := mustDial(t, s, dev)

	bag := "%24.on=output1&%24.mid=m%201&%24.cid=c1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.cdid=liar&%24.cmid=liar&MessageType=Alert&temp%20unit=%C2%B0C"
	if err := c.publish(t, iothub.EventsTopic("gw", "filter", bag), 1, []byte(`{"machine":{"temperature":31.5}}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.publish(t, "devices/dev1/messages/events/", 0, []byte("plain text")); err != nil {
		t.Fatal(err)
	}
	evs := waitEvents(t, s, 2)
	e := evs[0]
	if e.Seq != 0 || e.DeviceID != "gw" || e.ModuleID != "filter" || string(e.Body) != `{"machine":{"temperature":31.5}}` {
		t.Errorf("event 0 = %+v", e)
	}
	sys := e.System
	if sys.ConnectionDeviceID != "gw" || sys.ConnectionModuleID != "filter" {
		t.Errorf("connection ids %q/%q, want the authenticated gw/filter", sys.ConnectionDeviceID, sys.ConnectionModuleID)
	}
	if sys.OutputName != "output1" || sys.MessageID != "m 1" || sys.CorrelationID != "c1" || sys.ContentType != "application/json" || sys.ContentEncoding != "utf-8" {
		t.Errorf("system properties %+v", sys)
	}
	if time.Since(sys.EnqueuedTime) > time.Minute || sys.EnqueuedTime.After(time.Now()) {
		t.Errorf("enqueued time %v", sys.EnqueuedTime)
	}
	if want := map[string]string{"MessageType": "Alert", "temp unit": "°C"}; !reflect.DeepEqual(e.Properties, want) {
		t.Errorf("properties %v, want %v", e.Properties, want)
	}
	if evs[1].DeviceID != "dev1" || evs[1].ModuleID != "" || evs[1].System.ConnectionDeviceID != "dev1" || evs[1].Seq != 1 {
		t.Errorf("event 1 = %+v", evs[1])
	}

	// The monitor-events form.
	var got map[string]any
	b, _ := json.Marshal(e)
	json.Unmarshal(b, &got)
	if body, _ := got["body"].(map[string]any); body == nil {
		t.Errorf("JSON body not kept as JSON: %s", b)
	}
	props := got["properties"].(map[string]any)
	system := props["system"].(map[string]any)
	if system["iothub-connection-device-id"] != "gw" || system["iothub-connection-module-id"] != "filter" || system["content-type"] != "application/json" || system["iothub-outputname"] != "output1" {
		t.Errorf("system properties in JSON: %v", system)
	}
	if props["application"].(map[string]any)["MessageType"] != "Alert" {
		t.Errorf("application properties in JSON: %v", props["application"])
	}
	b, _ = json.Marshal(evs[1])
	if !strings.Contains(string(b), `"body":"plain text"`) {
		t.Errorf("text body: %s", b)
	}
}

func TestProtocolLimits(t *testing.T) {
	s := startSim(t, "")
	dev, _ := s.AddDevice("dev1")

	t.Run("QoS 2 closes the connection", func(t *testing.T) {
		c := mustDial(t, s, dev)
		c.Publish("devices/dev1/messages/events/", 2, false, []byte("x"))
		c.waitLost(t)
	})
	t.Run("a message over 256 KiB closes the connection", func(t *testing.T) {
		c := mustDial(t, s, dev)
		c.Publish("devices/dev1/messages/events/", 1, false, make([]byte, 256*1024+1))
		c.waitLost(t)
	})
	t.Run("a bad property bag closes the connection", func(t *testing.T) {
		c := mustDial(t, s, dev)
		c.Publish("devices/dev1/messages/events/a=%zz", 1, false, []byte("x"))
		c.waitLost(t)
	})
	t.Run("256 KiB exactly is accepted", func(t *testing.T) {
		c := mustDial(t, s, dev)
		if err := c.publish(t, "devices/dev1/messages/events/", 1, make([]byte, 256*1024)); err != nil {
			t.Fatal(err)
		}
	})
	if evs := waitEvents(t, s, 1); len(evs) != 1 || len(evs[0].Body) != 256*1024 {
		t.Errorf("events: %d", len(evs))
	}
}

func TestTwin(t *testing.T) {
	s := startSim(t, "")
	filter := addModule(t, s, "gw", "filter")
	c := mustDial(t, s, filter)
	c.subscribe(t, "$iothub/twin/res/#")
	c.subscribe(t, "$iothub/twin/PATCH/properties/desired/#")

	if _, err := s.PatchDesired("gw", "filter", map[string]any{"TemperatureThreshold": 25.0}); err != nil {
		t.Fatal(err)
	}
	n := c.waitMsg(t, "$iothub/twin/PATCH/properties/desired/")
	if tp, _ := iothub.ParseTopic(n.Topic()); tp.Version != 2 {
		t.Errorf("desired notification version %d, want 2", tp.Version)
	}
	if got := decodeJSON(t, n.Payload()); got["TemperatureThreshold"] != 25.0 || got["$version"] != 2.0 {
		t.Errorf("desired notification %v", got)
	}

	status, _, body := twinRequest(t, c, iothub.TwinGetTopic("1"), nil, "1")
	if status != 200 {
		t.Fatalf("GET status %d", status)
	}
	doc := decodeJSON(t, body)
	desired := doc["desired"].(map[string]any)
	reported := doc["reported"].(map[string]any)
	if desired["TemperatureThreshold"] != 25.0 || desired["$version"] != 2.0 || reported["$version"] != 1.0 {
		t.Errorf("twin %s", body)
	}

	status, v, _ := twinRequest(t, c, iothub.TwinReportedTopic("2"), []byte(`{"TemperatureThreshold":25,"nested":{"a":1}}`), "2")
	if status != 204 || v != 2 {
		t.Errorf("reported patch: %d $version=%d, want 204 2", status, v)
	}
	status, v, _ = twinRequest(t, c, iothub.TwinReportedTopic("3"), []byte(`{"nested":{"a":null,"b":2}}`), "3")
	if status != 204 || v != 3 {
		t.Errorf("second reported patch: %d $version=%d, want 204 3", status, v)
	}
	tw, _ := s.Twin("gw", "filter")
	if want := map[string]any{"TemperatureThreshold": 25.0, "nested": map[string]any{"b": 2.0}}; !reflect.DeepEqual(tw.Reported.Doc, want) || tw.Reported.Version != 3 {
		t.Errorf("reported %v v%d, want %v v3", tw.Reported.Doc, tw.Reported.Version, want)
	}

	for _, tt := range []struct {
		body   string
		status int
	}{
		{`{"a":`, 400},
		{`[1,2]`, 400},
		{`{"big":"` + strings.Repeat("x", 33*1024) + `"}`, 413},
		{`{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{"k":1}}}}}}}}}}}`, 400},
	} {
		status, _, _ := twinRequest(t, c, iothub.TwinReportedTopic("bad"), []byte(tt.body), "bad")
		if status != tt.status {
			t.Errorf("reported patch %.40s…: status %d, want %d", tt.body, status, tt.status)
		}
	}
	if tw2, _ := s.Twin("gw", "filter"); tw2.Reported.Version != 3 {
		t.Errorf("refused patches changed the version to %d", tw2.Reported.Version)
	}
	if _, err := s.PatchDesired("gw", "filter", map[string]any{"big": strings.Repeat("x", 33*1024)}); err == nil {
		t.Error("desired patch over 32 KiB accepted")
	}
	if _, err := s.PatchDesired("gw", "nobody", map[string]any{"a": 1.0}); !errors.Is(err, ErrNotFound) {
		t.Errorf("patch of an unknown module: %v", err)
	}
}

func TestMethods(t *testing.T) {
	s := startSim(t, "")
	sensor := addModule(t, s, "gw", "sensor")
	c := mustDial(t, s, sensor)
	ctx := context.Background()

	if _, err := s.InvokeMethod(ctx, "gw", "sensor", "reset", nil, time.Second); !errors.Is(err, ErrNotConnected) {
		t.Errorf("before subscribing: %v, want ErrNotConnected (404)", err)
	}
	c.subscribe(t, "$iothub/methods/POST/#")

	// Answer the first call, leave the second unanswered.
	type result struct {
		res MethodResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.InvokeMethod(ctx, "gw", "sensor", "reset", json.RawMessage(`{"full":true}`), 5*time.Second)
		done <- result{res, err}
	}()
	m := c.waitMsg(t, "$iothub/methods/POST/")
	tp, err := iothub.ParseTopic(m.Topic())
	if err != nil || tp.Method != "reset" || string(m.Payload()) != `{"full":true}` {
		t.Fatalf("method request %s %s: %v", m.Topic(), m.Payload(), err)
	}
	if err := c.publish(t, iothub.MethodResponseTopic(200, tp.RID), 0, []byte(`{"ok":1}`)); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.res.Status != 200 || string(r.res.Payload) != `{"ok":1}` {
		t.Errorf("InvokeMethod = %+v, %v", r.res, r.err)
	}

	if _, err := s.InvokeMethod(ctx, "gw", "sensor", "slow", nil, 100*time.Millisecond); !errors.Is(err, ErrMethodTimeout) {
		t.Errorf("unanswered: %v, want ErrMethodTimeout (504)", err)
	}
	c.waitMsg(t, "$iothub/methods/POST/slow/")
	if _, err := s.InvokeMethod(ctx, "gw", "sensor", "big", json.RawMessage(`"`+strings.Repeat("x", MaxMethodPayload)+`"`), time.Second); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("payload over 128 KiB: %v", err)
	}
	if _, err := s.InvokeMethod(ctx, "gw", "ghost", "reset", nil, time.Second); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown module: %v", err)
	}
	s.Disconnect("gw", "sensor")
	c.waitLost(t)
	if _, err := s.InvokeMethod(ctx, "gw", "sensor", "reset", nil, time.Second); !errors.Is(err, ErrNotConnected) {
		t.Errorf("after Disconnect: %v, want ErrNotConnected", err)
	}
}

func TestMatchFilter(t *testing.T) {
	for _, tt := range []struct {
		filter, topic string
		want          bool
	}{
		{"$iothub/methods/POST/#", "$iothub/methods/POST/reset/?$rid=1", true},
		{"a/#", "a", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/?$version=2", false},
	} {
		if got := matchFilter(tt.filter, tt.topic); got != tt.want {
			t.Errorf("matchFilter(%q, %q) = %v", tt.filter, tt.topic, got)
		}
	}
}
