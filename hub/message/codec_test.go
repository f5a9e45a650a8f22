package message

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
	// Times Unix nanoseconds cannot hold, and the Unix epoch.
	wide := New([]byte("w"))
	wide.System.CreationTime = time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC)
	wide.System.ExpiryTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	wide.System.EnqueuedTime = time.Unix(0, 0).UTC()
	return []*Message{New(nil), New([]byte{0, 1, 2}), full, wide}
}

func TestCodecRoundTrip(t *testing.T) {
	for i, m := range codecSamples() {
		b := Marshal(m)
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
	var badTimes [][]byte
	for _, v := range []string{"1", "1.5", "1.0000000000", "x.000000000", "1.-00000001", "99999999999999999999.000000000"} {
		b, _ := cbor.Marshal(map[int]any{0: codecVersion, 21: v})
		badTimes = append(badTimes, b)
	}
	for _, b := range append([][]byte{nil, {0xff}, unversioned, []byte("not cbor")}, badTimes...) {
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("Unmarshal(%x) accepted", b)
		}
	}
}

// fastCases are records the fast decoder must get right or leave to the
// general one: Marshal's output, and near misses of it.
func fastCases(t testing.TB) [][]byte {
	var out [][]byte
	for _, m := range codecSamples() {
		out = append(out, Marshal(m))
	}
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return append(out,
		[]byte{0xa1, 0x00, 0x02},
		[]byte{0xa1, 0x00, 0x01, 0x00},                                           // trailing byte
		[]byte{0xa1, 0x18, 0x00, 0x01},                                           // key not in shortest form
		[]byte{0xa1, 0x00, 0x1b, 0, 0, 0, 0, 0, 0, 0, 1},                         // version not in shortest form
		[]byte{0xa1, 0x00, 0x1b, 0x80, 0, 0, 0, 0, 0, 0, 1},                      // version too large
		[]byte{0xbf, 0x00, 0x01, 0xff},                                           // indefinite map
		[]byte{0xa2, 0x00, 0x01, 0x01, 0x40},                                     // empty body
		[]byte{0xa2, 0x00, 0x01, 0x01, 0x5f, 0x41, 0x61, 0xff},                   // indefinite body
		[]byte{0xa2, 0x00, 0x01, 0x02, 0xa0},                                     // no properties
		[]byte{0xa2, 0x00, 0x01, 0x02, 0xa2, 0x61, 0x61, 0x60, 0x61, 0x61, 0x60}, // repeated property
		[]byte{0xa2, 0x00, 0x01, 0x02, 0xa1, 0x61, 0xff, 0x60},                   // property not UTF-8
		[]byte{0xa2, 0x00, 0x01, 0x05, 0x42, 0x61, 0x62},                         // message id as bytes
		[]byte{0xa2, 0x00, 0x01, 0x03, 0x19, 0x01, 0x00},                         // kind too large
		[]byte{0xa2, 0x00, 0x01, 0x0b, 0x20},                                     // negative time
		[]byte{0xa2, 0x01, 0x41, 0x61, 0x00, 0x01},                               // keys out of order
		[]byte{0xa2, 0x00, 0x01, 0x00, 0x01},                                     // repeated key
		[]byte{0xa2, 0x00, 0x01, 0x15, 0x01},                                     // unknown key
		[]byte{0xa2, 0x00, 0x01, 0x02, 0xbb, 0xff, 0, 0, 0, 0, 0, 0, 0},          // huge property count
		enc(map[int]any{0: 1, 2: map[string]string{"a": "1", "b": ""}, 9: "ü", 11: int64(1) << 62}),
	)
}

// TestDecodeFastAgrees checks that the fast decoder gives what the general
// one does, or leaves the record to it.
func TestDecodeFastAgrees(t *testing.T) {
	accepted := 0
	for _, b := range fastCases(t) {
		if checkFast(t, b) {
			accepted++
		}
	}
	if accepted < len(codecSamples()) {
		t.Errorf("the fast decoder took %d records, want at least Marshal's %d", accepted, len(codecSamples()))
	}
}

// checkFast fails t when decodeFast accepts b and the general decoder
// refuses it or decodes it otherwise; it reports whether decodeFast
// accepted b.
func checkFast(t *testing.T, b []byte) bool {
	t.Helper()
	var fast record
	if !decodeFast(b, &fast) {
		return false
	}
	var slow record
	if err := decMode.Unmarshal(b, &slow); err != nil {
		t.Fatalf("decodeFast accepted %x, the general decoder says %v", b, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("decodeFast(%x)\n got %+v\nwant %+v", b, fast, slow)
	}
	return true
}

func FuzzUnmarshal(f *testing.F) {
	for _, b := range fastCases(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFast(t, b)
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		again := Marshal(m)
		checkMarshal(t, m)
		m2, err := Unmarshal(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Errorf("decode(encode(decode(b))) differs: %v", err)
		}
	})
}

