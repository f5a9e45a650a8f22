// Package message defines the message that flows through tinyedge: a body,
// application properties, IoT Hub system properties and the hub's own
// sequence number.
//
// A Message is treated as immutable once it has been handed to the hub: the
// hub may deliver the same value to several sinks at once. Code that wants to
// change a received message makes a copy with Clone first.
package message

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxSize is the largest message the hub accepts, in bytes, counting the
// body and every property key and value. It is IoT Hub's device-to-cloud
// limit.
const MaxSize = 256 * 1024

// ErrTooLarge is returned (wrapped) when a message exceeds MaxSize.
var ErrTooLarge = errors.New("message too large")

// Kind tells ordinary messages apart from the hub's own notifications.
type Kind uint8

const (
	// Telemetry is a message sent by a device or by a module on an output.
	Telemetry Kind = iota
	// TwinChange is a twin change notification; its route source is
	// /twinChangeNotifications.
	TwinChange
)

// System holds the IoT Hub system properties of a message. Empty strings
// and zero times mean "not set".
type System struct {
	MessageID       string
	CorrelationID   string
	UserID          string
	To              string
	ContentType     string
	ContentEncoding string
	CreationTime    time.Time // creationTimeUtc, set by the sender
	ExpiryTime      time.Time // expiryTimeUtc, set by the sender
	EnqueuedTime    time.Time // set by the hub when it accepts the message

	// Set by the hub from the authenticated sender, never from the
	// sender's own claims.
	ConnectionDeviceID string
	ConnectionModuleID string
	OutputName         string

	// InputName is set by the hub on delivery to a module input.
	InputName string

	MessageSchema string // $.schema
	InterfaceID   string // $.ifid
	ComponentName string // $.sub
}

// Message is one message. See the package comment on mutation.
type Message struct {
	Body       []byte
	Properties map[string]string // application properties
	System     System
	Kind       Kind
	// Seq is the hub's sequence number, assigned when the hub accepts the
	// message; ordering uses it, never timestamps.
	Seq uint64
}

// New returns a message with the given body and an empty property map.
func New(body []byte) *Message {
	return &Message{Body: body, Properties: map[string]string{}}
}

// Clone returns a copy whose properties can be changed without affecting m.
// The body is shared; replace it rather than writing into it.
func (m *Message) Clone() *Message {
	c := *m
	if m.Properties != nil {
		c.Properties = make(map[string]string, len(m.Properties))
		for k, v := range m.Properties {
			c.Properties[k] = v
		}
	}
	return &c
}

// Size is the size the hub accounts for m: the body plus every property key
// and value, application and system (by their property-bag names, times as
// ISO 8601 text). It is on every message's path, so it reads the fields
// directly instead of formatting them.
func (m *Message) Size() int {
	n, _ := m.Measure()
	return n
}

// sysLen is the size of a system property with a wire name wire bytes
// long: nothing when it is not set.
func sysLen(v string, wire int) int {
	if v == "" {
		return 0
	}
	return wire + len(v)
}

// timeLen is sysLen for a time, written as 2006-01-02T15:04:05.000Z.
func timeLen(t time.Time, wire int) int {
	if t.IsZero() {
		return 0
	}
	return wire + len("2006-01-02T15:04:05.000Z")
}

// PropertyKeys summarizes the names of a message's application
// properties, for route evaluation (route.NewEnvKeys): it spares the
// evaluator a walk over the properties when the hub has already made one.
type PropertyKeys uint8

// Flags of PropertyKeys.
const (
	KeysDollarKnown PropertyKeys = 1 << iota // KeysDollar is known
	KeysDollar                               // some name starts with $
	KeysLowerKnown                           // KeysLower is known
	KeysLower                                // every name is lower-case ASCII
)

// Keys summarizes the application property names.
func (m *Message) Keys() PropertyKeys {
	keys := KeysDollarKnown | KeysLowerKnown | KeysLower
	for k := range m.Properties {
		if len(k) > 0 && k[0] == '$' {
			keys |= KeysDollar
		}
		if keys&KeysLower != 0 {
			for i := 0; i < len(k); i++ {
				if c := k[i]; c >= 0x80 || (c >= 'A' && c <= 'Z') {
					keys &^= KeysLower
					break
				}
			}
		}
	}
	return keys
}

