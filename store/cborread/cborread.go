// Package cborread reads the CBOR items of records whose shape the
// reader knows in advance: a definite-length head, a string, an integer,
// a boolean. It is the shared core of the reflection-free decoders that
// store and hub/message keep beside fxamacker/cbor for their hottest
// path: each reports false for anything it does not read exactly, and
// its caller then hands the whole record to the general decoder.
//
// It lives under store because store imports nothing of hub, and both
// need it.
package cborread

import (
	"math"
	"unicode/utf8"
)

// Reader reads CBOR items from B, starting at I.
type Reader struct {
	B []byte
	I int
}

// Done reports whether every byte was read.
func (d *Reader) Done() bool { return d.I == len(d.B) }

// Head reads the head of an item of major type major with a definite
// argument and returns the argument.
func (d *Reader) Head(major byte) (uint64, bool) {
	if d.I >= len(d.B) || d.B[d.I]>>5 != major {
		return 0, false
	}
	info := d.B[d.I] & 31
	d.I++
	if info < 24 {
		return uint64(info), true
	}
	var size int
	switch info {
	case 24:
		size = 1
	case 25:
		size = 2
	case 26:
		size = 4
	case 27:
		size = 8
	default:
		return 0, false // reserved, or indefinite length
	}
	if len(d.B)-d.I < size {
		return 0, false
	}
	var v uint64
	for _, c := range d.B[d.I : d.I+size] {
		v = v<<8 | uint64(c)
	}
	d.I += size
	return v, true
}

// Raw reads a definite-length byte (major 2) or text (major 3) string
// and returns its bytes, which alias B.
func (d *Reader) Raw(major byte) ([]byte, bool) {
	n, ok := d.Head(major)
	if !ok || n > uint64(len(d.B)-d.I) {
		return nil, false
	}
	v := d.B[d.I : d.I+int(n)]
	d.I += int(n)
	return v, true
}

// Text reads a text string; one that is not UTF-8 is the general
// decoder's to refuse.
func (d *Reader) Text() (string, bool) {
	v, ok := d.Raw(3)
	if !ok || !utf8.Valid(v) {
		return "", false
	}
	return string(v), true
}

// Bool reads false or true.
func (d *Reader) Bool() (bool, bool) {
	if d.I >= len(d.B) || (d.B[d.I] != 0xf4 && d.B[d.I] != 0xf5) {
		return false, false
	}
	d.I++
	return d.B[d.I-1] == 0xf5, true
}

// Uint64 reads a non-negative integer (major 0) no larger than max.
func (d *Reader) Uint64(max uint64) (uint64, bool) {
	v, ok := d.Head(0)
	return v, ok && v <= max
}

// Int64 reads an integer, non-negative (major 0) or negative (major 1),
// that fits an int64.
func (d *Reader) Int64() (int64, bool) {
	if d.I < len(d.B) && d.B[d.I]>>5 == 1 {
		v, ok := d.Head(1)
		return -1 - int64(v), ok && v <= math.MaxInt64
	}
	v, ok := d.Head(0)
	return int64(v), ok && v <= math.MaxInt64
}
