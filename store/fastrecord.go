package store

import (
	"math"
	"unicode/utf8"
)

// decodeMessageFast decodes data into r when it is a message record as
// encodeRecord writes it: a definite-length map of the known keys, each
// once, with definite-length values of the fields' types. Read decodes
// one per message, and this skips the reflection of the general decoder.
// It reports false, leaving r in any state, for anything else, which the
// general decoder then decides; for what it accepts it gives what the
// general decoder would (FuzzDecodeRecord checks).
func decodeMessageFast(data []byte, r *messageRecord) bool {
	d := cborReader{b: data}
	n, ok := d.head(5)
	if !ok {
		return false
	}
	var seen uint32
	for range n {
		k, ok := d.key()
		if !ok || !once(&seen, k) {
			return false
		}
		switch k {
		case 'v':
			r.V, ok = d.head(0)
		case 't':
			r.Enqueued, ok = d.int64()
		case 'c':
			r.Trusted, ok = d.bool()
		case 'h':
			r.Props, ok = d.bytes()
		case 'p':
			r.Payload, ok = d.bytes()
		case 'e':
			r.Targets, ok = d.targets()
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return d.i == len(d.b)
}

// cborReader reads CBOR items from b at i.
type cborReader struct {
	b []byte
	i int
}

// head reads the head of an item of major type major with a definite
// argument and returns the argument.
func (d *cborReader) head(major byte) (uint64, bool) {
	if d.i >= len(d.b) || d.b[d.i]>>5 != major {
		return 0, false
	}
	info := d.b[d.i] & 31
	d.i++
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
	if len(d.b)-d.i < size {
		return 0, false
	}
	var v uint64
	for _, c := range d.b[d.i : d.i+size] {
		v = v<<8 | uint64(c)
	}
	d.i += size
	return v, true
}

// key reads a one-letter text key, the only kind the records have, and
// returns its letter.
func (d *cborReader) key() (byte, bool) {
	if len(d.b)-d.i < 2 || d.b[d.i] != 0x61 || d.b[d.i+1] < 'a' || d.b[d.i+1] > 'z' {
		return 0, false
	}
	d.i += 2
	return d.b[d.i-1], true
}

// once reports whether key k was not seen before and marks it seen.
func once(seen *uint32, k byte) bool {
	bit := uint32(1) << (k - 'a')
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// raw reads a definite-length string of major type 2 or 3; its bytes
// alias b.
func (d *cborReader) raw(major byte) ([]byte, bool) {
	n, ok := d.head(major)
	if !ok || n > uint64(len(d.b)-d.i) {
		return nil, false
	}
	v := d.b[d.i : d.i+int(n)]
	d.i += int(n)
	return v, true
}

// bytes reads a non-empty byte string and copies it: b is bbolt's.
func (d *cborReader) bytes() ([]byte, bool) {
	v, ok := d.raw(2)
	if !ok || len(v) == 0 {
		return nil, false
	}
	return append([]byte(nil), v...), true
}

func (d *cborReader) text() (string, bool) {
	v, ok := d.raw(3)
	if !ok || !utf8.Valid(v) {
		return "", false
	}
	return string(v), true
}

func (d *cborReader) bool() (bool, bool) {
	if d.i >= len(d.b) || (d.b[d.i] != 0xf4 && d.b[d.i] != 0xf5) {
		return false, false
	}
	d.i++
	return d.b[d.i-1] == 0xf5, true
}

// int64 reads an integer, positive (major 0) or negative (major 1), that
// fits an int64.
func (d *cborReader) int64() (int64, bool) {
	if d.i < len(d.b) && d.b[d.i]>>5 == 1 {
		v, ok := d.head(1)
		return -1 - int64(v), ok && v <= math.MaxInt64
	}
	v, ok := d.head(0)
	return int64(v), ok && v <= math.MaxInt64
}

// targets reads the targets array.
func (d *cborReader) targets() ([]targetRecord, bool) {
	n, ok := d.head(4)
	// Each target takes at least one byte; the general decoder refuses
	// more than 4096 (MaxArrayElements).
	if !ok || n == 0 || n > uint64(len(d.b)-d.i) || n > 4096 {
		return nil, false
	}
	ts := make([]targetRecord, n)
	for i := range ts {
		if !d.target(&ts[i]) {
			return nil, false
		}
	}
	return ts, true
}

func (d *cborReader) target(t *targetRecord) bool {
	n, ok := d.head(5)
	if !ok {
		return false
	}
	var seen uint32
	for range n {
		k, ok := d.key()
		if !ok || !once(&seen, k) {
			return false
		}
		switch k {
		case 'n':
			t.Endpoint, ok = d.text()
		case 'p':
			var v uint64
			v, ok = d.head(0)
			ok = ok && v <= math.MaxUint32
			t.Priority = uint32(v)
		case 'l':
			t.TTL, ok = d.int64()
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}
