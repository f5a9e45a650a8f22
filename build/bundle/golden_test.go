package bundle

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/v1.bundle and v1.pub with a fresh key (the private key is not kept)")

// TestGoldenV1 reads a bundle made by an earlier build: format 1 must stay
// readable. testdata/v1.bundle is also a test vector for readers in other
// languages (its public key is testdata/v1.pub).
func TestGoldenV1(t *testing.T) {
	bundlePath, pubPath := filepath.Join("testdata", "v1.bundle"), filepath.Join("testdata", "v1.pub")
	payload := []byte("#!/bin/true\n")
	if *update {
		pub, priv := GenerateKey()
		m := Manifest{Version: "1.4.0-rc.1", GOARCH: "arm", GOARM: "6", MinVersion: "1.2.0", Created: testCreated}
		pubPEM, _ := MarshalPublicKey(pub)
		if err := os.WriteFile(bundlePath, makeBundle(t, priv, m, "tinyedge", payload), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := LoadPublicKeys(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(bytes.NewReader(b), keys)
	if err != nil {
		t.Fatalf("Open %s: %v", bundlePath, err)
	}
	m := r.Manifest()
	want := Manifest{Product: "tinyedge", Version: "1.4.0-rc.1", GOARCH: "arm", GOARM: "6", MinVersion: "1.2.0", Created: testCreated,
		Payloads: []Payload{{Name: "tinyedge", Size: int64(len(payload)), SHA256: sha256.Sum256(payload)}}}
	if m.Product != want.Product || m.Version != want.Version || m.Target() != want.Target() || m.MinVersion != want.MinVersion ||
		!m.Created.Equal(want.Created) || len(m.Payloads) != 1 || m.Payloads[0] != want.Payloads[0] {
		t.Errorf("manifest\n got %+v\nwant %+v", m, want)
	}
	_, pr, _ := r.Next()
	if got, err := io.ReadAll(pr); err != nil || !bytes.Equal(got, payload) {
		t.Errorf("payload %q, %v", got, err)
	}
	if n := len(b) - len(payload); n != headerLen(b) {
		t.Errorf("%d bytes before the payload, want the %d of the header and the signed manifest", n, headerLen(b))
	}
}
