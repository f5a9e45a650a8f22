package main

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/tinyedge/tinyedge/hub/identity"
)

// TestLeafIdentities checks that leaf devices declared without a key get
// one that lasts, that `tinyedge identities --show-keys` gives their
// connection strings, and that a device given its own key or no longer
// declared loses the generated one.
func TestLeafIdentities(t *testing.T) {
	dir := t.TempDir()
	ids, err := identity.Open(identitiesPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Module("gw1", "sensor"); err != nil {
		t.Fatal(err)
	}
	leaves := []LeafDeviceConfig{{ID: "thermostat"}, {ID: "keyed", SharedAccessKey: "c2VjcmV0"}, {ID: "x509", Thumbprint: "ab"}}
	got, err := leafIdentities(ids, "gw1", leaves)
	if err != nil || strings.Join(got, ",") != "thermostat" {
		t.Fatalf("leafIdentities = %v, %v; want [thermostat]", got, err)
	}
	key, ok := ids.Key("thermostat", "")
	if !ok {
		t.Fatal("no key for thermostat")
	}
	if _, ok := ids.Key("keyed", ""); ok {
		t.Error("a device with its own key got a generated one")
	}
	// Stable across runs.
	if _, err := leafIdentities(ids, "gw1", leaves); err != nil {
		t.Fatal(err)
	}
	if again, _ := ids.Key("thermostat", ""); !bytes.Equal(again, key) {
		t.Error("the generated key changed at the next start")
	}

	out, errOut, code := runCLI(t, "identities", "--show-keys", "--gateway-hostname", "gw1.local", "--iothub-hostname", "hub.example.net", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("identities: exit %d %s", code, errOut)
	}
	b64 := base64.StdEncoding.EncodeToString(key)
	if !strings.Contains(out, "HostName=hub.example.net;DeviceId=thermostat;SharedAccessKey="+b64+";GatewayHostName=gw1.local") {
		t.Errorf("no connection string for thermostat:\n%s", out)
	}
	if !strings.Contains(out, "\ngw1 ") || !strings.Contains(out, " sensor ") {
		t.Errorf("module identity not listed:\n%s", out)
	}
	// Without --show-keys no key is printed.
	out, _, _ = runCLI(t, "identities", "--data-dir", dir)
	if strings.Contains(out, b64) || !strings.Contains(out, "thermostat") {
		t.Errorf("identities without --show-keys:\n%s", out)
	}
	// Given its own key, the device's generated identity goes.
	leaves[0].SharedAccessKey = "b3du"
	if got, err := leafIdentities(ids, "gw1", leaves); err != nil || len(got) != 0 {
		t.Fatalf("leafIdentities = %v, %v", got, err)
	}
	if _, ok := ids.Key("thermostat", ""); ok {
		t.Error("the generated identity stayed after the config gave a key")
	}
	if _, ok := ids.Key("gw1", "sensor"); !ok {
		t.Error("a module identity was removed with the leaf devices")
	}
	if _, _, code := runCLI(t, "identities", "--data-dir", t.TempDir()); code != 1 {
		t.Errorf("identities on an empty data dir: exit %d, want 1", code)
	}
}
