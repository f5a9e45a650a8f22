package iothub

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ConnectionString is a parsed device or module connection string.
type ConnectionString struct {
	HostName              string
	DeviceID              string
	ModuleID              string
	SharedAccessKey       []byte // decoded
	SharedAccessKeyRaw    string // as written (base64)
	SharedAccessKeyName   string
	SharedAccessSignature string // a ready-made token instead of a key
	GatewayHostName       string
	X509                  bool
}

// ErrConnectionString is returned (wrapped) by ParseConnectionString.
var ErrConnectionString = errors.New("bad connection string")

// ParseConnectionString parses `HostName=…;DeviceId=…[;ModuleId=…];SharedAccessKey=…[;GatewayHostName=…]`.
// Names are case-sensitive as in the SDKs; unknown names are ignored.
// HostName and DeviceId are required, and exactly one of SharedAccessKey,
// SharedAccessSignature and x509=true.
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	fail := func(format string, args ...any) (ConnectionString, error) {
		return ConnectionString{}, fmt.Errorf("%w: %s", ErrConnectionString, fmt.Sprintf(format, args...))
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return fail("%q is not Name=value", part)
		}
		// Pasted strings come with blanks around the parts; no name or
		// value has them at its ends.
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if seen[k] {
			return fail("%s given twice", k)
		}
		seen[k] = true
		switch k {
		case "HostName":
			c.HostName = v
		case "DeviceId":
			c.DeviceID = v
		case "ModuleId":
			c.ModuleID = v
		case "SharedAccessKey":
			key, err := base64.StdEncoding.DecodeString(v)
			if err != nil || len(key) == 0 {
				return fail("SharedAccessKey is not base64")
			}
			c.SharedAccessKey, c.SharedAccessKeyRaw = key, v
		case "SharedAccessKeyName":
			c.SharedAccessKeyName = v
		case "SharedAccessSignature":
			c.SharedAccessSignature = v
		case "GatewayHostName":
			c.GatewayHostName = v
		case "x509":
			switch strings.ToLower(v) {
			case "true":
				c.X509 = true
			case "false":
			default:
				return fail("x509=%q, want true or false", v)
			}
		}
	}
	switch {
	case c.HostName == "":
		return fail("missing HostName")
	case c.DeviceID == "":
		return fail("missing DeviceId")
	}
	auth := 0
	for _, ok := range []bool{c.SharedAccessKey != nil, c.SharedAccessSignature != "", c.X509} {
		if ok {
			auth++
		}
	}
	switch {
	case auth == 0:
		return fail("missing SharedAccessKey (or SharedAccessSignature, or x509=true)")
	case auth > 1:
		return fail("give only one of SharedAccessKey, SharedAccessSignature and x509=true")
	}
	return c, nil
}

// String writes the connection string back, fields in the usual order.
func (c ConnectionString) String() string {
	s := "HostName=" + c.HostName + ";DeviceId=" + c.DeviceID
	if c.ModuleID != "" {
		s += ";ModuleId=" + c.ModuleID
	}
	if c.SharedAccessKeyName != "" {
		s += ";SharedAccessKeyName=" + c.SharedAccessKeyName
	}
	switch {
	case c.SharedAccessKey != nil:
		s += ";SharedAccessKey=" + base64.StdEncoding.EncodeToString(c.SharedAccessKey)
	case c.SharedAccessSignature != "":
		s += ";SharedAccessSignature=" + c.SharedAccessSignature
	case c.X509:
		s += ";x509=true"
	}
	if c.GatewayHostName != "" {
		s += ";GatewayHostName=" + c.GatewayHostName
	}
	return s
}
