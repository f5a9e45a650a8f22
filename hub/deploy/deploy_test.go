package deploy

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/twin"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const simtempImage = "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor"

// testResolver knows the SimulatedTemperatureSensor image and the
// built-in modules simtemp and filter.
func testResolver(moduleType, image string) (string, error) {
	switch {
	case moduleType == "docker" && strings.HasPrefix(image, simtempImage):
		return "simtemp", nil
	case moduleType == "builtin" && (image == "builtin:simtemp" || image == "builtin:filter"):
		return strings.TrimPrefix(image, "builtin:"), nil
	}
	return "", fmt.Errorf("image %q is not a built-in module; use type \"builtin\" with image \"builtin:simtemp\" or \"builtin:filter\"", image)
}

const (
	agentPath = "$.modulesContent.$edgeAgent['properties.desired']"
	hubPath   = "$.modulesContent.$edgeHub['properties.desired']"
	modsPath  = agentPath + ".modules"
)

// baseManifest is a small sound manifest the table tests break one way
// at a time.
const baseManifest = `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}},
    "modules": {
      "sensor": {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
        "settings": {"image": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5", "createOptions": "{}"}},
      "filter": {"type": "builtin", "status": "running", "restartPolicy": "always",
        "settings": {"image": "builtin:filter"}}}}},
  "$edgeHub": {"properties.desired": {
    "schemaVersion": "1.1",
    "routes": {
      "sensorToFilter": "FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
      "filterToIoTHub": "FROM /messages/modules/filter/outputs/output1 INTO $upstream"},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}},
  "filter": {"properties.desired": {"TemperatureThreshold": 25}}}}`

func decodeBase(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(baseManifest), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func obj(v any, keys ...string) map[string]any {
	for _, k := range keys {
		v = v.(map[string]any)[k]
	}
	return v.(map[string]any)
}

func modulesContent(m map[string]any) map[string]any { return obj(m, "modulesContent") }
func agent(m map[string]any) map[string]any {
	return obj(m, "modulesContent", "$edgeAgent", "properties.desired")
}
func hub(m map[string]any) map[string]any {
	return obj(m, "modulesContent", "$edgeHub", "properties.desired")
}
func mod(m map[string]any, name string) map[string]any { return obj(agent(m), "modules", name) }
func routes(m map[string]any) map[string]any           { return obj(hub(m), "routes") }

func marshal(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// problemsOf returns the Problems in err, failing the test when err is
// something else.
func problemsOf(t *testing.T, err error) Problems {
	t.Helper()
	if err == nil {
		return nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err is %T, want Problems: %v", err, err)
	}
	return ps
}

// want is an expected problem: its exact path and a piece of its message.
type want struct {
	path, msg string
}

func checkProblems(t *testing.T, got Problems, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(wants), got)
	}
	for i, w := range wants {
		if got[i].Path != w.path || !strings.Contains(got[i].Msg, w.msg) {
			t.Errorf("problem %d = %s\nwant path %s, message containing %q", i, got[i], w.path, w.msg)
		}
	}
}

func TestBaseManifest(t *testing.T) {
	m, err := Parse([]byte(baseManifest), testResolver)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Warnings) != 0 {
		t.Errorf("Warnings = %v, want none", m.Warnings)
	}
	var names []string
	for _, mod := range m.Modules {
		names = append(names, mod.Name+"="+mod.Builtin)
	}
	if got, want := strings.Join(names, " "), "filter=filter sensor=simtemp"; got != want {
		t.Errorf("modules = %s, want %s", got, want)
	}
}

