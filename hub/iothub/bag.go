package iothub

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tinyedge/tinyedge/hub/message"
)

// Prop is one property of a bag. Null is a key written without `=`; Value is
// then empty.
type Prop struct {
	Key, Value string
	Null       bool
}

// Bag is a property bag in wire order.
type Bag []Prop

// ParseBag decodes a property bag: `key=value&key=value`, each part
// percent-encoded. Empty parts (a trailing `&`, the empty bag) are skipped.
// A `+` is a plus sign, not a space, as for decodeURIComponent. Decoded keys
// and values must be UTF-8 and keys must not be empty.
func ParseBag(s string) (Bag, error) {
	if s == "" {
		return nil, nil
	}
	bag := make(Bag, 0, strings.Count(s, "&")+1)
	for i := 1; s != ""; i++ {
		var part string
		part, s, _ = strings.Cut(s, "&")
		if part == "" {
			continue
		}
		rawKey, rawValue, hasValue := strings.Cut(part, "=")
		key, err := unescape(rawKey)
		if err != nil {
			return nil, fmt.Errorf("property bag part %d %q: key: %w", i, part, err)
		}
		if key == "" {
			return nil, fmt.Errorf("property bag part %d %q: empty key", i, part)
		}
		p := Prop{Key: key, Null: !hasValue}
		if hasValue {
			if p.Value, err = unescape(rawValue); err != nil {
				return nil, fmt.Errorf("property bag part %d %q: value of %q: %w", i, part, key, err)
			}
		}
		bag = append(bag, p)
	}
	return bag, nil
}

// Encode writes the bag as the SDKs do: keys and values percent-encoded
// like encodeURIComponent, parts joined with `&`, a null value as its key
// alone.
func (b Bag) Encode() string {
	var buf []byte
	for i, p := range b {
		if i > 0 {
			buf = append(buf, '&')
		}
		buf = appendEscape(buf, p.Key)
		if !p.Null {
			buf = append(buf, '=')
			buf = appendEscape(buf, p.Value)
		}
	}
	return string(buf)
}

// Get returns the value of the last property named key and whether there is
// one.
func (b Bag) Get(key string) (string, bool) {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i].Key == key {
			return b[i].Value, true
		}
	}
	return "", false
}

// unreservedURI reports whether encodeURIComponent leaves c as it is.
func unreservedURI(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.!~*'()", c) >= 0
}

// Escape percent-encodes s like JavaScript's encodeURIComponent (and Node's
// querystring.escape): everything but letters, digits and -_.!~*'() becomes
// %XX of its UTF-8 bytes, upper-case hex.
func Escape(s string) string {
	return escapeWith(s, unreservedURI)
}

// EscapeStrict is Escape that also encodes !'()*, like the SDKs'
// encodeUriComponentStrict used in SAS tokens.
func EscapeStrict(s string) string {
	return escapeWith(s, func(c byte) bool {
		return unreservedURI(c) && strings.IndexByte("!'()*", c) < 0
	})
}

func escapeWith(s string, keep func(byte) bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !keep(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

// unreservedTable is unreservedURI for every byte.
var unreservedTable = func() (t [256]bool) {
	for c := range 256 {
		t[c] = unreservedURI(byte(c))
	}
	return t
}()

// appendEscape appends Escape(s) to b.
func appendEscape(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreservedTable[c] {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return b
}

// unescape decodes %XX escapes like decodeURIComponent: a bad escape or a
// result that is not UTF-8 is an error; `+` stays a plus.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		if !utf8.ValidString(s) {
			return "", fmt.Errorf("not UTF-8")
		}
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", fmt.Errorf("bad escape at byte %d", i)
		}
		b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("not UTF-8 after decoding")
	}
	return string(b), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// System property names in a bag.
const (
	KeyMessageID          = "$.mid"
	KeyCorrelationID      = "$.cid"
	KeyUserID             = "$.uid"
	KeyTo                 = "$.to"
	KeyExpiry             = "$.exp"
	KeyContentType        = "$.ct"
	KeyContentEncoding    = "$.ce"
	KeyCreationTime       = "$.ctime"
	KeyOutputName         = "$.on"
	KeyConnectionDeviceID = "$.cdid"
	KeyConnectionModuleID = "$.cmid"
	KeySchema             = "$.schema"
	KeyInterfaceID        = "$.ifid"
	KeyComponent          = "$.sub"
)

