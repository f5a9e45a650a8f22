package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/build/ota"
	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
)

// TestMain lets the test binary stand in for tinyedge itself when
// TINYEDGE_MAIN=1, so TestSignals can send it real signals.
func TestMain(m *testing.M) {
	if os.Getenv("TINYEDGE_MAIN") == "1" {
		// A copy of this binary in an OTA slot plays a version that hangs
		// at start, when a test asks for one.
		if self, _ := os.Executable(); os.Getenv("TINYEDGE_TEST_HANG") == "1" && strings.Contains(self, "/slots/") {
			select {}
		}
		main()
	}
	os.Exit(testMain(m))
}

// testMain keeps `tinyedge run` in tests on loopback and out of the
// user's home: the embedded IoT Hub emulator's directory is a temporary
// one, and the default config puts the local endpoint on a free loopback
// port without the HTTPS methods listener. Tests that need other settings
// pass --config.
func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tinyedge-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("[edge]\nlisten = \"127.0.0.1:0\"\nmethods_listen = \"off\"\n"), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	os.Setenv(configEnv, cfg)
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut hubtest.SyncBuffer
	err := run(context.Background(), args, &out, &errOut)
	code = exitCode(err, &errOut)
	return out.String(), errOut.String(), code
}

func TestVersion(t *testing.T) {
	out, _, code := runCLI(t, "version")
	if code != 0 || !strings.Contains(out, "tinyedge dev") || !strings.Contains(out, runtime.Version()) || !strings.Contains(out, runtime.GOARCH) {
		t.Errorf("version: code %d, output %q", code, out)
	}
}

func TestUnknownCommand(t *testing.T) {
	_, errOut, code := runCLI(t, "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("code %d, stderr %q", code, errOut)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "quickstart.json")
	if err := os.WriteFile(good, quickstartManifest, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := runCLI(t, "check", "--manifest", good)
	if code != 0 || !strings.Contains(out, "ok: 2 module(s), 3 route(s)") {
		t.Errorf("check quickstart: code %d, output %q", code, out)
	}

	out, errOut, code := runCLI(t, "check", "--manifest", "testdata/bad.json")
	if code != 1 {
		t.Errorf("check bad.json: code %d, want 1", code)
	}
	for _, want := range []string{
		`modules.db.settings.image`, `postgres:16`,
		`modules.f.status`, `sometimes`,
		`routes.alerts: column 56: expected INTO, found "INT0"`,
		`modules.sim.env.MessageCount.value: "lots" is not an integer`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check bad.json output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "4 problem(s)") {
		t.Errorf("stderr %q does not count 4 problems", errOut)
	}
}

func TestRouteTest(t *testing.T) {
	tests := []struct {
		name  string
		route string
		code  int
		want  []string
	}{
		{"match", `FROM /messages/modules/filtermodule/* WHERE $body.machine.temperature > 30 AND MessageType = 'Alert' INTO $upstream`, 0,
			[]string{"source /messages/modules/filtermodule/* matches", "is true", "$upstream"}},
		{"condition false", `FROM /messages/* WHERE $body.machine.temperature > 40 INTO $upstream`, 1,
			[]string{"is false", "no route matches"}},
		{"condition undefined", `FROM /messages/* WHERE $body.machine.missing > 40 INTO $upstream`, 1,
			[]string{"is undefined"}},
		{"source mismatch", `FROM /messages/modules/other/* INTO $upstream`, 1,
			[]string{"does not match /messages/modules/filtermodule/outputs/output1"}},
		{"syntax error", `FROM /messages/* WHERE INTO $upstream`, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, "route", "test", "--route", tt.route, "--message", "testdata/alert.json")
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tt.code == 2 && !strings.Contains(errOut, "column") {
				t.Errorf("syntax error without a column: %s", errOut)
			}
		})
	}
	t.Run("manifest", func(t *testing.T) {
		dir := t.TempDir()
		f := filepath.Join(dir, "m.json")
		if err := os.WriteFile(f, quickstartManifest, 0o644); err != nil {
			t.Fatal(err)
		}
		out, _, code := runCLI(t, "route", "test", "--manifest", f, "--message", "testdata/alert.json")
		if code != 0 || !strings.Contains(out, `route "filterToIoTHub"`) || !strings.Contains(out, "$upstream (priority 0; routes filterToIoTHub)") {
			t.Errorf("code %d:\n%s", code, out)
		}
	})
}

