package process

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
)

// BenchmarkOwner measures the workload API's caller lookup: the module's
// own process (a map lookup, the baseline) against a child of it (one
// /proc read per generation).
func BenchmarkOwner(b *testing.B) {
	if _, err := exec.LookPath("sh"); err != nil {
		b.Skip("no sh")
	}
	h := NewHost(nil)
	hb := hub.New(hub.Options{})
	defer hb.Close()
	if err := hb.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{Name: "m", Module: sh(h, `sh -c 'echo "inner $$"; exec sleep 1000'; exit 0`)}}}); err != nil {
		b.Fatal(err)
	}
	var inner int
	hubtest.WaitFor(b, "the inner pid", func() bool {
		for _, ln := range h.Log("m").Tail(0) {
			if p, ok := strings.CutPrefix(ln.Text, "inner "); ok {
				inner, _ = strconv.Atoi(p)
			}
		}
		return inner > 0
	})
	for _, bc := range []struct {
		name string
		pid  int
	}{{"module", h.PIDs()["m"]}, {"child", inner}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if m, ok := h.Owner(bc.pid); !ok || m != "m" {
					b.Fatalf("Owner(%d) = %q, %v", bc.pid, m, ok)
				}
			}
		})
	}
}
