package bundle

import (
	"errors"
	"fmt"
)

// Errors returned by this package. Each is wrapped with the reason and
// what would fix it; test for them with errors.Is.
var (
	// ErrNotBundle means the input does not start with the bundle magic:
	// it is some other file.
	ErrNotBundle = errors.New("bundle: not a tinyedge bundle")
	// ErrFormatVersion means the bundle is in a container or manifest
	// format version this reader does not know; a newer tinyedge made it.
	ErrFormatVersion = errors.New("bundle: unsupported format version")
	// ErrFormat means the bundle is malformed: bad framing, CBOR, COSE or
	// manifest fields, or data after the last payload.
	ErrFormat = errors.New("bundle: malformed bundle")
	// ErrTruncated means the input ended early. Errors wrapping it also
	// match io.ErrUnexpectedEOF.
	ErrTruncated = errors.New("bundle: truncated")
	// ErrUnsigned means the bundle carries no usable signature.
	ErrUnsigned = errors.New("bundle: not signed")
	// ErrBadSignature means the signature does not verify with any trusted
	// key: the bundle was signed by a key that is not trusted, or altered.
	ErrBadSignature = errors.New("bundle: signed by a key that is not trusted")
	// ErrNoTrustedKeys means Open was given no public key to verify with.
	ErrNoTrustedKeys = errors.New("bundle: no trusted keys")
	// ErrDigestMismatch means a payload's SHA-256 differs from the one in
	// the signed manifest: the payload was altered or damaged.
	ErrDigestMismatch = errors.New("bundle: payload digest mismatch")
	// ErrWrongTarget means the bundle was built for another product,
	// architecture or ARM version than this device.
	ErrWrongTarget = errors.New("bundle: built for another target")
	// ErrDowngrade means the bundle's version is older than the running
	// one and downgrades were not allowed.
	ErrDowngrade = errors.New("bundle: downgrade refused")
	// ErrTooOld means the running version is older than the bundle's
	// minimum version to update from.
	ErrTooOld = errors.New("bundle: running version too old for this bundle")
	// ErrKey means a key file is unreadable as an Ed25519 key of the
	// expected kind, or a private key file is readable by group or others.
	ErrKey = errors.New("bundle: bad key")
)

// reasonError is an error of one of the kinds above with its own message;
// cause, if set, is the underlying error (an io error, io.ErrUnexpectedEOF).
type reasonError struct {
	kind  error
	msg   string
	cause error
}

func (e *reasonError) Error() string { return "bundle: " + e.msg }

func (e *reasonError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// newError returns an error of kind with the message "bundle: " + the
// formatted reason.
func newError(kind error, format string, args ...any) error {
	return &reasonError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// wrapError is newError with an underlying cause that errors.Is also finds.
func wrapError(kind, cause error, format string, args ...any) error {
	return &reasonError{kind: kind, msg: fmt.Sprintf(format, args...), cause: cause}
}
