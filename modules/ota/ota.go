// Package ota is the built-in module that takes firmware updates from the
// cloud: the direct method "firmwareUpdate", or the desired property
// "firmware", both with {"url", "sha256", "size", "version"}. It downloads
// the signed bundle over HTTP(S), resuming after a dropped connection,
// checks its size and SHA-256, and hands it to the device's Updater, which
// verifies the signature and writes the inactive slot; then it asks for
// the restart into the new version. Progress and the outcome are reported
// in the twin:
//
//	"firmware": {"current": "1.2.0", "pending": "1.3.0", "state": "downloading",
//	             "progress": 42, "error": ""}
//
// States: idle, downloading, applying, restarting, failed.
package ota

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tinyedge/tinyedge/hub"
)

// Method is the direct method that starts an update.
const Method = "firmwareUpdate"

// Updater is the device's side of an update, provided by the binary: it
// verifies and installs a bundle, and restarts into it.
type Updater interface {
	// Current is the running version.
	Current() string
	// Apply verifies the signed bundle read from r and installs it in the
	// inactive slot, reporting progress; it returns the version installed.
	Apply(ctx context.Context, r io.Reader, progress func(done, total int64)) (version string, err error)
	// Restart ends this process so the new version boots on trial.
	Restart(reason string)
}