func TestChecks(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		want   []want
	}{
		{"top level not an object", nil, nil}, // replaced below
		{"modulesContent missing", func(m map[string]any) {
			m["modules"] = m["modulesContent"]
			delete(m, "modulesContent")
		}, []want{{"$", `"modulesContent" is missing`}}},
		{"modulesContent not an object", func(m map[string]any) {
			m["modulesContent"] = []any{}
		}, []want{{"$.modulesContent", "must be an object, not an array"}}},
		{"edgeAgent missing", func(m map[string]any) {
			delete(modulesContent(m), "$edgeAgent")
		}, []want{{"$.modulesContent", "$edgeAgent is missing"}}},
		{"edgeHub missing", func(m map[string]any) {
			delete(modulesContent(m), "$edgeHub")
		}, []want{{"$.modulesContent", "$edgeHub is missing"}}},
		{"edgeHub desired missing", func(m map[string]any) {
			modulesContent(m)["$edgeHub"] = map[string]any{"properties": map[string]any{}}
		}, []want{{"$.modulesContent.$edgeHub", `"properties.desired" is missing`}}},
		{"edgeAgent desired not an object", func(m map[string]any) {
			modulesContent(m)["$edgeAgent"] = map[string]any{"properties.desired": "x"}
		}, []want{{agentPath, "must be an object, not a string"}}},
		{"unknown system module", func(m map[string]any) {
			modulesContent(m)["$edgehub"] = modulesContent(m)["$edgeHub"]
			delete(modulesContent(m), "$edgeHub")
		}, []want{{"$.modulesContent.$edgehub", "unknown system module"}, {"$.modulesContent", "$edgeHub is missing"}}},
		{"layered deployment", func(m map[string]any) {
			modulesContent(m)["$edgeAgent"] = map[string]any{"properties.desired.modules.x": map[string]any{}}
		}, []want{{"$.modulesContent.$edgeAgent['properties.desired.modules.x']", "layered deployments"}}},

		// $edgeAgent
		{"agent schemaVersion missing", func(m map[string]any) {
			delete(agent(m), "schemaVersion")
		}, []want{{agentPath, "schemaVersion is missing"}}},
		{"agent schemaVersion 1.2", func(m map[string]any) {
			agent(m)["schemaVersion"] = "1.2"
		}, []want{{agentPath + ".schemaVersion", `"1.2" is not supported by $edgeAgent`}}},
		{"agent schemaVersion 2.0", func(m map[string]any) {
			agent(m)["schemaVersion"] = "2.0"
		}, []want{{agentPath + ".schemaVersion", "not supported"}}},
		{"agent schemaVersion garbage", func(m map[string]any) {
			agent(m)["schemaVersion"] = "latest"
		}, []want{{agentPath + ".schemaVersion", "not a version number"}}},
		{"agent schemaVersion number", func(m map[string]any) {
			agent(m)["schemaVersion"] = 1.1
		}, []want{{agentPath + ".schemaVersion", "must be a string"}}},
		{"modules not an object", func(m map[string]any) {
			agent(m)["modules"] = []any{}
		}, []want{{modsPath, "must be an object"}}},
		{"module not an object", func(m map[string]any) {
			obj(agent(m), "modules")["sensor"] = "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"
		}, []want{{modsPath + ".sensor", "a module is an object"}}},
		{"module name with $", func(m map[string]any) {
			obj(agent(m), "modules")["$sensor"] = mod(m, "sensor")
			delete(obj(agent(m), "modules"), "sensor")
		}, []want{{modsPath + ".$sensor", "starts with $"}}},
		{"module name with slash", func(m map[string]any) {
			obj(agent(m), "modules")["plant/sensor"] = mod(m, "sensor")
			delete(obj(agent(m), "modules"), "sensor")
		}, []want{{modsPath + "['plant/sensor']", `contains '/'`}}},
		{"module name too long", func(m map[string]any) {
			obj(agent(m), "modules")[strings.Repeat("s", 129)] = mod(m, "sensor")
			delete(obj(agent(m), "modules"), "sensor")
		}, []want{{modsPath + "." + strings.Repeat("s", 129), "at most 128"}}},
		{"module named edgeHub", func(m map[string]any) {
			obj(agent(m), "modules")["edgeHub"] = mod(m, "sensor")
			delete(obj(agent(m), "modules"), "sensor")
		}, []want{{modsPath + ".edgeHub", "system module"}}},
		{"type missing", func(m map[string]any) {
			delete(mod(m, "sensor"), "type")
		}, []want{{modsPath + ".sensor", "type is missing"}}},
		{"type not resolvable", func(m map[string]any) {
			mod(m, "sensor")["type"] = "wasm"
		}, []want{{modsPath + ".sensor.type", "is not a built-in module"}}},
		{"image not resolvable", func(m map[string]any) {
			obj(mod(m, "sensor"), "settings")["image"] = "contoso.azurecr.io/sensor:1.0"
		}, []want{{modsPath + ".sensor.settings.image", `image "contoso.azurecr.io/sensor:1.0" is not a built-in module; use type "builtin"`}}},
		{"settings missing", func(m map[string]any) {
			delete(mod(m, "sensor"), "settings")
		}, []want{{modsPath + ".sensor", "settings is missing"}}},
		{"image missing", func(m map[string]any) {
			delete(obj(mod(m, "sensor"), "settings"), "image")
		}, []want{{modsPath + ".sensor.settings", "settings.image is missing"}}},
		{"image empty", func(m map[string]any) {
			obj(mod(m, "sensor"), "settings")["image"] = " "
		}, []want{{modsPath + ".sensor.settings.image", "image is empty"}}},
		{"status unknown", func(m map[string]any) {
			mod(m, "sensor")["status"] = "paused"
		}, []want{{modsPath + ".sensor.status", `must be one of "running", "stopped", not "paused"`}}},
		{"restartPolicy unknown", func(m map[string]any) {
			mod(m, "sensor")["restartPolicy"] = "on-crash"
		}, []want{{modsPath + ".sensor.restartPolicy", `"never", "on-failure", "on-unhealthy", "always"`}}},
		{"imagePullPolicy unknown", func(m map[string]any) {
			mod(m, "sensor")["imagePullPolicy"] = "always"
		}, []want{{modsPath + ".sensor.imagePullPolicy", `"on-create", "never"`}}},
		{"version not a string", func(m map[string]any) {
			mod(m, "sensor")["version"] = 1.0
		}, []want{{modsPath + ".sensor.version", "must be a string"}}},
		{"startupOrder negative", func(m map[string]any) {
			mod(m, "sensor")["startupOrder"] = -1
		}, []want{{modsPath + ".sensor.startupOrder", "from 0 (starts first) to 4294967295, not -1"}}},
		{"startupOrder too large", func(m map[string]any) {
			mod(m, "sensor")["startupOrder"] = int64(4294967296)
		}, []want{{modsPath + ".sensor.startupOrder", "not 4294967296"}}},
		{"startupOrder fraction", func(m map[string]any) {
			mod(m, "sensor")["startupOrder"] = 1.5
		}, []want{{modsPath + ".sensor.startupOrder", "not 1.5"}}},
		{"startupOrder under schema 1.0", func(m map[string]any) {
			agent(m)["schemaVersion"] = "1.0"
			mod(m, "sensor")["startupOrder"] = 1
		}, []want{{modsPath + ".sensor.startupOrder", `needs $edgeAgent schemaVersion "1.1"`}}},
		{"env not an object", func(m map[string]any) {
			mod(m, "sensor")["env"] = []any{"A=1"}
		}, []want{{modsPath + ".sensor.env", "env must be an object"}}},
		{"env entry a bare string", func(m map[string]any) {
			mod(m, "sensor")["env"] = map[string]any{"SendInterval": "2"}
		}, []want{{modsPath + ".sensor.env.SendInterval", `write "SendInterval": {"value": "2"}`}}},
		{"env value an object", func(m map[string]any) {
			mod(m, "sensor")["env"] = map[string]any{"A": map[string]any{"value": map[string]any{}}}
		}, []want{{modsPath + ".sensor.env.A.value", "string, number or boolean"}}},
		{"env name with =", func(m map[string]any) {
			mod(m, "sensor")["env"] = map[string]any{"A=B": map[string]any{"value": "1"}}
		}, []want{{modsPath + ".sensor.env['A=B']", "contains ="}}},
		{"createOptions not JSON", func(m map[string]any) {
			obj(mod(m, "sensor"), "settings")["createOptions"] = `{"HostConfig": {`
		}, []want{{modsPath + ".sensor.settings.createOptions", "createOptions is not a JSON object"}}},
		{"createOptions an array", func(m map[string]any) {
			obj(mod(m, "sensor"), "settings")["createOptions"] = `[]`
		}, []want{{modsPath + ".sensor.settings.createOptions", "createOptions is not a JSON object"}}},
		{"createOptions a number", func(m map[string]any) {
			obj(mod(m, "sensor"), "settings")["createOptions"] = 5
		}, []want{{modsPath + ".sensor.settings.createOptions", "must be a string"}}},
		{"createOptions chunk gap", func(m map[string]any) {
			s := obj(mod(m, "sensor"), "settings")
			s["createOptions"] = `{"HostConfig":`
			s["createOptions02"] = `{}}`
		}, []want{{modsPath + ".sensor.settings.createOptions02", "createOptions01 is missing"}}},
		{"createOptions chunk badly numbered", func(m map[string]any) {
			s := obj(mod(m, "sensor"), "settings")
			s["createOptions1"] = `{}`
		}, []want{{modsPath + ".sensor.settings.createOptions1", "numbered createOptions01"}}},
		{"createOptions chunks join to bad JSON", func(m map[string]any) {
			s := obj(mod(m, "sensor"), "settings")
			s["createOptions"] = `{"HostConfig":`
			s["createOptions01"] = `{"Binds":[]}`
		}, []want{{modsPath + ".sensor.settings.createOptions", "not a JSON object (unexpected EOF)"}}},

		// $edgeHub
		{"hub schemaVersion missing", func(m map[string]any) {
			delete(hub(m), "schemaVersion")
		}, []want{{hubPath, "schemaVersion is missing"}}},
		{"hub schemaVersion 1.4", func(m map[string]any) {
			hub(m)["schemaVersion"] = "1.4"
		}, []want{{hubPath + ".schemaVersion", `use one of "1.0" … "1.3"`}}},
		{"routes not an object", func(m map[string]any) {
			hub(m)["routes"] = []any{"FROM /messages/* INTO $upstream"}
		}, []want{{hubPath + ".routes", "routes must be an object"}}},
		{"route syntax error", func(m map[string]any) {
			routes(m)["filterToIoTHub"] = "FROM /messages/modules/filter/outputs/output1 INT0 $upstream"
		}, []want{{hubPath + ".routes.filterToIoTHub", ""}}},
		{"route empty", func(m map[string]any) {
			routes(m)["filterToIoTHub"] = "  "
		}, []want{{hubPath + ".routes.filterToIoTHub", "route is empty"}}},
		{"route a number", func(m map[string]any) {
			routes(m)["filterToIoTHub"] = 1
		}, []want{{hubPath + ".routes.filterToIoTHub", "a route is a string"}}},
		{"route name empty", func(m map[string]any) {
			routes(m)[""] = "FROM /messages/* INTO $upstream"
		}, []want{{hubPath + ".routes['']", "route name is empty"}}},
		{"route object under schema 1.0", func(m map[string]any) {
			hub(m)["schemaVersion"] = "1.0"
			routes(m)["filterToIoTHub"] = map[string]any{"route": "FROM /messages/* INTO $upstream"}
		}, []want{{hubPath + ".routes.filterToIoTHub", `route objects need $edgeHub schemaVersion "1.1"`}}},
		{"route object without route", func(m map[string]any) {
			routes(m)["filterToIoTHub"] = map[string]any{"priority": 1}
		}, []want{{hubPath + ".routes.filterToIoTHub", `"route" is missing`}}},
		{"route object priority 10", func(m map[string]any) {
			routes(m)["filterToIoTHub"] = map[string]any{"route": "FROM /messages/* INTO $upstream", "priority": 10}
		}, []want{{hubPath + ".routes.filterToIoTHub.priority", "from 0 (highest) to 9 (lowest), not 10"}}},
		{"route object negative TTL", func(m map[string]any) {
			routes(m)["filterToIoTHub"] = map[string]any{"route": "FROM /messages/* INTO $upstream", "timeToLiveSecs": -5}
		}, []want{{hubPath + ".routes.filterToIoTHub.timeToLiveSecs", "not -5"}}},
		{"route object syntax error", func(m map[string]any) {
			routes(m)["filterToIoTHub"] = map[string]any{"route": "FROM /messages/* INTO"}
		}, []want{{hubPath + ".routes.filterToIoTHub.route", ""}}},
		{"storeAndForward not an object", func(m map[string]any) {
			hub(m)["storeAndForwardConfiguration"] = 7200
		}, []want{{hubPath + ".storeAndForwardConfiguration", "must be an object"}}},
		{"timeToLiveSecs a string", func(m map[string]any) {
			obj(hub(m), "storeAndForwardConfiguration")["timeToLiveSecs"] = "7200"
		}, []want{{hubPath + ".storeAndForwardConfiguration.timeToLiveSecs", `not "7200"`}}},
		{"timeToLiveSecs beyond int32", func(m map[string]any) {
			obj(hub(m), "storeAndForwardConfiguration")["timeToLiveSecs"] = int64(1) << 31
		}, []want{{hubPath + ".storeAndForwardConfiguration.timeToLiveSecs", "up to 2147483647"}}},
		{"maxSizeBytes zero", func(m map[string]any) {
			obj(hub(m), "storeAndForwardConfiguration")["storeLimits"] = map[string]any{"maxSizeBytes": 0}
		}, []want{{hubPath + ".storeAndForwardConfiguration.storeLimits.maxSizeBytes", "positive"}}},

		// module twin sections
		{"twin section not an object", func(m map[string]any) {
			modulesContent(m)["filter"] = "TemperatureThreshold"
		}, []want{{"$.modulesContent.filter", "a module twin section is an object"}}},
		{"twin desired missing", func(m map[string]any) {
			modulesContent(m)["filter"] = map[string]any{"properties": map[string]any{"desired": map[string]any{}}}
		}, []want{{"$.modulesContent.filter", `"properties.desired" is missing`}}},
		{"twin desired an array", func(m map[string]any) {
			modulesContent(m)["filter"] = map[string]any{"properties.desired": []any{}}
		}, []want{{"$.modulesContent.filter['properties.desired']", "must be an object, not an array"}}},
		{"twin desired too deep", func(m map[string]any) {
			d := map[string]any{}
			deep := d
			for range twin.MaxDepth {
				next := map[string]any{}
				deep["x"] = next
				deep = next
			}
			modulesContent(m)["filter"] = map[string]any{"properties.desired": d}
		}, []want{{"$.modulesContent.filter['properties.desired']", "nested too deeply"}}},
		{"twin desired too large", func(m map[string]any) {
			modulesContent(m)["filter"] = map[string]any{"properties.desired": map[string]any{"blob": strings.Repeat("a", twin.MaxSectionSize)}}
		}, []want{{"$.modulesContent.filter['properties.desired']", "too large"}}},
		{"edgeHub desired too large", func(m map[string]any) {
			hub(m)["notes"] = strings.Repeat("a", twin.MaxSectionSize)
		}, []want{{hubPath, "too large"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var data []byte
			if tt.mutate == nil {
				data = []byte(`["modulesContent"]`)
				tt.want = []want{{"$", "is a JSON object"}}
			} else {
				m := decodeBase(t)
				tt.mutate(m)
				data = marshal(t, m)
			}
			got, err := Parse(data, testResolver)
			if err == nil {
				t.Fatalf("Parse succeeded with warnings %v; want problems %v", got.Warnings, tt.want)
			}
			if got != nil {
				t.Errorf("Parse returned a manifest with its problems")
			}
			checkProblems(t, problemsOf(t, err), tt.want)
		})
	}
}

