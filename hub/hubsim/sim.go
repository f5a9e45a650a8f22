package hubsim

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tinyedge/tinyedge/hub/certs"
	"github.com/tinyedge/tinyedge/hub/internal/broker"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// Files in the data directory besides the certificates.
const (
	stateFileName  = "state.json"
	eventsFileName = "events.jsonl"
	tokenFileName  = "api-token"
	infoFileName   = "hubsim.json"
	lockFileName   = "lock"
)

// DefaultMQTTAddr is where IoT Hub listens for MQTT over TLS.
const DefaultMQTTAddr = ":8883"

// Options configure a Sim.
type Options struct {
	// DataDir holds the registry, twins, events, certificates and the API
	// secret; it is created if missing. Required.
	DataDir string
	// MQTTAddr is the MQTT over TLS listen address; DefaultMQTTAddr when
	// empty. Port 0 picks a free port (see Addr after Start).
	MQTTAddr string
	// HTTPAddr is the service API's listen address, which must be a
	// loopback IP ("127.0.0.1:8080"); empty means no HTTP API.
	HTTPAddr string
	// Hostname is the IoT Hub host name: in connection strings, user names
	// and SAS token resources, and in the server certificate. "localhost"
	// when empty.
	Hostname string
	// Logger receives the connection and request log; slog.Default() when
	// nil.
	Logger *slog.Logger
	// KeepEvents is how many of the last events are kept in memory for
	// the API and the monitor (at most twice as many between trims);
	// MaxEvents when 0. Every event is in events.jsonl regardless.
	KeepEvents int
}

// Sim is a running IoT Hub emulator. Its methods are safe for concurrent
// use.
type Sim struct {
	opts      Options
	log       *slog.Logger
	lock      *os.File // flock on the data directory, held until Close
	ca        *certs.Authority
	cert      *certs.ServerCert // renewed by a goroutine until stopRenew
	stopRenew context.CancelFunc
	events    *eventLog
	apiToken  string

	mu       sync.Mutex
	reg      registry
	broker   atomic.Pointer[mqtt.Server] // set under mu; read without it by deliveries
	hook     *hook                       // the running server's, under mu
	mqttAddr string                      // the bound address, reused by StartMQTT
	httpSrv  *http.Server
	httpAddr string
	pending  map[string]*pendingCall
	rid      uint64
	started  bool
	closed   bool

	done chan struct{} // closed by Close: ends event streams
	wg   sync.WaitGroup
}

// New opens (or creates) the data directory: the registry, the event log,
// the CA and a server certificate for the host name, localhost, 127.0.0.1
// and ::1, which it renews until Close. It does not listen yet: see Start.
func New(opts Options) (*Sim, error) {
	if opts.DataDir == "" {
		return nil, errors.New("hubsim: no data directory")
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = DefaultMQTTAddr
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HTTPAddr != "" {
		if err := checkLoopback(opts.HTTPAddr); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("hubsim: data directory: %w", err)
	}
	lock, err := lockDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Sim{opts: opts, log: opts.Logger, lock: lock, pending: map[string]*pendingCall{}, done: make(chan struct{})}
	defer func() {
		if s.events == nil { // New failed
			lock.Close()
		}
	}()
	if s.reg, err = loadState(filepath.Join(opts.DataDir, stateFileName)); err != nil {
		return nil, err
	}
	if s.ca, s.cert, err = openCerts(opts.DataDir, opts.Hostname); err != nil {
		return nil, fmt.Errorf("hubsim: certificates in %s: %w", opts.DataDir, err)
	}
	if s.apiToken, err = loadOrMakeToken(filepath.Join(opts.DataDir, tokenFileName)); err != nil {
		return nil, err
	}
	if s.events, err = openEventLog(filepath.Join(opts.DataDir, eventsFileName), cmp.Or(opts.KeepEvents, MaxEvents)); err != nil {
		return nil, fmt.Errorf("hubsim: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopRenew = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.cert.Run(ctx, func(c *tls.Certificate) {
			s.log.Info("hubsim server certificate renewed", "expires", c.Leaf.NotAfter)
		}, func(err error) {
			s.log.Error("hubsim: renew the server certificate", "err", err)
		})
	}()
	return s, nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("hubsim: HTTP address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("hubsim: HTTP address %q: the service API listens on a loopback IP only (127.0.0.1 or [::1])", addr)
	}
	return nil
}

func loadState(path string) (registry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return registry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hubsim: %w", err)
	}
	reg, err := decodeState(b)
	if err != nil {
		return nil, fmt.Errorf("hubsim: %s: %w", path, err)
	}
	return reg, nil
}

func loadOrMakeToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("hubsim: API token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("hubsim: API token: %w", err)
	}
	return tok, nil
}

// Start listens for MQTT and, when configured, HTTP, and writes
// hubsim.json with the addresses for the CLI.
func (s *Sim) Start() error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return errors.New("hubsim: already started")
	}
	s.started = true
	s.mu.Unlock()
	if err := s.StartMQTT(); err != nil {
		return err
	}
	if s.opts.HTTPAddr != "" {
		if err := s.startHTTP(); err != nil {
			s.StopMQTT()
			return err
		}
	}
	info, _ := json.MarshalIndent(serveInfo{MQTT: s.Addr(), HTTP: s.HTTPAddr(), Hostname: s.opts.Hostname, PID: os.Getpid()}, "", "  ")
	if err := writeFileAtomic(filepath.Join(s.opts.DataDir, infoFileName), info, 0o600); err != nil {
		s.Close()
		return fmt.Errorf("hubsim: %w", err)
	}
	s.log.Info("hubsim listening", "mqtt", s.Addr(), "http", s.HTTPAddr(), "hostname", s.opts.Hostname, "data", s.opts.DataDir)
	return nil
}

// serveInfo is hubsim.json: how the CLI finds a running hubsim.
type serveInfo struct {
	MQTT     string `json:"mqtt"`
	HTTP     string `json:"http"`
	Hostname string `json:"hostname"`
	PID      int    `json:"pid"`
}

// StartMQTT starts the MQTT server, on the address the previous one had
// when there was one, so clients reconnect to the same port.
func (s *Sim) StartMQTT() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("hubsim: closed")
	}
	if s.broker.Load() != nil {
		return nil
	}
	addr := s.opts.MQTTAddr
	if s.mqttAddr != "" {
		addr = s.mqttAddr
	}
	cfg := &tls.Config{
		// Each handshake takes the current certificate: a renewal
		// reaches new connections and leaves the others connected.
		GetCertificate: s.cert.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		// Client certificates are checked against the registry's
		// thumbprints, not against a CA, as IoT Hub does for self-signed
		// device certificates.
		ClientAuth: tls.RequestClientCert,
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1                              // SUBACK grants 1 for 2; a QoS 2 PUBLISH closes the connection (hook)
	caps.RetainAvailable = 0                         // IoT Hub does not keep retained messages
	caps.MaximumPacketSize = iothubMaxPacket         // IoT Hub's limit
	caps.Compatibilities.ObscureNotAuthorized = true // refused subscriptions get 0x80 in MQTT 3.1.1
	// mochi's own log is warnings only: its debug lines dump whole packets.
	mlog := slog.New(minLevel{slog.LevelWarn, s.log.Handler()}).With("component", "mqtt")
	srv := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: mlog})
	h := &hook{sim: s}
	if err := srv.AddHook(h, nil); err != nil {
		return err
	}
	// broker.Listener, not mochi's: closing it cannot deadlock StopMQTT.
	ln := broker.NewListener("iothub", addr, cfg, nil, mlog)
	if err := srv.AddListener(ln); err != nil {
		return fmt.Errorf("hubsim: MQTT: %w", err)
	}
	s.mqttAddr = ln.Address()
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return fmt.Errorf("hubsim: serve MQTT: %w", err)
	}
	s.broker.Store(srv)
	s.hook = h
	return nil
}

// iothubMaxPacket is the largest MQTT packet hubsim reads: IoT Hub's 256
// KiB message limit (checked on body and properties) plus room for the
// topic and header.
const iothubMaxPacket = 256*1024 + 4096

// StopMQTT closes the MQTT listener and every connection, as a hub outage
// would; the registry, twins and events stay. StartMQTT brings it back on
// the same port.
func (s *Sim) StopMQTT() error {
	s.mu.Lock()
	b := s.broker.Swap(nil)
	if s.hook != nil {
		s.hook.stopped.Store(true)
		s.hook = nil
	}
	calls := s.pending
	s.pending = map[string]*pendingCall{}
	s.mu.Unlock()
	for _, c := range calls {
		c.fail(ErrNotConnected)
	}
	if b == nil {
		return nil
	}
	// Outside the lock: Close waits for the client goroutines, whose hooks
	// take it.
	return b.Close()
}

// Close stops listening, disconnects everyone and closes the files. The
// data directory keeps the state: New on it again continues where this
// one stopped.
func (s *Sim) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	srv := s.httpSrv
	s.mu.Unlock()
	s.stopRenew()
	err := s.StopMQTT()
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if e := srv.Shutdown(ctx); e != nil {
			srv.Close()
		}
		cancel()
	}
	s.wg.Wait()
	os.Remove(filepath.Join(s.opts.DataDir, infoFileName))
	if e := s.events.close(); err == nil {
		err = e
	}
	s.lock.Close()
	return err
}

