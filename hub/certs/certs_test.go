package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub/certs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpenCreatesAndReloads(t *testing.T) {
	dir := t.TempDir()
	a, err := certs.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := certs.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.CAPEM(), b.CAPEM()) {
		t.Fatal("reopening made a new CA")
	}
	if !a.Certificate().IsCA {
		t.Fatal("CA certificate is not a CA")
	}
	bundle := filepath.Join(dir, "bundle.pem")
	if err := a.WriteTrustBundle(bundle); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(bundle); !bytes.Equal(got, a.CAPEM()) {
		t.Fatal("trust bundle is not the CA PEM")
	}
}

func TestOpenRefusesHalfACA(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, certs.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Open(dir, nil); err == nil {
		t.Fatal("Open with the key missing made a new CA instead of refusing")
	}
	other := t.TempDir()
	if _, err := certs.Open(other, nil); err != nil {
		t.Fatal(err)
	}
	// A key that is not the certificate's.
	k, _ := os.ReadFile(filepath.Join(other, certs.CAKeyFile))
	if err := os.WriteFile(filepath.Join(dir, certs.CAKeyFile), k, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Open(dir, nil); err == nil {
		t.Fatal("Open accepted a key that does not belong to the certificate")
	}
}

func TestIssueServerCert(t *testing.T) {
	a, err := certs.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := a.IssueServerCert("gw1.local", []string{"10.0.0.5", "gw1"}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gw1.local", "gw1", "10.0.0.5"} {
		if _, err := c.Verify(x509.VerifyOptions{DNSName: name, Roots: a.Pool()}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "other", Roots: a.Pool()}); err == nil {
		t.Error("certificate verifies for a name it was not issued for")
	}
	if _, _, err := a.IssueServerCert("x", nil, time.Now().Add(-time.Second)); err == nil {
		t.Error("issued a certificate that expired already")
	}
}

func TestServerCertRenews(t *testing.T) {
	a, err := certs.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := a.NewServerCert(certs.ServerOptions{Hostname: "gw1", Lifetime: 3 * time.Second, RenewBefore: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	first := sc.Current()
	for _, name := range []string{"gw1", "localhost", "127.0.0.1"} {
		if _, err := first.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: a.Pool()}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	renewed := make(chan *tls.Certificate, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc.Run(ctx, func(c *tls.Certificate) {
			select {
			case renewed <- c:
			default:
			}
		}, func(err error) { t.Error(err) })
	}()
	defer wg.Wait()
	defer cancel()
	select {
	case c := <-renewed:
		if c.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
			t.Fatal("renewal kept the same certificate")
		}
		got, _ := sc.GetCertificate(nil)
		if got.Leaf.NotAfter.Before(first.Leaf.NotAfter) {
			t.Fatal("GetCertificate still gives the old certificate")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no renewal within 20 s of a certificate due after 1 s")
	}
}

// A directory whose clients trust the CA under other names (hubsim's
// ca.pem) keeps them: Open writes and reloads those files only, and its
// errors name them.
func TestOpenFileNames(t *testing.T) {
	dir := t.TempDir()
	opts := &certs.Options{CommonName: "test CA", CertFile: "ca.pem", KeyFile: "ca-key.pem"}
	a, err := certs.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "ca.pem")); err != nil || !bytes.Equal(got, a.CAPEM()) {
		t.Fatalf("ca.pem: %v; want the CA PEM", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca-key.pem: %v, %v; want mode 0600", fi, err)
	}
	for _, f := range []string{certs.CAFile, certs.CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s written although the options name other files", f)
		}
	}
	if got := a.Certificate().Subject.CommonName; got != "test CA" {
		t.Errorf("common name %q, want %q", got, "test CA")
	}
	b, err := certs.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.CAPEM(), b.CAPEM()) {
		t.Fatal("reopening with the same file names made a new CA")
	}
	if err := os.Remove(filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	_, err = certs.Open(dir, opts)
	if err == nil || !strings.Contains(err.Error(), "ca-key.pem") {
		t.Fatalf("Open with ca-key.pem missing: %v; want an error naming ca-key.pem", err)
	}
}
