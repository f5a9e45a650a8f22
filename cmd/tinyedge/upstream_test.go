package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub/hubsim"
	"github.com/tinyedge/tinyedge/hub/hubtest"
)

func TestIoTHubConfigFromFile(t *testing.T) {
	tests := []struct {
		name, text string
		check      func(t *testing.T, c *Config) // nil when an error is wanted
		wantErr    string
	}{
		{name: "connection string and a module key", text: `
[provisioning]
connection_string = "HostName=h.example;DeviceId=gw1;SharedAccessKey=a2V5"
[upstream]
token_lifetime = "10m"
port = 443
[upstream.modules.filter]
shared_access_key = "bW9k"
`, check: func(t *testing.T, c *Config) {
			cfg, err := iotHubConfig(c, "config")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.HostName != "h.example" || cfg.DeviceID != "gw1" || string(cfg.SharedAccessKey) != "key" ||
				cfg.TokenLifetime != 10*time.Minute || cfg.Broker != "ssl://h.example:443" ||
				len(cfg.Modules) != 1 || cfg.Modules[0].ModuleID != "filter" || string(cfg.Modules[0].SharedAccessKey) != "mod" {
				t.Errorf("got %+v", cfg)
			}
			if cfg.TLS == nil || cfg.TLS.MinVersion < 0x0303 || cfg.TLS.InsecureSkipVerify {
				t.Errorf("TLS %+v, want TLS 1.2+ with verification", cfg.TLS)
			}
		}},
		{name: "host name, device id and key", text: `
[provisioning]
iothub_hostname = "h.example"
device_id = "gw2"
[provisioning.authentication]
method = "sas"
shared_access_key = "a2V5"
`, check: func(t *testing.T, c *Config) {
			cfg, err := iotHubConfig(c, "config")
			if err != nil || cfg.DeviceID != "gw2" || string(cfg.SharedAccessKey) != "key" {
				t.Errorf("got %+v, %v", cfg, err)
			}
		}},
		{name: "leaf devices", text: `
[provisioning]
connection_string = "HostName=h.example;DeviceId=gw1;SharedAccessKey=a2V5"
[[edge.leaf_devices]]
id = "sas-leaf"
shared_access_key = "bGVhZg=="
[[edge.leaf_devices]]
id = "x509-leaf"
thumbprint = "00"
[[edge.leaf_devices]]
id = "generated-leaf"
`, check: func(t *testing.T, c *Config) {
			cfg, err := iotHubConfig(c, "config")
			if err != nil {
				t.Fatal(err)
			}
			// Only a leaf with its IoT Hub key can connect as itself.
			if len(cfg.Leaves) != 1 || cfg.Leaves[0].DeviceID != "sas-leaf" || string(cfg.Leaves[0].SharedAccessKey) != "leaf" {
				t.Errorf("leaves %+v, want sas-leaf with its key", cfg.Leaves)
			}
			var logs bytes.Buffer
			logLeavesAsGateway(c.Edge.LeafDevices, slog.New(slog.NewTextHandler(&logs, nil)))
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) != 2 || !strings.Contains(lines[0], "leaf=x509-leaf") || !strings.Contains(lines[0], "X.509") ||
				!strings.Contains(lines[1], "leaf=generated-leaf") || !strings.Contains(lines[0], "as the gateway's") {
				t.Errorf("startup log:\n%s\nwant one line for each leaf that goes as the gateway, saying why", logs.String())
			}
		}},
		{name: "bad leaf key", text: `
[provisioning]
connection_string = "HostName=h.example;DeviceId=gw1;SharedAccessKey=a2V5"
[[edge.leaf_devices]]
id = "leaf1"
shared_access_key = "not base64!"
`, wantErr: "edge.leaf_devices[0] (leaf1): shared_access_key"},
		{name: "no identity", text: "", wantErr: "needs the device identity"},
		{name: "module connection string", text: `
[provisioning]
connection_string = "HostName=h.example;DeviceId=gw1;ModuleId=m;SharedAccessKey=a2V5"
`, wantErr: "is a module's"},
		{name: "x509 without files", text: `
[provisioning]
iothub_hostname = "h.example"
device_id = "gw2"
[provisioning.authentication]
method = "x509"
`, wantErr: "identity_cert and identity_pk"},
		{name: "bad module key", text: `
[provisioning]
connection_string = "HostName=h.example;DeviceId=gw1;SharedAccessKey=a2V5"
[upstream.modules.filter]
shared_access_key = "not base64!"
`, wantErr: "upstream.modules.filter.shared_access_key"},
		{name: "missing CA file", text: `
[provisioning]
connection_string = "HostName=h.example;DeviceId=gw1;SharedAccessKey=a2V5"
[upstream]
ca_file = "/nonexistent/ca.pem"
`, wantErr: "CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(writeConfig(t, tt.text), true)
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, c)
				return
			}
			_, err = iotHubConfig(c, "config")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want it to say %q", err, tt.wantErr)
			}
		})
	}
}