func TestRouteSyntaxErrorColumn(t *testing.T) {
	m := decodeBase(t)
	text := "FROM /messages/modules/filter/outputs/output1 INT0 $upstream"
	routes(m)["filterToIoTHub"] = text
	_, err := Parse(marshal(t, m), testResolver)
	ps := problemsOf(t, err)
	if len(ps) != 1 {
		t.Fatalf("got %v, want one problem", ps)
	}
	_, rerr := route.Parse("filterToIoTHub", text)
	var se *route.SyntaxError
	if !errors.As(rerr, &se) {
		t.Fatalf("route.Parse(%q) = %v, want a *route.SyntaxError", text, rerr)
	}
	want := Problem{Path: hubPath + ".routes.filterToIoTHub", Column: se.Column, Msg: se.Msg}
	if ps[0] != want {
		t.Errorf("problem = %#v, want %#v", ps[0], want)
	}
	if got, w := ps[0].String(), fmt.Sprintf("%s: column %d: %s", want.Path, se.Column, se.Msg); got != w {
		t.Errorf("String() = %q, want %q", got, w)
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		want   []want
	}{
		{"route to a module not deployed", func(m map[string]any) {
			routes(m)["toRecorder"] = `FROM /messages/modules/filter/outputs/output1 INTO BrokeredEndpoint("/modules/recorder/inputs/in")`
		}, []want{{hubPath + ".routes.toRecorder", `sends to module "recorder", which is not in this deployment`}}},
		{"route to a module with the wrong case", func(m map[string]any) {
			routes(m)["sensorToFilter"] = `FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/Filter/inputs/input1")`
		}, []want{{hubPath + ".routes.sensorToFilter", `did you mean "filter"?`}}},
		{"route from a module not deployed", func(m map[string]any) {
			routes(m)["fromCamera"] = `FROM /messages/modules/camera/outputs/* INTO $upstream`
		}, []want{{hubPath + ".routes.fromCamera", `FROM reads messages of module "camera"`}}},
		{"desired properties for a module not deployed", func(m map[string]any) {
			modulesContent(m)["recorder"] = map[string]any{"properties.desired": map[string]any{"x": 1}}
		}, []want{{"$.modulesContent.recorder", `module "recorder", which is not in $edgeAgent's modules`}}},
		{"status missing", func(m map[string]any) {
			delete(mod(m, "filter"), "status")
		}, []want{{modsPath + ".filter", "status is missing"}}},
		{"timeToLiveSecs 0", func(m map[string]any) {
			obj(hub(m), "storeAndForwardConfiguration")["timeToLiveSecs"] = 0
		}, []want{{hubPath + ".storeAndForwardConfiguration.timeToLiveSecs", "drops every message"}}},
		{"module name with MQTT wildcard", func(m map[string]any) {
			obj(agent(m), "modules")["filter#2"] = mod(m, "filter")
		}, []want{{modsPath + "['filter#2']", "MQTT wildcard"}}},
		{"module nothing routes to", func(m map[string]any) {
			obj(agent(m), "modules")["idle"] = mod(m, "filter")
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := decodeBase(t)
			tt.mutate(m)
			got, err := Parse(marshal(t, m), testResolver)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkProblems(t, got.Warnings, tt.want)
		})
	}
}

