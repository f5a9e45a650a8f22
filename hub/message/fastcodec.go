package message

import (
	"math"
	"slices"
	"strings"

	"github.com/tinyedge/tinyedge/store/cborread"
	"github.com/tinyedge/tinyedge/store/cborwrite"
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
		if !ok || k > 23 || int(k) <= last {
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
			ok = ok && len(v) > 0      // an empty one is the general decoder's
			r.Body = v[:len(v):len(v)] // an append to it copies
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
		case 21:
			r.CTimeX, ok = d.Text()
		case 22:
			r.ExpX, ok = d.Text()
		case 23:
			r.ETimeX, ok = d.Text()
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

// Marshal encodes m for the store: the record's items appended field by
// field into one buffer of the exact size, the bytes fxamacker/cbor
// writes for the record in its core deterministic mode
// (FuzzMarshalMatchesGeneral holds them equal). Keys are integers 0–23,
// one byte each, in increasing order; zero values are left out, as the
// record's omitempty says.
func Marshal(m *Message) []byte {
	s := &m.System
	texts := [...]struct {
		key byte
		v   string
	}{
		{5, s.MessageID}, {6, s.CorrelationID}, {7, s.UserID}, {8, s.To}, {9, s.ContentType}, {10, s.ContentEncoding},
		{14, s.ConnectionDeviceID}, {15, s.ConnectionModuleID}, {16, s.OutputName}, {17, s.InputName},
		{18, s.MessageSchema}, {19, s.InterfaceID}, {20, s.ComponentName},
	}
	ctime, ctimeX := storedTime(s.CreationTime)
	exp, expX := storedTime(s.ExpiryTime)
	etime, etimeX := storedTime(s.EnqueuedTime)
	times := [...]struct {
		key byte
		v   int64
	}{{11, ctime}, {12, exp}, {13, etime}}
	// The times nanoseconds cannot hold, keys 21–23, last.
	wide := [...]struct {
		key byte
		v   string
	}{{21, ctimeX}, {22, expX}, {23, etimeX}}

	// Count and measure first: one allocation.
	pairs, size := 1, 2 // V
	if len(m.Body) > 0 {
		pairs++
		size += 1 + cborwrite.StringLen(len(m.Body))
	}
	var keys []string
	if len(m.Properties) > 0 {
		pairs++
		keys = make([]string, 0, len(m.Properties))
		size += 1 + cborwrite.HeadLen(uint64(len(m.Properties)))
		for k, v := range m.Properties {
			keys = append(keys, k)
			size += cborwrite.StringLen(len(k)) + cborwrite.StringLen(len(v))
		}
		// Deterministic CBOR orders map keys by their encoding: shorter
		// first, then bytewise.
		slices.SortFunc(keys, func(a, b string) int {
			if len(a) != len(b) {
				return len(a) - len(b)
			}
			return strings.Compare(a, b)
		})
	}
	if m.Kind != 0 {
		pairs++
		size += 1 + cborwrite.HeadLen(uint64(m.Kind))
	}
	if m.Seq != 0 {
		pairs++
		size += 1 + cborwrite.HeadLen(m.Seq)
	}
	for _, f := range texts {
		if f.v != "" {
			pairs++
			size += 1 + cborwrite.StringLen(len(f.v))
		}
	}
	hasWide := ctimeX != "" || expX != "" || etimeX != "" // rare
	if hasWide {
		for _, f := range wide {
			if f.v != "" {
				pairs++
				size += 1 + cborwrite.StringLen(len(f.v))
			}
		}
	}
	for _, f := range times {
		if f.v != 0 {
			pairs++
			size += 1 + cborwrite.IntLen(f.v)
		}
	}
	size += cborwrite.HeadLen(uint64(pairs))

	b := make([]byte, 0, size)
	b = cborwrite.AppendHead(b, cborwrite.Map, uint64(pairs))
	b = append(b, 0, codecVersion)
	if len(m.Body) > 0 {
		b = cborwrite.AppendBytes(append(b, 1), m.Body)
	}
	if len(keys) > 0 {
		b = cborwrite.AppendHead(append(b, 2), cborwrite.Map, uint64(len(keys)))
		for _, k := range keys {
			b = cborwrite.AppendText(cborwrite.AppendText(b, k), m.Properties[k])
		}
	}
	if m.Kind != 0 {
		b = cborwrite.AppendHead(append(b, 3), cborwrite.Uint, uint64(m.Kind))
	}
	if m.Seq != 0 {
		b = cborwrite.AppendHead(append(b, 4), cborwrite.Uint, m.Seq)
	}
	// Keys 5–10, then the times 11–13, then 14–20.
	for _, f := range texts[:6] {
		if f.v != "" {
			b = cborwrite.AppendText(append(b, f.key), f.v)
		}
	}
	for _, f := range times {
		if f.v != 0 {
			b = cborwrite.AppendInt(append(b, f.key), f.v)
		}
	}
	for _, f := range texts[6:] {
		if f.v != "" {
			b = cborwrite.AppendText(append(b, f.key), f.v)
		}
	}
	if hasWide {
		for _, f := range wide {
			if f.v != "" {
				b = cborwrite.AppendText(append(b, f.key), f.v)
			}
		}
	}
	return b
}
