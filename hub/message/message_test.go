package message

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSource(t *testing.T) {
	tests := []struct {
		module, output string
		kind           Kind
		want           string
	}{
		{"", "", Telemetry, "/messages"},
		{"sensor", "", Telemetry, "/messages/modules/sensor"},
		{"sensor", "out1", Telemetry, "/messages/modules/sensor/outputs/out1"},
		{"sensor", "out1", TwinChange, "/twinChangeNotifications"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			m := New(nil)
			m.System.ConnectionModuleID, m.System.OutputName, m.Kind = tt.module, tt.output, tt.kind
			if got := m.Source(); got != tt.want {
				t.Errorf("Source() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSizeCountsEverything checks Size against the property bag a message
// would travel in: body, application properties, and each set system
// property by its wire name and text.
func TestSizeCountsEverything(t *testing.T) {
	m := New([]byte("12345"))
	m.Properties["alert"] = "yes"
	if got, want := m.Size(), 5+len("alert")+len("yes"); got != want {
		t.Errorf("Size() = %d, want %d", got, want)
	}
	now := time.Date(2024, 1, 2, 3, 4, 5, 6e6, time.UTC)
	for _, name := range SystemNames() {
		var v string
		if strings.HasSuffix(name, "Utc") || name == "enqueuedTime" {
			v = now.Format(TimeFormat)
		} else {
			v = "v-" + name
		}
		if err := m.SetSystemProperty(name, v); err != nil {
			t.Fatal(err)
		}
	}
	want := 5 + len("alert") + len("yes")
	for name, v := range m.SystemProperties() {
		want += len(WireName(name)) + len(v)
	}
	if got := m.Size(); got != want {
		t.Errorf("Size() with every system property = %d, want %d", got, want)
	}
}

func TestCheckSize(t *testing.T) {
	if err := New(make([]byte, MaxSize)).CheckSize(); err != nil {
		t.Errorf("a message of exactly MaxSize: %v", err)
	}
	m := New(make([]byte, MaxSize))
	m.Properties["k"] = "v"
	err := m.CheckSize()
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "262146 bytes") || !strings.Contains(err.Error(), "262144") {
		t.Errorf("CheckSize() = %v, want ErrTooLarge naming 262146 and the 262144 limit", err)
	}
}

func TestSystemProperty(t *testing.T) {
	m := New(nil)
	m.System.ContentType = "application/json"
	m.System.ConnectionModuleID = "filter"
	tests := []struct {
		name string
		want string
		ok   bool
	}{
		{"contentType", "application/json", true},
		{"CONTENTTYPE", "application/json", true},
		{"connectionModuleId", "filter", true},
		{"connectionDeviceId", "", false},
		{"messageId", "", false},
		{"nonsense", "", false},
	}
	for _, tt := range tests {
		v, ok := m.SystemProperty(tt.name)
		if v != tt.want || ok != tt.ok {
			t.Errorf("SystemProperty(%q) = %q, %v; want %q, %v", tt.name, v, ok, tt.want, tt.ok)
		}
	}
	if err := m.SetSystemProperty("bogus", "x"); err == nil {
		t.Error("SetSystemProperty accepted an unknown name")
	}
	if err := m.SetSystemProperty("creationTimeUtc", "yesterday"); err == nil {
		t.Error("SetSystemProperty accepted a bad time")
	}
}

var timeCases = []struct {
	in   string
	want time.Time
	ok   bool
}{
	{"2024-01-02T03:04:05Z", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), true},
	{"2024-01-02T03:04:05.123Z", time.Date(2024, 1, 2, 3, 4, 5, 123e6, time.UTC), true},
	{"2024-01-02T05:04:05+02:00", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), true},
	{"2024-01-02T03:04:05.1234567", time.Date(2024, 1, 2, 3, 4, 5, 123456700, time.UTC), true},
	{"9999-12-31T23:59:59.999999999Z", time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), true},
	{"0000-01-01T00:00:00Z", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), true},
	{"0000-01-01T00:30:00+01:00", time.Time{}, false}, // year -1 in UTC
	{"9999-12-31T23:30:00-01:00", time.Time{}, false}, // year 10000 in UTC
	{"2024-01-02", time.Time{}, false},
	{"", time.Time{}, false},
	{"not a time", time.Time{}, false},
}

func TestParseTime(t *testing.T) {
	for _, tt := range timeCases {
		got, err := ParseTime(tt.in)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseTime(f *testing.F) {
	for _, tt := range timeCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTime(s)
		if err != nil {
			return
		}
		// What parses round-trips through the format we write.
		again, err := ParseTime(got.Format(time.RFC3339Nano))
		if err != nil || !again.Equal(got) {
			t.Errorf("ParseTime(%q) = %v does not round-trip: %v %v", s, got, again, err)
		}
	})
}

func TestCloneIsIndependent(t *testing.T) {
	m := New([]byte("b"))
	m.Properties["a"] = "1"
	c := m.Clone()
	c.Properties["a"] = "2"
	c.System.InputName = "in"
	if m.Properties["a"] != "1" || m.System.InputName != "" {
		t.Errorf("changing a clone changed the original: %v %q", m.Properties, m.System.InputName)
	}
}
