package process

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func needSh(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skipf("no sh: %v", err)
	}
}

// alive reports whether pid is a process that has not finished.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X'
}

type fixture struct {
	hub  *hub.Hub
	host *Host
	log  *hubtest.SyncBuffer
}

func start(t *testing.T, opts *Options, specs ...hub.ModuleSpec) *fixture {
	t.Helper()
	needSh(t)
	f := &fixture{host: NewHost(opts), log: &hubtest.SyncBuffer{}}
	f.hub = hub.New(hub.Options{
		DeviceID: "gw1",
		Logger:   slog.New(slog.NewTextHandler(f.log, nil)),
		Backoff:  hub.Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond},
	})
	t.Cleanup(func() { f.hub.Close() })
	for i := range specs {
		if specs[i].Module == nil {
			t.Fatal("spec without module")
		}
	}
	if err := f.hub.Deploy(hub.Deployment{Modules: specs}); err != nil {
		t.Fatal(err)
	}
	return f
}

func sh(h *Host, script string) hub.Module {
	return h.Module(Settings{Path: "/bin/sh", Args: []string{"-c", script}})
}

func (f *fixture) status(name string) hub.ModuleStatus {
	for _, s := range f.hub.ModuleStatus() {
		if s.Name == name {
			return s
		}
	}
	return hub.ModuleStatus{}
}

func (f *fixture) lines(module string) []string {
	var out []string
	for _, ln := range f.host.Log(module).Tail(0) {
		out = append(out, ln.Stream+": "+ln.Text)
	}
	return out
}

func (f *fixture) has(module, line string) bool {
	for _, l := range f.lines(module) {
		if l == line {
			return true
		}
	}
	return false
}

func TestOutputAndEnvironment(t *testing.T) {
	t.Setenv("TINYEDGE_SECRET", "must not leak")
	dir := t.TempDir()
	opts := &Options{Edge: &Edge{
		WorkloadURI: "unix:///run/w.sock", IoTHubHostname: "hub.example", GatewayHostname: "gw.local",
		GenerationID: func(d, m string) (string, error) { return "gen-" + d + "-" + m, nil },
	}}
	h := NewHost(opts)
	script := `for v in IOTEDGE_WORKLOADURI IOTEDGE_DEVICEID IOTEDGE_MODULEID IOTEDGE_MODULEGENERATIONID IOTEDGE_IOTHUBHOSTNAME IOTEDGE_GATEWAYHOSTNAME IOTEDGE_AUTHSCHEME IOTEDGE_APIVERSION Greeting TINYEDGE_SECRET; do eval "echo $v=\${$v-unset}"; done
pwd
echo "to stderr" >&2
printf 'no newline at the end'
exec sleep 1000`
	f := start(t, opts, hub.ModuleSpec{
		Name: "envmod", Module: h.Module(Settings{Path: "sh", Args: []string{"-c", script}, WorkingDir: dir}),
		Env: map[string]string{"Greeting": "hi", "IOTEDGE_MODULEID": "spoofed"},
	})
	f.host = h
	want := []string{
		"stdout: IOTEDGE_WORKLOADURI=unix:///run/w.sock",
		"stdout: IOTEDGE_DEVICEID=gw1",
		"stdout: IOTEDGE_MODULEID=envmod",
		"stdout: IOTEDGE_MODULEGENERATIONID=gen-gw1-envmod",
		"stdout: IOTEDGE_IOTHUBHOSTNAME=hub.example",
		"stdout: IOTEDGE_GATEWAYHOSTNAME=gw.local",
		"stdout: IOTEDGE_AUTHSCHEME=sasToken",
		"stdout: IOTEDGE_APIVERSION=2018-06-28",
		"stdout: Greeting=hi",
		"stdout: TINYEDGE_SECRET=unset",
		"stdout: " + dir,
		"stderr: to stderr",
	}
	// stdout and stderr are read apart, so their lines may interleave.
	hubtest.WaitFor(t, "the module's output", func() bool {
		for _, w := range want {
			if !f.has("envmod", w) {
				return false
			}
		}
		return len(h.PIDs()) == 1
	})
	// Lines are logged with the module's name.
	hubtest.WaitFor(t, "the logged line", func() bool {
		return strings.Contains(f.log.String(), `msg="to stderr" module=envmod stream=stderr`)
	})
	pid := h.PIDs()["envmod"]
	if err := f.hub.Close(); err != nil {
		t.Fatal(err)
	}
	// The last line without a line end is kept when the process ends.
	if !f.has("envmod", "stdout: no newline at the end") {
		t.Errorf("the unterminated last line was lost: %q", f.lines("envmod"))
	}
	if alive(pid) {
		t.Errorf("process %d still runs after Close", pid)
	}
	if len(h.PIDs()) != 0 {
		t.Errorf("PIDs after Close: %v", h.PIDs())
	}
}