type sensorBody struct {
	Machine struct{ Temperature float64 } `json:"machine"`
}

func temperature(t *testing.T, m *message.Message) float64 {
	t.Helper()
	var b sensorBody
	if err := json.Unmarshal(m.Body, &b); err != nil {
		t.Fatalf("body %q: %v", m.Body, err)
	}
	return b.Machine.Temperature
}

// TestQuickstartEndToEnd runs the embedded quickstart deployment: only
// readings above the threshold reach $upstream from the filter, with
// MessageType=Alert and the hub's stamps; a desired patch to the threshold
// takes effect without a restart; the sensor's reset method works.
func TestQuickstartEndToEnd(t *testing.T) {
	m, _, err := loadManifest("")
	if err != nil {
		t.Fatal(err)
	}
	m.Desired["SimulatedTemperatureSensor"]["SendInterval"] = 0.005
	up := &hubtest.Recorder{}
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: up})
	defer h.Close()
	if err := h.Deploy(deployment(m, nil)); err != nil {
		t.Fatal(err)
	}

	// The sensor starts at 21 °C and climbs past 25 within a few dozen
	// readings.
	hubtest.WaitFor(t, "alerts from the filter", func() bool { return len(up.From("filtermodule")) >= 5 })
	for _, a := range up.From("filtermodule") {
		if temp := temperature(t, a); temp <= 25 {
			t.Errorf("filter forwarded %.2f °C, not above the threshold 25", temp)
		}
		s := a.System
		if a.Properties["MessageType"] != "Alert" || a.Properties["sequenceNumber"] == "" {
			t.Errorf("alert properties = %v, want MessageType=Alert and the sensor's properties", a.Properties)
		}
		if s.ConnectionDeviceID != "gw1" || s.ConnectionModuleID != "filtermodule" || s.OutputName != "output1" ||
			s.MessageID == "" || s.EnqueuedTime.IsZero() || s.ContentType != "application/json" {
			t.Errorf("alert system properties = %+v", s)
		}
	}
	sensor := up.From("SimulatedTemperatureSensor")
	if len(sensor) == 0 || sensor[0].System.OutputName != "temperatureOutput" {
		t.Fatalf("no sensor telemetry on $upstream (telemetryToIoTHub route)")
	}
	below := 0
	for _, s := range sensor {
		if temperature(t, s) <= 25 {
			below++
		}
	}
	if below == 0 {
		t.Error("saw no reading at or below 25 °C, so the filter was not tested against one")
	}

	// Raise the threshold without a restart: no alert at or below it after
	// the module has reported the new value.
	if _, err := h.PatchDesired("filtermodule", map[string]any{"TemperatureThreshold": 1000.0}); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the filter to report the new threshold", func() bool {
		tw, err := h.Twin("filtermodule")
		return err == nil && tw.Reported.Doc["TemperatureThreshold"] == 1000.0
	})
	n := len(up.From("filtermodule"))
	sent := len(up.From("SimulatedTemperatureSensor"))
	hubtest.WaitFor(t, "more sensor readings", func() bool { return len(up.From("SimulatedTemperatureSensor")) >= sent+20 })
	// One alert may have been in flight when the patch landed.
	if got := len(up.From("filtermodule")); got > n+1 {
		t.Errorf("%d alerts after raising the threshold to 1000", got-n)
	}
	for _, st := range h.ModuleStatus() {
		if st.RestartCount != 0 {
			t.Errorf("module %s restarted %d times", st.Name, st.RestartCount)
		}
	}

	// reset brings the machine temperature back to the start of the ramp.
	r, err := h.InvokeMethod(context.Background(), "gw1", "SimulatedTemperatureSensor", hub.MethodRequest{Name: "reset"}, 0)
	if err != nil || r.Status != 200 {
		t.Fatalf("reset: %v %v", r.Status, err)
	}
	after := len(up.From("SimulatedTemperatureSensor"))
	hubtest.WaitFor(t, "a reading after reset", func() bool { return len(up.From("SimulatedTemperatureSensor")) > after+1 })
	// The reading right after the reset is within one step of 21 °C.
	got := up.From("SimulatedTemperatureSensor")
	if temp := temperature(t, got[after+1]); temp > 21+2*1.25 {
		t.Errorf("second reading after reset is %.2f °C, want the ramp restarted near 21", temp)
	}
}