// checkMarshal fails t when Marshal's bytes for m are not the general
// encoder's.
func checkMarshal(t *testing.T, m *Message) {
	t.Helper()
	got := Marshal(m)
	want, err := marshalGeneral(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal(%+v)\n got % x\nwant % x", m, got, want)
	}
}

func TestMarshalMatchesGeneral(t *testing.T) {
	for _, m := range codecSamples() {
		checkMarshal(t, m)
	}
	// Keys of every length class, and negative and large times.
	m := codecSamples()[2]
	for _, n := range []int{1, 2, 23, 24, 25, 255, 256, 300} {
		m.Properties[strings.Repeat("k", n)] = strings.Repeat("v", n)
		m.Properties[strings.Repeat("j", n)] = ""
	}
	m.System.CreationTime = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	m.System.ExpiryTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Seq = 1 << 40
	m.Kind = 255
	checkMarshal(t, m)
}

// FuzzMarshalMatchesGeneral builds messages from the fuzzer's bytes: props
// and sys are split at NUL into property pairs and the system properties
// in record order.
func FuzzMarshalMatchesGeneral(f *testing.F) {
	f.Add([]byte(`{"t":21.5}`), "alert\x00true\x00$odd\x00", "m1\x00c1\x00u1\x00/devices/d\x00application/json\x00utf-8\x00gw\x00mod\x00out\x00in\x00schema\x00dtmi:x;1\x00thermostat1", uint8(TwinChange), uint64(42), int64(1704164645000000006), int64(-5), int64(5000000000), uint8(0))
	f.Add([]byte(nil), "", "", uint8(0), uint64(0), int64(0), int64(0), int64(0), uint8(0))
	f.Add([]byte("w"), "", "", uint8(0), uint64(0), int64(-62167219200), int64(253402300799), int64(0), uint8(7))
	// secs: bit i set, the i-th time is in seconds, not nanoseconds, so
	// it may lie beyond what nanoseconds hold.
	f.Fuzz(func(t *testing.T, body []byte, props, sys string, kind uint8, seq uint64, ctime, exp, etime int64, secs uint8) {
		m := New(body)
		kv := strings.Split(props, "\x00")
		for i := 0; i+1 < len(kv); i += 2 {
			m.Properties[kv[i]] = kv[i+1]
		}
		m.Kind, m.Seq = Kind(kind), seq
		s := &m.System
		fields := []*string{&s.MessageID, &s.CorrelationID, &s.UserID, &s.To, &s.ContentType, &s.ContentEncoding,
			&s.ConnectionDeviceID, &s.ConnectionModuleID, &s.OutputName, &s.InputName, &s.MessageSchema, &s.InterfaceID, &s.ComponentName}
		for i, v := range strings.SplitN(sys, "\x00", len(fields)) {
			*fields[i] = v
		}
		at := func(bit uint8, v int64) time.Time {
			if secs&bit != 0 {
				return time.Unix(v, 0)
			}
			return time.Unix(0, v)
		}
		s.CreationTime, s.ExpiryTime, s.EnqueuedTime = at(1, ctime), at(2, exp), at(4, etime)
		checkMarshal(t, m)
		if !utf8.ValidString(props) || !utf8.ValidString(sys) {
			return // the bag lets only UTF-8 in; the decoder refuses the rest
		}
		got, err := Unmarshal(Marshal(m))
		if err != nil {
			t.Fatal(err)
		}
		for i, tt := range [][2]time.Time{{got.System.CreationTime, s.CreationTime}, {got.System.ExpiryTime, s.ExpiryTime}, {got.System.EnqueuedTime, s.EnqueuedTime}} {
			if !tt[0].Equal(tt[1]) && !(tt[0].IsZero() && tt[1].IsZero()) {
				t.Fatalf("time %d: %v came back as %v", i, tt[1], tt[0])
			}
		}
	})
}

func BenchmarkMarshal(b *testing.B) {
	m := codecSamples()[2]
	b.ReportAllocs()
	for b.Loop() {
		Marshal(m)
	}
}

// BenchmarkMarshalGeneral is the baseline: the general CBOR encoder on
// the same message.
func BenchmarkMarshalGeneral(b *testing.B) {
	m := codecSamples()[2]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshalGeneral(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	m := codecSamples()[2]
	rec := Marshal(m)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshalGeneral is the baseline: the general CBOR decoder on
// the same record.
func BenchmarkUnmarshalGeneral(b *testing.B) {
	m := codecSamples()[2]
	rec := Marshal(m)
	b.ReportAllocs()
	for b.Loop() {
		var r record
		if err := decMode.Unmarshal(rec, &r); err != nil {
			b.Fatal(err)
		}
	}
}
