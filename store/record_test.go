package store

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

var recordTests = []messageRecord{
	{V: 1, Enqueued: 1717243200000000000, Trusted: true, Payload: []byte(`{"t":21.5}`), Props: []byte("$.ct=application%2Fjson"), Targets: []targetRecord{{Endpoint: "$upstream", TTL: 7200e9}}},
	{V: 1, Enqueued: 60e9, Targets: []targetRecord{{Endpoint: "a", Priority: 3, TTL: -1}, {Endpoint: "BrokeredEndpoint(\"/modules/m/inputs/i\")", Priority: 10, TTL: 1}}},
	{V: 1, Enqueued: -5, Payload: bytes.Repeat([]byte{0}, 300), Targets: []targetRecord{{Endpoint: "x"}}},
	// Format 2 keeps a message for one endpoint in that endpoint's queue,
	// with a nameless target.
	{V: 1, Enqueued: 1717243200000000000, Trusted: true, Payload: []byte("q"), Targets: []targetRecord{{TTL: 7200e9}}},
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range recordTests {
		b, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := encodeRecord(got)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the record:\n%x\n%x", b, b2)
		}
	}
	if _, err := decodeMessage([]byte{0xa0}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record without version: %v", err)
	}
	two, _ := encodeRecord(messageRecord{V: 1, Targets: []targetRecord{{Endpoint: "a"}, {TTL: 1}}})
	if _, err := decodeMessage(two); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("nameless target among two: %v, want ErrCorrupt", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range recordTests {
		b, _ := encodeRecord(r)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xa1, 0x61, 0x76, 0x03})
	for _, b := range fastRecordCases(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFastRecord(t, data)
		r, err := decodeMessage(data)
		if err != nil {
			return
		}
		// A record that decodes re-encodes to one that decodes the same.
		b, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("decode of re-encoded record: %v", err)
		}
		b2, _ := encodeRecord(r2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("not stable:\n%x\n%x", b, b2)
		}
		checkEncodeMessage(t, r)
	})
}

// checkEncodeMessage fails t when encodeMessage's bytes for r are not
// the general encoder's.
func checkEncodeMessage(t *testing.T, r *messageRecord) {
	t.Helper()
	want, err := encodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeMessage(r); !bytes.Equal(got, want) {
		t.Fatalf("encodeMessage(%+v)\n got % x\nwant % x", r, got, want)
	}
}

func TestEncodeMessage(t *testing.T) {
	for _, r := range recordTests {
		checkEncodeMessage(t, &r)
	}
	big := messageRecord{V: 1 << 40, Enqueued: -1 << 62, Props: bytes.Repeat([]byte("h"), 70000), Payload: bytes.Repeat([]byte("p"), 256),
		Targets: []targetRecord{{Endpoint: string(bytes.Repeat([]byte("e"), 300)), Priority: 1 << 20, TTL: 1 << 50}, {Endpoint: "b", Priority: 24, TTL: -1 << 40}}}
	checkEncodeMessage(t, &big)
}

// FuzzEncodeMessage builds records from the fuzzer's values: names is
// split at NUL into the targets' endpoints.
func FuzzEncodeMessage(f *testing.F) {
	for _, r := range recordTests {
		names := ""
		for i, t := range r.Targets {
			if i > 0 {
				names += "\x00"
			}
			names += t.Endpoint
		}
		f.Add(r.V, r.Enqueued, r.Trusted, r.Props, r.Payload, names, r.Targets[0].Priority, r.Targets[0].TTL)
	}
	f.Fuzz(func(t *testing.T, v uint64, enq int64, trusted bool, props, payload []byte, names string, prio uint32, ttl int64) {
		r := messageRecord{V: v, Enqueued: enq, Trusted: trusted, Props: props, Payload: payload}
		for i, n := range strings.Split(names, "\x00") {
			r.Targets = append(r.Targets, targetRecord{Endpoint: n, Priority: prio * uint32(i%2), TTL: ttl - int64(i)})
		}
		checkEncodeMessage(t, &r)
	})
}

