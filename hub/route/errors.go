package route

import (
	"fmt"
	"strconv"
)

// SyntaxError is returned by Parse for every problem with a route: bad
// tokens, bad grammar, unknown functions or properties, and operands whose
// types edgeHub rejects when it compiles a route.
type SyntaxError struct {
	Route  string // the route's name
	Column int    // 1-based, counted in runes of the route text
	Msg    string // what was expected and what was found
}

// Error returns e as `route "alerts": column 37: expected INTO, found "INT0"`.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("route %q: column %d: %s", e.Route, e.Column, e.Msg)
}

// found describes t for an "expected X, found Y" message.
func found(t token) string {
	if t.kind == tEOF {
		return "end of input"
	}
	return strconv.Quote(t.text)
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
