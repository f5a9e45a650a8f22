package ota

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tinyedge/tinyedge/build/bundle"
)

// binSize is the size of the test binaries: several copy buffers, so a
// crash can land half way through writing one.
const binSize = 3*copyBufSize + 1234

var testKeys = sync.OnceValue(func() [2]ed25519.PrivateKey {
	_, a := bundle.GenerateKey()
	_, b := bundle.GenerateKey()
	return [2]ed25519.PrivateKey{a, b}
})

// signingKey signs the test bundles; otherKey is not trusted.
func signingKey() ed25519.PrivateKey { return testKeys()[0] }
func otherKey() ed25519.PrivateKey   { return testKeys()[1] }
func trusted() []ed25519.PublicKey {
	return []ed25519.PublicKey{signingKey().Public().(ed25519.PublicKey)}
}

// binary returns the bytes of the test binary of version v: each version
// has distinct bytes, so the content of a slot names its version.
func binary(v string) []byte {
	b := make([]byte, binSize)
	seed := sha256.Sum256([]byte(v))
	for i := range b {
		b[i] = seed[i%len(seed)] ^ byte(i/len(seed))
	}
	copy(b, "TINYEDGE "+v+"\n")
	return b
}

// versionOf returns the version whose test binary the file at path holds
// exactly, or fails the test: the file is missing, partial or foreign.
func versionOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read chosen binary: %v", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	v, ok := strings.CutPrefix(string(line), "TINYEDGE ")
	if !ok || !bytes.Equal(b, binary(v)) {
		t.Fatalf("%s is not a complete test binary (%d bytes, starts %q)", path, len(b), line)
	}
	return v
}

type payload struct {
	name string
	data []byte
}

// makeBundle returns a bundle of m with payloads, signed with key.
func makeBundle(t testing.TB, key ed25519.PrivateKey, m bundle.Manifest, payloads ...payload) []byte {
	t.Helper()
	var src []bundle.PayloadSource
	for _, p := range payloads {
		data := p.data
		src = append(src, bundle.PayloadSource{Name: p.name, Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}})
	}
	var buf bytes.Buffer
	if err := bundle.Create(&buf, key, m, src); err != nil {
		t.Fatalf("bundle.Create: %v", err)
	}
	return buf.Bytes()
}

var updates sync.Map // version -> bundle bytes

// update returns a signed arm64 bundle of version v's test binary.
func update(t testing.TB, v string) []byte {
	if b, ok := updates.Load(v); ok {
		return b.([]byte)
	}
	b := makeBundle(t, signingKey(), bundle.Manifest{Version: v, GOARCH: "arm64"}, payload{BinaryName, binary(v)})
	updates.Store(v, b)
	return b
}

func applyOpts(current string) ApplyOpts {
	return ApplyOpts{TrustedKeys: trusted(), GOARCH: "arm64", CurrentVersion: current}
}

// newDevice returns a data directory whose slot a holds version 1.0.0
// and no state: a device as flashed.
func newDevice(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeSlot(t, dir, SlotA, "1.0.0")
	return dir
}

func writeSlot(t *testing.T, dir string, s Slot, v string) {
	t.Helper()
	p := BinaryPath(dir, s)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, binary(v), 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustApply(t *testing.T, dir, v, current string) Result {
	t.Helper()
	res, err := Apply(context.Background(), dir, bytes.NewReader(update(t, v)), applyOpts(current))
	if err != nil {
		t.Fatalf("Apply %s: %v", v, err)
	}
	return res
}

func mustBoot(t *testing.T, dir string) Decision {
	t.Helper()
	d, err := Boot(dir, nil)
	if err != nil {
		t.Fatalf("Boot: %v", err)
	}
	return d
}

// bootVersion boots and returns the version of the chosen binary.
func bootVersion(t *testing.T, dir string) (Decision, string) {
	t.Helper()
	d := mustBoot(t, dir)
	if d.Path == "" {
		t.Fatalf("Boot chose the installed binary (%s), want a slot", d.Reason)
	}
	return d, versionOf(t, d.Path)
}

func mustStatus(t *testing.T, dir string) State {
	t.Helper()
	st, err := Status(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// confirmedDevice returns a device that updated from 1.0.0 (slot a) to
// 2.0.0 (slot b) and confirmed it: b active, a previous.
func confirmedDevice(t *testing.T) string {
	t.Helper()
	dir := newDevice(t)
	mustApply(t, dir, "2.0.0", "1.0.0")
	if _, v := bootVersion(t, dir); v != "2.0.0" {
		t.Fatalf("boot after apply runs %s, want 2.0.0", v)
	}
	if err := Confirm(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// snapshot maps every file and directory under dir to its mode, size and
// SHA-256.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += fmt.Sprintf(" %d %s", len(b), hex.EncodeToString(sum[:8]))
		}
		m[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffSnapshots(before, after map[string]string) string {
	var d []string
	for k, v := range before {
		if after[k] != v {
			d = append(d, fmt.Sprintf("%s: %q -> %q", k, v, after[k]))
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			d = append(d, fmt.Sprintf("%s: new %q", k, v))
		}
	}
	return strings.Join(d, "\n")
}

var errInjected = errors.New("injected crash")

// failpoints maps a data directory to the failpoint of the test using it,
// so that tests on different directories can run in parallel.
var failpoints sync.Map // string -> func(step string) error

func init() {
	failpoint = func(dataDir, step string) error {
		if fp, ok := failpoints.Load(dataDir); ok {
			return fp.(func(string) error)(step)
		}
		return nil
	}
}

// withFailpoint runs fn with a failpoint on dir recording every step and
// failing the one numbered crashAt (from 0; -1 for none). It returns the
// steps hit, the failing one last.
func withFailpoint(dir string, crashAt int, fn func() error) ([]string, error) {
	var steps []string
	failpoints.Store(dir, func(step string) error {
		steps = append(steps, step)
		if len(steps)-1 == crashAt {
			return errInjected
		}
		return nil
	})
	defer failpoints.Delete(dir)
	err := fn()
	return steps, err
}

// applyBytes applies bundle b as a device running current.
func applyBytes(dir string, b []byte, current string) (Result, error) {
	return Apply(context.Background(), dir, bytes.NewReader(b), applyOpts(current))
}

// copyDevice copies the data directory src to a new temporary directory,
// keeping modes and modification times.
func copyDevice(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Chtimes(to, fi.ModTime(), fi.ModTime())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
