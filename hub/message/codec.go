package message

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// codecVersion is the version of the stored form Marshal writes. A newer
// binary reads every older version; an older binary refuses a newer one.
const codecVersion = 1

// ErrNewerFormat is returned (wrapped) by Unmarshal for a record written by
// a newer tinyedge.
var ErrNewerFormat = errors.New("message record from a newer tinyedge")

// record is the stored form of a Message: CBOR with integer keys, so it
// stays small, and a version.
type record struct {
	V      int               `cbor:"0,keyasint"`
	Body   []byte            `cbor:"1,keyasint,omitempty"`
	Props  map[string]string `cbor:"2,keyasint,omitempty"`
	Kind   Kind              `cbor:"3,keyasint,omitempty"`
	Seq    uint64            `cbor:"4,keyasint,omitempty"`
	MID    string            `cbor:"5,keyasint,omitempty"`
	CID    string            `cbor:"6,keyasint,omitempty"`
	UID    string            `cbor:"7,keyasint,omitempty"`
	To     string            `cbor:"8,keyasint,omitempty"`
	CT     string            `cbor:"9,keyasint,omitempty"`
	CE     string            `cbor:"10,keyasint,omitempty"`
	CTime  int64             `cbor:"11,keyasint,omitempty"` // Unix nanoseconds; 0 = unset (see storedTime)
	Exp    int64             `cbor:"12,keyasint,omitempty"`
	ETime  int64             `cbor:"13,keyasint,omitempty"`
	CDID   string            `cbor:"14,keyasint,omitempty"`
	CMID   string            `cbor:"15,keyasint,omitempty"`
	Out    string            `cbor:"16,keyasint,omitempty"`
	In     string            `cbor:"17,keyasint,omitempty"`
	Schema string            `cbor:"18,keyasint,omitempty"`
	IfID   string            `cbor:"19,keyasint,omitempty"`
	Sub    string            `cbor:"20,keyasint,omitempty"`
	// The times that Unix nanoseconds cannot hold (see storedTime), as
	// text; a binary from before these keys ignores them.
	CTimeX string `cbor:"21,keyasint,omitempty"`
	ExpX   string `cbor:"22,keyasint,omitempty"`
	ETimeX string `cbor:"23,keyasint,omitempty"`
}

var (
	encMode = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	decMode = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			MaxNestedLevels:  4,
			MaxArrayElements: 16,
			MaxMapPairs:      MaxSize, // never more pairs than bytes
			DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

// nanoSecs bounds the Unix seconds of the times Unix nanoseconds surely
// hold: an int64 of nanoseconds reaches from 1677-09-21 to 2262-04-11.
const nanoSecs = math.MaxInt64 / int64(time.Second)

// storedTime is t as the record keeps it: as Unix nanoseconds, or, for a
// time those cannot hold, as text (wide). Such are the times before 1678
// or after 2262 (an ISO 8601 time from a client may be any year from
// 0000 to 9999), and the Unix epoch itself, whose 0 would read as unset.
// The text is the Unix seconds and nine digits of nanoseconds:
// "-2208988800.000000000" is 1900-01-01, and any time.Time has one.
func storedTime(t time.Time) (n int64, wide string) {
	if t.IsZero() {
		return 0, ""
	}
	if s := t.Unix(); s > -nanoSecs && s < nanoSecs {
		if n := t.UnixNano(); n != 0 {
			return n, ""
		}
	}
	return 0, wideTime(t)
}

func wideTime(t time.Time) string {
	return strconv.FormatInt(t.Unix(), 10) + "." + fmt.Sprintf("%09d", t.Nanosecond())
}

// loadedTime is the time storedTime kept as n or wide.
func loadedTime(n int64, wide string) (time.Time, error) {
	switch {
	case wide != "":
		return parseWideTime(wide)
	case n == 0:
		return time.Time{}, nil
	}
	return time.Unix(0, n).UTC(), nil
}

func parseWideTime(wide string) (time.Time, error) {
	secs, frac, ok := strings.Cut(wide, ".")
	sec, err1 := strconv.ParseInt(secs, 10, 64)
	nsec, err2 := strconv.ParseUint(frac, 10, 32)
	if !ok || err1 != nil || err2 != nil || len(frac) != 9 || nsec >= 1e9 {
		return time.Time{}, fmt.Errorf("time %q is not seconds.nanoseconds", wide)
	}
	return time.Unix(sec, int64(nsec)).UTC(), nil
}

// marshalGeneral is Marshal through fxamacker/cbor, which Marshal must
// match byte for byte.
func marshalGeneral(m *Message) ([]byte, error) {
	s := &m.System
	ctime, ctimeX := storedTime(s.CreationTime)
	exp, expX := storedTime(s.ExpiryTime)
	etime, etimeX := storedTime(s.EnqueuedTime)
	return encMode.Marshal(record{
		V: codecVersion, Body: m.Body, Props: m.Properties, Kind: m.Kind, Seq: m.Seq,
		MID: s.MessageID, CID: s.CorrelationID, UID: s.UserID, To: s.To, CT: s.ContentType, CE: s.ContentEncoding,
		CTime: ctime, Exp: exp, ETime: etime, CTimeX: ctimeX, ExpX: expX, ETimeX: etimeX,
		CDID: s.ConnectionDeviceID, CMID: s.ConnectionModuleID, Out: s.OutputName, In: s.InputName,
		Schema: s.MessageSchema, IfID: s.InterfaceID, Sub: s.ComponentName,
	})
}

// decodeSlow decodes a record the fast decoder does not take (an older
// or unusual encoding). Its record, not Unmarshal's, goes to the heap:
// inlined, it would take Unmarshal's there with it.
//
//go:noinline
func decodeSlow(b []byte) (record, error) {
	var r record
	err := decMode.Unmarshal(b, &r)
	return r, err
}

// Unmarshal decodes what Marshal wrote. The message's Body may share b's
// storage (b is a store item's payload, copied out of the file and not
// used again): the caller must not change b afterwards.
func Unmarshal(b []byte) (*Message, error) {
	var r record
	if !decodeFast(b, &r) {
		var err error
		if r, err = decodeSlow(b); err != nil {
			return nil, fmt.Errorf("decode message record: %w", err)
		}
	}
	switch {
	case r.V > codecVersion:
		return nil, fmt.Errorf("decode message record: %w: version %d, this binary reads up to %d; upgrade tinyedge", ErrNewerFormat, r.V, codecVersion)
	case r.V < 1:
		return nil, fmt.Errorf("decode message record: no version")
	}
	if len(r.Body) == 0 {
		r.Body = nil // as Marshal left it out
	}
	ctime, err1 := loadedTime(r.CTime, r.CTimeX)
	exp, err2 := loadedTime(r.Exp, r.ExpX)
	etime, err3 := loadedTime(r.ETime, r.ETimeX)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("decode message record: %w", err)
	}
	m := &Message{Body: r.Body, Properties: r.Props, Kind: r.Kind, Seq: r.Seq}
	if m.Properties == nil {
		m.Properties = map[string]string{}
	}
	m.System = System{
		MessageID: r.MID, CorrelationID: r.CID, UserID: r.UID, To: r.To, ContentType: r.CT, ContentEncoding: r.CE,
		CreationTime: ctime, ExpiryTime: exp, EnqueuedTime: etime,
		ConnectionDeviceID: r.CDID, ConnectionModuleID: r.CMID, OutputName: r.Out, InputName: r.In,
		MessageSchema: r.Schema, InterfaceID: r.IfID, ComponentName: r.Sub,
	}
	return m, nil
}