func TestUpstreamKind(t *testing.T) {
	prov := &Config{Provisioning: ProvisioningConfig{ConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=a2V5"}}
	for _, tc := range []struct {
		flag string
		c    *Config
		want string
	}{
		{"", &Config{}, "hubsim"},
		{"", prov, "iothub"},
		{"console", prov, "console"},
		{"", &Config{Upstream: UpstreamConfig{Protocol: "mqtt"}}, "mqtt"},
	} {
		if got := upstreamKind(tc.flag, tc.c); got != tc.want {
			t.Errorf("upstreamKind(%q, %+v) = %q, want %q", tc.flag, tc.c, got, tc.want)
		}
	}
	if !trustedAfter().After(time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("trustedAfter %s is before 2023", trustedAfter())
	}
}

func TestRunUpstreamUsage(t *testing.T) {
	_, errOut, code := runCLI(t, "run", "--config", writeConfig(t, ""), "--upstream", "carrier-pigeon")
	if code != 2 || !strings.Contains(errOut, "want console, iothub, mqtt or hubsim") {
		t.Errorf("code %d, stderr %q", code, errOut)
	}
	dir := t.TempDir()
	_, errOut, code = runCLI(t, "run", "--config", writeConfig(t, ""), "--data-dir", dir, "--upstream", "mqtt")
	if code != 2 || !strings.Contains(errOut, "--mqtt-broker") {
		t.Errorf("mqtt without a broker: code %d, stderr %q", code, errOut)
	}
}

// TestRunUpstreamMQTT runs `tinyedge run --upstream mqtt` against a
// mosquitto the test starts: the quickstart's telemetry arrives on the
// topic the template makes.
func TestRunUpstreamMQTT(t *testing.T) {
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			t.Skip("mosquitto not installed (scripts/deps.sh installs it)")
		}
		path = "/usr/sbin/mosquitto"
	}
	skipUnlessExecSelf(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous true\n", port), 0o644); err != nil {
		t.Fatal(err)
	}
	broker := exec.Command(path, "-c", conf)
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = broker.Process.Kill()
		_ = broker.Wait()
	}()
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)

	var mu sync.Mutex
	var topics []string
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-sub").
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			mu.Lock()
			topics = append(topics, m.Topic())
			mu.Unlock()
		}))
	hubtest.WaitFor(t, "mosquitto", func() bool {
		tok := sub.Connect()
		return tok.WaitTimeout(time.Second) && tok.Error() == nil
	})
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("te/#", 1, nil); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	// The quickstart, sending every 10 ms.
	var man map[string]any
	if err := json.Unmarshal(quickstartManifest, &man); err != nil {
		t.Fatal(err)
	}
	mc := man["modulesContent"].(map[string]any)
	mc["SimulatedTemperatureSensor"].(map[string]any)["properties.desired"].(map[string]any)["SendInterval"] = 0.01
	mb, _ := json.Marshal(man)
	manifest := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(manifest, mb, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out, errOut hubtest.SyncBuffer
	dataDir := t.TempDir()
	go func() {
		done <- run(ctx, []string{"run", "--config", writeConfig(t, ""), "--data-dir", dataDir, "--manifest", manifest,
			"--device-id", "gw1", "--upstream", "mqtt", "--mqtt-broker", url, "--mqtt-topic", "te/{deviceId}/{moduleId}/{outputName}"}, &out, &errOut)
	}()
	hubtest.WaitFor(t, "telemetry at the broker", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(topics) >= 10
	})
	// `tinyedge status` shows the link.
	var status struct {
		Upstream struct {
			Mode       string `json:"mode"`
			Identities []struct {
				Identity string `json:"identity"`
				State    string `json:"state"`
			} `json:"identities"`
			QueueDepth   int64 `json:"queueDepth"`
			ClockTrusted bool  `json:"clockTrusted"`
		} `json:"upstream"`
	}
	stat, errStatus, code := runCLI(t, "status", "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("status: code %d: %s", code, errStatus)
	}
	if err := json.Unmarshal([]byte(stat), &status); err != nil {
		t.Fatalf("status output %q: %v", stat, err)
	}
	if u := status.Upstream; u.Mode != "mqtt" || len(u.Identities) != 1 || u.Identities[0].Identity != "gw1" ||
		u.Identities[0].State != "connected" || !u.ClockTrusted {
		t.Errorf("status upstream %+v, want mqtt with gw1 connected on a trusted clock", u)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, tp := range topics {
		if tp != "te/gw1/SimulatedTemperatureSensor/temperatureOutput" && tp != "te/gw1/filtermodule/output1" {
			t.Errorf("message on %q, want the template's topics", tp)
		}
	}
	if !strings.Contains(errOut.String(), "upstream connected") {
		t.Errorf("no 'upstream connected' in the log:\n%s", errOut.String())
	}
}

