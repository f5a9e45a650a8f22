package appliance

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// sntpServer answers on 127.0.0.1 with its clock off by skew.
func sntpServer(t *testing.T, skew time.Duration, mangle func([]byte)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < ntpPacketSize {
				continue
			}
			now := time.Now().Add(skew)
			r := make([]byte, ntpPacketSize)
			r[0] = 0<<6 | 4<<3 | ntpModeServer
			r[1] = 2
			copy(r[24:32], buf[40:48]) // originate = the client's transmit
			binary.BigEndian.PutUint64(r[32:], toNTP(now))
			binary.BigEndian.PutUint64(r[40:], toNTP(now))
			if mangle != nil {
				mangle(r)
			}
			pc.WriteTo(r, addr)
		}
	}()
	return pc.LocalAddr().String()
}

func TestQuerySNTP(t *testing.T) {
	for _, skew := range []time.Duration{0, 90 * time.Minute, -3 * time.Hour} {
		addr := sntpServer(t, skew, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		off, err := QuerySNTP(ctx, addr)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if d := off - skew; d > time.Second || d < -time.Second {
			t.Errorf("offset %v, want %v", off, skew)
		}
	}
}

func TestQuerySNTPRefusesAnUnsyncedServer(t *testing.T) {
	addr := sntpServer(t, 0, func(r []byte) { r[1] = 0 }) // kiss-o'-death
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := QuerySNTP(ctx, addr); !errors.Is(err, ErrNTPReply) {
		t.Errorf("err = %v, want ErrNTPReply", err)
	}
}

func TestQuerySNTPIgnoresForeignReplies(t *testing.T) {
	addr := sntpServer(t, 0, func(r []byte) { r[24] ^= 0xff }) // not our cookie
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := QuerySNTP(ctx, addr); err == nil {
		t.Error("a reply to someone else's request was taken")
	}
}

func TestNTPTimestamps(t *testing.T) {
	for _, want := range []time.Time{time.Unix(0, 0), time.Date(2026, 11, 25, 19, 0, 0, 123456789, time.UTC)} {
		got := fromNTP(toNTP(want))
		if d := got.Sub(want); d > time.Microsecond || d < -time.Microsecond {
			t.Errorf("round trip of %v gave %v", want, got)
		}
	}
}

func sntpPacket(li, vn, mode, stratum byte, xmit uint64) []byte {
	b := make([]byte, ntpPacketSize)
	b[0] = li<<6 | vn<<3 | mode
	b[1] = stratum
	binary.BigEndian.PutUint64(b[40:], xmit)
	return b
}

var sntpTable = []struct {
	in []byte
	ok bool
}{
	{sntpPacket(0, 4, 4, 2, toNTP(time.Now())), true},
	{sntpPacket(0, 3, 4, 1, toNTP(time.Now())), true},
	{sntpPacket(3, 4, 4, 2, toNTP(time.Now())), false}, // unsynchronized
	{sntpPacket(0, 4, 3, 2, toNTP(time.Now())), false}, // a client's packet
	{sntpPacket(0, 4, 4, 0, toNTP(time.Now())), false}, // kiss-o'-death
	{sntpPacket(0, 4, 4, 2, 0), false},
	{make([]byte, 47), false},
}

func TestParseSNTP(t *testing.T) {
	for i, tt := range sntpTable {
		if _, err := parseSNTP(tt.in); (err == nil) != tt.ok {
			t.Errorf("%d: err = %v, want ok %v", i, err, tt.ok)
		}
	}
}

func FuzzParseSNTP(f *testing.F) {
	for _, tt := range sntpTable {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseSNTP(b)
		if err == nil && (r.Stratum == 0 || r.Stratum > 15 || b[0]&7 != ntpModeServer) {
			t.Fatalf("accepted %x", b)
		}
	})
}