// fastQuickstart writes the quickstart manifest with a sensor that sends
// every 10 ms to dir/m.json and returns its path.
func fastQuickstart(t *testing.T, dir string) string {
	t.Helper()
	manifest := filepath.Join(dir, "m.json")
	fast := bytes.Replace(quickstartManifest, []byte(`"SendInterval": 5`), []byte(`"SendInterval": 0.01`), 1)
	if err := os.WriteFile(manifest, fast, 0o644); err != nil {
		t.Fatal(err)
	}
	return manifest
}

// TestRunCommand runs `tinyedge run` on a manifest with a fast sensor and
// checks the console output, then stops it as SIGINT would.
func TestRunCommand(t *testing.T) {
	dir := t.TempDir()
	manifest := fastQuickstart(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--upstream", "console", "--manifest", manifest, "--data-dir", dir, "--device-id", "gw1", "--log-format", "json"}, &out, &errOut)
	}()
	hubtest.WaitFor(t, "an alert on the console", func() bool { return strings.Contains(out.String(), `"MessageType": "Alert"`) })

	// A second instance on the same data dir is refused.
	if err := run(context.Background(), []string{"run", "--upstream", "console", "--manifest", manifest, "--data-dir", dir}, &hubtest.SyncBuffer{}, &hubtest.SyncBuffer{}); err == nil || !strings.Contains(err.Error(), "in use by another tinyedge") {
		t.Errorf("second run on the same data dir: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, errOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop after its context was cancelled")
	}
	for _, want := range []string{`"origin": "gw1"`, `"module": "filtermodule"`, `"iothub-connection-module-id": "SimulatedTemperatureSensor"`, `"content_type": "application/json"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console output lacks %s", want)
		}
	}
	if !strings.Contains(errOut.String(), `"msg":"tinyedge stopped"`) {
		t.Errorf("no clean-stop log line:\n%s", errOut.String())
	}
}

// TestSignals runs the test binary as tinyedge: SIGHUP applies an edited
// manifest without a restart (here, a lower filter threshold starts the
// alerts), a broken one is refused, and SIGTERM stops it cleanly.
func TestSignals(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "m.json")
	quiet := bytes.Replace(quickstartManifest, []byte(`"SendInterval": 5`), []byte(`"SendInterval": 0.01`), 1)
	quiet = bytes.Replace(quiet, []byte(`"TemperatureThreshold": 25`), []byte(`"TemperatureThreshold": 1000`), 1)
	if err := os.WriteFile(manifest, quiet, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "--upstream", "console", "--manifest", manifest, "--data-dir", dir, "--log-format", "json")
	cmd.Env = append(os.Environ(), "TINYEDGE_MAIN=1")
	var out, errOut hubtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			t.Skipf("cannot exec the test binary here (emulated?): %v", err)
		}
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	hubtest.WaitFor(t, "sensor readings", func() bool { return strings.Count(out.String(), `"module": "SimulatedTemperatureSensor"`) >= 20 })
	if strings.Contains(out.String(), `"MessageType": "Alert"`) {
		t.Fatal("alerts with a threshold of 1000")
	}

	// A broken manifest is refused and the deployment goes on.
	if err := os.WriteFile(manifest, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the refusal", func() bool { return strings.Contains(errOut.String(), "manifest not applied") })

	loud := bytes.Replace(quiet, []byte(`"TemperatureThreshold": 1000`), []byte(`"TemperatureThreshold": 0`), 1)
	if err := os.WriteFile(manifest, loud, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "alerts after lowering the threshold", func() bool { return strings.Contains(out.String(), `"MessageType": "Alert"`) })
	if strings.Count(errOut.String(), `"msg":"module starting"`) != 2 {
		t.Errorf("modules restarted for a desired-properties change:\n%s", errOut.String())
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tinyedge exited with %v after SIGTERM\n%s", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), `"msg":"tinyedge stopped"`) {
		t.Errorf("no clean stop:\n%s", errOut.String())
	}
}

// TestExampleManifests checks that the manifests shipped in build/examples
// pass `check` and become a deployment.
func TestExampleManifests(t *testing.T) {
	files, err := filepath.Glob("../../build/examples/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example manifests: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errOut, code := runCLI(t, "check", "--manifest", f)
			if code != 0 || strings.Contains(out, ": warning: ") {
				t.Errorf("check: exit %d\n%s%s", code, out, errOut)
			}
			m, _, err := loadManifest(f)
			if err != nil {
				t.Fatal(err)
			}
			if d := deployment(m, nil); len(d.Modules) == 0 || len(d.Routes) == 0 {
				t.Errorf("deployment has %d modules, %d routes", len(d.Modules), len(d.Routes))
			}
		})
	}
}

// TestRunSensorExample runs the BME280 example deployment from the CLI on
// the simulated bus: the real driver's readings reach the console through
// the $body route.
func TestRunSensorExample(t *testing.T) {
	src, err := os.ReadFile("../../build/examples/bme280.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	manifest := filepath.Join(dir, "m.json")
	fast := bytes.Replace(src, []byte(`"interval": 5`), []byte(`"interval": 0.02`), 1)
	fast = bytes.Replace(fast, []byte(`$body.temperature.value > 21`), []byte(`$body.temperature.value > -40`), 1)
	if err := os.WriteFile(manifest, fast, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--upstream", "console", "--manifest", manifest, "--data-dir", dir, "--log-format", "json"}, &out, &errOut)
	}()
	hubtest.WaitFor(t, "BME280 readings on the console", func() bool { return strings.Count(out.String(), `"chip": "BME280"`) >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{`"module": "climate"`, `"unit": "hPa"`, `"iothub-outputname": "telemetry"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console output lacks %s", want)
		}
	}
}

