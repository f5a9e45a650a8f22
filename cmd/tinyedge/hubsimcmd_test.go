package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// startHubsimCLI runs `tinyedge hubsim serve` on free loopback ports until
// the test ends.
func startHubsimCLI(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out, errOut hubtest.SyncBuffer
	go func() {
		done <- run(ctx, []string{"hubsim", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"}, &out, &errOut)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hubsim serve: %v\n%s", err, errOut.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "hubsim.json")); err == nil {
			return dir
		}
		select {
		case err := <-done:
			t.Fatalf("hubsim serve ended: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("hubsim serve did not start in 10s:\n%s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connectModule connects to the hubsim with a connection string, as an
// SDK would, and answers direct methods with 200 {"method": name}.
func connectModule(t *testing.T, dir, connStr string) (desired chan []byte) {
	t.Helper()
	cs, err := iothub.ParseConnectionString(connStr)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	opts := paho.NewClientOptions().AddBroker("ssl://" + cs.GatewayHostName).
		SetClientID(cs.DeviceID + "/" + cs.ModuleID).
		SetUsername(iothub.FormatUsername(cs.HostName, cs.DeviceID, cs.ModuleID, nil)).
		SetPassword(iothub.SignToken(cs.SharedAccessKey, iothub.Resource(cs.HostName, cs.DeviceID, cs.ModuleID), time.Now().Add(time.Hour), "")).
		SetTLSConfig(&tls.Config{RootCAs: pool}).
		SetProtocolVersion(4).SetAutoReconnect(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect with %s: %v", connStr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	desired = make(chan []byte, 4)
	var mu sync.Mutex
	sub := func(filter string, h paho.MessageHandler) {
		if tok := c.Subscribe(filter, 0, h); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	sub("$iothub/twin/PATCH/properties/desired/#", func(_ paho.Client, m paho.Message) { desired <- m.Payload() })
	sub("$iothub/methods/POST/#", func(c paho.Client, m paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		tp, err := iothub.ParseTopic(m.Topic())
		if err != nil {
			return
		}
		body, _ := json.Marshal(map[string]any{"method": tp.Method, "got": json.RawMessage(m.Payload())})
		c.Publish(iothub.MethodResponseTopic(200, tp.RID), 0, false, body)
	})
	return desired
}

func TestHubsimCLI(t *testing.T) {
	dir := startHubsimCLI(t)
	cli := func(args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(t, append([]string{"hubsim"}, append(args, "--data-dir", dir)...)...)
		if code != 0 {
			t.Fatalf("tinyedge hubsim %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	if out := cli("identity", "add", "gw"); !strings.HasPrefix(out, "HostName=localhost;DeviceId=gw;SharedAccessKey=") {
		t.Errorf("identity add gw: %q", out)
	}
	filterCS := strings.TrimSpace(cli("identity", "add", "gw", "filtermodule"))
	sensorCS := strings.TrimSpace(cli("identity", "add", "gw", "SimulatedTemperatureSensor"))
	if !strings.Contains(filterCS, "ModuleId=filtermodule") || !strings.Contains(filterCS, "GatewayHostName=localhost:") {
		t.Errorf("module connection string %q", filterCS)
	}
	list := cli("identity", "list")
	for _, want := range []string{"gw/filtermodule", "gw/SimulatedTemperatureSensor", "Disconnected"} {
		if !strings.Contains(list, want) {
			t.Errorf("identity list lacks %q:\n%s", want, list)
		}
	}

	desired := connectModule(t, dir, filterCS)
	connectModule(t, dir, sensorCS)

	out := cli("twin", "patch", "filter", `{"TemperatureThreshold": 30}`)
	if !strings.Contains(out, `"TemperatureThreshold": 30`) || !strings.Contains(out, `"moduleId": "filtermodule"`) {
		t.Errorf("twin patch output:\n%s", out)
	}
	select {
	case b := <-desired:
		if !strings.Contains(string(b), `"TemperatureThreshold":30`) || !strings.Contains(string(b), `"$version":2`) {
			t.Errorf("desired notification %s", b)
		}
	case <-time.After(5 * time.Second):
		t.Error("filtermodule got no desired notification")
	}
	if out := cli("twin", "get", "gw/filtermodule"); !strings.Contains(out, `"TemperatureThreshold": 30`) {
		t.Errorf("twin get:\n%s", out)
	}

	out = cli("method", "invoke", "simtemp", "reset", "--timeout", "5")
	var res struct {
		Status  int
		Payload map[string]any
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != 200 || res.Payload["method"] != "reset" {
		t.Errorf("method invoke output %q: %v", out, err)
	}
	out = cli("method", "invoke", "--timeout", "5", "gw/filtermodule", "echo", `{"a":1}`)
	if !strings.Contains(out, `"a": 1`) {
		t.Errorf("method invoke with payload:\n%s", out)
	}

	// Errors a user can act on.
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"twin", "get", "nothing"}, 1, "gw/filtermodule"},
		{[]string{"twin", "patch", "filter", "{bad"}, 2, "not JSON"},
		{[]string{"method", "invoke", "gw", "reset", "--timeout", "5"}, 1, "not connected"},
		{[]string{"identity", "add"}, 2, "takes 1 to 2 argument(s)"},
		{[]string{"frob"}, 2, `unknown hubsim command "frob"`},
	} {
		_, errOut, code := runCLI(t, append([]string{"hubsim"}, append(tt.args, "--data-dir", dir)...)...)
		if code != tt.code || !strings.Contains(errOut, tt.msg) {
			t.Errorf("hubsim %s: exit %d, stderr %q; want %d and %q", strings.Join(tt.args, " "), code, errOut, tt.code, tt.msg)
		}
	}
	if _, errOut, code := runCLI(t, "hubsim", "identity", "list", "--data-dir", t.TempDir()); code != 1 || !strings.Contains(errOut, "no hubsim running") {
		t.Errorf("no server: exit %d, %q", code, errOut)
	}
}

func TestHubsimMonitor(t *testing.T) {
	dir := startHubsimCLI(t)
	runCLI(t, "hubsim", "identity", "add", "gw", "--data-dir", dir)
	cs, _, _ := runCLI(t, "hubsim", "identity", "add", "gw", "m", "--data-dir", dir)
	connectModuleAndSend(t, dir, strings.TrimSpace(cs))

	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"hubsim", "monitor", "--from", "0", "--data-dir", dir}, &out, &errOut)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "\n") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("monitor: %v", err)
	}
	var ev struct {
		DeviceID   string `json:"deviceId"`
		ModuleID   string `json:"moduleId"`
		Body       map[string]any
		Properties struct {
			Application map[string]string
			System      map[string]string
		}
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("monitor line %q: %v", line, err)
	}
	if ev.DeviceID != "gw" || ev.ModuleID != "m" || ev.Body["temperature"] != 21.5 || ev.Properties.Application["alert"] != "true" || ev.Properties.System["content-type"] != "application/json" {
		t.Errorf("monitor event %+v", ev)
	}
}

func connectModuleAndSend(t *testing.T, dir, connStr string) {
	t.Helper()
	cs, _ := iothub.ParseConnectionString(connStr)
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + cs.GatewayHostName).
		SetClientID(cs.DeviceID + "/" + cs.ModuleID).
		SetUsername(iothub.FormatUsername(cs.HostName, cs.DeviceID, cs.ModuleID, nil)).
		SetPassword(iothub.SignToken(cs.SharedAccessKey, iothub.Resource(cs.HostName, cs.DeviceID, cs.ModuleID), time.Now().Add(time.Hour), "")).
		SetTLSConfig(&tls.Config{RootCAs: pool}).SetProtocolVersion(4).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.Publish(iothub.EventsTopic(cs.DeviceID, cs.ModuleID, "%24.ct=application%2Fjson&alert=true"), 1, false, []byte(`{"temperature":21.5}`))
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}
