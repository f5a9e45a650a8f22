package edge_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
)

// sdkDir holds the official Azure IoT Node SDK (npm ci there installs
// it) and the scripts that drive it.
const sdkDir = "../../scripts/sdk"

func needNodeSDK(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skipf("node is not installed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", "azure-iot-device-mqtt")); err != nil {
		t.Skipf("the Azure IoT Node SDK is not installed (npm ci in scripts/sdk): %v", err)
	}
	if err := exec.Command(os.Args[0], "-test.run=^$").Run(); errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("cannot exec here (emulated?): %v", err)
	}
	return node
}

type sdkEvent struct {
	Event   string            `json:"event"`
	Input   string            `json:"input"`
	Body    string            `json:"body"`
	Props   map[string]string `json:"props"`
	Desired map[string]any    `json:"desired"`
	Delta   map[string]any    `json:"delta"`
	Message string            `json:"message"`
}

// TestNodeSDKModule runs an external module written with the official
// Node SDK against the endpoint: outputs routed to an in-process module,
// inputs delivered on the Node SDK's subscription, twin get/reported/
// desired, and a direct method from the hub.
func TestNodeSDKModule(t *testing.T) {
	node := needNodeSDK(t)
	e := newEnv(t, envOpts{
		externals: []string{"nodemod"},
		routes: []string{
			`FROM /messages/modules/nodemod/outputs/out1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")`,
			`FROM /messages/modules/sink/* INTO BrokeredEndpoint("/modules/nodemod/inputs/control")`,
		},
	})
	dir := t.TempDir()
	bundle := filepath.Join(dir, "ca.pem")
	if err := e.ca.WriteTrustBundle(bundle); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join(sdkDir, "edge-module.js"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, script)
	cmd.Dir = sdkDir
	cmd.Env = append(os.Environ(),
		"EdgeHubConnectionString=HostName="+iotHub+";DeviceId=gw1;ModuleId=nodemod;SharedAccessKey="+
			base64.StdEncoding.EncodeToString(keyOf("gw1/nodemod"))+";GatewayHostName="+e.ep.Addr(),
		"EdgeModuleCACertificateFile="+bundle)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr hubtest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan sdkEvent, 64)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev sdkEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = sdkEvent{Event: "garbage", Message: sc.Text()}
			}
			events <- ev
		}
	}()
	defer func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && !t.Failed() {
				t.Errorf("node: %v\n%s", err, stderr.String())
			}
		case <-time.After(wait):
			_ = cmd.Process.Kill()
			<-done
			t.Error("node did not exit after stdin closed")
		}
	}()
	next := func(want string) sdkEvent {
		t.Helper()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("node exited waiting for %q\n%s", want, stderr.String())
				}
				if ev.Event == "error" || ev.Event == "garbage" {
					t.Fatalf("node: %s\n%s", ev.Message, stderr.String())
				}
				if ev.Event == want {
					return ev
				}
			case <-time.After(wait):
				t.Fatalf("no %q from node\n%s", want, stderr.String())
			}
		}
	}

	if tw := next("twin"); tw.Desired["threshold"] != 25.0 {
		t.Errorf("desired properties at start: %v", tw.Desired)
	}
	next("reported")
	next("sent")
	hubtest.WaitFor(t, "3 messages at sink", func() bool { return len(e.sink.messages()) == 3 })
	for i, m := range e.sink.messages() {
		if m.Properties["n"] != string(rune('0'+i)) || m.System.ConnectionModuleID != "nodemod" || m.System.ContentType != "application/json" {
			t.Errorf("message %d: %+v %v", i, m.System, m.Properties)
		}
	}
	if tw, _ := e.h.Twin("nodemod"); tw.Reported.Doc["fromNode"] != true {
		t.Errorf("reported properties: %v", tw.Reported.Doc)
	}

	m := message.New([]byte(`{"command":"reset"}`))
	m.Properties["kind"] = "ctl"
	if err := e.h.Send(context.Background(), "sink", "o", m); err != nil {
		t.Fatal(err)
	}
	if in := next("input"); in.Input != "control" || in.Body != `{"command":"reset"}` || in.Props["kind"] != "ctl" {
		t.Errorf("input at node: %+v", in)
	}

	r, err := e.h.InvokeMethod(context.Background(), "gw1", "nodemod", hub.MethodRequest{Name: "ping", Payload: []byte(`{"x":1}`)}, 0)
	if err != nil || r.Status != 200 || string(r.Payload) != `{"pong":{"x":1}}` {
		t.Errorf("method ping = %d %s, %v", r.Status, r.Payload, err)
	}

	if _, err := e.h.PatchDesired("nodemod", map[string]any{"threshold": 30.0}); err != nil {
		t.Fatal(err)
	}
	if d := next("desired"); d.Delta["threshold"] != 30.0 {
		t.Errorf("desired delta at node: %v", d.Delta)
	}
}

