package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/veraison/go-cose"
)

// magic starts every bundle; its last byte is the container version. It
// is also the external_aad of the signature, so a signed manifest cannot
// be moved into another container version.
var magic = [8]byte{'T', 'E', 'B', 'N', 'D', 'L', 0, 1}

// headerSize is the magic and the uint32 length of the COSE_Sign1.
const headerSize = len(magic) + 4

// kidSize is the length of the kid header: the key id as bytes.
const kidSize = 8

// Reader reads a bundle whose signature has been verified: the manifest,
// then each payload, hashed as it streams.
type Reader struct {
	src   io.Reader
	m     Manifest
	raw   []byte // the manifest bytes the signature covers
	keyID string
	next  int            // index of the payload Next returns next
	cur   *payloadReader // the payload being read
	err   error          // sticky: io.EOF after the last payload, or the failure
}

// Open reads a bundle's header and signed manifest from r and verifies the
// signature against keys: it succeeds when any of them verifies it (several
// keys allow rotating the signing key). It reads at most 12 +
// MaxSignedManifest bytes, and no payload byte, before the signature is
// checked. Payloads are then read, in order, with Next.
func Open(r io.Reader, keys []ed25519.PublicKey) (*Reader, error) {
	if len(keys) == 0 {
		return nil, newError(ErrNoTrustedKeys, "no trusted public keys to verify with; give the .pub file of the key the bundles are signed with")
	}
	for i, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, newError(ErrKey, "trusted key %d is %d bytes, an Ed25519 public key is %d", i+1, len(k), ed25519.PublicKeySize)
		}
	}
	msg, kid, err := readSigned(r)
	if err != nil {
		return nil, err
	}
	key, err := verify(msg, kid, keys)
	if err != nil {
		return nil, err
	}
	m, err := decodeManifest(msg.Payload)
	if err != nil {
		return nil, err
	}
	return &Reader{src: r, m: m, raw: msg.Payload, keyID: KeyID(key)}, nil
}

// PeekManifest reads the header and manifest of a bundle WITHOUT checking
// the signature, and returns the manifest and the key id the bundle says
// it was signed with. It is for showing a user what a bundle claims to be
// (`tinyedge bundle inspect`); never act on it. It reads no payload.
func PeekManifest(r io.Reader) (Manifest, string, error) {
	msg, kid, err := readSigned(r)
	if err != nil {
		return Manifest{}, "", err
	}
	m, err := decodeManifest(msg.Payload)
	return m, hex.EncodeToString(kid), err
}

// Manifest returns the verified manifest.
func (r *Reader) Manifest() Manifest {
	m := r.m
	m.Payloads = append([]Payload(nil), r.m.Payloads...)
	return m
}

// KeyID returns the id of the trusted key that verified the bundle.
func (r *Reader) KeyID() string { return r.keyID }

// Next returns the next payload's manifest entry and a reader of its
// bytes, or io.EOF after the last. The reader hashes what it returns and,
// at the end of the payload, returns io.EOF only when the SHA-256 matches
// the manifest (and, for the last payload, nothing follows it); otherwise
// it returns ErrDigestMismatch, ErrTruncated (which also matches
// io.ErrUnexpectedEOF) or ErrFormat. So a consumer that copies it to a
// temporary file and commits only when the copy returns no error never
// commits altered bytes. It never reads past the payload's size.
//
// Calling Next before the previous payload is read to its end reads and
// checks the rest of it. Once a payload fails, Next returns that error.
func (r *Reader) Next() (Payload, io.Reader, error) {
	if r.err != nil {
		return Payload{}, nil, r.err
	}
	if r.cur != nil {
		if _, err := io.Copy(io.Discard, r.cur); err != nil {
			return Payload{}, nil, err
		}
		r.cur = nil
	}
	if r.next == len(r.m.Payloads) {
		r.err = io.EOF
		return Payload{}, nil, io.EOF
	}
	p := r.m.Payloads[r.next]
	r.next++
	r.cur = &payloadReader{r: r, p: p, left: p.Size, h: sha256.New(), last: r.next == len(r.m.Payloads)}
	return p, r.cur, nil
}