// TestStoreCommands runs tinyedge on a data dir, then inspects and
// compacts its store offline.
func TestStoreCommands(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--upstream", "console", "--data-dir", dir}, &out, &hubtest.SyncBuffer{})
	}()
	hubtest.WaitFor(t, "the first message", func() bool { return strings.Contains(out.String(), `"event"`) })
	// While it runs, the store belongs to it.
	if _, _, code := runCLI(t, "store", "stat", "--data-dir", dir); code == 0 {
		t.Error("store stat succeeded while tinyedge was running")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stat, errOut, code := runCLI(t, "store", "stat", "--data-dir", dir)
	if code != 0 || !strings.Contains(stat, "$upstream") || !strings.Contains(stat, "ENDPOINT") {
		t.Errorf("store stat: exit %d\n%s%s", code, stat, errOut)
	}
	comp, errOut, code := runCLI(t, "store", "compact", "--data-dir", dir)
	if code != 0 || !strings.Contains(comp, "compacted") {
		t.Errorf("store compact: exit %d\n%s%s", code, comp, errOut)
	}
	if _, _, code := runCLI(t, "store", "stat", "--data-dir", filepath.Join(dir, "nothing")); code != 1 {
		t.Errorf("store stat on an empty dir: exit %d, want 1", code)
	}
}

