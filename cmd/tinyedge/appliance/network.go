package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// Interface is how one network interface is configured: by DHCP, or with
// a static address, gateway and name servers.
type Interface struct {
	Name    string
	DHCP    bool
	Address string // CIDR, e.g. 192.168.1.10/24 (static only)
	Gateway string // e.g. 192.168.1.1 (static only; optional)
	DNS     []string
}

// addrConfig is what gets applied to an interface, from the static
// settings or from a DHCP lease.
type addrConfig struct {
	Prefix  netip.Prefix
	Gateway netip.Addr // invalid for none
	DNS     []netip.Addr
	Lease   time.Duration // 0 for static
}

// staticConfig checks and converts static settings.
func staticConfig(i Interface) (addrConfig, error) {
	var c addrConfig
	p, err := netip.ParsePrefix(i.Address)
	if err != nil {
		return c, fmt.Errorf("interface %s: address %q: want an address with its prefix length, such as 192.168.1.10/24", i.Name, i.Address)
	}
	c.Prefix = p
	if i.Gateway != "" {
		gw, err := netip.ParseAddr(i.Gateway)
		if err != nil || !p.Masked().Contains(gw) {
			return c, fmt.Errorf("interface %s: gateway %q: want an address inside %s", i.Name, i.Gateway, p.Masked())
		}
		c.Gateway = gw
	}
	for _, d := range i.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return c, fmt.Errorf("interface %s: dns %q: want an IP address", i.Name, d)
		}
		c.DNS = append(c.DNS, a)
	}
	return c, nil
}

// leaseConfig reads what a DHCP acknowledgement assigns.
func leaseConfig(ack *dhcpv4.DHCPv4) (addrConfig, error) {
	var c addrConfig
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return c, errors.New("dhcp: the lease assigns no address")
	}
	bits := 24
	if m := ack.SubnetMask(); m != nil {
		if ones, size := m.Size(); size == 32 {
			bits = ones
		}
	}
	c.Prefix = netip.PrefixFrom(ip, bits)
	if rs := ack.Router(); len(rs) > 0 {
		if gw, ok := netip.AddrFromSlice(rs[0].To4()); ok {
			c.Gateway = gw
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			c.DNS = append(c.DNS, a)
		}
	}
	c.Lease = ack.IPAddressLeaseTime(time.Hour)
	return c, nil
}

// netOps is the netlink side of the configuration, faked in tests.
type netOps interface {
	up(name string) error
	setAddr(name string, c addrConfig) error
}

type realNet struct{}

func (realNet) up(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("interface %s: up: %w", name, err)
	}
	return nil
}

func (realNet) setAddr(name string, c addrConfig) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(c.Prefix.Bits(), 32)}}
	if c.Lease > 0 {
		addr.ValidLft, addr.PreferedLft = int(c.Lease/time.Second), int(c.Lease/time.Second)
	}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("interface %s: address %s: %w", name, c.Prefix, err)
	}
	if c.Gateway.IsValid() {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: c.Gateway.AsSlice()}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("interface %s: default route via %s: %w", name, c.Gateway, err)
		}
	}
	return nil
}

// Network configures the network interfaces: the loopback, static
// addresses, and DHCP leases kept renewed by one goroutine per interface.
// Name servers go to /etc/resolv.conf.
type Network struct {
	Machine *Machine
	Logger  *slog.Logger
	ops     netOps
	mu      sync.Mutex
	dns     map[string][]netip.Addr
	wg      sync.WaitGroup
}

// Start brings the interfaces up and configures the static ones; DHCP
// runs in goroutines that retry until they get a lease and renew it at
// half its time, until ctx ends (Wait waits for them). It returns the
// problems of the static settings and of interfaces that are missing.
func (n *Network) Start(ctx context.Context, ifaces []Interface) error {
	if n.ops == nil {
		n.ops = realNet{}
	}
	if n.Logger == nil {
		n.Logger = slog.New(slog.DiscardHandler)
	}
	n.dns = map[string][]netip.Addr{}
	var errs []error
	if err := n.ops.up("lo"); err != nil {
		errs = append(errs, err)
	}
	for _, i := range ifaces {
		if !i.DHCP {
			c, err := staticConfig(i)
			if err == nil {
				err = n.apply(i.Name, c)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			n.Logger.Info("network", "interface", i.Name, "address", c.Prefix, "gateway", c.Gateway)
			continue
		}
		if err := n.ops.up(i.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.dhcp(ctx, i.Name)
		}()
	}
	return errors.Join(errs...)
}

// Wait waits for the DHCP goroutines, after ctx ended.
func (n *Network) Wait() { n.wg.Wait() }

func (n *Network) apply(name string, c addrConfig) error {
	if err := n.ops.up(name); err != nil {
		return err
	}
	if err := n.ops.setAddr(name, c); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dns[name] = c.DNS
	return n.writeResolvConf()
}

func (n *Network) writeResolvConf() error {
	var b strings.Builder
	b.WriteString("# written by tinyedge init\n")
	seen := map[netip.Addr]bool{}
	for _, list := range n.dns {
		for _, a := range list {
			if !seen[a] {
				seen[a] = true
				fmt.Fprintf(&b, "nameserver %s\n", a)
			}
		}
	}
	p := n.Machine.path("/etc/resolv.conf")
	if err := os.MkdirAll(n.Machine.path("/etc"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write /etc/resolv.conf: %w", err)
	}
	return nil
}

// dhcp gets a lease for name and renews it at half its time, retrying
// with backoff, until ctx ends.
func (n *Network) dhcp(ctx context.Context, name string) {
	log := n.Logger.With("interface", name)
	retry := time.Second
	for ctx.Err() == nil {
		c, err := n.lease(ctx, name)
		wait := retry
		if err != nil {
			log.Warn("dhcp: no lease yet", "err", err, "retryIn", retry)
			retry = min(2*retry, time.Minute)
		} else if err := n.apply(name, c); err != nil {
			log.Error("dhcp: apply the lease", "err", err)
		} else {
			log.Info("network", "dhcp", true, "address", c.Prefix, "gateway", c.Gateway, "lease", c.Lease)
			retry = time.Second
			wait = max(c.Lease/2, 10*time.Second)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (n *Network) lease(ctx context.Context, name string) (addrConfig, error) {
	cl, err := nclient4.New(name, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(2))
	if err != nil {
		return addrConfig{}, fmt.Errorf("dhcp on %s: %w", name, err)
	}
	defer cl.Close()
	l, err := cl.Request(ctx)
	if err != nil {
		return addrConfig{}, fmt.Errorf("dhcp on %s: %w", name, err)
	}
	return leaseConfig(l.ACK)
}
