package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/identity"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/workload"
)

// processManifest deploys a ticking process module that also starts a
// grandchild and reports its identity, a module that keeps failing, one
// deployed stopped, and a built-in one.
func processManifest(withTicker bool) string {
	ticker := `"ticker": {"type": "process", "status": "running", "restartPolicy": "always",
	  "settings": {"path": "/bin/sh", "args": ["-c", "sleep 1000 & echo grandchild $!; echo gen $IOTEDGE_MODULEGENERATIONID; echo to stderr >&2; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"]}},`
	if !withTicker {
		ticker = ""
	}
	return `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {` + ticker + `
    "crasher": {"type": "process", "status": "running", "restartPolicy": "on-failure",
      "settings": {"path": "sh", "args": ["-c", "echo dying; exit 2"]}},
    "parked": {"type": "process", "status": "stopped", "settings": {"path": "sh", "args": ["-c", "echo parked"]}},
    "filtermodule": {"type": "builtin", "status": "running", "settings": {"image": "builtin:filter"}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}`
}

// processAlive reports whether pid runs (and is not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// TestProcessModulesFromTheCLI runs the test binary as tinyedge with
// process modules and drives it with `tinyedge list`, `logs` and
// `status` over the control socket; a module dropped by a deployment and
// added back is a new identity; SIGTERM leaves no process behind.
func TestProcessModulesFromTheCLI(t *testing.T) {
	skipUnlessExecSelf(t)
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skipf("no sh: %v", err)
	}
	dir := t.TempDir()
	manifest := filepath.Join(dir, "m.json")
	if err := os.WriteFile(manifest, []byte(processManifest(true)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, code := runCLI(t, "check", "--manifest", manifest); code != 0 {
		t.Fatalf("check: %d %s", code, out)
	}
	// Before tinyedge runs, the CLI says so.
	if _, errOut, code := runCLI(t, "list", "--data-dir", dir); code != 1 || !strings.Contains(errOut, "tinyedge is not running on this data directory") {
		t.Errorf("list without tinyedge: exit %d, %q", code, errOut)
	}

	// A leaf device whose key tinyedge generates, for the rotation below.
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte("[edge]\nlisten = \"127.0.0.1:0\"\nmethods_listen = \"off\"\n\n[[edge.leaf_devices]]\nid = \"leaf9\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := startTinyedge(t, dir, "--manifest", manifest, "--device-id", "gw1", "--config", config)
	var out, errOut hubtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	logs := func(args ...string) (string, string) {
		o, e, code := runCLI(t, append([]string{"logs", "--data-dir", dir}, args...)...)
		if code != 0 {
			t.Fatalf("logs %v: exit %d: %s", args, code, e)
		}
		return o, e
	}
	defer func() {
		if t.Failed() {
			t.Logf("tinyedge log:\n%.3000s", errOut.String())
		}
	}()
	hubtest.WaitFor(t, "ticks in `tinyedge logs`", func() bool {
		o, _, _ := runCLI(t, "logs", "--data-dir", dir, "ticker")
		return strings.Contains(o, "tick 3\n")
	})
	o, e := logs("ticker")
	if !strings.Contains(e, "to stderr") || strings.Contains(o, "to stderr") {
		t.Errorf("stderr lines should go to stderr: stdout %q, stderr %q", o, e)
	}
	var grandchild int
	var gen string
	for _, l := range strings.Split(o, "\n") {
		if v, ok := strings.CutPrefix(l, "grandchild "); ok {
			grandchild, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(l, "gen "); ok {
			gen = v
		}
	}
	id, ok := mustOpenIdentities(t, dir).Lookup("gw1", "ticker")
	if !ok || gen != id.GenerationID {
		t.Errorf("the module got IOTEDGE_MODULEGENERATIONID %q; the identity store has %+v, %v", gen, id.GenerationID, ok)
	}
	if !processAlive(grandchild) {
		t.Fatalf("grandchild %d is not running", grandchild)
	}

	// --tail, and the name after the flags.
	if o, _ := logs("--tail", "2", "ticker"); strings.Count(o, "\n") > 2 || !strings.Contains(o, "tick") {
		t.Errorf("logs --tail 2: %q", o)
	}

	// --follow prints new lines until interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	var fout, ferr hubtest.SyncBuffer
	followed := make(chan error, 1)
	go func() {
		followed <- run(ctx, []string{"logs", "ticker", "--follow", "--tail", "0", "--data-dir", dir}, &fout, &ferr)
	}()
	hubtest.WaitFor(t, "followed lines", func() bool { return strings.Count(fout.String(), "tick") >= 5 })
	cancel()
	select {
	case err := <-followed:
		if err != nil {
			t.Errorf("logs --follow after interrupt: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs --follow did not stop when interrupted")
	}
	if strings.Contains(fout.String(), "grandchild") {
		t.Errorf("--tail 0 --follow printed old lines: %q", fout.String())
	}

	// list: every module with its type, state and restarts.
	hubtest.WaitFor(t, "the crasher's restarts", func() bool {
		o, _, _ := runCLI(t, "list", "--data-dir", dir)
		return strings.Contains(o, "crasher") && !strings.Contains(o, "crasher       process  running")
	})
	var mods []moduleInfo
	lo, _, code := runCLI(t, "list", "--json", "--data-dir", dir)
	if code != 0 || json.Unmarshal([]byte(lo), &mods) != nil || len(mods) != 4 {
		t.Fatalf("list --json: exit %d\n%s", code, lo)
	}
	byName := map[string]moduleInfo{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	if m := byName["ticker"]; m.Type != "process" || m.State != "running" || m.PID == 0 || !strings.HasPrefix(m.Description, "/bin/sh -c") {
		t.Errorf("ticker: %+v", m)
	}
	if m := byName["crasher"]; m.Type != "process" || m.Restarts == 0 || !strings.Contains(m.LastExit, "exit status 2") {
		t.Errorf("crasher: %+v", m)
	}
	if m := byName["filtermodule"]; m.Type != "builtin" || m.State != "running" {
		t.Errorf("filtermodule: %+v", m)
	}
	if m := byName["parked"]; m.Type != "process" || m.State != "stopped" || m.PID != 0 {
		t.Errorf("parked: %+v", m)
	}
	table, _, _ := runCLI(t, "list", "--data-dir", dir)
	if !strings.HasPrefix(table, "NAME ") || !strings.Contains(table, "RESTARTS") || !strings.Contains(table, "filtermodule  builtin  running") {
		t.Errorf("list table:\n%s", table)
	}

	// status, and the errors for modules without logs.
	so, _, code := runCLI(t, "status", "--data-dir", dir)
	if code != 0 || !strings.Contains(so, `"deviceId": "gw1"`) {
		t.Errorf("status: exit %d\n%s", code, so)
	}
	// A built-in module's log lines, without the process modules'.
	if o, e, code := runCLI(t, "logs", "filtermodule", "--data-dir", dir); code != 0 || !strings.Contains(o, "INFO module starting image=builtin:filter") || strings.Contains(o, "tick") {
		t.Errorf("logs of a built-in module: exit %d %q\n%s", code, e, o)
	}
	if o, _ := logs("ticker"); strings.Contains(o, "module starting") {
		t.Errorf("tinyedge's lines about a process module are in its output:\n%s", o)
	}
	if _, e, code := runCLI(t, "logs", "nosuch", "--data-dir", dir); code != 1 || !strings.Contains(e, `no module "nosuch"`) {
		t.Errorf("logs of an unknown module: exit %d %q", code, e)
	}

	// Drop the ticker: its processes end and its identity goes; add it
	// back: a new generation.
	if err := os.WriteFile(manifest, []byte(processManifest(false)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	hubtest.WaitFor(t, "the ticker to go", func() bool {
		_, e, _ := runCLI(t, "logs", "ticker", "--data-dir", dir)
		return strings.Contains(e, `no module "ticker"`)
	})
	if _, ok := mustOpenIdentities(t, dir).Lookup("gw1", "ticker"); ok {
		t.Error("the dropped module's identity is still there")
	}
	if processAlive(grandchild) {
		t.Errorf("grandchild %d survived its module's removal", grandchild)
	}
	if err := os.WriteFile(manifest, []byte(processManifest(true)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	var gen2 string
	hubtest.WaitFor(t, "the ticker's new generation", func() bool {
		o, _, _ := runCLI(t, "logs", "ticker", "--data-dir", dir)
		for _, l := range strings.Split(o, "\n") {
			if v, ok := strings.CutPrefix(l, "gen "); ok {
				gen2 = v
			}
		}
		return gen2 != ""
	})
	if gen2 == gen {
		t.Errorf("the re-added module kept generation %s", gen)
	}
	o, _ = logs("ticker")
	for _, l := range strings.Split(o, "\n") {
		if v, ok := strings.CutPrefix(l, "grandchild "); ok {
			grandchild, _ = strconv.Atoi(v)
		}
	}

	// Rotating its identity restarts the module with a new generation
	// and key.
	ro, re, code := runCLI(t, "identities", "rotate", "--data-dir", dir, "ticker")
	gen3, _, _ := strings.Cut(strings.TrimPrefix(ro, "gw1/ticker: new key, generation "), "\n")
	if code != 0 || !strings.HasPrefix(ro, "gw1/ticker: new key, generation ") || !strings.Contains(ro, "restarted the module") {
		t.Fatalf("identities rotate ticker: exit %d\n%s%s", code, ro, re)
	}
	if id, ok := mustOpenIdentities(t, dir).Lookup("gw1", "ticker"); !ok || id.GenerationID != gen3 || gen3 == gen2 {
		t.Errorf("after the rotation the identity store has generation %q (%v); the CLI said %q, the one before was %q", id.GenerationID, ok, gen3, gen2)
	}
	hubtest.WaitFor(t, "the ticker to run with its new generation", func() bool {
		o, _, _ := runCLI(t, "logs", "ticker", "--data-dir", dir)
		return strings.Contains(o, "gen "+gen3+"\n")
	})
	if processAlive(grandchild) {
		t.Errorf("grandchild %d survived its module's restart", grandchild)
	}
	o, _ = logs("ticker")
	for _, l := range strings.Split(o, "\n") {
		if v, ok := strings.CutPrefix(l, "grandchild "); ok {
			grandchild, _ = strconv.Atoi(v)
		}
	}
	// A module deployed stopped gets its new key without being run.
	if ro, re, code := runCLI(t, "identities", "rotate", "parked", "--data-dir", dir); code != 0 || !strings.HasPrefix(ro, "gw1/parked: new key") || strings.Contains(ro, "restarted") {
		t.Errorf("identities rotate parked: exit %d\n%s%s", code, ro, re)
	}
	// The leaf device connects with its generated key, as the
	// connection string `identities --show-keys` prints has it; rotating
	// the key closes that connection.
	leafBefore, _ := mustOpenIdentities(t, dir).Lookup("leaf9", "")
	leafLost := make(chan error, 1)
	connectLeaf(t, dir, errOut.String, "leaf9", leafBefore.Key, func(err error) { leafLost <- err })
	ro, re, code = runCLI(t, "identities", "rotate", "--data-dir", dir, "--device", "leaf9")
	leafAfter, _ := mustOpenIdentities(t, dir).Lookup("leaf9", "")
	if code != 0 || !strings.HasPrefix(ro, "leaf9: new key, generation "+leafAfter.GenerationID+"\n") || !strings.Contains(ro, "tinyedge identities --show-keys") ||
		leafBefore.GenerationID == "" || leafAfter.GenerationID == leafBefore.GenerationID || string(leafAfter.Key) == string(leafBefore.Key) {
		t.Errorf("identities rotate --device leaf9: exit %d\n%s%s\ngeneration %q before, %q after", code, ro, re, leafBefore.GenerationID, leafAfter.GenerationID)
	}
	if !strings.Contains(ro, "closed 1 connection(s) made with the old key") {
		t.Errorf("rotating the leaf's key did not close its connection:\n%s", ro)
	}
	select {
	case <-leafLost:
	case <-time.After(hubtest.Patience):
		t.Error("the leaf device is still connected with its old key")
	}
	connectLeaf(t, dir, errOut.String, "leaf9", leafAfter.Key, nil)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nosuch"}, 1, `module "nosuch" has no identity here`},
		{[]string{"--device", "leaf8"}, 1, `leaf device "leaf8" has no key that tinyedge generated`},
		{[]string{"--device", "gw1"}, 1, `leaf device "gw1" has no key that tinyedge generated`},
		{nil, 2, "want `tinyedge identities rotate MODULE`"},
		{[]string{"--device", "leaf9", "ticker"}, 2, "want `tinyedge identities rotate MODULE`"},
	} {
		_, e, code := runCLI(t, append([]string{"identities", "rotate", "--data-dir", dir}, tc.args...)...)
		if code != tc.code || !strings.Contains(e, tc.want) {
			t.Errorf("identities rotate %q: exit %d %q, want %d and %q", tc.args, code, e, tc.code, tc.want)
		}
	}

	// restart runs a process module's program anew, and a built-in
	// module's goroutine; the name may come before the flags.
	module := func(name string) moduleInfo {
		var mods []moduleInfo
		lo, _, code := runCLI(t, "list", "--json", "--data-dir", dir)
		if code != 0 || json.Unmarshal([]byte(lo), &mods) != nil {
			t.Fatalf("list --json: exit %d\n%s", code, lo)
		}
		for _, m := range mods {
			if m.Name == name {
				return m
			}
		}
		t.Fatalf("no module %s in `tinyedge list`:\n%s", name, lo)
		return moduleInfo{}
	}
	var pid int
	hubtest.WaitFor(t, "the ticker's pid", func() bool { pid = module("ticker").PID; return pid != 0 })
	if ro, re, code := runCLI(t, "restart", "ticker", "--data-dir", dir); code != 0 || ro != "restarted ticker\n" {
		t.Fatalf("restart ticker: exit %d\n%s%s", code, ro, re)
	}
	hubtest.WaitFor(t, "the ticker to run again", func() bool {
		m := module("ticker")
		return m.State == "running" && m.PID != 0 && m.PID != pid
	})
	if processAlive(pid) || processAlive(grandchild) {
		t.Errorf("the ticker's process %d or its grandchild %d survived its restart", pid, grandchild)
	}
	starts := func() int {
		o, _, _ := runCLI(t, "logs", "filtermodule", "--data-dir", dir)
		return strings.Count(o, "module starting")
	}
	n := starts()
	if ro, re, code := runCLI(t, "restart", "--data-dir", dir, "filtermodule"); code != 0 || ro != "restarted filtermodule\n" {
		t.Errorf("restart filtermodule: exit %d\n%s%s", code, ro, re)
	}
	hubtest.WaitFor(t, "the built-in module to start again", func() bool { return starts() > n })
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nosuch"}, 1, `no module "nosuch" in the deployment`},
		{[]string{"parked"}, 1, `module "parked" is deployed with status "stopped"`},
		{nil, 2, "want `tinyedge restart MODULE`"},
		{[]string{"ticker", "crasher"}, 2, "want `tinyedge restart MODULE`"},
	} {
		_, e, code := runCLI(t, append([]string{"restart", "--data-dir", dir}, tc.args...)...)
		if code != tc.code || !strings.Contains(e, tc.want) {
			t.Errorf("restart %q: exit %d %q, want %d and %q", tc.args, code, e, tc.code, tc.want)
		}
	}
	if m := module("parked"); m.State != "stopped" {
		t.Errorf("restart of a module deployed stopped ran it: %+v", m)
	}

	// A follower does not hold tinyedge up: stopping ends the follow.
	var fout2 hubtest.SyncBuffer
	followed = make(chan error, 1)
	go func() {
		followed <- run(context.Background(), []string{"logs", "ticker", "-f", "--data-dir", dir}, &fout2, &hubtest.SyncBuffer{})
	}()
	hubtest.WaitFor(t, "a follower", func() bool { return strings.Contains(fout2.String(), "tick") })
	stopping := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tinyedge exited with %v\n%s", err, errOut.String())
	}
	select {
	case err := <-followed:
		if err != nil {
			t.Errorf("logs --follow when tinyedge stopped: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs --follow went on after tinyedge stopped")
	}
	// The control socket's shutdown waits 5 s for requests; a follow
	// must not have used that up.
	if strings.Contains(errOut.String(), "control socket shutdown") {
		t.Errorf("the follower delayed the stop (%v):\n%s", time.Since(stopping), errOut.String())
	}
	if processAlive(grandchild) {
		t.Errorf("grandchild %d survived tinyedge", grandchild)
	}
	for _, sock := range []string{controlSocket(dir), workloadSocket(dir)} {
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("%s left behind", sock)
		}
	}
	if !strings.Contains(errOut.String(), `"msg":"tick 1","module":"ticker","stream":"stdout"`) {
		t.Errorf("module output is not in tinyedge's log:\n%.2000s", errOut.String())
	}
}

func TestCheckProcessModules(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "m.json")
	bad := `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {
    "a": {"type": "process", "status": "running", "settings": {"path": "bin/app"}},
    "b": {"type": "process", "status": "running", "settings": {"path": "/bin/app", "args": "-v"}},
    "c": {"type": "proces", "status": "running", "settings": {"path": "/bin/app"}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}`
	if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "check", "--manifest", f)
	if code != 1 || !strings.Contains(errOut, "3 problem(s)") {
		t.Errorf("check: exit %d, %s, want 1 and 3 problems\n%s", code, errOut, out)
	}
	for _, want := range []string{
		`modules.a.settings.path: path "bin/app" is relative`,
		`modules.b.settings.args: args must be an array of strings`,
		`modules.c.type: type "proces" has no settings.path, it needs settings.image; to run a program, write "type": "process"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// connectLeaf connects leaf device id to the local endpoint of the
// tinyedge whose JSON log log returns, over TLS with its trust bundle, with
// a token signed with key; onLost, when set, hears of the connection's
// end.
func connectLeaf(t *testing.T, dir string, log func() string, id string, key []byte, onLost func(error)) {
	t.Helper()
	var addr string
	hubtest.WaitFor(t, "the local MQTT endpoint", func() bool {
		for _, l := range strings.Split(log(), "\n") {
			var r struct{ Msg, Address string }
			if json.Unmarshal([]byte(l), &r) == nil && r.Msg == "local MQTT endpoint listening" {
				addr = r.Address
			}
		}
		return addr != ""
	})
	bundle, err := os.ReadFile(trustBundlePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	host := hostname() // the gateway's name, an audience the endpoint accepts
	o := paho.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(id).
		SetUsername(iothub.FormatUsername(host, id, "", url.Values{})).
		SetPassword(iothub.SignToken(key, iothub.Resource(host, id, ""), time.Now().Add(time.Hour), "")).
		SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost"}).SetProtocolVersion(4).SetAutoReconnect(false)
	if onLost != nil {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { onLost(err) })
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatalf("leaf %s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
}

func mustOpenIdentities(t *testing.T, dir string) *identity.Store {
	t.Helper()
	ids, err := identity.Open(identitiesPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestProcessModuleChangeRestarts checks what the hub compares to decide
// on a restart: a process module's program, arguments and directory are
// its image.
func TestProcessModuleChangeRestarts(t *testing.T) {
	image := func(manifest string) string {
		t.Helper()
		dir := t.TempDir()
		f := filepath.Join(dir, "m.json")
		if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		m, _, err := loadManifest(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range deployment(m, nil).Modules {
			if s.Name == "crasher" {
				return s.Image
			}
		}
		t.Fatal("no crasher module")
		return ""
	}
	base := processManifest(false)
	a := image(base)
	if a != `process:{"path":"sh","args":["-c","echo dying; exit 2"]}` {
		t.Errorf("image = %s", a)
	}
	for _, change := range []struct{ from, to string }{
		{`"path": "sh"`, `"path": "/bin/sh"`},
		{`exit 2`, `exit 3`},
		{`"args": [`, `"workingDir": "/tmp", "args": [`},
	} {
		if b := image(strings.Replace(base, change.from, change.to, 1)); b == a {
			t.Errorf("changing %s to %s keeps the image %s: no restart", change.from, change.to, a)
		}
	}
}

// testCA is a throwaway certificate authority for the workload API.
type testCA struct{ pem []byte }

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test edge CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) TrustBundle() []byte { return ca.pem }

func (ca *testCA) IssueServerCert(string, []string, time.Time) ([]byte, []byte, error) {
	return nil, nil, errors.New("the test CA issues no server certificates")
}

// TestNodeModuleUnderRun runs a Node program written with the official
// Azure IoT SDK as a process module of `tinyedge run`:
// ModuleClient.fromEnvironment(Mqtt) finds the workload socket in the
// data directory, and the SAS token it has signed there verifies with the
// key tinyedge keeps for the module.
func TestNodeModuleUnderRun(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skipf("node is not installed: %v", err)
	}
	sdk, _ := filepath.Abs("../../scripts/sdk")
	if _, err := os.Stat(filepath.Join(sdk, "node_modules", "azure-iot-device-mqtt")); err != nil {
		t.Skipf("the Azure IoT Node SDK is not installed (run npm ci in scripts/sdk): %v", err)
	}
	ca := newTestCA(t)
	defer func(prev func(string) (workload.CA, error)) { workloadCA = prev }(workloadCA)
	workloadCA = func(string) (workload.CA, error) { return ca, nil }

	dir := t.TempDir()
	manifest := filepath.Join(dir, "m.json")
	m := `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {
    "nodemod": {"type": "process", "status": "running", "restartPolicy": "never",
      "settings": {"path": "` + node + `", "args": ["module-token.js"], "workingDir": "` + sdk + `"}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}`
	if err := os.WriteFile(manifest, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut hubtest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--manifest", manifest, "--data-dir", dir, "--device-id", "gw1"}, &out, &errOut)
	}()
	var token string
	hubtest.WaitFor(t, "the SDK's token in `tinyedge logs`", func() bool {
		o, e, _ := runCLI(t, "logs", "nodemod", "--data-dir", dir)
		if strings.Contains(e, "fromEnvironment") || strings.Contains(e, "getDeviceCredentials") {
			t.Fatalf("the node module failed:\n%s", e)
		}
		for _, l := range strings.Split(o, "\n") {
			if v, ok := strings.CutPrefix(l, "TOKEN "); ok {
				token = v
			}
		}
		return token != ""
	})
	// Not provisioned, the gateway runs the IoT Hub emulator: the
	// token's audience is that IoT Hub (IOTEDGE_IOTHUBHOSTNAME).
	iotHub := embeddedHubHostname(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	list, err := identity.Read(identitiesPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var key []byte
	for _, id := range list {
		if id.DeviceID == "gw1" && id.ModuleID == "nodemod" {
			key = id.Key
		}
	}
	tok, err := iothub.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Verify(key, time.Now()); err != nil {
		t.Errorf("the SDK's token does not verify with the module's key: %v", err)
	}
	if want := iothub.Resource(iotHub, "gw1", "nodemod"); tok.Resource != want {
		t.Errorf("token resource %q, want %q", tok.Resource, want)
	}
}

// TestKilledTinyedge kills tinyedge with SIGKILL while a process module
// runs: the kernel ends the module's program with it, and the next start
// on the same data directory replaces the stale sockets and gives the
// module the same identity.
func TestKilledTinyedge(t *testing.T) {
	skipUnlessExecSelf(t)
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skipf("no sh: %v", err)
	}
	dir := t.TempDir()
	manifest := filepath.Join(dir, "m.json")
	m := `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {
    "ticker": {"type": "process", "status": "running",
      "settings": {"path": "/bin/sh", "args": ["-c", "echo pid $$ gen $IOTEDGE_MODULEGENERATIONID; while :; do sleep 0.05; done"]}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}`
	if err := os.WriteFile(manifest, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	// started runs tinyedge and returns it with what the ticker printed.
	started := func() (*exec.Cmd, *hubtest.SyncBuffer, int, string) {
		t.Helper()
		cmd := startTinyedge(t, dir, "--manifest", manifest, "--device-id", "gw1")
		var errOut hubtest.SyncBuffer
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		var pid int
		var gen string
		hubtest.WaitFor(t, "the ticker's pid", func() bool {
			o, _, _ := runCLI(t, "logs", "ticker", "--data-dir", dir)
			for _, l := range strings.Split(o, "\n") {
				if f := strings.Fields(l); len(f) == 4 && f[0] == "pid" {
					pid, _ = strconv.Atoi(f[1])
					gen = f[3]
				}
			}
			return pid > 0
		})
		return cmd, &errOut, pid, gen
	}
	cmd, _, pid, gen := started()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	hubtest.WaitFor(t, "the module's program to die with tinyedge", func() bool { return !processAlive(pid) })

	cmd2, errOut, pid2, gen2 := started()
	if pid2 == pid || gen2 != gen {
		t.Errorf("after the restart: pid %d gen %s; before: pid %d gen %s (want a new process, the same generation)", pid2, gen2, pid, gen)
	}
	cmd2.Process.Signal(syscall.SIGTERM)
	if err := cmd2.Wait(); err != nil {
		t.Fatalf("tinyedge exited with %v\n%s", err, errOut.String())
	}
	if processAlive(pid2) {
		t.Errorf("the module's program %d outlived tinyedge", pid2)
	}
}
