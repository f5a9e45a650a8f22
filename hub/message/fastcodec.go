package message

import (
	"math"
	"unicode/utf8"
)

// decodeFast decodes b into r when b is a record as Marshal writes it: a
// definite-length map of known integer keys in increasing order, with
// definite-length values of the fields' types. It is Unmarshal's path for
// every stored message, so it skips the reflection of the general
// decoder, which costs several times more. It reports false, leaving r in
// any state, for anything else (another shape, a value the general
// decoder would refuse or convert), which the general decoder then
// decides; for what it accepts it gives what the general decoder would.
func decodeFast(b []byte, r *record) bool {
	d := fastDecoder{b: b}
	n, ok := d.head(5)
	if !ok {
		return false
	}
	last := -1
	for range n {
		k, ok := d.head(0)
		if !ok || k > 20 || int(k) <= last {
			return false
		}
		last = int(k)
		switch k {
		case 0:
			var v uint64
			v, ok = d.head(0)
			ok = ok && v <= math.MaxInt
			r.V = int(v)
		case 1:
			var v []byte
			v, ok = d.bytes(2)
			ok = ok && len(v) > 0 // an empty one is the general decoder's
			r.Body = append([]byte(nil), v...)
		case 2:
			r.Props, ok = d.props()
		case 3:
			var v uint64
			v, ok = d.head(0)
			ok = ok && v <= math.MaxUint8
			r.Kind = Kind(v)
		case 4:
			r.Seq, ok = d.head(0)
		case 5:
			r.MID, ok = d.text()
		case 6:
			r.CID, ok = d.text()
		case 7:
			r.UID, ok = d.text()
		case 8:
			r.To, ok = d.text()
		case 9:
			r.CT, ok = d.text()
		case 10:
			r.CE, ok = d.text()
		case 11:
			r.CTime, ok = d.int64()
		case 12:
			r.Exp, ok = d.int64()
		case 13:
			r.ETime, ok = d.int64()
		case 14:
			r.CDID, ok = d.text()
		case 15:
			r.CMID, ok = d.text()
		case 16:
			r.Out, ok = d.text()
		case 17:
			r.In, ok = d.text()
		case 18:
			r.Schema, ok = d.text()
		case 19:
			r.IfID, ok = d.text()
		case 20:
			r.Sub, ok = d.text()
		}
		if !ok {
			return false
		}
	}
	return d.i == len(d.b)
}

// fastDecoder reads CBOR items from b at i.
type fastDecoder struct {
	b []byte
	i int
}

// head reads the head of an item of major type major with a definite
// argument and returns the argument.
func (d *fastDecoder) head(major byte) (uint64, bool) {
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

// bytes reads a definite-length byte (major 2) or text (major 3) string
// and returns its bytes, which alias b.
func (d *fastDecoder) bytes(major byte) ([]byte, bool) {
	n, ok := d.head(major)
	if !ok || n > uint64(len(d.b)-d.i) {
		return nil, false
	}
	v := d.b[d.i : d.i+int(n)]
	d.i += int(n)
	return v, true
}

// text reads a text string; one that is not UTF-8 is the general
// decoder's to refuse.
func (d *fastDecoder) text() (string, bool) {
	v, ok := d.bytes(3)
	if !ok || !utf8.Valid(v) {
		return "", false
	}
	return string(v), true
}

// int64 reads a non-negative integer that fits an int64.
func (d *fastDecoder) int64() (int64, bool) {
	v, ok := d.head(0)
	return int64(v), ok && v <= math.MaxInt64
}

// props reads a map of text strings without repeated keys.
func (d *fastDecoder) props() (map[string]string, bool) {
	n, ok := d.head(5)
	// Each pair takes at least two bytes: a longer count is damage.
	if !ok || n > uint64(len(d.b)-d.i)/2 || n > MaxSize {
		return nil, false
	}
	m := make(map[string]string, n)
	for range n {
		k, ok := d.text()
		if !ok {
			return nil, false
		}
		v, ok := d.text()
		if !ok {
			return nil, false
		}
		m[k] = v
	}
	return m, len(m) == int(n)
}
