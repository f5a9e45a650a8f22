package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/certs"
	"github.com/tinyedge/tinyedge/hub/internal/broker"
)

// Defaults of Options.
const (
	DefaultListen         = ":8883"
	DefaultMethodsListen  = ":443"
	DefaultMaxConnections = 100
	DefaultWindow         = 1024
	// MaxPacket is the largest MQTT packet accepted, IoT Hub's limit.
	MaxPacket = 256 * 1024
	// Off disables a listener.
	Off = "off"
)

// Options configure an Endpoint.
type Options struct {
	Hub *hub.Hub
	// Keys holds the identities' shared access keys.
	Keys Keys
	// Thumbprints registers leaf devices that authenticate with an X.509
	// client certificate.
	Thumbprints Thumbprints
	// IoTHubHostname and GatewayHostname are the two host names a SAS
	// token's audience and the CONNECT user name may name.
	IoTHubHostname  string
	GatewayHostname string

	// Listen is the TLS listener's address, default ":8883"; Off
	// disables it.
	Listen string
	// PlainListen is a listener without TLS, off unless set; it must be
	// a loopback address.
	PlainListen string
	// MethodsListen is the HTTPS listener for module-to-module direct
	// methods, default ":443" (see the package comment); Off disables it.
	MethodsListen string
	// Certificate gives the TLS listeners their certificate at each
	// handshake (certs.ServerCert.GetCertificate). Required unless both
	// TLS listeners are off.
	Certificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// ServerCert, when set, provides Certificate and is renewed by the
	// endpoint while it runs.
	ServerCert *certs.ServerCert

	// MaxConnections bounds open MQTT connections, default 100.
	MaxConnections int
	// Window is how many messages to an external module's inputs may
	// await its PUBACK, default 1024. Whatever the window, the messages
	// awaiting it hold at most deliverBudget bytes of bodies, plus one
	// read's worth.
	Window int

	Logger *slog.Logger
	// Now is the clock; default time.Now. Trusted says whether a reading
	// of it can be believed (see DESIGN.md, Time); default always.
	Now     func() time.Time
	Trusted func(time.Time) bool
}

// Endpoint is the local MQTT endpoint. Make it with New, Start it, Close
// it.
type Endpoint struct {
	opts  Options
	log   *slog.Logger
	srv   *mqtt.Server
	slots *broker.Slots

	mqttLns []*broker.Listener
	httpLn  net.Listener
	httpSrv *http.Server

	mu       sync.Mutex
	sessions map[*mqtt.Client]*session
	pending  map[*mqtt.Client]pendingAuth // authenticated, session not yet established
	readers  map[string]*reader           // input readers by module
	started  bool
	closed   bool

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // HTTP server, certificate renewal

	methodsDefault bool // MethodsListen was not given
}

type pendingAuth struct {
	id     hub.Identity
	expiry time.Time
	cred   credential
	at     time.Time // when it authenticated
}

