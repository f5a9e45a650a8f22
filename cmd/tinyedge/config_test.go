package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	p := writeConfig(t, `
hostname = "gw1"
[provisioning]
source = "manual"
connection_string = "HostName=h.example;DeviceId=gw1;SharedAccessKey=a2V5"
[upstream]
token_lifetime = "10m"
window = 8
[upstream.modules.filter]
shared_access_key = "bW9k"
[[edge.leaf_devices]]
id = "leaf1"
shared_access_key = "bGVhZg=="
`)
	c, err := loadConfig(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "gw1" || c.Upstream.TokenLifetime.Duration != 10*time.Minute || c.Upstream.Window != 8 ||
		c.Upstream.Modules["filter"].SharedAccessKey != "bW9k" || len(c.Edge.LeafDevices) != 1 ||
		!strings.HasPrefix(c.Provisioning.ConnectionString, "HostName=") {
		t.Errorf("loaded %+v", c)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"hostname = \n", "line 1, column"},
		{"[upstream]\ntoken_lifetme = \"1h\"\n", "unknown key upstream.token_lifetme"},
		{"[upstream]\ntoken_lifetime = \"soon\"\n", "want a duration"},
	} {
		_, err := loadConfig(writeConfig(t, tc.text), true)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to say %q", tc.text, err, tc.want)
		}
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "none.toml"), true); err == nil {
		t.Error("a named config that does not exist loaded")
	}
	if c, err := loadConfig(filepath.Join(t.TempDir(), "none.toml"), false); err != nil || c == nil {
		t.Errorf("the default config missing: %v", err)
	}
}