func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		policy   hub.RestartPolicy
		script   string
		restarts bool
		state    hub.ModuleState
	}{
		{hub.RestartOnFailure, "echo run; exit 3", true, ""},
		{hub.RestartAlways, "echo run; exit 0", true, ""},
		{hub.RestartOnFailure, "echo run; exit 0", false, hub.StateStopped},
		{hub.RestartNever, "echo run; exit 3", false, hub.StateFailed},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.policy, tt.script), func(t *testing.T) {
			h := NewHost(nil)
			f := start(t, nil, hub.ModuleSpec{Name: "m", Module: sh(h, tt.script), RestartPolicy: tt.policy})
			f.host = h
			if tt.restarts {
				hubtest.WaitFor(t, "two restarts", func() bool { return f.status("m").RestartCount >= 2 })
				if n := strings.Count(strings.Join(f.lines("m"), "\n"), "stdout: run"); n < 2 {
					t.Errorf("%d runs in the log, want the output of each run", n)
				}
				if strings.Contains(tt.script, "exit 3") && !strings.Contains(f.status("m").LastExit, "exit status 3") {
					t.Errorf("LastExit = %q, want the exit status", f.status("m").LastExit)
				}
				return
			}
			hubtest.WaitFor(t, "state "+string(tt.state), func() bool { return f.status("m").State == tt.state })
			st := f.status("m")
			if st.RestartCount != 0 {
				t.Errorf("restarted %d times", st.RestartCount)
			}
			if tt.state == hub.StateFailed && !strings.Contains(st.LastExit, "exit status 3") {
				t.Errorf("LastExit = %q", st.LastExit)
			}
		})
	}
}

func TestStartFailure(t *testing.T) {
	h := NewHost(nil)
	f := start(t, nil, hub.ModuleSpec{Name: "m", Module: h.Module(Settings{Path: "/nonexistent/prog"}), RestartPolicy: hub.RestartNever})
	hubtest.WaitFor(t, "the failure", func() bool { return f.status("m").State == hub.StateFailed })
	if got := f.status("m").LastExit; !strings.Contains(got, "start /nonexistent/prog") || !strings.Contains(got, "no such file") {
		t.Errorf("LastExit = %q", got)
	}
}

func TestTermThenKill(t *testing.T) {
	t.Run("handles TERM", func(t *testing.T) {
		h := NewHost(&Options{Grace: 30 * time.Second})
		f := start(t, nil, hub.ModuleSpec{Name: "m", Module: sh(h, `trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done`)})
		f.host = h
		hubtest.WaitFor(t, "ready", func() bool { return f.has("m", "stdout: ready") })
		start := time.Now()
		if err := f.hub.Close(); err != nil {
			t.Fatal(err)
		}
		if !f.has("m", "stdout: got TERM") {
			t.Errorf("the program did not see SIGTERM: %q", f.lines("m"))
		}
		// Well within the 30 s grace: TERM was enough, no KILL waited for.
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("stopping took %v", d)
		}
		if strings.Contains(f.log.String(), "killing it") {
			t.Error("SIGKILL sent to a program that stopped on SIGTERM")
		}
	})
	t.Run("ignores TERM", func(t *testing.T) {
		h := NewHost(&Options{Grace: 100 * time.Millisecond})
		f := start(t, nil, hub.ModuleSpec{Name: "m", Module: sh(h, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)})
		f.host = h
		hubtest.WaitFor(t, "ready", func() bool { return f.has("m", "stdout: ready") })
		pid := h.PIDs()["m"]
		if err := f.hub.Close(); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(f.log.String(), "did not stop after SIGTERM; killing it") {
			t.Errorf("no SIGKILL logged:\n%s", f.log.String())
		}
		if alive(pid) {
			t.Errorf("process %d survived", pid)
		}
	})
}

// grandchild starts a module whose shell starts a background sleep,
// prints its pid, then runs rest; it returns the grandchild's pid.
func grandchild(t *testing.T, policy hub.RestartPolicy, rest string) (*fixture, int) {
	t.Helper()
	h := NewHost(&Options{Grace: 2 * time.Second})
	f := start(t, nil, hub.ModuleSpec{Name: "m", RestartPolicy: policy, Module: sh(h, `sleep 1000 & echo "child $!"; `+rest)})
	f.host = h
	var pid int
	hubtest.WaitFor(t, "the grandchild's pid", func() bool {
		for _, l := range f.lines("m") {
			if p, ok := strings.CutPrefix(l, "stdout: child "); ok {
				pid, _ = strconv.Atoi(p)
			}
		}
		return pid > 0
	})
	return f, pid
}

