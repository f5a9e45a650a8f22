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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
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
	var stderr lockedBuffer
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

// lockedBuffer is an io.Writer whose contents can be read while a
// process is still writing to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
