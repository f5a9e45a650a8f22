package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// kind is the JSON type of a node.
type kind uint8

const (
	kNull kind = iota
	kBool
	kNumber
	kString
	kArray
	kObject
)

func (k kind) String() string {
	switch k {
	case kNull:
		return "null"
	case kBool:
		return "a boolean"
	case kNumber:
		return "a number"
	case kString:
		return "a string"
	case kArray:
		return "an array"
	default:
		return "an object"
	}
}

// node is one decoded JSON value. Objects keep their members in document
// order so problems are reported in the order a reader meets them; a key
// written twice keeps its last value, as IoT Hub and IoT Edge do.
type node struct {
	kind    kind
	b       bool
	num     json.Number
	str     string
	elems   []*node
	keys    []string // object members in order of first appearance
	members map[string]*node
}

func (n *node) get(key string) *node {
	if n == nil || n.kind != kObject {
		return nil
	}
	return n.members[key]
}

// decodeTree decodes data, which must be valid JSON (checked by the
// caller), into a tree; dup is called with the path of every key written
// twice in one object.
func decodeTree(data []byte, dup func(path string)) (*node, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	n, err := decodeValue(d, "$", dup)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return n, nil
}

func decodeValue(d *json.Decoder, path string, dup func(string)) (*node, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case nil:
		return &node{kind: kNull}, nil
	case bool:
		return &node{kind: kBool, b: t}, nil
	case json.Number:
		return &node{kind: kNumber, num: t}, nil
	case string:
		return &node{kind: kString, str: t}, nil
	case json.Delim:
		if t == '[' {
			n := &node{kind: kArray}
			for d.More() {
				e, err := decodeValue(d, index(path, len(n.elems)), dup)
				if err != nil {
					return nil, err
				}
				n.elems = append(n.elems, e)
			}
			_, err := d.Token() // ']'
			return n, err
		}
		n := &node{kind: kObject, members: map[string]*node{}}
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return nil, err
			}
			key, _ := kt.(string)
			p := member(path, key)
			v, err := decodeValue(d, p, dup)
			if err != nil {
				return nil, err
			}
			if _, ok := n.members[key]; ok {
				dup(p)
			} else {
				n.keys = append(n.keys, key)
			}
			n.members[key] = v
		}
		_, err := d.Token() // '}'
		return n, err
	}
	return nil, errors.New("unexpected JSON token")
}

// value converts n to the types encoding/json produces, with numbers as
// float64 as twin.ParsePatch gives them (a number too large for float64
// stays a string, as there).
func (n *node) value() any {
	switch n.kind {
	case kBool:
		return n.b
	case kNumber:
		f, err := n.num.Float64()
		if err != nil {
			return n.num.String()
		}
		return f
	case kString:
		return n.str
	case kArray:
		a := make([]any, len(n.elems))
		for i, e := range n.elems {
			a[i] = e.value()
		}
		return a
	case kObject:
		m := make(map[string]any, len(n.keys))
		for _, k := range n.keys {
			m[k] = n.members[k].value()
		}
		return m
	}
	return nil
}

// integer returns n as an int64 when it is a JSON number with an integral
// value (7200 and 7200.0 alike, as IoT Edge's Json.NET reads them).
func (n *node) integer() (int64, bool) {
	if n == nil || n.kind != kNumber {
		return 0, false
	}
	if i, err := strconv.ParseInt(n.num.String(), 10, 64); err == nil {
		return i, true
	}
	f, err := strconv.ParseFloat(n.num.String(), 64)
	if err != nil || f < -(1<<63) || f >= 1<<63 || f != math.Trunc(f) {
		return 0, false
	}
	return int64(f), true
}

// syntaxProblem turns a JSON decoding error into a Problem with the 1-based
// line and column (in characters) where the input went wrong.
func syntaxProblem(data []byte, err error) Problem {
	var se *json.SyntaxError
	off := int64(len(data))
	msg := err.Error()
	if errors.As(err, &se) {
		// Offset counts the bytes read, the offending one included,
		// except at the end of the input.
		off = se.Offset
		if off > 0 && off <= int64(len(data)) && !strings.HasPrefix(msg, "unexpected end") {
			off--
		}
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	switch {
	case strings.HasPrefix(msg, "unexpected end"):
		msg += "; a closing brace, bracket or quote is missing"
	case strings.HasPrefix(msg, "invalid character '/'"):
		msg += "; JSON has no comments, remove them"
	case strings.HasPrefix(msg, "invalid character '}'") || strings.HasPrefix(msg, "invalid character ']'"):
		if prev := bytes.TrimRight(data[:off], " \t\r\n"); len(prev) > 0 && prev[len(prev)-1] == ',' {
			msg += "; remove the comma before it"
		}
	}
	line, col := position(data[:off])
	return Problem{Line: line, Column: col, Msg: msg}
}

// position returns the 1-based line and column just after prefix.
func position(prefix []byte) (line, col int) {
	line = 1 + bytes.Count(prefix, []byte{'\n'})
	start := bytes.LastIndexByte(prefix, '\n') + 1
	return line, utf8.RuneCount(prefix[start:]) + 1
}

// member returns the JSON path of key inside the object at path: dotted
// for identifier-like keys, bracket-quoted otherwise, e.g.
// $.modulesContent.$edgeAgent['properties.desired'].
// Member returns the JSON path of member key of the value at path, in the
// style Problems use: dotted for plain names, ['…'] for the rest.
func Member(path, key string) string { return member(path, key) }

func member(path, key string) string {
	if isIdent(key) {
		return path + "." + key
	}
	var b strings.Builder
	b.WriteString(path)
	b.WriteString("['")
	for _, r := range key {
		switch r {
		case '\'', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteString("']")
	return b.String()
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