// TestRunRecoversFromCorruptStore starts tinyedge on a data dir whose
// store is garbage: it moves the file aside, says so loudly, and runs.
func TestRunRecoversFromCorruptStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "store.db"), bytes.Repeat([]byte("not a bbolt file "), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--upstream", "console", "--data-dir", dir, "--log-format", "json"}, &out, &errOut)
	}()
	hubtest.WaitFor(t, "the first message", func() bool { return strings.Contains(out.String(), `"event"`) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "STORE WAS UNREADABLE") || !strings.Contains(errOut.String(), `"storeRecoveries":1`) {
		t.Errorf("no loud recovery in the log:\n%s", errOut.String())
	}
	moved, _ := filepath.Glob(filepath.Join(dir, "store.db.corrupt-*"))
	if len(moved) != 1 {
		t.Errorf("the unreadable file was not kept aside: %v", moved)
	}
}

// skipUnlessExecSelf skips tests that run the test binary as tinyedge
// where it cannot be started again (under qemu-user).
func skipUnlessExecSelf(t *testing.T) {
	t.Helper()
	if err := exec.Command(os.Args[0], "-test.run=^$").Run(); errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("cannot exec the test binary here (emulated?): %v", err)
	}
}

// otaDevice prepares a data dir that trusts a fresh key, and returns a
// function making a signed bundle of binary at version.
func otaDevice(t *testing.T) (dir string, bundleOf func(binary, version string) string) {
	t.Helper()
	dir = t.TempDir()
	keys := t.TempDir()
	if _, _, code := runCLI(t, "bundle", "keygen", "-o", filepath.Join(keys, "release")); code != 0 {
		t.Fatal("keygen failed")
	}
	if err := os.MkdirAll(keysDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(keys, "release.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keysDir(dir), "release.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, func(binary, version string) string {
		out := filepath.Join(keys, version+".bundle")
		args := []string{"bundle", "create", "--key", filepath.Join(keys, "release.key"), "--version", version, "--binary", binary, "-o", out}
		if runtime.GOARCH == "arm" {
			args = append(args, "--goarm", ota.BuildGOARM())
		}
		if o, e, code := runCLI(t, args...); code != 0 {
			t.Fatalf("bundle create: %s%s", o, e)
		}
		return out
	}
}

// startTinyedge runs the test binary as tinyedge in dir until it logs
// want, then stops it with SIGTERM and returns its log.
func startTinyedge(t *testing.T, dir string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"run", "--upstream", "console", "--data-dir", dir, "--log-format", "json"}, extra...)...)
	cmd.Env = append(os.Environ(), "TINYEDGE_MAIN=1")
	return cmd
}

// TestUpdateConfirmsHealthyVersion applies a bundle of a working tinyedge
// (this test binary), boots it on trial, and sees it confirm itself.
func TestUpdateConfirmsHealthyVersion(t *testing.T) {
	dir, bundleOf := otaDevice(t)
	b := bundleOf(os.Args[0], "2.0.0")
	if o, e, code := runCLI(t, "update", "apply", b, "--data-dir", dir); code != 0 || !strings.Contains(o, "installed 2.0.0 on trial") {
		t.Fatalf("update apply: exit %d\n%s%s", code, o, e)
	}
	cmd := startTinyedge(t, dir, "--health-window", "8s")
	var errOut hubtest.SyncBuffer
	cmd.Stderr, cmd.Stdout = &errOut, io.Discard
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			t.Skipf("cannot exec the test binary here (emulated?): %v", err)
		}
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	hubtest.WaitFor(t, "the confirmation", func() bool { return strings.Contains(errOut.String(), "new version confirmed healthy") })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit %v\n%s", err, errOut.String())
	}
	st, _, code := runCLI(t, "update", "status", "--data-dir", dir)
	if code != 0 || !strings.Contains(st, "active    slot a (2.0.0)") || !strings.Contains(st, "trial     -") {
		t.Errorf("status after confirming:\n%s", st)
	}
}

