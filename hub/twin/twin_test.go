package twin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestApplyMergePatch(t *testing.T) {
	tests := []struct {
		name, doc, patch, want string
	}{
		{"add", `{}`, `{"a":1}`, `{"a":1}`},
		{"replace", `{"a":1}`, `{"a":"x"}`, `{"a":"x"}`},
		{"null deletes", `{"a":1,"b":2}`, `{"a":null}`, `{"b":2}`},
		{"nested merge", `{"o":{"x":1,"y":2}}`, `{"o":{"y":3,"z":4}}`, `{"o":{"x":1,"y":3,"z":4}}`},
		{"nested delete", `{"o":{"x":1,"y":2}}`, `{"o":{"x":null}}`, `{"o":{"y":2}}`},
		{"object replaces scalar", `{"o":1}`, `{"o":{"x":1}}`, `{"o":{"x":1}}`},
		{"array replaces", `{"a":[1,2]}`, `{"a":[3]}`, `{"a":[3]}`},
		{"$version ignored", `{"a":1}`, `{"$version":9,"a":2}`, `{"a":2}`},
		{"delete missing", `{"a":1}`, `{"b":null}`, `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := ParsePatch([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			p := Properties{Version: 4, Doc: doc}
			patch, err := ParsePatch([]byte(tt.patch))
			if err != nil {
				t.Fatal(err)
			}
			v, err := p.Apply(patch)
			if err != nil {
				t.Fatal(err)
			}
			if v != 5 || p.Version != 5 {
				t.Errorf("version = %d (%d), want 5", v, p.Version)
			}
			got, _ := json.Marshal(p.Doc)
			if string(got) != tt.want {
				t.Errorf("doc = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestApplyRefusesOverLimits(t *testing.T) {
	p := Properties{Version: 1, Doc: map[string]any{"keep": "me"}}
	_, err := p.Apply(map[string]any{"big": strings.Repeat("x", MaxSectionSize)})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized patch: %v, want ErrTooLarge", err)
	}
	deep := map[string]any{}
	cur := deep
	for range MaxDepth + 1 {
		next := map[string]any{}
		cur["n"] = next
		cur = next
	}
	_, err = p.Apply(deep)
	if !errors.Is(err, ErrTooDeep) || !strings.Contains(err.Error(), "$.n.n") {
		t.Errorf("deep patch: %v, want ErrTooDeep with the path", err)
	}
	if p.Version != 1 || len(p.Doc) != 1 || p.Doc["keep"] != "me" {
		t.Errorf("a refused patch changed the document: %+v", p)
	}
}

func TestNewSeedsDesired(t *testing.T) {
	tw, err := New(map[string]any{"threshold": 25.0})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(tw)
	if want := `{"desired":{"$version":1,"threshold":25},"reported":{"$version":1}}`; string(b) != want {
		t.Errorf("twin = %s, want %s", b, want)
	}
	c := tw.Clone()
	c.Desired.Doc["threshold"] = 1.0
	if tw.Desired.Doc["threshold"] != 25.0 {
		t.Error("changing a clone changed the twin")
	}
}

var patchCases = []struct {
	in string
	ok bool
}{
	{`{"a":1}`, true},
	{`{"a":{"b":[1,"x",true,null]}}`, true},
	{` {"a":1e400} `, true},
	{`[]`, false},
	{`"x"`, false},
	{`null`, false},
	{`{"a":1} {"b":2}`, false},
	{`{"a":`, false},
	{``, false},
}

func TestParsePatch(t *testing.T) {
	for _, tt := range patchCases {
		_, err := ParsePatch([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("ParsePatch(%q) err = %v, want ok %v", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadPatch) {
			t.Errorf("ParsePatch(%q) err = %v, want ErrBadPatch", tt.in, err)
		}
	}
}

func FuzzParsePatch(f *testing.F) {
	for _, tt := range patchCases {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		patch, err := ParsePatch(b)
		if err != nil {
			return
		}
		p := Properties{Version: 1, Doc: map[string]any{}}
		if _, err := p.Apply(patch); err != nil {
			return
		}
		if _, err := json.Marshal(p); err != nil {
			t.Errorf("applied patch does not marshal: %v", err)
		}
	})
}

func TestDiff(t *testing.T) {
	docs := []string{`{}`, `{"a":1}`, `{"a":1,"o":{"x":1,"y":2}}`, `{"o":5,"l":[1,2]}`, `{"o":{"x":{"deep":true}}}`, `{"l":[1,3],"o":{"x":{}}}`}
	for _, da := range docs {
		for _, db := range docs {
			a, _ := ParsePatch([]byte(da))
			b, _ := ParsePatch([]byte(db))
			p := Properties{Doc: Clone(a)}
			if _, err := p.Apply(Diff(a, b)); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(p.Doc)
			want, _ := json.Marshal(b)
			if string(got) != string(want) {
				t.Errorf("apply(%s, Diff(%s, %s)) = %s, want %s", da, da, db, got, want)
			}
		}
	}
}

func TestNumbersAreFloat64(t *testing.T) {
	p := Properties{}
	if _, err := p.Apply(map[string]any{"i": 3, "u": uint8(4), "f": float32(1.5), "o": map[string]any{"n": int64(7)}}); err != nil {
		t.Fatal(err)
	}
	if p.Doc["i"] != 3.0 || p.Doc["u"] != 4.0 || p.Doc["f"] != 1.5 || p.Doc["o"].(map[string]any)["n"] != 7.0 {
		t.Errorf("doc = %#v, want every number as float64", p.Doc)
	}
}

func TestNumber(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want float64
		ok   bool
	}{
		{25.0, 25, true}, {7, 7, true}, {int64(-3), -3, true}, {" 2.5 ", 2.5, true},
		{"x", 0, false}, {true, 0, false}, {nil, 0, false}, {map[string]any{}, 0, false},
	} {
		got, ok := Number(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Number(%#v) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
