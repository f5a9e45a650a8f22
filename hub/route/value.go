package route

import (
	"math"
	"strconv"
	"strings"
)

// ValueKind is the type of a Value at run time.
type ValueKind uint8

const (
	// Undefined is the value of a missing property, of a $body query on a
	// body that cannot be queried, and of any operation on undefined
	// operands or operands of the wrong type. It is the zero ValueKind.
	Undefined ValueKind = iota
	// Null is the literal null, a JSON null, or a $body path that is not
	// in the body.
	Null
	// Bool is true or false.
	Bool
	// Number is a float64; NaN is never a Number (it is Undefined).
	Number
	// String is a string.
	String
)

// String returns the kind's name in lower case.
func (k ValueKind) String() string {
	switch k {
	case Null:
		return "null"
	case Bool:
		return "bool"
	case Number:
		return "number"
	case String:
		return "string"
	}
	return "undefined"
}

// Value is the value of a condition or of one of its parts. The zero
// Value is undefined.
type Value struct {
	str  string
	num  float64
	kind ValueKind
	b    bool
}

func boolValue(b bool) Value     { return Value{kind: Bool, b: b} }
func stringValue(s string) Value { return Value{kind: String, str: s} }

// numberValue makes NaN undefined, as edgeHub does (it represents an
// undefined number as NaN).
func numberValue(f float64) Value {
	if f != f {
		return Value{}
	}
	return Value{kind: Number, num: f}
}

// Kind returns the type of v.
func (v Value) Kind() ValueKind { return v.kind }

// IsTrue reports whether v is the Bool true: the only value that makes a
// route match.
func (v Value) IsTrue() bool { return v.kind == Bool && v.b }

// String formats v for explanations, as it would be written in a route:
// undefined, null, true, 3.5, 'abc'.
func (v Value) String() string {
	switch v.kind {
	case Null:
		return "null"
	case Bool:
		return strconv.FormatBool(v.b)
	case Number:
		switch {
		case math.IsInf(v.num, 1):
			return "Infinity"
		case math.IsInf(v.num, -1):
			return "-Infinity"
		}
		return strconv.FormatFloat(v.num, 'g', -1, 64)
	case String:
		var b strings.Builder
		b.WriteByte('\'')
		for _, r := range v.str {
			switch r {
			case '\'', '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			default:
				if r < 0x20 {
					b.WriteString(`\u00`)
					b.WriteByte("0123456789abcdef"[r>>4])
					b.WriteByte("0123456789abcdef"[r&15])
				} else {
					b.WriteRune(r)
				}
			}
		}
		b.WriteByte('\'')
		return b.String()
	}
	return "undefined"
}