// TestUpdateRollsBackBrokenVersion applies a bundle whose binary exits at
// once; after its tries the installed version runs again, and the status
// says why.
func TestUpdateRollsBackBrokenVersion(t *testing.T) {
	// The test binary plays tinyedge; it must be able to start itself
	// (not so under qemu-user), and /bin/false must be of its kind.
	skipUnlessExecSelf(t)
	broken := "/bin/false"
	if _, err := os.Stat(broken); err != nil {
		t.Skip("no /bin/false to play a broken version")
	}
	dir, bundleOf := otaDevice(t)
	b := bundleOf(broken, "2.0.0")
	if o, e, code := runCLI(t, "update", "apply", b, "--data-dir", dir); code != 0 {
		t.Fatalf("update apply: exit %d\n%s%s", code, o, e)
	}
	// A supervisor restarts the crashing version; each start counts a try.
	for try := 1; try <= 3; try++ {
		cmd := startTinyedge(t, dir)
		if err := cmd.Run(); err == nil {
			t.Fatalf("try %d: the broken version exited 0", try)
		} else if errors.Is(err, syscall.ENOEXEC) {
			t.Skipf("cannot exec here: %v", err)
		}
	}
	// The next start runs the installed version again.
	cmd := startTinyedge(t, dir)
	var errOut hubtest.SyncBuffer
	cmd.Stderr, cmd.Stdout = &errOut, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	hubtest.WaitFor(t, "the installed version", func() bool { return strings.Contains(errOut.String(), `"msg":"tinyedge starting"`) })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	st, _, _ := runCLI(t, "update", "status", "--data-dir", dir)
	if !strings.Contains(st, "rolled_back") || !strings.Contains(st, "trial     -") {
		t.Errorf("status after the failed trial:\n%s", st)
	}
}

// TestUpdateRollsBackHungVersion applies a version that hangs at start:
// the installed binary, watching the trial, kills it after the health
// window and its grace, rolls back and runs the previous version.
func TestUpdateRollsBackHungVersion(t *testing.T) {
	skipUnlessExecSelf(t)
	dir, bundleOf := otaDevice(t)
	if o, e, code := runCLI(t, "update", "apply", bundleOf(os.Args[0], "2.0.0"), "--data-dir", dir); code != 0 {
		t.Fatalf("update apply: exit %d\n%s%s", code, o, e)
	}
	cmd := startTinyedge(t, dir, "--health-window", "1s")
	cmd.Env = append(cmd.Env, "TINYEDGE_TEST_HANG=1")
	var errOut hubtest.SyncBuffer
	cmd.Stderr, cmd.Stdout = &errOut, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	hubtest.WaitFor(t, "the previous version to run", func() bool { return strings.Contains(errOut.String(), `"msg":"tinyedge starting"`) })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if !strings.Contains(errOut.String(), "trial version unresponsive; rolling back") {
		t.Errorf("no rollback in the log:\n%s", errOut.String())
	}
	st, _, _ := runCLI(t, "update", "status", "--data-dir", dir)
	if !strings.Contains(st, "rolled_back") || !strings.Contains(st, "hung") {
		t.Errorf("status:\n%s", st)
	}
}

