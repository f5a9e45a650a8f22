package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Open and the payload readers. It
// checks that nothing panics; that Open reads at most the header before
// it decides; that a bundle opens only if its manifest is one the test
// signed (so no payload byte comes from an unverified bundle); and that a
// payload reader ends cleanly only after exactly the signed size and
// digest.
func FuzzOpen(f *testing.F) {
	pub, priv := GenerateKey()
	otherPub, otherPriv := GenerateKey()
	keys := []ed25519.PublicKey{otherPub, pub}
	signed := map[string]bool{} // manifests signed with a trusted key
	add := func(b []byte) []byte {
		msg, _, err := readSigned(bytes.NewReader(b))
		if err == nil {
			signed[string(msg.Payload)] = true
		}
		return b
	}
	good := add(makeBundle(f, priv, testManifest(), "tinyedge", randomBytes(300, 8), "empty", []byte{}, "notes", []byte("n")))
	rotated := add(makeBundle(f, otherPriv, Manifest{Version: "2.0.0-rc.1", GOARCH: "arm64", Created: testCreated}, "tinyedge", []byte("bin")))
	_, untrusted := GenerateKey()
	n := headerLen(good)
	seeds := [][]byte{
		good,
		rotated,
		makeBundle(f, untrusted, testManifest(), "tinyedge", []byte("bin")),
		good[:n],
		good[:n-1],
		good[:n+100],
		append(bytes.Clone(good), "trailing"...),
		nil,
		[]byte("TEBNDL\x00\x01\x00\x00\x00\x04\xd2\x84\x00\x00"),
		[]byte("TEBNDL\x00\x02"),
		[]byte("\x7fELF"),
	}
	for _, off := range []int{0, 9, 20, n / 2, n - 2, n + 5} {
		bad := bytes.Clone(good)
		bad[off] ^= 0x01
		seeds = append(seeds, bad)
	}
	for _, raw := range []map[uint64]any{wire(), func() map[uint64]any { m := wire(); m[1] = 2; return m }()} {
		b, _ := encMode.Marshal(raw)
		seeds = append(seeds, add(signRaw(f, priv, b, []byte("bin"))))
	}
	for _, s := range seeds {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		cr := &countingReader{r: bytes.NewReader(data)}
		r, err := Open(cr, keys)
		if cr.n > headerSize+MaxSignedManifest {
			t.Fatalf("Open read %d bytes before deciding, more than the %d-byte header limit", cr.n, headerSize+MaxSignedManifest)
		}
		if err != nil {
			if r != nil {
				t.Fatal("Open returned a reader with an error")
			}
			if !isRefusal(err) {
				t.Fatalf("Open: %v is none of the refusal errors", err)
			}
			return
		}
		if !signed[string(r.raw)] {
			t.Fatalf("Open verified a manifest nobody signed: %x", r.raw)
		}
		buf := make([]byte, 4096)
		for {
			p, pr, err := r.Next()
			if err != nil {
				return
			}
			h := sha256.New()
			var got int64
			for {
				n, err := pr.Read(buf)
				got += int64(n)
				h.Write(buf[:n])
				if got > p.Size {
					t.Fatalf("payload %q gave %d bytes, its size is %d", p.Name, got, p.Size)
				}
				if err == io.EOF {
					if got != p.Size || [32]byte(h.Sum(nil)) != p.SHA256 {
						t.Fatalf("payload %q ended cleanly after %d bytes of %d, digest %x, want %x", p.Name, got, p.Size, h.Sum(nil), p.SHA256)
					}
					break
				}
				if err != nil {
					if !isRefusal(err) && !errors.Is(err, ErrDigestMismatch) {
						t.Fatalf("payload %q: %v is none of the refusal errors", p.Name, err)
					}
					return
				}
			}
		}
	})
}