// TimeLayout is how times travel in a bag ($.exp, $.ctime): JavaScript's
// Date.toISOString.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// MessageFromBag sets m's application and system properties from bag. Known
// `$.` keys fill m.System; $.exp and $.ctime must be ISO 8601 times. Other
// keys, including unknown `$.` ones, become application properties (a null
// as ""). When a key repeats, the last one wins. $.cdid and $.cmid are
// copied as they are: a hub overwrites them from the authenticated identity.
func MessageFromBag(bag Bag, m *message.Message) error {
	if m.Properties == nil {
		m.Properties = map[string]string{}
	}
	s := &m.System
	for _, p := range bag {
		v := p.Value
		switch p.Key {
		case KeyMessageID:
			s.MessageID = v
		case KeyCorrelationID:
			s.CorrelationID = v
		case KeyUserID:
			s.UserID = v
		case KeyTo:
			s.To = v
		case KeyContentType:
			s.ContentType = v
		case KeyContentEncoding:
			s.ContentEncoding = v
		case KeyOutputName:
			s.OutputName = v
		case KeyConnectionDeviceID:
			s.ConnectionDeviceID = v
		case KeyConnectionModuleID:
			s.ConnectionModuleID = v
		case KeySchema:
			s.MessageSchema = v
		case KeyInterfaceID:
			s.InterfaceID = v
		case KeyComponent:
			s.ComponentName = v
		case KeyExpiry, KeyCreationTime:
			var t time.Time
			if v != "" {
				var err error
				if t, err = time.Parse(time.RFC3339Nano, v); err != nil {
					return fmt.Errorf("property %s: %q is not an ISO 8601 time like 2024-01-02T03:04:05.000Z", p.Key, v)
				}
				if err := message.CheckTime(t); err != nil {
					return fmt.Errorf("property %s: %q: %w", p.Key, v, err)
				}
				t = t.UTC()
			}
			if p.Key == KeyExpiry {
				s.ExpiryTime = t
			} else {
				s.CreationTime = t
			}
		default:
			m.Properties[p.Key] = v
		}
	}
	return nil
}

// BagOptions says which hub-set system properties BagFromMessage writes.
type BagOptions struct {
	// Output writes $.on (a module output, on the way to the hub).
	Output bool
	// Identity writes $.cdid and $.cmid (a hub forwarding a message it
	// received from an identity, like edgeHub to IoT Hub).
	Identity bool
}

// BagFromMessage is the bag for m: the set system properties in a fixed
// order ($.mid $.cid $.uid $.to $.exp $.ct $.ce $.ctime $.schema $.ifid
// $.sub, then $.on, $.cdid, $.cmid as opts say), then the application
// properties sorted by name, except those named like a system property
// (they would be read back as one). The input name is not in the bag: it travels in
// the topic (InputTopic).
func BagFromMessage(m *message.Message, opts BagOptions) Bag {
	bag := make(Bag, 0, 8+len(m.Properties))
	eachBagProp(m, opts, func(k, v string) { bag = append(bag, Prop{Key: k, Value: v}) })
	return bag
}

// AppendBag appends BagFromMessage(m, opts).Encode() to b, without making
// the bag: it is on the path of every message sent upstream.
func AppendBag(b []byte, m *message.Message, opts BagOptions) []byte {
	first := true
	eachBagProp(m, opts, func(k, v string) {
		if !first {
			b = append(b, '&')
		}
		first = false
		b = appendEscape(b, k)
		b = append(b, '=')
		b = appendEscape(b, v)
	})
	return b
}

// eachBagProp calls fn with the properties of m's bag, in the order
// BagFromMessage documents.
func eachBagProp(m *message.Message, opts BagOptions, fn func(k, v string)) {
	s := &m.System
	add := func(k, v string) {
		if v != "" {
			fn(k, v)
		}
	}
	add(KeyMessageID, s.MessageID)
	add(KeyCorrelationID, s.CorrelationID)
	add(KeyUserID, s.UserID)
	add(KeyTo, s.To)
	if !s.ExpiryTime.IsZero() {
		add(KeyExpiry, s.ExpiryTime.UTC().Format(TimeLayout))
	}
	add(KeyContentType, s.ContentType)
	add(KeyContentEncoding, s.ContentEncoding)
	if !s.CreationTime.IsZero() {
		add(KeyCreationTime, s.CreationTime.UTC().Format(TimeLayout))
	}
	add(KeySchema, s.MessageSchema)
	add(KeyInterfaceID, s.InterfaceID)
	add(KeyComponent, s.ComponentName)
	if opts.Output {
		add(KeyOutputName, s.OutputName)
	}
	if opts.Identity {
		add(KeyConnectionDeviceID, s.ConnectionDeviceID)
		add(KeyConnectionModuleID, s.ConnectionModuleID)
	}
	// A few properties are the rule: sort their names on the stack.
	var arr [16]string
	keys := arr[:0]
	for k := range m.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if systemKeys[k] {
			continue // it would be read back as the system property
		}
		fn(k, m.Properties[k])
	}
}

var systemKeys = map[string]bool{
	KeyMessageID: true, KeyCorrelationID: true, KeyUserID: true, KeyTo: true, KeyExpiry: true,
	KeyContentType: true, KeyContentEncoding: true, KeyCreationTime: true, KeyOutputName: true,
	KeyConnectionDeviceID: true, KeyConnectionModuleID: true, KeySchema: true, KeyInterfaceID: true,
	KeyComponent: true,
}
