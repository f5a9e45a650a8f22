package main

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/tinyedge/tinyedge/hub/process"
)

// logTap passes every log record on to the real handler and keeps the
// records of built-in modules (those tagged module=NAME) in the module's
// log, so `tinyedge logs` shows a built-in module's lines as it shows a
// process module's output.
type logTap struct {
	next   slog.Handler
	module string // from With("module", …)
	attrs  []slog.Attr
	taps   *logTaps
}

// logTaps is what every logTap derived from one logger shares: where the
// lines go and which modules are built in.
type logTaps struct {
	procs   atomic.Pointer[process.Host] // nil until the local services start
	builtin atomic.Pointer[map[string]bool]
}

func newLogTap(next slog.Handler) (*logTap, *logTaps) {
	t := &logTaps{}
	empty := map[string]bool{}
	t.builtin.Store(&empty)
	return &logTap{next: next, taps: t}, t
}

// setBuiltin records the names of the built-in modules deployed.
func (t *logTaps) setBuiltin(names []string) {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	t.builtin.Store(&m)
}

func (h *logTap) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logTap) Handle(ctx context.Context, r slog.Record) error {
	err := h.next.Handle(ctx, r)
	module := h.module
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "module" {
			module = a.Value.String()
			return false
		}
		return true
	})
	procs := h.taps.procs.Load()
	if module == "" || procs == nil || !(*h.taps.builtin.Load())[module] {
		return err
	}
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(' ')
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		if a.Key != "module" {
			b.WriteByte(' ')
			b.WriteString(a.Key)
			b.WriteByte('=')
			b.WriteString(a.Value.String())
		}
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	procs.Log(module).Append("log", b.String())
	return err
}

func (h *logTap) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &logTap{next: h.next.WithAttrs(attrs), module: h.module, taps: h.taps}
	n.attrs = append(append(n.attrs, h.attrs...), attrs...)
	for _, a := range attrs {
		if a.Key == "module" {
			n.module = a.Value.String()
		}
	}
	return n
}

func (h *logTap) WithGroup(name string) slog.Handler {
	return &logTap{next: h.next.WithGroup(name), module: h.module, attrs: h.attrs, taps: h.taps}
}
