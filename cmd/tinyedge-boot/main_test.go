package main

import (
	"bytes"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNotInit(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := notInit([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "tinyedge-boot "+version+"\n") {
		t.Errorf("version: code %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := notInit(nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "PID 1") || out.Len() != 0 {
		t.Errorf("no arguments: code %d, stderr %q; want a usage error saying it is PID 1's", code, errOut.String())
	}
}

func TestDataLabel(t *testing.T) {
	tests := []struct {
		args []string
		want string
		err  bool
	}{
		{nil, "", false},
		{[]string{"quiet"}, "", false},
		{[]string{"init"}, "", false},
		{[]string{"init", "--data-label", "gw-data", "update", "status"}, "gw-data", false},
		{[]string{"stray", "init", "-data-label=x"}, "x", false},
		{[]string{"init", "update", "--data-label", "not-init's"}, "", false},
		{[]string{"init", "--bogus"}, "", true},
	}
	for _, tt := range tests {
		got, err := dataLabel(tt.args)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("dataLabel(%q) = %q, %v; want %q, error %v", tt.args, got, err, tt.want, tt.err)
		}
	}
}

// TestStaysSmall guards the boot stage's size: it must not link the hub,
// the store or the MQTT and TOML libraries, which tinyedge (the slot
// binary) brings. It reads the build's dependencies with `go list`.
func TestStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Skipf("go list: %v (no go tool here, or emulated)", err)
	}
	deps := strings.Fields(string(out))
	heavy := []string{
		"github.com/tinyedge/tinyedge/hub", "github.com/tinyedge/tinyedge/store", "go.etcd.io/bbolt",
		"github.com/mochi-mqtt/server/v2", "github.com/eclipse/paho.mqtt.golang", "github.com/BurntSushi/toml",
		"net/http", "crypto/tls",
	}
	for _, d := range deps {
		for _, h := range heavy {
			if d == h || strings.HasPrefix(d, h+"/") {
				t.Errorf("the boot stage links %s", d)
			}
		}
	}
	if !slices.Contains(deps, "github.com/tinyedge/tinyedge/build/ota") {
		t.Errorf("the boot stage does not link build/ota; deps: %q", deps)
	}
}
