// Package bundle reads and writes tinyedge OTA bundles: one file holding a
// signed manifest and the payloads it describes (the tinyedge binary).
//
// A bundle is verified while it streams. Open reads the header and the
// signed manifest — at most 12 + MaxSignedManifest (64 KiB) bytes — and
// checks the Ed25519 signature against the trusted keys before it returns,
// so no payload byte reaches the caller from a bundle that is not signed by
// a trusted key. Each payload's reader hashes while it is read and fails at
// the end of the payload if the SHA-256 differs from the signed one, so a
// consumer that writes it to a temporary file and commits only when the
// copy succeeds never commits altered bytes. Payloads are never buffered.
//
// # Format
//
// All integers are big-endian. A bundle is, with nothing before or after:
//
//	offset  size  field
//	0       8     magic: "TEBNDL" 0x00 0x01 (the last byte is the container
//	              version; readers refuse any other value)
//	8       4     N, uint32: length of the signed manifest, 1 ≤ N ≤ 65536
//	12      N     the signed manifest: a COSE_Sign1_Tagged message
//	12+N    …     the payloads' bytes, back to back, in manifest order, each
//	              exactly as long as its manifest size; the file ends after
//	              the last one
//
// The signed manifest is COSE_Sign1_Tagged (RFC 9052 §4.2: CBOR tag 18
// around [protected, unprotected, payload, signature]) with
//
//   - protected: a bstr holding the CBOR map {1: -8, 4: kid}: alg EdDSA
//     (Ed25519) and kid, the 8-byte key id of the signing key (the first 8
//     bytes of SHA-256 over the 32-byte raw public key). The map has no
//     other entries. kid is a hint for messages; readers try every trusted
//     key.
//   - unprotected: the empty map (0xa0).
//   - payload: a bstr holding the manifest (attached, never nil).
//   - signature: the 64-byte Ed25519 signature over the Sig_structure
//     ["Signature1", protected, external_aad, payload] (RFC 9052 §4.4) with
//     external_aad = the 8 magic bytes.
//
// The COSE_Sign1 is encoded in deterministic CBOR (RFC 8949 §4.2.1:
// shortest lengths, no indefinite lengths); readers refuse any other
// encoding.
//
// The manifest is a deterministic CBOR map with unsigned integer keys:
//
//	key  name         type                 notes
//	1    format       uint                 1; readers refuse other values
//	2    product      tstr                 "tinyedge"
//	3    version      tstr                 semver 2.0.0, optional leading "v"
//	4    goarch       tstr                 Go GOARCH of the binary: "arm64", "arm"
//	5    goarm        tstr                 "5", "6" or "7" for arm, else ""
//	6    min_version  tstr                 optional: oldest version that may
//	                                       install this bundle (semver)
//	7    created      int                  creation time, Unix seconds, UTC
//	8    payloads     [+ payload]          1 to 64 entries, in file order
//
//	payload = {1: name tstr, 2: size uint, 3: sha256 bstr .size 32}
//
// Names (product, payloads) are 1 to 64 of [A-Za-z0-9._-]; payload names
// are unique. The payload named "tinyedge" is the binary. In format 1
// every key but 6 is required and no other key may appear: a new field,
// even an optional one, means a new format version, so that an old reader
// never ignores what a new writer meant.
//
// The overhead beyond the payloads is about 190 bytes for one payload
// (12 of header, the manifest, 64 of signature and the COSE framing).
// testdata/v1.bundle, verifiable with testdata/v1.pub, is a sample.
//
// # Keys
//
// Private keys are PKCS#8 in a PEM "PRIVATE KEY" block, public keys PKIX
// in a PEM "PUBLIC KEY" block (a public key file may hold several).
// LoadPrivateKey refuses a file that group or others may access.
//
// # Caveats
//
//   - The signature covers the manifest, and the manifest covers each
//     payload through its SHA-256: a payload is known good only when its
//     reader has returned io.EOF. Bytes read before then are unverified;
//     do not act on them before the end.
//   - Open verifies who signed the bundle, not whether this device should
//     install it: call Manifest.CheckTarget and Manifest.CheckUpgrade too.
//   - Created comes from the signer's clock and is informational.
//   - PeekManifest shows a manifest without verifying it, for display only.
package bundle
