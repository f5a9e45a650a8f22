package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/route"
)

func TestStartEdge(t *testing.T) {
	dir := t.TempDir()
	leafKey := []byte("leaf-key")
	cfg := &Config{
		Hostname:     "gw1.local",
		Provisioning: ProvisioningConfig{IoTHubHostname: "myhub.azure-devices.net"},
		Edge: EdgeConfig{
			Listen:        "127.0.0.1:0",
			MethodsListen: "off",
			LeafDevices:   []LeafDeviceConfig{{ID: "leaf1", SharedAccessKey: base64.StdEncoding.EncodeToString(leafKey)}},
		},
		path: "test.toml",
	}
	up := &hubtest.Recorder{}
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: up})
	defer h.Close()
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "up", "FROM /messages INTO $upstream")})
	ep, _, err := startEdge(cfg, h, dir, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	bundle, err := os.ReadFile(trustBundlePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("trust bundle holds no certificate")
	}
	fi, err := os.Stat(filepath.Join(certsDir(dir), "device-ca.key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v, mode %v", err, fi.Mode().Perm())
	}
	// A leaf device from the config connects with the trust bundle and
	// the gateway's name, and its telemetry goes upstream.
	o := paho.NewClientOptions().AddBroker("ssl://" + ep.Addr()).SetClientID("leaf1").
		SetUsername(iothub.FormatUsername("myhub.azure-devices.net", "leaf1", "", url.Values{})).
		SetPassword(iothub.SignToken(leafKey, iothub.Resource("myhub.azure-devices.net", "leaf1", ""), time.Now().Add(time.Hour), "")).
		SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "gw1.local"}).SetProtocolVersion(4).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatalf("leaf connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Publish(iothub.EventsTopic("leaf1", "", ""), 1, false, []byte("hi")); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	hubtest.WaitFor(t, "leaf telemetry upstream", func() bool { return up.Len() == 1 })
}

func TestStartEdgeConfigErrors(t *testing.T) {
	h := hub.New(hub.Options{DeviceID: "gw1"})
	defer h.Close()
	for _, tc := range []struct {
		name string
		edge EdgeConfig
		want string
	}{
		{"plain off loopback", EdgeConfig{Listen: "off", MethodsListen: "off", PlainListen: "0.0.0.0:1883"}, "loopback"},
		{"leaf without id", EdgeConfig{Listen: "off", MethodsListen: "off", LeafDevices: []LeafDeviceConfig{{SharedAccessKey: "a2V5"}}}, "leaf_devices[0]: id is missing"},
		{"leaf key not base64", EdgeConfig{Listen: "off", MethodsListen: "off", LeafDevices: []LeafDeviceConfig{{ID: "l", SharedAccessKey: "not base64!"}}}, "not base64"},
		{"leaf without credentials", EdgeConfig{Listen: "off", MethodsListen: "off", LeafDevices: []LeafDeviceConfig{{ID: "l"}}}, "thumbprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Hostname: "gw1", Edge: tc.edge, path: "c.toml"}
			ep, _, err := startEdge(cfg, h, t.TempDir(), nil, slog.New(slog.DiscardHandler))
			if err == nil {
				ep.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "c.toml") {
				t.Fatalf("error %q does not name the file and %q", err, tc.want)
			}
		})
	}
}
