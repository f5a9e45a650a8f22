package edge

import (
	"strings"
	"testing"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

var resourceTests = []struct {
	in      string
	host    string
	id      hub.Identity
	wantErr bool
}{
	{in: "hub.azure-devices.net/devices/gw1/modules/filter", host: "hub.azure-devices.net", id: hub.Identity{DeviceID: "gw1", ModuleID: "filter"}},
	{in: "gw1.local/devices/leaf1", host: "gw1.local", id: hub.Identity{DeviceID: "leaf1"}},
	{in: "hub/devices/gw1/modules/", wantErr: true},
	{in: "hub/devices//modules/m", wantErr: true},
	{in: "/devices/gw1", wantErr: true},
	{in: "hub/devices/gw1/modules/a/b", wantErr: true},
	{in: "a/b/devices/gw1", wantErr: true},
	{in: "hub/modules/m", wantErr: true},
	{in: "", wantErr: true},
}

func TestParseResource(t *testing.T) {
	for _, tc := range resourceTests {
		host, id, err := parseResource(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseResource(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && (host != tc.host || id != tc.id) {
			t.Errorf("parseResource(%q) = %q %+v, want %q %+v", tc.in, host, id, tc.host, tc.id)
		}
	}
}

// FuzzParseResource checks that what parses is what iothub.Resource
// writes for the identity, so a token names exactly one identity.
func FuzzParseResource(f *testing.F) {
	for _, tc := range resourceTests {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, id, err := parseResource(s)
		if err != nil {
			return
		}
		if got := iothub.Resource(host, id.DeviceID, id.ModuleID); got != s {
			t.Fatalf("parseResource(%q) = %q %+v, which writes back as %q", s, host, id, got)
		}
	})
}

var loopbackTests = []struct {
	addr string
	ok   bool
}{
	{"127.0.0.1:1883", true},
	{"localhost:1883", true},
	{"[::1]:1883", true},
	{"127.0.0.2:0", true},
	{":1883", false},
	{"0.0.0.0:1883", false},
	{"[::]:1883", false},
	{"192.168.1.5:1883", false},
	{"gw1.local:1883", false},
	{"127.0.0.1", false},
}

func TestCheckLoopback(t *testing.T) {
	for _, tc := range loopbackTests {
		if err := checkLoopback(tc.addr); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}

func FuzzCheckLoopback(f *testing.F) {
	for _, tc := range loopbackTests {
		f.Add(tc.addr)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if checkLoopback(addr) != nil {
			return
		}
		host := addr[:strings.LastIndexByte(addr, ':')]
		host = strings.Trim(host, "[]")
		if !strings.EqualFold(host, "localhost") && !strings.HasPrefix(host, "127.") && host != "::1" && !strings.Contains(host, ":") {
			t.Fatalf("checkLoopback accepted %q", addr)
		}
	})
}

var publishTests = []struct {
	topic string
	id    hub.Identity
	ok    bool
}{
	{"devices/gw1/modules/m/messages/events/%24.on=out1", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, true},
	{"devices/gw1/modules/m/messages/events/", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, true},
	{"devices/leaf/messages/events/a=b", hub.Identity{DeviceID: "leaf"}, true},
	{"$iothub/twin/GET/?$rid=1", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, true},
	{"$iothub/twin/PATCH/properties/reported/?$rid=2", hub.Identity{DeviceID: "leaf"}, true},
	{"$iothub/methods/res/200/?$rid=3", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, true},
	{"devices/gw1/modules/other/messages/events/", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, false},
	{"devices/gw1/messages/events/", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, false},
	{"devices/gw1/modules/m/messages/events/", hub.Identity{DeviceID: "leaf"}, false},
	{"devices/gw1/modules/m/inputs/in/", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, false},
	{"$iothub/methods/POST/x/?$rid=1", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, false},
	{"$iothub/twin/res/200/?$rid=1", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, false},
	{"other/topic", hub.Identity{DeviceID: "gw1", ModuleID: "m"}, false},
}

func TestPublishAllowed(t *testing.T) {
	for _, tc := range publishTests {
		if err := publishAllowed(tc.topic, tc.id); (err == nil) != tc.ok {
			t.Errorf("publishAllowed(%q, %s) = %v, want ok %v", tc.topic, tc.id, err, tc.ok)
		}
	}
}

// FuzzPublishAllowed: whatever the topic, telemetry is allowed only on
// the identity's own events topic.
func FuzzPublishAllowed(f *testing.F) {
	for _, tc := range publishTests {
		f.Add(tc.topic, tc.id.DeviceID, tc.id.ModuleID)
	}
	f.Fuzz(func(t *testing.T, topic, dev, mod string) {
		id := hub.Identity{DeviceID: dev, ModuleID: mod}
		if publishAllowed(topic, id) != nil {
			return
		}
		if strings.HasPrefix(topic, "devices/") {
			prefix := "devices/" + dev + "/"
			if mod != "" {
				prefix += "modules/" + mod + "/"
			}
			if !strings.HasPrefix(topic, prefix+"messages/events") {
				t.Fatalf("%s may publish on %q", id, topic)
			}
		} else if !strings.HasPrefix(topic, "$iothub/") {
			t.Fatalf("%s may publish on %q", id, topic)
		}
	})
}
