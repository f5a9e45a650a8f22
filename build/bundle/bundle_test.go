package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// bytesSource is a payload held in memory.
func bytesSource(name string, b []byte) PayloadSource {
	return PayloadSource{
		Name: name,
		Size: int64(len(b)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
	}
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

var testCreated = time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC)

func testManifest() Manifest {
	return Manifest{Version: "1.2.3", GOARCH: "arm", GOARM: "6", MinVersion: "1.0.0", Created: testCreated}
}

// makeBundle returns a bundle of the given payloads (name, bytes pairs).
func makeBundle(t testing.TB, priv ed25519.PrivateKey, m Manifest, payloads ...any) []byte {
	t.Helper()
	var srcs []PayloadSource
	for i := 0; i < len(payloads); i += 2 {
		srcs = append(srcs, bytesSource(payloads[i].(string), payloads[i+1].([]byte)))
	}
	var buf bytes.Buffer
	if err := Create(&buf, priv, m, srcs); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return buf.Bytes()
}

// headerLen returns the length of the header region: magic, length and
// signed manifest.
func headerLen(b []byte) int {
	return headerSize + int(binary.BigEndian.Uint32(b[8:12]))
}

// readAll reads every payload of r and returns them by name, or the first
// error.
func readAll(r *Reader) (map[string][]byte, error) {
	got := map[string][]byte{}
	for {
		p, pr, err := r.Next()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		b, err := io.ReadAll(pr)
		got[p.Name] = b
		if err != nil {
			return got, err
		}
	}
}

func TestRoundTrip(t *testing.T) {
	pub, priv := GenerateKey()
	bin := randomBytes(100_000, 1)
	notes := []byte("release notes")
	b := makeBundle(t, priv, testManifest(), "tinyedge", bin, "empty", []byte{}, "notes", notes)

	r, err := Open(bytes.NewReader(b), []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	m := r.Manifest()
	if m.Product != "tinyedge" || m.Version != "1.2.3" || m.GOARCH != "arm" || m.GOARM != "6" || m.MinVersion != "1.0.0" || !m.Created.Equal(testCreated) {
		t.Errorf("manifest %+v, want what was created", m)
	}
	want := []Payload{
		{Name: "tinyedge", Size: int64(len(bin)), SHA256: sha256.Sum256(bin)},
		{Name: "empty", Size: 0, SHA256: sha256.Sum256(nil)},
		{Name: "notes", Size: int64(len(notes)), SHA256: sha256.Sum256(notes)},
	}
	if len(m.Payloads) != len(want) {
		t.Fatalf("payloads %+v, want %+v", m.Payloads, want)
	}
	for i := range want {
		if m.Payloads[i] != want[i] {
			t.Errorf("payload %d: got %+v, want %+v", i, m.Payloads[i], want[i])
		}
	}
	if got := r.KeyID(); got != KeyID(pub) {
		t.Errorf("KeyID %s, want %s", got, KeyID(pub))
	}
	got, err := readAll(r)
	if err != nil {
		t.Fatalf("reading payloads: %v", err)
	}
	if !bytes.Equal(got["tinyedge"], bin) || len(got["empty"]) != 0 || !bytes.Equal(got["notes"], notes) {
		t.Errorf("payload bytes differ")
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after the last: %v, want io.EOF", err)
	}
	if over := len(b) - len(bin) - len(notes); over > 400 {
		t.Errorf("overhead %d bytes for 3 payloads; want at most 400", over)
	}
}

func TestCreateFromFile(t *testing.T) {
	pub, priv := GenerateKey()
	path := filepath.Join(t.TempDir(), "tinyedge")
	bin := randomBytes(70_000, 2)
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m := Manifest{Version: "2.0.0", GOARCH: "arm64"}
	if err := Create(&buf, priv, m, []PayloadSource{{Name: "tinyedge", Path: path}}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(&buf, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Manifest().Created; time.Since(c) > time.Minute || c.Nanosecond() != 0 {
		t.Errorf("Created %v, want now to the second", c)
	}
	got, err := readAll(r)
	if err != nil || !bytes.Equal(got["tinyedge"], bin) {
		t.Errorf("payload: err %v, equal %v", err, bytes.Equal(got["tinyedge"], bin))
	}
}

func TestCreateRefuses(t *testing.T) {
	_, priv := GenerateKey()
	one := []PayloadSource{bytesSource("tinyedge", []byte("x"))}
	cases := []struct {
		name     string
		m        Manifest
		payloads []PayloadSource
		want     string
	}{
		{"bad version", Manifest{Version: "1.2", GOARCH: "arm64"}, one, `version "1.2"`},
		{"min above version", Manifest{Version: "1.2.0", MinVersion: "1.3.0", GOARCH: "arm64"}, one, "minimum version 1.3.0 is above"},
		{"arm without GOARM", Manifest{Version: "1.2.0", GOARCH: "arm"}, one, "must be 5, 6 or 7"},
		{"GOARM on arm64", Manifest{Version: "1.2.0", GOARCH: "arm64", GOARM: "7"}, one, "arm only"},
		{"no payloads", Manifest{Version: "1.2.0", GOARCH: "arm64"}, nil, "no payloads"},
		{"duplicate names", Manifest{Version: "1.2.0", GOARCH: "arm64"}, append(one, one...), "appears twice"},
		{"bad name", Manifest{Version: "1.2.0", GOARCH: "arm64"}, []PayloadSource{bytesSource("a/b", nil)}, "name \"a/b\""},
		{"wrong size", Manifest{Version: "1.2.0", GOARCH: "arm64"}, []PayloadSource{{Name: "x", Size: 5, Open: one[0].Open}}, "Size says 5"},
		{"missing file", Manifest{Version: "1.2.0", GOARCH: "arm64"}, []PayloadSource{{Name: "x", Path: "/nonexistent/tinyedge"}}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Create(io.Discard, priv, tc.m, tc.payloads)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Create: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	oldPub, _ := GenerateKey()
	pub, priv := GenerateKey()
	nextPub, _ := GenerateKey()
	b := makeBundle(t, priv, testManifest(), "tinyedge", []byte("bin"))
	r, err := Open(bytes.NewReader(b), []ed25519.PublicKey{oldPub, pub, nextPub})
	if err != nil {
		t.Fatalf("Open with the signing key among three: %v", err)
	}
	if r.KeyID() != KeyID(pub) {
		t.Errorf("verified by %s, want %s", r.KeyID(), KeyID(pub))
	}
	if _, err := readAll(r); err != nil {
		t.Error(err)
	}
}

func TestWrongKey(t *testing.T) {
	_, priv := GenerateKey()
	a, _ := GenerateKey()
	c, _ := GenerateKey()
	b := makeBundle(t, priv, testManifest(), "tinyedge", []byte("bin"))
	r, err := Open(bytes.NewReader(b), []ed25519.PublicKey{a, c})
	if r != nil || !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Open: %v, want ErrBadSignature and no reader", err)
	}
	signer := KeyID(priv.Public().(ed25519.PublicKey))
	for _, want := range []string{"any of the 2 trusted keys", KeyID(a), KeyID(c), "names key id " + signer, "signed with the right key?"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := Open(bytes.NewReader(b), nil); !errors.Is(err, ErrNoTrustedKeys) {
		t.Errorf("Open with no keys: %v, want ErrNoTrustedKeys", err)
	}
	if _, err := Open(bytes.NewReader(b), []ed25519.PublicKey{a[:16]}); !errors.Is(err, ErrKey) {
		t.Errorf("Open with a short key: %v, want ErrKey", err)
	}
}

// kinds an Open of damaged input may fail with.
var refusals = []error{ErrNotBundle, ErrFormatVersion, ErrFormat, ErrTruncated, ErrUnsigned, ErrBadSignature}

func isRefusal(err error) bool {
	for _, k := range refusals {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

func TestTamperedManifest(t *testing.T) {
	pub, priv := GenerateKey()
	keys := []ed25519.PublicKey{pub}
	b := makeBundle(t, priv, testManifest(), "tinyedge", []byte("binary"))
	n := headerLen(b)
	// Every byte of the header, the manifest and the signature, flipped
	// in two ways: never opens, always a refusal.
	for off := 0; off < n; off++ {
		for _, mask := range []byte{0x01, 0x80} {
			bad := bytes.Clone(b)
			bad[off] ^= mask
			r, err := Open(bytes.NewReader(bad), keys)
			if r != nil || !isRefusal(err) {
				t.Fatalf("byte %d ^ %#x: Open = %v, %v; want a refusal", off, mask, r, err)
			}
		}
	}
	// A changed version string still parses: it is the signature that
	// refuses it, naming the trusted key.
	bad := bytes.Replace(b, []byte("1.2.3"), []byte("9.2.3"), 1)
	_, err := Open(bytes.NewReader(bad), keys)
	if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "altered or damaged") || !strings.Contains(err.Error(), KeyID(pub)) {
		t.Errorf("tampered version: %v, want ErrBadSignature saying altered", err)
	}
}

// install is what the device side does with a payload: write it to a
// temporary file and rename it into place only when the copy succeeds.
func install(pr io.Reader, dir, name string) error {
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, pr)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

func TestTamperedPayload(t *testing.T) {
	pub, priv := GenerateKey()
	bin := randomBytes(50_000, 3)
	b := makeBundle(t, priv, testManifest(), "tinyedge", bin, "notes", []byte("notes"))
	n := headerLen(b)
	for _, off := range []int{n, n + 1, n + 4096, n + len(bin) - 1} {
		bad := bytes.Clone(b)
		bad[off] ^= 0x40
		r, err := Open(bytes.NewReader(bad), []ed25519.PublicKey{pub})
		if err != nil {
			t.Fatalf("Open: %v (the manifest is intact)", err)
		}
		dir := t.TempDir()
		_, pr, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		err = install(pr, dir, "tinyedge")
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), `payload "tinyedge" has SHA-256`) {
			t.Errorf("byte %d: install = %v, want ErrDigestMismatch", off, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("byte %d: %d file(s) left in the slot directory, want none", off, len(entries))
		}
		if _, _, err := r.Next(); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("Next after the failure: %v, want the same ErrDigestMismatch", err)
		}
	}
	// The second payload altered: the first installs, the second does not.
	bad := bytes.Clone(b)
	bad[len(bad)-1] ^= 1
	r, err := Open(bytes.NewReader(bad), []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, pr, _ := r.Next(); install(pr, dir, "tinyedge") != nil {
		t.Fatal("the intact first payload did not install")
	}
	if _, pr, _ := r.Next(); !errors.Is(install(pr, dir, "notes"), ErrDigestMismatch) {
		t.Error("the altered second payload installed")
	}
}

func TestTruncated(t *testing.T) {
	pub, priv := GenerateKey()
	keys := []ed25519.PublicKey{pub}
	bin := randomBytes(20_000, 4)
	b := makeBundle(t, priv, testManifest(), "tinyedge", bin, "notes", []byte("notes"))
	n := headerLen(b)
	for off := 0; off < n; off++ {
		r, err := Open(bytes.NewReader(b[:off]), keys)
		want := ErrTruncated
		if off == 0 {
			want = ErrNotBundle
		}
		if r != nil || !errors.Is(err, want) || (off > 0 && !errors.Is(err, io.ErrUnexpectedEOF)) {
			t.Fatalf("cut at %d of the %d-byte header: Open = %v; want %v", off, n, err, want)
		}
	}
	for _, off := range []int{n, n + 1, n + 8191, n + 8192, n + len(bin) - 1, n + len(bin), n + len(bin) + 4} {
		r, err := Open(bytes.NewReader(b[:off]), keys)
		if err != nil {
			t.Fatalf("cut at %d (in the payloads): Open = %v, want success", off, err)
		}
		_, err = readAll(r)
		if !errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "cut short") {
			t.Errorf("cut at %d: reading = %v, want ErrTruncated", off, err)
		}
	}
}

func TestGarbage(t *testing.T) {
	pub, priv := GenerateKey()
	good := makeBundle(t, priv, testManifest(), "tinyedge", []byte("bin"))
	withLen := func(n uint32, rest []byte) []byte {
		b := append(magic[:], 0, 0, 0, 0)
		binary.BigEndian.PutUint32(b[8:], n)
		return append(b, rest...)
	}
	cases := []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrNotBundle, "empty"},
		{"text", []byte("hello, world\n"), ErrNotBundle, `starts with "hello, w"`},
		{"ELF", []byte("\x7fELF\x02\x01\x01\x00\x00"), ErrNotBundle, "right file"},
		{"random", randomBytes(4096, 5), ErrNotBundle, ""},
		{"container version 2", append([]byte("TEBNDL\x00\x02"), good[8:]...), ErrFormatVersion, "update tinyedge first"},
		{"zero length", withLen(0, nil), ErrFormat, "accepts 1 to 65536"},
		{"huge length", withLen(0xffffffff, nil), ErrFormat, "4294967295 bytes"},
		{"just over the limit", withLen(MaxSignedManifest+1, nil), ErrFormat, "65537 bytes"},
		{"not COSE", withLen(4, []byte("abcd")), ErrFormat, "tag 18"},
		{"COSE junk", withLen(4, []byte{0xd2, 0x84, 0x00, 0x00}), ErrFormat, "COSE_Sign1"},
		{"trailing bytes in the COSE", withLen(uint32(headerLen(good)-headerSize+1), append(bytes.Clone(good[headerSize:headerLen(good)]), 0)), ErrFormat, "COSE_Sign1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Open(bytes.NewReader(tc.in), []ed25519.PublicKey{pub})
			if r != nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Open = %v; want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

// signRaw makes a bundle from manifest bytes that Create would not write.
func signRaw(t testing.TB, priv ed25519.PrivateKey, raw []byte, payload []byte) []byte {
	t.Helper()
	signed, err := signManifest(priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeHeader(&buf, signed); err != nil {
		t.Fatal(err)
	}
	buf.Write(payload)
	return buf.Bytes()
}

// wire returns the wire form of a valid manifest for a 3-byte payload
// "bin", to be altered by the tests.
func wire() map[uint64]any {
	sum := sha256.Sum256([]byte("bin"))
	return map[uint64]any{
		1: FormatVersion, 2: "tinyedge", 3: "1.2.3", 4: "arm64", 5: "", 7: testCreated.Unix(),
		8: []any{map[uint64]any{1: "tinyedge", 2: 3, 3: sum[:]}},
	}
}

func TestSignedManifestRefusals(t *testing.T) {
	pub, priv := GenerateKey()
	enc := func(m map[uint64]any) []byte {
		b, err := encMode.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	with := func(f func(m map[uint64]any)) []byte {
		m := wire()
		f(m)
		return enc(m)
	}
	payload0 := func(m map[uint64]any) map[uint64]any { return m[8].([]any)[0].(map[uint64]any) }
	nonMinimal := bytes.Replace(enc(wire()), []byte("\x68tinyedge"), []byte("\x78\x08tinyedge"), 1)
	cases := []struct {
		name string
		raw  []byte
		want error
		msg  string
	}{
		{"valid", enc(wire()), nil, ""},
		{"format 2", with(func(m map[uint64]any) { m[1] = 2 }), ErrFormatVersion, "format version 2 is not one this tinyedge reads (1); update tinyedge first"},
		{"format 0", with(func(m map[uint64]any) { m[1] = 0 }), ErrFormatVersion, "format version 0"},
		{"no format", with(func(m map[uint64]any) { delete(m, 1) }), ErrFormat, "no format version"},
		{"format as text", with(func(m map[uint64]any) { m[1] = "1" }), ErrFormat, "not an unsigned integer"},
		{"unknown key", with(func(m map[uint64]any) { m[9] = "x" }), ErrFormat, "key 9, unknown in format 1"},
		{"missing created", with(func(m map[uint64]any) { delete(m, 7) }), ErrFormat, "lacks required key 7"},
		{"not a map", enc(nil)[:0], ErrFormat, "not a CBOR map"},
		{"array", []byte{0x80}, ErrFormat, "not a CBOR map"},
		{"bad semver", with(func(m map[uint64]any) { m[3] = "1.2" }), ErrFormat, `version "1.2"`},
		{"bad min version", with(func(m map[uint64]any) { m[6] = "one" }), ErrFormat, `minimum version "one"`},
		{"empty min version", with(func(m map[uint64]any) { m[6] = "" }), ErrFormat, "deterministic"},
		{"GOARM on arm64", with(func(m map[uint64]any) { m[5] = "7" }), ErrFormat, "arm only"},
		{"GOARCH with a slash", with(func(m map[uint64]any) { m[4] = "linux/arm64" }), ErrFormat, "GOARCH"},
		{"no payloads", with(func(m map[uint64]any) { m[8] = []any{} }), ErrFormat, "no payloads"},
		{"payload without size", with(func(m map[uint64]any) { delete(payload0(m), 2) }), ErrFormat, "payload 0 lacks required key 2"},
		{"payload with extra key", with(func(m map[uint64]any) { payload0(m)[4] = 1 }), ErrFormat, "payload 0 has key 4"},
		{"short digest", with(func(m map[uint64]any) { payload0(m)[3] = make([]byte, 31) }), ErrFormat, "31-byte SHA-256"},
		{"negative size", with(func(m map[uint64]any) { payload0(m)[2] = -1 }), ErrFormat, "manifest"},
		{"huge size", with(func(m map[uint64]any) { payload0(m)[2] = uint64(1 << 63) }), ErrFormat, "too large"},
		{"duplicate payload", with(func(m map[uint64]any) { m[8] = []any{payload0(m), payload0(m)} }), ErrFormat, "appears twice"},
		{"non-minimal encoding", nonMinimal, ErrFormat, "deterministic"},
		{"duplicate key", append([]byte{0xa8}, append(enc(wire())[1:], 0x01, 0x01)...), ErrFormat, "duplicate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Open(bytes.NewReader(signRaw(t, priv, tc.raw, []byte("bin"))), []ed25519.PublicKey{pub})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if _, err := readAll(r); err != nil {
					t.Fatal(err)
				}
				return
			}
			if r != nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Open = %v; want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

// rawSign1 encodes a COSE_Sign1_Tagged from its parts, for messages the
// library would not make.
func rawSign1(t *testing.T, protected map[int64]any, unprotected []byte, payload, sig []byte) []byte {
	t.Helper()
	var p []byte
	if protected != nil {
		var err error
		if p, err = encMode.Marshal(protected); err != nil {
			t.Fatal(err)
		}
	}
	b, err := encMode.Marshal(cbor.Tag{Number: 18, Content: []any{p, cbor.RawMessage(unprotected), payload, sig}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignatureRefusals(t *testing.T) {
	pub, priv := GenerateKey()
	good := makeBundle(t, priv, testManifest(), "tinyedge", []byte("bin"))
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(good[headerSize:headerLen(good)]); err != nil {
		t.Fatal(err)
	}
	kid := msg.Headers.Protected[cose.HeaderLabelKeyID]
	sig := msg.Signature
	cases := []struct {
		name  string
		sign1 []byte
		want  error
		msg   string
	}{
		{"empty signature", rawSign1(t, map[int64]any{1: -8, 4: kid}, []byte{0xa0}, msg.Payload, []byte{}), ErrUnsigned, "empty signature"},
		{"no algorithm", rawSign1(t, map[int64]any{4: kid}, []byte{0xa0}, msg.Payload, sig), ErrUnsigned, "names no signature algorithm"},
		{"ES256", rawSign1(t, map[int64]any{1: -7, 4: kid}, []byte{0xa0}, msg.Payload, sig), ErrBadSignature, "EdDSA (Ed25519) only"},
		{"no kid", rawSign1(t, map[int64]any{1: -8}, []byte{0xa0}, msg.Payload, sig), ErrFormat, "kid"},
		{"extra protected header", rawSign1(t, map[int64]any{1: -8, 4: kid, 3: "application/cbor"}, []byte{0xa0}, msg.Payload, sig), ErrFormat, "exactly alg"},
		{"unprotected header", rawSign1(t, map[int64]any{1: -8, 4: kid}, []byte{0xa1, 0x04, 0x41, 0x00}, msg.Payload, sig), ErrFormat, "unprotected header must be empty"},
		{"detached", rawSign1(t, map[int64]any{1: -8, 4: kid}, []byte{0xa0}, nil, sig), ErrFormat, "no attached manifest"},
		{"untagged", good[headerSize+1 : headerLen(good)], ErrFormat, "tag 18"},
		{"short signature", rawSign1(t, map[int64]any{1: -8, 4: kid}, []byte{0xa0}, msg.Payload, sig[:63]), ErrBadSignature, "altered"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeHeader(&buf, tc.sign1); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("bin")
			r, err := Open(&buf, []ed25519.PublicKey{pub})
			if r != nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Open = %v; want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestTrailingData(t *testing.T) {
	pub, priv := GenerateKey()
	b := makeBundle(t, priv, testManifest(), "tinyedge", []byte("bin"), "notes", []byte("n"))
	r, err := Open(bytes.NewReader(append(b, 'x')), []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, pr, _ := r.Next(); install(pr, dir, "tinyedge") != nil {
		t.Fatal("the first payload did not install")
	}
	_, pr, _ := r.Next()
	if err := install(pr, dir, "notes"); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), `data follows the last payload "notes"`) {
		t.Errorf("last payload: %v, want ErrFormat about trailing data", err)
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrFormat) {
		t.Errorf("Next: %v, want the trailing-data error again", err)
	}
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadsExactly(t *testing.T) {
	pub, priv := GenerateKey()
	bin := randomBytes(10_000, 6)
	b := makeBundle(t, priv, testManifest(), "tinyedge", bin, "notes", []byte("notes"))
	cr := &countingReader{r: bytes.NewReader(b)}
	r, err := Open(cr, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if cr.n != headerLen(b) {
		t.Errorf("Open read %d bytes, want exactly the %d-byte header: no payload byte before verification", cr.n, headerLen(b))
	}
	_, pr, _ := r.Next()
	// A large buffer: the reader still stops at the payload's end.
	buf := make([]byte, 1<<20)
	got := 0
	for {
		n, err := pr.Read(buf)
		got += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if got != len(bin) || cr.n != headerLen(b)+len(bin) {
		t.Errorf("read %d payload bytes, %d in all; want %d and %d", got, cr.n, len(bin), headerLen(b)+len(bin))
	}
	if n, err := pr.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read after the end = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestNextSkipsUnreadPayload(t *testing.T) {
	pub, priv := GenerateKey()
	b := makeBundle(t, priv, testManifest(), "tinyedge", randomBytes(5000, 7), "notes", []byte("notes"))
	r, err := Open(bytes.NewReader(b), []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	r.Next()
	p, pr, err := r.Next()
	if err != nil || p.Name != "notes" {
		t.Fatalf("Next = %v, %v; want notes", p.Name, err)
	}
	if b, err := io.ReadAll(pr); err != nil || string(b) != "notes" {
		t.Errorf("notes = %q, %v", b, err)
	}
	// A skipped payload is still checked.
	bad := bytes.Clone(b)
	bad[headerLen(b)+10] ^= 1
	r, _ = Open(bytes.NewReader(bad), []ed25519.PublicKey{pub})
	r.Next()
	if _, _, err := r.Next(); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Next past an altered payload: %v, want ErrDigestMismatch", err)
	}
}

func TestPeekManifest(t *testing.T) {
	_, priv := GenerateKey()
	b := makeBundle(t, priv, testManifest(), "tinyedge", []byte("bin"))
	m, kid, err := PeekManifest(bytes.NewReader(b))
	if err != nil || m.Version != "1.2.3" || kid != KeyID(priv.Public().(ed25519.PublicKey)) {
		t.Errorf("PeekManifest = %+v, %s, %v", m, kid, err)
	}
}

// TestStreamsInSmallMemory sends an 8 MiB payload through Create and Open
// connected by a pipe: neither may hold it.
func TestStreamsInSmallMemory(t *testing.T) {
	pub, priv := GenerateKey()
	const size = 8 << 20
	src := PayloadSource{Name: "tinyedge", Size: size, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(io.LimitReader(rand.NewChaCha8([32]byte{9}), size)), nil
	}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Create(pw, priv, testManifest(), []PayloadSource{src})
		pw.CloseWithError(err)
		done <- err
	}()
	r, err := Open(pr, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	_, payload, _ := r.Next()
	n, err := io.Copy(io.Discard, payload)
	if err != nil || n != size {
		t.Fatalf("copied %d, %v", n, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("writing and reading an 8 MiB bundle allocated %d bytes; want under 1 MiB", alloc)
	}
}
