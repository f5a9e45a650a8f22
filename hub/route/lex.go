package route

import (
	"strconv"
	"strings"
	"unicode/utf16"
)

// The lexer follows edgeHub's ANTLR lexer (GrammarLexer.g4) closely,
// because routes that work on edgeHub must tokenize the same way here:
//
//   - Names are runs of any characters except ()<>@,;:\"/[]?={} and
//     space, tab, CR and LF, so "temp-1", "a+b" and "x*2" are single
//     names. Operators written without spaces next to a name are part of
//     the name.
//   - The longest match wins, and between matches of the same length the
//     rule listed first in the grammar: keywords, strings and numbers
//     before names, so "-1" is a number but "-1x" is a name.
//
// Where edgeHub silently reads such a run as an application property that
// can never exist, tinyedge reports an error instead (see doc.go): names
// that start like a number or an operator ("1.5.2", "-temp", "'a'b") and
// names containing "||" or a quote.

type tokKind uint8

const (
	tEOF tokKind = iota
	tSelect
	tFrom
	tWhere
	tInto
	tString
	tInt
	tHex
	tReal
	tTrue
	tFalse
	tNull
	tUndefined
	tLParen
	tRParen
	tComma
	tLBrace
	tRBrace
	tPlus
	tMinus
	tMul
	tDiv
	tMod
	tAnd
	tOr
	tNot
	tEq
	tNe
	tNe2
	tLe
	tGe
	tGt
	tLt
	tConcat
	tCoalesce
	tSysProp
	tID
	tBad // a character or run no rule accepts; an error wherever it appears
)

type token struct {
	kind tokKind
	pos  int    // rune offset of the first rune
	end  int    // rune offset after the last rune
	text string // as written
	str  string // tString: the unescaped value
	num  float64
}

type lexer struct {
	route string
	src   []rune
	pos   int
}

func (l *lexer) errAt(pos int, format string, args ...any) *SyntaxError {
	msg := format
	if len(args) > 0 {
		msg = sprintf(format, args...)
	}
	return &SyntaxError{Route: l.route, Column: pos + 1, Msg: msg}
}

// isIDRune reports whether r may appear in a name (ID_CHARS).
func isIDRune(r rune) bool {
	switch r {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}', ' ', '\t', '\n', '\r':
		return false
	}
	return true
}

