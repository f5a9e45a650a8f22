package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(baseManifest))
	f.Add([]byte(""))
	f.Add([]byte(`{"content": {"modulesContent": {}}}`))
	f.Add([]byte(`{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {"a": {"type": "builtin", "settings": {"image": "builtin:filter", "createOptions": "{", "createOptions01": "}"}}}}}, "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {"r": {"route": "FROM /messages/* INTO $upstream", "priority": 9}}}}}}`))
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data, testResolver)
		if err == nil {
			if m == nil {
				t.Fatal("no error and no manifest")
			}
			for _, w := range m.Warnings {
				if !strings.HasPrefix(w.Path, "$") {
					t.Fatalf("warning without a path: %#v", w)
				}
			}
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("err = %T %v, want non-empty Problems", err, err)
		}
		for _, p := range ps {
			if !strings.HasPrefix(p.Path, "$") && p.Line <= 0 {
				t.Fatalf("problem with neither path nor line: %#v", p)
			}
			if p.Msg == "" {
				t.Fatalf("problem without a message: %#v", p)
			}
		}
	})
}
