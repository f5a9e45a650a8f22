package bundle

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

const (
	// FormatVersion is the manifest format this package writes and the
	// only one it reads. Any new manifest field, even an optional one,
	// gets a new format version, so an old reader never silently ignores
	// something a new writer meant.
	FormatVersion = 1
	// Product is the product name of tinyedge bundles.
	Product = "tinyedge"
	// MaxSignedManifest is the largest COSE_Sign1 (signed manifest) Open
	// accepts, in bytes. It bounds what is read and held before the
	// signature is checked.
	MaxSignedManifest = 64 << 10
	// MaxPayloads is the most payloads a manifest may list.
	MaxPayloads = 64
)

// Manifest describes a bundle: what it is for and what it carries. It is
// what the signature covers.
type Manifest struct {
	Product    string    // "tinyedge"
	Version    string    // semantic version of what the bundle installs
	GOARCH     string    // target architecture, e.g. "arm64", "arm"
	GOARM      string    // "5", "6" or "7" when GOARCH is "arm"; "" otherwise
	MinVersion string    // oldest version it may update from; "" for any
	Created    time.Time // when the bundle was made, to the second
	Payloads   []Payload // in the order their bytes follow the manifest
}

// Payload is one manifest entry: a named blob, its size and its SHA-256.
type Payload struct {
	Name   string
	Size   int64
	SHA256 [32]byte
}

// Target returns the manifest's target as the user knows it, e.g.
// "linux/arm GOARM=6".
func (m Manifest) Target() string { return target(m.GOARCH, m.GOARM) }

func target(goarch, goarm string) string {
	if goarch == "arm" {
		return "linux/arm GOARM=" + goarm
	}
	return "linux/" + goarch
}

// CheckTarget returns an ErrWrongTarget error unless the bundle's binary
// runs on a device whose tinyedge was built for goarch and goarm. An ARM
// bundle for GOARM=N runs where GOARM is N or higher (ARMv7 runs ARMv6
// code, not the other way round).
func (m Manifest) CheckTarget(goarch, goarm string) error {
	if m.Product != Product {
		return newError(ErrWrongTarget, "bundle is for product %q, this device runs %s", m.Product, Product)
	}
	if m.GOARCH != goarch {
		return newError(ErrWrongTarget, "built for %s, this device is %s", m.Target(), target(goarch, goarm))
	}
	if goarch != "arm" || m.GOARM == goarm {
		return nil
	}
	dev, ok := armLevel(goarm)
	if ok && m.GOARM <= dev {
		return nil
	}
	return newError(ErrWrongTarget, "built for %s, this device is %s; an ARMv%s binary does not run on it", m.Target(), target(goarch, goarm), m.GOARM)
}

// armLevel returns the ARM version digit of a GOARM value such as "6" or
// "7,softfloat".
func armLevel(goarm string) (string, bool) {
	if goarm == "" || goarm[0] < '5' || goarm[0] > '7' || (len(goarm) > 1 && goarm[1] != ',') {
		return "", false
	}
	return goarm[:1], true
}

// CheckUpgrade returns an error unless the device running version current
// may install the bundle: ErrTooOld when current is below the bundle's
// MinVersion (always enforced), ErrDowngrade when the bundle's version is
// below current and allowDowngrade is false. Reinstalling the same version
// is allowed.
func (m Manifest) CheckUpgrade(current string, allowDowngrade bool) error {
	cur, err := ParseVersion(current)
	if err != nil {
		return fmt.Errorf("bundle: the running %v; cannot compare it with the bundle's %s", err, m.Version)
	}
	v, err := ParseVersion(m.Version)
	if err != nil {
		return newError(ErrFormat, "manifest %v", err)
	}
	if m.MinVersion != "" {
		min, err := ParseVersion(m.MinVersion)
		if err != nil {
			return newError(ErrFormat, "manifest minimum %v", err)
		}
		if cur.Compare(min) < 0 {
			return newError(ErrTooOld, "version %s updates only from %s or later, this device runs %s; apply an intermediate update first", m.Version, m.MinVersion, current)
		}
	}
	if v.Compare(cur) < 0 && !allowDowngrade {
		return newError(ErrDowngrade, "version %s is older than the running %s; allow downgrades explicitly to go back on purpose", m.Version, current)
	}
	return nil
}