// TestUpdateRollsBackUnhealthyVersion applies a version that runs but
// never becomes healthy (a module keeps failing): it rolls itself back at
// the end of the health window and the previous version runs.
func TestUpdateRollsBackUnhealthyVersion(t *testing.T) {
	skipUnlessExecSelf(t)
	dir, bundleOf := otaDevice(t)
	if o, e, code := runCLI(t, "update", "apply", bundleOf(os.Args[0], "2.0.0"), "--data-dir", dir); code != 0 {
		t.Fatalf("update apply: exit %d\n%s%s", code, o, e)
	}
	manifest := filepath.Join(t.TempDir(), "m.json")
	bad := bytes.Replace(quickstartManifest, []byte(`"filtermodule": {
            "version": "1.0",
            "type": "builtin",
            "status": "running",
            "restartPolicy": "always",
            "settings": {"image": "builtin:filter"}
          }`), []byte(`"filtermodule": {
            "version": "1.0",
            "type": "builtin",
            "status": "running",
            "restartPolicy": "always",
            "settings": {"image": "builtin:filter"}
          },
          "relay": {
            "version": "1.0", "type": "builtin", "status": "running", "restartPolicy": "always",
            "settings": {"image": "builtin:gpio"},
            "env": {"OUTPUTS": {"value": "GPIO999=low"}}
          }`), 1)
	if bytes.Equal(bad, quickstartManifest) {
		t.Fatal("could not add the failing module to the manifest")
	}
	if err := os.WriteFile(manifest, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := startTinyedge(t, dir, "--health-window", "1s", "--manifest", manifest)
	var errOut hubtest.SyncBuffer
	cmd.Stderr, cmd.Stdout = &errOut, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", errOut.String())
		}
	}()
	hubtest.WaitFor(t, "the previous version to run", func() bool {
		return strings.Contains(errOut.String(), "did not become healthy; rolling back") &&
			strings.Count(errOut.String(), `"msg":"tinyedge starting"`) >= 2
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	st, _, _ := runCLI(t, "update", "status", "--data-dir", dir)
	if !strings.Contains(st, "rolled_back") || !strings.Contains(st, "relay") {
		t.Errorf("status:\n%s", st)
	}
}

// TestOTAModuleInstallsFromMethod sends firmwareUpdate to builtin:ota with
// the device's real updater: the bundle is downloaded from a local server,
// verified, installed on trial, and a restart is asked for.
func TestOTAModuleInstallsFromMethod(t *testing.T) {
	dir, bundleOf := otaDevice(t)
	b, err := os.ReadFile(bundleOf(os.Args[0], "2.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "b", time.Time{}, bytes.NewReader(b))
	}))
	defer srv.Close()
	restarted := make(chan string, 1)
	rt := &runtimeEnv{dataDir: dir, restart: func(reason string) { restarted <- reason }}
	h := hub.New(hub.Options{DeviceID: "gw1"})
	defer h.Close()
	d := hub.Deployment{Modules: []hub.ModuleSpec{{Name: "ota", Image: "builtin:ota", Module: builtins["ota"].new(rt)}}}
	if err := h.Deploy(d); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	req, _ := json.Marshal(map[string]any{"url": srv.URL + "/tinyedge.bundle", "sha256": hex.EncodeToString(sum[:]), "size": len(b), "version": "2.0.0"})
	var r hub.MethodResponse
	hubtest.WaitFor(t, "the ota module", func() bool {
		r, err = h.InvokeMethod(context.Background(), "gw1", "ota", hub.MethodRequest{Name: "firmwareUpdate", Payload: req}, 0)
		return err == nil && r.Status != 404
	})
	if r.Status != 202 {
		t.Fatalf("firmwareUpdate = %d %s", r.Status, r.Payload)
	}
	select {
	case <-restarted:
	case <-time.After(hubtest.Patience):
		tw, _ := h.Twin("ota")
		t.Fatalf("no restart; reported %v", tw.Reported.Doc)
	}
	st, _, _ := runCLI(t, "update", "status", "--data-dir", dir)
	if !strings.Contains(st, "trial     slot a (2.0.0)") {
		t.Errorf("status after the cloud update:\n%s", st)
	}
	tw, _ := h.Twin("ota")
	if fw, _ := tw.Reported.Doc["firmware"].(map[string]any); fw["state"] != "restarting" || fw["pending"] != "2.0.0" {
		t.Errorf("reported firmware = %v", tw.Reported.Doc["firmware"])
	}
}
