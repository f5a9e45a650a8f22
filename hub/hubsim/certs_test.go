package hubsim

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// handshake connects to the MQTT listener with ServerName name, trusting
// only the CA in caPath, and returns the TLS outcome.
func handshake(t *testing.T, s *Sim, caPath, name string) error {
	t.Helper()
	b, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no PEM certificate", caPath)
	}
	c, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: pool, ServerName: name})
	if err != nil {
		return err
	}
	return c.Close()
}

// Clients that trust <dataDir>/ca.pem reach the hub by its host name and
// by the loopback names, and the next hubsim on the directory has the
// same CA.
func TestServerCertificate(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", Hostname: "hub.test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	caPath := filepath.Join(dir, caFile)
	if got, err := os.ReadFile(caPath); err != nil || !bytes.Equal(got, s.CAPEM()) {
		t.Fatalf("%s: %v; want CAPEM", caFile, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, caKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, %v; want mode 0600", caKeyFile, fi, err)
	}
	for _, name := range []string{"hub.test", "localhost", "127.0.0.1", "::1"} {
		if err := handshake(t, s, caPath, name); err != nil {
			t.Errorf("TLS to %s: %v", name, err)
		}
	}
	if err := handshake(t, s, caPath, "other.test"); err == nil {
		t.Error("TLS verified for a name the certificate was not issued for")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", Hostname: "other.test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s2.CAPEM(), s.CAPEM()) {
		t.Fatal("a restart made a new CA")
	}
	if err := handshake(t, s2, caPath, "other.test"); err != nil {
		t.Errorf("TLS to the new host name after a restart: %v", err)
	}
}

// testdata/olddatadir was written by hubsim before it used hub/certs
// (ca.pem, ca-key.pem, server.pem, server-key.pem): its CA stays, so
// clients that trust its ca.pem still connect, and the server certificate
// files it no longer uses are gone.
func TestOldDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/olddatadir")); err != nil {
		t.Fatal(err)
	}
	oldCA, err := os.ReadFile(filepath.Join("testdata/olddatadir", caFile))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.CAPEM(), oldCA) {
		t.Fatal("the CA of an old data directory was replaced")
	}
	if err := handshake(t, s, filepath.Join("testdata/olddatadir", caFile), "localhost"); err != nil {
		t.Errorf("TLS trusting the old ca.pem: %v", err)
	}
	for _, f := range oldServerFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left in the data directory: %v", f, err)
		}
	}
}
