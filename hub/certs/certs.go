// Package certs is tinyedge's device CA: an ECDSA P-256 certificate
// authority kept in the data directory, the trust bundle modules and leaf
// devices verify the gateway with, and the server certificates it issues —
// the local MQTT endpoint's, renewed well before they expire without
// dropping connected clients (ServerCert.GetCertificate), and the ones the
// workload API hands to modules (IssueServerCert).
//
// # Caveats
//
//   - The CA itself lives ten years and is not renewed; delete its files
//     to make a new one (every module and leaf device then needs the new
//     trust bundle).
//   - A clock that reads earlier than the real time (no RTC, before NTP)
//     issues certificates whose validity starts and ends early; the
//     renewal loop reads the clock again at least hourly and reissues as
//     soon as the certificate looks due.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names in the directory given to Open, unless Options name others.
const (
	CAFile    = "device-ca.pem"
	CAKeyFile = "device-ca.key.pem"
)

// CALifetime is how long a new device CA is valid.
const CALifetime = 10 * 365 * 24 * time.Hour

// Authority is the device CA.
type Authority struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	pem   []byte
	now   func() time.Time
	files string
}

// Options configure Open. A nil *Options means defaults.
type Options struct {
	// CommonName of a new CA; default "tinyedge device CA".
	CommonName string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// CertFile and KeyFile name the CA certificate and key in the
	// directory; default CAFile and CAKeyFile. For a directory whose
	// clients already trust a CA under another name (hubsim's ca.pem).
	CertFile, KeyFile string
}

// Open loads the device CA from dir, or creates it there (key mode 0600)
// when dir holds none. A CA certificate without its key, or the reverse,
// is an error rather than silently replaced: modules trust the old one.
func Open(dir string, opts *Options) (*Authority, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CommonName == "" {
		o.CommonName = "tinyedge device CA"
	}
	if o.CertFile == "" {
		o.CertFile = CAFile
	}
	if o.KeyFile == "" {
		o.KeyFile = CAKeyFile
	}
	certPath, keyPath := filepath.Join(dir, o.CertFile), filepath.Join(dir, o.KeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		a, err := parseAuthority(certPEM, keyPEM, o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("device CA in %s: %w", dir, err)
		}
		a.now, a.files = o.Now, dir
		return a, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("device CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("device CA: %w", keyErr)
	default:
		return nil, fmt.Errorf("device CA in %s: one of %s and %s is missing; restore it, or delete both to make a new CA", dir, o.CertFile, o.KeyFile)
	}
	a, certPEM, keyPEM, err := newAuthority(o.CommonName, o.Now(), o.CertFile, o.KeyFile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("device CA: %w", err)
	}
	// The key first: a certificate without its key is refused above, a
	// key without its certificate too, but writing the key last would
	// leave a window where the certificate is there and the key is not.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("device CA: %w", err)
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("device CA: %w", err)
	}
	a.now, a.files = o.Now, dir
	return a, nil
}

// writeFile writes data to path through a temporary file and a rename,
// synced, so a power cut leaves the old file or the new one.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func newAuthority(cn string, now time.Time, certFile, keyFile string) (*Authority, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("device CA: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("device CA: create certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("device CA: encode key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	a, err := parseAuthority(certPEM, keyPEM, certFile, keyFile)
	return a, certPEM, keyPEM, err
}

// parseAuthority parses the CA's PEM files; certFile and keyFile name
// them in errors.
func parseAuthority(certPEM, keyPEM []byte, certFile, keyFile string) (*Authority, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("%s holds no PEM key", keyFile)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not belong to %s", keyFile, certFile)
	}
	return &Authority{cert: cert, key: key, pem: pem.EncodeToMemory(cb)}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("certs: read random serial: %v", err))
	}
	return n
}

// CAPEM is the trust bundle: the CA certificate, PEM encoded.
func (a *Authority) CAPEM() []byte { return append([]byte(nil), a.pem...) }

// TrustBundle is CAPEM, under the name the workload API's CA interface
// (hub/workload) asks for.
func (a *Authority) TrustBundle() []byte { return a.CAPEM() }

// Certificate is the CA certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// Pool is a certificate pool holding the CA, for clients in tests and
// tools.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.cert)
	return p
}

// WriteTrustBundle writes the CA certificate to path (mode 0644), for
// modules and leaf devices to trust.
func (a *Authority) WriteTrustBundle(path string) error {
	if err := writeFile(path, a.pem, 0o644); err != nil {
		return fmt.Errorf("write trust bundle: %w", err)
	}
	return nil
}

// IssueServerCert issues a TLS server certificate for commonName and
// sans (host names and IP addresses; commonName is added to them), valid
// from an hour ago until expiry, with a new ECDSA P-256 key. It returns
// the certificate followed by the CA (the chain a client needs) and the
// key, both PEM.
func (a *Authority) IssueServerCert(commonName string, sans []string, expiry time.Time) (certPEM, keyPEM []byte, err error) {
	c, err := a.issue(commonName, sans, expiry)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, nil, fmt.Errorf("issue server certificate for %s: encode key: %w", commonName, err)
	}
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

func (a *Authority) issue(commonName string, sans []string, expiry time.Time) (*tls.Certificate, error) {
	if commonName == "" {
		return nil, errors.New("issue server certificate: empty common name")
	}
	now := a.now()
	if !expiry.After(now) {
		return nil, fmt.Errorf("issue server certificate for %s: expiry %s is not in the future", commonName, expiry.Format(time.RFC3339))
	}
	if expiry.After(a.cert.NotAfter) {
		expiry = a.cert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate for %s: generate key: %w", commonName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     expiry,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, n := range append([]string{commonName}, sans...) {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate for %s: %w", commonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate for %s: %w", commonName, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, a.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
