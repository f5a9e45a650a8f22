package route

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/tinyedge/tinyedge/hub/message"
)

// $body queries.
//
// edgeHub parses the body with Newtonsoft.Json once per message when a
// route first needs it. tinyedge checks it once per Env with json.Valid
// (no allocation: the scanner is pooled) and then answers each query by
// scanning the JSON text for the path, instead of decoding the document
// into maps with encoding/json: most routes read one or two fields of a
// small body, and a scan skips what they do not read without allocating
// for it. Numbers and strings without escapes are read in place; the
// body is never written once the hub has the message (see package
// message), so strings that point into it stay valid.

// pathSeg is one step of a $body path: a member name, then an optional
// array index (-1 for none).
type pathSeg struct {
	name  string
	index int
}

// parseBodyPath checks a path against edgeHub's JsonPath grammar
// (name[index] steps separated by dots) and splits it; the message is ""
// on success.
func parseBodyPath(p string) ([]pathSeg, string) {
	if p == "" {
		return nil, "the path is empty"
	}
	var segs []pathSeg
	for _, part := range strings.Split(p, ".") {
		seg := pathSeg{name: part, index: -1}
		if i := strings.IndexByte(part, '['); i >= 0 {
			digits := strings.TrimSuffix(part[i+1:], "]")
			if !strings.HasSuffix(part, "]") || digits == "" || strings.Trim(digits, "0123456789") != "" {
				return nil, "an array index is written name[0]"
			}
			idx, err := strconv.Atoi(digits)
			if err != nil {
				idx = math.MaxInt // too large to be in any body
			}
			seg.name, seg.index = part[:i], idx
		}
		switch {
		case seg.name == "":
			return nil, "every step needs a member name"
		case strings.ContainsAny(seg.name, "[]"):
			return nil, "an array index is written name[0]"
		}
		segs = append(segs, seg)
	}
	return segs, ""
}

// body returns the body as UTF-8 JSON text when it can be queried.
func (e *Env) body() ([]byte, bool) {
	if e.state&stBody == 0 {
		e.state |= stBody
		if doc, ok := queryableBody(e.m); ok {
			e.doc = doc
			e.state |= stBodyOK
		}
	}
	return e.doc, e.state&stBodyOK != 0
}

// queryableBody follows edgeHub: $contentType must be application/json
// and $contentEncoding utf-8, utf-16 or utf-32 (ignoring case, no
// parameters), and the body must be a JSON object.
func queryableBody(m *message.Message) ([]byte, bool) {
	if !strings.EqualFold(m.System.ContentType, "application/json") {
		return nil, false
	}
	var doc []byte
	switch enc := m.System.ContentEncoding; {
	case strings.EqualFold(enc, "utf-8"):
		doc = bytes.TrimPrefix(m.Body, []byte("\xEF\xBB\xBF"))
	case strings.EqualFold(enc, "utf-16"):
		doc = decodeUTF16(m.Body)
	case strings.EqualFold(enc, "utf-32"):
		doc = decodeUTF32(m.Body)
	default:
		return nil, false
	}
	if i := skipWS(doc, 0); i >= len(doc) || doc[i] != '{' || !json.Valid(doc) {
		return nil, false
	}
	return doc, true
}

// decodeUTF16 decodes little-endian UTF-16 (.NET's Encoding.Unicode), or
// big-endian after a big-endian byte order mark.
func decodeUTF16(b []byte) []byte {
	be := false
	if len(b) >= 2 && b[0] == 0xFF && b[1] == 0xFE {
		b = b[2:]
	} else if len(b) >= 2 && b[0] == 0xFE && b[1] == 0xFF {
		be, b = true, b[2:]
	}
	unit := func(i int) rune {
		if be {
			return rune(b[i])<<8 | rune(b[i+1])
		}
		return rune(b[i+1])<<8 | rune(b[i])
	}
	out := make([]byte, 0, len(b))
	for i := 0; i+1 < len(b); i += 2 {
		r := unit(i)
		if utf16.IsSurrogate(r) {
			if i+3 < len(b) {
				if d := utf16.DecodeRune(r, unit(i+2)); d != utf8.RuneError {
					out = utf8.AppendRune(out, d)
					i += 2
					continue
				}
			}
			r = utf8.RuneError
		}
		out = utf8.AppendRune(out, r)
	}
	if len(b)%2 != 0 {
		out = utf8.AppendRune(out, utf8.RuneError)
	}
	return out
}

