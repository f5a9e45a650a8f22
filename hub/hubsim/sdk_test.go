package hubsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/iothub"
)

// sdkDir is scripts/sdk, where `make sdk` (scripts/deps.sh) installs the
// official Azure IoT Node SDK.
func sdkDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "scripts", "sdk"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// skipUnlessSDK skips when node or the installed SDK is missing, or when
// the test runs emulated (qemu-user), where programs for the host cannot
// be started from the test.
func skipUnlessSDK(t *testing.T) (node, dir string) {
	t.Helper()
	if err := exec.Command(os.Args[0], "-test.run=^$").Run(); errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("cannot exec programs here (emulated?): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (scripts/deps.sh installs what make test needs)")
	}
	dir = sdkDir(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "azure-iot-device-mqtt")); err != nil {
		t.Skipf("the Azure IoT SDK is not installed in %s: run `make sdk`", dir)
	}
	return node, dir
}

type sdkStep struct {
	Step      string          `json:"step"`
	As        string          `json:"as"`
	Error     string          `json:"error"`
	MessageID string          `json:"messageId"`
	Desired   json.RawMessage `json:"desired"`
	Reported  json.RawMessage `json:"reported"`
	Delta     map[string]any  `json:"delta"`
	Payload   json.RawMessage `json:"payload"`
}

