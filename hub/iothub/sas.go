package iothub

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors of SAS token parsing and verification, wrapped with details.
var (
	ErrTokenMalformed = errors.New("malformed SAS token")
	ErrTokenExpired   = errors.New("SAS token expired")
	ErrBadSignature   = errors.New("SAS token signature does not match")
)

const sasPrefix = "SharedAccessSignature "

// Token is a parsed SAS token. Resource and KeyName are decoded.
type Token struct {
	Resource  string
	Signature string // base64, decoded from its URL encoding
	Expiry    time.Time
	KeyName   string

	// signed is sr as it appears in the token: the signature covers this
	// exact text, whichever way the signer percent-encoded it.
	signed string
	se     string
}

// Resource is the SAS resource of a device (module "") or a module identity
// on host.
func Resource(host, device, module string) string {
	r := host + "/devices/" + device
	if module != "" {
		r += "/modules/" + module
	}
	return r
}

// SignToken makes a SAS token for resource valid until expiry, signed with
// key (the decoded shared access key); keyName is the policy name, "" for a
// device or module key. The output is byte for byte what the Node SDK makes.
func SignToken(key []byte, resource string, expiry time.Time, keyName string) string {
	sr := EscapeStrict(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	var sb strings.Builder
	sb.WriteString(sasPrefix + "sr=" + sr + "&sig=" + EscapeStrict(sign(key, sr, se)))
	if keyName != "" {
		sb.WriteString("&skn=" + EscapeStrict(keyName))
	}
	sb.WriteString("&se=" + se)
	return sb.String()
}

func sign(key []byte, sr, se string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr + "\n" + se))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseToken parses `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`, its
// fields in any order. sr, sig and se are required.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, sasPrefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: does not start with %q", ErrTokenMalformed, sasPrefix)
	}
	var t Token
	seen := map[string]bool{}
	for _, part := range strings.Split(rest, "&") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return Token{}, fmt.Errorf("%w: field %q has no value", ErrTokenMalformed, part)
		}
		if seen[k] {
			return Token{}, fmt.Errorf("%w: field %s given twice", ErrTokenMalformed, k)
		}
		seen[k] = true
		dec, err := unescape(v)
		if err != nil {
			return Token{}, fmt.Errorf("%w: field %s: %v", ErrTokenMalformed, k, err)
		}
		switch k {
		case "sr":
			t.Resource, t.signed = dec, v
		case "sig":
			t.Signature = dec
		case "skn":
			t.KeyName = dec
		case "se":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return Token{}, fmt.Errorf("%w: se %q is not a Unix time in seconds", ErrTokenMalformed, v)
			}
			t.Expiry, t.se = time.Unix(n, 0).UTC(), v
		default:
			return Token{}, fmt.Errorf("%w: unknown field %q", ErrTokenMalformed, k)
		}
	}
	for _, k := range []string{"sr", "sig", "se"} {
		if !seen[k] {
			return Token{}, fmt.Errorf("%w: no %s field", ErrTokenMalformed, k)
		}
	}
	if t.Resource == "" {
		return Token{}, fmt.Errorf("%w: empty sr", ErrTokenMalformed)
	}
	return t, nil
}

// Verify checks t's signature against key (the decoded shared access key)
// in constant time, and that t has not expired at now. It does not check
// the resource: the caller compares t.Resource with the identity.
func (t Token) Verify(key []byte, now time.Time) error {
	want := sign(key, t.signed, t.se)
	if !hmac.Equal([]byte(want), []byte(t.Signature)) {
		return ErrBadSignature
	}
	if !now.Before(t.Expiry) {
		return fmt.Errorf("%w at %s", ErrTokenExpired, t.Expiry.Format(time.RFC3339))
	}
	return nil
}
