package hubsim

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrAmbiguous is returned (wrapped) by Resolve when a name fits several
// identities.
var ErrAmbiguous = errors.New("ambiguous target")

// Resolve finds the identity a command-line target names, so that
// `twin patch filter …` reaches gw/filtermodule and `method invoke
// simtemp …` reaches gw/SimulatedTemperatureSensor. ids are
// "device" or "device/module". The rule, first match wins:
//
//  1. "D/M" is exactly that module.
//  2. A module named exactly X (on any device).
//  3. A device named exactly X.
//  4. The one module whose name contains X, ignoring case.
//  5. The one module whose name holds the letters of X in order, ignoring
//     case (simtemp → SimulatedTemperatureSensor).
//
// When a step finds several identities the target is ambiguous and the
// error lists them; when none finds any the error lists every identity.
func Resolve(ids []string, target string) (device, module string, err error) {
	if target == "" {
		return "", "", errors.New("empty target: give DEVICE, DEVICE/MODULE or a module name")
	}
	if d, m, ok := strings.Cut(target, "/"); ok {
		for _, id := range ids {
			if id == target {
				return d, m, nil
			}
		}
		return "", "", fmt.Errorf("%w: %s (known: %s)", ErrNotFound, target, list(ids))
	}
	var modules, devices []string
	for _, id := range ids {
		if strings.Contains(id, "/") {
			modules = append(modules, id)
		} else {
			devices = append(devices, id)
		}
	}
	moduleName := func(id string) string { _, m, _ := strings.Cut(id, "/"); return m }
	lower := strings.ToLower(target)
	steps := []func() []string{
		func() []string { return filter(modules, func(id string) bool { return moduleName(id) == target }) },
		func() []string { return filter(devices, func(id string) bool { return id == target }) },
		func() []string {
			return filter(modules, func(id string) bool { return strings.Contains(strings.ToLower(moduleName(id)), lower) })
		},
		func() []string {
			return filter(modules, func(id string) bool { return subsequence(strings.ToLower(moduleName(id)), lower) })
		},
	}
	for _, step := range steps {
		switch found := step(); len(found) {
		case 0:
			continue
		case 1:
			d, m, _ := strings.Cut(found[0], "/")
			return d, m, nil
		default:
			return "", "", fmt.Errorf("%w: %q could be %s; give DEVICE/MODULE", ErrAmbiguous, target, list(found))
		}
	}
	return "", "", fmt.Errorf("%w: nothing is named like %q (known: %s)", ErrNotFound, target, list(ids))
}

func filter(ids []string, keep func(string) bool) []string {
	var out []string
	for _, id := range ids {
		if keep(id) {
			out = append(out, id)
		}
	}
	return out
}

// subsequence reports whether the bytes of sub appear in s in order.
func subsequence(s, sub string) bool {
	i := 0
	for j := 0; j < len(s) && i < len(sub); j++ {
		if s[j] == sub[i] {
			i++
		}
	}
	return i == len(sub)
}

func list(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	s := append([]string(nil), ids...)
	sort.Strings(s)
	return strings.Join(s, ", ")
}