// decodeUTF32 decodes little-endian UTF-32 (.NET's Encoding.UTF32), or
// big-endian after a big-endian byte order mark.
func decodeUTF32(b []byte) []byte {
	be := false
	if len(b) >= 4 && b[0] == 0xFF && b[1] == 0xFE && b[2] == 0 && b[3] == 0 {
		b = b[4:]
	} else if len(b) >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0xFE && b[3] == 0xFF {
		be, b = true, b[4:]
	}
	out := make([]byte, 0, len(b)/2)
	for i := 0; i+3 < len(b); i += 4 {
		var u uint32
		if be {
			u = uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
		} else {
			u = uint32(b[i+3])<<24 | uint32(b[i+2])<<16 | uint32(b[i+1])<<8 | uint32(b[i])
		}
		r := utf8.RuneError
		if u <= utf8.MaxRune && !utf16.IsSurrogate(rune(u)) {
			r = rune(u)
		}
		out = utf8.AppendRune(out, r)
	}
	if len(b)%4 != 0 {
		out = utf8.AppendRune(out, utf8.RuneError)
	}
	return out
}

// bodyValue answers a $body query. Like edgeHub (Newtonsoft's SelectTokens
// finding nothing), a path that is not in the body is null; an object or
// array is undefined.
func (e *Env) bodyValue(path []pathSeg) Value {
	doc, ok := e.body()
	if !ok {
		return Value{}
	}
	i, found := lookup(doc, path)
	if !found {
		return null
	}
	return jsonValue(doc, i)
}

// The functions below scan JSON text that json.Valid accepted.

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the value that starts at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// lookup returns where the value at path starts.
func lookup(doc []byte, path []pathSeg) (int, bool) {
	i := skipWS(doc, 0)
	for _, s := range path {
		if doc[i] != '{' {
			return 0, false
		}
		j, ok := member(doc, i, s.name)
		if !ok {
			return 0, false
		}
		i = j
		if s.index >= 0 {
			if doc[i] != '[' {
				return 0, false
			}
			if i, ok = element(doc, i, s.index); !ok {
				return 0, false
			}
		}
	}
	return i, true
}

// member finds the member name of the object at b[i]. Names compare
// exactly, as JSON and Newtonsoft do; of duplicate names the last wins,
// as in Newtonsoft's JObject.Parse.
func member(b []byte, i int, name string) (int, bool) {
	at, found := 0, false
	i = skipWS(b, i+1)
	if b[i] == '}' {
		return 0, false
	}
	for {
		end := skipString(b, i)
		match := keyEquals(b[i:end], name)
		i = skipWS(b, end) // at ':'
		i = skipWS(b, i+1) // at the value
		if match {
			at, found = i, true
		}
		i = skipWS(b, skipValue(b, i))
		if b[i] != ',' {
			return at, found
		}
		i = skipWS(b, i+1)
	}
}

// keyEquals compares the JSON string q (with its quotes) to name.
func keyEquals(q []byte, name string) bool {
	raw := q[1 : len(q)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == name // no allocation
	}
	var s string
	return json.Unmarshal(q, &s) == nil && s == name
}

// element finds element idx of the array at b[i].
func element(b []byte, i, idx int) (int, bool) {
	i = skipWS(b, i+1)
	if b[i] == ']' {
		return 0, false
	}
	for k := 0; k < idx; k++ {
		i = skipWS(b, skipValue(b, i))
		if b[i] != ',' {
			return 0, false
		}
		i = skipWS(b, i+1)
	}
	return i, true
}

func jsonValue(b []byte, i int) Value {
	switch b[i] {
	case '"':
		q := b[i:skipString(b, i)]
		raw := q[1 : len(q)-1]
		if bytes.IndexByte(raw, '\\') < 0 {
			return stringValue(inPlace(raw))
		}
		var s string
		if json.Unmarshal(q, &s) != nil {
			return Value{}
		}
		return stringValue(s)
	case 't':
		return boolValue(true)
	case 'f':
		return boolValue(false)
	case 'n':
		return null
	case '{', '[':
		return Value{}
	}
	f, err := strconv.ParseFloat(inPlace(b[i:skipValue(b, i)]), 64)
	if err != nil && !isRangeErr(err) {
		return Value{}
	}
	return numberValue(f)
}

// inPlace returns b as a string without copying. b is part of a message
// body (or of its UTF-8 decoding), which is never written after the hub
// accepts the message.
func inPlace(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
