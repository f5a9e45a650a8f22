package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/deploy"
	"github.com/tinyedge/tinyedge/hub/process"
)

// TestControlStatusProviders checks that a registered status provider
// shows in `tinyedge status`, and that unknown operations get a message.
func TestControlStatusProviders(t *testing.T) {
	dir := t.TempDir()
	h := hub.New(hub.Options{DeviceID: "gw1"})
	defer h.Close()
	procs := process.NewHost(nil)
	c := newControl(h, procs, "gw1", slog.New(slog.DiscardHandler))
	// A module name may hold characters that must be escaped in a path.
	weird := "we?ird#name%2F"
	c.setDeployment(&deploy.Manifest{Modules: []deploy.Module{{Name: weird, Type: deploy.TypeProcess, Process: &deploy.Process{Path: "/bin/true"}}}})
	procs.Log(weird).Append("stdout", "hello")
	c.Register("upstream", func() any { return map[string]any{"connected": true, "queued": 3} })
	// A socket left by a crash is replaced: the data dir's lock keeps a
	// second tinyedge away, so no live server can be behind it.
	stale, err := net.Listen("unix", controlSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, errOut, code := runCLI(t, "list", "--data-dir", dir); code != 1 || !strings.Contains(errOut, "tinyedge is not running on this data directory (nobody answers") {
		t.Errorf("list on a stale socket: exit %d %q", code, errOut)
	}
	l, err := listenControl(controlSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- c.serve(l) }()
	defer func() {
		if err := c.shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()

	out, errOut, code := runCLI(t, "status", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("status: exit %d %s", code, errOut)
	}
	for _, want := range []string{`"upstream": {`, `"connected": true`, `"queued": 3`, `"deviceId": "gw1"`, `"version": "dev"`} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %s:\n%s", want, out)
		}
	}

	if out, errOut, code := runCLI(t, "logs", weird, "--data-dir", dir); code != 0 || out != "hello\n" {
		t.Errorf("logs %s: exit %d, %q %q", weird, code, out, errOut)
	}

	cc := newControlClient(dir)
	defer cc.close()
	var v any
	err = cc.getJSON(context.Background(), "/v2/nothing", &v)
	if err == nil || !strings.Contains(err.Error(), "no such control operation GET /v2/nothing") {
		t.Errorf("unknown operation: %v", err)
	}
}