// Measure returns Size and whether some application property name starts
// with $ (KeysDollarKnown, KeysDollar), in one walk over the properties.
func (m *Message) Measure() (size int, keys PropertyKeys) {
	n := len(m.Body)
	keys = KeysDollarKnown
	for k, v := range m.Properties {
		n += len(k) + len(v)
		if len(k) > 0 && k[0] == '$' {
			keys |= KeysDollar
		}
	}
	s := &m.System
	n += sysLen(s.MessageID, 5) + sysLen(s.CorrelationID, 5) + sysLen(s.UserID, 5) + sysLen(s.To, 4) +
		sysLen(s.ContentType, 4) + sysLen(s.ContentEncoding, 4) + sysLen(s.ConnectionDeviceID, 6) +
		sysLen(s.ConnectionModuleID, 6) + sysLen(s.OutputName, 4) + sysLen(s.InputName, 4) +
		sysLen(s.MessageSchema, 8) + sysLen(s.InterfaceID, 6) + sysLen(s.ComponentName, 5) +
		timeLen(s.CreationTime, 7) + timeLen(s.ExpiryTime, 5) + timeLen(s.EnqueuedTime, 19)
	return n, keys
}

// CheckSize returns an error wrapping ErrTooLarge when m is larger than
// MaxSize; the error says both sizes.
func (m *Message) CheckSize() error {
	return CheckSize(m.Size())
}

// CheckSize returns an error wrapping ErrTooLarge when size is larger than
// MaxSize; the error says both sizes.
func CheckSize(size int) error {
	if size > MaxSize {
		return fmt.Errorf("%w: %d bytes including properties, the limit is %d bytes", ErrTooLarge, size, MaxSize)
	}
	return nil
}

// Source is the route source of m: /messages for device telemetry,
// /messages/modules/{m} for a module message without an output name,
// /messages/modules/{m}/outputs/{o} otherwise, and /twinChangeNotifications
// for twin change notifications.
func (m *Message) Source() string {
	if m.Kind == TwinChange {
		return "/twinChangeNotifications"
	}
	s := &m.System
	if s.ConnectionModuleID == "" {
		return "/messages"
	}
	if s.OutputName == "" {
		return "/messages/modules/" + s.ConnectionModuleID
	}
	return "/messages/modules/" + s.ConnectionModuleID + "/outputs/" + s.OutputName
}

// TimeFormat is how times are written in properties and system properties:
// UTC ISO 8601 with milliseconds, as IoT Hub writes them.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) (string, bool) {
	if t.IsZero() {
		return "", false
	}
	return t.UTC().Format(TimeFormat), true
}

type sysName struct {
	name string // route-language name, without the leading $
	wire string // property-bag name
	get  func(*System) (string, bool)
	set  func(*System, string) error
}

func str(f func(*System) *string) (func(*System) (string, bool), func(*System, string) error) {
	return func(s *System) (string, bool) {
			v := *f(s)
			return v, v != ""
		}, func(s *System, v string) error {
			*f(s) = v
			return nil
		}
}

func tm(f func(*System) *time.Time) (func(*System) (string, bool), func(*System, string) error) {
	return func(s *System) (string, bool) {
			return formatTime(*f(s))
		}, func(s *System, v string) error {
			t, err := ParseTime(v)
			if err != nil {
				return err
			}
			*f(s) = t
			return nil
		}
}

// ParseTime reads a time as IoT Hub and the SDKs write it: RFC 3339 with
// optional fractional seconds, or without a zone (taken as UTC). It
// refuses a time that CheckTime does.
func ParseTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05.999999999Z0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			t = t.UTC()
			if err := CheckTime(t); err != nil {
				return time.Time{}, fmt.Errorf("time %q: %w", v, err)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q is not ISO 8601 (want e.g. 2024-01-02T03:04:05.000Z)", v)
}

// CheckTime refuses a time that falls, in UTC, outside the years 0000 to
// 9999: the hub writes times in UTC, and ISO 8601 has no other years
// ("0000-01-01T00:30:00+01:00" is one such).
func CheckTime(t time.Time) error {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("year %d in UTC is outside 0000–9999, which ISO 8601 writes", y)
	}
	return nil
}

func mk(name, wire string, get func(*System) (string, bool), set func(*System, string) error) sysName {
	return sysName{name: name, wire: wire, get: get, set: set}
}

