package route

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The built-in functions of edgeHub's route language
// (Microsoft.Azure.Devices.Routing.Core/query/builtins). Argument types are
// checked when the route is parsed, as edgeHub does; at run time an
// argument of the wrong kind (a $body value, or an undefined one) makes
// the result undefined.

type builtinID uint8

const (
	fAbs builtinID = iota
	fExp
	fPower
	fSquare
	fCeiling
	fFloor
	fSign
	fSqrt
	fAsNumber
	fIsBool
	fIsDefined
	fIsNull
	fIsNumber
	fIsString
	fConcat
	fLength
	fLower
	fUpper
	fSubstring
	fIndexOf
	fStartsWith
	fEndsWith
	fContains
	fTwinChangeIncludes
)

type argSpec struct {
	set  typeSet
	desc string
}

var (
	aNum   = argSpec{numType, "number"}
	aStr   = argSpec{strType, "string"}
	aAny   = argSpec{anyType, "any value"}
	aAsNum = argSpec{asNumType, "string or number"}
)

type builtin struct {
	id       builtinID
	name     string
	min, max int       // max < 0: any number of arguments
	args     []argSpec // the last one repeats
	result   stype
}

func (b *builtin) arity() string {
	switch {
	case b.max < 0:
		return strconv.Itoa(b.min) + " or more arguments"
	case b.min == b.max && b.min == 1:
		return "1 argument"
	case b.min == b.max:
		return strconv.Itoa(b.min) + " arguments"
	}
	return strconv.Itoa(b.min) + " or " + strconv.Itoa(b.max) + " arguments"
}

var builtins = func() map[string]*builtin {
	m := map[string]*builtin{}
	add := func(id builtinID, name string, min, max int, result stype, args ...argSpec) {
		m[name] = &builtin{id: id, name: name, min: min, max: max, args: args, result: result}
	}
	add(fAbs, "abs", 1, 1, sNum, aNum)
	add(fExp, "exp", 1, 1, sNum, aNum)
	add(fPower, "power", 2, 2, sNum, aNum)
	add(fSquare, "square", 1, 1, sNum, aNum)
	add(fCeiling, "ceiling", 1, 1, sNum, aNum)
	add(fFloor, "floor", 1, 1, sNum, aNum)
	add(fSign, "sign", 1, 1, sNum, aNum)
	add(fSqrt, "sqrt", 1, 1, sNum, aNum)
	add(fAsNumber, "as_number", 1, 1, sNum, aAsNum)
	add(fIsBool, "is_bool", 1, 1, sBool, aAny)
	add(fIsDefined, "is_defined", 1, 1, sBool, aAny)
	add(fIsNull, "is_null", 1, 1, sBool, aAny)
	add(fIsNumber, "is_number", 1, 1, sBool, aAny)
	add(fIsString, "is_string", 1, 1, sBool, aAny)
	add(fConcat, "concat", 2, -1, sStr, aStr)
	add(fLength, "length", 1, 1, sNum, aStr)
	add(fLower, "lower", 1, 1, sStr, aStr)
	add(fUpper, "upper", 1, 1, sStr, aStr)
	add(fSubstring, "substring", 2, 3, sStr, aStr, aNum)
	add(fIndexOf, "index_of", 2, 2, sNum, aStr)
	add(fStartsWith, "starts_with", 2, 2, sBool, aStr)
	add(fEndsWith, "ends_with", 2, 2, sBool, aStr)
	add(fContains, "contains", 2, 2, sBool, aStr)
	add(fTwinChangeIncludes, "twin_change_includes", 1, 1, sBool, aAny)
	return m
}()

func call(n *node, e *Env) Value {
	switch n.fn.id {
	case fAbs, fExp, fSquare, fCeiling, fFloor, fSign, fSqrt:
		v := eval(n.args[0], e)
		if v.kind != Number {
			return Value{}
		}
		x := v.num
		switch n.fn.id {
		case fAbs:
			x = math.Abs(x)
		case fExp:
			x = math.Exp(x)
		case fSquare:
			x = math.Pow(x, 2)
		case fCeiling:
			x = math.Ceil(x)
		case fFloor:
			x = math.Floor(x)
		case fSign:
			switch {
			case x > 0:
				x = 1
			case x < 0:
				x = -1
			default:
				x = 0
			}
		case fSqrt:
			x = math.Sqrt(x)
		}
		return numberValue(x)
	case fPower:
		a, b := eval(n.args[0], e), eval(n.args[1], e)
		if a.kind != Number || b.kind != Number {
			return Value{}
		}
		return numberValue(math.Pow(a.num, b.num))
	case fAsNumber:
		v := eval(n.args[0], e)
		switch v.kind {
		case Number:
			return v
		case String:
			if f, ok := parseNumber(v.str); ok {
				return numberValue(f)
			}
		}
		return Value{}
	case fIsBool:
		// edgeHub: a bool or $body argument is tested at run time (an
		// undefined one gives undefined); any other type is false.
		if t := n.args[0].typ; t != sBool && t != sDyn {
			return boolValue(false)
		}
		v := eval(n.args[0], e)
		if v.kind == Undefined {
			return Value{}
		}
		return boolValue(v.kind == Bool)
	case fIsDefined:
		return boolValue(eval(n.args[0], e).kind != Undefined)
	case fIsNull:
		switch n.args[0].typ {
		case sNull:
			return boolValue(true)
		case sDyn:
			v := eval(n.args[0], e)
			if v.kind == Undefined {
				return Value{}
			}
			return boolValue(v.kind == Null)
		}
		return boolValue(false)
	case fIsNumber:
		if t := n.args[0].typ; t != sNum && t != sDyn {
			return boolValue(false)
		}
		v := eval(n.args[0], e)
		return boolValue(v.kind == Number && !math.IsInf(v.num, 0))
	case fIsString:
		if t := n.args[0].typ; t != sStr && t != sDyn {
			return boolValue(false)
		}
		return boolValue(eval(n.args[0], e).kind == String)
	case fConcat:
		var b strings.Builder
		for _, a := range n.args {
			v := eval(a, e)
			if v.kind != String {
				return Value{}
			}
			b.WriteString(v.str)
		}
		return stringValue(b.String())
	case fLength:
		v := eval(n.args[0], e)
		if v.kind != String {
			return Value{}
		}
		return numberValue(float64(utf16Len(v.str)))
	case fLower, fUpper:
		v := eval(n.args[0], e)
		if v.kind != String {
			return Value{}
		}
		if n.fn.id == fLower {
			return stringValue(strings.ToLower(v.str))
		}
		return stringValue(strings.ToUpper(v.str))
	case fSubstring:
		return substring(n, e)
	case fIndexOf, fStartsWith, fEndsWith, fContains:
		a, b := eval(n.args[0], e), eval(n.args[1], e)
		if a.kind != String || b.kind != String {
			return Value{}
		}
		switch n.fn.id {
		case fIndexOf:
			i := strings.Index(a.str, b.str)
			if i > 0 {
				i = utf16Len(a.str[:i])
			}
			return numberValue(float64(i))
		case fStartsWith:
			return boolValue(strings.HasPrefix(a.str, b.str))
		case fEndsWith:
			return boolValue(strings.HasSuffix(a.str, b.str))
		}
		return boolValue(strings.Contains(a.str, b.str))
	case fTwinChangeIncludes:
		doc, ok := e.body()
		if !ok {
			return Value{}
		}
		_, found := lookup(doc, n.path)
		return boolValue(found)
	}
	return Value{}
}