// isPathRune reports whether r may appear in a $property (QUERY_PATH_CHARS):
// the name characters plus [ and ].
func isPathRune(r rune) bool {
	return r == '[' || r == ']' || isIDRune(r)
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' }

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

func isHex(r rune) bool {
	return isDigit(r) || (r >= 'a' && r <= 'f') || (r >= 'A' && r <= 'F')
}

// skip skips whitespace and /* comments */.
func (l *lexer) skip() *SyntaxError {
	for l.pos < len(l.src) {
		r := l.src[l.pos]
		if isSpace(r) {
			l.pos++
			continue
		}
		if r == '/' && l.pos+1 < len(l.src) && l.src[l.pos+1] == '*' {
			end := -1
			for i := l.pos + 2; i+1 < len(l.src); i++ {
				if l.src[i] == '*' && l.src[i+1] == '/' {
					end = i + 2
					break
				}
			}
			if end < 0 {
				return l.errAt(l.pos, "unterminated comment: /* without */")
			}
			l.pos = end
			continue
		}
		return nil
	}
	return nil
}

func (l *lexer) run(from int, ok func(rune) bool) int {
	i := from
	for i < len(l.src) && ok(l.src[i]) {
		i++
	}
	return i - from
}

func (l *lexer) tok(kind tokKind, n int) token {
	t := token{kind: kind, pos: l.pos, end: l.pos + n, text: string(l.src[l.pos : l.pos+n])}
	l.pos += n
	return t
}

// Match priorities, in grammar order, for choosing between matches of the
// same length.
const (
	pKeyword = iota
	pString
	pInt
	pHex
	pReal
	pLiteral
	pOperator
	pWordOp
	pSysProp
	pID
	pPath
)

var keywords = map[string]tokKind{
	"select": tSelect, "from": tFrom, "where": tWhere, "into": tInto,
	"true": tTrue, "false": tFalse, "null": tNull, "undefined": tUndefined,
	"and": tAnd, "or": tOr, "not": tNot,
}

func keywordPriority(k tokKind) int {
	switch k {
	case tSelect, tFrom, tWhere, tInto:
		return pKeyword
	case tAnd, tOr, tNot:
		return pWordOp
	}
	return pLiteral
}

// next returns the next token, after whitespace and comments.
func (l *lexer) next() (token, *SyntaxError) {
	if err := l.skip(); err != nil {
		return token{}, err
	}
	if l.pos >= len(l.src) {
		return token{kind: tEOF, pos: len(l.src), end: len(l.src)}, nil
	}
	src, i := l.src, l.pos
	at := func(k int) rune {
		if i+k < len(src) {
			return src[i+k]
		}
		return 0
	}
	switch src[i] {
	case '(':
		return l.tok(tLParen, 1), nil
	case ')':
		return l.tok(tRParen, 1), nil
	case ',':
		return l.tok(tComma, 1), nil
	case '{':
		return l.tok(tLBrace, 1), nil
	case '}':
		return l.tok(tRBrace, 1), nil
	case '=':
		return l.tok(tEq, 1), nil
	case '/':
		return l.tok(tDiv, 1), nil
	case '<':
		switch at(1) {
		case '=':
			return l.tok(tLe, 2), nil
		case '>':
			return l.tok(tNe2, 2), nil
		}
		return l.tok(tLt, 1), nil
	case '>':
		if at(1) == '=' {
			return l.tok(tGe, 2), nil
		}
		return l.tok(tGt, 1), nil
	case '?':
		if at(1) == '?' {
			return l.tok(tCoalesce, 2), nil
		}
		return l.tok(tBad, 1), nil
	case '"':
		return l.str()
	case '@', ';', ':', '\\':
		return l.tok(tBad, 1), nil
	}

	// Everything else: longest match, ties to the earlier rule.
	bestLen, bestPri, bestKind := 0, 1<<30, tBad
	consider := func(n, pri int, kind tokKind) {
		if n > bestLen || (n == bestLen && n > 0 && pri < bestPri) {
			bestLen, bestPri, bestKind = n, pri, kind
		}
	}
	idLen := l.run(i, isIDRune)
	consider(idLen, pID, tID)
	consider(l.run(i, isPathRune), pPath, tBad)
	if idLen > 0 {
		if k, ok := keywords[strings.ToLower(string(src[i:i+idLen]))]; ok {
			consider(idLen, keywordPriority(k), k)
		}
	}
	if src[i] == '$' {
		if n := l.run(i+1, isPathRune); n > 0 {
			consider(n+1, pSysProp, tSysProp)
		}
	}
	switch src[i] {
	case '+':
		consider(1, pOperator, tPlus)
	case '-':
		consider(1, pOperator, tMinus)
	case '*':
		consider(1, pOperator, tMul)
	case '%':
		consider(1, pOperator, tMod)
	case '|':
		if at(1) == '|' {
			consider(2, pOperator, tConcat)
		}
	case '!':
		if at(1) == '=' {
			consider(2, pOperator, tNe)
		}
	}
	numLen, numPri, numKind := l.number(i)
	consider(numLen, numPri, numKind)
	if src[i] == '\'' {
		n, err := l.scanString(i)
		if err != nil && n >= bestLen {
			return token{}, err
		}
		consider(n, pString, tString)
	}

	switch bestKind {
	case tString:
		return l.str()
	case tInt, tHex, tReal:
		return l.numberToken(bestKind, bestLen)
	case tID:
		name := string(src[i : i+idLen])
		if numberLike(src[i:]) {
			hint := ""
			if strings.ContainsAny(name, "+-*%") {
				hint = " (put spaces around operators)"
			}
			return token{}, l.errAt(i, "malformed number %q%s", name, hint)
		}
		if strings.ContainsAny(name[:1], "+-*%|!'.") || strings.Contains(name, "||") || strings.ContainsRune(name, '\'') {
			return token{}, l.errAt(i, "ambiguous name %q: put spaces around operators and quotes (edgeHub would read %q as one application property name)", name, name)
		}
	}
	if bestLen == 0 {
		bestLen = 1
	}
	return l.tok(bestKind, bestLen), nil
}

// numberLike reports whether s starts the way a number does: a digit, or
// "-" or "." followed by a digit.
func numberLike(s []rune) bool {
	if len(s) == 0 {
		return false
	}
	if isDigit(s[0]) {
		return true
	}
	if s[0] == '.' && len(s) > 1 && isDigit(s[1]) {
		return true
	}
	if s[0] == '-' && len(s) > 1 {
		return numberLike(s[1:]) && s[1] != '-'
	}
	return false
}

// number returns the length of the longest number at i (INTEGER_LITERAL,
// HEX_INTEGER_LITERAL or REAL_LITERAL), with its priority and kind.
func (l *lexer) number(i int) (int, int, tokKind) {
	src := l.src
	digits := func(j int) int { return l.run(j, isDigit) }
	bestLen, bestPri, bestKind := 0, 0, tBad
	take := func(n, pri int, k tokKind) {
		if n > bestLen {
			bestLen, bestPri, bestKind = n, pri, k
		}
	}
	// HEX: 0[xX][0-9a-fA-F]+
	if i+2 < len(src) && src[i] == '0' && (src[i+1] == 'x' || src[i+1] == 'X') {
		if n := l.run(i+2, isHex); n > 0 {
			take(n+2, pHex, tHex)
		}
	}
	j := i
	if j < len(src) && src[j] == '-' {
		j++
	}
	intDigits := digits(j)
	if intDigits > 0 {
		take(j+intDigits-i, pInt, tInt)
	}
	// REAL: -?[0-9]* '.' [0-9]+ EXP? | -?[0-9]* EXP
	k := j + intDigits
	exp := func(k int) int {
		if k < len(src) && (src[k] == 'e' || src[k] == 'E') {
			m := k + 1
			if m < len(src) && (src[m] == '+' || src[m] == '-') {
				m++
			}
			if d := digits(m); d > 0 {
				return m + d - k
			}
		}
		return 0
	}
	if k < len(src) && src[k] == '.' {
		if f := digits(k + 1); f > 0 {
			end := k + 1 + f
			end += exp(end)
			take(end-i, pReal, tReal)
		}
	}
	if e := exp(k); e > 0 {
		take(k+e-i, pReal, tReal)
	}
	return bestLen, bestPri, bestKind
}

func (l *lexer) numberToken(kind tokKind, n int) (token, *SyntaxError) {
	start := l.pos
	text := string(l.src[start : start+n])
	t := l.tok(kind, n)
	switch kind {
	case tHex:
		h := strings.TrimLeft(text[2:], "0")
		if len(h) > 16 {
			return token{}, l.errAt(start, "hex number %s does not fit in 64 bits", text)
		}
		u, _ := strconv.ParseUint("0"+h, 16, 64)
		// edgeHub parses hex into a signed 64-bit integer.
		t.num = float64(int64(u))
	default:
		body := strings.TrimPrefix(text, "-")
		if body[0] == 'e' || body[0] == 'E' {
			// REAL_LITERAL accepts "e3"; .NET cannot parse it and edgeHub
			// silently makes it undefined.
			return token{}, l.errAt(start, "malformed number %q: an exponent needs digits before it", text)
		}
		f, err := strconv.ParseFloat(text, 64)
		if err != nil && !isRangeErr(err) {
			return token{}, l.errAt(start, "malformed number %q", text)
		}
		t.num = f
	}
	return t, nil
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// scanString scans the string starting at i (a quote) and returns its
// length including both quotes, or an error for an unterminated string or
// a bad escape.
func (l *lexer) scanString(i int) (int, *SyntaxError) {
	src := l.src
	q := src[i]
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case q:
			return j + 1 - i, nil
		case '\\':
			if j+1 >= len(src) {
				return len(src) - i, l.errAt(i, "unterminated string")
			}
			switch src[j+1] {
			case '\\', '\'', '"', '/', 'b', 'f', 'n', 'r', 't':
				j++
			case 'u':
				for k := 0; k < 4; k++ {
					if j+2+k >= len(src) || !isHex(src[j+2+k]) {
						return len(src) - i, l.errAt(j, "invalid escape: \\u needs 4 hex digits")
					}
				}
				j += 5
			default:
				return len(src) - i, l.errAt(j, "invalid escape \\%c in string (want \\\\ \\' \\\" \\/ \\b \\f \\n \\r \\t or \\uXXXX)", src[j+1])
			}
		}
	}
	return len(src) - i, l.errAt(i, "unterminated string")
}

