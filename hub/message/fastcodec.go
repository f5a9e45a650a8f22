package message

import (
	"math"

	"github.com/tinyedge/tinyedge/store/cborread"
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
	d := fastDecoder{cborread.Reader{B: b}}
	n, ok := d.Head(5)
	if !ok {
		return false
	}
	last := -1
	for range n {
		k, ok := d.Head(0)
		if !ok || k > 20 || int(k) <= last {
			return false
		}
		last = int(k)
		switch k {
		case 0:
			var v uint64
			v, ok = d.Head(0)
			ok = ok && v <= math.MaxInt
			r.V = int(v)
		case 1:
			var v []byte
			v, ok = d.Raw(2)
			ok = ok && len(v) > 0 // an empty one is the general decoder's
			r.Body = append([]byte(nil), v...)
		case 2:
			r.Props, ok = d.props()
		case 3:
			var v uint64
			v, ok = d.Head(0)
			ok = ok && v <= math.MaxUint8
			r.Kind = Kind(v)
		case 4:
			r.Seq, ok = d.Head(0)
		case 5:
			r.MID, ok = d.Text()
		case 6:
			r.CID, ok = d.Text()
		case 7:
			r.UID, ok = d.Text()
		case 8:
			r.To, ok = d.Text()
		case 9:
			r.CT, ok = d.Text()
		case 10:
			r.CE, ok = d.Text()
		case 11:
			r.CTime, ok = d.int()
		case 12:
			r.Exp, ok = d.int()
		case 13:
			r.ETime, ok = d.int()
		case 14:
			r.CDID, ok = d.Text()
		case 15:
			r.CMID, ok = d.Text()
		case 16:
			r.Out, ok = d.Text()
		case 17:
			r.In, ok = d.Text()
		case 18:
			r.Schema, ok = d.Text()
		case 19:
			r.IfID, ok = d.Text()
		case 20:
			r.Sub, ok = d.Text()
		}
		if !ok {
			return false
		}
	}
	return d.Done()
}

// fastDecoder reads the record's items.
type fastDecoder struct{ cborread.Reader }

// int reads a non-negative integer that fits an int64; a negative one is
// the general decoder's.
func (d *fastDecoder) int() (int64, bool) {
	v, ok := d.Uint64(math.MaxInt64)
	return int64(v), ok
}

// props reads a map of text strings without repeated keys.
func (d *fastDecoder) props() (map[string]string, bool) {
	n, ok := d.Head(5)
	// Each pair takes at least two bytes: a longer count is damage.
	if !ok || n > uint64(len(d.B)-d.I)/2 || n > MaxSize {
		return nil, false
	}
	m := make(map[string]string, n)
	for range n {
		k, ok := d.Text()
		if !ok {
			return nil, false
		}
		v, ok := d.Text()
		if !ok {
			return nil, false
		}
		m[k] = v
	}
	return m, len(m) == int(n)
}