// New checks opts and returns an endpoint that is not listening yet.
func New(opts Options) (*Endpoint, error) {
	if opts.Hub == nil {
		return nil, errors.New("edge endpoint: no hub")
	}
	if opts.Keys == nil {
		opts.Keys = KeyMap{}
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	methodsDefault := opts.MethodsListen == ""
	if methodsDefault {
		opts.MethodsListen = DefaultMethodsListen
	}
	if opts.PlainListen != "" && opts.PlainListen != Off {
		if err := checkLoopback(opts.PlainListen); err != nil {
			return nil, fmt.Errorf("edge endpoint: %w", err)
		}
	}
	if opts.ServerCert != nil && opts.Certificate == nil {
		opts.Certificate = opts.ServerCert.GetCertificate
	}
	if opts.Certificate == nil && (opts.Listen != Off || opts.MethodsListen != Off) {
		return nil, errors.New("edge endpoint: TLS listeners need a certificate (Options.Certificate or ServerCert)")
	}
	if opts.IoTHubHostname == "" && opts.GatewayHostname == "" {
		return nil, errors.New("edge endpoint: neither IoTHubHostname nor GatewayHostname is set; tokens could not name an audience")
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Trusted == nil {
		opts.Trusted = func(time.Time) bool { return true }
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{
		opts:     opts,
		log:      opts.Logger,
		slots:    broker.NewSlots(opts.MaxConnections),
		sessions: map[*mqtt.Client]*session{},
		pending:  map[*mqtt.Client]pendingAuth{},
		readers:  map[string]*reader{},
		ctx:      ctx,
		cancel:   cancel,

		methodsDefault: methodsDefault,
	}
	return e, nil
}

func (e *Endpoint) now() time.Time { return e.opts.Now() }

func (e *Endpoint) tlsConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: e.opts.Certificate,
		MinVersion:     tls.VersionTLS12,
		// Leaf devices may present a certificate (X.509 thumbprint
		// authentication); it is checked against its registered
		// thumbprint, not a chain, as IoT Hub does for self-signed ones.
		ClientAuth: tls.RequestClientCert,
	}
}

// Start opens the listeners and serves until Close.
func (e *Endpoint) Start() error {
	e.mu.Lock()
	if e.started || e.closed {
		e.mu.Unlock()
		return errors.New("edge endpoint: already started")
	}
	e.started = true
	e.mu.Unlock()

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacket
	caps.MaximumQos = 1
	caps.RetainAvailable = 0
	caps.SharedSubAvailable = 0
	caps.SubIDAvailable = 0
	caps.MaximumClients = int64(e.opts.MaxConnections)
	e.srv = mqtt.New(&mqtt.Options{
		Capabilities:            caps,
		Logger:                  e.log.With("component", "mqtt"),
		SysTopicResendInterval:  3600, // nobody may subscribe to $SYS
		ClientNetReadBufferSize: 4096,
	})
	if err := e.srv.AddHook(&hook{e: e}, nil); err != nil {
		return fmt.Errorf("edge endpoint: %w", err)
	}
	if e.opts.Listen != Off {
		e.mqttLns = append(e.mqttLns, broker.NewListener("tls", e.opts.Listen, e.tlsConfig(), e.slots, e.log))
	}
	if e.opts.PlainListen != "" && e.opts.PlainListen != Off {
		e.mqttLns = append(e.mqttLns, broker.NewListener("plain", e.opts.PlainListen, nil, e.slots, e.log))
	}
	for _, l := range e.mqttLns {
		if err := e.srv.AddListener(l); err != nil {
			e.closeListeners()
			return fmt.Errorf("edge endpoint: %w", err)
		}
	}
	if e.opts.MethodsListen != Off {
		ln, err := net.Listen("tcp", e.opts.MethodsListen)
		switch {
		case err != nil && e.methodsDefault:
			// Port 443 needs root or CAP_NET_BIND_SERVICE; without it
			// the rest of the endpoint is still worth having.
			e.log.Error("direct methods over HTTPS are off: cannot listen on the default port; run as root, grant CAP_NET_BIND_SERVICE or set methods_listen", "address", e.opts.MethodsListen, "err", err)
		case err != nil:
			e.closeListeners()
			return fmt.Errorf("edge endpoint: direct methods over HTTPS: listen on %s: %w", e.opts.MethodsListen, err)
		default:
			e.httpLn = ln
		}
	}
	if e.httpLn != nil {
		ln := e.httpLn
		e.httpSrv = &http.Server{
			Handler:           e.methodsHandler(),
			TLSConfig:         &tls.Config{GetCertificate: e.opts.Certificate, MinVersion: tls.VersionTLS12},
			ReadHeaderTimeout: connectWait,
			ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
			BaseContext:       func(net.Listener) context.Context { return e.ctx },
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := e.httpSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("direct methods over HTTPS stopped", "err", err)
			}
		}()
	}
	if sc := e.opts.ServerCert; sc != nil {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			sc.Run(e.ctx, func(c *tls.Certificate) {
				e.log.Info("server certificate renewed", "notAfter", c.Leaf.NotAfter)
			}, func(err error) {
				e.log.Error("renew the server certificate; retrying", "err", err)
			})
		}()
	}
	if err := e.srv.Serve(); err != nil {
		e.Close()
		return fmt.Errorf("edge endpoint: %w", err)
	}
	for _, l := range e.mqttLns {
		e.log.Info("local MQTT endpoint listening", "address", l.Address(), "tls", l.TLS())
	}
	return nil
}

