package message

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

func codecSamples() []*Message {
	full := New([]byte(`{"t":21.5}`))
	full.Properties["alert"] = "true"
	full.Properties["$odd"] = ""
	full.Kind = TwinChange
	full.Seq = 42
	s := &full.System
	s.MessageID, s.CorrelationID, s.UserID, s.To = "m1", "c1", "u1", "/devices/d"
	s.ContentType, s.ContentEncoding = "application/json", "utf-8"
	s.CreationTime = time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	s.ExpiryTime = time.Date(2024, 1, 3, 3, 4, 5, 0, time.UTC)
	s.EnqueuedTime = time.Date(1970, 1, 1, 0, 0, 5, 0, time.UTC) // an untrusted clock
	s.ConnectionDeviceID, s.ConnectionModuleID, s.OutputName, s.InputName = "gw", "mod", "out", "in"
	s.MessageSchema, s.InterfaceID, s.ComponentName = "schema", "dtmi:x;1", "thermostat1"
	return []*Message{New(nil), New([]byte{0, 1, 2}), full}
}

func TestCodecRoundTrip(t *testing.T) {
	for i, m := range codecSamples() {
		b, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Body) == 0 {
			m.Body = nil
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("sample %d: round trip\n got %+v\nwant %+v", i, got, m)
		}
	}
}

func TestCodecRefusesNewerAndGarbage(t *testing.T) {
	newer, _ := cbor.Marshal(map[int]any{0: codecVersion + 1, 1: []byte("x")})
	if _, err := Unmarshal(newer); !errors.Is(err, ErrNewerFormat) {
		t.Errorf("newer record: %v, want ErrNewerFormat", err)
	}
	unversioned, _ := cbor.Marshal(map[int]any{1: []byte("x")})
	for _, b := range [][]byte{nil, {0xff}, unversioned, []byte("not cbor")} {
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("Unmarshal(%x) accepted", b)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, m := range codecSamples() {
		b, _ := Marshal(m)
		f.Add(b)
	}
	f.Add([]byte{0xa1, 0x00, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		again, err := Marshal(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := Unmarshal(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Errorf("decode(encode(decode(b))) differs: %v", err)
		}
	})
}
