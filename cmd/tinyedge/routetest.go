package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, "; ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// testMessage is the --message file of `route test`, shaped like IoT Hub's
// "test route" input.
type testMessage struct {
	Body             json.RawMessage   `json:"body"`
	Properties       map[string]string `json:"properties"`
	SystemProperties map[string]string `json:"systemProperties"`
}

// readTestMessage builds a message from a --message file. A JSON string
// body is the message body as text; any other JSON value is the body as
// JSON.
func readTestMessage(path string) (*message.Message, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseTestMessage(path, b)
}

// parseTestMessage reads the JSON of a --message file; path is for errors.
func parseTestMessage(path string, b []byte) (*message.Message, error) {
	var tm testMessage
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&tm); err != nil {
		return nil, fmt.Errorf("%s: %v (want {\"body\": …, \"properties\": {…}, \"systemProperties\": {…}})", path, err)
	}
	m := message.New(nil)
	var s string
	if len(tm.Body) > 0 && json.Unmarshal(tm.Body, &s) == nil {
		m.Body = []byte(s)
	} else if len(tm.Body) > 0 && string(tm.Body) != "null" {
		m.Body = []byte(tm.Body)
	}
	for k, v := range tm.Properties {
		m.Properties[k] = v
	}
	for k, v := range tm.SystemProperties {
		if err := m.SetSystemProperty(strings.TrimPrefix(k, "$"), v); err != nil {
			return nil, fmt.Errorf("%s: systemProperties.%s: %v; known: %s", path, k, err, strings.Join(message.SystemNames(), ", "))
		}
	}
	return m, nil
}

// cmdRouteTest shows which sinks a message reaches. Exit 0 when a route
// matches, 1 when none does, 2 on errors.
func cmdRouteTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("route test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var routes stringList
	fs.Var(&routes, "route", "a `ROUTE` to test (repeatable)")
	manifest := fs.String("manifest", "", "test every route of this manifest `FILE`")
	msgFile := fs.String("message", "", "`FILE` with the message: {\"body\": …, \"properties\": {…}, \"systemProperties\": {…}}")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("%w: %v", errUsage, err)}
	}
	if *msgFile == "" || (len(routes) == 0 && *manifest == "") {
		return &exitError{code: 2, err: errors.New("route test needs --message FILE and --route ROUTE or --manifest FILE")}
	}
	var compiled []*route.Route
	for i, text := range routes {
		r, err := route.Parse(fmt.Sprintf("route%d", i+1), text)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		compiled = append(compiled, r)
	}
	if *manifest != "" {
		m, name, err := loadManifest(*manifest)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("%s:\n%w", name, err)}
		}
		compiled = append(compiled, m.Routes...)
	}
	msg, err := readTestMessage(*msgFile)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if explainRoutes(stdout, compiled, msg) == 0 {
		return &exitError{code: 1}
	}
	return nil
}

// explainRoutes writes, for each route, whether the source matched and
// what the condition evaluated to, then the sinks reached. It returns the
// number of sinks.
func explainRoutes(w io.Writer, routes []*route.Route, m *message.Message) int {
	src := m.Source()
	fmt.Fprintf(w, "message source: %s\n", src)
	env := route.NewEnv(m)
	type sinkHit struct {
		prio   uint32
		routes []string
	}
	hits := map[string]*sinkHit{}
	var order []string
	usesBody := false
	for _, r := range routes {
		fmt.Fprintf(w, "route %q: %s\n", r.Name, r.Text)
		if !r.MatchSource(src) {
			fmt.Fprintf(w, "  source %s does not match %s\n  → no match\n", r.Source, src)
			continue
		}
		fmt.Fprintf(w, "  source %s matches\n", r.Source)
		if r.HasCondition() {
			v := r.Eval(&env)
			fmt.Fprintf(w, "  condition %s is %s\n", r.ConditionText(), v)
			if strings.Contains(strings.ToLower(r.ConditionText()), "$body") {
				usesBody = true
			}
			if !v.IsTrue() {
				fmt.Fprintln(w, "  → no match (a route matches only when its condition is true)")
				continue
			}
		}
		sink := r.Sink.String()
		fmt.Fprintf(w, "  → %s\n", sink)
		h := hits[sink]
		if h == nil {
			h = &sinkHit{prio: r.Priority}
			hits[sink] = h
			order = append(order, sink)
		}
		h.prio = min(h.prio, r.Priority)
		h.routes = append(h.routes, r.Name)
	}
	if usesBody && !strings.EqualFold(m.System.ContentType, "application/json") {
		fmt.Fprintln(w, "note: $body is undefined unless systemProperties.contentType is application/json and contentEncoding is utf-8, utf-16 or utf-32")
	}
	if len(order) == 0 {
		fmt.Fprintln(w, "result: no route matches; the message would be dropped")
		return 0
	}
	fmt.Fprintln(w, "result: delivered once to each sink:")
	for _, s := range order {
		p := "default"
		if hits[s].prio != route.DefaultPriority {
			p = fmt.Sprint(hits[s].prio)
		}
		fmt.Fprintf(w, "  %s (priority %s; routes %s)\n", s, p, strings.Join(hits[s].routes, ", "))
	}
	return len(order)
}
