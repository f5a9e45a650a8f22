package hubsim

import (
	"strings"
	"testing"
)

var stateTests = []struct {
	name, in, err string
}{
	{"empty", `{"version":1,"identities":[]}`, ""},
	{"device and module", `{"version":1,"identities":[
		{"deviceId":"gw","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","iotEdge":true,"twin":{"desired":{"a":1},"desiredVersion":3,"reported":{},"reportedVersion":1}},
		{"deviceId":"gw","moduleId":"filter","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"desiredVersion":1,"reportedVersion":7}}]}`, ""},
	{"x509", `{"version":1,"identities":[{"deviceId":"c","x509Thumbprints":["` + strings.Repeat("ab", 32) + `"],"twin":{"desiredVersion":1,"reportedVersion":1}}]}`, ""},
	{"newer", `{"version":2,"identities":[]}`, "newer"},
	{"no version", `{"identities":[]}`, "no version"},
	{"not json", `{"version":1,`, "decode state"},
	{"bad id", `{"version":1,"identities":[{"deviceId":"a/b","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"desiredVersion":1,"reportedVersion":1}}]}`, "not allowed"},
	{"wildcard id", `{"version":1,"identities":[{"deviceId":"a+","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"desiredVersion":1,"reportedVersion":1}}]}`, "not allowed"},
	{"short key", `{"version":1,"identities":[{"deviceId":"a","primaryKey":"AAAA","twin":{"desiredVersion":1,"reportedVersion":1}}]}`, "primaryKey"},
	{"no credentials", `{"version":1,"identities":[{"deviceId":"a","twin":{"desiredVersion":1,"reportedVersion":1}}]}`, "never connect"},
	{"bad thumbprint", `{"version":1,"identities":[{"deviceId":"a","x509Thumbprints":["xyz"],"twin":{"desiredVersion":1,"reportedVersion":1}}]}`, "x509Thumbprints[0]"},
	{"twice", `{"version":1,"identities":[{"deviceId":"a","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"desiredVersion":1,"reportedVersion":1}},{"deviceId":"a","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"desiredVersion":1,"reportedVersion":1}}]}`, "twice"},
	{"orphan module", `{"version":1,"identities":[{"deviceId":"gw","moduleId":"m","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"desiredVersion":1,"reportedVersion":1}}]}`, "has no device"},
	{"version 0", `{"version":1,"identities":[{"deviceId":"a","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"desiredVersion":0,"reportedVersion":1}}]}`, "desired version 0"},
	{"big twin", `{"version":1,"identities":[{"deviceId":"a","primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","twin":{"reported":{"x":"` + strings.Repeat("x", 33*1024) + `"},"desiredVersion":1,"reportedVersion":1}}]}`, "too large"},
}

func TestDecodeState(t *testing.T) {
	for _, tt := range stateTests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := decodeState([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := reg.encode()
			if err != nil {
				t.Fatal(err)
			}
			again, err := decodeState(b)
			if err != nil {
				t.Fatalf("decode(encode): %v", err)
			}
			b2, _ := again.encode()
			if string(b) != string(b2) {
				t.Fatalf("encode not stable:\n%s\n%s", b, b2)
			}
		})
	}
	reg, _ := decodeState([]byte(stateTests[1].in))
	if e := reg["gw/filter"]; e == nil || e.twin.Reported.Version != 7 {
		t.Errorf("module twin version not kept: %+v", e)
	}
	if e := reg["gw"]; e == nil || e.twin.Desired.Doc["a"] != 1.0 || e.twin.Desired.Version != 3 || !e.IoTEdge {
		t.Errorf("device entry not kept: %+v", e)
	}
}

func FuzzDecodeState(f *testing.F) {
	for _, tt := range stateTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		reg, err := decodeState(b)
		if err != nil {
			return
		}
		enc, err := reg.encode()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		again, err := decodeState(enc)
		if err != nil {
			t.Fatalf("decode(encode(decode(b))): %v\n%s", err, enc)
		}
		if enc2, _ := again.encode(); string(enc2) != string(enc) {
			t.Fatalf("not stable:\n%s\n%s", enc, enc2)
		}
	})
}
