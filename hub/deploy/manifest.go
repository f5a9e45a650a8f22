package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// Defaults IoT Edge applies to what a manifest leaves out.
const (
	// DefaultStartupOrder is the startupOrder of a module that names none:
	// after every module that does (IoT Edge uses uint32's maximum).
	DefaultStartupOrder int64 = math.MaxUint32
	// DefaultTimeToLive is storeAndForwardConfiguration.timeToLiveSecs
	// when the manifest does not set it.
	DefaultTimeToLive = 7200 * time.Second
	// Forever is the TimeToLive of messages that never expire (a negative
	// timeToLiveSecs).
	Forever time.Duration = -1
)

// Resolver maps a module's type and settings.image to the name of a
// built-in module ("simtemp"), or returns an error saying why it can't; the
// error text becomes the Problem's message, so it should say what would
// work instead.
type Resolver func(moduleType, image string) (builtin string, err error)

// Manifest is a checked deployment manifest.
type Manifest struct {
	SchemaVersion      string                    // of $edgeHub
	AgentSchemaVersion string                    // of $edgeAgent
	Modules            []Module                  // sorted by name
	Routes             []*route.Route            // sorted by name; Priority and TimeToLive set from route objects
	StoreAndForward    StoreAndForward           // of $edgeHub
	Desired            map[string]map[string]any // module name -> its "properties.desired" without $ keys, for every module twin section
	Warnings           Problems                  // things that are allowed but probably a mistake
}

// Module is one entry of $edgeAgent's modules.
type Module struct {
	Name          string
	Path          string   // JSON path of the module entry, e.g. $.modulesContent.$edgeAgent['properties.desired'].modules.filter
	DesiredPath   string   // JSON path of its twin's desired properties, e.g. $.modulesContent.filter['properties.desired'] (present or not)
	Type          string   // "docker", "builtin" or "process", as written
	Image         string   // settings.image as written ("" for a process module)
	Builtin       string   // the built-in module the Resolver chose ("" for a process module)
	Process       *Process // the program a "process" module runs; nil for the others
	CreateOptions string   // createOptions + createOptions01..99 joined; valid JSON when non-empty
	Version       string
	Status        string // "running" (default) or "stopped"
	RestartPolicy string // "never", "on-failure", "on-unhealthy" or "always" (default)
	StartupOrder  int64  // 0 starts first; DefaultStartupOrder when not set
	Env           map[string]string
}

// TypeProcess is the module type of a program tinyedge runs as a child
// process (see Process).
const TypeProcess = "process"

// Process is the settings of a module of type "process":
//
//	"settings": {"path": "/usr/bin/node", "args": ["main.js"], "workingDir": "/opt/mod"}
type Process struct {
	Path       string   `json:"path"`                 // settings.path: absolute, or a bare program name looked up in PATH
	Args       []string `json:"args,omitempty"`       // settings.args: the arguments after the program name
	WorkingDir string   `json:"workingDir,omitempty"` // settings.workingDir: absolute; "" for tinyedge's working directory
}

// StoreAndForward is $edgeHub's storeAndForwardConfiguration.
type StoreAndForward struct {
	TimeToLive   time.Duration // timeToLiveSecs; DefaultTimeToLive when not set; Forever when negative
	MaxSizeBytes int64         // storeLimits.maxSizeBytes; 0 when not set
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Parse reads an IoT Edge deployment manifest: either
// {"modulesContent": {...}} or the form the az CLI and the portal export,
// {"content": {"modulesContent": {...}}}. It returns every problem found,
// not only the first: err is Problems when anything is wrong, and then m is
// nil. resolve maps each module to a built-in one.
func Parse(data []byte, resolve Resolver) (m *Manifest, err error) {
	return ParseWith(data, resolve, nil)
}

// SettingsChecker checks a resolved module's settings (its env, and the
// desired properties of its twin section, nil when it has none) and
// returns the problems with their JSON paths (Module.Path,
// Module.DesiredPath and Member build them).
type SettingsChecker func(mod Module, desired map[string]any) Problems

// ParseWith is Parse with each resolved module's settings also checked by
// check, and its problems reported with the manifest's own.
func ParseWith(data []byte, resolve Resolver, check SettingsChecker) (m *Manifest, err error) {
	// Editors on Windows like to start files with a byte order mark;
	// it is invisible there, so columns are counted without it.
	data = bytes.TrimPrefix(data, utf8BOM)
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, Problems{syntaxProblem(data, err)}
	}
	p := &parser{resolve: resolve, m: &Manifest{
		StoreAndForward: StoreAndForward{TimeToLive: DefaultTimeToLive},
		Desired:         map[string]map[string]any{},
	}}
	root, err := decodeTree(data, func(path string) {
		p.warnf(path, "key written more than once; IoT Edge uses the last one, delete the others")
	})
	if err != nil {
		// Unreachable once Unmarshal accepted the input, but a
		// decoder error must not pass silently.
		return nil, Problems{{Path: "$", Msg: err.Error()}}
	}
	p.manifest(root)
	sort.Slice(p.m.Modules, func(i, j int) bool { return p.m.Modules[i].Name < p.m.Modules[j].Name })
	for i := range p.m.Modules {
		mod := &p.m.Modules[i]
		mod.DesiredPath = member(member(p.mcPath, mod.Name), "properties.desired")
		// The module's own checks of its settings, for every module
		// that resolved, so they are reported with everything else.
		if check != nil && (mod.Builtin != "" || mod.Process != nil) {
			p.probs = append(p.probs, check(*mod, p.m.Desired[mod.Name])...)
		}
	}
	if len(p.probs) > 0 {
		return nil, p.probs
	}
	sort.Slice(p.m.Routes, func(i, j int) bool { return p.m.Routes[i].Name < p.m.Routes[j].Name })
	p.m.Warnings = p.warns
	return p.m, nil
}

