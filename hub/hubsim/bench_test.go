package hubsim

import (
	"crypto/tls"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tinyedge/tinyedge/hub/internal/broker"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// benchBag is a module output with the properties an SDK sends.
const benchBag = "%24.on=output1&%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&sequenceNumber=1&batchId=b1"

var benchBody = []byte(`{"machine":{"temperature":21.5,"pressure":1.01},"ambient":{"temperature":20.9,"humidity":25},"timeCreated":"2024-01-02T03:04:05Z"}`)

// publishLoop publishes b.N QoS 1 events one after the other, each waiting
// for its PUBACK: the latency a sender sees per event.
func publishLoop(b *testing.B, c paho.Client, topic string) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		tok := c.Publish(topic, 1, false, benchBody)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("publish: %v", tok.Error())
		}
	}
}

func benchClient(b *testing.B, addr string, cfg *tls.Config, id, user, password string) paho.Client {
	c := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(id).
		SetUsername(user).SetPassword(password).SetTLSConfig(cfg).SetProtocolVersion(4).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect: %v", tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(100) })
	return c
}

// BenchmarkEventIngest is hubsim accepting module events: ACL, bag
// parsing, stamping, the append to events.jsonl, the PUBACK.
func BenchmarkEventIngest(b *testing.B) {
	s, err := New(Options{DataDir: b.TempDir(), MQTTAddr: "127.0.0.1:0", Logger: testLoggerB()})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	s.AddDevice("gw")
	id, _ := s.AddModule("gw", "sensor")
	key := mustKey(b, id.PrimaryKey)
	c := benchClient(b, s.Addr(), tlsConfig(s), id.ID(), iothub.FormatUsername(s.Hostname(), "gw", "sensor", nil),
		iothub.SignToken(key, iothub.Resource(s.Hostname(), "gw", "sensor"), time.Now().Add(time.Hour), ""))
	publishLoop(b, c, iothub.EventsTopic("gw", "sensor", benchBag))
}

// BenchmarkEventIngestBaselineMochi is the same traffic to a bare mochi
// server (TLS, allow-all auth, no subscribers): what hubsim's own work
// adds is the difference.
func BenchmarkEventIngestBaselineMochi(b *testing.B) {
	s, err := New(Options{DataDir: b.TempDir(), MQTTAddr: "127.0.0.1:0", Logger: testLoggerB()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close() // only for its certificates
	// The listener hubsim uses, so that the difference is hubsim's work.
	ln := broker.NewListener("bare", "127.0.0.1:0", &tls.Config{GetCertificate: s.cert.GetCertificate}, nil, nil)
	srv := mqtt.New(&mqtt.Options{Logger: testLoggerB()})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		b.Fatal(err)
	}
	if err := srv.AddListener(ln); err != nil {
		b.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	c := benchClient(b, ln.Address(), tlsConfig(s), "gw/sensor", "u", "p")
	publishLoop(b, c, iothub.EventsTopic("gw", "sensor", benchBag))
}

// allowAll lets every client connect, publish and subscribe.
type allowAll struct{ mqtt.HookBase }

func (*allowAll) ID() string { return "allow-all" }
func (*allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (*allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (*allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }
