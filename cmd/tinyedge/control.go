package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/deploy"
	"github.com/tinyedge/tinyedge/hub/process"
)

// The control socket is how the CLI asks a running tinyedge what it is
// doing: HTTP with JSON on a unix socket in the data directory, readable
// by its owner only.
//
//	GET /v1/modules                          → [moduleInfo, …]
//	GET /v1/modules/{name}/logs?tail=N&follow=true
//	                                         → process.Line per line (NDJSON): a process
//	                                           module's output (stream stdout or stderr), a
//	                                           built-in module's log lines (stream log)
//	GET /v1/status                           → {"version", "deviceId", "started", <provider>: …}
//	POST /v1/modules/{name}/restart          → moduleInfo, after the restart
//	POST /v1/identities/rotate {"module"} or {"device"}
//	                                         → rotation: a module's (or a leaf device's
//	                                           generated) key and generation id made anew
//
// Errors are {"message": "…"}.

// controlSocket is the control socket's path in a data directory.
func controlSocket(dataDir string) string { return filepath.Join(dataDir, "control.sock") }

// moduleInfo is one module as `tinyedge list` shows it.
type moduleInfo struct {
	Name        string    `json:"name"`
	Type        string    `json:"type"`        // builtin, docker or process
	Description string    `json:"description"` // the image, or the program and its arguments
	State       string    `json:"state"`       // running, backoff, stopped, failed
	Restarts    int       `json:"restarts"`
	Since       time.Time `json:"since"` // when it entered State
	LastExit    string    `json:"lastExit,omitempty"`
	Healthy     bool      `json:"healthy"`
	Health      string    `json:"health,omitempty"`
	PID         int       `json:"pid,omitempty"` // of a running process module
}

// moduleDesc is what the deployment says of a module.
type moduleDesc struct {
	typ, description string
}

// statusFunc reports one part of `tinyedge status`; its result is encoded
// as JSON.
type statusFunc func() any

// control serves the control socket.
type control struct {
	hub      *hub.Hub
	procs    *process.Host
	deviceID string
	started  time.Time
	log      *slog.Logger

	mods atomic.Pointer[map[string]moduleDesc] // of the deployment in force

	mu        sync.Mutex
	providers map[string]statusFunc
	rotate    func(deviceID, moduleID string) (rotation, error) // nil: rotation is not offered

	srv  *http.Server
	base context.Context // ends at shutdown, and with it every follow
	stop context.CancelFunc
}

func newControl(h *hub.Hub, procs *process.Host, deviceID string, log *slog.Logger) *control {
	c := &control{hub: h, procs: procs, deviceID: deviceID, started: time.Now(), log: log, providers: map[string]statusFunc{}}
	c.base, c.stop = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/modules", c.modules)
	mux.HandleFunc("GET /v1/modules/{name}/logs", c.logs)
	mux.HandleFunc("GET /v1/status", c.status)
	mux.HandleFunc("POST /v1/modules/{name}/restart", c.restart)
	mux.HandleFunc("POST /v1/identities/rotate", c.rotateIdentity)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		replyError(w, http.StatusNotFound, fmt.Sprintf("no such control operation %s %s", r.Method, r.URL.Path))
	})
	c.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return c.base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	empty := map[string]moduleDesc{}
	c.mods.Store(&empty)
	return c
}

// Register adds a part to `tinyedge status`, under name; f is called for
// each request and must be safe for concurrent use.
func (c *control) Register(name string, f statusFunc) {
	c.mu.Lock()
	c.providers[name] = f
	c.mu.Unlock()
}

// setDeployment records the modules of the deployment now in force.
func (c *control) setDeployment(m *deploy.Manifest) {
	mods := make(map[string]moduleDesc, len(m.Modules))
	for _, mod := range m.Modules {
		d := moduleDesc{typ: mod.Type, description: mod.Image}
		if mod.Process != nil {
			d.description = strings.Join(append([]string{mod.Process.Path}, mod.Process.Args...), " ")
		}
		mods[mod.Name] = d
	}
	c.mods.Store(&mods)
}

// listenControl makes the control socket. tinyedge holds the data
// directory's lock, so a socket already there is a crash's leftover.
func listenControl(path string) (net.Listener, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("control socket %s: the path is %d bytes long, a unix socket's may be 107; use a shorter --data-dir", path, len(path))
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: a file that is not a socket is in the way; remove it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return l, nil
}

// serve answers on l until shutdown.
func (c *control) serve(l net.Listener) error {
	if err := c.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// shutdown ends every follow and stops the server.
func (c *control) shutdown(ctx context.Context) error {
	c.stop()
	if err := c.srv.Shutdown(ctx); err != nil {
		c.srv.Close()
		return err
	}
	return nil
}

func (c *control) moduleList() []moduleInfo {
	mods := *c.mods.Load()
	pids := map[string]int{}
	if c.procs != nil {
		pids = c.procs.PIDs()
	}
	var out []moduleInfo
	for _, st := range c.hub.ModuleStatus() {
		d := mods[st.Name]
		info := moduleInfo{
			Name: st.Name, Type: d.typ, Description: d.description,
			State: string(st.State), Restarts: st.RestartCount, Since: st.Since,
			LastExit: st.LastExit, Healthy: st.Healthy, Health: st.Health,
		}
		if st.State == hub.StateRunning {
			info.PID = pids[st.Name]
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (c *control) modules(w http.ResponseWriter, _ *http.Request) {
	reply(w, c.moduleList())
}

func (c *control) logs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	_, ok := (*c.mods.Load())[name]
	switch {
	case !ok:
		replyError(w, http.StatusNotFound, fmt.Sprintf("no module %q in the deployment", name))
		return
	case c.procs == nil:
		replyError(w, http.StatusNotFound, fmt.Sprintf("this tinyedge keeps no module logs; module %q's lines are in tinyedge's own log, tagged module=%s", name, name))
		return
	}
	q := r.URL.Query()
	tail := -1
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			replyError(w, http.StatusBadRequest, fmt.Sprintf("tail %q is not a number of lines", v))
			return
		}
		tail = n
	}
	follow := q.Get("follow") == "true"

	l := c.procs.Log(name)
	lines, next, _ := l.Since(0)
	if tail >= 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	for _, ln := range lines {
		if err := enc.Encode(ln); err != nil {
			return
		}
	}
	if !follow {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	// Until the client goes or tinyedge stops (r's context ends with
	// either).
	l.Follow(r.Context(), next, func(ln process.Line) error {
		if err := enc.Encode(ln); err != nil {
			return err
		}
		return rc.Flush()
	})
}

func (c *control) status(w http.ResponseWriter, _ *http.Request) {
	out := map[string]any{
		"version":  version,
		"deviceId": c.deviceID,
		"started":  c.started.UTC().Format(time.RFC3339),
		"modules":  c.moduleList(),
	}
	c.mu.Lock()
	providers := make(map[string]statusFunc, len(c.providers))
	for k, f := range c.providers {
		providers[k] = f
	}
	c.mu.Unlock()
	for k, f := range providers {
		out[k] = f()
	}
	reply(w, out)
}

// restart stops a module and starts it again, as `iotedge restart` does:
// a process module's program runs anew, a built-in module's goroutine.
func (c *control) restart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := c.hub.Restart(name)
	switch {
	case errors.Is(err, hub.ErrUnknownModule):
		replyError(w, http.StatusNotFound, fmt.Sprintf("no module %q in the deployment", name))
		return
	case errors.Is(err, hub.ErrNotRestartable):
		replyError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		replyError(w, http.StatusInternalServerError, err.Error())
		return
	}
	c.log.Info("module restarted from the control socket", "module", name)
	for _, m := range c.moduleList() {
		if m.Name == name {
			reply(w, m)
			return
		}
	}
	// A deployment removed it meanwhile.
	replyError(w, http.StatusNotFound, fmt.Sprintf("no module %q in the deployment", name))
}

// rotation is the outcome of POST /v1/identities/rotate.
type rotation struct {
	DeviceID     string `json:"deviceId"`
	ModuleID     string `json:"moduleId,omitempty"`
	GenerationID string `json:"generationId"`
	Restarted    bool   `json:"restarted"` // a process module, started again with its new generation id
	Closed       int    `json:"closed"`    // connections made with the old key, closed
}

// rotateRequest names what to rotate: a module of the edge device, or a
// leaf device.
type rotateRequest struct {
	Module string `json:"module"`
	Device string `json:"device"`
}

// errNoIdentity is a rotation of an identity tinyedge does not keep.
var errNoIdentity = errors.New("no such identity")

func (c *control) setRotate(f func(deviceID, moduleID string) (rotation, error)) {
	c.mu.Lock()
	c.rotate = f
	c.mu.Unlock()
}

func (c *control) rotateIdentity(w http.ResponseWriter, r *http.Request) {
	var req rotateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		replyError(w, http.StatusBadRequest, fmt.Sprintf("rotate: the body is not {\"module\": …} or {\"device\": …}: %v", err))
		return
	}
	if (req.Module == "") == (req.Device == "") {
		replyError(w, http.StatusBadRequest, `rotate: name either a module ({"module": …}) or a leaf device ({"device": …})`)
		return
	}
	c.mu.Lock()
	rotate := c.rotate
	c.mu.Unlock()
	if rotate == nil {
		replyError(w, http.StatusServiceUnavailable, "rotate: this tinyedge keeps no identities")
		return
	}
	dev, mod := req.Device, req.Module
	if mod != "" {
		dev = c.deviceID
	}
	out, err := rotate(dev, mod)
	switch {
	case errors.Is(err, errNoIdentity):
		replyError(w, http.StatusNotFound, err.Error())
	case err != nil:
		replyError(w, http.StatusInternalServerError, err.Error())
	default:
		reply(w, out)
	}
}

func reply(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		replyError(w, http.StatusInternalServerError, fmt.Sprintf("encode the answer: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func replyError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// controlClient talks to the control socket of the tinyedge running on a
// data directory.
type controlClient struct {
	sock string
	http *http.Client
	tr   *http.Transport
}

func newControlClient(dataDir string) *controlClient {
	sock := controlSocket(dataDir)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &controlClient{sock: sock, http: &http.Client{Transport: tr}, tr: tr}
}

func (cc *controlClient) close() { cc.tr.CloseIdleConnections() }

// get sends GET path and returns the response for a 200, or an error with
// the server's message.
func (cc *controlClient) get(ctx context.Context, path string) (*http.Response, error) {
	return cc.do(ctx, http.MethodGet, path, nil)
}

// do sends a request and returns the response for a 200, or an error
// with the server's message.
func (cc *controlClient) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://tinyedge"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := cc.http.Do(req)
	if err != nil {
		if _, serr := os.Stat(cc.sock); errors.Is(serr, os.ErrNotExist) {
			return nil, fmt.Errorf("tinyedge is not running on this data directory (no control socket %s); give --data-dir", cc.sock)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("tinyedge is not running on this data directory (nobody answers on %s, left by a tinyedge that was killed); give --data-dir", cc.sock)
		}
		return nil, fmt.Errorf("control socket %s: %w", cc.sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct{ Message string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("%s", e.Message)
	}
	return resp, nil
}

// getJSON decodes the answer to GET path into v.
func (cc *controlClient) getJSON(ctx context.Context, path string, v any) error {
	return cc.doJSON(ctx, http.MethodGet, path, nil, v)
}

// postJSON sends in as the body of POST path and decodes the answer
// into out.
func (cc *controlClient) postJSON(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return cc.doJSON(ctx, http.MethodPost, path, bytes.NewReader(b), out)
}

// doJSON sends a request and decodes the answer into out.
func (cc *controlClient) doJSON(ctx context.Context, method, path string, body io.Reader, out any) error {
	resp, err := cc.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("control socket %s: %s: %w", cc.sock, path, err)
	}
	return nil
}

// modulePath is the control path of a module's resource.
func modulePath(name, rest string) string {
	return "/v1/modules/" + url.PathEscape(name) + rest
}