// Request is an update request.
type Request struct {
	URL     string `json:"url"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	Version string `json:"version"`
}

func (r Request) check() error {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("url %q is not an http(s) URL", r.URL)
	}
	if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("sha256 %q is not 64 hex digits", r.SHA256)
	}
	if r.Size <= 0 {
		return fmt.Errorf("size %d is not a positive number of bytes", r.Size)
	}
	if r.Version == "" {
		return errors.New("version is missing")
	}
	return nil
}

// Options configure a Module.
type Options struct {
	Updater Updater
	// Dir is where downloads are kept while they happen (resumable across
	// dropped connections); default os.TempDir().
	Dir string
	// Client is the HTTP client; default one with a 30 s connect and
	// header timeout and no overall limit (bundles are large).
	Client *http.Client
	// Retries is how many times a dropped download is resumed; default 10.
	Retries int
	// RetryDelay paces the resumes; default 2 s, doubling.
	RetryDelay time.Duration
}

// Module is the OTA module.
type Module struct {
	opts Options
}

var _ hub.Module = (*Module)(nil)

// New returns an OTA module; opts.Updater is required.
func New(opts Options) *Module {
	if opts.Dir == "" {
		opts.Dir = os.TempDir()
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
		}}
	}
	if opts.Retries <= 0 {
		opts.Retries = 10
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = 2 * time.Second
	}
	return &Module{opts: opts}
}

// status is the reported "firmware" property.
type status struct {
	Current  string `json:"current"`
	Pending  string `json:"pending"`
	State    string `json:"state"`
	Progress int    `json:"progress"`
	Error    string `json:"error"`
}

type run struct {
	m   *Module
	c   *hub.Client
	log *slog.Logger

	ctx context.Context // the run's: updates end with it

	mu      sync.Mutex
	st      status
	busy    bool
	lastReq Request // the last desired request acted on, so a twin re-read does not restart it
	wg      sync.WaitGroup
}

// Run serves update requests until ctx ends; an update in progress is
// abandoned (its partial download stays for the next try to resume).
func (m *Module) Run(ctx context.Context, c *hub.Client) error {
	if m.opts.Updater == nil {
		return errors.New("ota: no updater configured")
	}
	r := &run{m: m, c: c, log: c.Logger(), ctx: ctx, st: status{Current: m.opts.Updater.Current(), State: "idle"}}
	defer r.wg.Wait()
	r.report(ctx)
	c.OnMethod(Method, func(ctx context.Context, req hub.MethodRequest) hub.MethodResponse {
		var u Request
		if err := json.Unmarshal(req.Payload, &u); err != nil {
			return respond(400, map[string]string{"message": `want {"url", "sha256", "size", "version"}: ` + err.Error()})
		}
		if err := r.start(ctx, u); err != nil {
			return respond(400, map[string]string{"message": err.Error()})
		}
		return respond(202, map[string]string{"state": "downloading", "version": u.Version})
	})
	tw, err := c.Twin(ctx)
	if err == nil {
		r.desired(ctx, tw.Desired.Doc)
	}
	c.OnDesiredChange(func(ctx context.Context, patch map[string]any, _ int64) { r.desired(ctx, patch) })
	<-ctx.Done()
	return nil
}

func respond(status int, v any) hub.MethodResponse {
	b, _ := json.Marshal(v)
	return hub.MethodResponse{Status: status, Payload: b}
}

// desired starts the update the desired property "firmware" asks for,
// unless it is the running version or already being handled.
func (r *run) desired(ctx context.Context, doc map[string]any) {
	v, ok := doc["firmware"]
	if !ok || v == nil {
		return
	}
	b, _ := json.Marshal(v)
	var u Request
	if err := json.Unmarshal(b, &u); err != nil {
		r.log.Warn("ignoring desired firmware: not {url, sha256, size, version}", "err", err)
		return
	}
	r.mu.Lock()
	same := u == r.lastReq || u.Version == r.st.Current
	r.mu.Unlock()
	if same {
		return
	}
	if err := r.start(ctx, u); err != nil {
		r.log.Warn("ignoring desired firmware", "err", err)
		r.set(ctx, func(s *status) { s.State, s.Error = "failed", err.Error() })
	}
}

// start begins an update in the background; it refuses a bad request or a
// second one while the first runs.
func (r *run) start(_ context.Context, u Request) error {
	if err := u.check(); err != nil {
		return err
	}
	r.mu.Lock()
	if r.busy {
		pending := r.st.Pending
		r.mu.Unlock()
		return fmt.Errorf("an update to %s is already in progress", pending)
	}
	r.busy, r.lastReq = true, u
	r.mu.Unlock()
	// The update belongs to the run, not to the method call that started
	// it: it goes on after the call has answered, and stops with the run.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { r.mu.Lock(); r.busy = false; r.mu.Unlock() }()
		r.update(r.ctx, u)
	}()
	return nil
}

func (r *run) set(ctx context.Context, f func(*status)) {
	r.mu.Lock()
	f(&r.st)
	r.mu.Unlock()
	r.report(ctx)
}

func (r *run) report(ctx context.Context) {
	r.mu.Lock()
	st := r.st
	r.mu.Unlock()
	if _, err := r.c.UpdateReported(ctx, map[string]any{"firmware": map[string]any{
		"current": st.Current, "pending": st.Pending, "state": st.State, "progress": st.Progress, "error": st.Error,
	}}); err != nil && ctx.Err() == nil {
		r.log.Warn("report firmware status", "err", err)
	}
}

// update downloads, installs and restarts.
func (r *run) update(ctx context.Context, u Request) {
	r.log.Info("firmware update starting", "version", u.Version, "url", u.URL, "size", u.Size)
	r.set(ctx, func(s *status) { *s = status{Current: s.Current, Pending: u.Version, State: "downloading"} })
	path, err := r.download(ctx, u)
	if err != nil {
		r.fail(ctx, "download", err)
		return
	}
	r.set(ctx, func(s *status) { s.State, s.Progress = "applying", 0 })
	f, err := os.Open(path)
	if err != nil {
		r.fail(ctx, "apply", err)
		return
	}
	version, err := r.m.opts.Updater.Apply(ctx, f, func(done, total int64) {
		if total > 0 {
			pct := int(done * 100 / total)
			r.mu.Lock()
			changed := pct/10 != r.st.Progress/10 || pct == 100
			r.st.Progress = pct
			r.mu.Unlock()
			if changed {
				r.report(ctx)
			}
		}
	})
	f.Close()
	os.Remove(path)
	if err != nil {
		r.fail(ctx, "apply", err)
		return
	}
	if version != u.Version {
		r.log.Warn("the bundle's version differs from the request's", "requested", u.Version, "bundle", version)
	}
	r.set(ctx, func(s *status) { s.State, s.Pending, s.Progress = "restarting", version, 100 })
	r.log.Info("firmware installed; restarting into it", "version", version)
	r.m.opts.Updater.Restart("firmware update to " + version)
}

func (r *run) fail(ctx context.Context, step string, err error) {
	r.log.Error("firmware update failed", "step", step, "err", err)
	r.set(ctx, func(s *status) { s.State, s.Error = "failed", step+": "+err.Error() })
}

// download fetches u into a file named after its digest, resuming a
// partial file from an earlier try or a dropped connection with an HTTP
// Range request, and checks size and SHA-256. It returns the file's path.
func (r *run) download(ctx context.Context, u Request) (string, error) {
	path := filepath.Join(r.m.opts.Dir, "tinyedge-download-"+strings.ToLower(u.SHA256))
	delay := r.m.opts.RetryDelay
	var last error
	for try := 0; try <= r.m.opts.Retries; try++ {
		if try > 0 {
			r.log.Warn("download interrupted; resuming", "err", last, "try", try, "in", delay)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return "", ctx.Err()
			case <-t.C:
			}
			delay = min(2*delay, time.Minute)
		}
		err := r.fetch(ctx, u, path)
		if err == nil {
			break
		}
		last = err
		if _, ok := errors.AsType[permanent](err); ok || ctx.Err() != nil {
			return "", err
		}
		if try == r.m.opts.Retries {
			return "", fmt.Errorf("gave up after %d tries: %w", try+1, err)
		}
	}
	if err := verifyFile(path, u); err != nil {
		os.Remove(path) // a wrong file is not resumed
		return "", err
	}
	return path, nil
}

// permanent marks download errors that another try cannot fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// fetch appends to path what the server has beyond its current size, and
// returns nil once the file is complete.
func (r *run) fetch(ctx context.Context, u Request, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return permanent{err}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return permanent{err}
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return permanent{err}
	}
	if have > u.Size {
		// Not the file we were asked for; start over.
		if err := f.Truncate(0); err != nil {
			return err
		}
		have, _ = f.Seek(0, io.SeekStart)
	}
	if have == u.Size {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.URL, nil)
	if err != nil {
		return permanent{err}
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := r.m.opts.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
	case resp.StatusCode == http.StatusOK:
		// The server ignored the range: take the whole file again.
		if err := f.Truncate(0); err != nil {
			return err
		}
		if have, err = f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("server refused to resume at byte %d (416)", have)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return permanent{fmt.Errorf("server answered %s", resp.Status)}
	default:
		return fmt.Errorf("server answered %s", resp.Status)
	}
	buf := make([]byte, 32*1024)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if have+int64(n) > u.Size {
				return permanent{fmt.Errorf("the server sent more than the %d bytes requested", u.Size)}
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return permanent{fmt.Errorf("write %s: %w", path, err)}
			}
			have += int64(n)
			r.progress(have, u.Size)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if have < u.Size {
		return fmt.Errorf("connection closed at byte %d of %d", have, u.Size)
	}
	return nil
}

func (r *run) progress(done, total int64) {
	pct := int(done * 100 / total)
	r.mu.Lock()
	changed := pct/10 != r.st.Progress/10
	r.st.Progress = pct
	r.mu.Unlock()
	if changed {
		r.report(context.Background())
	}
}

func verifyFile(path string, u Request) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != u.Size {
		return fmt.Errorf("downloaded %d bytes, the request said %d", n, u.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, u.SHA256) {
		return fmt.Errorf("downloaded file has sha256 %s, the request said %s", got, u.SHA256)
	}
	return nil
}
