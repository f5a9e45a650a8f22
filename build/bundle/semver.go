package bundle

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a semantic version (https://semver.org, 2.0.0):
// MAJOR.MINOR.PATCH with an optional -PRERELEASE and +BUILD. Build
// metadata is kept for String but ignored by Compare, as §10 requires.
type Version struct {
	Major, Minor, Patch uint64
	Pre                 []string // dot-separated prerelease identifiers
	Build               string
}

// ParseVersion parses a semantic version. A leading "v" (as in git tags,
// v1.4.0) is accepted and dropped.
func ParseVersion(s string) (Version, error) {
	var v Version
	fail := func(why string) (Version, error) {
		return Version{}, fmt.Errorf("version %q: %s (want MAJOR.MINOR.PATCH, e.g. 1.4.0 or 1.4.0-rc.1)", s, why)
	}
	rest := strings.TrimPrefix(s, "v")
	if rest == "" {
		return fail("empty")
	}
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		v.Build = rest[i+1:]
		rest = rest[:i]
		for _, id := range strings.Split(v.Build, ".") {
			if id == "" || !isIdent(id) {
				return fail("build metadata must be dot-separated non-empty [0-9A-Za-z-] identifiers")
			}
		}
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		v.Pre = strings.Split(rest[i+1:], ".")
		rest = rest[:i]
		for _, id := range v.Pre {
			if id == "" || !isIdent(id) {
				return fail("prerelease must be dot-separated non-empty [0-9A-Za-z-] identifiers")
			}
			if isNumeric(id) && len(id) > 1 && id[0] == '0' {
				return fail("numeric prerelease identifier " + id + " has a leading zero")
			}
		}
	}
	core := strings.Split(rest, ".")
	if len(core) != 3 {
		return fail("need three numbers separated by dots")
	}
	nums := [3]*uint64{&v.Major, &v.Minor, &v.Patch}
	for i, c := range core {
		if c == "" || !isNumeric(c) {
			return fail(fmt.Sprintf("%q is not a number", c))
		}
		if len(c) > 1 && c[0] == '0' {
			return fail(fmt.Sprintf("%q has a leading zero", c))
		}
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil {
			return fail(fmt.Sprintf("%q is too large", c))
		}
		*nums[i] = n
	}
	return v, nil
}

// String returns the version without a leading "v".
func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if len(v.Pre) > 0 {
		s += "-" + strings.Join(v.Pre, ".")
	}
	if v.Build != "" {
		s += "+" + v.Build
	}
	return s
}

// Compare returns -1, 0 or +1 as v has lower, equal or higher precedence
// than w (semver §11): numbers compare numerically; a version with a
// prerelease is lower than the same version without; prerelease
// identifiers compare one by one, numeric ones numerically and below
// alphanumeric ones, which compare in ASCII order; a longer list wins when
// all before are equal. Build metadata is ignored.
func (v Version) Compare(w Version) int {
	for _, p := range [][2]uint64{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}} {
		if p[0] != p[1] {
			if p[0] < p[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(v.Pre) == 0 && len(w.Pre) == 0:
		return 0
	case len(v.Pre) == 0:
		return 1
	case len(w.Pre) == 0:
		return -1
	}
	for i := 0; i < len(v.Pre) && i < len(w.Pre); i++ {
		if c := compareIdent(v.Pre[i], w.Pre[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(v.Pre) < len(w.Pre):
		return -1
	case len(v.Pre) > len(w.Pre):
		return 1
	}
	return 0
}

// compareIdent compares two prerelease identifiers. Numeric identifiers
// have no leading zeros, so the longer is larger, which avoids overflow.
func compareIdent(a, b string) int {
	an, bn := isNumeric(a), isNumeric(b)
	switch {
	case an && bn:
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	case an:
		return -1
	case bn:
		return 1
	}
	return strings.Compare(a, b)
}

func isNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isIdent(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}
