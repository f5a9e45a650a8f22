package route

import (
	"math"
	"strings"
	"unicode/utf8"

	"github.com/tinyedge/tinyedge/hub/message"
)

// Env is the evaluation state of one message. Make one per message with
// NewEnv (or reuse one with Reset) and pass it to every route: it caches
// what routes learn about the message, so that the JSON body is checked at
// most once however many routes read $body, and only if one does.
type Env struct {
	m     *message.Message
	state uint8
	doc   []byte // the body as UTF-8 JSON text, when stBodyOK
}

const (
	stLowerKnown  uint8 = 1 << iota // stLowerKeys is known
	stLowerKeys                     // every property key is lower-case ASCII
	stDollarKnown                   // stDollar is known
	stDollar                        // some property key starts with $
	stBody                          // the body has been looked at
	stBodyOK                        // the body can be queried; doc holds it
)

// NewEnv returns the evaluation state for m. It does not allocate.
func NewEnv(m *message.Message) Env { return Env{m: m} }

// NewEnvKeys is NewEnv for a caller that has already summarized m's
// property names (message.Message.Measure), so evaluation need not walk
// the properties again. keys must describe m.Properties as they are.
func NewEnvKeys(m *message.Message, keys message.PropertyKeys) Env {
	return Env{m: m, state: keyState(keys)}
}

func keyState(keys message.PropertyKeys) uint8 {
	var st uint8
	if keys&message.KeysDollarKnown != 0 {
		st |= stDollarKnown
		if keys&message.KeysDollar != 0 {
			st |= stDollar
		}
	}
	if keys&message.KeysLowerKnown != 0 {
		st |= stLowerKnown
		if keys&message.KeysLower != 0 {
			st |= stLowerKeys
		}
	}
	return st
}

// Reset makes e the evaluation state of m, forgetting the previous message.
func (e *Env) Reset(m *message.Message) { *e = Env{m: m} }

// keys returns the state with both key summaries known, walking the
// properties if the caller did not provide them.
func (e *Env) keys() uint8 {
	if e.state&(stDollarKnown|stLowerKnown) != stDollarKnown|stLowerKnown {
		e.state |= keyState(e.m.Keys())
	}
	return e.state
}

// dollar reports whether some property name starts with $.
func (e *Env) dollar() bool {
	if e.state&stDollarKnown == 0 {
		return e.keys()&stDollar != 0
	}
	return e.state&stDollar != 0
}

