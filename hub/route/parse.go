package route

import (
	"strconv"
	"strings"

	"github.com/tinyedge/tinyedge/hub/message"
)

// stype is the type edgeHub gives an expression when it compiles a route.
// edgeHub is statically typed: application and system properties are
// strings, literals have their own type, and only $body values (sDyn, a
// QueryValue in edgeHub) are typed at run time. Operands whose static
// types do not fit an operator are a compile error there, so they are a
// SyntaxError here, and the run-time behaviour of a few operators (AND,
// OR, NOT, is_bool …) depends on the static types of their operands.
type stype uint8

const (
	sUndef stype = iota
	sNull
	sBool
	sNum
	sStr
	sDyn
)

func (t stype) String() string {
	return [...]string{"undefined", "null", "bool", "number", "string", "$body value"}[t]
}

// typeSet is a set of stypes, for checking operands and arguments.
type typeSet uint8

func setOf(ts ...stype) typeSet {
	var s typeSet
	for _, t := range ts {
		s |= 1 << t
	}
	return s
}

func (s typeSet) has(t stype) bool { return s&(1<<t) != 0 }

var (
	anyType   = setOf(sUndef, sNull, sBool, sNum, sStr, sDyn)
	numType   = setOf(sNum, sDyn)
	strType   = setOf(sStr, sDyn)
	boolish   = setOf(sNull, sBool, sUndef, sDyn)
	notType   = setOf(sNull, sBool, sDyn)
	asNumType = setOf(sStr, sNum, sDyn)
	dynCompat = setOf(sNull, sBool, sNum, sStr, sDyn) // what a $body value may be compared with
)

type opcode uint8

const (
	opLit      opcode = iota
	opProp            // application property
	opSys             // $name: application property "$name" if set, else the system property
	opSysOnly         // {$name}: the system property
	opBody            // $body.path: application property "$body.path" if set, else the body
	opBodyOnly        // {$body.path}, or a path with [ ]
	opNeg
	opNot
	opAdd
	opSub
	opMul
	opDiv
	opMod
	opConcat
	opEq
	opNe
	opLt
	opLe
	opGt
	opGe
	opAnd
	opOr
	opCoalesce
	opCall
)

// node is one node of a compiled condition. Conditions are evaluated by
// walking the tree with a switch (eval.go) rather than through closures:
// calls through func values make the Go compiler assume that the *Env
// escapes, which would cost an allocation per message.
type node struct {
	op    opcode
	typ   stype
	col   int // 1-based column, for errors
	lit   Value
	name  string // opProp: the property; opSys, opBody: "$…" as written
	lname string // name lower-cased when it is ASCII, else ""
	sys   sysField
	sname string // opSys, opSysOnly: the system property name without $
	path  []pathSeg
	fn    *builtin
	l, r  *node
	args  []*node
}

// Condition is a compiled WHERE clause.
type Condition struct {
	text string
	root *node
}

type parser struct {
	lex     lexer
	name    string
	tok     token
	prevEnd int // rune offset after the last consumed token
	twin    bool
}

func (p *parser) advance() *SyntaxError {
	p.prevEnd = p.tok.end
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) errAt(col int, format string, args ...any) *SyntaxError {
	return &SyntaxError{Route: p.name, Column: col, Msg: sprintf(format, args...)}
}

func (p *parser) expected(what string) *SyntaxError {
	return p.errAt(p.tok.pos+1, "expected %s, found %s", what, found(p.tok))
}

