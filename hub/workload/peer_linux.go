package workload

import (
	"net"
	"syscall"
)

// peerPID returns the process id of the other end of a unix socket
// connection, as the kernel recorded it when that process connected.
func peerPID(c net.Conn) (int, bool) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *syscall.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err != nil || cerr != nil || cred.Pid <= 0 {
		return 0, false
	}
	return int(cred.Pid), true
}