var _ io.Reader = (*payloadReader)(nil)

// payloadReader streams one payload, hashing it.
type payloadReader struct {
	r    *Reader
	p    Payload
	left int64
	h    hash.Hash
	last bool
	end  error // once set, what every Read returns: io.EOF or the failure
}

func (pr *payloadReader) Read(b []byte) (int, error) {
	if pr.end != nil {
		return 0, pr.end
	}
	if pr.left == 0 {
		pr.finish()
		return 0, pr.end
	}
	if int64(len(b)) > pr.left {
		b = b[:pr.left]
	}
	n, err := pr.r.src.Read(b)
	pr.h.Write(b[:n])
	pr.left -= int64(n)
	switch {
	case pr.left == 0:
		pr.finish()
		if pr.end != io.EOF {
			return n, pr.end
		}
		return n, nil
	case err == io.EOF:
		pr.fail(wrapError(ErrTruncated, io.ErrUnexpectedEOF, "the bundle ends %d bytes into payload %q of %d bytes; the file or download was cut short, fetch it again", pr.p.Size-pr.left, pr.p.Name, pr.p.Size))
		return n, pr.end
	case err != nil:
		pr.fail(fmt.Errorf("bundle: read payload %q: %w", pr.p.Name, err))
		return n, pr.end
	}
	return n, nil
}

// finish checks the digest and, after the last payload, that nothing
// follows.
func (pr *payloadReader) finish() {
	var sum [sha256.Size]byte
	pr.h.Sum(sum[:0])
	if sum != pr.p.SHA256 {
		pr.fail(newError(ErrDigestMismatch, "payload %q has SHA-256 %x, the signed manifest says %x; it was altered or damaged, fetch the bundle again", pr.p.Name, sum, pr.p.SHA256))
		return
	}
	if pr.last {
		var one [1]byte
		switch _, err := io.ReadFull(pr.r.src, one[:]); {
		case err == nil:
			pr.fail(newError(ErrFormat, "data follows the last payload %q; the bundle was damaged or made by something else", pr.p.Name))
			return
		case err != io.EOF:
			pr.fail(fmt.Errorf("bundle: read after payload %q: %w", pr.p.Name, err))
			return
		}
	}
	pr.end = io.EOF
}

func (pr *payloadReader) fail(err error) {
	pr.end = err
	pr.r.err = err
}

