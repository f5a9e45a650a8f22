package bundle

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "release")
	pub, priv := GenerateKey()
	keyPath, pubPath, err := WriteKeyFiles(name, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	if keyPath != name+".key" || pubPath != name+".pub" {
		t.Errorf("paths %s, %s", keyPath, pubPath)
	}
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	gotPriv, err := LoadPrivateKey(keyPath)
	if err != nil || !gotPriv.Equal(priv) {
		t.Errorf("LoadPrivateKey: %v, equal %v", err, gotPriv.Equal(priv))
	}
	gotPubs, err := LoadPublicKeys(pubPath)
	if err != nil || len(gotPubs) != 1 || !gotPubs[0].Equal(pub) {
		t.Errorf("LoadPublicKeys: %v, %d keys", err, len(gotPubs))
	}
	b, _ := os.ReadFile(keyPath)
	if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("private key file starts %q, want a PKCS#8 PEM block", b[:20])
	}
	b, _ = os.ReadFile(pubPath)
	if !bytes.HasPrefix(b, []byte("-----BEGIN PUBLIC KEY-----\n")) {
		t.Errorf("public key file starts %q, want a PKIX PEM block", b[:20])
	}

	// Never overwrite: neither when both exist nor when only one does.
	if _, _, err := WriteKeyFiles(name, pub, priv); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second WriteKeyFiles: %v, want a refusal", err)
	}
	os.Remove(keyPath)
	if _, _, err := WriteKeyFiles(name, pub, priv); err == nil || !strings.Contains(err.Error(), "release.pub exists") {
		t.Errorf("WriteKeyFiles over a .pub: %v, want a refusal", err)
	}
	if _, err := os.Stat(keyPath); err == nil {
		t.Error("a refused WriteKeyFiles wrote the private key")
	}
}

func TestLoadPrivateKeyRefusesOpenPermissions(t *testing.T) {
	dir := t.TempDir()
	pub, priv := GenerateKey()
	keyPath, _, err := WriteKeyFiles(filepath.Join(dir, "k"), pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadPrivateKey(keyPath)
		if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "chmod 600 "+keyPath) {
			t.Errorf("mode %04o: %v, want ErrKey telling to chmod 600", mode, err)
		}
	}
	os.Chmod(keyPath, 0o400)
	if _, err := LoadPrivateKey(keyPath); err != nil {
		t.Errorf("mode 0400: %v, want accepted", err)
	}
}

func TestKeyParsingRefusals(t *testing.T) {
	dir := t.TempDir()
	pub, priv := GenerateKey()
	privPEM, _ := MarshalPrivateKey(priv)
	pubPEM, _ := MarshalPublicKey(pub)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER})
	ecPrivDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPrivPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecPrivDER})
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"private.pub", privPEM, "is a private key; give the .pub file"},
		{"ecdsa.pub", ecPEM, "not an Ed25519 public key"},
		{"empty.pub", nil, "no PUBLIC KEY PEM block"},
		{"garbage.pub", []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), "garbage.pub"},
	} {
		_, err := LoadPublicKeys(write(tc.name, tc.b, 0o644))
		if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrKey saying %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"public.key", pubPEM, "no PRIVATE KEY PEM block"},
		{"ecdsa.key", ecPrivPEM, "not an Ed25519 private key"},
	} {
		_, err := LoadPrivateKey(write(tc.name, tc.b, 0o600))
		if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrKey saying %q", tc.name, err, tc.want)
		}
	}
	// Several keys in one file, and several files.
	pub2, _ := GenerateKey()
	pub2PEM, _ := MarshalPublicKey(pub2)
	both := write("both.pub", append(append([]byte("# current and next\n"), pubPEM...), pub2PEM...), 0o644)
	keys, err := LoadPublicKeys(both, write("one.pub", pubPEM, 0o644))
	if err != nil || len(keys) != 3 || !keys[0].Equal(pub) || !keys[1].Equal(pub2) {
		t.Errorf("LoadPublicKeys of two files: %d keys, %v", len(keys), err)
	}
	if _, err := LoadPublicKeys(filepath.Join(dir, "missing.pub")); err == nil || !strings.Contains(err.Error(), "missing.pub") {
		t.Errorf("missing file: %v", err)
	}
}

func TestKeyID(t *testing.T) {
	// A fixed key, so the id stays stable across releases: device configs
	// and logs name keys by it.
	pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	id := KeyID(pub)
	if _, err := hex.DecodeString(id); err != nil || len(id) != 16 {
		t.Fatalf("KeyID = %q, want 16 hex digits", id)
	}
	const want = "139e3940e64b5491" // openssl pkey -pubout of the seed, raw key | sha256sum
	if id != want {
		t.Errorf("KeyID of the zero-seed key = %s, want %s", id, want)
	}
}