func TestDuplicateKeyWarning(t *testing.T) {
	data := strings.Replace(baseManifest, `"TemperatureThreshold": 25`, `"TemperatureThreshold": 25, "TemperatureThreshold": 30`, 1)
	m, err := Parse([]byte(data), testResolver)
	if err != nil {
		t.Fatal(err)
	}
	checkProblems(t, m.Warnings, []want{{"$.modulesContent.filter['properties.desired'].TemperatureThreshold", "IoT Edge uses the last one"}})
	if got := m.Desired["filter"]["TemperatureThreshold"]; got != 30.0 {
		t.Errorf("TemperatureThreshold = %v, want the last value 30", got)
	}
}

func TestFourIndependentProblems(t *testing.T) {
	m := decodeBase(t)
	agent(m)["schemaVersion"] = "1.7"
	mod(m, "sensor")["restartPolicy"] = "sometimes"
	routes(m)["filterToIoTHub"] = "FROM /messages/modules/filter/outputs/output1 INT0 $upstream"
	modulesContent(m)["filter"] = map[string]any{"properties.desired": 25}
	_, err := Parse(marshal(t, m), testResolver)
	ps := problemsOf(t, err)
	var paths []string
	for _, p := range ps {
		paths = append(paths, p.Path)
	}
	sort.Strings(paths)
	wantPaths := []string{
		"$.modulesContent.$edgeAgent['properties.desired'].modules.sensor.restartPolicy",
		"$.modulesContent.$edgeAgent['properties.desired'].schemaVersion",
		"$.modulesContent.$edgeHub['properties.desired'].routes.filterToIoTHub",
		"$.modulesContent.filter['properties.desired']",
	}
	if !reflect.DeepEqual(paths, wantPaths) {
		t.Errorf("problem paths:\n%s\nwant:\n%s\nproblems:\n%v", strings.Join(paths, "\n"), strings.Join(wantPaths, "\n"), ps)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Errorf("Error() has %d lines, want 4:\n%v", n, err)
	}
}

