package hubsim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger is quiet unless the test runs with -v.
func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func testLoggerB() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustKey(tb testing.TB, b64 string) []byte {
	tb.Helper()
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// startSim starts a hubsim on free loopback ports in dir (a new temporary
// directory when ""), closed at the end of the test.
func startSim(t *testing.T, dir string) *Sim {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// conn is a paho client connected as an identity, recording what it
// receives.
type conn struct {
	paho.Client
	mu   sync.Mutex
	msgs []paho.Message
	lost chan error
}

type dialOpts struct {
	password string           // a SAS token; signed with the primary key when ""
	cert     *tls.Certificate // a client certificate instead of a token
	clientID string           // the identity's when ""
}

func tlsConfig(s *Sim) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM())
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// dial connects as id; err is the CONNECT's outcome.
func dial(t *testing.T, s *Sim, id Identity, o dialOpts) (*conn, error) {
	t.Helper()
	c := &conn{lost: make(chan error, 1)}
	opts := paho.NewClientOptions()
	opts.AddBroker("ssl://" + s.Addr())
	opts.SetClientID(id.ID())
	if o.clientID != "" {
		opts.SetClientID(o.clientID)
	}
	opts.SetUsername(iothub.FormatUsername(s.Hostname(), id.DeviceID, id.ModuleID, url.Values{"DeviceClientType": {"tinyedge-test"}}))
	cfg := tlsConfig(s)
	switch {
	case o.cert != nil:
		cfg.Certificates = []tls.Certificate{*o.cert}
	case o.password != "":
		opts.SetPassword(o.password)
	default:
		key, _ := base64.StdEncoding.DecodeString(id.PrimaryKey)
		opts.SetPassword(iothub.SignToken(key, iothub.Resource(s.Hostname(), id.DeviceID, id.ModuleID), time.Now().Add(time.Hour), ""))
	}
	opts.SetTLSConfig(cfg)
	opts.SetProtocolVersion(4)
	opts.SetAutoReconnect(false)
	opts.SetConnectRetry(false)
	opts.SetConnectTimeout(5 * time.Second)
	opts.SetCleanSession(true)
	opts.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case c.lost <- err:
		default:
		}
	})
	c.Client = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func mustDial(t *testing.T, s *Sim, id Identity) *conn {
	t.Helper()
	c, err := dial(t, s, id, dialOpts{})
	if err != nil {
		t.Fatalf("connect as %s: %v", id.ID(), err)
	}
	return c
}

// subscribe subscribes and returns the granted QoS (0x80 = refused).
func (c *conn) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func (c *conn) publish(t *testing.T, topic string, qos byte, payload []byte) error {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(5 * time.Second) {
		return errors.New("publish not acknowledged in 5s")
	}
	return tok.Error()
}

// waitMsg waits for a received message whose topic starts with prefix.
func (c *conn) waitMsg(t *testing.T, prefix string) paho.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for i, m := range c.msgs {
			if strings.HasPrefix(m.Topic(), prefix) {
				c.msgs = append(c.msgs[:i], c.msgs[i+1:]...)
				c.mu.Unlock()
				return m
			}
		}
		c.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no message on %s… within 5s", prefix)
	return nil
}

// waitLost waits for the connection to be closed by the server.
func (c *conn) waitLost(t *testing.T) {
	t.Helper()
	select {
	case <-c.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not close the connection within 5s")
	}
}

// waitEvents waits until the sim holds n events in all, and returns them.
func waitEvents(t *testing.T, s *Sim, n int) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := s.WaitEvents(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func addModule(t *testing.T, s *Sim, device, module string) Identity {
	t.Helper()
	if _, err := s.Identity(device, ""); errors.Is(err, ErrNotFound) {
		if _, err := s.AddDevice(device); err != nil {
			t.Fatal(err)
		}
	}
	id, err := s.AddModule(device, module)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func twinRequest(t *testing.T, c *conn, topic string, body []byte, rid string) (status int, version int64, payload []byte) {
	t.Helper()
	if err := c.publish(t, topic, 0, body); err != nil {
		t.Fatal(err)
	}
	m := c.waitMsg(t, "$iothub/twin/res/")
	tp, err := iothub.ParseTopic(m.Topic())
	if err != nil {
		t.Fatal(err)
	}
	if tp.RID != rid {
		t.Fatalf("response rid %q, want %q", tp.RID, rid)
	}
	return tp.Status, tp.Version, m.Payload()
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}