// TestNodeSDKConformance drives scripts/sdk/conformance.js (the SDK
// conformance client hub/hubsim uses too) against the endpoint: a leaf
// device with DeviceClient and an external module with ModuleClient each
// send events with properties, get the twin, patch reported properties,
// take a desired patch and answer a direct method.
func TestNodeSDKConformance(t *testing.T) {
	node := needNodeSDK(t)
	e := newEnv(t, envOpts{
		externals: []string{"mod"},
		routes: []string{
			`FROM /messages INTO $upstream`,
			`FROM /messages/modules/mod/outputs/output1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")`,
		},
	})
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	if err := e.ca.WriteTrustBundle(bundle); err != nil {
		t.Fatal(err)
	}
	cs := func(dev, mod string) string {
		s := "HostName=" + iotHub + ";DeviceId=" + dev
		id := dev
		if mod != "" {
			s += ";ModuleId=" + mod
			id += "/" + mod
		}
		return s + ";SharedAccessKey=" + base64.StdEncoding.EncodeToString(keyOf(id)) + ";GatewayHostName=" + e.ep.Addr()
	}
	cmd := exec.Command(node, "conformance.js")
	cmd.Dir = sdkDir
	cmd.Env = append(os.Environ(), "HUBSIM_DEVICE_CS="+cs("leaf1", ""), "HUBSIM_MODULE_CS="+cs("gw1", "mod"), "HUBSIM_CA="+bundle)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr hubtest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	done := false
	for !done && sc.Scan() {
		var step struct{ Step, As, Error string }
		if err := json.Unmarshal(sc.Bytes(), &step); err != nil {
			t.Fatalf("conformance.js: %s", sc.Text())
		}
		id := hub.Identity{DeviceID: "leaf1"}
		if step.As == "module" {
			id = hub.Identity{DeviceID: "gw1", ModuleID: "mod"}
		}
		switch step.Step {
		case "error":
			t.Fatalf("conformance.js (%s): %s\n%s", step.As, step.Error, stderr.String())
		case "listening-desired":
			// The SDK subscribes in the background; a patch before that
			// would reach only a later GET, as with IoT Hub.
			hubtest.WaitFor(t, "the desired subscription", func() bool {
				return slices.Contains(e.ep.Subscriptions(id), iothub.FilterTwinDesired)
			})
			var err error
			if id.ModuleID == "" {
				_, err = e.h.PatchLeafDesired("leaf1", map[string]any{"threshold": 30.0})
			} else {
				_, err = e.h.PatchDesired("mod", map[string]any{"threshold": 30.0})
			}
			if err != nil {
				t.Fatal(err)
			}
		case "listening-method":
			// The SDK subscribes in the background: 404 until it has.
			hubtest.WaitFor(t, "the method answered", func() bool {
				r, err := e.h.InvokeMethod(context.Background(), id.DeviceID, id.ModuleID, hub.MethodRequest{Name: "reset", Payload: []byte(`{"n":1}`)}, 0)
				if err != nil {
					t.Fatal(err)
				}
				return r.Status == 200 && strings.Contains(string(r.Payload), `"echo":{"n":1}`)
			})
		case "done":
			done = true
		}
	}
	if !done {
		t.Fatalf("conformance.js ended without done\n%s", stderr.String())
	}
	check := func(who string, msgs []*message.Message) {
		t.Helper()
		if len(msgs) != 2 {
			t.Fatalf("%s: %d messages, want 2", who, len(msgs))
		}
		for i, m := range msgs {
			s := m.System
			if s.MessageID != who+"-msg-"+string(rune('0'+i)) || s.CorrelationID != who+"-corr-"+string(rune('0'+i)) ||
				s.ContentType != "application/json" || m.Properties["unit"] != "°C" || m.Properties["temp alert"] == "" {
				t.Errorf("%s message %d: %+v %v", who, i, s, m.Properties)
			}
		}
	}
	// "FROM /messages" takes module outputs too: the leaf's are those
	// without a module.
	hubtest.WaitFor(t, "leaf events upstream", func() bool { return len(e.up.From("")) == 2 })
	check("device", e.up.From(""))
	check("module", e.sink.messages())
	for _, id := range []hub.Identity{{DeviceID: "leaf1"}, {DeviceID: "gw1", ModuleID: "mod"}} {
		tw, err := e.h.IdentityTwin(id)
		if err != nil || tw.Reported.Doc["firmware"] != "1.2.3" {
			t.Errorf("%s reported: %v, %v", id, tw.Reported.Doc, err)
		}
	}
}