func TestSyntaxErrorPosition(t *testing.T) {
	tests := []struct {
		name, data string
		line, col  int
	}{
		{"trailing comma", "{\n  \"modulesContent\": {\n    \"a\": 1,\n  }\n}", 4, 3},
		{"bad character", "{\"modulesContent\": x}", 1, 20},
		{"after multibyte", "{\"é\": 1 \"b\"}", 1, 9},
		{"truncated", "{\n  \"modulesContent\": {", 2, 22},
		{"empty", "", 1, 1},
		{"byte order mark", "\xEF\xBB\xBF{,}", 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data), testResolver)
			ps := problemsOf(t, err)
			if len(ps) != 1 {
				t.Fatalf("got %v, want one problem", ps)
			}
			if ps[0].Line != tt.line || ps[0].Column != tt.col || ps[0].Path != "" {
				t.Errorf("got %q at line %d column %d, want line %d column %d", ps[0].Msg, ps[0].Line, ps[0].Column, tt.line, tt.col)
			}
			if !strings.HasPrefix(ps[0].String(), fmt.Sprintf("line %d, column %d: ", tt.line, tt.col)) {
				t.Errorf("String() = %q", ps[0].String())
			}
		})
	}
}

func TestValues(t *testing.T) {
	m, err := Parse(readFile(t, "schema11-priority.json"), testResolver)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Module{}
	for _, mod := range m.Modules {
		byName[mod.Name] = mod
	}
	sensor, filter := byName["sensor"], byName["filter"]
	if want := `{"HostConfig":{"Binds":["/var/lib/sensor:/data"],"LogConfig":{"Type":"json-file","Config":{"max-size":"10m"}}}}`; sensor.CreateOptions != want {
		t.Errorf("CreateOptions = %s, want the two chunks joined: %s", sensor.CreateOptions, want)
	}
	wantEnv := map[string]string{"MessageCount": "-1", "SendData": "True", "Ratio": "1.5", "Site": "plant-7"}
	if !reflect.DeepEqual(sensor.Env, wantEnv) {
		t.Errorf("Env = %v, want %v", sensor.Env, wantEnv)
	}
	if sensor.StartupOrder != 1 || filter.StartupOrder != DefaultStartupOrder {
		t.Errorf("StartupOrder = %d, %d, want 1, %d", sensor.StartupOrder, filter.StartupOrder, DefaultStartupOrder)
	}
	if sensor.RestartPolicy != "on-failure" || filter.Status != "stopped" {
		t.Errorf("sensor restartPolicy %q, filter status %q", sensor.RestartPolicy, filter.Status)
	}
	routes := map[string]*route.Route{}
	for _, r := range m.Routes {
		routes[r.Name] = r
	}
	for _, c := range []struct {
		name     string
		priority uint32
		ttl      time.Duration
	}{
		{"alerts", 0, 24 * time.Hour},
		{"telemetry", 5, 0},
		{"sensorToFilter", route.DefaultPriority, 0},
		{"leafDevices", route.DefaultPriority, 0},
	} {
		r := routes[c.name]
		if r == nil {
			t.Errorf("route %s missing", c.name)
			continue
		}
		if r.Priority != c.priority || r.TimeToLive != c.ttl {
			t.Errorf("route %s: priority %d, ttl %v; want %d, %v", c.name, r.Priority, r.TimeToLive, c.priority, c.ttl)
		}
	}
	if want := (StoreAndForward{TimeToLive: Forever, MaxSizeBytes: 100 << 20}); m.StoreAndForward != want {
		t.Errorf("StoreAndForward = %+v, want %+v", m.StoreAndForward, want)
	}
	wantDesired := map[string]any{"TemperatureThreshold": 30.5, "limits": map[string]any{"humidity": 80.0}}
	if !reflect.DeepEqual(m.Desired["filter"], wantDesired) {
		t.Errorf("Desired[filter] = %v, want %v ($version and nulls dropped)", m.Desired["filter"], wantDesired)
	}
}

