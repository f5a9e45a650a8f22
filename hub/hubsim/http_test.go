package hubsim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestServiceAPI(t *testing.T) {
	s := startSim(t, "")
	c, err := Dial(s.opts.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Registry.
	dev, err := c.AddIdentity(ctx, "gw", "")
	if err != nil {
		t.Fatal(err)
	}
	if dev.DeviceID != "gw" || dev.Authentication.Type != "sas" || !strings.Contains(dev.ConnectionString, "DeviceId=gw;SharedAccessKey=") {
		t.Errorf("device %+v", dev)
	}
	mod, err := c.AddIdentity(ctx, "gw", "filtermodule")
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.AddIdentity(ctx, "gw", "filtermodule")
	if err != nil || again.ConnectionString != mod.ConnectionString {
		t.Errorf("PUT again changed the identity: %+v, %v", again, err)
	}
	var apiErr *APIError
	if _, err := c.AddIdentity(ctx, "nodevice", "m"); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Errorf("module of a missing device: %v", err)
	}
	if _, err := c.AddIdentity(ctx, "bad#id", ""); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("bad id: %v", err)
	}
	// A device with the key it is given (a leaf device the gateway
	// registers with the key from its config); PUT again keeps it.
	const leafKey = "bGVhZi1kZXZpY2Uta2V5LTAxMjM0NTY3ODlhYmNkZWY="
	for range 2 {
		leaf, err := c.AddDeviceWithKey(ctx, "leaf", leafKey)
		if err != nil || !strings.Contains(leaf.ConnectionString, ";DeviceId=leaf;SharedAccessKey="+leafKey+";") {
			t.Errorf("AddDeviceWithKey = %+v, %v; want the given key", leaf, err)
		}
	}
	if _, err := c.AddDeviceWithKey(ctx, "short", "c2hvcnQ="); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("a 5-byte key: %v, want 400", err)
	}
	ids, err := c.Identities(ctx)
	if err != nil || len(ids) != 3 || ids[1].ModuleID != "filtermodule" || ids[2].DeviceID != "leaf" {
		t.Fatalf("Identities = %+v, %v", ids, err)
	}

	// The identity connects with the connection string the API gave.
	id := mustIdentity(t, s, "gw", "filtermodule")
	if got := s.ConnectionString(id); got != mod.ConnectionString {
		t.Errorf("connection strings differ: %s vs %s", got, mod.ConnectionString)
	}
	conn := mustDial(t, s, id)
	conn.subscribe(t, "$iothub/twin/PATCH/properties/desired/#")
	conn.subscribe(t, "$iothub/methods/POST/#")

	// Twins.
	tw, err := c.PatchDesired(ctx, "gw", "filtermodule", json.RawMessage(`{"TemperatureThreshold":30}`))
	if err != nil {
		t.Fatal(err)
	}
	doc := decodeJSON(t, tw)
	desired := doc["properties"].(map[string]any)["desired"].(map[string]any)
	if desired["TemperatureThreshold"] != 30.0 || desired["$version"] != 2.0 || doc["moduleId"] != "filtermodule" || doc["connectionState"] != "Connected" {
		t.Errorf("patched twin %s", tw)
	}
	n := conn.waitMsg(t, "$iothub/twin/PATCH/properties/desired/?$version=2")
	if got := decodeJSON(t, n.Payload()); got["TemperatureThreshold"] != 30.0 {
		t.Errorf("notification %s", n.Payload())
	}
	if tw2, err := c.Twin(ctx, "gw", "filtermodule"); err != nil || !strings.Contains(string(tw2), `"TemperatureThreshold":30`) {
		t.Errorf("GET twin %s, %v", tw2, err)
	}
	if _, err := c.PatchDesired(ctx, "gw", "filtermodule", json.RawMessage(`[1]`)); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("array patch: %v", err)
	}
	if _, err := c.Twin(ctx, "gw", "nobody"); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Errorf("twin of nobody: %v", err)
	}

	// Direct methods.
	done := make(chan error, 1)
	go func() {
		res, err := c.InvokeMethod(ctx, "gw", "filtermodule", "reset", json.RawMessage(`{"x":1}`), 5*time.Second)
		if err == nil && (res.Status != 201 || string(res.Payload) != `"done"`) {
			err = errors.New("wrong result " + string(res.Payload))
		}
		done <- err
	}()
	m := conn.waitMsg(t, "$iothub/methods/POST/reset/")
	rid := strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/reset/?$rid=")
	if err := conn.publish(t, "$iothub/methods/res/201/?$rid="+rid, 0, []byte(`"done"`)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("InvokeMethod over HTTP: %v", err)
	}
	if _, err := c.InvokeMethod(ctx, "gw", "", "reset", nil, 5*time.Second); !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.ErrorCode != 404103 {
		t.Errorf("method on an unconnected device: %v", err)
	}
	if _, err := c.InvokeMethod(ctx, "gw", "filtermodule", "reset", nil, time.Second); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("timeout under 5 s: %v", err)
	}

	// The event stream, from the start.
	if err := conn.publish(t, "devices/gw/modules/filtermodule/messages/events/%24.on=output1&a=1", 1, []byte(`{"t":1}`)); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var line []byte
	err = c.Monitor(sctx, 0, func(b []byte) error {
		line = append([]byte(nil), b...)
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Monitor: %v", err)
	}
	ev := decodeJSON(t, line)
	if ev["deviceId"] != "gw" || ev["moduleId"] != "filtermodule" || ev["body"].(map[string]any)["t"] != 1.0 {
		t.Errorf("event line %s", line)
	}
	props := ev["properties"].(map[string]any)
	if props["application"].(map[string]any)["a"] != "1" || props["system"].(map[string]any)["iothub-outputname"] != "output1" {
		t.Errorf("event properties %s", line)
	}
}

var errStop = errors.New("stop")

func TestServiceAPIRefusesStrangers(t *testing.T) {
	s := startSim(t, "")
	for _, auth := range []string{"", "Bearer wrong", "Basic " + s.APIToken()} {
		req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr()+"/devices", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("Authorization %q: status %d, want 401", auth, resp.StatusCode)
		}
	}
	if _, err := New(Options{DataDir: t.TempDir(), HTTPAddr: "0.0.0.0:0"}); err == nil {
		t.Error("New accepted a non-loopback HTTP address")
	}
	http.DefaultClient.CloseIdleConnections()
}
