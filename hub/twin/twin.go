// Package twin holds module and device twins: desired and reported
// properties with their versions, JSON merge patches in which null deletes a
// member, and IoT Hub's size and depth limits.
package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Limits IoT Hub applies to each of desired and reported properties.
const (
	MaxSectionSize = 32 * 1024 // bytes of JSON, per section
	MaxDepth       = 10        // nesting levels of objects below the section root
)

// Errors returned (wrapped) by patch operations.
var (
	ErrTooLarge = errors.New("twin section too large")
	ErrTooDeep  = errors.New("twin nested too deeply")
	ErrBadPatch = errors.New("bad twin patch")
)

// Properties is one section of a twin: the document and its version. The
// version starts at 1 for a seeded document and grows by one per patch.
type Properties struct {
	Version int64
	Doc     map[string]any
}

// Twin is a module's (or the device's) desired and reported properties.
type Twin struct {
	Desired  Properties
	Reported Properties
}

// New returns a twin whose desired properties are seeded with desired (may
// be nil); both sections start at version 1.
func New(desired map[string]any) (*Twin, error) {
	t := &Twin{Desired: Properties{Version: 1, Doc: map[string]any{}}, Reported: Properties{Version: 1, Doc: map[string]any{}}}
	if desired != nil {
		if _, err := t.Desired.Apply(desired); err != nil {
			return nil, err
		}
		t.Desired.Version = 1
	}
	return t, nil
}

// Clone returns a deep copy.
func (t *Twin) Clone() Twin {
	return Twin{Desired: t.Desired.Clone(), Reported: t.Reported.Clone()}
}

// Clone returns a deep copy.
func (p Properties) Clone() Properties {
	return Properties{Version: p.Version, Doc: cloneMap(p.Doc)}
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

// cloneValue deep-copies a JSON value and turns every Go number type into
// float64, so module code sees one number type whether a document came
// from JSON or from Go code.
func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneMap(x)
	case []any:
		c := make([]any, len(x))
		for i := range x {
			c[i] = cloneValue(x[i])
		}
		return c
	case int:
		return float64(x)
	case int8:
		return float64(x)
	case int16:
		return float64(x)
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	case uint:
		return float64(x)
	case uint8:
		return float64(x)
	case uint16:
		return float64(x)
	case uint32:
		return float64(x)
	case uint64:
		return float64(x)
	case float32:
		return float64(x)
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	default:
		return v
	}
}

// Number reads a twin property as a number: twin documents hold numbers
// as float64; a string holding a number counts too, since devices and
// portals often send "25" for 25.
func Number(v any) (float64, bool) {
	switch x := cloneValue(v).(type) {
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	}
	return 0, false
}

// Clone returns a deep copy of a patch or document, numbers as float64.
func Clone(m map[string]any) map[string]any { return cloneMap(m) }

// Apply merges patch into p: members set to null are deleted, objects merge
// recursively, anything else replaces. Members whose names start with "$"
// (such as "$version") are ignored. The patch is refused, and p left
// unchanged, when the result would break the size or depth limits. On
// success the version grows by one and is returned.
func (p *Properties) Apply(patch map[string]any) (int64, error) {
	if err := checkDepth(patch, 1, "$"); err != nil {
		return 0, err
	}
	next := cloneMap(p.Doc)
	if next == nil {
		next = map[string]any{}
	}
	merge(next, patch)
	b, err := json.Marshal(next)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadPatch, err)
	}
	if len(b) > MaxSectionSize {
		return 0, fmt.Errorf("%w: %d bytes after the patch, the limit is %d", ErrTooLarge, len(b), MaxSectionSize)
	}
	p.Doc = next
	p.Version++
	return p.Version, nil
}

func merge(dst, patch map[string]any) {
	for k, v := range patch {
		if strings.HasPrefix(k, "$") {
			continue
		}
		switch x := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
			}
			merge(sub, x)
			dst[k] = sub
		default:
			dst[k] = cloneValue(v)
		}
	}
}

// Diff returns the patch that turns document a into document b: changed
// and new members with b's values, objects in both diffed member by member,
// and null for members only a has. Applying it to a gives b.
func Diff(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, bv := range b {
		av, ok := a[k]
		ao, aobj := av.(map[string]any)
		bo, bobj := bv.(map[string]any)
		switch {
		case ok && aobj && bobj:
			if d := Diff(ao, bo); len(d) > 0 {
				out[k] = d
			}
		case !ok || !reflect.DeepEqual(av, bv):
			out[k] = cloneValue(bv)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out[k] = nil
		}
	}
	return out
}

func checkDepth(m map[string]any, depth int, path string) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: %s is nested %d levels deep, the limit is %d", ErrTooDeep, path, depth, MaxDepth)
	}
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			if err := checkDepth(sub, depth+1, path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// ParsePatch decodes a JSON object patch; anything but an object is
// refused.
func ParsePatch(b []byte) (map[string]any, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPatch, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrBadPatch)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: want a JSON object, got %s", ErrBadPatch, kindOf(v))
	}
	return numbersToFloat(m).(map[string]any), nil
}

// numbersToFloat turns json.Number into float64, the type encoding/json
// gives everywhere else, so module code sees one number type.
func numbersToFloat(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbersToFloat(e)
		}
		return x
	case []any:
		for i := range x {
			x[i] = numbersToFloat(x[i])
		}
		return x
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return f
	default:
		return v
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

// MarshalJSON writes the section as IoT Hub does: the document with its
// "$version" member.
func (p Properties) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(p.Doc)+1)
	for k, v := range p.Doc {
		m[k] = v
	}
	m["$version"] = p.Version
	return json.Marshal(m)
}

// MarshalJSON writes {"desired":{…},"reported":{…}}.
func (t Twin) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Desired  Properties `json:"desired"`
		Reported Properties `json:"reported"`
	}{t.Desired, t.Reported})
}