// ErrDataDirInUse is returned (wrapped) by New when another Sim holds the
// data directory.
var ErrDataDirInUse = errors.New("hubsim data directory in use")

// lockDir takes an exclusive flock on dir/lock, so two hubsims never write
// the same state.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hubsim: lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another hubsim (stop it, or give another --data-dir)", ErrDataDirInUse, dir)
		}
		return nil, fmt.Errorf("hubsim: lock %s: %w", path, err)
	}
	return f, nil
}

// Addr is the address the MQTT server listens on (after Start).
func (s *Sim) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mqttAddr
}

// HTTPAddr is the address of the service API ("" without one).
func (s *Sim) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

// Hostname is the IoT Hub host name identities use.
func (s *Sim) Hostname() string { return s.opts.Hostname }

// CAPEM is the PEM certificate of the CA that signed the server
// certificate: what a client must trust.
func (s *Sim) CAPEM() []byte { return s.ca.CAPEM() }

// APIToken is the bearer secret of the service API.
func (s *Sim) APIToken() string { return s.apiToken }

// AddDevice registers a device with generated SAS keys.
func (s *Sim) AddDevice(device string) (Identity, error) {
	return s.AddIdentity(Identity{DeviceID: device})
}

// AddModule registers a module of an existing device with generated SAS
// keys.
func (s *Sim) AddModule(device, module string) (Identity, error) {
	if module == "" {
		return Identity{}, fmt.Errorf("%w: empty module id", ErrBadID)
	}
	return s.AddIdentity(Identity{DeviceID: device, ModuleID: module})
}

// AddIdentity registers id as given; an identity without keys or
// thumbprints gets generated SAS keys. A module needs its device.
func (s *Sim) AddIdentity(id Identity) (Identity, error) {
	id.ConnectionString = ""
	if id.PrimaryKey == "" && id.SecondaryKey == "" && len(id.X509Thumbprints) == 0 {
		id.PrimaryKey, id.SecondaryKey = newKey(), newKey()
	}
	for i, tp := range id.X509Thumbprints {
		id.X509Thumbprints[i] = strings.ToUpper(tp)
	}
	if err := validate(id); err != nil {
		return Identity{}, fmt.Errorf("add identity: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.reg[id.ID()]; ok {
		return Identity{}, fmt.Errorf("add identity %s: %w", id.ID(), ErrExists)
	}
	if id.ModuleID != "" && s.reg[id.DeviceID] == nil {
		return Identity{}, fmt.Errorf("add module %s: %w: device %s", id.ID(), ErrNotFound, id.DeviceID)
	}
	t, err := twin.New(nil)
	if err != nil {
		return Identity{}, err
	}
	s.reg[id.ID()] = &entry{Identity: id, twin: t}
	if err := s.saveLocked(); err != nil {
		delete(s.reg, id.ID())
		return Identity{}, err
	}
	s.log.Info("identity added", "id", id.ID())
	id.ConnectionString = s.connectionStringLocked(id)
	return id, nil
}

// Identity returns a registered identity.
func (s *Sim) Identity(device, module string) (Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.entryLocked(device, module)
	if err != nil {
		return Identity{}, err
	}
	id := e.Identity
	id.ConnectionString = s.connectionStringLocked(id)
	return id, nil
}

// Identities lists the registry, sorted by ID.
func (s *Sim) Identities() []Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Identity
	for _, name := range s.reg.sortedIDs() {
		id := s.reg[name].Identity
		id.ConnectionString = s.connectionStringLocked(id)
		out = append(out, id)
	}
	return out
}

func (s *Sim) entryLocked(device, module string) (*entry, error) {
	id := Identity{DeviceID: device, ModuleID: module}.ID()
	e := s.reg[id]
	if e == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return e, nil
}

// saveLocked writes state.json.
func (s *Sim) saveLocked() error {
	b, err := s.reg.encode()
	if err != nil {
		return fmt.Errorf("hubsim: encode state: %w", err)
	}
	return writeFileAtomic(filepath.Join(s.opts.DataDir, stateFileName), b, 0o600)
}

// ConnectionString is id's connection string with its primary key (or
// x509=true). When the MQTT server is not on IoT Hub's port 8883 it
// carries GatewayHostName=host:port, so SDKs reach it while signing for
// the hub's host name.
func (s *Sim) ConnectionString(id Identity) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connectionStringLocked(id)
}