// Parse parses and compiles the route text. name is only used in errors
// (and kept as Route.Name). Errors are *SyntaxError.
func Parse(name, text string) (*Route, error) {
	r, err := parse(name, text)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func parse(name, text string) (*Route, *SyntaxError) {
	p := &parser{name: name, lex: lexer{route: name, src: []rune(text)}}
	r := &Route{Name: name, Text: text, Priority: DefaultPriority}
	if err := p.advance(); err != nil {
		return nil, err
	}
	switch p.tok.kind {
	case tSelect:
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind != tMul {
			return nil, p.expected("*")
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind != tFrom {
			return nil, p.expected("FROM")
		}
	case tFrom:
	default:
		return nil, p.expected("SELECT or FROM")
	}
	if err := p.source(r); err != nil {
		return nil, err
	}
	if p.tok.kind == tWhere {
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tInto || p.tok.kind == tEOF {
			return nil, p.expected("a condition")
		}
		start := p.tok.pos
		root, err := p.expr(0)
		if err != nil {
			return nil, err
		}
		r.cond = &Condition{text: string(p.lex.src[start:p.prevEnd]), root: root}
		if p.tok.kind != tInto {
			return nil, p.expected("INTO")
		}
	} else if p.tok.kind != tInto {
		return nil, p.expected("WHERE or INTO")
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if err := p.sink(r); err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.expected("end of input")
	}
	return r, nil
}

const sourceForms = "/*, /messages/*, /messages/modules/*, /messages/modules/{module}/*, /messages/modules/{module}/outputs/*, /messages/modules/{module}/outputs/{output} or /twinChangeNotifications"

// source reads the path after FROM. The path is read as one run of
// characters, so "/*" in it is a path item, never a comment; the path
// ends at whitespace.
func (p *parser) source(r *Route) *SyntaxError {
	l := &p.lex
	for l.pos < len(l.src) && isSpace(l.src[l.pos]) {
		l.pos++
	}
	start := l.pos
	if l.pos >= len(l.src) || l.src[l.pos] != '/' {
		t, err := l.next()
		if err != nil {
			return err
		}
		p.tok = t
		return p.expected("a source such as /messages/*")
	}
	type seg struct {
		text string
		col  int
	}
	var segs []seg
	for l.pos < len(l.src) && l.src[l.pos] == '/' {
		l.pos++
		n := l.run(l.pos, isIDRune)
		if n == 0 {
			return p.errAt(l.pos+1, "expected a path segment after /, found %s", describeRune(l.src, l.pos))
		}
		segs = append(segs, seg{string(l.src[l.pos : l.pos+n]), l.pos + 1})
		l.pos += n
	}
	r.Source = string(l.src[start:l.pos])
	srcCol := start + 1
	// Trailing "*" item: everything under the path.
	if len(segs) > 0 && segs[len(segs)-1].text == "*" {
		segs = segs[:len(segs)-1]
	}
	names := make([]string, len(segs))
	for i, s := range segs {
		if strings.ContainsRune(s.text, '*') {
			return p.errAt(s.col, "invalid source %q: * may only be the whole last path segment (want %s)", r.Source, sourceForms)
		}
		names[i] = s.text
	}
	ok := false
	switch len(names) {
	case 0:
		ok = true
	case 1:
		ok = strings.EqualFold(names[0], "messages") || strings.EqualFold(names[0], "twinChangeNotifications")
	case 2, 3:
		ok = strings.EqualFold(names[0], "messages") && strings.EqualFold(names[1], "modules")
	case 4, 5:
		ok = strings.EqualFold(names[0], "messages") && strings.EqualFold(names[1], "modules") && strings.EqualFold(names[3], "outputs")
	}
	if !ok {
		return p.errAt(srcCol, "unknown source %q (want %s)", r.Source, sourceForms)
	}
	if len(names) > 0 {
		r.prefix = "/" + lowerASCII(strings.Join(names, "/"))
	}
	p.twin = r.prefix == "/twinchangenotifications"
	p.prevEnd = l.pos
	t, err := l.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func describeRune(src []rune, i int) string {
	if i >= len(src) {
		return "end of input"
	}
	return strconv.Quote(string(src[i]))
}

const sinkForms = `$upstream or BrokeredEndpoint("/modules/{module}/inputs/{input}")`

func (p *parser) sink(r *Route) *SyntaxError {
	switch p.tok.kind {
	case tSysProp:
		if !strings.EqualFold(p.tok.text, "$upstream") {
			return p.errAt(p.tok.pos+1, "unknown endpoint %q (want %s)", p.tok.text, sinkForms)
		}
		r.Sink = Sink{Kind: Upstream}
		return p.advance()
	case tID:
		if !strings.EqualFold(p.tok.text, "BrokeredEndpoint") {
			return p.errAt(p.tok.pos+1, "unknown endpoint %q (want %s)", p.tok.text, sinkForms)
		}
		if err := p.advance(); err != nil {
			return err
		}
		if p.tok.kind != tLParen {
			return p.expected("(")
		}
		if err := p.advance(); err != nil {
			return err
		}
		if p.tok.kind != tString {
			return p.expected(`a string such as "/modules/{module}/inputs/{input}"`)
		}
		// Like edgeHub, the address is the text between the quotes
		// without unescaping, trimmed, with one optional leading and
		// trailing slash.
		addr := strings.TrimSpace(p.tok.text[1 : len(p.tok.text)-1])
		addr = strings.TrimPrefix(addr, "/")
		addr = strings.TrimSuffix(addr, "/")
		items := strings.Split(addr, "/")
		if len(items) != 4 || !strings.EqualFold(items[0], "modules") || !strings.EqualFold(items[2], "inputs") ||
			!validName(items[1]) || !validName(items[3]) {
			return p.errAt(p.tok.pos+1, "invalid BrokeredEndpoint address %s (want \"/modules/{module}/inputs/{input}\")", p.tok.text)
		}
		r.Sink = Sink{Kind: ModuleInput, Module: items[1], Input: items[3]}
		if err := p.advance(); err != nil {
			return err
		}
		if p.tok.kind != tRParen {
			return p.expected(")")
		}
		return p.advance()
	}
	return p.expected(sinkForms)
}

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n\\\"'")
}

// Binary operators by precedence level, loosest first.
var levels = [][]struct {
	tok tokKind
	op  opcode
}{
	{{tCoalesce, opCoalesce}},
	{{tOr, opOr}},
	{{tAnd, opAnd}},
	{{tEq, opEq}, {tNe, opNe}, {tNe2, opNe}},
	{{tLt, opLt}, {tLe, opLe}, {tGt, opGt}, {tGe, opGe}},
	{{tPlus, opAdd}, {tMinus, opSub}, {tConcat, opConcat}},
	{{tMul, opMul}, {tDiv, opDiv}, {tMod, opMod}},
}

// expr parses a left-associative chain of binary operators of the given
// precedence level and tighter.
func (p *parser) expr(level int) (*node, *SyntaxError) {
	if level == len(levels) {
		return p.unary()
	}
	left, err := p.expr(level + 1)
	if err != nil {
		return nil, err
	}
	for {
		op, ok := opcode(0), false
		for _, b := range levels[level] {
			if p.tok.kind == b.tok {
				op, ok = b.op, true
			}
		}
		if !ok {
			return left, nil
		}
		opTok := p.tok
		if err := p.advance(); err != nil {
			return nil, err
		}
		right, err := p.expr(level + 1)
		if err != nil {
			return nil, err
		}
		if left, err = p.binary(op, opTok, left, right); err != nil {
			return nil, err
		}
	}
}

func (p *parser) unary() (*node, *SyntaxError) {
	if p.tok.kind != tMinus && p.tok.kind != tNot {
		return p.primary()
	}
	opTok := p.tok
	if err := p.advance(); err != nil {
		return nil, err
	}
	x, err := p.unary()
	if err != nil {
		return nil, err
	}
	n := &node{col: opTok.pos + 1, l: x}
	if opTok.kind == tMinus {
		if !numType.has(x.typ) {
			return nil, p.errAt(n.col, "invalid operand to unary -: have %s, want number%s", x.typ, propHint(x))
		}
		n.op, n.typ = opNeg, x.typ
		return n, nil
	}
	if !notType.has(x.typ) {
		hint := ""
		if x.typ == sStr || x.typ == sNum {
			hint = " (NOT binds tighter than comparisons: write NOT (a = b))"
		}
		return nil, p.errAt(n.col, "invalid operand to NOT: have %s, want bool%s", x.typ, hint)
	}
	n.op, n.typ = opNot, sBool
	return n, nil
}

func propHint(ns ...*node) string {
	for _, n := range ns {
		switch n.op {
		case opProp, opSys, opSysOnly:
			return "; properties are strings, convert with as_number(" + n.display() + ")"
		}
	}
	return ""
}

func (n *node) display() string {
	switch n.op {
	case opProp, opSys:
		return n.name
	case opSysOnly:
		return "{$" + n.sname + "}"
	}
	return "…"
}

var opNames = map[opcode]string{
	opAdd: "+", opSub: "-", opMul: "*", opDiv: "/", opMod: "%", opConcat: "||",
	opEq: "=", opNe: "!=", opLt: "<", opLe: "<=", opGt: ">", opGe: ">=",
	opAnd: "AND", opOr: "OR", opCoalesce: "??",
}

func (p *parser) binary(op opcode, opTok token, l, r *node) (*node, *SyntaxError) {
	n := &node{op: op, col: opTok.pos + 1, l: l, r: r}
	bad := func(want string) *SyntaxError {
		return p.errAt(n.col, "invalid operands to %s: have %s and %s, want %s%s", opNames[op], l.typ, r.typ, want, propHint(l, r))
	}
	switch op {
	case opAdd, opSub, opMul, opDiv, opMod:
		if !numType.has(l.typ) || !numType.has(r.typ) {
			return nil, bad("numbers")
		}
		n.typ = sNum
		if l.typ == sDyn || r.typ == sDyn {
			n.typ = sDyn
		}
	case opConcat:
		if !strType.has(l.typ) || !strType.has(r.typ) {
			return nil, bad("strings")
		}
		n.typ = sStr
	case opEq, opNe, opLt, opLe, opGt, opGe, opCoalesce:
		// edgeHub wants both operands of the left operand's type, except
		// that a $body value goes with any null, bool, number or string.
		ok := l.typ == r.typ ||
			(l.typ == sDyn && dynCompat.has(r.typ)) ||
			(r.typ == sDyn && dynCompat.has(l.typ))
		if !ok {
			return nil, bad("two operands of the same type")
		}
		n.typ = sBool
		if op == opCoalesce {
			n.typ = l.typ
			if r.typ == sDyn {
				n.typ = sDyn
			}
		}
	case opAnd, opOr:
		if !boolish.has(l.typ) || !boolish.has(r.typ) {
			return nil, bad("bools")
		}
		n.typ = sBool
		if l.typ != sDyn && r.typ != sDyn {
			if (op == opAnd && (l.typ == sNull || r.typ == sNull)) || (op == opOr && l.typ == sNull && r.typ == sNull) {
				n.typ = sNull
			}
		}
	}
	return n, nil
}

func (p *parser) primary() (*node, *SyntaxError) {
	t := p.tok
	col := t.pos + 1
	lit := func(v Value, typ stype) (*node, *SyntaxError) {
		return &node{op: opLit, typ: typ, col: col, lit: v}, p.advance()
	}
	switch t.kind {
	case tLParen:
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.expr(0)
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.expected(")")
		}
		return x, p.advance()
	case tString:
		return lit(stringValue(t.str), sStr)
	case tInt, tHex, tReal:
		return lit(numberValue(t.num), sNum)
	case tTrue:
		return lit(boolValue(true), sBool)
	case tFalse:
		return lit(boolValue(false), sBool)
	case tNull:
		return lit(Value{kind: Null}, sNull)
	case tUndefined:
		return lit(Value{}, sUndef)
	case tSysProp:
		n, err := p.sysProp(t, false)
		if err != nil {
			return nil, err
		}
		return n, p.advance()
	case tLBrace:
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind != tSysProp {
			return nil, p.expected("a $property after {")
		}
		n, err := p.sysProp(p.tok, true)
		if err != nil {
			return nil, err
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind != tRBrace {
			return nil, p.expected("}")
		}
		return n, p.advance()
	case tID:
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tLParen {
			return p.call(t)
		}
		return &node{op: opProp, typ: sStr, col: col, name: t.text, lname: lowerIfASCII(t.text)}, nil
	}
	return nil, p.expected("a value")
}

// sysProp compiles a $name token; escaped is true inside { }.
func (p *parser) sysProp(t token, escaped bool) (*node, *SyntaxError) {
	col := t.pos + 1
	name := t.text[1:]
	n := &node{col: col, name: t.text, lname: lowerIfASCII(t.text)}
	lower := strings.ToLower(name)
	switch {
	case lower == "body" || strings.HasPrefix(lower, "body."):
		n.op, n.typ = opBody, sDyn
		if lower != "body" {
			path, msg := parseBodyPath(name[len("body."):])
			if msg != "" {
				return nil, p.errAt(col, "invalid $body query %q: %s", t.text, msg)
			}
			n.path = path
		}
		// edgeHub lets an application property named like the query win,
		// except when escaped or when the name has [ ], which property
		// names cannot have.
		if escaped || strings.ContainsAny(name, "[]") {
			n.op = opBodyOnly
		}
	case message.IsSystemProperty(name):
		n.op, n.typ = opSys, sStr
		if escaped {
			n.op = opSysOnly
		}
		n.sname = name
		n.sys = sysFieldOf(name)
	default:
		return nil, p.errAt(col, "unknown system property %q (want one of $%s, or $body)", t.text, strings.Join(message.SystemNames(), ", $"))
	}
	return n, nil
}

func (p *parser) call(name token) (*node, *SyntaxError) {
	col := name.pos + 1
	fn := builtins[strings.ToLower(name.text)]
	if fn == nil {
		return nil, p.errAt(col, "unknown function %q", name.text)
	}
	// p.tok is "(".
	if err := p.advance(); err != nil {
		return nil, err
	}
	n := &node{op: opCall, typ: fn.result, col: col, fn: fn}
	if p.tok.kind != tRParen {
		for {
			a, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			n.args = append(n.args, a)
			if p.tok.kind == tComma {
				if err := p.advance(); err != nil {
					return nil, err
				}
				continue
			}
			if p.tok.kind != tRParen {
				return nil, p.expected(", or )")
			}
			break
		}
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if len(n.args) < fn.min || (fn.max >= 0 && len(n.args) > fn.max) {
		return nil, p.errAt(col, "%s takes %s, found %d", fn.name, fn.arity(), len(n.args))
	}
	if fn.id == fTwinChangeIncludes {
		return p.twinCall(n)
	}
	for i, a := range n.args {
		want := fn.args[min(i, len(fn.args)-1)]
		if !want.set.has(a.typ) {
			return nil, p.errAt(a.col, "invalid argument %d to %s: have %s, want %s%s", i+1, fn.name, a.typ, want.desc, propHint(a))
		}
	}
	return n, nil
}

// twinCall checks twin_change_includes(properties.desired.x). Like
// edgeHub, the argument is not an expression but a path into the twin
// patch, written as a bare name.
func (p *parser) twinCall(n *node) (*node, *SyntaxError) {
	if !p.twin {
		return nil, p.errAt(n.col, "twin_change_includes can only be used in routes FROM /twinChangeNotifications")
	}
	a := n.args[0]
	if a.op != opProp {
		return nil, p.errAt(a.col, "twin_change_includes wants a twin path such as properties.desired.x, not an expression")
	}
	lower := strings.ToLower(a.name)
	okPrefix := false
	for _, pre := range []string{"properties.reported.", "properties.desired.", "tags."} {
		if strings.HasPrefix(lower, pre) && len(lower) > len(pre) {
			okPrefix = true
		}
	}
	path, msg := parseBodyPath(a.name)
	if msg == "" && !okPrefix {
		msg = "it must start with properties.reported., properties.desired. or tags."
	}
	if msg != "" {
		return nil, p.errAt(a.col, "invalid twin path %q: %s", a.name, msg)
	}
	n.path = path
	n.args = nil
	return n, nil
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// lowerIfASCII returns s lower-cased when it is ASCII, else "". Property
// lookups use it as a shortcut when every key of a message is lower-case
// ASCII; strings.EqualFold folds some non-ASCII runes to ASCII ones, so
// the shortcut is only sound for ASCII names.
func lowerIfASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return ""
		}
	}
	return lowerASCII(s)
}