var systemNames = func() []sysName {
	var out []sysName
	add := func(name, wire string, g func(*System) (string, bool), s func(*System, string) error) {
		out = append(out, mk(name, wire, g, s))
	}
	g, s := str(func(x *System) *string { return &x.MessageID })
	add("messageId", "$.mid", g, s)
	g, s = str(func(x *System) *string { return &x.CorrelationID })
	add("correlationId", "$.cid", g, s)
	g, s = str(func(x *System) *string { return &x.UserID })
	add("userId", "$.uid", g, s)
	g, s = str(func(x *System) *string { return &x.To })
	add("to", "$.to", g, s)
	g, s = str(func(x *System) *string { return &x.ContentType })
	add("contentType", "$.ct", g, s)
	g, s = str(func(x *System) *string { return &x.ContentEncoding })
	add("contentEncoding", "$.ce", g, s)
	g, s = tm(func(x *System) *time.Time { return &x.CreationTime })
	add("creationTimeUtc", "$.ctime", g, s)
	g, s = tm(func(x *System) *time.Time { return &x.ExpiryTime })
	add("expiryTimeUtc", "$.exp", g, s)
	g, s = tm(func(x *System) *time.Time { return &x.EnqueuedTime })
	add("enqueuedTime", "iothub-enqueuedtime", g, s)
	g, s = str(func(x *System) *string { return &x.ConnectionDeviceID })
	add("connectionDeviceId", "$.cdid", g, s)
	g, s = str(func(x *System) *string { return &x.ConnectionModuleID })
	add("connectionModuleId", "$.cmid", g, s)
	g, s = str(func(x *System) *string { return &x.OutputName })
	add("outputName", "$.on", g, s)
	g, s = str(func(x *System) *string { return &x.InputName })
	add("inputName", "$.ii", g, s)
	g, s = str(func(x *System) *string { return &x.MessageSchema })
	add("messageSchema", "$.schema", g, s)
	g, s = str(func(x *System) *string { return &x.InterfaceID })
	add("interfaceId", "$.ifid", g, s)
	g, s = str(func(x *System) *string { return &x.ComponentName })
	add("componentName", "$.sub", g, s)
	return out
}()

func lookup(name string) *sysName {
	for i := range systemNames {
		if strings.EqualFold(systemNames[i].name, name) {
			return &systemNames[i]
		}
	}
	return nil
}

// SystemProperty returns the system property with the route-language name
// (without the $; matched case-insensitively, e.g. "contentType",
// "connectionModuleId"). ok is false when the name is unknown or the
// property is not set.
func (m *Message) SystemProperty(name string) (v string, ok bool) {
	// The common ones first, without the table walk: routes evaluate these
	// on every message.
	s := &m.System
	switch len(name) {
	case 11:
		if strings.EqualFold(name, "contentType") {
			return s.ContentType, s.ContentType != ""
		}
	case 18:
		if strings.EqualFold(name, "connectionModuleId") {
			return s.ConnectionModuleID, s.ConnectionModuleID != ""
		}
		if strings.EqualFold(name, "connectionDeviceId") {
			return s.ConnectionDeviceID, s.ConnectionDeviceID != ""
		}
	}
	p := lookup(name)
	if p == nil {
		return "", false
	}
	return p.get(s)
}

// IsSystemProperty reports whether name (without the $) names a system
// property.
func IsSystemProperty(name string) bool { return lookup(name) != nil }

// SetSystemProperty sets the system property with the route-language name
// (without the $) from its string form; times are ISO 8601.
func (m *Message) SetSystemProperty(name, v string) error {
	p := lookup(name)
	if p == nil {
		return fmt.Errorf("unknown system property %q", name)
	}
	return p.set(&m.System, v)
}

// SystemProperties returns the set system properties by route-language
// name, for display.
func (m *Message) SystemProperties() map[string]string {
	out := map[string]string{}
	for _, p := range systemNames {
		if v, ok := p.get(&m.System); ok {
			out[p.name] = v
		}
	}
	return out
}

// WireName returns the property-bag name ($.mid, $.on …) of the system
// property with the route-language name, or "" when it has none.
func WireName(name string) string {
	if p := lookup(name); p != nil {
		return p.wire
	}
	return ""
}

// SystemNames lists the route-language names of all system properties.
func SystemNames() []string {
	out := make([]string, len(systemNames))
	for i, p := range systemNames {
		out[i] = p.name
	}
	return out
}
