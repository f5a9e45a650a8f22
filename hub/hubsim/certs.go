package hubsim

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tinyedge/tinyedge/hub/certs"
)

// The CA's files in the data directory: ca.pem is what clients trust.
const (
	caFile    = "ca.pem"
	caKeyFile = "ca-key.pem"
)

// oldServerFiles held the server certificate before hubsim issued it in
// memory at each start; New deletes them so nobody mistakes them for the
// one in use.
var oldServerFiles = []string{"server.pem", "server-key.pem"}

// openCerts opens (or creates) the CA in dir and issues a server
// certificate for hostname, localhost, 127.0.0.1 and ::1.
func openCerts(dir, hostname string) (*certs.Authority, *certs.ServerCert, error) {
	ca, err := certs.Open(dir, &certs.Options{CommonName: "tinyedge hubsim CA", CertFile: caFile, KeyFile: caKeyFile})
	if err != nil {
		return nil, nil, err
	}
	sc, err := ca.NewServerCert(certs.ServerOptions{Hostname: hostname})
	if err != nil {
		return nil, nil, err
	}
	for _, f := range oldServerFiles {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("remove the old server certificate: %w", err)
		}
	}
	return ca, sc, nil
}
