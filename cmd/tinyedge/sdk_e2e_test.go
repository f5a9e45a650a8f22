package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/hubsim"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// e2eEvent is a line scripts/sdk/e2e-module.js prints.
type e2eEvent struct {
	Event   string            `json:"event"`
	Message string            `json:"message"`
	Gateway string            `json:"gateway"`
	IoTHub  string            `json:"iothub"`
	Desired map[string]any    `json:"desired"`
	Delta   map[string]any    `json:"delta"`
	Status  int               `json:"status"`
	Payload json.RawMessage   `json:"payload"`
	Input   string            `json:"input"`
	Props   map[string]string `json:"props"`
	N       int               `json:"n"`
}

// needNodeUnderRun returns node and the directory of the Azure IoT Node SDK,
// skipping the test where they are missing or programs cannot be run
// (under qemu-user).
func needNodeUnderRun(t *testing.T) (node, sdk string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skipf("node is not installed: %v", err)
	}
	sdk, err = filepath.Abs("../../scripts/sdk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sdk, "node_modules", "azure-iot-device-mqtt")); err != nil {
		t.Skipf("the Azure IoT Node SDK is not installed (npm ci --prefix scripts/sdk): %v", err)
	}
	skipUnlessExecSelf(t)
	return node, sdk
}

// canListen reports whether addr is free to listen on.
func canListen(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// e2eManifest deploys two process modules written with the Node SDK (a
// sender and a receiver) beside the built-in filter and simulated sensor:
// sender → filter → receiver, sensor → receiver, leaf devices →
// $upstream.
func e2eManifest(node, sdk string, count int, invoke bool) string {
	proc := func(role, restart string, env map[string]string) string {
		e, _ := json.Marshal(func() map[string]map[string]string {
			out := map[string]map[string]string{}
			for k, v := range env {
				out[k] = map[string]string{"value": v}
			}
			return out
		}())
		return fmt.Sprintf(`{"type": "process", "status": "running", "restartPolicy": %q,
      "settings": {"path": %q, "args": ["e2e-module.js", %q], "workingDir": %q}, "env": %s}`, restart, node, role, sdk, e)
	}
	senderEnv := map[string]string{"COUNT": strconv.Itoa(count), "INTERVAL_MS": "20"}
	if invoke {
		senderEnv["INVOKE_MODULE"], senderEnv["INVOKE_METHOD"] = "simtemp", "reset"
	}
	return `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {
    "sender": ` + proc("sender", "never", senderEnv) + `,
    "receiver": ` + proc("receiver", "always", nil) + `,
    "filtermodule": {"type": "builtin", "status": "running", "settings": {"image": "builtin:filter"}},
    "simtemp": {"type": "builtin", "status": "running", "settings": {"image": "builtin:simtemp"},
      "env": {"MessageCount": {"value": "-1"}}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {
    "senderToFilter": "FROM /messages/modules/sender/outputs/out INTO BrokeredEndpoint(\"/modules/filtermodule/inputs/inputFromSensor\")",
    "filterToReceiver": "FROM /messages/modules/filtermodule/outputs/output1 INTO BrokeredEndpoint(\"/modules/receiver/inputs/alerts\")",
    "sensorToReceiver": "FROM /messages/modules/simtemp/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/receiver/inputs/fromSim\")",
    "leafToUpstream": "FROM /messages WHERE $connectionDeviceId = 'leaf1' INTO $upstream"}}},
  "sender": {"properties.desired": {"greeting": "hello"}},
  "simtemp": {"properties.desired": {"SendData": true, "SendInterval": 0.2}}}}`
}

// TestSDKEndToEnd proves tinyedge with the official Azure IoT Node SDK:
// modules written with ModuleClient.fromEnvironment(Mqtt) run as process
// modules of `tinyedge run` with the embedded IoT Hub emulator upstream.
// Messages flow both ways between them and built-in modules; the sender's
// twin (get, reported, a desired patch from the cloud) and direct methods
// (from the cloud to it; from it to a built-in module, over HTTPS on port
// 443, where the SDK calls) work; a leaf device with GatewayHostName
// reaches IoT Hub through the gateway, as itself; the receiver, killed while
// numbered messages stream to it, is restarted and loses none; and once its
// identity is rotated it runs again with the new generation and key.
func TestSDKEndToEnd(t *testing.T) {
	node, sdk := needNodeUnderRun(t)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	dir := t.TempDir()

	// The SDK's ModuleClient.invokeMethod calls https://{gateway}:443
	// and the gateway name then cannot carry a port: that part needs
	// the endpoint on 8883 and 443, so root, as on CI.
	listen, methods := "127.0.0.1:0", "off"
	invoke := os.Geteuid() == 0 && canListen("127.0.0.1:8883") && canListen("127.0.0.1:443")
	if invoke {
		listen, methods = "127.0.0.1:8883", "127.0.0.1:443"
	}
	leafKey := make([]byte, 32)
	rand.Read(leafKey)
	config := filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf("[edge]\nlisten = %q\nmethods_listen = %q\n\n[[edge.leaf_devices]]\nid = \"leaf1\"\nshared_access_key = %q\n",
		listen, methods, base64.StdEncoding.EncodeToString(leafKey))
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	const count = 200
	manifest := filepath.Join(dir, "m.json")
	if err := os.WriteFile(manifest, []byte(e2eManifest(node, sdk, count, invoke)), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, e, code := runCLI(t, "check", "--manifest", manifest); code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, o, e)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--manifest", manifest, "--data-dir", dir, "--device-id", "gw1",
			"--config", config, "--log-format", "json"}, &out, &errOut)
	}()
	defer func() {
		if t.Failed() {
			for _, m := range []string{"sender", "receiver"} {
				o, e, _ := runCLI(t, "logs", "--tail", "40", m, "--data-dir", dir)
				t.Logf("%s's last lines:\n%s%s", m, o, e)
			}
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("run did not stop")
		}
		if t.Failed() {
			t.Logf("tinyedge's log:\n%.20000s", errOut.String())
		}
	}()

	// events returns what a module printed, failing the test on an SDK
	// error.
	events := func(module string) []e2eEvent {
		t.Helper()
		o, e, _ := runCLI(t, "logs", module, "--data-dir", dir)
		var evs []e2eEvent
		sc := bufio.NewScanner(strings.NewReader(o))
		for sc.Scan() {
			var ev e2eEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			if ev.Event == "error" {
				t.Fatalf("%s: SDK error: %s\n%s", module, ev.Message, e)
			}
			evs = append(evs, ev)
		}
		return evs
	}
	// waitEvent waits for the first event of a module that is and
	// satisfies want, when want is not nil.
	waitEvent := func(module, event string, want func(e2eEvent) bool) e2eEvent {
		t.Helper()
		var found e2eEvent
		pollUntil(t, module+" to print "+event, func() bool {
			for _, ev := range events(module) {
				if ev.Event == event && (want == nil || want(ev)) {
					found = ev
					return true
				}
			}
			return false
		})
		return found
	}

	// Where the endpoint listens, from tinyedge's log.
	var addr string
	pollUntil(t, "the local MQTT endpoint", func() bool {
		for _, l := range strings.Split(errOut.String(), "\n") {
			var r struct{ Msg, Address string }
			if json.Unmarshal([]byte(l), &r) == nil && r.Msg == "local MQTT endpoint listening" {
				addr = r.Address
			}
		}
		return addr != ""
	})
	sim := dialEmbeddedHub(t)
	iotHub := embeddedHubHostname(t)

	// The environment points the SDK at the endpoint and the IoT Hub.
	env := waitEvent("sender", "env", nil)
	wantGateway := addr
	if strings.HasSuffix(addr, ":8883") {
		wantGateway = strings.TrimSuffix(addr, ":8883")
	}
	if env.Gateway != wantGateway || env.IoTHub != iotHub {
		t.Errorf("IOTEDGE_GATEWAYHOSTNAME %q, IOTEDGE_IOTHUBHOSTNAME %q; want %q (the endpoint listens on %s) and %q (the emulator)",
			env.Gateway, env.IoTHub, wantGateway, addr, iotHub)
	}

	// Twin get has the manifest's desired properties; the reported
	// patch reaches the cloud twin.
	if tw := waitEvent("sender", "twin", nil); tw.Desired["greeting"] != "hello" {
		t.Errorf("twin get: desired %v, want greeting hello", tw.Desired)
	}
	waitEvent("sender", "reported", nil)
	pollUntil(t, "the sender's reported properties in the cloud twin", func() bool {
		raw, err := sim.Twin(ctx, "gw1", "sender")
		var tw struct {
			Properties struct{ Reported map[string]any }
		}
		return err == nil && json.Unmarshal(raw, &tw) == nil && tw.Properties.Reported["role"] == "sender"
	})

	// Kill the receiver while the numbered messages stream to it
	// (sender → filter → receiver): the supervisor restarts it, and
	// every message arrives (some maybe twice).
	// alerts are the numbers of the alerts the receiver printed, with
	// how many times each came.
	alerts := func() map[int]int {
		seen := map[int]int{}
		for _, ev := range events("receiver") {
			if ev.Event != "input" || ev.Input != "alerts" {
				continue
			}
			n, err := strconv.Atoi(ev.Props["n"])
			if err != nil || ev.Props["MessageType"] != "Alert" {
				t.Fatalf("an alert without its number or type: %+v", ev)
			}
			seen[n]++
		}
		return seen
	}
	pollUntil(t, "20 alerts at the receiver", func() bool { return len(alerts()) >= 20 })
	before := moduleByName(t, dir, "receiver")
	if before.PID == 0 {
		t.Fatalf("receiver: %+v", before)
	}
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := len(alerts())
	pollUntil(t, "the receiver's restart", func() bool {
		m := moduleByName(t, dir, "receiver")
		return m.Restarts == before.Restarts+1 && m.PID != 0 && m.PID != before.PID
	})

	// While it comes back: a direct method from the cloud to the
	// sender, and a desired patch.
	var res hubsim.MethodResult
	var err error
	pollUntil(t, "ping answered by the sender", func() bool {
		res, err = sim.InvokeMethod(ctx, "gw1", "sender", "ping", json.RawMessage(`{"x":1}`), 10*time.Second)
		return err == nil && res.Status != 404
	})
	if res.Status != 200 || string(res.Payload) != `{"pong":{"x":1}}` {
		t.Errorf("ping = %d %s, want 200 {\"pong\":{\"x\":1}}", res.Status, res.Payload)
	}
	if _, err := sim.PatchDesired(ctx, "gw1", "sender", json.RawMessage(`{"color":"blue"}`)); err != nil {
		t.Fatal(err)
	}
	waitEvent("sender", "desired", func(ev e2eEvent) bool { return ev.Delta["color"] == "blue" })

	// A leaf device through the gateway to IoT Hub.
	leaf := exec.Command(node, "e2e-module.js", "leaf")
	leaf.Dir = sdk
	leaf.Env = append(os.Environ(),
		"LEAF_CONNECTION_STRING=HostName="+iotHub+";DeviceId=leaf1;SharedAccessKey="+base64.StdEncoding.EncodeToString(leafKey)+";GatewayHostName="+addr,
		"LEAF_CA_FILE="+trustBundlePath(dir), "COUNT=3")
	lout, err := leaf.CombinedOutput()
	if err != nil || !strings.Contains(string(lout), `"event":"sent"`) {
		t.Fatalf("leaf device: %v\n%s", err, lout)
	}
	leafSeen := map[string]bool{}
	mctx, mcancel := context.WithTimeout(ctx, hubtest.Patience)
	defer mcancel()
	errAll := fmt.Errorf("all three")
	err = sim.Monitor(mctx, 0, func(line []byte) error {
		var ev struct {
			DeviceID   string `json:"deviceId"`
			ModuleID   string `json:"moduleId"`
			Properties struct {
				Application map[string]string `json:"application"`
			} `json:"properties"`
		}
		// The route lets only leaf1's messages through; the link sends
		// them on leaf1's own connection (the embedded emulator has it
		// registered with its key from the config), so they are leaf1's.
		if json.Unmarshal(line, &ev) == nil && ev.DeviceID == "leaf1" && ev.ModuleID == "" {
			leafSeen[ev.Properties.Application["n"]] = true
		}
		if len(leafSeen) == 3 {
			return errAll
		}
		return nil
	})
	if err != errAll {
		t.Errorf("the leaf device's messages at the emulator: %v (got %v)", err, leafSeen)
	}

	// From the sender to a built-in module: ModuleClient.invokeMethod.
	t.Run("invokeMethod", func(t *testing.T) {
		if !invoke {
			t.Skip("ModuleClient.invokeMethod calls https://{IOTEDGE_GATEWAYHOSTNAME}:443 and the endpoint must then listen on 8883: " +
				"that takes root (as on CI) and free ports 127.0.0.1:443 and 127.0.0.1:8883")
		}
		if ev := waitEvent("sender", "invoked", nil); ev.Status != 200 {
			t.Errorf("sender's invokeMethod simtemp reset = %d %s, want 200", ev.Status, ev.Payload)
		}
	})

	waitEvent("sender", "sent", nil)
	var got map[int]int
	pollUntil(t, fmt.Sprintf("all %d alerts at the receiver", count), func() bool {
		got = alerts()
		return len(got) == count
	})
	again := 0
	for _, k := range got {
		again += k - 1
	}
	var fromSim int
	for _, ev := range events("receiver") {
		if ev.Event == "input" && ev.Input == "fromSim" && ev.Props["sequenceNumber"] != "" {
			fromSim++
		}
	}
	if fromSim == 0 {
		t.Error("no message from the simulated sensor reached the receiver")
	}
	if m := moduleByName(t, dir, "sender"); m.Restarts != 0 || m.State != "running" {
		t.Errorf("sender: %+v, want running and never restarted", m)
	}
	if m := moduleByName(t, dir, "receiver"); m.Restarts != 1 || m.State != "running" {
		t.Errorf("receiver: %+v, want running and restarted once (the kill)", m)
	}
	events("sender") // fails on an SDK error printed since

	// Rotating the receiver's identity restarts it with a new generation
	// id: fromEnvironment then signs with the new key through the
	// workload API, and the sensor's messages reach it again.
	opens := func() (n, fromSimSince int) {
		for _, ev := range events("receiver") {
			switch {
			case ev.Event == "open":
				n, fromSimSince = n+1, 0
			case ev.Event == "input" && ev.Input == "fromSim":
				fromSimSince++
			}
		}
		return n, fromSimSince
	}
	opened, _ := opens()
	restarts := moduleByName(t, dir, "receiver").Restarts
	if o, e, code := runCLI(t, "identities", "rotate", "--data-dir", dir, "receiver"); code != 0 || !strings.Contains(o, "restarted the module") {
		t.Fatalf("identities rotate receiver: exit %d\n%s%s", code, o, e)
	}
	pollUntil(t, "the rotated receiver to get the sensor's messages again", func() bool {
		n, since := opens()
		return n == opened+1 && since >= 3
	})
	// Restarted by the rotation, not by a crash: it never asked the
	// workload API to sign with its old generation id.
	if m := moduleByName(t, dir, "receiver"); m.Restarts > restarts || strings.Contains(errOut.String(), "workload request refused") {
		t.Errorf("receiver after the rotation: %+v (restarts before: %d); the workload API refused a request: %v",
			m, restarts, strings.Contains(errOut.String(), "workload request refused"))
	}
	t.Logf("receiver killed after %d of %d alerts; all arrived, %d of them again after the restart; %d sensor messages", killedAt, count, again, fromSim)
}

