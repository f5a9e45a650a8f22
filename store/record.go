package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

const (
	// recordVersion is the newest record version this binary writes and
	// understands. A record with a larger "v" is refused.
	recordVersion = 1
	// formatVersion is the newest file layout this binary understands,
	// kept in the meta bucket under "format".
	formatVersion = 1
)

// messageRecord is the value stored once per message in the messages
// bucket. The targets list makes each record self-describing: which
// endpoints it was routed to, at which priority and with which TTL.
type messageRecord struct {
	V        uint64         `cbor:"v"`
	Enqueued int64          `cbor:"t"`           // Unix nanoseconds
	Trusted  bool           `cbor:"c,omitempty"` // clock trusted at enqueue
	Props    []byte         `cbor:"h,omitempty"` // caller's properties, opaque
	Payload  []byte         `cbor:"p,omitempty"` // caller's body, opaque
	Targets  []targetRecord `cbor:"e"`
}

// messageHeader decodes a messageRecord without copying the body.
type messageHeader struct {
	V        uint64         `cbor:"v"`
	Enqueued int64          `cbor:"t"`
	Trusted  bool           `cbor:"c,omitempty"`
	Targets  []targetRecord `cbor:"e"`
}

type targetRecord struct {
	Endpoint string `cbor:"n"`
	Priority uint32 `cbor:"p,omitempty"`
	TTL      int64  `cbor:"l"` // nanoseconds; negative: never expires
}

// endpointRecord is the per-endpoint state kept beside its queues.
type endpointRecord struct {
	V          uint64 `cbor:"v"`
	Checkpoint uint64 `cbor:"c,omitempty"` // highest acknowledged seq
	Expired    uint64 `cbor:"x,omitempty"` // dropped: expired
	SizeLimit  uint64 `cbor:"s,omitempty"` // dropped: size_limit
}

type twinRecord struct {
	V               uint64 `cbor:"v"`
	Desired         []byte `cbor:"d,omitempty"`
	Reported        []byte `cbor:"r,omitempty"`
	DesiredVersion  int64  `cbor:"dv,omitempty"`
	ReportedVersion int64  `cbor:"rv,omitempty"`
}

type patchRecord struct {
	V      uint64 `cbor:"v"`
	Patch  []byte `cbor:"p,omitempty"`
	Queued int64  `cbor:"t,omitempty"`
}

type formatRecord struct {
	V uint64 `cbor:"v"`
}

// versioned is decoded first so that a newer record is refused before its
// fields are interpreted.
type versioned struct {
	V uint64 `cbor:"v"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	// Limits keep a damaged or hostile record from allocating much.
	if decMode, err = (cbor.DecOptions{
		MaxNestedLevels:  8,
		MaxArrayElements: 4096,
		MaxMapPairs:      64,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
	}).DecMode(); err != nil {
		panic(err)
	}
}

func encodeRecord(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("store: encode record: %w", err)
	}
	return b, nil
}

// decodeRecord checks the version of data, then decodes it into v.
func decodeRecord(data []byte, v any) error {
	var ver versioned
	if err := decMode.Unmarshal(data, &ver); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if ver.V == 0 {
		return fmt.Errorf("%w: no version field", ErrCorrupt)
	}
	if ver.V > recordVersion {
		return &VersionError{What: "record", Got: ver.V, Known: recordVersion}
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// decodeMessage decodes a message record and checks what the store relies
// on: at least one target, each with a name.
func decodeMessage(data []byte) (*messageRecord, error) {
	var r messageRecord
	if err := decodeRecord(data, &r); err != nil {
		return nil, err
	}
	if len(r.Targets) == 0 {
		return nil, fmt.Errorf("%w: message without targets", ErrCorrupt)
	}
	for _, t := range r.Targets {
		if t.Endpoint == "" {
			return nil, fmt.Errorf("%w: target without endpoint", ErrCorrupt)
		}
	}
	return &r, nil
}

func decodeHeader(data []byte) (*messageHeader, error) {
	var h messageHeader
	if err := decodeRecord(data, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// ttlFor returns the TTL of the message for endpoint, and whether the
// message was routed there.
func ttlFor(targets []targetRecord, endpoint string) (time.Duration, bool) {
	for _, t := range targets {
		if t.Endpoint == endpoint {
			return time.Duration(t.TTL), true
		}
	}
	return 0, false
}

// Keys are big-endian so that bbolt's byte order is numeric order.
func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