func TestNoLeftovers(t *testing.T) {
	t.Run("stopped", func(t *testing.T) {
		f, gpid := grandchild(t, hub.RestartAlways, "wait")
		if !alive(gpid) {
			t.Fatalf("grandchild %d is not running", gpid)
		}
		// The grandchild is taken for the module: it is in its group.
		if m, ok := f.host.Owner(gpid); !ok || m != "m" {
			t.Errorf("Owner(grandchild) = %q, %v; want m", m, ok)
		}
		if err := f.hub.Close(); err != nil {
			t.Fatal(err)
		}
		if alive(gpid) {
			t.Errorf("grandchild %d still runs after the module stopped", gpid)
		}
	})
	t.Run("exited", func(t *testing.T) {
		f, gpid := grandchild(t, hub.RestartNever, "exit 0")
		hubtest.WaitFor(t, "the module to stop", func() bool { return f.status("m").State == hub.StateStopped })
		if alive(gpid) {
			t.Errorf("grandchild %d still runs after its module exited", gpid)
		}
	})
}

func TestOwner(t *testing.T) {
	h := NewHost(nil)
	// The inner shell reports its own pid: a child of the module's
	// process, as node's workers would be.
	f := start(t, nil, hub.ModuleSpec{Name: "outer", Module: sh(h, `sh -c 'echo "inner $$"; exec sleep 1000'; exit 0`)})
	f.host = h
	var inner int
	hubtest.WaitFor(t, "the inner pid", func() bool {
		for _, l := range f.lines("outer") {
			if p, ok := strings.CutPrefix(l, "stdout: inner "); ok {
				inner, _ = strconv.Atoi(p)
			}
		}
		return inner > 0
	})
	if m, ok := h.Owner(inner); !ok || m != "outer" {
		t.Errorf("Owner(child of the module) = %q, %v", m, ok)
	}
	if m, ok := h.Owner(h.PIDs()["outer"]); !ok || m != "outer" {
		t.Errorf("Owner(module process) = %q, %v", m, ok)
	}
	if m, ok := h.Owner(os.Getpid()); ok {
		t.Errorf("Owner(tinyedge itself) = %q", m)
	}
}

func TestLogRing(t *testing.T) {
	l := newLog(3)
	for i := 1; i <= 5; i++ {
		l.add("stdout", strconv.Itoa(i))
	}
	texts := func(ls []Line) string {
		var s []string
		for _, x := range ls {
			s = append(s, x.Text)
		}
		return strings.Join(s, ",")
	}
	if got := texts(l.Tail(0)); got != "3,4,5" {
		t.Errorf("Tail(0) = %s, want 3,4,5", got)
	}
	if got := texts(l.Tail(2)); got != "4,5" {
		t.Errorf("Tail(2) = %s", got)
	}
	lines, next, _ := l.Since(1) // 1 and 2 were dropped
	if texts(lines) != "3,4,5" || next != 6 {
		t.Errorf("Since(1) = %s, %d", texts(lines), next)
	}
	lines, next, changed := l.Since(6)
	if len(lines) != 0 || next != 6 {
		t.Errorf("Since(next) = %s, %d", texts(lines), next)
	}
	l.add("stderr", "6")
	select {
	case <-changed:
	default:
		t.Error("changed not closed by a new line")
	}

	ctx, cancel := context.WithCancel(context.Background())
	var got []string
	err := l.Follow(ctx, 5, func(ln Line) error {
		got = append(got, ln.Text)
		if ln.Text == "6" {
			cancel()
		}
		return nil
	})
	if err != nil || strings.Join(got, ",") != "5,6" {
		t.Errorf("Follow = %v, %v", got, err)
	}
}

func TestCaptureCutsLongLines(t *testing.T) {
	l := newLog(10)
	long := strings.Repeat("é", MaxLineBytes) // two bytes each
	capture(strings.NewReader(long+"\r\nshort\n"), "stdout", l, slog.New(slog.DiscardHandler))
	var total int
	lines := l.Tail(0)
	for _, ln := range lines[:len(lines)-1] {
		if len(ln.Text) > MaxLineBytes || !utf8Valid(ln.Text) {
			t.Errorf("line of %d bytes, valid UTF-8 %v", len(ln.Text), utf8Valid(ln.Text))
		}
		total += len(ln.Text)
	}
	if total != len(long) || lines[len(lines)-1].Text != "short" {
		t.Errorf("%d bytes in %d lines, last %q; want %d bytes then short", total, len(lines), lines[len(lines)-1].Text, len(long))
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestParseStat(t *testing.T) {
	st, err := parseStat([]byte("123 (a (weird) name) S 45 123 123 0 -1"))
	if err != nil || st.state != 'S' || st.ppid != 45 || st.pgrp != 123 {
		t.Errorf("parseStat = %+v, %v", st, err)
	}
	for _, bad := range []string{"", "1 (x)", "1 (x) S a b", "1 x S 1 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("123 (a (weird) name) S 45 123 123 0 -1"))
	f.Add([]byte("1 (x) S a b"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseStat(b)
	})
}
