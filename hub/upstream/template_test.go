package upstream_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/upstream"
)

var templateTests = []struct {
	tmpl, want, err string
}{
	{tmpl: upstream.DefaultTopic, want: "tinyedge/gw1/sensor/temperatureOutput"},
	{tmpl: "plain/topic", want: "plain/topic"},
	{tmpl: "a/{messageId}/{priority}", want: "a/id%2F1%2B%23/3"},
	{tmpl: "p/{property:room}/{property:none}/x", want: "p/kitchen%252F//x"},
	{tmpl: "{deviceId}{moduleId}", want: "gw1sensor"},
	{tmpl: "c/{contentType}/{correlationId}", want: "c/application%2Fjson/c1"},
	{tmpl: "", err: "empty"},
	{tmpl: "a/+/b", err: "wildcard"},
	{tmpl: "a/#", err: "wildcard"},
	{tmpl: "a/{device}", err: "unknown placeholder {device}"},
	{tmpl: "a/{deviceId", err: "'{' without '}'"},
	{tmpl: "a/deviceId}", err: "'}' without '{'"},
	{tmpl: "a/{property:}", err: "needs a property name"},
	{tmpl: "a/\x00", err: "NUL"},
	{tmpl: "a/\xff", err: "UTF-8"},
	{tmpl: strings.Repeat("a", 65536), err: "65535"},
}

func templateMessage() *message.Message {
	m := message.New([]byte("{}"))
	m.System.ConnectionDeviceID = "gw1"
	m.System.ConnectionModuleID = "sensor"
	m.System.OutputName = "temperatureOutput"
	m.System.MessageID = "id/1+#"
	m.System.ContentType = "application/json"
	m.System.CorrelationID = "c1"
	m.System.EnqueuedTime = time.Unix(0, 0)
	m.Properties["room"] = "kitchen%2F"
	return m
}

func TestTemplate(t *testing.T) {
	for _, tt := range templateTests {
		name := tt.tmpl
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			tmpl, err := upstream.ParseTemplate(tt.tmpl)
			if tt.err != "" {
				if err == nil || !errors.Is(err, upstream.ErrBadTemplate) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseTemplate(%q) = %v, want an ErrBadTemplate saying %q", tt.tmpl, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tmpl.Expand(templateMessage(), hub.Delivery{Priority: 3}); got != tt.want {
				t.Errorf("Expand = %q, want %q", got, tt.want)
			}
			if tmpl.String() != tt.tmpl {
				t.Errorf("String() = %q, want the template back", tmpl.String())
			}
		})
	}
}

// FuzzTemplate checks that a template that parses always expands to a
// valid topic to publish on: no wildcard, no NUL, and no level that a
// message value added.
func FuzzTemplate(f *testing.F) {
	for _, tt := range templateTests {
		f.Add(tt.tmpl, "x/+#%\x00y")
	}
	f.Fuzz(func(t *testing.T, s, value string) {
		tmpl, err := upstream.ParseTemplate(s)
		if err != nil {
			return
		}
		m := templateMessage()
		m.System.OutputName = value
		m.System.MessageID = value
		m.Properties["room"] = value
		got := tmpl.Expand(m, hub.Delivery{})
		if strings.ContainsAny(got, "+#\x00") {
			t.Fatalf("template %q expanded to %q, which has a wildcard or NUL", s, got)
		}
		plain := templateMessage()
		plain.System.OutputName, plain.System.MessageID, plain.Properties["room"] = "", "", ""
		if strings.Count(got, "/") != strings.Count(tmpl.Expand(plain, hub.Delivery{}), "/") {
			t.Fatalf("template %q: value %q changed the number of topic levels: %q", s, value, got)
		}
	})
}
