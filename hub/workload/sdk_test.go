package workload

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/identity"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/process"
)

// sdkDir is where scripts/sdk keeps the official Azure IoT Node SDK
// (npm ci there installs it).
const sdkDir = "../../scripts/sdk"

// needSDK skips when node or the SDK is not installed.
func needSDK(t *testing.T) (node string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skipf("node is not installed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", "azure-iot-device-mqtt")); err != nil {
		t.Skipf("the Azure IoT Node SDK is not installed (run npm ci in scripts/sdk): %v", err)
	}
	return node
}

// TestNodeSDKFromEnvironment runs a Node program written with the official
// SDK as a process module: ModuleClient.fromEnvironment(Mqtt) reads the
// IOTEDGE_* variables, fetches the trust bundle and has its SAS token
// signed over the workload socket, and the token verifies with the
// module's key.
func TestNodeSDKFromEnvironment(t *testing.T) {
	node := needSDK(t)
	script, err := filepath.Abs(filepath.Join(sdkDir, "module-token.js"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ids, err := identity.Open(filepath.Join(dir, "identities.json"))
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	sock := filepath.Join(dir, "workload.sock")
	host := process.NewHost(&process.Options{Edge: &process.Edge{
		WorkloadURI:     "unix://" + sock,
		IoTHubHostname:  "hub.example.net",
		GatewayHostname: "gw1.local",
		GenerationID: func(d, m string) (string, error) {
			id, err := ids.Module(d, m)
			return id.GenerationID, err
		},
	}})
	srv := New(Options{DeviceID: "gw1", Identities: ids, Callers: host, CA: ca})
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Shutdown(t.Context())
		<-served
	}()

	var log hubtest.SyncBuffer
	h := hub.New(hub.Options{DeviceID: "gw1", Logger: slog.New(slog.NewTextHandler(&log, nil))})
	defer h.Close()
	err = h.Deploy(hub.Deployment{Modules: []hub.ModuleSpec{{
		Name: "nodemod", RestartPolicy: hub.RestartNever,
		Module: host.Module(process.Settings{Path: node, Args: []string{script}, WorkingDir: filepath.Dir(script)}),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	hubtest.WaitFor(t, "the node module to finish", func() bool {
		for _, st := range h.ModuleStatus() {
			if st.State == hub.StateStopped || st.State == hub.StateFailed {
				for _, ln := range host.Log("nodemod").Tail(0) {
					out = append(out, ln.Stream+": "+ln.Text)
				}
				if st.State == hub.StateFailed {
					t.Fatalf("node module failed: %s\n%s\nlog:\n%s", st.LastExit, strings.Join(out, "\n"), log.String())
				}
				return true
			}
		}
		return false
	})
	var token, trust string
	for _, l := range out {
		if v, ok := strings.CutPrefix(l, "stdout: TOKEN "); ok {
			token = v
		}
		if v, ok := strings.CutPrefix(l, "stdout: TRUST "); ok {
			trust = v
		}
	}
	if trust != "-----BEGIN CERTIFICATE-----" {
		t.Errorf("trust bundle as the SDK got it starts %q", trust)
	}
	id, ok := ids.Lookup("gw1", "nodemod")
	if !ok {
		t.Fatal("no identity for nodemod")
	}
	checkToken(t, token, "hub.example.net/devices/gw1/modules/nodemod", id.Key)
	// The local MQTT endpoint checks tokens with package iothub and the
	// identity store's Key: the SDK's token passes there too.
	tok, err := iothub.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ids.Key("gw1", "nodemod")
	if err := tok.Verify(key, time.Now()); err != nil || tok.Resource != iothub.Resource("hub.example.net", "gw1", "nodemod") {
		t.Errorf("iothub.Verify = %v, resource %q", err, tok.Resource)
	}
}

// checkToken verifies a SAS token as IoT Hub would: its resource and its
// signature over urlenc(resource) + "\n" + expiry.
func checkToken(t *testing.T, token, resource string, key []byte) {
	t.Helper()
	rest, ok := strings.CutPrefix(token, "SharedAccessSignature ")
	if !ok {
		t.Fatalf("token %q is not a SharedAccessSignature", token)
	}
	q, err := url.ParseQuery(rest)
	if err != nil {
		t.Fatalf("token %q: %v", token, err)
	}
	if q.Get("sr") != resource {
		t.Errorf("token resource %q, want %q", q.Get("sr"), resource)
	}
	se, err := strconv.ParseInt(q.Get("se"), 10, 64)
	if err != nil || time.Unix(se, 0).Before(time.Now()) {
		t.Errorf("token expiry %q is not in the future", q.Get("se"))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(url.QueryEscape(q.Get("sr")) + "\n" + q.Get("se")))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); q.Get("sig") != want {
		t.Errorf("token signature %q, want %q (HMAC-SHA256 with the module's key)", q.Get("sig"), want)
	}
}
