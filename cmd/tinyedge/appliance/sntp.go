package appliance

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// SNTP (RFC 4330): one 48-byte request, one 48-byte reply. Timestamps
// are 32.32 fixed-point seconds since 1900.
const (
	ntpPacketSize = 48
	ntpEpochDelta = 2208988800 // seconds from 1900 to 1970
	ntpVersion    = 4
	ntpModeClient = 3
	ntpModeServer = 4
)

// ErrNTPReply means a server's reply cannot be used.
var ErrNTPReply = errors.New("sntp: unusable reply")

func toNTP(t time.Time) uint64 {
	ns := t.UnixNano()
	secs := uint64(ns/1e9) + ntpEpochDelta
	frac := (uint64(ns%1e9) << 32) / 1e9
	return secs<<32 | frac
}

func fromNTP(v uint64) time.Time {
	secs := int64(v>>32) - ntpEpochDelta
	nanos := int64((v & 0xffffffff) * 1e9 >> 32)
	return time.Unix(secs, nanos)
}

// sntpRequest builds a client request whose transmit timestamp is the
// random cookie xmit (RFC 4330 §3 allows any value; a random one guards
// against forged replies), returned as the reply's originate timestamp.
func sntpRequest(xmit uint64) []byte {
	b := make([]byte, ntpPacketSize)
	b[0] = ntpVersion<<3 | ntpModeClient
	binary.BigEndian.PutUint64(b[40:], xmit)
	return b
}

// sntpReply is what a server's answer says.
type sntpReply struct {
	Stratum   uint8
	Originate uint64
	Receive   time.Time // T2: the request reached the server
	Transmit  time.Time // T3: the reply left it
}

// parseSNTP checks and reads a server reply.
func parseSNTP(b []byte) (sntpReply, error) {
	if len(b) < ntpPacketSize {
		return sntpReply{}, fmt.Errorf("%w: %d bytes, want %d", ErrNTPReply, len(b), ntpPacketSize)
	}
	li, vn, mode := b[0]>>6, b[0]>>3&7, b[0]&7
	r := sntpReply{
		Stratum:   b[1],
		Originate: binary.BigEndian.Uint64(b[24:]),
		Receive:   fromNTP(binary.BigEndian.Uint64(b[32:])),
		Transmit:  fromNTP(binary.BigEndian.Uint64(b[40:])),
	}
	switch {
	case mode != ntpModeServer:
		return r, fmt.Errorf("%w: mode %d, want %d (server)", ErrNTPReply, mode, ntpModeServer)
	case vn < 1 || vn > 4:
		return r, fmt.Errorf("%w: version %d", ErrNTPReply, vn)
	case li == 3:
		return r, fmt.Errorf("%w: the server's clock is not synchronized (leap indicator 3)", ErrNTPReply)
	case r.Stratum == 0 || r.Stratum > 15:
		return r, fmt.Errorf("%w: stratum %d (kiss-o'-death or unsynchronized)", ErrNTPReply, r.Stratum)
	case binary.BigEndian.Uint64(b[40:]) == 0:
		return r, fmt.Errorf("%w: no transmit timestamp", ErrNTPReply)
	}
	return r, nil
}

// QuerySNTP asks server (host:port, port 123 if left out) for the time
// and returns the local clock's offset: add it to time.Now().
func QuerySNTP(ctx context.Context, server string) (time.Duration, error) {
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "123")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return 0, fmt.Errorf("sntp %s: %w", server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var cookie [8]byte
	rand.Read(cookie[:])
	xmit := binary.BigEndian.Uint64(cookie[:])
	t1 := time.Now()
	if _, err := conn.Write(sntpRequest(xmit)); err != nil {
		return 0, fmt.Errorf("sntp %s: %w", server, err)
	}
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return 0, fmt.Errorf("sntp %s: %w", server, err)
		}
		t4 := time.Now()
		r, err := parseSNTP(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("sntp %s: %w", server, err)
		}
		if r.Originate != xmit {
			continue // not the answer to our request
		}
		// Offset = ((T2 - T1) + (T3 - T4)) / 2, with T1 and T4 read from
		// the monotonic clock's wall reading at send and receive.
		return (r.Receive.Sub(t1) + r.Transmit.Sub(t4)) / 2, nil
	}
}
