package ota

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeUpdater checks it gets the bytes the server holds.
type fakeUpdater struct {
	want     []byte
	mu       sync.Mutex
	applied  int
	restarts []string
	err      error
}

func (u *fakeUpdater) Current() string { return "1.0.0" }

func (u *fakeUpdater) Apply(ctx context.Context, r io.Reader, progress func(done, total int64)) (string, error) {
	got, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	progress(int64(len(got)), int64(len(got)))
	u.mu.Lock()
	defer u.mu.Unlock()
	u.applied++
	if u.err != nil {
		return "", u.err
	}
	if !bytes.Equal(got, u.want) {
		return "", errors.New("bundle bytes differ")
	}
	return "1.1.0", nil
}

func (u *fakeUpdater) Restart(reason string) {
	u.mu.Lock()
	u.restarts = append(u.restarts, reason)
	u.mu.Unlock()
}

func (u *fakeUpdater) restarted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.restarts)
}

// server serves blob, dropping the first connection after half of it;
// later requests may resume with Range.
type server struct {
	*httptest.Server
	blob   []byte
	ranges atomic.Int32
	hits   atomic.Int32
}

func newServer(t *testing.T, blob []byte, drop bool) *server {
	s := &server{blob: blob}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.hits.Add(1)
		if r.Header.Get("Range") != "" {
			s.ranges.Add(1)
		}
		if drop && n == 1 {
			w.Header().Set("Content-Length", itoa(len(blob)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(blob[:len(blob)/2])
			// Cut the connection mid-body, as a flaky uplink does.
			hj, ok := w.(http.Hijacker)
			if !ok {
				t.Error("cannot hijack")
				return
			}
			conn, _, err := hj.Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		http.ServeContent(w, r, "bundle", time.Time{}, bytes.NewReader(blob))
	}))
	t.Cleanup(s.Close)
	return s
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func digest(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func start(t *testing.T, u Updater, desired map[string]any) *hub.Hub {
	t.Helper()
	h := hub.New(hub.Options{DeviceID: "dev"})
	t.Cleanup(func() { _ = h.Close() })
	m := New(Options{Updater: u, Dir: t.TempDir(), RetryDelay: time.Millisecond})
	if err := h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "ota", Module: m, Desired: desired}}}); err != nil {
		t.Fatal(err)
	}
	return h
}

func call(t *testing.T, h *hub.Hub, req any) hub.MethodResponse {
	t.Helper()
	b, _ := json.Marshal(req)
	var r hub.MethodResponse
	hubtest.WaitFor(t, "the ota module", func() bool {
		var err error
		r, err = h.InvokeMethod(context.Background(), "dev", "ota", hub.MethodRequest{Name: Method, Payload: b}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status != 404
	})
	return r
}

func firmware(t *testing.T, h *hub.Hub) map[string]any {
	t.Helper()
	tw, err := h.Twin("ota")
	if err != nil {
		t.Fatal(err)
	}
	fw, _ := tw.Reported.Doc["firmware"].(map[string]any)
	return fw
}

func TestMethodDownloadsResumesAppliesRestarts(t *testing.T) {
	blob := bytes.Repeat([]byte("tinyedge bundle "), 64*1024) // 1 MiB
	srv := newServer(t, blob, true)
	up := &fakeUpdater{want: blob}
	h := start(t, up, nil)
	r := call(t, h, Request{URL: srv.URL + "/b", SHA256: digest(blob), Size: int64(len(blob)), Version: "1.1.0"})
	if r.Status != 202 {
		t.Fatalf("firmwareUpdate = %d %s, want 202", r.Status, r.Payload)
	}
	hubtest.WaitFor(t, "the restart", func() bool { return up.restarted() == 1 })
	if srv.ranges.Load() == 0 {
		t.Error("the dropped download was not resumed with a Range request")
	}
	fw := firmware(t, h)
	if fw["state"] != "restarting" || fw["pending"] != "1.1.0" || fw["current"] != "1.0.0" || fw["error"] != "" {
		t.Errorf("reported firmware = %v", fw)
	}
}

func TestDesiredFirmwareStartsAnUpdate(t *testing.T) {
	blob := []byte("a small bundle")
	srv := newServer(t, blob, false)
	up := &fakeUpdater{want: blob}
	h := start(t, up, map[string]any{"firmware": map[string]any{
		"url": srv.URL, "sha256": digest(blob), "size": len(blob), "version": "1.1.0"}})
	hubtest.WaitFor(t, "the restart", func() bool { return up.restarted() == 1 })
	// The same desired property again (a twin re-read) does not update twice.
	if _, err := h.PatchDesired("ota", map[string]any{"other": 1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if up.restarted() != 1 || srv.hits.Load() != 1 {
		t.Errorf("restarts %d, downloads %d; want one each", up.restarted(), srv.hits.Load())
	}
}

func TestFailuresAreReported(t *testing.T) {
	blob := []byte("bundle bytes")
	for _, tt := range []struct {
		name string
		req  func(srv *server) Request
		err  error // the updater's
		want string
	}{
		{"digest mismatch", func(srv *server) Request {
			return Request{URL: srv.URL, SHA256: digest([]byte("other")), Size: int64(len(blob)), Version: "1.1.0"}
		}, nil, "sha256"},
		{"not found", func(srv *server) Request {
			return Request{URL: srv.URL + "/missing", SHA256: digest(blob), Size: int64(len(blob)), Version: "1.1.0"}
		}, nil, ""},
		{"refused by the updater", func(srv *server) Request {
			return Request{URL: srv.URL, SHA256: digest(blob), Size: int64(len(blob)), Version: "1.1.0"}
		}, errors.New("bundle: signature does not verify"), "signature does not verify"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var srv *server
			if tt.name == "not found" {
				srv = &server{}
				srv.Server = httptest.NewServer(http.NotFoundHandler())
				t.Cleanup(srv.Close)
			} else {
				srv = newServer(t, blob, false)
			}
			up := &fakeUpdater{want: blob, err: tt.err}
			h := start(t, up, nil)
			if r := call(t, h, tt.req(srv)); r.Status != 202 {
				t.Fatalf("status %d", r.Status)
			}
			hubtest.WaitFor(t, "the failure", func() bool { return firmware(t, h)["state"] == "failed" })
			if e, _ := firmware(t, h)["error"].(string); !strings.Contains(e, tt.want) {
				t.Errorf("error = %q, want it to mention %q", e, tt.want)
			}
			if up.restarted() != 0 {
				t.Error("restarted after a failed update")
			}
		})
	}
}

func TestBadRequestsRefused(t *testing.T) {
	h := start(t, &fakeUpdater{}, nil)
	good := Request{URL: "http://127.0.0.1:1/b", SHA256: strings.Repeat("ab", 32), Size: 10, Version: "1.1.0"}
	for _, bad := range []Request{
		{URL: "ftp://x/b", SHA256: good.SHA256, Size: 10, Version: "1"},
		{URL: good.URL, SHA256: "abc", Size: 10, Version: "1"},
		{URL: good.URL, SHA256: good.SHA256, Size: 0, Version: "1"},
		{URL: good.URL, SHA256: good.SHA256, Size: 10},
	} {
		if r := call(t, h, bad); r.Status != 400 {
			t.Errorf("request %+v: status %d, want 400", bad, r.Status)
		}
	}
}
