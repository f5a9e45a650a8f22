package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig returns the TLS configuration of an upstream connection: TLS
// 1.2 or later, the server verified against caFile's certificates (PEM)
// or, when caFile is empty, the system roots. certFile and keyFile, when
// given, are the X.509 client identity. insecure turns verification off;
// the link logs that loudly at every connect.
func TLSConfig(caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("upstream CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream CA file %s: no PEM certificate in it", caFile)
		}
		c.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("upstream X.509 identity: give both the certificate and the key")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream X.509 identity %s: %w", certFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
