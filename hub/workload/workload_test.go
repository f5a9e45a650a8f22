package workload

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCA is a throwaway certificate authority.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pem     []byte
	mu      sync.Mutex
	lastSAN []string
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test edge CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) TrustBundle() []byte { return ca.pem }

func (ca *testCA) IssueServerCert(cn string, sans []string, notAfter time.Time) ([]byte, []byte, error) {
	ca.mu.Lock()
	ca.lastSAN = sans
	ca.mu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     notAfter,
		DNSNames:     sans,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// callers maps pids to modules.
type callers map[int]string

func (c callers) Owner(pid int) (string, bool) { m, ok := c[pid]; return m, ok }

type fixture struct {
	ids    *identity.Store
	ca     *testCA
	client *http.Client
	sock   string
}

// serve starts a workload server on a unix socket in which this test
// process is the module me.
func serve(t *testing.T, me string, opts Options) *fixture {
	t.Helper()
	return serveTB(t, me, opts)
}

func serveTB(t testing.TB, me string, opts Options) *fixture {
	t.Helper()
	dir := t.TempDir()
	ids, err := identity.Open(filepath.Join(dir, "identities.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ids: ids, ca: newTestCA(t), sock: filepath.Join(dir, "workload.sock")}
	opts.DeviceID = "gw1"
	opts.Identities = ids
	if opts.Callers == nil {
		opts.Callers = callers{os.Getpid(): me}
	}
	if _, none := opts.CA.(noCA); none {
		opts.CA = nil
	} else if opts.CA == nil {
		opts.CA = f.ca
	}
	s := New(opts)
	l, err := Listen(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", f.sock)
	}}
	f.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return f
}

func (f *fixture) do(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, "http://workload"+path, rd)
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
	}
	return resp.StatusCode, out
}

func signPath(module, genid, version string) string {
	return fmt.Sprintf("/modules/%s/genid/%s/sign?api-version=%s", module, genid, version)
}

func TestSign(t *testing.T) {
	f := serve(t, "sensor", Options{})
	id, err := f.ids.Module("gw1", "sensor")
	if err != nil {
		t.Fatal(err)
	}
	// What the SDK signs: the URL-encoded resource, a newline, the expiry.
	data := []byte("hub.azure-devices.net%2Fdevices%2Fgw1%2Fmodules%2Fsensor\n1700000000")
	for _, v := range APIVersions {
		code, out := f.do(t, "POST", signPath("sensor", id.GenerationID, v), map[string]string{
			"keyId": "primary", "algo": "HMACSHA256", "data": base64.StdEncoding.EncodeToString(data),
		})
		mac := hmac.New(sha256.New, id.Key)
		mac.Write(data)
		want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if code != 200 || out["digest"] != want {
			t.Errorf("api-version %s: %d %v, want 200 digest %s", v, code, out, want)
		}
	}
}

func TestRefusals(t *testing.T) {
	f := serve(t, "sensor", Options{})
	id, _ := f.ids.Module("gw1", "sensor")
	other, _ := f.ids.Module("gw1", "other")
	good := map[string]string{"keyId": "primary", "algo": "HMACSHA256", "data": "aGVsbG8="}
	tests := []struct {
		name, method, path string
		body               any
		status             int
		msg                string
	}{
		{"another module's identity", "POST", signPath("other", other.GenerationID, "2018-06-28"), good, 403, `module "sensor" may not use the identity of module "other"`},
		{"stale genid", "POST", signPath("sensor", "612345", "2018-06-28"), good, 403, "not the current one"},
		{"unknown api-version", "POST", signPath("sensor", id.GenerationID, "2021-12-07"), good, 400, `api-version "2021-12-07" is not supported; this gateway serves 2018-06-28, 2019-01-30, 2020-07-07`},
		{"no api-version", "POST", "/modules/sensor/genid/" + id.GenerationID + "/sign", good, 400, "api-version is missing"},
		{"bad JSON", "POST", signPath("sensor", id.GenerationID, "2018-06-28"), `{"keyId":`, 400, "not the JSON object expected"},
		{"no body", "POST", signPath("sensor", id.GenerationID, "2018-06-28"), nil, 400, "no body"},
		{"bad base64", "POST", signPath("sensor", id.GenerationID, "2018-06-28"), map[string]string{"keyId": "primary", "algo": "HMACSHA256", "data": "@@"}, 400, "data is not base64"},
		{"bad algo", "POST", signPath("sensor", id.GenerationID, "2018-06-28"), map[string]string{"keyId": "primary", "algo": "MD5", "data": ""}, 400, `algo "MD5"`},
		{"secondary key", "POST", signPath("sensor", id.GenerationID, "2018-06-28"), map[string]string{"keyId": "secondary", "algo": "HMACSHA256", "data": ""}, 400, "one key per module"},
		{"wrong method", "GET", signPath("sensor", id.GenerationID, "2018-06-28"), nil, 405, "use POST"},
		{"unknown path", "GET", "/identities?api-version=2018-06-28", nil, 404, "no such workload API operation"},
		{"cert for another module", "POST", "/modules/other/genid/" + other.GenerationID + "/certificate/server?api-version=2019-01-30", map[string]string{"commonName": "x", "expiration": "2099-01-01T00:00:00Z"}, 403, "may not use"},
		{"cert in the past", "POST", "/modules/sensor/genid/" + id.GenerationID + "/certificate/server?api-version=2019-01-30", map[string]string{"commonName": "x", "expiration": "2001-01-01T00:00:00Z"}, 400, "not in the future"},
		{"cert bad expiration", "POST", "/modules/sensor/genid/" + id.GenerationID + "/certificate/server?api-version=2019-01-30", map[string]string{"commonName": "x", "expiration": "tomorrow"}, 400, "RFC 3339"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := f.do(t, tt.method, tt.path, tt.body)
			msg, _ := out["message"].(string)
			if code != tt.status || !strings.Contains(msg, tt.msg) {
				t.Errorf("got %d %q, want %d with %q", code, msg, tt.status, tt.msg)
			}
			if _, ok := out["digest"]; ok {
				t.Error("a refused request got a digest")
			}
		})
	}
}

