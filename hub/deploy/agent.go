package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Values IoT Edge accepts for a module's status, restartPolicy and
// imagePullPolicy.
var (
	statuses         = []string{"running", "stopped"}
	restartPolicies  = []string{"never", "on-failure", "on-unhealthy", "always"}
	imagePullPolices = []string{"on-create", "never"}
)

// maxModuleName is IoT Hub's limit on a module identity's length.
const maxModuleName = 128

// agent checks $edgeAgent's desired properties.
func (p *parser) agent(path string, d *node) {
	// runtime and systemModules describe the Docker runtime, edgeAgent
	// and edgeHub; tinyedge is all three, so they are accepted as they
	// are.
	mp := member(path, "modules")
	mods := d.get("modules")
	if mods == nil {
		return
	}
	if mods.kind != kObject {
		p.errorf(mp, "modules must be an object of module name → module, not %s", mods.kind)
		return
	}
	for _, name := range mods.keys {
		p.module(name, member(mp, name), mods.members[name])
	}
}

// module checks one entry of $edgeAgent's modules and adds it to the
// manifest when it is sound.
func (p *parser) module(name, path string, n *node) {
	before := len(p.probs)
	if msg := checkModuleName(name); msg != "" {
		p.errorf(path, "%s", msg)
	} else if strings.ContainsAny(name, "+#") {
		p.warnf(path, "module name %q holds an MQTT wildcard (+ or #), so an MQTT module client cannot subscribe to its topics; rename it", name)
	}
	if n.kind != kObject {
		p.errorf(path, "a module is an object {\"type\": \"docker\", \"settings\": {\"image\": …}, …}, not %s", n.kind)
		return
	}
	m := Module{Name: name, Path: path, Status: "running", RestartPolicy: "always", StartupOrder: DefaultStartupOrder}

	typeOK := false
	switch t := n.get("type"); {
	case t == nil:
		p.errorf(path, "type is missing; add \"type\": \"docker\"")
	case t.kind != kString:
		p.errorf(member(path, "type"), "type must be a string such as \"docker\", not %s", t.kind)
	case t.str != TypeProcess && strings.EqualFold(t.str, TypeProcess):
		p.errorf(member(path, "type"), "type %q: module types are case-sensitive; write %q", t.str, TypeProcess)
		m.Type = t.str // its settings are checked as a process module's
	default:
		m.Type, typeOK = t.str, true
	}

	if strings.EqualFold(m.Type, TypeProcess) {
		m.Process = p.processSettings(path, n)
	} else {
		imageOK := false
		sp := member(path, "settings")
		switch s := n.get("settings"); {
		case s == nil:
			p.errorf(path, "settings is missing; add \"settings\": {\"image\": \"…\"}")
		case s.kind != kObject:
			p.errorf(sp, "settings must be an object {\"image\": \"…\"}, not %s", s.kind)
		default:
			switch img := s.get("image"); {
			case img == nil && s.get("path") != nil:
				p.errorf(member(path, "type"), "type %q has no settings.path, it needs settings.image; to run a program, write \"type\": %q", m.Type, TypeProcess)
			case img == nil:
				p.errorf(sp, "settings.image is missing; add \"image\": \"…\"")
			case img.kind != kString:
				p.errorf(member(sp, "image"), "image must be a string, not %s", img.kind)
			case strings.TrimSpace(img.str) == "":
				p.errorf(member(sp, "image"), "image is empty; name the module's image")
			default:
				m.Image, imageOK = img.str, true
			}
			m.CreateOptions = p.createOptions(sp, s)
		}
		if typeOK && imageOK {
			p.resolveModule(&m)
		}
	}

	if v := n.get("version"); v != nil {
		if v.kind != kString {
			p.errorf(member(path, "version"), "version must be a string such as \"1.0\", not %s", v.kind)
		} else {
			m.Version = v.str
		}
	}
	if s, ok := p.enum(path, n, "status", statuses); ok {
		m.Status = s
	} else if n.get("status") == nil {
		p.warnf(path, "status is missing; tinyedge starts the module, but IoT Edge requires \"status\": \"running\" or \"stopped\"")
	}
	if s, ok := p.enum(path, n, "restartPolicy", restartPolicies); ok {
		m.RestartPolicy = s
	}
	p.enum(path, n, "imagePullPolicy", imagePullPolices)
	if so := n.get("startupOrder"); so != nil {
		sop := member(path, "startupOrder")
		i, ok := so.integer()
		switch {
		case !ok || i < 0 || i > DefaultStartupOrder:
			p.errorf(sop, "startupOrder must be a whole number from 0 (starts first) to %d, not %s", DefaultStartupOrder, show(so))
		case p.agentMinor == 0 && i != DefaultStartupOrder:
			p.errorf(sop, "startupOrder needs $edgeAgent schemaVersion \"1.1\"; change schemaVersion or remove startupOrder")
		default:
			m.StartupOrder = i
		}
	}
	m.Env = p.env(member(path, "env"), n.get("env"))

	if len(p.probs) == before {
		p.m.Modules = append(p.m.Modules, m)
	}
}