// readSigned reads the magic, the length and the COSE_Sign1, decodes it
// and checks its shape. It does not verify the signature.
func readSigned(r io.Reader) (*cose.Sign1Message, []byte, error) {
	var hdr [headerSize]byte
	n, err := io.ReadFull(r, hdr[:len(magic)])
	if n == 0 && err == io.EOF {
		return nil, nil, newError(ErrNotBundle, "not a tinyedge bundle: the input is empty")
	}
	if k := min(n, 7); !bytes.Equal(hdr[:k], magic[:k]) {
		return nil, nil, newError(ErrNotBundle, "not a tinyedge bundle: it starts with %q, a bundle with %q; is this the right file?", hdr[:n], magic[:7])
	}
	if err := readErr(err, "header", n); err != nil {
		return nil, nil, err
	}
	if hdr[7] != magic[7] {
		return nil, nil, newError(ErrFormatVersion, "bundle container version %d is not one this tinyedge reads (%d); update tinyedge first", hdr[7], magic[7])
	}
	n, err = io.ReadFull(r, hdr[len(magic):])
	if err := readErr(err, "header", len(magic)+n); err != nil {
		return nil, nil, err
	}
	size := binary.BigEndian.Uint32(hdr[len(magic):])
	if size == 0 || size > MaxSignedManifest {
		return nil, nil, newError(ErrFormat, "the signed manifest is %d bytes; this reader accepts 1 to %d", size, MaxSignedManifest)
	}
	buf := make([]byte, size)
	n, err = io.ReadFull(r, buf)
	if err := readErr(err, "signed manifest", headerSize+n); err != nil {
		return nil, nil, err
	}
	if buf[0] != 0xd2 {
		return nil, nil, newError(ErrFormat, "the signed manifest is not a tagged COSE_Sign1 (CBOR tag 18)")
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(buf); err != nil {
		if errors.Is(err, cose.ErrEmptySignature) {
			return nil, nil, newError(ErrUnsigned, "the manifest has an empty signature; sign the bundle with `tinyedge bundle create --key`")
		}
		return nil, nil, newError(ErrFormat, "the signed manifest is not a valid COSE_Sign1: %v", err)
	}
	if msg.Payload == nil {
		return nil, nil, newError(ErrFormat, "the COSE_Sign1 has no attached manifest")
	}
	alg, err := msg.Headers.Protected.Algorithm()
	if err != nil {
		return nil, nil, newError(ErrUnsigned, "the COSE_Sign1 names no signature algorithm; tinyedge bundles are signed with EdDSA (Ed25519)")
	}
	if alg != cose.AlgorithmEdDSA {
		return nil, nil, newError(ErrBadSignature, "the bundle is signed with %v; tinyedge accepts EdDSA (Ed25519) only", alg)
	}
	kid, ok := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(kid) != kidSize || len(msg.Headers.Protected) != 2 {
		return nil, nil, newError(ErrFormat, "the protected header must hold exactly alg (EdDSA) and an %d-byte kid", kidSize)
	}
	if again, err := msg.Headers.Protected.MarshalCBOR(); err != nil || !bytes.Equal(again, msg.Headers.RawProtected) {
		return nil, nil, newError(ErrFormat, "the protected header is not in canonical CBOR encoding")
	}
	if !bytes.Equal(msg.Headers.RawUnprotected, []byte{0xa0}) {
		return nil, nil, newError(ErrFormat, "the unprotected header must be empty")
	}
	// One encoding per manifest and signature: refuse non-minimal CBOR
	// lengths and the like, so that the bytes that verify are unique.
	if again, err := msg.MarshalCBOR(); err != nil || !bytes.Equal(again, buf) {
		return nil, nil, newError(ErrFormat, "the signed manifest is not in canonical CBOR encoding")
	}
	return &msg, kid, nil
}

// readErr turns a short read at offset off into ErrTruncated.
func readErr(err error, where string, off int) error {
	switch err {
	case nil:
		return nil
	case io.EOF, io.ErrUnexpectedEOF:
		return wrapError(ErrTruncated, io.ErrUnexpectedEOF, "the bundle ends in its %s, after %d bytes; the file or download was cut short, fetch it again", where, off)
	}
	return fmt.Errorf("bundle: read %s: %w", where, err)
}

// verify returns the key among keys that verifies msg.
func verify(msg *cose.Sign1Message, kid []byte, keys []ed25519.PublicKey) (ed25519.PublicKey, error) {
	claimed := hex.EncodeToString(kid)
	named := false
	for _, k := range keys {
		v, err := cose.NewVerifier(cose.AlgorithmEdDSA, k)
		if err != nil {
			return nil, wrapError(ErrKey, err, "trusted key %s: %v", KeyID(k), err)
		}
		if msg.Verify(magic[:], v) == nil {
			return k, nil
		}
		named = named || KeyID(k) == claimed
	}
	if named {
		return nil, newError(ErrBadSignature, "the signature by trusted key %s does not verify: the manifest or its signature was altered or damaged; fetch the bundle again", claimed)
	}
	return nil, newError(ErrBadSignature, "signature does not verify with any of the %d trusted keys (key ids %s); the bundle names key id %s; was it signed with the right key?", len(keys), keyIDs(keys), claimed)
}