func (s *Sim) connectionStringLocked(id Identity) string {
	c := iothub.ConnectionString{HostName: s.opts.Hostname, DeviceID: id.DeviceID, ModuleID: id.ModuleID}
	if id.PrimaryKey != "" {
		c.SharedAccessKey, _ = base64.StdEncoding.DecodeString(id.PrimaryKey)
	} else {
		c.X509 = true
	}
	if _, port, err := net.SplitHostPort(s.mqttAddr); err == nil && port != "8883" {
		c.GatewayHostName = net.JoinHostPort(s.opts.Hostname, port)
	}
	return c.String()
}

// Connected reports whether the identity has a live MQTT connection.
func (s *Sim) Connected(device, module string) bool {
	cl := s.client(Identity{DeviceID: device, ModuleID: module}.ID())
	return cl != nil && !cl.Closed()
}

// Subscribed reports whether the identity's connection has a
// subscription matching topic, that is whether a publish on topic (such as
// iothub.TwinDesiredTopic(2) or iothub.MethodRequestTopic("reset", "1"))
// would reach it. SDKs subscribe in the background; tests poll this before
// they patch or call.
func (s *Sim) Subscribed(device, module, topic string) bool {
	cl := s.client(Identity{DeviceID: device, ModuleID: module}.ID())
	return cl != nil && hasSubscription(cl, topic)
}

func hasSubscription(cl *mqtt.Client, topic string) bool {
	for filter := range cl.State.Subscriptions.GetAll() {
		if matchFilter(filter, topic) {
			return true
		}
	}
	return false
}

// Disconnect drops the identity's MQTT connection, as IoT Hub does when
// it throttles or fails over. It is not an error when there is none.
func (s *Sim) Disconnect(device, module string) {
	if cl := s.client(Identity{DeviceID: device, ModuleID: module}.ID()); cl != nil {
		cl.Stop(errors.New("disconnected by hubsim"))
	}
}

func (s *Sim) client(id string) *mqtt.Client {
	b := s.broker.Load()
	if b == nil {
		return nil
	}
	cl, ok := b.Clients.Get(id)
	if !ok || cl.Closed() {
		return nil
	}
	return cl
}

// Errors of deliveries and direct methods.
var (
	ErrNotConnected  = errors.New("identity not connected")
	ErrNotSubscribed = errors.New("identity not subscribed")
	ErrMethodTimeout = errors.New("direct method timed out")
)

// deliver sends a QoS 0 PUBLISH to the identity's connection when one of
// its subscriptions matches topic.
func (s *Sim) deliver(id, topic string, payload []byte) error {
	cl := s.client(id)
	if cl == nil {
		return fmt.Errorf("%w: %s", ErrNotConnected, id)
	}
	if !hasSubscription(cl, topic) {
		return fmt.Errorf("%w: %s to %s", ErrNotSubscribed, id, topic)
	}
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
	})
}

// matchFilter reports whether an MQTT topic filter matches topic.
func matchFilter(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || (f != "+" && f != ts[i]) {
			return false
		}
	}
	return len(fs) == len(ts)
}

// Events returns the events numbered from seq on (Event.Seq; 0 is the
// first of the data directory, older than what memory keeps means the
// oldest kept), the seq to ask for next, and a channel closed when more
// arrive:
//
//	next := int64(0)
//	for {
//		evs, n, more := sim.Events(next)
//		… use evs …
//		next = n
//		select { case <-more: case <-ctx.Done(): return }
//	}
func (s *Sim) Events(seq int64) ([]Event, int64, <-chan struct{}) {
	return s.events.since(seq)
}

// WaitEvents waits until the data directory holds at least n events in
// all and returns them (as Events(0) does), or ctx's error with the events
// so far.
func (s *Sim) WaitEvents(ctx context.Context, n int) ([]Event, error) {
	for {
		evs, _, more := s.Events(0)
		if len(evs) >= n {
			return evs, nil
		}
		select {
		case <-more:
		case <-ctx.Done():
			return evs, fmt.Errorf("%d events, waiting for %d: %w", len(evs), n, ctx.Err())
		}
	}
}

// authorized compares a bearer secret in constant time.
func (s *Sim) authorized(got string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.apiToken)) == 1
}

var _ io.Closer = (*Sim)(nil)

// minLevel drops records below a level.
type minLevel struct {
	min slog.Level
	h   slog.Handler
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler            { return minLevel{m.min, m.h.WithAttrs(a)} }
func (m minLevel) WithGroup(g string) slog.Handler                 { return minLevel{m.min, m.h.WithGroup(g)} }
