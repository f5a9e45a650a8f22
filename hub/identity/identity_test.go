package identity

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identities.json")
	s := open(t, path)
	if _, ok := s.Key("gw1", "sensor"); ok {
		t.Fatal("Key found an identity in an empty store")
	}
	a, err := s.Module("gw1", "sensor")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Key) != KeySize || len(a.GenerationID) != 18 || a.DeviceID != "gw1" || a.ModuleID != "sensor" {
		t.Fatalf("new identity = %+v", a)
	}
	again, _ := s.Module("gw1", "sensor")
	if again.GenerationID != a.GenerationID || !bytes.Equal(again.Key, a.Key) {
		t.Error("a second Module call made a new identity")
	}
	leaf, err := s.Device("thermostat")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}

	// Read sees the same, sorted.
	list, err := Read(path)
	if err != nil || len(list) != 2 || list[0].DeviceID != "gw1" || !bytes.Equal(list[1].Key, leaf.Key) {
		t.Errorf("Read = %+v, %v", list, err)
	}

	// A new Store on the same file has the same keys.
	s2 := open(t, path)
	k, ok := s2.Key("gw1", "sensor")
	if !ok || !bytes.Equal(k, a.Key) {
		t.Errorf("after reopening, Key = %x, %v; want %x", k, ok, a.Key)
	}
	if got, ok := s2.Lookup("thermostat", ""); !ok || got.GenerationID != leaf.GenerationID || !bytes.Equal(got.Key, leaf.Key) {
		t.Errorf("leaf device after reopening = %+v, %v", got, ok)
	}
	if n := len(s2.List()); n != 2 {
		t.Errorf("List has %d identities, want 2", n)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("data dir holds %d files, want only the store", len(ents))
	}
}

func TestRotateAndRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identities.json")
	s := open(t, path)
	a, _ := s.Module("gw1", "m")
	r, err := s.Rotate("gw1", "m")
	if err != nil {
		t.Fatal(err)
	}
	if r.GenerationID == a.GenerationID || bytes.Equal(r.Key, a.Key) {
		t.Error("Rotate kept the generation id or the key")
	}
	if k, _ := open(t, path).Key("gw1", "m"); !bytes.Equal(k, r.Key) {
		t.Error("the rotated key was not persisted")
	}

	// A module removed and added again is a new generation.
	if err := s.Remove("gw1", "m"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Key("gw1", "m"); ok {
		t.Error("Key still finds a removed identity")
	}
	if err := s.Remove("gw1", "m"); err != nil {
		t.Errorf("removing twice: %v", err)
	}
	b, _ := s.Module("gw1", "m")
	if b.GenerationID == r.GenerationID || bytes.Equal(b.Key, r.Key) {
		t.Error("a re-added module kept its old generation")
	}

	// Retain drops the modules a deployment no longer has, not devices.
	s.Module("gw1", "keep")
	s.Module("gw1", "drop")
	s.Module("other", "drop")
	s.Device("leaf")
	gone, err := s.Retain("gw1", []string{"keep", "m"})
	if err != nil || strings.Join(gone, ",") != "drop" {
		t.Fatalf("Retain = %v, %v; want [drop]", gone, err)
	}
	var left []string
	for _, id := range open(t, path).List() {
		left = append(left, id.DeviceID+"/"+id.ModuleID)
	}
	if got, want := strings.Join(left, " "), "gw1/keep gw1/m leaf/ other/drop"; got != want {
		t.Errorf("after Retain: %s, want %s", got, want)
	}
}

func TestInvalidIDs(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "id.json"))
	for _, tc := range []struct{ dev, mod string }{
		{"", "m"}, {"gw1", ""}, {"gw 1", "m"}, {"gw1", "m/x"}, {"gw1", strings.Repeat("m", 129)},
	} {
		if _, err := s.Module(tc.dev, tc.mod); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Module(%q, %q) = %v, want ErrInvalidID", tc.dev, tc.mod, err)
		}
	}
	if _, err := s.Module("gw1", "a:b.c-d"); err != nil {
		t.Errorf("a valid module id was refused: %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identities.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"identities":[{"deviceId":"gw1"`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Read reports the problem and leaves the file alone.
	if _, err := Read(path); err == nil {
		t.Error("Read accepted a corrupt file")
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("Read moved the corrupt file: %v", err)
	}
	s, err := Open(path)
	var re *RecoveredError
	if !errors.As(err, &re) || s == nil {
		t.Fatalf("Open = %v, %v; want an empty store and a *RecoveredError", s, err)
	}
	if len(s.List()) != 0 {
		t.Error("recovered store is not empty")
	}
	if _, err := os.Stat(re.MovedTo); err != nil || !strings.HasPrefix(re.MovedTo, path+".corrupt-") {
		t.Errorf("the corrupt file was not kept at %s: %v", re.MovedTo, err)
	}
	// The recovered store works and writes a good file.
	if _, err := s.Module("gw1", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err != nil {
		t.Errorf("reopening after recovery: %v", err)
	}
}

func TestWriteFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "sub", "identities.json")) // its directory does not exist
	if _, err := s.Module("gw1", "m"); err == nil {
		t.Fatal("Module succeeded without a place to write")
	}
	if _, ok := s.Key("gw1", "m"); ok {
		t.Error("an identity that was not written is served")
	}
}

// decodeTests are files the decoder must refuse (and one it takes).
var decodeTests = []struct {
	name, doc string
	ok        bool
}{
	{"good", `{"version":1,"identities":[{"deviceId":"gw1","moduleId":"m","generationId":"6123","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","created":"2026-01-01T00:00:00Z"}]}`, true},
	{"empty", `{"version":1,"identities":[]}`, true},
	{"version", `{"version":2,"identities":[]}`, false},
	{"unknown field", `{"version":1,"identities":[],"x":1}`, false},
	{"trailing", `{"version":1,"identities":[]} {}`, false},
	{"bad key", `{"version":1,"identities":[{"deviceId":"gw1","generationId":"1","key":"!!"}]}`, false},
	{"short key", `{"version":1,"identities":[{"deviceId":"gw1","generationId":"1","key":"AAAA"}]}`, false},
	{"no genid", `{"version":1,"identities":[{"deviceId":"gw1","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}`, false},
	{"bad id", `{"version":1,"identities":[{"deviceId":"g w","generationId":"1","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}`, false},
	{"twice", `{"version":1,"identities":[{"deviceId":"a","generationId":"1","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},{"deviceId":"a","generationId":"2","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}`, false},
	{"not json", `identities`, false},
}

func TestDecode(t *testing.T) {
	for _, tt := range decodeTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode([]byte(tt.doc))
			if (err == nil) != tt.ok {
				t.Errorf("decode = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// FuzzDecode checks that the decoder never panics and that whatever it
// accepts survives a round trip through encode.
func FuzzDecode(f *testing.F) {
	for _, tt := range decodeTests {
		f.Add([]byte(tt.doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := decode(data)
		if err != nil {
			return
		}
		b, err := encode(ids)
		if err != nil {
			t.Fatalf("encode of decoded identities: %v", err)
		}
		again, err := decode(b)
		if err != nil || len(again) != len(ids) {
			t.Fatalf("round trip: %v, %d identities, want %d", err, len(again), len(ids))
		}
		for i := range ids {
			a, b := ids[i], again[i]
			if a.DeviceID != b.DeviceID || a.ModuleID != b.ModuleID || a.GenerationID != b.GenerationID || !bytes.Equal(a.Key, b.Key) {
				t.Fatalf("round trip changed %+v into %+v", a, b)
			}
		}
	})
}