func TestUnknownCaller(t *testing.T) {
	f := serve(t, "", Options{Callers: callers{}})
	id, _ := f.ids.Module("gw1", "sensor")
	code, out := f.do(t, "POST", signPath("sensor", id.GenerationID, "2018-06-28"), map[string]string{"keyId": "primary", "algo": "HMACSHA256", "data": ""})
	if code != 403 || !strings.Contains(out["message"].(string), fmt.Sprintf("process %d is not a module", os.Getpid())) {
		t.Errorf("got %d %v", code, out)
	}
	// The trust bundle is public.
	if code, _ := f.do(t, "GET", "/trust-bundle?api-version=2018-06-28", nil); code != 200 {
		t.Errorf("trust bundle for an unknown caller: %d", code)
	}
}

func TestRotatedIdentityRefusesOldGeneration(t *testing.T) {
	f := serve(t, "sensor", Options{})
	old, _ := f.ids.Module("gw1", "sensor")
	if err := f.ids.Remove("gw1", "sensor"); err != nil {
		t.Fatal(err)
	}
	cur, _ := f.ids.Module("gw1", "sensor")
	body := map[string]string{"keyId": "primary", "algo": "HMACSHA256", "data": ""}
	if code, _ := f.do(t, "POST", signPath("sensor", old.GenerationID, "2018-06-28"), body); code != 403 {
		t.Errorf("old generation: %d, want 403", code)
	}
	if code, _ := f.do(t, "POST", signPath("sensor", cur.GenerationID, "2018-06-28"), body); code != 200 {
		t.Errorf("new generation: %d, want 200", code)
	}
}

func TestTrustBundle(t *testing.T) {
	f := serve(t, "sensor", Options{})
	code, out := f.do(t, "GET", "/trust-bundle?api-version=2018-06-28", nil)
	if code != 200 || out["certificate"] != string(f.ca.pem) {
		t.Errorf("got %d %v", code, out)
	}
}

func TestNoCA(t *testing.T) {
	f := serve(t, "sensor", Options{CA: noCA{}})
	code, out := f.do(t, "GET", "/trust-bundle?api-version=2018-06-28", nil)
	if code != 503 || !strings.Contains(out["message"].(string), "no certificate authority") {
		t.Errorf("got %d %v", code, out)
	}
}

// noCA asks serve for a server without a CA (a nil CA gets the test CA).
type noCA struct{}

func (noCA) TrustBundle() []byte { return nil }
func (noCA) IssueServerCert(string, []string, time.Time) ([]byte, []byte, error) {
	return nil, nil, nil
}

