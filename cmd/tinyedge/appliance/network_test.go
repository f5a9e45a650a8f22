package appliance

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

type fakeNet struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeNet) up(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "up "+name)
	return nil
}

func (f *fakeNet) setAddr(name string, c addrConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("addr %s %s via %s", name, c.Prefix, c.Gateway))
	return nil
}

func TestNetworkStatic(t *testing.T) {
	m := &Machine{Sys: &fakeSys{}, Root: t.TempDir()}
	ops := &fakeNet{}
	n := &Network{Machine: m, ops: ops}
	err := n.Start(context.Background(), []Interface{{Name: "eth0", Address: "192.168.7.2/24", Gateway: "192.168.7.1", DNS: []string{"192.168.7.1", "9.9.9.9"}}})
	if err != nil {
		t.Fatal(err)
	}
	n.Wait()
	want := []string{"up lo", "up eth0", "addr eth0 192.168.7.2/24 via 192.168.7.1"}
	if !slices.Equal(ops.calls, want) {
		t.Errorf("calls %q, want %q", ops.calls, want)
	}
	b, _ := os.ReadFile(m.path("/etc/resolv.conf"))
	if !strings.Contains(string(b), "nameserver 192.168.7.1\n") || !strings.Contains(string(b), "nameserver 9.9.9.9\n") {
		t.Errorf("resolv.conf:\n%s", b)
	}
}

func TestNetworkReportsBadStaticSettings(t *testing.T) {
	n := &Network{Machine: &Machine{Sys: &fakeSys{}, Root: t.TempDir()}, ops: &fakeNet{}}
	err := n.Start(context.Background(), []Interface{{Name: "eth1", Address: "192.168.7.2"}, {Name: "eth2", Address: "10.0.0.2/8", Gateway: "192.168.1.1"}})
	if err == nil || !strings.Contains(err.Error(), "interface eth1: address") || !strings.Contains(err.Error(), "interface eth2: gateway") {
		t.Errorf("err = %v, want both interfaces' problems", err)
	}
}

func TestStaticConfig(t *testing.T) {
	tests := []struct {
		in   Interface
		want string
		err  bool
	}{
		{Interface{Name: "e", Address: "10.0.0.5/8"}, "10.0.0.5/8 invalid IP []", false},
		{Interface{Name: "e", Address: "10.0.0.5/8", Gateway: "10.0.0.1", DNS: []string{"1.1.1.1"}}, "10.0.0.5/8 10.0.0.1 [1.1.1.1]", false},
		{Interface{Name: "e", Address: "10.0.0.5/33"}, "", true},
		{Interface{Name: "e", Address: "10.0.0.5/8", DNS: []string{"dns.example"}}, "", true},
	}
	for i, tt := range tests {
		c, err := staticConfig(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%d: err = %v", i, err)
			continue
		}
		if got := fmt.Sprintf("%s %s %v", c.Prefix, c.Gateway, c.DNS); !tt.err && got != tt.want {
			t.Errorf("%d: got %s, want %s", i, got, tt.want)
		}
	}
}

func TestLeaseConfig(t *testing.T) {
	// What QEMU's user network hands out.
	ack, err := dhcpv4.New(
		dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithNetmask(net.IPv4Mask(255, 255, 255, 0)),
		dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithDNS(net.IPv4(10, 0, 2, 3)),
		dhcpv4.WithLeaseTime(86400),
	)
	if err != nil {
		t.Fatal(err)
	}
	c, err := leaseConfig(ack)
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefix != netip.MustParsePrefix("10.0.2.15/24") || c.Gateway != netip.MustParseAddr("10.0.2.2") ||
		!slices.Equal(c.DNS, []netip.Addr{netip.MustParseAddr("10.0.2.3")}) || c.Lease != 24*time.Hour {
		t.Errorf("got %+v", c)
	}
	empty, _ := dhcpv4.New()
	if _, err := leaseConfig(empty); err == nil {
		t.Error("a lease without an address was taken")
	}
}
