//go:build !linux

package workload

import "net"

// peerPID is Linux-only (SO_PEERCRED); elsewhere every caller is unknown
// and only the trust bundle is served.
func peerPID(net.Conn) (int, bool) { return 0, false }
