package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/hubsim"
	"github.com/tinyedge/tinyedge/hub/hubtest"
)

// TestRunWithEmbeddedHubsim is `make run`'s loop: a gateway nobody
// provisioned starts the IoT Hub emulator on loopback, its alerts arrive
// there, and the emulator's CLI patches the filter's threshold and resets
// the sensor through the cloud path.
func TestRunWithEmbeddedHubsim(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	dir := t.TempDir()
	manifest := fastQuickstart(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--manifest", manifest, "--data-dir", dir, "--device-id", "gw1", "--log-format", "json"}, &out, &errOut)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v\n%s", err, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("run did not stop")
		}
	}()

	simDir, err := hubsim.DefaultDataDir()
	if err != nil {
		t.Fatal(err)
	}
	var c *hubsim.Client
	hubtest.WaitFor(t, "the embedded emulator", func() bool {
		c, err = hubsim.Dial(simDir)
		return err == nil
	})
	alert := func(line []byte) bool {
		var ev struct {
			ModuleID   string `json:"moduleId"`
			Properties struct {
				Application map[string]string `json:"application"`
			} `json:"properties"`
		}
		return json.Unmarshal(line, &ev) == nil && ev.ModuleID == "filtermodule" && ev.Properties.Application["MessageType"] == "Alert"
	}
	mctx, mcancel := context.WithTimeout(ctx, hubtest.Patience)
	defer mcancel()
	errFound := context.Canceled
	err = c.Monitor(mctx, 0, func(line []byte) error {
		if alert(line) {
			return errFound
		}
		return nil
	})
	if err != errFound {
		t.Fatalf("no alert from filtermodule reached the emulator: %v\n%s", err, errOut.String())
	}

	// The CLI finds the emulator through its directory; bare names find
	// the modules.
	if o, e, code := runCLI(t, "hubsim", "twin", "patch", "filter", `{"TemperatureThreshold": 30}`); code != 0 {
		t.Fatalf("twin patch: code %d\n%s%s", code, o, e)
	}
	hubtest.WaitFor(t, "the threshold reported by the filter", func() bool {
		o, _, code := runCLI(t, "hubsim", "twin", "get", "filter")
		if code != 0 {
			return false
		}
		var tw struct {
			Properties struct {
				Reported map[string]any `json:"reported"`
			} `json:"properties"`
		}
		if err := json.Unmarshal([]byte(o), &tw); err != nil {
			t.Fatalf("twin get printed %q: %v", o, err)
		}
		return tw.Properties.Reported["TemperatureThreshold"] == 30.0
	})
	hubtest.WaitFor(t, "reset through the cloud", func() bool {
		o, _, code := runCLI(t, "hubsim", "method", "invoke", "simtemp", "reset")
		return code == 0 && strings.Contains(o, `"status": 200`)
	})
}

// TestEmbeddedHubRegistersLeaves: leaf devices declared with a key are
// registered with the emulator with that key, so they can send as
// themselves; one it already knows with another key is kept and said in
// the log; X.509 leaves are not registered.
func TestEmbeddedHubRegistersLeaves(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	key := func(s string) string { return base64.StdEncoding.EncodeToString([]byte("key of the leaf device " + s)) }
	leaves := []LeafDeviceConfig{{ID: "leaf1", SharedAccessKey: key("leaf1")}, {ID: "cam", Thumbprint: strings.Repeat("ab", 32)}}
	var logs hubtest.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	_, _, stop, err := embeddedHub("gw1", nil, leaves, log)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	// Again, with leaf1's key changed in the config: the emulator keeps
	// the key it has, and the log says the leaf will go as the gateway.
	leaves[0].SharedAccessKey = key("other")
	_, _, stop, err = embeddedHub("gw1", nil, leaves, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dir, err := hubsim.DefaultDataDir()
	if err != nil {
		t.Fatal(err)
	}
	c, err := hubsim.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := c.Identities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range ids {
		got = append(got, id.DeviceID)
		if id.DeviceID == "leaf1" && !strings.Contains(id.ConnectionString, ";SharedAccessKey="+key("leaf1")+";") {
			t.Errorf("leaf1 registered as %s, want the key from the config", id.ConnectionString)
		}
	}
	if strings.Join(got, " ") != "gw1 leaf1" {
		t.Errorf("registered %v, want the gateway and the leaf with a key", got)
	}
	if !strings.Contains(logs.String(), "leaf=leaf1") || !strings.Contains(logs.String(), "another key") {
		t.Errorf("log:\n%s\nwant a warning that leaf1 is registered with another key", logs.String())
	}
}