func TestDefaults(t *testing.T) {
	m := decodeBase(t)
	delete(hub(m), "storeAndForwardConfiguration")
	f := mod(m, "filter")
	delete(f, "restartPolicy")
	f["status"] = "STOPPED"
	got, err := Parse(marshal(t, m), testResolver)
	if err != nil {
		t.Fatal(err)
	}
	if got.StoreAndForward.TimeToLive != DefaultTimeToLive {
		t.Errorf("TimeToLive = %v, want %v", got.StoreAndForward.TimeToLive, DefaultTimeToLive)
	}
	filter := got.Modules[0]
	if filter.Name != "filter" || filter.RestartPolicy != "always" || filter.Status != "stopped" || filter.StartupOrder != DefaultStartupOrder {
		t.Errorf("filter = %+v, want restartPolicy always, status stopped, default startupOrder", filter)
	}
}

func TestNilResolver(t *testing.T) {
	_, err := Parse([]byte(baseManifest), nil)
	checkProblems(t, problemsOf(t, err), []want{
		{modsPath + ".sensor.settings.image", "no Resolver"},
		{modsPath + ".filter.settings.image", "no Resolver"},
	})
}

func TestPath(t *testing.T) {
	tests := []struct{ key, want string }{
		{"modulesContent", "$.modulesContent"},
		{"$edgeAgent", "$.$edgeAgent"},
		{"properties.desired", "$['properties.desired']"},
		{"filter-module", "$['filter-module']"},
		{"it's", `$['it\'s']`},
		{"9lives", "$['9lives']"},
		{"", "$['']"},
	}
	for _, tt := range tests {
		if got := member("$", tt.key); got != tt.want {
			t.Errorf("member($, %q) = %s, want %s", tt.key, got, tt.want)
		}
	}
	if got := index("$.a", 3); got != "$.a[3]" {
		t.Errorf("index = %s", got)
	}
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// summary renders what Parse made of a manifest, for golden files.
func summary(m *Manifest, err error) string {
	var b strings.Builder
	if err != nil {
		b.WriteString("problems:\n")
		b.WriteString(err.Error())
		b.WriteString("\n")
		return b.String()
	}
	fmt.Fprintf(&b, "$edgeAgent schema %s, $edgeHub schema %s\n", m.AgentSchemaVersion, m.SchemaVersion)
	for _, mod := range m.Modules {
		fmt.Fprintf(&b, "module %s: %s %q -> %s, version %q, %s, restart %s, startupOrder %d\n", mod.Name, mod.Type, mod.Image, mod.Builtin, mod.Version, mod.Status, mod.RestartPolicy, mod.StartupOrder)
		fmt.Fprintf(&b, "  path %s\n", mod.Path)
		if mod.CreateOptions != "" {
			fmt.Fprintf(&b, "  createOptions %s\n", mod.CreateOptions)
		}
		if pr := mod.Process; pr != nil {
			fmt.Fprintf(&b, "  process path %q, args %q, workingDir %q\n", pr.Path, pr.Args, pr.WorkingDir)
		}
		keys := make([]string, 0, len(mod.Env))
		for k := range mod.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  env %s=%q\n", k, mod.Env[k])
		}
	}
	for _, r := range m.Routes {
		fmt.Fprintf(&b, "route %s: priority %d, ttl %v, source %s, sink %d %s %s\n", r.Name, r.Priority, r.TimeToLive, r.Source, r.Sink.Kind, r.Sink.Module, r.Sink.Input)
	}
	fmt.Fprintf(&b, "store and forward: ttl %v, max size %d\n", m.StoreAndForward.TimeToLive, m.StoreAndForward.MaxSizeBytes)
	names := make([]string, 0, len(m.Desired))
	for n := range m.Desired {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		j, _ := json.Marshal(m.Desired[n])
		fmt.Fprintf(&b, "desired %s: %s\n", n, j)
	}
	for _, w := range m.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			m, err := Parse(readFile(t, name+".json"), testResolver)
			if err != nil {
				problemsOf(t, err)
			}
			broken := strings.HasPrefix(name, "broken-")
			if broken != (err != nil) {
				t.Errorf("Parse error = %v, want an error: %v", err, broken)
			}
			got := summary(m, err)
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s.json):\n%s\nwant (%s):\n%s", name, got, golden, want)
			}
		})
	}
}