type parser struct {
	resolve Resolver
	m       *Manifest
	mcPath  string // JSON path of modulesContent
	probs   Problems
	warns   Problems

	agentMinor int           // $edgeAgent schema minor version, -1 when unknown
	hubMinor   int           // $edgeHub schema minor version, -1 when unknown
	routePaths []string      // JSON path of each of m.Routes, same order
	twins      []twinSection // module twin sections, checked against the modules at the end
}

type twinSection struct{ name, path string }

func (p *parser) errorf(path, format string, args ...any) {
	p.probs = append(p.probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(path, format string, args ...any) {
	p.warns = append(p.warns, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// manifest checks the document root.
func (p *parser) manifest(root *node) {
	if root.kind != kObject {
		p.errorf("$", "a deployment manifest is a JSON object {\"modulesContent\": {...}}, not %s", root.kind)
		return
	}
	path, top := "$", root
	if root.get("modulesContent") == nil && root.get("content") != nil {
		// The az CLI / portal form: {"id": …, "content": {"modulesContent": …}}.
		path, top = member("$", "content"), root.get("content")
		if top.kind != kObject {
			p.errorf(path, "content must be an object holding \"modulesContent\", not %s", top.kind)
			return
		}
	}
	mc := top.get("modulesContent")
	mcPath := member(path, "modulesContent")
	p.mcPath = mcPath
	if mc == nil {
		switch {
		case top.get("deviceContent") != nil:
			p.errorf(path, "this is an IoT Hub device configuration (deviceContent), not an IoT Edge deployment; an IoT Edge deployment has \"modulesContent\"")
		case top.get("moduleContent") != nil:
			p.errorf(member(path, "moduleContent"), "this is an IoT Hub module configuration, not an IoT Edge deployment; rename it to \"modulesContent\" and add $edgeAgent and $edgeHub")
		default:
			p.errorf(path, "\"modulesContent\" is missing; a deployment manifest is {\"modulesContent\": {\"$edgeAgent\": …, \"$edgeHub\": …}}")
		}
		return
	}
	if mc.kind != kObject {
		p.errorf(mcPath, "modulesContent must be an object, not %s", mc.kind)
		return
	}
	p.agentMinor, p.hubMinor = -1, -1
	// $edgeAgent's schema version decides what module entries may hold,
	// so read it before anything else.
	if a := mc.get("$edgeAgent").get("properties.desired"); a != nil && a.kind == kObject {
		p.agentMinor = p.schemaVersion(member(member(member(mcPath, "$edgeAgent"), "properties.desired"), "schemaVersion"), a.get("schemaVersion"), 1, "$edgeAgent", &p.m.AgentSchemaVersion)
	}
	if h := mc.get("$edgeHub").get("properties.desired"); h != nil && h.kind == kObject {
		p.hubMinor = p.schemaVersion(member(member(member(mcPath, "$edgeHub"), "properties.desired"), "schemaVersion"), h.get("schemaVersion"), 3, "$edgeHub", &p.m.SchemaVersion)
	}
	for _, name := range mc.keys {
		sp := member(mcPath, name)
		desired, dp, doc, ok := p.section(sp, mc.members[name])
		switch {
		case name == "$edgeAgent":
			if ok {
				p.agent(dp, desired)
			}
		case name == "$edgeHub":
			if ok {
				p.hub(dp, desired)
			}
		case strings.HasPrefix(name, "$"):
			p.errorf(sp, "unknown system module %q; the only ones are $edgeAgent and $edgeHub (names are case-sensitive)", name)
		case ok:
			p.m.Desired[name] = doc
			p.twins = append(p.twins, twinSection{name, sp})
		}
	}
	for _, sys := range []string{"$edgeAgent", "$edgeHub"} {
		if mc.get(sys) == nil {
			p.errorf(mcPath, "%s is missing; every IoT Edge deployment has %q: {\"properties.desired\": {\"schemaVersion\": \"1.1\", …}}", sys, sys)
		}
	}
	p.crossCheck()
}

// section checks a module twin section {"properties.desired": {...}} and
// returns its desired properties, their path and the document module code
// sees: without the $ members IoT Hub keeps for itself, nulls removed.
func (p *parser) section(path string, n *node) (*node, string, map[string]any, bool) {
	if n.kind != kObject {
		p.errorf(path, "a module twin section is an object {\"properties.desired\": {...}}, not %s", n.kind)
		return nil, "", nil, false
	}
	for _, k := range n.keys {
		if strings.HasPrefix(k, "properties.desired.") {
			p.errorf(member(path, k), "layered deployments (\"properties.desired.<path>\") are not supported; merge the layer into the base deployment's \"properties.desired\"")
			return nil, "", nil, false
		}
	}
	dp := member(path, "properties.desired")
	d := n.get("properties.desired")
	switch {
	case d == nil:
		p.errorf(path, "\"properties.desired\" is missing; write {\"properties.desired\": {...}}")
		return nil, "", nil, false
	case d.kind != kObject:
		p.errorf(dp, "\"properties.desired\" must be an object, not %s", d.kind)
		return nil, "", nil, false
	}
	// IoT Hub refuses twins over its limits, so a deployment that breaks
	// them could never be applied there either.
	var props twin.Properties
	if _, err := props.Apply(d.value().(map[string]any)); err != nil {
		p.errorf(dp, "%v; IoT Hub would refuse this twin, move data out of it", err)
		return nil, "", nil, false
	}
	return d, dp, props.Doc, true
}

// schemaVersion checks a schemaVersion member, stores it in *dst and
// returns its minor version, or -1 when it is missing or not supported.
// Like IoT Edge it reads "1.1" and "1.1.0" alike.
func (p *parser) schemaVersion(path string, n *node, maxMinor int, who string, dst *string) int {
	want := fmt.Sprintf("\"1.0\" … \"1.%d\"", maxMinor)
	if n == nil {
		p.errorf(strings.TrimSuffix(path, ".schemaVersion"), "schemaVersion is missing; add \"schemaVersion\": \"1.1\"")
		return -1
	}
	if n.kind != kString {
		p.errorf(path, "schemaVersion must be a string such as \"1.1\", not %s", n.kind)
		return -1
	}
	*dst = n.str
	major, minor, ok := parseVersion(n.str)
	if !ok {
		p.errorf(path, "schemaVersion %q is not a version number; %s supports %s", n.str, who, want)
		return -1
	}
	if major != 1 || minor > maxMinor {
		p.errorf(path, "schemaVersion %q is not supported by %s; use one of %s", n.str, who, want)
		return -1
	}
	return minor
}

// parseVersion reads a .NET System.Version string: two to four
// dot-separated non-negative numbers.
func parseVersion(s string) (major, minor int, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 4 {
		return 0, 0, false
	}
	nums := make([]int, len(parts))
	for i, part := range parts {
		if part == "" || len(part) > 9 {
			return 0, 0, false
		}
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, 0, false
			}
			nums[i] = nums[i]*10 + int(c-'0')
		}
	}
	return nums[0], nums[1], true
}

// crossCheck looks for routes and twin sections that name modules the
// deployment does not have.
func (p *parser) crossCheck() {
	deployed := map[string]bool{}
	for _, m := range p.m.Modules {
		deployed[m.Name] = true
	}
	suggest := func(name string) string {
		for _, m := range p.m.Modules {
			if strings.EqualFold(m.Name, name) {
				return fmt.Sprintf(" (module names are case-sensitive: did you mean %q?)", m.Name)
			}
		}
		return ""
	}
	for i, r := range p.m.Routes {
		if src := sourceModule(r.Source); src != "" {
			found := false
			for _, m := range p.m.Modules {
				// Sources match case-insensitively, as edgeHub does.
				if strings.EqualFold(m.Name, src) {
					found = true
				}
			}
			if !found {
				p.warnf(p.routePaths[i], "FROM reads messages of module %q, which is not in this deployment; the route will match nothing until it is", src)
			}
		}
		if r.Sink.Kind == route.ModuleInput && !deployed[r.Sink.Module] {
			p.warnf(p.routePaths[i], "BrokeredEndpoint sends to module %q, which is not in this deployment%s; messages will wait in the store until their time to live ends", r.Sink.Module, suggest(r.Sink.Module))
		}
	}
	for _, t := range p.twins {
		if !deployed[t.name] {
			p.warnf(t.path, "desired properties for module %q, which is not in $edgeAgent's modules%s; no module will read them", t.name, suggest(t.name))
		}
	}
}

// sourceModule returns the module a route source is limited to, e.g. m for
// /messages/modules/m/outputs/*, or "" when it names none.
func sourceModule(source string) string {
	parts := strings.Split(source, "/")
	if len(parts) < 4 || parts[0] != "" || !strings.EqualFold(parts[1], "messages") || !strings.EqualFold(parts[2], "modules") {
		return ""
	}
	if m := parts[3]; m != "" && m != "*" {
		return m
	}
	return ""
}

var errNoResolver = errors.New("no built-in modules are available (no Resolver)")