func TestServerCert(t *testing.T) {
	now := time.Now()
	f := serve(t, "web", Options{MaxCertLifetime: 30 * 24 * time.Hour, Now: func() time.Time { return now }})
	id, _ := f.ids.Module("gw1", "web")
	code, out := f.do(t, "POST", "/modules/web/genid/"+id.GenerationID+"/certificate/server?api-version=2019-01-30",
		map[string]string{"commonName": "gw1.local", "expiration": now.Add(365 * 24 * time.Hour).UTC().Format(time.RFC3339)})
	if code != 201 {
		t.Fatalf("got %d %v", code, out)
	}
	pk, _ := out["privateKey"].(map[string]any)
	certPEM, _ := out["certificate"].(string)
	if pk["type"] != "key" {
		t.Errorf("privateKey.type = %v", pk["type"])
	}
	keyPEM, _ := pk["bytes"].(string)
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatalf("certificate and key do not pair: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	pool := x509.NewCertPool()
	pool.AddCert(f.ca.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "gw1.local"}); err != nil {
		t.Errorf("certificate does not verify for gw1.local against the trust bundle: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "web"}); err != nil {
		t.Errorf("certificate does not name the module: %v", err)
	}
	// The lifetime is capped, and the answer says so.
	exp, err := time.Parse(time.RFC3339, out["expiration"].(string))
	if err != nil || exp.After(now.Add(30*24*time.Hour)) || !exp.Equal(leaf.NotAfter) {
		t.Errorf("expiration %v (%v), certificate NotAfter %v; want at most 30 days", out["expiration"], err, leaf.NotAfter)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// A live socket is not taken over.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another server") {
		t.Errorf("Listen on a live socket: %v", err)
	}
	// A stale one (left by a crash) is.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l2.Close()
	// A path too long for a unix socket is refused with a reason.
	if _, err := Listen("/" + strings.Repeat("d", 120) + "/w.sock"); err == nil || !strings.Contains(err.Error(), "a unix socket's may be 107") {
		t.Errorf("Listen on a long path: %v", err)
	}
	// A regular file is not removed.
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file: %v", err)
	}
}

// requestTests seed the fuzzer and check the decoder alone.
var requestTests = []struct {
	method, path, query, body string
	status                    int // 0: accepted
}{
	{"GET", "/trust-bundle", "api-version=2018-06-28", "", 0},
	{"POST", "/modules/m/genid/1/sign", "api-version=2018-06-28", `{"keyId":"primary","algo":"HMACSHA256","data":"aGk="}`, 0},
	{"POST", "/modules/m%3Ax/genid/1/sign", "api-version=2020-07-07", `{"keyId":"primary","algo":"hmacsha256","data":""}`, 0},
	{"POST", "/modules/m/genid/1/certificate/server", "api-version=2019-01-30", `{"commonName":"a","expiration":"2030-01-01T00:00:00Z"}`, 0},
	{"POST", "/modules//genid/1/sign", "api-version=2018-06-28", `{}`, 400},
	{"POST", "/modules/m/genid/1/sign", "api-version=2018-06-28", `[]`, 400},
	{"POST", "/modules/m/genid/1/sign", "api-version=2018-06-28", `{"keyId":"primary","algo":"HMACSHA256","data":"aGk="} x`, 400},
	{"POST", "/modules/m/genid/1/sign", "api-version=%zz", `{}`, 400},
	{"POST", "/modules/m%zz/genid/1/sign", "api-version=2018-06-28", `{}`, 400},
	{"POST", "/modules/m/genid/1/certificate/server", "api-version=2019-01-30", `{"commonName":"","expiration":"2030-01-01T00:00:00Z"}`, 400},
	{"POST", "/modules/m/genid/1/certificate/client", "api-version=2019-01-30", `{}`, 404},
	{"PUT", "/trust-bundle", "api-version=2018-06-28", "", 405},
}

func TestParseRequest(t *testing.T) {
	for _, tt := range requestTests {
		_, e := parseRequest(tt.method, tt.path, tt.query, []byte(tt.body))
		got := 0
		if e != nil {
			got = e.status
		}
		if got != tt.status {
			t.Errorf("%s %s?%s %s: status %d (%v), want %d", tt.method, tt.path, tt.query, tt.body, got, e, tt.status)
		}
	}
}

// FuzzParseRequest checks that decoding never panics, and that an
// accepted request is complete.
func FuzzParseRequest(f *testing.F) {
	for _, tt := range requestTests {
		f.Add(tt.method, tt.path, tt.query, []byte(tt.body))
	}
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		r, e := parseRequest(method, path, query, body)
		if e != nil {
			if e.status < 400 || e.status > 499 || e.msg == "" {
				t.Fatalf("error %v: want a 4xx status and a message", e)
			}
			return
		}
		if r.apiVersion == "" || r.op == 0 {
			t.Fatalf("accepted request without api-version or operation: %+v", r)
		}
		if r.op != opTrustBundle && (r.module == "" || r.genID == "") {
			t.Fatalf("accepted request without module or generation: %+v", r)
		}
		if r.op == opServerCert && (r.commonName == "" || r.expiration.IsZero()) {
			t.Fatalf("accepted certificate request without name or expiration: %+v", r)
		}
	})
}