// prop looks up an application property case-insensitively, as edgeHub
// does (its property dictionaries use OrdinalIgnoreCase).
func (e *Env) prop(name, lname string) (string, bool) {
	props := e.m.Properties
	if len(props) == 0 {
		return "", false
	}
	if v, ok := props[name]; ok {
		return v, true
	}
	if lname != "" && e.keys()&stLowerKeys != 0 {
		if lname == name {
			return "", false
		}
		v, ok := props[lname]
		return v, ok
	}
	for k, v := range props {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// dollarProp looks up the application property "$…" that edgeHub lets
// shadow a system property or $body query.
func (e *Env) dollarProp(n *node) (Value, bool) {
	if len(e.m.Properties) == 0 || !e.dollar() {
		return Value{}, false
	}
	if v, ok := e.prop(n.name, n.lname); ok {
		return stringValue(v), true
	}
	return Value{}, false
}

type sysField uint8

const (
	sysOther sysField = iota // read through message.SystemProperty
	sysMessageID
	sysCorrelationID
	sysUserID
	sysTo
	sysContentType
	sysContentEncoding
	sysConnectionDeviceID
	sysConnectionModuleID
	sysOutputName
	sysInputName
	sysMessageSchema
	sysInterfaceID
	sysComponentName
)

var sysFields = map[string]sysField{
	"messageid": sysMessageID, "correlationid": sysCorrelationID, "userid": sysUserID, "to": sysTo,
	"contenttype": sysContentType, "contentencoding": sysContentEncoding,
	"connectiondeviceid": sysConnectionDeviceID, "connectionmoduleid": sysConnectionModuleID,
	"outputname": sysOutputName, "inputname": sysInputName, "messageschema": sysMessageSchema,
	"interfaceid": sysInterfaceID, "componentname": sysComponentName,
}

func sysFieldOf(name string) sysField { return sysFields[strings.ToLower(name)] }

func (e *Env) sys(n *node) Value {
	s := &e.m.System
	var v string
	switch n.sys {
	case sysMessageID:
		v = s.MessageID
	case sysCorrelationID:
		v = s.CorrelationID
	case sysUserID:
		v = s.UserID
	case sysTo:
		v = s.To
	case sysContentType:
		v = s.ContentType
	case sysContentEncoding:
		v = s.ContentEncoding
	case sysConnectionDeviceID:
		v = s.ConnectionDeviceID
	case sysConnectionModuleID:
		v = s.ConnectionModuleID
	case sysOutputName:
		v = s.OutputName
	case sysInputName:
		v = s.InputName
	case sysMessageSchema:
		v = s.MessageSchema
	case sysInterfaceID:
		v = s.InterfaceID
	case sysComponentName:
		v = s.ComponentName
	default:
		v, _ = e.m.SystemProperty(n.sname) // times: formatted, allocates
	}
	if v == "" {
		return Value{}
	}
	return stringValue(v)
}

// MatchSource reports whether a message with the given source (as from
// message.Message.Source) is one this route reads.
func (r *Route) MatchSource(source string) bool {
	parts := [4]string{source}
	return matchParts(r.prefix, &parts, 1)
}

// matchMessage is MatchSource(m.Source()) without building the string.
func (r *Route) matchMessage(m *message.Message) bool {
	var parts [4]string
	n := 0
	switch {
	case m.Kind == message.TwinChange:
		parts[0], n = "/twinChangeNotifications", 1
	case m.System.ConnectionModuleID == "":
		parts[0], n = "/messages", 1
	case m.System.OutputName == "":
		parts[0], parts[1], n = "/messages/modules/", m.System.ConnectionModuleID, 2
	default:
		parts[0], parts[1], parts[2], parts[3], n = "/messages/modules/", m.System.ConnectionModuleID, "/outputs/", m.System.OutputName, 4
	}
	return matchParts(r.prefix, &parts, n)
}

// matchParts reports whether the concatenation of parts[:n] starts with
// prefix (lower-case) at a path segment boundary, ignoring ASCII case.
func matchParts(prefix string, parts *[4]string, n int) bool {
	i := 0
	for k := 0; k < n; k++ {
		p := parts[k]
		if i == len(prefix) {
			return p == "" || p[0] == '/'
		}
		c := min(len(p), len(prefix)-i)
		// Sources are usually written in the case messages carry.
		if p[:c] != prefix[i:i+c] && !foldEqualASCII(p[:c], prefix[i:i+c]) {
			return false
		}
		i += c
		if c < len(p) {
			return p[c] == '/'
		}
	}
	return i == len(prefix)
}

// foldEqualASCII reports whether s equals lower, which is lower-case,
// ignoring the case of ASCII letters in s.
func foldEqualASCII(s, lower string) bool {
	for j := 0; j < len(s); j++ {
		c := s[j]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[j] {
			return false
		}
	}
	return true
}

// HasCondition reports whether the route has a WHERE clause.
func (r *Route) HasCondition() bool { return r.cond != nil }

// ConditionText returns the WHERE clause as written, without the WHERE
// keyword, or "" when there is none.
func (r *Route) ConditionText() string {
	if r.cond == nil {
		return ""
	}
	return r.cond.text
}

// Match reports whether the route selects the message of e: its source
// matches and its condition, if any, is true.
func (r *Route) Match(e *Env) bool {
	if !r.matchMessage(e.m) {
		return false
	}
	if r.cond == nil {
		return true
	}
	return eval(r.cond.root, e).IsTrue()
}

// Eval returns the value of the route's condition for the message of e
// (the Bool true when the route has no condition). It does not look at
// the source.
func (r *Route) Eval(e *Env) Value {
	if r.cond == nil {
		return boolValue(true)
	}
	return eval(r.cond.root, e)
}

var null = Value{kind: Null}

func eval(n *node, e *Env) Value {
	switch n.op {
	case opLit:
		return n.lit
	case opProp:
		if v, ok := e.prop(n.name, n.lname); ok {
			return stringValue(v)
		}
		return Value{}
	case opSys:
		if v, ok := e.dollarProp(n); ok {
			return v
		}
		return e.sys(n)
	case opSysOnly:
		return e.sys(n)
	case opBody:
		if v, ok := e.dollarProp(n); ok {
			return v
		}
		return e.bodyValue(n.path)
	case opBodyOnly:
		return e.bodyValue(n.path)
	case opNeg:
		v := eval(n.l, e)
		if v.kind != Number {
			return Value{}
		}
		return numberValue(-v.num)
	case opNot:
		if n.l.typ == sNull {
			return boolValue(true) // edgeHub: NOT null is true
		}
		v := eval(n.l, e)
		if v.kind != Bool {
			return Value{}
		}
		return boolValue(!v.b)
	case opAdd, opSub, opMul, opDiv, opMod:
		a := eval(n.l, e)
		if a.kind != Number {
			return Value{}
		}
		b := eval(n.r, e)
		if b.kind != Number {
			return Value{}
		}
		switch n.op {
		case opAdd:
			return numberValue(a.num + b.num)
		case opSub:
			return numberValue(a.num - b.num)
		case opMul:
			return numberValue(a.num * b.num)
		case opDiv:
			return numberValue(a.num / b.num)
		}
		return numberValue(math.Mod(a.num, b.num))
	case opConcat:
		a := eval(n.l, e)
		if a.kind != String {
			return Value{}
		}
		b := eval(n.r, e)
		if b.kind != String {
			return Value{}
		}
		return stringValue(a.str + b.str)
	case opEq, opNe, opLt, opLe, opGt, opGe:
		return compare(n.op, eval(n.l, e), eval(n.r, e))
	case opAnd:
		return evalAnd(n, e)
	case opOr:
		return evalOr(n, e)
	case opCoalesce:
		if v := eval(n.l, e); v.kind != Undefined {
			return v
		}
		return eval(n.r, e)
	case opCall:
		return call(n, e)
	}
	return Value{}
}

// compare implements = != < <= > >=. Undefined on either side gives
// undefined. Values of different kinds can only meet here through $body
// values: edgeHub then orders by an internal type number; tinyedge says
// "not equal" for = and != (as edgeHub does) and undefined for ordering.
func compare(op opcode, a, b Value) Value {
	if a.kind == Undefined || b.kind == Undefined {
		return Value{}
	}
	if a.kind != b.kind {
		switch op {
		case opEq:
			return boolValue(false)
		case opNe:
			return boolValue(true)
		}
		return Value{}
	}
	if a.kind == String && (op == opEq || op == opNe) {
		return boolValue((a.str == b.str) == (op == opEq))
	}
	c := 0
	switch a.kind {
	case Bool:
		c = b2i(a.b) - b2i(b.b)
	case Number:
		switch {
		case a.num < b.num:
			c = -1
		case a.num > b.num:
			c = 1
		}
	case String:
		c = compareOrdinal(a.str, b.str)
	}
	var r bool
	switch op {
	case opEq:
		r = c == 0
	case opNe:
		r = c != 0
	case opLt:
		r = c < 0
	case opLe:
		r = c <= 0
	case opGt:
		r = c > 0
	default:
		r = c >= 0
	}
	return boolValue(r)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compareOrdinal compares strings by UTF-16 code units, as .NET's ordinal
// comparison does; it differs from Go's byte order only between
// characters above U+FFFF and those in U+E000–U+FFFF.
func compareOrdinal(a, b string) int {
	if a == b {
		return 0
	}
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	if i == len(a) {
		return -1
	}
	if i == len(b) {
		return 1
	}
	for i > 0 && !utf8.RuneStart(a[i]) {
		i--
	}
	ra, _ := utf8.DecodeRuneInString(a[i:])
	rb, _ := utf8.DecodeRuneInString(b[i:])
	ua, ub := firstUnit(ra), firstUnit(rb)
	switch {
	case ua < ub:
		return -1
	case ua > ub:
		return 1
	case ra < rb:
		return -1
	}
	return 1
}

func firstUnit(r rune) rune {
	if r >= 0x10000 {
		return 0xD800 + (r-0x10000)>>10
	}
	return r
}

// evalAnd follows edgeHub: for bool operands, three-valued logic where
// false wins (false AND undefined is false); null with a bool gives null;
// with a $body value on either side both operands must be bools, else the
// result is undefined.
func evalAnd(n *node, e *Env) Value {
	lt, rt := n.l.typ, n.r.typ
	switch {
	case lt == sDyn || rt == sDyn:
		a := eval(n.l, e)
		if a.kind != Bool {
			return Value{}
		}
		b := eval(n.r, e)
		if b.kind != Bool {
			return Value{}
		}
		return boolValue(a.b && b.b)
	case lt == sNull || rt == sNull:
		if lt == sUndef || rt == sUndef {
			return Value{}
		}
		return null
	}
	a := eval(n.l, e)
	if a.kind == Bool && !a.b {
		return a
	}
	b := eval(n.r, e)
	if b.kind == Bool && !b.b {
		return b
	}
	if a.kind == Bool && b.kind == Bool {
		return boolValue(true)
	}
	return Value{}
}

// evalOr is evalAnd for OR: true wins (true OR undefined is true); null OR
// x is x.
func evalOr(n *node, e *Env) Value {
	lt, rt := n.l.typ, n.r.typ
	switch {
	case lt == sDyn || rt == sDyn:
		a := eval(n.l, e)
		if a.kind != Bool {
			return Value{}
		}
		b := eval(n.r, e)
		if b.kind != Bool {
			return Value{}
		}
		return boolValue(a.b || b.b)
	case lt == sNull && rt == sNull:
		return null
	case lt == sNull:
		if rt == sUndef {
			return Value{}
		}
		return eval(n.r, e)
	case rt == sNull:
		if lt == sUndef {
			return Value{}
		}
		return eval(n.l, e)
	}
	a := eval(n.l, e)
	if a.kind == Bool && a.b {
		return a
	}
	b := eval(n.r, e)
	if b.kind == Bool && b.b {
		return b
	}
	if a.kind == Bool && b.kind == Bool {
		return boolValue(false)
	}
	return Value{}
}
