package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"
)

// Defaults of ServerOptions.
const (
	DefaultServerLifetime = 90 * 24 * time.Hour
	// renewal starts when this fraction of the lifetime is left.
	renewFraction = 3
	// checkEvery bounds how long the renewal loop trusts its last reading
	// of the clock: a clock stepped by NTP is noticed within it.
	checkEvery = time.Hour
	// retryEvery paces attempts after a failed renewal.
	retryEvery = time.Minute
)

// ServerOptions configure a ServerCert.
type ServerOptions struct {
	// Hostname is the certificate's common name, the name clients
	// connect to (the gateway's hostname).
	Hostname string
	// SANs are added to the default ones: "localhost", 127.0.0.1, ::1.
	SANs []string
	// Lifetime of each certificate; default DefaultServerLifetime.
	Lifetime time.Duration
	// RenewBefore is how long before expiry a certificate is replaced;
	// default a third of Lifetime.
	RenewBefore time.Duration
}

// ServerCert is a server certificate that renews itself. Give
// GetCertificate to a tls.Config: each handshake takes the current
// certificate, so a renewal reaches new connections while established
// ones keep theirs — nobody is disconnected.
type ServerCert struct {
	a    *Authority
	opts ServerOptions
	cur  atomic.Pointer[tls.Certificate]
}

// NewServerCert issues the first certificate.
func (a *Authority) NewServerCert(opts ServerOptions) (*ServerCert, error) {
	if opts.Hostname == "" {
		return nil, fmt.Errorf("server certificate: no hostname")
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = DefaultServerLifetime
	}
	if opts.RenewBefore <= 0 || opts.RenewBefore >= opts.Lifetime {
		opts.RenewBefore = opts.Lifetime / renewFraction
	}
	s := &ServerCert{a: a, opts: opts}
	if err := s.Renew(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load(), nil
}

// Current is the certificate new handshakes get.
func (s *ServerCert) Current() *tls.Certificate { return s.cur.Load() }

// Renew issues a new certificate and makes it current.
func (s *ServerCert) Renew() error {
	sans := append([]string{"localhost", "127.0.0.1", "::1"}, s.opts.SANs...)
	c, err := s.a.issue(s.opts.Hostname, sans, s.a.now().Add(s.opts.Lifetime))
	if err != nil {
		return err
	}
	s.cur.Store(c)
	return nil
}

// due returns how long until the current certificate should be renewed.
func (s *ServerCert) due() time.Duration {
	return s.cur.Load().Leaf.NotAfter.Add(-s.opts.RenewBefore).Sub(s.a.now())
}

// Run renews the certificate when it is due until ctx ends. onErr, if
// not nil, hears of failed renewals (retried every minute).
func (s *ServerCert) Run(ctx context.Context, onRenew func(*tls.Certificate), onErr func(error)) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := s.due()
		if wait <= 0 {
			if err := s.Renew(); err != nil {
				if onErr != nil {
					onErr(err)
				}
				t.Reset(retryEvery)
				continue
			}
			if onRenew != nil {
				onRenew(s.Current())
			}
			wait = s.due()
		}
		t.Reset(min(max(wait, time.Millisecond), checkEvery))
	}
}
