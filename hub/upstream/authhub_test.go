package upstream_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	localbroker "github.com/tinyedge/tinyedge/hub/internal/broker"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// authHub is an MQTT broker (mochi-mqtt, in process) that checks CONNECTs
// as IoT Hub does: the user name names the hub and the identity, the
// password is a SAS token for that identity signed with its key and not
// expired. Clients with an id starting "test-" are let in as they are.
type authHub struct {
	srv  *mqtt.Server
	addr string
	host string

	mu       sync.Mutex
	keys     map[string][]byte // by client id: device or device/module
	accepted map[string]int
	refused  map[string]int
	reasons  []string
}

type authHook struct {
	mqtt.HookBase
	a *authHub
}

func (h *authHook) ID() string { return "iothub-sas" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	// An X.509 identity: a client certificate named after the client id,
	// signed by the CA the listener trusts, and no password.
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok && len(pk.Connect.Password) == 0 {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			h.a.mu.Lock()
			defer h.a.mu.Unlock()
			if certs[0].Subject.CommonName == pk.Connect.ClientIdentifier {
				h.a.accepted[pk.Connect.ClientIdentifier]++
				return true
			}
			h.a.refused[pk.Connect.ClientIdentifier]++
			return false
		}
	}
	return h.a.check(pk.Connect.ClientIdentifier, string(pk.Connect.Username), string(pk.Connect.Password))
}

func (h *authHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (a *authHub) check(clientID, username, password string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(clientID) > 5 && clientID[:5] == "test-" {
		return true
	}
	refuse := func(why string) bool {
		a.refused[clientID]++
		a.reasons = append(a.reasons, why)
		return false
	}
	u, err := iothub.ParseUsername(username)
	if err != nil {
		return refuse(err.Error())
	}
	key, ok := a.keys[clientID]
	if !ok {
		return refuse("unknown identity " + clientID)
	}
	if u.Host != a.host {
		return refuse("user name names host " + u.Host)
	}
	tok, err := iothub.ParseToken(password)
	if err != nil {
		return refuse(err.Error())
	}
	if tok.Resource != iothub.Resource(a.host, u.DeviceID, u.ModuleID) {
		return refuse("token for " + tok.Resource)
	}
	if err := tok.Verify(key, time.Now()); err != nil {
		return refuse(err.Error())
	}
	a.accepted[clientID]++
	return true
}

// startAuthHub starts the broker on 127.0.0.1 and a free port, with TLS
// when cfg is not nil.
func startAuthHub(t testing.TB, host string, keys map[string][]byte, cfg *tls.Config) *authHub {
	t.Helper()
	a := &authHub{host: host, keys: keys, accepted: map[string]int{}, refused: map[string]int{}}
	a.srv = mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.DiscardHandler)})
	if err := a.srv.AddHook(&authHook{a: a}, nil); err != nil {
		t.Fatal(err)
	}
	// localbroker.Listener, not mochi's TCP listener: closing that one can
	// deadlock (mochi-mqtt/server issue 488) and hung this package once.
	ln := localbroker.NewListener("t", "127.0.0.1:0", cfg, nil, nil)
	if err := a.srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Address()
	if err := a.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.srv.Close() })
	return a
}

func (a *authHub) counts(id string) (accepted, refused int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.accepted[id], a.refused[id]
}

// testPKI is a CA and a server certificate it signed.
type testPKI struct {
	caPEM  []byte
	caFile string
	server tls.Certificate
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// client issues a client certificate for cn and writes it and its key
// as PEM files, returning their paths.
func (p *testPKI) client(t testing.TB, cn string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	name := strings.ReplaceAll(cn, "/", "_")
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// newPKI makes a CA and a server certificate for the given DNS names and
// IPs, valid now.
func newPKI(t testing.TB, dns []string, ips []net.IP) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: dns, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	p.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	p.ca, p.caKey = caCert, caKey
	p.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p.caFile, p.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