// str lexes the string at l.pos.
func (l *lexer) str() (token, *SyntaxError) {
	n, err := l.scanString(l.pos)
	if err != nil {
		return token{}, err
	}
	t := l.tok(tString, n)
	t.str = unescape(l.src[t.pos+1 : t.end-1])
	return t, nil
}

// unescape decodes the escapes of a string scanString accepted.
func unescape(rs []rune) string {
	var b strings.Builder
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		if r != '\\' {
			b.WriteRune(r)
			continue
		}
		i++
		switch rs[i] {
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			u, _ := strconv.ParseUint(string(rs[i+1:i+5]), 16, 16)
			i += 4
			c := rune(u)
			if utf16.IsSurrogate(c) {
				// A pair written as two escapes, as in JSON and C#.
				if i+6 < len(rs) && rs[i+1] == '\\' && rs[i+2] == 'u' {
					if v, err := strconv.ParseUint(string(rs[i+3:i+7]), 16, 16); err == nil {
						if d := utf16.DecodeRune(c, rune(v)); d != 0xFFFD {
							b.WriteRune(d)
							i += 6
							continue
						}
					}
				}
				c = 0xFFFD
			}
			b.WriteRune(c)
		default: // \\ \' \" \/
			b.WriteRune(rs[i])
		}
	}
	return b.String()
}