// processSettings checks the settings of a module of type "process":
// {"path": "…", "args": ["…"], "workingDir": "…"}.
func (p *parser) processSettings(path string, n *node) *Process {
	sp := member(path, "settings")
	s := n.get("settings")
	const example = `{"path": "/usr/bin/node", "args": ["main.js"], "workingDir": "/opt/mymodule"}`
	switch {
	case s == nil:
		p.errorf(path, "settings is missing; a process module says what to run: \"settings\": %s", example)
		return nil
	case s.kind != kObject:
		p.errorf(sp, "settings must be an object %s, not %s", example, s.kind)
		return nil
	}
	pr := &Process{}
	ok := true
	switch v := s.get("path"); {
	case v == nil:
		p.errorf(sp, "settings.path is missing; name the program to run, e.g. \"path\": \"/usr/bin/node\"")
		ok = false
	case v.kind != kString:
		p.errorf(member(sp, "path"), "path must be a string, not %s", v.kind)
		ok = false
	case strings.TrimSpace(v.str) == "" || strings.ContainsRune(v.str, 0):
		p.errorf(member(sp, "path"), "path is empty or holds NUL; name the program to run")
		ok = false
	case strings.Contains(v.str, "/") && !strings.HasPrefix(v.str, "/"):
		p.errorf(member(sp, "path"), "path %q is relative; write it absolute, or a bare program name to look up in PATH", v.str)
		ok = false
	default:
		pr.Path = v.str
	}
	if a := s.get("args"); a != nil {
		ap := member(sp, "args")
		if a.kind != kArray {
			p.errorf(ap, "args must be an array of strings, e.g. [\"main.js\"], not %s", a.kind)
			ok = false
		} else {
			for i, e := range a.elems {
				if e.kind != kString || strings.ContainsRune(e.str, 0) {
					p.errorf(index(ap, i), "an argument must be a string without NUL, not %s", show(e))
					ok = false
					continue
				}
				pr.Args = append(pr.Args, e.str)
			}
		}
	}
	if w := s.get("workingDir"); w != nil {
		wp := member(sp, "workingDir")
		switch {
		case w.kind != kString:
			p.errorf(wp, "workingDir must be a string, not %s", w.kind)
			ok = false
		case !strings.HasPrefix(w.str, "/") || strings.ContainsRune(w.str, 0):
			p.errorf(wp, "workingDir %q is not an absolute path; write it from /", w.str)
			ok = false
		default:
			pr.WorkingDir = w.str
		}
	}
	if s.get("image") != nil {
		p.warnf(member(sp, "image"), "a process module runs settings.path; its image is ignored")
	}
	if !ok {
		return nil
	}
	return pr
}

// resolveModule asks the Resolver which built-in module m is.
func (p *parser) resolveModule(m *Module) {
	var (
		b   string
		err = errNoResolver
	)
	if p.resolve != nil {
		b, err = p.resolve(m.Type, m.Image)
	}
	if err != nil {
		at := member(member(m.Path, "settings"), "image")
		if m.Type != "docker" && m.Type != "builtin" && m.Type != TypeProcess {
			at = member(m.Path, "type")
		}
		p.errorf(at, "%v", err)
		return
	}
	m.Builtin = b
}

// checkModuleName applies IoT Hub's rules for module identities, plus
// IoT Edge's: names starting with $ and the names of the system modules
// are taken.
func checkModuleName(name string) string {
	switch {
	case name == "":
		return "module name is empty; name the module"
	case len(name) > maxModuleName:
		return fmt.Sprintf("module name is %d characters long; IoT Hub allows at most %d", len(name), maxModuleName)
	case strings.HasPrefix(name, "$"):
		return fmt.Sprintf("module name %q starts with $, which IoT Edge keeps for system modules; rename it", name)
	case name == "edgeAgent" || name == "edgeHub":
		return fmt.Sprintf("module name %q is the name of a system module; system modules go in systemModules, rename this one", name)
	}
	for _, r := range name {
		if !isModuleNameChar(r) {
			return fmt.Sprintf("module name %q contains %q; IoT Hub allows letters, digits and - : . + %% _ # * ? ! ( ) , = @ ; $ '", name, r)
		}
	}
	return ""
}

func isModuleNameChar(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("-:.+%_#*?!(),=@;$'", r)
}

// enum checks an optional string member that takes one of allowed
// (compared case-insensitively, as IoT Edge's Json.NET does) and returns
// it in lower case.
func (p *parser) enum(path string, n *node, key string, allowed []string) (string, bool) {
	v := n.get(key)
	if v == nil {
		return "", false
	}
	if v.kind == kString {
		for _, a := range allowed {
			if strings.EqualFold(v.str, a) {
				return a, true
			}
		}
	}
	p.errorf(member(path, key), "%s must be one of %s, not %s", key, quoteAll(allowed), show(v))
	return "", false
}