// The manifest on the wire: a CBOR map with small integer keys (see doc.go).
type wireManifest struct {
	Format     uint64        `cbor:"1,keyasint"`
	Product    string        `cbor:"2,keyasint"`
	Version    string        `cbor:"3,keyasint"`
	GOARCH     string        `cbor:"4,keyasint"`
	GOARM      string        `cbor:"5,keyasint"`
	MinVersion string        `cbor:"6,keyasint,omitempty"`
	Created    int64         `cbor:"7,keyasint"`
	Payloads   []wirePayload `cbor:"8,keyasint"`
}

type wirePayload struct {
	Name   string `cbor:"1,keyasint"`
	Size   uint64 `cbor:"2,keyasint"`
	SHA256 []byte `cbor:"3,keyasint"`
}

// Manifest keys by format 1: required and optional, top level and payload.
var (
	manifestRequired = []uint64{1, 2, 3, 4, 5, 7, 8}
	manifestOptional = []uint64{6}
	payloadRequired  = []uint64{1, 2, 3}
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  MaxPayloads,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// encodeManifest validates m and returns its CBOR encoding.
func encodeManifest(m Manifest) ([]byte, error) {
	w := wireManifest{
		Format:     FormatVersion,
		Product:    m.Product,
		Version:    m.Version,
		GOARCH:     m.GOARCH,
		GOARM:      m.GOARM,
		MinVersion: m.MinVersion,
		Created:    m.Created.Unix(),
	}
	for _, p := range m.Payloads {
		w.Payloads = append(w.Payloads, wirePayload{Name: p.Name, Size: uint64(p.Size), SHA256: p.SHA256[:]})
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return encMode.Marshal(w)
}

// decodeManifest parses and validates a manifest. Unknown keys, missing
// required keys and unknown format versions are refused.
func decodeManifest(b []byte) (Manifest, error) {
	var top map[uint64]cbor.RawMessage
	if err := decMode.Unmarshal(b, &top); err != nil {
		return Manifest{}, newError(ErrFormat, "manifest is not a CBOR map with integer keys: %v", err)
	}
	var format uint64
	if raw, ok := top[1]; !ok {
		return Manifest{}, newError(ErrFormat, "manifest has no format version (key 1)")
	} else if err := decMode.Unmarshal(raw, &format); err != nil {
		return Manifest{}, newError(ErrFormat, "manifest format version (key 1) is not an unsigned integer")
	}
	if format != FormatVersion {
		return Manifest{}, newError(ErrFormatVersion, "manifest format version %d is not one this tinyedge reads (%d); update tinyedge first, or ask for a bundle in format %d", format, FormatVersion, FormatVersion)
	}
	if err := checkKeys(top, manifestRequired, manifestOptional, "manifest"); err != nil {
		return Manifest{}, err
	}
	var rawPayloads []map[uint64]cbor.RawMessage
	if err := decMode.Unmarshal(top[8], &rawPayloads); err != nil {
		return Manifest{}, newError(ErrFormat, "manifest payloads (key 8): %v", err)
	}
	for i, p := range rawPayloads {
		if err := checkKeys(p, payloadRequired, nil, fmt.Sprintf("manifest payload %d", i)); err != nil {
			return Manifest{}, err
		}
	}
	var w wireManifest
	if err := decMode.Unmarshal(b, &w); err != nil {
		return Manifest{}, newError(ErrFormat, "manifest: %v", err)
	}
	m := Manifest{
		Product:    w.Product,
		Version:    w.Version,
		GOARCH:     w.GOARCH,
		GOARM:      w.GOARM,
		MinVersion: w.MinVersion,
		Created:    time.Unix(w.Created, 0).UTC(),
	}
	for i, p := range w.Payloads {
		if p.Size > math.MaxInt64 {
			return Manifest{}, newError(ErrFormat, "manifest payload %d (%q) has size %d, too large", i, p.Name, p.Size)
		}
		if len(p.SHA256) != 32 {
			return Manifest{}, newError(ErrFormat, "manifest payload %d (%q) has a %d-byte SHA-256, want 32", i, p.Name, len(p.SHA256))
		}
		mp := Payload{Name: p.Name, Size: int64(p.Size)}
		copy(mp.SHA256[:], p.SHA256)
		m.Payloads = append(m.Payloads, mp)
	}
	again, err := encodeManifest(m)
	if err != nil {
		return Manifest{}, err
	}
	if !bytes.Equal(again, b) {
		return Manifest{}, newError(ErrFormat, "the manifest is not in deterministic CBOR encoding")
	}
	return m, nil
}

func checkKeys(m map[uint64]cbor.RawMessage, required, optional []uint64, where string) error {
	for _, k := range required {
		if _, ok := m[k]; !ok {
			return newError(ErrFormat, "%s lacks required key %d", where, k)
		}
	}
	for k := range m {
		if !slices.Contains(required, k) && !slices.Contains(optional, k) {
			return newError(ErrFormat, "%s has key %d, unknown in format %d", where, k, FormatVersion)
		}
	}
	return nil
}

// validate checks the fields of a manifest, for Create and after decoding.
func (m Manifest) validate() error {
	if !isName(m.Product) {
		return newError(ErrFormat, "manifest product %q must be 1 to 64 letters, digits, '.', '_' or '-'", m.Product)
	}
	v, err := ParseVersion(m.Version)
	if err != nil {
		return newError(ErrFormat, "manifest %v", err)
	}
	if m.MinVersion != "" {
		min, err := ParseVersion(m.MinVersion)
		if err != nil {
			return newError(ErrFormat, "manifest minimum %v", err)
		}
		if min.Compare(v) > 0 {
			return newError(ErrFormat, "manifest minimum version %s is above the bundle's version %s", m.MinVersion, m.Version)
		}
	}
	if m.GOARCH == "" || len(m.GOARCH) > 16 || strings.Trim(m.GOARCH, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return newError(ErrFormat, "manifest GOARCH %q is not a Go architecture name such as arm64 or arm", m.GOARCH)
	}
	switch {
	case m.GOARCH == "arm" && (len(m.GOARM) != 1 || m.GOARM < "5" || m.GOARM > "7"):
		return newError(ErrFormat, "manifest GOARM %q for GOARCH arm must be 5, 6 or 7", m.GOARM)
	case m.GOARCH != "arm" && m.GOARM != "":
		return newError(ErrFormat, "manifest GOARM %q is set for GOARCH %s; GOARM applies to arm only", m.GOARM, m.GOARCH)
	}
	if len(m.Payloads) == 0 {
		return newError(ErrFormat, "manifest lists no payloads")
	}
	if len(m.Payloads) > MaxPayloads {
		return newError(ErrFormat, "manifest lists %d payloads, more than %d", len(m.Payloads), MaxPayloads)
	}
	seen := map[string]bool{}
	for i, p := range m.Payloads {
		if !isName(p.Name) {
			return newError(ErrFormat, "manifest payload %d: name %q must be 1 to 64 letters, digits, '.', '_' or '-'", i, p.Name)
		}
		if seen[p.Name] {
			return newError(ErrFormat, "manifest payload %d: name %q appears twice", i, p.Name)
		}
		seen[p.Name] = true
		if p.Size < 0 {
			return newError(ErrFormat, "manifest payload %q: negative size %d", p.Name, p.Size)
		}
	}
	return nil
}

func isName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Digest returns the payload's SHA-256 in hex.
func (p Payload) Digest() string { return hex.EncodeToString(p.SHA256[:]) }
