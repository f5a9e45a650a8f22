package edge_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/edge"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

func TestPlainListener(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"mod"}, edge: func(o *edge.Options) { o.PlainListen = "" }})
	if a := e.ep.PlainAddr(); a != "" {
		t.Fatalf("plain listener on %s without being configured", a)
	}
	for _, addr := range []string{":1883", "0.0.0.0:1883", "192.0.2.1:1883", "[::]:1883", "gateway.example:1883"} {
		_, err := edge.New(edge.Options{Hub: e.h, IoTHubHostname: iotHub, PlainListen: addr, Listen: edge.Off, MethodsListen: edge.Off})
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("plain listener %s: %v, want a refusal naming loopback", addr, err)
		}
	}
	// Configured on loopback, it works.
	e2 := newEnv(t, envOpts{externals: []string{"mod"}})
	if _, err := e2.dial(t, "gw1/mod", clientOpts{plain: true}); err != nil {
		t.Fatal(err)
	}
}

func TestOversizePacketRefused(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"mod"},
		routes:    []string{`FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in1")`},
	})
	lost := make(chan error, 1)
	c := e.mustDial(t, "gw1/mod", clientOpts{onLost: func(err error) { lost <- err }})
	c.Publish(eventsTopic("gw1/mod", nil), 1, false, bytes.Repeat([]byte("x"), 300*1024))
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("a 300 KiB packet did not close the connection")
	}
	c = e.mustDial(t, "gw1/mod", clientOpts{})
	mustPublish(t, c, eventsTopic("gw1/mod", nil), 1, bytes.Repeat([]byte("y"), 200*1024))
	hubtest.WaitFor(t, "the 200 KiB message", func() bool { return len(e.sink.messages()) == 1 })
	if n := len(e.sink.messages()[0].Body); n != 200*1024 {
		t.Fatalf("routed a %d-byte message", n)
	}
}

func TestConnectionFlood(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"mod", "mod2"},
		routes:    []string{`FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in1")`},
		edge:      func(o *edge.Options) { o.MaxConnections = 4 },
	})
	c := e.mustDial(t, "gw1/mod", clientOpts{})
	// Fill every other slot with connections that never say a word, then
	// keep knocking.
	var flood []net.Conn
	defer func() {
		for _, f := range flood {
			f.Close()
		}
	}()
	for range 20 {
		f, err := net.Dial("tcp", e.ep.Addr())
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, f)
	}
	hubtest.WaitFor(t, "refusals", func() bool { return e.ep.Stats().Refused >= 17 })
	if _, err := e.dial(t, "gw1/mod2", clientOpts{}); err == nil {
		t.Fatal("a connection beyond the maximum was accepted")
	}
	// The connected client does not notice.
	for i := range 5 {
		mustPublish(t, c, eventsTopic("gw1/mod", nil), 1, []byte{byte('0' + i)})
	}
	hubtest.WaitFor(t, "the existing client's messages", func() bool { return len(e.sink.messages()) == 5 })
	// Slots come back when the flood goes.
	for _, f := range flood {
		f.Close()
	}
	flood = nil
	hubtest.WaitFor(t, "a free slot", func() bool {
		c2, err := e.dial(t, "gw1/mod2", clientOpts{})
		if err == nil {
			c2.Disconnect(0)
		}
		return err == nil
	})
}

// TestCertificateRenewal: a client stays connected across a renewal of
// the server certificate and a new client sees the new one.
func TestCertificateRenewal(t *testing.T) {
	e := newEnv(t, envOpts{
		externals: []string{"mod", "mod2"},
		routes:    []string{`FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in1")`},
	})
	lost := make(chan error, 1)
	c := e.mustDial(t, "gw1/mod", clientOpts{onLost: func(err error) { lost <- err }})
	old := e.sc.Current().Leaf
	if err := e.sc.Renew(); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, c, eventsTopic("gw1/mod", nil), 1, []byte("after renewal"))
	hubtest.WaitFor(t, "message after renewal", func() bool { return len(e.sink.messages()) == 1 })
	select {
	case err := <-lost:
		t.Fatalf("renewal dropped the client: %v", err)
	default:
	}
	conn, err := tls.Dial("tcp", e.ep.Addr(), &tls.Config{RootCAs: e.ca.Pool(), ServerName: gateway})
	if err != nil {
		t.Fatal(err)
	}
	got := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if got.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatal("a new connection got the old certificate")
	}
	if _, err := e.dial(t, "gw1/mod2", clientOpts{}); err != nil {
		t.Fatalf("a new client after renewal: %v", err)
	}
}

func TestLeafDeviceToUpstream(t *testing.T) {
	cert, thumb := selfSigned(t, "leaf2")
	e := newEnv(t, envOpts{
		routes: []string{`FROM /messages INTO $upstream`},
		edge:   func(o *edge.Options) { o.Thumbprints = edge.Thumbprints{"leaf2": strings.ToUpper(thumb)} },
	})
	c := e.mustDial(t, "leaf1", clientOpts{})
	mustPublish(t, c, eventsTopic("leaf1", iothub.Bag{{Key: "kind", Value: "t"}}), 1, []byte("from leaf1"))
	// X.509: an empty password and the registered certificate.
	x := e.mustDial(t, "leaf2", clientOpts{password: ptr(""), tls: &tls.Config{RootCAs: e.ca.Pool(), ServerName: gateway, Certificates: []tls.Certificate{cert}}})
	mustPublish(t, x, eventsTopic("leaf2", nil), 1, []byte("from leaf2"))
	hubtest.WaitFor(t, "2 messages upstream", func() bool { return e.up.Len() == 2 })
	for i, m := range e.up.Messages() {
		want := []string{"leaf1", "leaf2"}[i]
		if m.System.ConnectionDeviceID != want || m.System.ConnectionModuleID != "" || m.Source() != "/messages" {
			t.Errorf("message %d from %q/%q source %s", i, m.System.ConnectionDeviceID, m.System.ConnectionModuleID, m.Source())
		}
	}
	// Another certificate does not pass for leaf2.
	other, _ := selfSigned(t, "leaf2")
	if _, err := e.dial(t, "leaf2", clientOpts{password: ptr(""), tls: &tls.Config{RootCAs: e.ca.Pool(), ServerName: gateway, Certificates: []tls.Certificate{other}}}); err == nil {
		t.Fatal("a certificate with another thumbprint was accepted")
	}
	// A leaf device cannot publish as a module.
	lost := make(chan error, 1)
	c = e.mustDial(t, "leaf1", clientOpts{onLost: func(err error) { lost <- err }})
	c.Publish(eventsTopic("gw1/sink", nil), 1, false, []byte("as a module"))
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("a leaf device published as a module")
	}
}

// selfSigned makes a client certificate and returns its SHA-256
// thumbprint.
func selfSigned(t *testing.T, cn string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, hex.EncodeToString(sum[:])
}

// TestMethodsListenerTaken: a configured HTTPS methods address that
// cannot be bound fails Start. (Only the default :443 is let go with an
// error in the log, for a tinyedge not running as root.)
func TestMethodsListenerTaken(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e := newEnv(t, envOpts{externals: []string{"mod"}})
	ep, err := edge.New(edge.Options{Hub: e.h, IoTHubHostname: iotHub, Listen: edge.Off, PlainListen: "127.0.0.1:0",
		MethodsListen: busy.Addr().String(), Certificate: e.sc.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.Start(); err == nil {
		ep.Close()
		t.Fatal("started with its configured methods address taken")
	}
	ep.Close()
}
