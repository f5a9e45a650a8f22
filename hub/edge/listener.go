package edge

import (
	"fmt"
	"net"
	"strings"

	"github.com/tinyedge/tinyedge/hub/internal/broker"
)

// connectWait is how long a new connection has to finish TLS and send
// CONNECT or, on the methods listener, its request's header.
const connectWait = broker.ConnectWait

// checkLoopback refuses a plain listener address that is not loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("plain listener %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("plain listener %q: an address without TLS must be a loopback address such as 127.0.0.1:1883 (clients on other hosts must use TLS)", addr)
	}
	return nil
}