// TestRunUpstreamIoTHub runs `tinyedge run` provisioned with connection
// strings from hubsim (the IoT Hub emulator): the quickstart's telemetry
// reaches the hub from the right identities, `tinyedge status` shows
// both connections, the cloud's desired properties reach the sensor and a
// direct method from the cloud is answered.
func TestRunUpstreamIoTHub(t *testing.T) {
	sim, err := hubsim.New(hubsim.Options{DataDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dev, err := sim.AddDevice("gw1")
	if err != nil {
		t.Fatal(err)
	}
	sensor, err := sim.AddModule("gw1", "SimulatedTemperatureSensor")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, sim.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	config := writeConfig(t, fmt.Sprintf(`
[provisioning]
source = "manual"
connection_string = %q
[upstream]
ca_file = %q
[upstream.modules.SimulatedTemperatureSensor]
shared_access_key = %q
`, dev.ConnectionString, ca, sensor.PrimaryKey))

	var man map[string]any
	if err := json.Unmarshal(quickstartManifest, &man); err != nil {
		t.Fatal(err)
	}
	mc := man["modulesContent"].(map[string]any)
	mc["SimulatedTemperatureSensor"].(map[string]any)["properties.desired"].(map[string]any)["SendInterval"] = 0.01
	mb, _ := json.Marshal(man)
	manifest := filepath.Join(dir, "manifest.json")
	if err := os.WriteFile(manifest, mb, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out, errOut hubtest.SyncBuffer
	dataDir := t.TempDir()
	go func() {
		done <- run(ctx, []string{"run", "--config", config, "--data-dir", dataDir, "--manifest", manifest}, &out, &errOut)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("run: %v\n%s", err, errOut.String())
		}
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), hubtest.Patience)
	defer wcancel()
	evs, err := sim.WaitEvents(wctx, 20)
	if err != nil {
		t.Fatalf("events: %v\n%s", err, errOut.String())
	}
	from := map[string]int{}
	for _, e := range evs {
		from[e.System.ConnectionModuleID]++
		if e.DeviceID != "gw1" {
			t.Errorf("event from device %q, want gw1", e.DeviceID)
		}
	}
	// The sensor has its own identity; the filter has none and goes up
	// on the device's connection.
	if from["SimulatedTemperatureSensor"] == 0 || from["filtermodule"] != 0 {
		t.Errorf("events by connection module %v, want the sensor's own and none stamped filtermodule", from)
	}

	var status struct {
		Upstream struct {
			Mode       string `json:"mode"`
			Identities []struct {
				Identity string `json:"identity"`
				State    string `json:"state"`
			} `json:"identities"`
		} `json:"upstream"`
	}
	stat, errStatus, code := runCLI(t, "status", "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("status: code %d: %s", code, errStatus)
	}
	if err := json.Unmarshal([]byte(stat), &status); err != nil {
		t.Fatalf("status output %q: %v", stat, err)
	}
	if u := status.Upstream; u.Mode != "iothub" || len(u.Identities) != 2 ||
		u.Identities[0].State != "connected" || u.Identities[1].Identity != "gw1/SimulatedTemperatureSensor" || u.Identities[1].State != "connected" {
		t.Errorf("status upstream %+v, want gw1 and gw1/SimulatedTemperatureSensor connected", u)
	}

	// From the cloud: a desired property the sensor reports back, and a
	// direct method.
	hubtest.WaitFor(t, "the sensor's twin subscription", func() bool {
		return sim.Subscribed("gw1", "SimulatedTemperatureSensor", "$iothub/twin/PATCH/properties/desired/?$version=1")
	})
	if _, err := sim.PatchDesired("gw1", "SimulatedTemperatureSensor", map[string]any{"SendInterval": 0.02}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the sensor to report the new interval to the cloud", func() bool {
		tw, err := sim.Twin("gw1", "SimulatedTemperatureSensor")
		return err == nil && tw.Reported.Doc["SendInterval"] == 0.02
	})
	res, err := sim.InvokeMethod(context.Background(), "gw1", "SimulatedTemperatureSensor", "reset", nil, 10*time.Second)
	if err != nil || res.Status != 200 {
		t.Errorf("reset from the cloud: %+v, %v; want 200", res, err)
	}
}