// TestSDKConformance runs the official Node SDK (scripts/sdk/conformance.js)
// against hubsim as a device and as a module, drives the desired patch and
// the direct method from Go, and checks what hubsim recorded.
func TestSDKConformance(t *testing.T) {
	node, dir := skipUnlessSDK(t)
	s, err := New(Options{DataDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", Hostname: "127.0.0.1", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dev, err := s.AddDevice("sdkdevice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddIdentity(Identity{DeviceID: "sdkgw", IoTEdge: true}); err != nil {
		t.Fatal(err)
	}
	mod, err := s.AddModule("sdkgw", "sdkmodule")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]Identity{"device": dev, "module": mod}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "conformance.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HUBSIM_DEVICE_CS="+dev.ConnectionString,
		"HUBSIM_MODULE_CS="+mod.ConnectionString,
		"HUBSIM_CA="+filepath.Join(s.opts.DataDir, caFile),
		"HUBSIM_TIMEOUT_MS=20000",
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	steps := map[string]map[string]sdkStep{"device": {}, "module": {}, "all": {}}
	methods := map[string]MethodResult{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var st sdkStep
		if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
			t.Errorf("conformance.js printed %q: %v", sc.Bytes(), err)
			continue
		}
		t.Logf("sdk: %s", sc.Bytes())
		if st.Step == "error" {
			t.Errorf("SDK error as %s: %s", st.As, st.Error)
			continue
		}
		if m := steps[st.As]; m != nil {
			m[st.Step] = st
		}
		id := targets[st.As]
		switch st.Step {
		case "listening-desired":
			if err := waitSubscribed(ctx, s, id, iothub.TwinDesiredTopic(2)); err != nil {
				t.Errorf("%s: %v", st.As, err)
			}
			if _, err := s.PatchDesired(id.DeviceID, id.ModuleID, map[string]any{"threshold": 30.0, "mode": st.As}); err != nil {
				t.Errorf("PatchDesired: %v", err)
			}
		case "listening-method":
			if err := waitSubscribed(ctx, s, id, iothub.MethodRequestTopic("reset", "1")); err != nil {
				t.Errorf("%s: %v", st.As, err)
			}
			res, err := s.InvokeMethod(ctx, id.DeviceID, id.ModuleID, "reset", json.RawMessage(`{"n":1}`), 10*time.Second)
			if err != nil {
				t.Errorf("InvokeMethod on the %s: %v", st.As, err)
			}
			methods[st.As] = res
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("conformance.js: %v\nstderr:\n%s", err, stderr.String())
	}
	if _, ok := steps["all"]["done"]; !ok {
		t.Fatalf("conformance.js did not finish its steps; stderr:\n%s", stderr.String())
	}

	for _, as := range []string{"device", "module"} {
		id := targets[as]
		st := steps[as]
		for _, want := range []string{"open", "twin", "reported", "desired", "method", "closed"} {
			if _, ok := st[want]; !ok {
				t.Errorf("%s: no %q step", as, want)
			}
		}
		// What the SDK got from GET: empty sections at version 1.
		var desired, reported map[string]any
		json.Unmarshal(st["twin"].Desired, &desired)
		json.Unmarshal(st["twin"].Reported, &reported)
		if desired["$version"] != 1.0 || reported["$version"] != 1.0 {
			t.Errorf("%s: twin from GET: desired %s reported %s", as, st["twin"].Desired, st["twin"].Reported)
		}
		if d := st["desired"].Delta; d["threshold"] != 30.0 || d["mode"] != as || d["$version"] != 2.0 {
			t.Errorf("%s: desired patch the SDK saw: %v", as, d)
		}
		tw, err := s.Twin(id.DeviceID, id.ModuleID)
		if err != nil {
			t.Fatal(err)
		}
		wantReported := map[string]any{"firmware": "1.2.3", "status": map[string]any{"as": as, "phase": "patched"}}
		if tw.Reported.Version != 3 || !reflect.DeepEqual(tw.Reported.Doc, wantReported) {
			t.Errorf("%s: reported v%d %v, want v3 %v", as, tw.Reported.Version, tw.Reported.Doc, wantReported)
		}
		if tw.Desired.Version != 2 {
			t.Errorf("%s: desired version %d, want 2", as, tw.Desired.Version)
		}
		res := methods[as]
		var payload map[string]any
		json.Unmarshal(res.Payload, &payload)
		if res.Status != 200 || payload["as"] != as || !reflect.DeepEqual(payload["echo"], map[string]any{"n": 1.0}) {
			t.Errorf("%s: method result %d %s", as, res.Status, res.Payload)
		}
		if p := string(st["method"].Payload); p != `{"n":1}` {
			t.Errorf("%s: the SDK's method handler got %s", as, p)
		}
	}

	evs, _, _ := s.Events(0)
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4", len(evs))
	}
	for i, e := range evs {
		as, n := "device", i
		if i >= 2 {
			as, n = "module", i-2
		}
		id := targets[as]
		sys := e.System
		if e.DeviceID != id.DeviceID || e.ModuleID != id.ModuleID || sys.ConnectionDeviceID != id.DeviceID || sys.ConnectionModuleID != id.ModuleID {
			t.Errorf("event %d from %s/%s (connection %s/%s), want %s", i, e.DeviceID, e.ModuleID, sys.ConnectionDeviceID, sys.ConnectionModuleID, id.ID())
		}
		wantID := as + "-msg-" + string(rune('0'+n))
		if sys.MessageID != wantID || sys.CorrelationID != as+"-corr-"+string(rune('0'+n)) || sys.ContentType != "application/json" || sys.ContentEncoding != "utf-8" {
			t.Errorf("event %d system properties %+v", i, sys)
		}
		if (as == "module") != (sys.OutputName == "output1") {
			t.Errorf("event %d output name %q", i, sys.OutputName)
		}
		alert := "no"
		if n%2 == 1 {
			alert = "yes"
		}
		if want := map[string]string{"seq": string(rune('0' + n)), "temp alert": alert, "unit": "°C"}; !reflect.DeepEqual(e.Properties, want) {
			t.Errorf("event %d properties %v, want %v", i, e.Properties, want)
		}
		var body map[string]any
		if err := json.Unmarshal(e.Body, &body); err != nil || body["as"] != as || body["i"] != float64(n) {
			t.Errorf("event %d body %s", i, e.Body)
		}
	}
}

// waitSubscribed waits until the SDK, which subscribes in the background,
// listens on topic.
func waitSubscribed(ctx context.Context, s *Sim, id Identity, topic string) error {
	for !s.Subscribed(id.DeviceID, id.ModuleID, topic) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never subscribed to %s", id.ID(), topic)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
