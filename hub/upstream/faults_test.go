package upstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/upstream"
	"github.com/tinyedge/tinyedge/store"
)

const hubHost = "hub.example.net"

// TestConnectFaults gives the link a wrong key, an unknown device, an
// expired token, a server certificate from another CA and one for
// another host name: each shows in the status with a clear error, and the
// link backs off rather than retrying in a tight loop.
func TestConnectFaults(t *testing.T) {
	good := []byte("the device key")
	pki := newPKI(t, nil, []net.IP{net.ParseIP("127.0.0.1")})
	otherCA := newPKI(t, nil, []net.IP{net.ParseIP("127.0.0.1")})
	wrongHost := newPKI(t, []string{"other.example"}, nil)
	serve := func(p *testPKI) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
	}
	tests := []struct {
		name    string
		keys    map[string][]byte
		key     []byte
		server  *tls.Config
		caFile  string
		now     func() time.Time
		wantErr string
	}{
		{name: "wrong key", keys: map[string][]byte{"gw1": good}, key: []byte("another key"), wantErr: "refused"},
		{name: "unknown device", keys: map[string][]byte{"gw2": good}, key: good, wantErr: "refused"},
		{name: "expired token", keys: map[string][]byte{"gw1": good}, key: good,
			now: func() time.Time { return time.Now().Add(-2 * time.Hour) }, wantErr: "expired token"},
		{name: "wrong CA", keys: map[string][]byte{"gw1": good}, key: good, server: serve(pki), caFile: otherCA.caFile,
			wantErr: "unknown authority"},
		{name: "hostname mismatch", keys: map[string][]byte{"gw1": good}, key: good, server: serve(wrongHost), caFile: wrongHost.caFile,
			wantErr: "hostname mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startAuthHub(t, hubHost, tt.keys, tt.server)
			cfg := upstream.IoTHubConfig{HostName: hubHost, DeviceID: "gw1", SharedAccessKey: tt.key, Broker: "tcp://" + a.addr}
			if tt.server != nil {
				tc, err := upstream.TLSConfig(tt.caFile, "", "", false)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Broker, cfg.TLS = "ssl://"+a.addr, tc
			}
			minWait := 200 * time.Millisecond
			link, err := upstream.NewIoTHub(cfg, &upstream.Options{Logger: testLogger(t), Now: tt.now,
				Backoff: upstream.Backoff{Min: minWait, Max: time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			defer link.Close()
			link.Start(nil)
			status := func() upstream.IdentityStatus { return link.Status().Identities[0] }
			hubtest.WaitFor(t, "two failed attempts", func() bool {
				s := status()
				return s.Attempts >= 2 && s.State == upstream.StateBackingOff
			})
			s := status()
			if !strings.Contains(s.LastError, tt.wantErr) {
				t.Errorf("last error %q, want it to say %q", s.LastError, tt.wantErr)
			}
			if s.RetryAt == nil {
				t.Error("backing off without a retry time in the status")
			}
			// No tight loop: each wait is at least half of Min.
			start, from := time.Now(), s.Attempts
			hubtest.WaitFor(t, "three more attempts", func() bool { return status().Attempts >= from+3 })
			if took := time.Since(start); took < 3*minWait/2 {
				t.Errorf("3 attempts in %s, want at least %s (backoff)", took, 3*minWait/2)
			}
			if acc, _ := a.counts("gw1"); acc != 0 {
				t.Errorf("the hub accepted %d connections, want none", acc)
			}
		})
	}
}

// TestTLS connects over TLS 1.2+ with the server verified against a CA
// file.
func TestTLS(t *testing.T) {
	pki := newPKI(t, nil, []net.IP{net.ParseIP("127.0.0.1")})
	key := []byte("k")
	a := startAuthHub(t, hubHost, map[string][]byte{"gw1": key}, &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12})
	tc, err := upstream.TLSConfig(pki.caFile, "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion < tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2 or later", tc.MinVersion)
	}
	link, err := upstream.NewIoTHub(upstream.IoTHubConfig{HostName: hubHost, DeviceID: "gw1", SharedAccessKey: key,
		Broker: "ssl://" + a.addr, TLS: tc}, &upstream.Options{Logger: testLogger(t), Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	link.Start(nil)
	hubtest.WaitFor(t, "a TLS connection", func() bool { return link.Status().Identities[0].State == upstream.StateConnected })
	if _, err := upstream.TLSConfig(filepath.Join(t.TempDir(), "missing.pem"), "", "", false); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

// TestX509Identity connects the device and a module with X.509
// certificates instead of keys: no password, no token, no clock wait.
func TestX509Identity(t *testing.T) {
	pki := newPKI(t, nil, []net.IP{net.ParseIP("127.0.0.1")})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caPEM)
	a := startAuthHub(t, hubHost, map[string][]byte{}, &tls.Config{Certificates: []tls.Certificate{pki.server},
		MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	devCert, devKey := pki.client(t, "gw1")
	modCert, modKey := pki.client(t, "gw1/filter")
	tc, err := upstream.TLSConfig(pki.caFile, devCert, devKey, false)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := tls.LoadX509KeyPair(modCert, modKey)
	if err != nil {
		t.Fatal(err)
	}
	link, err := upstream.NewIoTHub(upstream.IoTHubConfig{HostName: hubHost, DeviceID: "gw1", Broker: "ssl://" + a.addr, TLS: tc,
		Modules: []upstream.ModuleIdentity{{ModuleID: "filter", Certificate: &mc}}},
		&upstream.Options{Logger: testLogger(t), Backoff: fast, Trusted: func(time.Time) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	link.Start(nil)
	hubtest.WaitFor(t, "both X.509 connections", func() bool {
		ids := link.Status().Identities
		return ids[0].State == upstream.StateConnected && ids[1].State == upstream.StateConnected
	})
	for _, id := range []string{"gw1", "gw1/filter"} {
		if acc, ref := a.counts(id); acc != 1 || ref != 0 {
			t.Errorf("%s: accepted %d, refused %d; want one X.509 connection", id, acc, ref)
		}
	}
}

// TestUntrustedClock: no token is minted on a clock earlier than the
// build; the link says so and connects as soon as the clock is sane.
func TestUntrustedClock(t *testing.T) {
	key := []byte("k")
	a := startAuthHub(t, hubHost, map[string][]byte{"gw1": key}, nil)
	var sane atomic.Bool
	link, err := upstream.NewIoTHub(upstream.IoTHubConfig{HostName: hubHost, DeviceID: "gw1", SharedAccessKey: key, Broker: "tcp://" + a.addr},
		&upstream.Options{Logger: testLogger(t), Backoff: fast, Trusted: func(time.Time) bool { return sane.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	link.Start(nil)
	hubtest.WaitFor(t, "the wait for a trusted clock", func() bool {
		return link.Status().Identities[0].State == upstream.StateWaitingClock
	})
	st := link.Status()
	if st.ClockTrusted || st.Identities[0].Attempts != 0 || !strings.Contains(st.Identities[0].LastError, "NTP") {
		t.Errorf("status %+v, want an untrusted clock, no attempt, and a word about NTP", st)
	}
	b, err := json.Marshal(st)
	if err != nil || !strings.Contains(string(b), `"state":"waiting for a trusted clock"`) || !strings.Contains(string(b), `"clockTrusted":false`) {
		t.Errorf("status as JSON %s (%v), want the state and clock trust", b, err)
	}
	sane.Store(true)
	hubtest.WaitFor(t, "the connection", func() bool { return link.Status().Identities[0].State == upstream.StateConnected })
	if acc, ref := a.counts("gw1"); acc != 1 || ref != 0 {
		t.Errorf("hub accepted %d and refused %d, want one good connection", acc, ref)
	}
}

// TestTokenRenewal runs with short-lived tokens: the link reconnects with
// a fresh token before each expires, and nothing is lost or duplicated.
func TestTokenRenewal(t *testing.T) {
	lifetime, run := 10*time.Second, time.Minute
	if testing.Short() {
		lifetime, run = 2*time.Second, 5*time.Second
	}
	key := []byte("k")
	a := startAuthHub(t, hubHost, map[string][]byte{"gw1": key}, nil)
	sub := mochiSubscriber(t, a, "devices/#")
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	link, err := upstream.NewIoTHub(upstream.IoTHubConfig{HostName: hubHost, DeviceID: "gw1", SharedAccessKey: key,
		Broker: "tcp://" + a.addr, TokenLifetime: lifetime}, &upstream.Options{Logger: testLogger(t), Backoff: fast, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, link, st)
	n := 0
	for start := time.Now(); time.Since(start) < run; n++ {
		m := message.New(fmt.Appendf(nil, "s0:%d", n))
		m.Properties["stream"] = "s0"
		if err := g.h.SendDevice(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // a steady stream, not a burst
	}
	hubtest.WaitFor(t, "every message", func() bool { return sub.distinct() >= n })
	dups := checkStreams(t, sub.messages(), 1, n)
	s := link.Status().Identities[0]
	want := uint64(run/(lifetime*4/5)) - 1
	if s.Renewals < want {
		t.Errorf("%d renewals in %s with %s tokens, want at least %d", s.Renewals, run, lifetime, want)
	}
	if _, ref := a.counts("gw1"); ref != 0 {
		t.Errorf("the hub refused %d connections: a token expired before it was renewed", ref)
	}
	if dups != 0 {
		t.Errorf("%d duplicates: a renewal must let the window drain first", dups)
	}
	t.Logf("%d messages, %d renewals, %d connects, 0 duplicates", n, s.Renewals, s.Connects)
}

// TestOfflineBacklog keeps the broker away for a long offline period
// (30 minutes of store clock; seconds of real time in short mode), then
// brings it back: the backlog drains, in order, without restarting the
// gateway, and nothing expired.
func TestOfflineBacklog(t *testing.T) {
	offline, n := 20*time.Second, 5000
	if testing.Short() {
		offline, n = 2*time.Second, 1000
	}
	b := startBroker(t, "")
	sub := subscribe(t, b, "t/#")
	var skew atomic.Int64
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	link := mqttLink(t, b, upstream.MQTTConfig{}, &upstream.Options{Backoff: upstream.Backoff{Min: 50 * time.Millisecond, Max: time.Second}})
	g := newGateway(t, link, st)
	hubtest.WaitFor(t, "the connection", func() bool { return link.Status().Identities[0].State == upstream.StateConnected })
	b.stop()
	g.send(t, 2, n/2)
	start := time.Now()
	for time.Since(start) < offline {
		// Half an hour passes on the store's clock over the offline period.
		skew.Store(int64(30 * time.Minute * time.Duration(time.Since(start)) / offline))
		time.Sleep(50 * time.Millisecond)
	}
	skew.Store(int64(30 * time.Minute))
	if s := link.Status().Identities[0]; s.State != upstream.StateBackingOff && s.State != upstream.StateConnecting {
		t.Errorf("offline state %s, want backing off or connecting", s.State)
	}
	if q := g.queued(t); q != int64(n) {
		t.Errorf("%d queued while offline, want %d", q, n)
	}
	b.start()
	hubtest.WaitFor(t, "the backlog to drain", func() bool { return g.queued(t) == 0 })
	waitSubscriber(t, g, b, sub, n, 2, n/2)
	dups := checkStreams(t, sub.messages(), 2, n/2)
	t.Logf("%d messages after %s offline, %d duplicates", n, offline, dups)
}

// TestOversizeRefused: a message over 256 KiB is refused at the hub and
// never sent; the ones around it are.
func TestOversizeRefused(t *testing.T) {
	b := startBroker(t, "")
	sub := subscribe(t, b, "t/#")
	g := newGateway(t, mqttLink(t, b, upstream.MQTTConfig{}, nil), nil)
	big := message.New(make([]byte, 300*1024))
	big.Properties["stream"] = "s0"
	if err := g.h.SendDevice(context.Background(), big); !errors.Is(err, message.ErrTooLarge) {
		t.Fatalf("sending 300 KiB: %v, want ErrTooLarge", err)
	}
	small := message.New([]byte("s0:0"))
	small.Properties["stream"] = "s0"
	if err := g.h.SendDevice(context.Background(), small); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the small message", func() bool { return sub.len() >= 1 })
	for _, m := range sub.messages() {
		if len(m.Payload()) > message.MaxSize {
			t.Fatalf("a %d-byte message was sent", len(m.Payload()))
		}
	}
	if d := g.h.Stats().Dropped["too_large"]; d != 1 {
		t.Errorf("too_large drops %d, want 1", d)
	}
}

// TestRateLimit drains a backlog no faster than the configured rate.
func TestRateLimit(t *testing.T) {
	b := startBroker(t, "")
	sub := subscribe(t, b, "t/#")
	const rate, n = 100.0, 60
	link := mqttLink(t, b, upstream.MQTTConfig{}, &upstream.Options{RateLimit: rate})
	g := newGateway(t, link, nil)
	hubtest.WaitFor(t, "the connection", func() bool { return link.Status().Identities[0].State == upstream.StateConnected })
	b.stop()
	g.send(t, 1, n)
	b.start()
	start := time.Now()
	hubtest.WaitFor(t, "the backlog", func() bool { return sub.distinct() >= n })
	// The limiter spaces publishes 1/rate apart, so n of them take about
	// (n-1)/rate however fast the machine; unlimited they take a few
	// milliseconds. Half that span tells the two apart without betting on
	// the limiter's exact catch-up after a late timer.
	if took, least := time.Since(start), time.Duration(float64(n-1)/rate/2*float64(time.Second)); took < least {
		t.Errorf("%d messages in %s at %v/s, want at least %s", n, took, rate, least)
	}
	checkStreams(t, sub.messages(), 1, n)
}

// mochiSubscriber subscribes to the in-process broker.
func mochiSubscriber(t testing.TB, a *authHub, filter string) *subscriber {
	t.Helper()
	return startSubscriber(t, paho.NewClientOptions().AddBroker("tcp://"+a.addr), filter)
}
