package cborwrite

import (
	"bytes"
	"math"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

var det = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func want(t testing.TB, v any) []byte {
	t.Helper()
	b, err := det.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func check(t testing.TB, what string, got, want []byte, n int) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got % x, want % x", what, got, want)
	}
	if n != len(want) {
		t.Errorf("%s: length %d, want %d", what, n, len(want))
	}
}

func checkInt(t testing.TB, v int64) {
	check(t, "int", AppendInt(nil, v), want(t, v), IntLen(v))
	if v >= 0 {
		check(t, "uint", AppendHead(nil, Uint, uint64(v)), want(t, uint64(v)), HeadLen(uint64(v)))
	}
}

func checkString(t testing.TB, s []byte) {
	check(t, "bytes", AppendBytes(nil, s), want(t, s), StringLen(len(s)))
	check(t, "text", AppendText(nil, string(s)), want(t, string(s)), StringLen(len(s)))
}

var ints = []int64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
	-1, -24, -25, -256, -257, -65536, -65537, math.MinInt64}

func TestMatchesFxamacker(t *testing.T) {
	for _, v := range ints {
		checkInt(t, v)
	}
	check(t, "uint max", AppendHead(nil, Uint, math.MaxUint64), want(t, uint64(math.MaxUint64)), HeadLen(math.MaxUint64))
	for _, n := range []int{0, 1, 23, 24, 255, 256, 70000} {
		checkString(t, bytes.Repeat([]byte("é"), n)[:n])
	}
	check(t, "true", AppendBool(nil, true), want(t, true), 1)
	check(t, "false", AppendBool(nil, false), want(t, false), 1)
}

func FuzzMatchesFxamacker(f *testing.F) {
	for i, v := range ints {
		f.Add(v, bytes.Repeat([]byte{'x'}, i*i))
	}
	f.Fuzz(func(t *testing.T, v int64, s []byte) {
		checkInt(t, v)
		checkString(t, s)
	})
}