// fastRecordCases are records the fast decoder must get right or leave to
// the general one: encodeRecord's output, and near misses of it.
func fastRecordCases(t testing.TB) [][]byte {
	var out [][]byte
	for _, r := range recordTests {
		b, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out,
		[]byte{0xa1, 0x61, 0x76, 0x01},                                                                                           // no targets
		[]byte{0xa2, 0x61, 0x76, 0x01, 0x61, 0x65, 0x80},                                                                         // empty targets
		[]byte{0xa2, 0x61, 0x65, 0x81, 0xa1, 0x61, 0x6e, 0x61, 0x61, 0x61, 0x76, 0x01},                                           // keys out of order
		[]byte{0xa3, 0x61, 0x76, 0x01, 0x61, 0x76, 0x01, 0x61, 0x65, 0x81, 0xa0},                                                 // repeated key
		[]byte{0xa3, 0x61, 0x76, 0x01, 0x61, 0x70, 0x40, 0x61, 0x65, 0x81, 0xa0},                                                 // empty payload
		[]byte{0xa3, 0x61, 0x76, 0x01, 0x61, 0x63, 0xf6, 0x61, 0x65, 0x81, 0xa0},                                                 // null trusted
		[]byte{0xa3, 0x61, 0x76, 0x01, 0x61, 0x74, 0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x61, 0x65, 0x81, 0xa0},                      // time below int64
		[]byte{0xa3, 0x61, 0x76, 0x01, 0x61, 0x74, 0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61, 0x65, 0x81, 0xa0}, // smallest int64
		[]byte{0xa2, 0x61, 0x76, 0x01, 0x61, 0x65, 0x81, 0xa1, 0x61, 0x70, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0},                         // priority above uint32
		[]byte{0xa2, 0x61, 0x76, 0x01, 0x61, 0x65, 0x81, 0xa1, 0x61, 0x6e, 0x61, 0xff},                                           // endpoint not UTF-8
		[]byte{0xa2, 0x61, 0x76, 0x01, 0x61, 0x65, 0x81, 0xa1, 0x61, 0x6e, 0x41, 0x61},                                           // endpoint as bytes
		[]byte{0xa2, 0x61, 0x76, 0x01, 0x61, 0x7a, 0x01},                                                                         // unknown key
		[]byte{0xa2, 0x61, 0x76, 0x02, 0x61, 0x65, 0x81, 0xa0},                                                                   // newer version
		[]byte{0xa2, 0x61, 0x76, 0x01, 0x61, 0x65, 0x81, 0xa0, 0x00},                                                             // trailing byte
	)
}

// TestDecodeMessageFastAgrees checks that the fast decoder gives what the
// general one does, or leaves the record to it.
func TestDecodeMessageFastAgrees(t *testing.T) {
	accepted := 0
	for _, b := range fastRecordCases(t) {
		if checkFastRecord(t, b) {
			accepted++
		}
	}
	if accepted < len(recordTests) {
		t.Errorf("the fast decoder took %d records, want at least encodeRecord's %d", accepted, len(recordTests))
	}
}

// checkFastRecord fails t when decodeMessageFast accepts b and the general
// decoder refuses it or decodes it otherwise; it reports whether
// decodeMessageFast accepted b.
func checkFastRecord(t *testing.T, b []byte) bool {
	t.Helper()
	var fast messageRecord
	if !decodeMessageFast(b, &fast) {
		return false
	}
	var slow messageRecord
	if err := decMode.Unmarshal(b, &slow); err != nil {
		t.Fatalf("decodeMessageFast accepted %x, the general decoder says %v", b, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("decodeMessageFast(%x)\n got %+v\nwant %+v", b, fast, slow)
	}
	return true
}

var endpointTests = []endpointRecord{
	{V: 1, ID: 1},
	{V: 1, ID: 7, Checkpoint: 90, Expired: 3, SizeLimit: 1, Acked: []uint64{90}},
	{V: 1, ID: 2, Acked: []uint64{0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 12}},
}

func TestEndpointRecord(t *testing.T) {
	for _, r := range endpointTests {
		b, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeEndpoint(b)
		if err != nil || got.ID != r.ID || got.Checkpoint != r.Checkpoint || len(got.Acked) != len(r.Acked) {
			t.Fatalf("decode %+v: %+v, %v", r, got, err)
		}
	}
	// Prefixes are written without trailing zeros.
	var r endpointRecord
	r.setAcked(&[NumPriorities]uint64{3, 0, 4})
	if len(r.Acked) != 3 {
		t.Fatalf("setAcked kept %v", r.Acked)
	}
	r.setAcked(&[NumPriorities]uint64{})
	if len(r.Acked) != 0 {
		t.Fatalf("setAcked of none kept %v", r.Acked)
	}
	twelve, _ := encodeRecord(endpointRecord{V: 1, ID: 1, Acked: make([]uint64, NumPriorities+1)})
	if _, err := decodeEndpoint(twelve); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%d prefixes: %v, want ErrCorrupt", NumPriorities+1, err)
	}
}

func FuzzDecodeEndpoint(f *testing.F) {
	for _, r := range endpointTests {
		b, _ := encodeRecord(r)
		f.Add(b)
	}
	f.Add([]byte{0xa1, 0x61, 0x76, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeEndpoint(data)
		if err != nil {
			return
		}
		if len(r.Acked) > NumPriorities {
			t.Fatalf("decoded %d prefixes", len(r.Acked))
		}
		b, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := decodeEndpoint(b)
		if err != nil {
			t.Fatalf("decode of re-encoded record: %v", err)
		}
		b2, _ := encodeRecord(r2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("not stable:\n%x\n%x", b, b2)
		}
	})
}
