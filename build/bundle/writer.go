package bundle

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/veraison/go-cose"
)

// PayloadSource is a payload for Create: a file at Path, or Size bytes
// from what Open returns. Either is read twice, first to hash it (the
// manifest with the digest comes before the bytes), then to copy it; both
// passes stream.
type PayloadSource struct {
	Name string
	Path string
	Size int64
	Open func() (io.ReadCloser, error)
}

func (s PayloadSource) open() (io.ReadCloser, error) {
	if s.Path != "" {
		return os.Open(s.Path)
	}
	if s.Open == nil {
		return nil, fmt.Errorf("bundle: payload %q has neither a Path nor an Open function", s.Name)
	}
	return s.Open()
}

func (s PayloadSource) String() string {
	if s.Path != "" {
		return s.Path
	}
	return "payload " + s.Name
}

// Create writes a bundle to w: m, with its Payloads filled in from
// payloads (any given in m are replaced), signed with key, followed by the
// payloads' bytes. An empty m.Product means "tinyedge"; a zero m.Created
// means now. If Create fails, what it wrote to w is not a usable bundle.
func Create(w io.Writer, key ed25519.PrivateKey, m Manifest, payloads []PayloadSource) error {
	if len(key) != ed25519.PrivateKeySize {
		return newError(ErrKey, "the signing key is %d bytes, an Ed25519 private key is %d", len(key), ed25519.PrivateKeySize)
	}
	if m.Product == "" {
		m.Product = Product
	}
	if m.Created.IsZero() {
		m.Created = time.Now()
	}
	m.Created = m.Created.UTC().Truncate(time.Second)
	m.Payloads = make([]Payload, len(payloads))
	for i, src := range payloads {
		size, sum, err := hashSource(src, io.Discard)
		if err != nil {
			return err
		}
		if src.Path == "" && size != src.Size {
			return fmt.Errorf("bundle: %s has %d bytes, its Size says %d", src, size, src.Size)
		}
		m.Payloads[i] = Payload{Name: src.Name, Size: size, SHA256: sum}
	}
	raw, err := encodeManifest(m)
	if err != nil {
		return err
	}
	signed, err := signManifest(key, raw)
	if err != nil {
		return err
	}
	if err := writeHeader(w, signed); err != nil {
		return err
	}
	for i, src := range payloads {
		size, sum, err := hashSource(src, w)
		if err != nil {
			return err
		}
		if p := m.Payloads[i]; size != p.Size || sum != p.SHA256 {
			return fmt.Errorf("bundle: %s changed while the bundle was written (%d bytes, SHA-256 %x; hashed as %d bytes, %x); the output is unusable", src, size, sum, p.Size, p.SHA256)
		}
	}
	return nil
}

// hashSource copies src to w and returns its size and SHA-256.
func hashSource(src PayloadSource, w io.Writer) (int64, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	rc, err := src.open()
	if err != nil {
		return 0, sum, fmt.Errorf("bundle: payload %q: %w", src.Name, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), rc)
	if err != nil {
		return 0, sum, fmt.Errorf("bundle: copy %s: %w", src, err)
	}
	h.Sum(sum[:0])
	return n, sum, nil
}

// signManifest returns the COSE_Sign1_Tagged of the manifest bytes raw,
// signed with key (see doc.go for the headers).
func signManifest(key ed25519.PrivateKey, raw []byte) ([]byte, error) {
	kid, err := hex.DecodeString(KeyID(key.Public().(ed25519.PublicKey)))
	if err != nil {
		return nil, err
	}
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, key)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	msg := cose.Sign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{
				cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA,
				cose.HeaderLabelKeyID:     kid,
			},
			Unprotected: cose.UnprotectedHeader{},
		},
		Payload: raw,
	}
	if err := msg.Sign(rand.Reader, magic[:], signer); err != nil {
		return nil, fmt.Errorf("bundle: sign manifest: %w", err)
	}
	signed, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("bundle: encode signed manifest: %w", err)
	}
	if len(signed) > MaxSignedManifest {
		return nil, fmt.Errorf("bundle: the signed manifest is %d bytes, more than the %d a reader accepts; fewer or shorter-named payloads", len(signed), MaxSignedManifest)
	}
	return signed, nil
}

// writeHeader writes the magic, the length of signed, and signed.
func writeHeader(w io.Writer, signed []byte) error {
	hdr := make([]byte, headerSize, headerSize+len(signed))
	copy(hdr, magic[:])
	binary.BigEndian.PutUint32(hdr[len(magic):], uint32(len(signed)))
	if _, err := w.Write(append(hdr, signed...)); err != nil {
		return fmt.Errorf("bundle: write: %w", err)
	}
	return nil
}
