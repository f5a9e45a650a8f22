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
	// kept in the meta bucket under "format". Open converts files of
	// format 1 (see convert.go) and format 2 (see Store.init).
	formatVersion = 3
)

// messageRecord is the value stored once per message: in the messages
// bucket for a message routed to several endpoints, where the targets
// list says which, at which priority and with which TTL; as the value of
// its queue key for a message routed to one endpoint, where the one
// target has only its TTL (the key names the endpoint and the priority;
// records converted from format 1 also keep the name).
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

// endpointRecord is the per-endpoint state, in the endpoints bucket
// under the endpoint's name.
type endpointRecord struct {
	V          uint64 `cbor:"v"`
	ID         uint32 `cbor:"i,omitempty"` // prefix of its keys in queues (format 2)
	Checkpoint uint64 `cbor:"c,omitempty"` // highest acknowledged seq
	Expired    uint64 `cbor:"x,omitempty"` // dropped: expired
	SizeLimit  uint64 `cbor:"s,omitempty"` // dropped: size_limit
	// Acked[p] is the priority p queue's acknowledged prefix (format 3):
	// every key of it up to that seq is acknowledged, whether or not it
	// was deleted yet. Trailing zeros are left out.
	Acked []uint64 `cbor:"a,omitempty"`
}

// decodeEndpoint decodes an endpoint record and checks what the store
// relies on: no more acknowledged prefixes than priorities.
func decodeEndpoint(data []byte) (endpointRecord, error) {
	var r endpointRecord
	if err := decodeRecord(data, &r); err != nil {
		return r, err
	}
	if len(r.Acked) > NumPriorities {
		return r, fmt.Errorf("%w: %d acknowledged prefixes, want at most %d", ErrCorrupt, len(r.Acked), NumPriorities)
	}
	return r, nil
}

// setAcked stores the acknowledged prefixes a in r, without trailing
// zeros.
func (r *endpointRecord) setAcked(a *[NumPriorities]uint64) {
	n := NumPriorities
	for n > 0 && a[n-1] == 0 {
		n--
	}
	r.Acked = append(r.Acked[:0], a[:n]...)
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

// cleanRecord is written by Close in its last transaction, together with
// bbolt's freelist, and deleted by the first transaction of Open: when
// Open finds it, the file was closed cleanly and the counts in it are
// those of the file.
type cleanRecord struct {
	V        uint64          `cbor:"v"`
	Messages int64           `cbor:"m,omitempty"`
	Depths   []endpointDepth `cbor:"d,omitempty"`
}

type endpointDepth struct {
	ID    uint32  `cbor:"i"`
	Depth []int64 `cbor:"d"`
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
	// Every read decodes one: a record of this version is decoded in one
	// pass (the fast decoder's when it can), and only one that does not
	// decode, or is of another version, goes through decodeRecord, which
	// tells a newer record from damage.
	if !decodeMessageFast(data, &r) {
		r = messageRecord{}
		if err := decMode.Unmarshal(data, &r); err != nil {
			r.V = 0
		}
	}
	if r.V == 0 || r.V > recordVersion {
		r = messageRecord{}
		if err := decodeRecord(data, &r); err != nil {
			return nil, err
		}
	}
	if len(r.Targets) == 0 {
		return nil, fmt.Errorf("%w: message without targets", ErrCorrupt)
	}
	for _, t := range r.Targets {
		if t.Endpoint == "" && len(r.Targets) > 1 {
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
// message was routed there. A record with one target without a name is
// stored in the queue of its endpoint, and that target is the
// endpoint's.
func ttlFor(targets []targetRecord, endpoint string) (time.Duration, bool) {
	if len(targets) == 1 && targets[0].Endpoint == "" {
		return time.Duration(targets[0].TTL), true
	}
	for _, t := range targets {
		if t.Endpoint == endpoint {
			return time.Duration(t.TTL), true
		}
	}
	return 0, false
}

// queueKeyLen is the length of a key in the queues bucket: endpoint id
// (4 bytes), priority (1), seq (8).
const queueKeyLen = 13

func queueKey(id uint32, prio uint32, seq uint64) []byte {
	var b [queueKeyLen]byte
	binary.BigEndian.PutUint32(b[0:], id)
	b[4] = byte(prio)
	binary.BigEndian.PutUint64(b[5:], seq)
	return b[:]
}

// queuePrefix is the prefix of the keys of one endpoint's queue of one
// priority.
func queuePrefix(id uint32, prio uint32) []byte { return queueKey(id, prio, 0)[:5] }

// parseQueueKey splits a key of the queues bucket; ok is false for a key
// of the wrong length.
func parseQueueKey(k []byte) (id uint32, prio uint32, seq uint64, ok bool) {
	if len(k) != queueKeyLen {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(k), uint32(k[4]), binary.BigEndian.Uint64(k[5:]), true
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
