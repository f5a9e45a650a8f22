package upstream

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/store"
)

// DefaultTopic is the plain-MQTT topic template when none is configured.
// A device's own telemetry has no module and no output, so its topic has
// empty levels there: tinyedge/gw1//.
const DefaultTopic = "tinyedge/{deviceId}/{moduleId}/{outputName}"

// ErrBadTemplate is returned (wrapped) by ParseTemplate.
var ErrBadTemplate = errors.New("bad topic template")

// maxTopic is MQTT's limit on a topic's length in bytes.
const maxTopic = 65535

// Template is a parsed topic template: literal text and placeholders in
// braces, which a message fills in:
//
//	{deviceId} {moduleId} {outputName} {messageId} {correlationId}
//	{contentType} {priority} {property:NAME}
//
// {priority} is the route's, 0 (highest) to 10 (a route without one).
// {property:NAME} is the application property NAME (empty when unset).
// Values are escaped so that a message cannot add topic levels or
// wildcards: '/', '+', '#', '%' and NUL are written as %2F, %2B, %23,
// %25 and %00.
type Template struct {
	parts []part
	text  string
}

type part struct {
	lit  string
	name string // placeholder name; "" for a literal
	prop string // property name for {property:NAME}
}

var placeholders = map[string]bool{
	"deviceId": true, "moduleId": true, "outputName": true, "messageId": true,
	"correlationId": true, "contentType": true, "priority": true,
}

// ParseTemplate parses a topic template. It refuses what a broker would
// refuse as a publish topic (empty, wildcards, NUL, invalid UTF-8, longer
// than 65535 bytes) and placeholders it does not know, naming the byte
// offset of the problem.
func ParseTemplate(s string) (*Template, error) {
	bad := func(at int, format string, args ...any) error {
		return fmt.Errorf("%w %q at byte %d: %s", ErrBadTemplate, s, at, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return nil, fmt.Errorf("%w: empty; want a topic such as %q", ErrBadTemplate, DefaultTopic)
	}
	if len(s) > maxTopic {
		return nil, fmt.Errorf("%w: %d bytes, MQTT allows %d", ErrBadTemplate, len(s), maxTopic)
	}
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("%w %q: not valid UTF-8", ErrBadTemplate, s)
	}
	t := &Template{text: s}
	var lit strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case '+', '#':
			return nil, bad(i, "%q is a wildcard, not allowed in a topic to publish on", string(c))
		case 0:
			return nil, bad(i, "NUL is not allowed in a topic")
		case '}':
			return nil, bad(i, "'}' without '{'")
		case '{':
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return nil, bad(i, "'{' without '}'")
			}
			name := s[i+1 : i+1+end]
			p := part{name: name}
			if prop, ok := strings.CutPrefix(name, "property:"); ok {
				if prop == "" || strings.ContainsAny(prop, "{") {
					return nil, bad(i, "{property:NAME} needs a property name")
				}
				p = part{name: "property", prop: prop}
			} else if !placeholders[name] {
				return nil, bad(i, "unknown placeholder {%s}; known: {deviceId} {moduleId} {outputName} {messageId} {correlationId} {contentType} {priority} {property:NAME}", name)
			}
			if lit.Len() > 0 {
				t.parts = append(t.parts, part{lit: lit.String()})
				lit.Reset()
			}
			t.parts = append(t.parts, p)
			i += end + 2
			continue
		}
		lit.WriteByte(c)
		i++
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, part{lit: lit.String()})
	}
	return t, nil
}

// String returns the template as it was written.
func (t *Template) String() string { return t.text }

// Expand returns the topic for m.
func (t *Template) Expand(m *message.Message, d hub.Delivery) string {
	var b strings.Builder
	b.Grow(128) // one allocation for most topics
	for _, p := range t.parts {
		switch p.name {
		case "":
			b.WriteString(p.lit)
		case "deviceId":
			escapeLevel(&b, m.System.ConnectionDeviceID)
		case "moduleId":
			escapeLevel(&b, m.System.ConnectionModuleID)
		case "outputName":
			escapeLevel(&b, m.System.OutputName)
		case "messageId":
			escapeLevel(&b, m.System.MessageID)
		case "correlationId":
			escapeLevel(&b, m.System.CorrelationID)
		case "contentType":
			escapeLevel(&b, m.System.ContentType)
		case "priority":
			// A route without a priority is the lowest, as the store
			// keeps it: 10.
			b.WriteString(strconv.FormatUint(uint64(min(d.Priority, store.LowestPriority)), 10))
		case "property":
			escapeLevel(&b, m.Properties[p.prop])
		}
	}
	return b.String()
}

// escapeLevel writes v so that it stays within one topic level and adds no
// wildcard.
func escapeLevel(b *strings.Builder, v string) {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '/', '+', '#', '%', 0:
			fmt.Fprintf(b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
}
