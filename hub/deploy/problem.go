package deploy

import (
	"strconv"
	"strings"
)

// Problem is one thing wrong with a manifest, or (in Manifest.Warnings) one
// thing that is allowed but probably a mistake.
type Problem struct {
	Path   string // JSON path, e.g. $.modulesContent.$edgeHub['properties.desired'].routes.alerts; empty for JSON syntax errors
	Line   int    // for JSON syntax errors: 1-based line in the file, else 0
	Column int    // route column (1-based, from route.SyntaxError) or JSON syntax error column, else 0
	Msg    string // what is wrong and what would fix it
}

// String formats p as "<path>: column 37: <msg>" for a route syntax error,
// "line 3, column 5: <msg>" for a JSON syntax error and "<path>: <msg>"
// otherwise.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(p.Line))
		if p.Column > 0 {
			b.WriteString(", column ")
			b.WriteString(strconv.Itoa(p.Column))
		}
		b.WriteString(": ")
		b.WriteString(p.Msg)
		return b.String()
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	if p.Column > 0 {
		b.WriteString("column ")
		b.WriteString(strconv.Itoa(p.Column))
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in a manifest, in the order they appear
// in the document. It is the error Parse returns.
type Problems []Problem

// Error lists the problems, one a line.
func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "\n")
}