// closeListeners closes listeners opened by a Start that failed.
func (e *Endpoint) closeListeners() {
	for _, l := range e.mqttLns {
		l.Close(nil)
	}
	if e.httpLn != nil {
		_ = e.httpLn.Close()
	}
}

// Addr returns the address the TLS MQTT listener is bound to, "" if off.
func (e *Endpoint) Addr() string { return e.listenerAddr("tls") }

// PlainAddr returns the plain MQTT listener's address, "" if off.
func (e *Endpoint) PlainAddr() string { return e.listenerAddr("plain") }

// MethodsAddr returns the HTTPS methods listener's address, "" if off.
func (e *Endpoint) MethodsAddr() string {
	if e.httpLn == nil {
		return ""
	}
	return e.httpLn.Addr().String()
}

func (e *Endpoint) listenerAddr(id string) string {
	for _, l := range e.mqttLns {
		if l.ID() == id && l.Bound() {
			return l.Address()
		}
	}
	return ""
}

// Revalidate closes the connections whose credentials no longer hold:
// of a module the deployment in force no longer has as external, of an
// identity whose key was rotated or generated anew, or of a leaf device
// whose registered certificate changed. Call it after such a change;
// every connection also checks itself once a minute. It returns how many
// it closed.
func (e *Endpoint) Revalidate() int {
	type authenticated struct {
		cl *mqtt.Client
		pa pendingAuth
	}
	e.mu.Lock()
	list := make([]*session, 0, len(e.sessions))
	for _, s := range e.sessions {
		list = append(list, s)
	}
	var pending []authenticated
	for cl, pa := range e.pending {
		pending = append(pending, authenticated{cl, pa})
	}
	e.mu.Unlock()
	n := 0
	for _, s := range list {
		if s.revoked() {
			n++
		}
	}
	// A client is established only after its CONNACK (mochi calls
	// OnSessionEstablished then), and checks itself at that point; one
	// that has its CONNACK may be in between, as pending. Close it here
	// all the same, so that what was closed is counted.
	for _, p := range pending {
		err := e.credentialHolds(p.pa.id, p.pa.cred)
		if err == nil {
			continue
		}
		e.mu.Lock()
		_, still := e.pending[p.cl]
		delete(e.pending, p.cl)
		s := e.sessions[p.cl]
		e.mu.Unlock()
		switch {
		case still:
			revoke(p.cl, e.log.With("identity", p.pa.id.String(), "remote", p.cl.Net.Remote), err)
			n++
		case s != nil && s.revoked():
			n++
		}
	}
	return n
}

// Stats are the endpoint's counters.
type Stats struct {
	Connected int    // edgehub_connected_clients
	Refused   uint64 // connections refused for the connection limit
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Connected: len(e.sessions), Refused: e.slots.Refused()}
}

// Subscriptions returns the topic filters the identity's connection
// subscribed to, sorted, once the hub acts on them: a desired patch or
// an input routed after this lists a filter reaches the client (the
// client's SUBACK comes later still); nil when it is not connected.
func (e *Endpoint) Subscriptions(id hub.Identity) []string {
	e.mu.Lock()
	var ses *session
	for _, s := range e.sessions {
		if s.id == id {
			ses = s
		}
	}
	e.mu.Unlock()
	if ses == nil {
		return nil
	}
	ses.mu.Lock()
	defer ses.mu.Unlock()
	return slices.Clone(ses.filters)
}

// Close disconnects every client, stops the listeners and waits for the
// endpoint's goroutines.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.started
	e.mu.Unlock()
	e.cancel()
	if !started {
		return nil
	}
	var err error
	if e.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = e.httpSrv.Shutdown(ctx)
		cancel()
		if err != nil {
			_ = e.httpSrv.Close()
		}
	}
	if e.srv != nil {
		_ = e.srv.Close()
	}
	e.wg.Wait()
	return err
}