// substring follows .NET's String.Substring with edgeHub's range checks;
// indexes count UTF-16 code units and are truncated toward zero.
func substring(n *node, e *Env) Value {
	s, start := eval(n.args[0], e), eval(n.args[1], e)
	if s.kind != String || start.kind != Number {
		return Value{}
	}
	total := float64(utf16Len(s.str))
	if len(n.args) == 2 {
		if start.num < 0 || start.num > total {
			return Value{}
		}
		return stringValue(utf16Slice(s.str, int(start.num), int(total)))
	}
	length := eval(n.args[2], e)
	if length.kind != Number {
		return Value{}
	}
	if start.num < 0 || start.num >= total || length.num < 0 || length.num > total-start.num {
		return Value{}
	}
	from := int(start.num)
	return stringValue(utf16Slice(s.str, from, from+int(length.num)))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// utf16Len is the length of s in UTF-16 code units, as .NET counts it.
func utf16Len(s string) int {
	if isASCII(s) {
		return len(s)
	}
	n := 0
	for _, r := range s {
		n++
		if r >= 0x10000 {
			n++
		}
	}
	return n
}

// utf16Slice returns the code units [from, to) of s.
func utf16Slice(s string, from, to int) string {
	if isASCII(s) {
		return s[from:to]
	}
	u := utf16.Encode([]rune(s))
	return string(utf16.Decode(u[from:to]))
}

// parseNumber parses s as .NET's double.TryParse with NumberStyles.Any and
// the invariant culture does (edgeHub's as_number): surrounding white
// space, a leading or trailing sign or parentheses, thousands separators,
// a decimal point, an exponent, and Infinity/NaN (NaN is undefined).
func parseNumber(s string) (float64, bool) {
	s = strings.Trim(s, " \t\n\v\f\r")
	neg := false
	if len(s) >= 2 && s[0] == '(' && s[len(s)-1] == ')' {
		neg, s = true, strings.Trim(s[1:len(s)-1], " \t\n\v\f\r")
	}
	switch {
	case strings.HasPrefix(s, "-"):
		neg, s = !neg, s[1:]
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	case strings.HasSuffix(s, "-"):
		neg, s = !neg, s[:len(s)-1]
	case strings.HasSuffix(s, "+"):
		s = s[:len(s)-1]
	}
	var f float64
	switch {
	case strings.EqualFold(s, "Infinity"):
		f = math.Inf(1)
	case strings.EqualFold(s, "NaN"):
		return 0, false
	default:
		// Check the form here: strconv.ParseFloat also accepts forms .NET
		// does not (hex, "inf", underscores).
		i, digits, commas := 0, 0, false
		for i < len(s) && (isDigitByte(s[i]) || (s[i] == ',' && digits > 0)) {
			if s[i] == ',' {
				commas = true
			} else {
				digits++
			}
			i++
		}
		if i < len(s) && s[i] == '.' {
			i++
			for i < len(s) && isDigitByte(s[i]) {
				digits++
				i++
			}
		}
		if digits == 0 {
			return 0, false
		}
		if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
			i++
			if i < len(s) && (s[i] == '+' || s[i] == '-') {
				i++
			}
			expDigits := 0
			for i < len(s) && isDigitByte(s[i]) {
				expDigits++
				i++
			}
			if expDigits == 0 {
				return 0, false
			}
		}
		if i != len(s) {
			return 0, false
		}
		if commas {
			s = strings.ReplaceAll(s, ",", "")
		}
		var err error
		f, err = strconv.ParseFloat(s, 64)
		if err != nil && !isRangeErr(err) {
			return 0, false
		}
	}
	if neg {
		f = -f
	}
	return f, true
}

func isDigitByte(c byte) bool { return c >= '0' && c <= '9' }
