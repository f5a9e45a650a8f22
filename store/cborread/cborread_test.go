package cborread

import (
	"bytes"
	"math"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// items are encodings with what each reader must make of them; "" in a
// column means that reader refuses the item.
var items = []struct {
	name string
	hex  []byte
	i64  any // int64, or nil for refused
	text any // string, or nil
	b    any // bool, or nil
}{
	{"zero", []byte{0x00}, int64(0), nil, nil},
	{"23", []byte{0x17}, int64(23), nil, nil},
	{"24 one byte", []byte{0x18, 0x18}, int64(24), nil, nil},
	{"two bytes", []byte{0x19, 0x01, 0x00}, int64(256), nil, nil},
	{"four bytes", []byte{0x1a, 0x00, 0x01, 0x00, 0x00}, int64(65536), nil, nil},
	{"max int64", []byte{0x1b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, int64(math.MaxInt64), nil, nil},
	{"over int64", []byte{0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0}, nil, nil, nil},
	{"minus one", []byte{0x20}, int64(-1), nil, nil},
	{"min int64", []byte{0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, int64(math.MinInt64), nil, nil},
	{"short argument", []byte{0x19, 0x01}, nil, nil, nil},
	{"reserved info", []byte{0x1c}, nil, nil, nil},
	{"text", []byte{0x63, 'a', 'b', 'c'}, nil, "abc", nil},
	{"empty text", []byte{0x60}, nil, "", nil},
	{"text not utf-8", []byte{0x61, 0xff}, nil, nil, nil},
	{"text too long", []byte{0x65, 'a'}, nil, nil, nil},
	{"indefinite text", []byte{0x7f, 0x61, 'a', 0xff}, nil, nil, nil},
	{"bytes are not text", []byte{0x41, 'a'}, nil, nil, nil},
	{"false", []byte{0xf4}, nil, nil, false},
	{"true", []byte{0xf5}, nil, nil, true},
	{"null", []byte{0xf6}, nil, nil, nil},
	{"empty", nil, nil, nil, nil},
}

func TestReaders(t *testing.T) {
	for _, tc := range items {
		t.Run(tc.name, func(t *testing.T) {
			check(t, tc.hex, tc.i64, tc.text, tc.b)
		})
	}
}

// check reads data as each kind of item and compares with the table.
func check(t *testing.T, data []byte, i64, text, b any) {
	t.Helper()
	d := Reader{B: data}
	v, ok := d.Int64()
	if got := result(v, ok && d.Done()); got != i64 {
		t.Errorf("Int64(% x) = %v, want %v", data, got, i64)
	}
	d = Reader{B: data}
	s, ok := d.Text()
	if got := result(s, ok && d.Done()); got != text {
		t.Errorf("Text(% x) = %v, want %v", data, got, text)
	}
	d = Reader{B: data}
	bv, ok := d.Bool()
	if got := result(bv, ok && d.Done()); got != b {
		t.Errorf("Bool(% x) = %v, want %v", data, got, b)
	}
}

func result[T any](v T, ok bool) any {
	if !ok {
		return nil
	}
	return v
}

// FuzzReaders checks every reader against the general decoder: what a
// reader accepts, fxamacker/cbor decodes to the same value, and a reader
// never reads past its input.
func FuzzReaders(f *testing.F) {
	for _, tc := range items {
		f.Add(tc.hex)
	}
	dec, err := cbor.DecOptions{UTF8: cbor.UTF8RejectInvalid}.DecMode()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := Reader{B: data}
		if v, ok := d.Int64(); ok {
			var want int64
			if err := dec.Unmarshal(data[:d.I], &want); err != nil || want != v {
				t.Fatalf("Int64(% x) = %d; cbor: %d, %v", data, v, want, err)
			}
		}
		if d.I > len(data) {
			t.Fatalf("Int64 read past the end of % x", data)
		}
		d = Reader{B: data}
		if s, ok := d.Text(); ok {
			var want string
			if err := dec.Unmarshal(data[:d.I], &want); err != nil || want != s {
				t.Fatalf("Text(% x) = %q; cbor: %q, %v", data, s, want, err)
			}
		}
		d = Reader{B: data}
		if v, ok := d.Raw(2); ok {
			var want []byte
			if err := dec.Unmarshal(data[:d.I], &want); err != nil || !bytes.Equal(want, v) {
				t.Fatalf("Raw(2)(% x) = % x; cbor: % x, %v", data, v, want, err)
			}
		}
		d = Reader{B: data}
		if v, ok := d.Bool(); ok {
			var want bool
			if err := dec.Unmarshal(data[:d.I], &want); err != nil || want != v {
				t.Fatalf("Bool(% x) = %v; cbor: %v, %v", data, v, want, err)
			}
		}
		d = Reader{B: data}
		if v, ok := d.Uint64(1000); ok && v > 1000 {
			t.Fatalf("Uint64(1000)(% x) = %d", data, v)
		}
	})
}