// TestParseWithReportsSettingsProblemsWithTheRest checks that a module's
// own settings problems come back together with the manifest's.
func TestParseWithReportsSettingsProblemsWithTheRest(t *testing.T) {
	data := []byte(`{"modulesContent": {
	  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {
	    "a": {"type": "builtin", "status": "running", "restartPolicy": "always", "settings": {"image": "builtin:simtemp"}, "env": {"K": {"value": "bad"}}},
	    "b": {"type": "builtin", "status": "running", "restartPolicy": "sometimes", "settings": {"image": "builtin:filter"}}}}},
	  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
	  "a": {"properties.desired": {"x": 1}}}}`)
	var seen []string
	check := func(mod Module, desired map[string]any) Problems {
		seen = append(seen, mod.Name)
		if mod.Env["K"] == "bad" {
			return Problems{{Path: Member(Member(Member(mod.Path, "env"), "K"), "value"), Msg: "K is bad"},
				{Path: Member(mod.DesiredPath, "x"), Msg: fmt.Sprintf("x is %v", desired["x"])}}
		}
		return nil
	}
	_, err := ParseWith(data, testResolver, check)
	var probs Problems
	if !errors.As(err, &probs) {
		t.Fatalf("err = %v, want Problems", err)
	}
	got := probs.Error()
	for _, want := range []string{
		"modules.a.env.K.value: K is bad",
		"$.modulesContent.a['properties.desired'].x: x is 1",
		"modules.b.restartPolicy",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if len(seen) == 0 || seen[0] != "a" {
		t.Errorf("checker saw %v, want module a", seen)
	}
}
