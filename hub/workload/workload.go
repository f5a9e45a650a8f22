package workload

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub/identity"
)

// CA issues what the workload API hands out: the trust bundle modules
// verify the gateway with, and server certificates for modules that serve
// TLS themselves. Package certs implements it.
type CA interface {
	// TrustBundle is the PEM of the certificates modules should trust.
	TrustBundle() []byte
	// IssueServerCert issues a server certificate for commonName, with
	// sans as subject alternative names (DNS names or IP addresses),
	// valid until notAfter, and returns it (with its chain) and its
	// private key, both PEM.
	IssueServerCert(commonName string, sans []string, notAfter time.Time) (certPEM, keyPEM []byte, err error)
}

// Identities finds module identities; *identity.Store is one.
type Identities interface {
	Lookup(deviceID, moduleID string) (identity.Identity, bool)
}

// Callers tells which module a process belongs to: the module whose
// process is pid or one of its ancestors. *process.Host is one.
type Callers interface {
	Owner(pid int) (module string, ok bool)
}

// DefaultMaxCertLifetime bounds the server certificates issued, whatever
// expiration a module asks for; modules renew them.
const DefaultMaxCertLifetime = 90 * 24 * time.Hour

// Options configure a Server.
type Options struct {
	DeviceID   string
	Identities Identities
	Callers    Callers
	// CA issues certificates; nil makes /trust-bundle and certificate
	// requests fail with 503.
	CA     CA
	Logger *slog.Logger // default: discard
	// MaxCertLifetime bounds a server certificate's lifetime (default
	// DefaultMaxCertLifetime).
	MaxCertLifetime time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is the workload API: the HTTP service modules written with the
// Azure IoT SDKs call through IOTEDGE_WORKLOADURI to have their SAS
// tokens signed and to get certificates. Callers are identified by the
// process on the other end of the unix socket (SO_PEERCRED); a module is
// served only its own identity, and only the current generation of it.
type Server struct {
	opts Options
	log  *slog.Logger
	srv  *http.Server
}

// New returns a Server; Serve starts it.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxCertLifetime <= 0 {
		opts.MaxCertLifetime = DefaultMaxCertLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "workload")}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       withPeer,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s
}

// maxSocketPath is the longest unix socket path Linux takes (sun_path
// holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// Listen makes the unix socket at path, readable and writable by its
// owner only, replacing a stale socket left by a crash. It refuses to
// replace a socket another server answers on.
func Listen(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("workload socket %s: the path is %d bytes long, a unix socket's may be %d; choose a shorter one", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("workload socket %s: a file that is not a socket is in the way; remove it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("workload socket %s: another server is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("workload socket %s: remove the stale socket: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workload socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("workload socket %s: %w", path, err)
	}
	return l, nil
}

// Serve answers requests on l until Shutdown; it then returns nil.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server: it closes the listeners, waits for requests
// in progress until ctx ends, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

type peerKey struct{}

// withPeer records the process on the other end of a unix socket
// connection in its context.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	if pid, ok := peerPID(c); ok {
		return context.WithValue(ctx, peerKey{}, pid)
	}
	return ctx
}

// ServeHTTP answers one workload API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		s.fail(w, r, errorf(http.StatusBadRequest, "read the body: %v", err))
		return
	}
	if len(body) > maxBody {
		s.fail(w, r, errorf(http.StatusRequestEntityTooLarge, "the body is over %d bytes", maxBody))
		return
	}
	req, e := parseRequest(r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	if req.op == opTrustBundle {
		if s.opts.CA == nil {
			s.fail(w, r, errorf(http.StatusServiceUnavailable, "this gateway has no certificate authority configured"))
			return
		}
		reply(w, http.StatusOK, map[string]string{"certificate": string(s.opts.CA.TrustBundle())})
		return
	}
	id, e := s.authorize(r.Context(), req)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	switch req.op {
	case opSign:
		mac := hmac.New(sha256.New, id.Key)
		mac.Write(req.data)
		reply(w, http.StatusOK, map[string]string{"digest": base64.StdEncoding.EncodeToString(mac.Sum(nil))})
	case opServerCert:
		s.serverCert(w, r, req)
	}
}