// dialEmbeddedHub connects to the IoT Hub emulator a running tinyedge
// started (the one of $XDG_STATE_HOME).
func dialEmbeddedHub(t *testing.T) *hubsim.Client {
	t.Helper()
	dir, err := hubsim.DefaultDataDir()
	if err != nil {
		t.Fatal(err)
	}
	var c *hubsim.Client
	pollUntil(t, "the embedded IoT Hub emulator", func() bool {
		c, err = hubsim.Dial(dir)
		return err == nil
	})
	return c
}

// embeddedHubHostname is the host name of the embedded IoT Hub emulator,
// as its connection strings give it.
func embeddedHubHostname(t *testing.T) string {
	t.Helper()
	ids, err := dialEmbeddedHub(t).Identities(context.Background())
	if err != nil || len(ids) == 0 {
		t.Fatalf("the emulator's identities: %v, %v", ids, err)
	}
	cs, err := iothub.ParseConnectionString(ids[0].ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	return cs.HostName
}

// moduleByName is a module as `tinyedge list --json` shows it.
func moduleByName(t *testing.T, dir, name string) moduleInfo {
	t.Helper()
	o, e, code := runCLI(t, "list", "--json", "--data-dir", dir)
	var mods []moduleInfo
	if code != 0 || json.Unmarshal([]byte(o), &mods) != nil {
		t.Fatalf("list --json: exit %d\n%s%s", code, o, e)
	}
	i := slices.IndexFunc(mods, func(m moduleInfo) bool { return m.Name == name })
	if i < 0 {
		t.Fatalf("no module %s in %s", name, o)
	}
	return mods[i]
}

// pollUntil polls cond every 20 ms (it asks tinyedge over its control
// socket) until it holds, failing the test after hubtest.Patience.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hubtest.Patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", hubtest.Patience, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
