package edge_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub/iothub"
)

// invokeHTTPS calls a method the way the Node SDK's MethodClient does.
func (e *env) invokeHTTPS(t *testing.T, caller, auth, path string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", "https://"+e.ep.MethodsAddr()+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-ms-edge-moduleId", caller)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool(), ServerName: gateway}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: wait}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(rb, &out); err != nil {
		t.Fatalf("answer %d %q is not JSON: %v", resp.StatusCode, rb, err)
	}
	return resp.StatusCode, out
}

func TestMethodsOverHTTPS(t *testing.T) {
	e := newEnv(t, envOpts{externals: []string{"caller", "target"}})
	auth := token("gw1/caller", gateway, keyOf("gw1/caller"), time.Hour)
	call := map[string]any{"methodName": "echo", "payload": map[string]any{"v": 1}, "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 5}

	// To an in-process module.
	code, out := e.invokeHTTPS(t, "gw1/caller", auth, "/twins/gw1/modules/sink/methods", call)
	if code != 200 || out["status"] != 200.0 || out["payload"].(map[string]any)["v"] != 1.0 {
		t.Fatalf("call to in-process module: %d %v", code, out)
	}

	// To another external module, over its MQTT connection.
	tc := e.mustDial(t, "gw1/target", clientOpts{})
	subscribe(t, tc, iothub.FilterMethods, 0, func(c paho.Client, m paho.Message) {
		tp, _ := iothub.ParseTopic(m.Topic())
		c.Publish(iothub.MethodResponseTopic(200, tp.RID), 0, false, []byte(`"pong"`))
	})
	code, out = e.invokeHTTPS(t, "gw1/caller", auth, "/twins/gw1/modules/target/methods", call)
	if code != 200 || out["status"] != 200.0 || out["payload"] != "pong" {
		t.Fatalf("call to external module: %d %v", code, out)
	}

	// To a leaf device: POST /twins/{d}/methods.
	leaf := e.mustDial(t, "leaf1", clientOpts{})
	subscribe(t, leaf, iothub.FilterMethods, 0, func(c paho.Client, m paho.Message) {
		tp, _ := iothub.ParseTopic(m.Topic())
		c.Publish(iothub.MethodResponseTopic(202, tp.RID), 0, false, []byte(`{"leaf":true}`))
	})
	code, out = e.invokeHTTPS(t, "gw1/caller", auth, "/twins/leaf1/methods", call)
	if code != 200 || out["status"] != 202.0 || out["payload"].(map[string]any)["leaf"] != true {
		t.Fatalf("call to a leaf device: %d %v", code, out)
	}

	// Refused callers.
	for _, tc := range []struct{ name, caller, auth string }{
		{"no token", "gw1/caller", ""},
		{"wrong key", "gw1/caller", token("gw1/caller", gateway, []byte("wrong"), time.Hour)},
		{"expired", "gw1/caller", token("gw1/caller", gateway, keyOf("gw1/caller"), -time.Minute)},
		{"foreign host", "gw1/caller", token("gw1/caller", "evil.example", keyOf("gw1/caller"), time.Hour)},
		{"header names another module", "gw1/target", auth},
	} {
		code, out := e.invokeHTTPS(t, tc.caller, tc.auth, "/twins/gw1/modules/sink/methods", call)
		if code != http.StatusUnauthorized {
			t.Errorf("%s: %d %v, want 401", tc.name, code, out)
		}
	}
	// A bad call.
	code, _ = e.invokeHTTPS(t, "gw1/caller", auth, "/twins/gw1/modules/sink/methods", map[string]any{"payload": 1})
	if code != http.StatusBadRequest {
		t.Errorf("call without methodName: %d, want 400", code)
	}
}