// createOptions joins createOptions, createOptions01, createOptions02, …
// as edgeAgent does (IoT Hub limits each twin string, so long options are
// split) and checks the result is a JSON object, which is what Docker
// takes.
func (p *parser) createOptions(path string, settings *node) string {
	type chunk struct {
		key string
		num int // 0 for createOptions itself
	}
	var chunks []chunk
	for _, k := range settings.keys {
		if len(k) < len("createOptions") || !strings.EqualFold(k[:len("createOptions")], "createOptions") {
			continue
		}
		suffix := k[len("createOptions"):]
		num := 0
		if suffix != "" {
			i, err := strconv.Atoi(suffix)
			if err != nil || i < 0 || strings.HasPrefix(suffix, "+") {
				continue // another setting that happens to start with createOptions
			}
			num = i
			if len(suffix) != 2 || i == 0 {
				p.errorf(member(path, k), "createOptions chunks are numbered createOptions01 … createOptions99; rename %q", k)
				return ""
			}
		}
		chunks = append(chunks, chunk{k, num})
	}
	if len(chunks) == 0 {
		return ""
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i].num < chunks[j].num })
	var b strings.Builder
	for i, c := range chunks {
		if c.num != i {
			want := "createOptions"
			if i > 0 {
				want = fmt.Sprintf("createOptions%02d", i)
			}
			p.errorf(member(path, c.key), "%s is missing; createOptions chunks must be numbered without gaps", want)
			return ""
		}
		v := settings.members[c.key]
		switch v.kind {
		case kString:
			b.WriteString(v.str)
		case kObject:
			// deployment.template.json style: the tooling would
			// stringify it, and edgeAgent reads it as its JSON text.
			if i > 0 {
				p.errorf(member(path, c.key), "a createOptions chunk must be a string, not %s", v.kind)
				return ""
			}
			j, _ := json.Marshal(v.value())
			b.Write(j)
		case kNull:
		default:
			p.errorf(member(path, c.key), "%s must be a string holding Docker create options as JSON, not %s", c.key, v.kind)
			return ""
		}
	}
	opts := b.String()
	if strings.TrimSpace(opts) == "" {
		return ""
	}
	var obj map[string]any
	d := json.NewDecoder(strings.NewReader(opts))
	if err := d.Decode(&obj); err != nil || d.More() {
		why := "trailing data after the object"
		if err != nil {
			why = err.Error()
			var se *json.SyntaxError
			if errors.As(err, &se) {
				why = fmt.Sprintf("%s at character %d", se.Error(), se.Offset)
			}
		}
		p.errorf(member(path, chunks[0].key), "createOptions is not a JSON object (%s); write it as an escaped JSON string, e.g. \"{\\\"HostConfig\\\":{}}\"", why)
		return ""
	}
	if obj == nil {
		p.errorf(member(path, chunks[0].key), "createOptions is not a JSON object; use \"{}\" or leave it out")
		return ""
	}
	return opts
}

// env reads env: {"NAME": {"value": …}}. Numbers and booleans become
// strings as IoT Edge's Json.NET writes them (true → "True"); null becomes
// "".
func (p *parser) env(path string, n *node) map[string]string {
	if n == nil {
		return nil
	}
	if n.kind != kObject {
		p.errorf(path, "env must be an object {\"NAME\": {\"value\": \"…\"}}, not %s", n.kind)
		return nil
	}
	env := make(map[string]string, len(n.keys))
	for _, k := range n.keys {
		kp := member(path, k)
		if k == "" || strings.ContainsAny(k, "=\x00") {
			p.errorf(kp, "environment variable name %q is empty or contains = or NUL; rename it", k)
			continue
		}
		e := n.members[k]
		if e.kind != kObject {
			p.errorf(kp, "an env entry is an object: write %q: {\"value\": %s}", k, show(e))
			continue
		}
		v := e.get("value")
		switch {
		case v == nil || v.kind == kNull:
			env[k] = ""
		case v.kind == kString:
			env[k] = v.str
		case v.kind == kBool:
			env[k] = "False"
			if v.b {
				env[k] = "True"
			}
		case v.kind == kNumber:
			env[k] = numberString(v.num)
		default:
			p.errorf(member(kp, "value"), "an env value is a string, number or boolean, not %s", v.kind)
		}
	}
	return env
}

// numberString writes a JSON number as .NET would after reading it: whole
// numbers as integers, others in their shortest form.
func numberString(n json.Number) string {
	if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
		return strconv.FormatInt(i, 10)
	}
	f, err := n.Float64()
	if err != nil {
		return n.String()
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// show renders a short value for a message.
func show(n *node) string {
	switch n.kind {
	case kString:
		if r := []rune(n.str); len(r) > 40 {
			return strconv.Quote(string(r[:40]) + "…")
		}
		return strconv.Quote(n.str)
	case kNumber:
		return n.num.String()
	case kBool:
		return strconv.FormatBool(n.b)
	default:
		return n.kind.String()
	}
}
