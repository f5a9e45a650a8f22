package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/tinyedge/tinyedge/hub/process"
)

func TestLogTap(t *testing.T) {
	var out bytes.Buffer
	tap, taps := newLogTap(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log := slog.New(tap)
	log.With("module", "early").Info("before the local services start")

	procs := process.NewHost(nil)
	taps.procs.Store(procs)
	taps.setBuiltin([]string{"sim", "filter"})

	log.With("module", "sim").Info("reading", "temp", 21.5)
	log.With("module", "sim").WithGroup("g").Warn("grouped", "k", "v")
	log.Info("record attr", "module", "filter", "n", 1)
	log.With("module", "proc").Info("a process module's line")
	log.Info("no module")
	log.With("module", "sim").Debug("below the level")

	lines := func(m string) string {
		var s []string
		for _, l := range procs.Log(m).Tail(0) {
			s = append(s, l.Stream+": "+l.Text)
		}
		return strings.Join(s, "\n")
	}
	if got, want := lines("sim"), "log: INFO reading temp=21.5\nlog: WARN grouped k=v"; got != want {
		t.Errorf("sim's lines:\n%s\nwant:\n%s", got, want)
	}
	if got, want := lines("filter"), "log: INFO record attr n=1"; got != want {
		t.Errorf("filter's lines: %q, want %q", got, want)
	}
	if got := lines("proc") + lines("early"); got != "" {
		t.Errorf("kept lines of a process module or from before the start: %q", got)
	}
	// Everything still reaches the real log.
	for _, want := range []string{"before the local services start", "module=sim temp=21.5", "g.k=v", "no module", "a process module's line"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "below the level") {
		t.Error("a debug line passed the level")
	}
}