// authorize finds the identity a sign or certificate request is for and
// checks that the calling process belongs to that module and asks for its
// current generation.
func (s *Server) authorize(ctx context.Context, req request) (identity.Identity, *apiError) {
	pid, ok := ctx.Value(peerKey{}).(int)
	if !ok {
		return identity.Identity{}, errorf(http.StatusForbidden, "the caller is unknown: the workload API serves modules over its unix socket only")
	}
	var caller string
	if s.opts.Callers != nil {
		caller, ok = s.opts.Callers.Owner(pid)
	}
	if !ok {
		return identity.Identity{}, errorf(http.StatusForbidden, "process %d is not a module of this gateway", pid)
	}
	if caller != req.module {
		return identity.Identity{}, errorf(http.StatusForbidden, "module %q may not use the identity of module %q", caller, req.module)
	}
	var id identity.Identity
	if s.opts.Identities != nil {
		id, ok = s.opts.Identities.Lookup(s.opts.DeviceID, req.module)
	}
	if !ok {
		return identity.Identity{}, errorf(http.StatusNotFound, "module %q has no identity on device %q", req.module, s.opts.DeviceID)
	}
	if id.GenerationID != req.genID {
		return identity.Identity{}, errorf(http.StatusForbidden, "generation id %q of module %q is not the current one; the module was redeployed, restart it to read IOTEDGE_MODULEGENERATIONID again", req.genID, req.module)
	}
	return id, nil
}

// dnsName matches a name usable as a DNS subject alternative name.
var dnsName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

func (s *Server) serverCert(w http.ResponseWriter, r *http.Request, req request) {
	if s.opts.CA == nil {
		s.fail(w, r, errorf(http.StatusServiceUnavailable, "this gateway has no certificate authority configured"))
		return
	}
	now := s.opts.Now()
	if !req.expiration.After(now) {
		s.fail(w, r, errorf(http.StatusBadRequest, "expiration %s is not in the future", req.expiration.Format(time.RFC3339)))
		return
	}
	notAfter := req.expiration
	if limit := now.Add(s.opts.MaxCertLifetime); notAfter.After(limit) {
		notAfter = limit
	}
	// As IoT Edge does, the module's name is a name of the certificate
	// too, so other modules can reach it by it.
	sans := []string{req.commonName}
	if m := strings.ToLower(req.module); m != strings.ToLower(req.commonName) && dnsName.MatchString(m) {
		sans = append(sans, m)
	}
	certPEM, keyPEM, err := s.opts.CA.IssueServerCert(req.commonName, sans, notAfter)
	if err != nil {
		s.fail(w, r, errorf(http.StatusInternalServerError, "issue a server certificate for %q: %v", req.commonName, err))
		return
	}
	// The certificate says when it really expires: the CA may have cut
	// the lifetime shorter still.
	exp := notAfter
	if b, _ := pem.Decode(certPEM); b != nil {
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			exp = c.NotAfter
		}
	}
	s.log.Info("issued a server certificate", "module", req.module, "commonName", req.commonName, "expiration", exp)
	reply(w, http.StatusCreated, map[string]any{
		"privateKey":  map[string]string{"type": "key", "bytes": string(keyPEM)},
		"certificate": string(certPEM),
		"expiration":  exp.UTC().Format(time.RFC3339),
	})
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	pid, _ := r.Context().Value(peerKey{}).(int)
	s.log.Warn("workload request refused", "method", r.Method, "path", r.URL.Path, "pid", pid, "status", e.status, "err", e.msg)
	reply(w, e.status, map[string]string{"message": e.msg})
}

func reply(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}
