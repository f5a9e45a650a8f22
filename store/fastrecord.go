package store

import (
	"math"

	"github.com/tinyedge/tinyedge/store/cborread"
	"github.com/tinyedge/tinyedge/store/cborwrite"
)

// decodeMessageFast decodes data into r when it is a message record as
// encodeRecord writes it: a definite-length map of the known keys, each
// once, with definite-length values of the fields' types. Read decodes
// one per message, and this skips the reflection of the general decoder.
// It reports false, leaving r in any state, for anything else, which the
// general decoder then decides; for what it accepts it gives what the
// general decoder would (FuzzDecodeRecord checks).
func decodeMessageFast(data []byte, r *messageRecord) bool {
	d := cborReader{cborread.Reader{B: data}}
	n, ok := d.Head(5)
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
			r.V, ok = d.Head(0)
		case 't':
			r.Enqueued, ok = d.Int64()
		case 'c':
			r.Trusted, ok = d.Bool()
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
	return d.Done()
}

// cborReader reads the records' items: cborread's, and their one-letter
// keys.
type cborReader struct{ cborread.Reader }

// key reads a one-letter text key, the only kind the records have, and
// returns its letter.
func (d *cborReader) key() (byte, bool) {
	if len(d.B)-d.I < 2 || d.B[d.I] != 0x61 || d.B[d.I+1] < 'a' || d.B[d.I+1] > 'z' {
		return 0, false
	}
	d.I += 2
	return d.B[d.I-1], true
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

// bytes reads a non-empty byte string and copies it: b is bbolt's.
func (d *cborReader) bytes() ([]byte, bool) {
	v, ok := d.Raw(2)
	if !ok || len(v) == 0 {
		return nil, false
	}
	return append([]byte(nil), v...), true
}

// targets reads the targets array.
func (d *cborReader) targets() ([]targetRecord, bool) {
	n, ok := d.Head(4)
	// Each target takes at least one byte; the general decoder refuses
	// more than 4096 (MaxArrayElements).
	if !ok || n == 0 || n > uint64(len(d.B)-d.I) || n > 4096 {
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
	n, ok := d.Head(5)
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
			t.Endpoint, ok = d.Text()
		case 'p':
			var v uint64
			v, ok = d.Uint64(math.MaxUint32)
			t.Priority = uint32(v)
		case 'l':
			t.TTL, ok = d.Int64()
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

// encodeMessage is encodeRecord for a message record, written field by
// field into one buffer of the exact size: the bytes fxamacker/cbor
// writes for it in the core deterministic mode (TestEncodeMessage and
// FuzzEncodeMessage hold them equal) for a record with targets, which
// every append has (fxamacker writes nil targets as null). Every append
// encodes one. The keys are one-letter text strings, so their order is
// the letters': c, e, h, p, t, v; a target's are l, n, p.
func encodeMessage(r *messageRecord) []byte {
	pairs, size := 3, 3*2 // e, t and v
	if r.Trusted {
		pairs++
		size += 2 + 1
	}
	if len(r.Props) > 0 {
		pairs++
		size += 2 + cborwrite.StringLen(len(r.Props))
	}
	if len(r.Payload) > 0 {
		pairs++
		size += 2 + cborwrite.StringLen(len(r.Payload))
	}
	size += cborwrite.IntLen(r.Enqueued) + cborwrite.HeadLen(r.V) + cborwrite.HeadLen(uint64(len(r.Targets)))
	for _, t := range r.Targets {
		size += 1 + 2 + cborwrite.IntLen(t.TTL) + 2 + cborwrite.StringLen(len(t.Endpoint))
		if t.Priority != 0 {
			size += 2 + cborwrite.HeadLen(uint64(t.Priority))
		}
	}
	size += cborwrite.HeadLen(uint64(pairs))

	b := make([]byte, 0, size)
	b = cborwrite.AppendHead(b, cborwrite.Map, uint64(pairs))
	if r.Trusted {
		b = cborwrite.AppendBool(cborwrite.AppendText(b, "c"), true)
	}
	b = cborwrite.AppendHead(cborwrite.AppendText(b, "e"), cborwrite.Array, uint64(len(r.Targets)))
	for _, t := range r.Targets {
		n := uint64(2)
		if t.Priority != 0 {
			n = 3
		}
		b = cborwrite.AppendHead(b, cborwrite.Map, n)
		b = cborwrite.AppendInt(cborwrite.AppendText(b, "l"), t.TTL)
		b = cborwrite.AppendText(cborwrite.AppendText(b, "n"), t.Endpoint)
		if t.Priority != 0 {
			b = cborwrite.AppendHead(cborwrite.AppendText(b, "p"), cborwrite.Uint, uint64(t.Priority))
		}
	}
	if len(r.Props) > 0 {
		b = cborwrite.AppendBytes(cborwrite.AppendText(b, "h"), r.Props)
	}
	if len(r.Payload) > 0 {
		b = cborwrite.AppendBytes(cborwrite.AppendText(b, "p"), r.Payload)
	}
	b = cborwrite.AppendInt(cborwrite.AppendText(b, "t"), r.Enqueued)
	return cborwrite.AppendHead(cborwrite.AppendText(b, "v"), cborwrite.Uint, r.V)
}
