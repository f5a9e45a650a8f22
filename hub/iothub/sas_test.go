package iothub

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var testKey, _ = base64.StdEncoding.DecodeString("dGlueWVkZ2UtdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==")

// Tokens the Node SDK (azure-iot-common 1.13.3) makes for testKey, expiry
// 1700000000.
const (
	nodeModuleToken = "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fgw%201%2Fmodules%2Ffilter%281%29&sig=%2FOIyGey5YaFh0O%2BA93q6RxHRdan5UuIHQYmV%2FqSuCwA%3D&se=1700000000"
	nodePolicyToken = "SharedAccessSignature sr=hub.example.net&sig=vRirH3b%2FtFOH6yxavm%2F4KCgwGB2pmk%2FBF2Fp0kYThE8%3D&skn=iothubowner&se=1700000000"
)

var nodeExpiry = time.Unix(1700000000, 0)

func TestSignTokenMatchesNodeSDK(t *testing.T) {
	if got := SignToken(testKey, Resource("hub.example.net", "gw 1", "filter(1)"), nodeExpiry, ""); got != nodeModuleToken {
		t.Errorf("module token\n got %s\nwant %s", got, nodeModuleToken)
	}
	if got := SignToken(testKey, "hub.example.net", nodeExpiry, "iothubowner"); got != nodePolicyToken {
		t.Errorf("policy token\n got %s\nwant %s", got, nodePolicyToken)
	}
}

var tokenTests = []struct {
	in   string
	want Token
	err  string
}{
	{in: nodeModuleToken, want: Token{Resource: "hub.example.net/devices/gw 1/modules/filter(1)", Signature: "/OIyGey5YaFh0O+A93q6RxHRdan5UuIHQYmV/qSuCwA=", Expiry: nodeExpiry.UTC()}},
	{in: nodePolicyToken, want: Token{Resource: "hub.example.net", Signature: "vRirH3b/tFOH6yxavm/4KCgwGB2pmk/BF2Fp0kYThE8=", Expiry: nodeExpiry.UTC(), KeyName: "iothubowner"}},
	{in: "SharedAccessSignature se=5&sig=abc&sr=h%2Fdevices%2Fd", want: Token{Resource: "h/devices/d", Signature: "abc", Expiry: time.Unix(5, 0).UTC()}},
	{in: "sr=h&sig=a&se=1", err: "does not start with"},
	{in: "SharedAccessSignature sr=h&sig=a", err: "no se field"},
	{in: "SharedAccessSignature sig=a&se=1", err: "no sr field"},
	{in: "SharedAccessSignature sr=h&se=1", err: "no sig field"},
	{in: "SharedAccessSignature sr=h&sig=a&se=soon", err: "not a Unix time"},
	{in: "SharedAccessSignature sr=h&sig=a&se=-1", err: "not a Unix time"},
	{in: "SharedAccessSignature sr=h&sr=h&sig=a&se=1", err: "given twice"},
	{in: "SharedAccessSignature sr=h&sig=a&se=1&x=2", err: "unknown field"},
	{in: "SharedAccessSignature sr=h&sig&se=1", err: "has no value"},
	{in: "SharedAccessSignature sr=%zz&sig=a&se=1", err: "bad escape"},
	{in: "SharedAccessSignature sr=&sig=a&se=1", err: "empty sr"},
}

func TestParseToken(t *testing.T) {
	for _, tt := range tokenTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseToken(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrTokenMalformed) {
					t.Fatalf("ParseToken = %v, want ErrTokenMalformed containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Resource != tt.want.Resource || got.Signature != tt.want.Signature || !got.Expiry.Equal(tt.want.Expiry) || got.KeyName != tt.want.KeyName {
				t.Fatalf("ParseToken\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	tok, err := ParseToken(nodeModuleToken)
	if err != nil {
		t.Fatal(err)
	}
	before := nodeExpiry.Add(-time.Minute)
	if err := tok.Verify(testKey, before); err != nil {
		t.Errorf("Verify of the Node SDK's token: %v", err)
	}
	if err := tok.Verify(testKey, nodeExpiry); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("Verify at expiry = %v, want ErrTokenExpired", err)
	}
	if err := tok.Verify([]byte("another key"), before); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with another key = %v, want ErrBadSignature", err)
	}
	// Changing the expiry invalidates the signature.
	forged, _ := ParseToken(strings.Replace(nodeModuleToken, "se=1700000000", "se=1800000000", 1))
	if err := forged.Verify(testKey, before); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify of a token with a moved expiry = %v, want ErrBadSignature", err)
	}
	// A signer that encodes the resource differently (lower-case hex) is
	// still verified against what it signed.
	lower := SignToken(testKey, "h/devices/d", nodeExpiry, "")
	tok2, _ := ParseToken(lower)
	if err := tok2.Verify(testKey, before); err != nil {
		t.Errorf("Verify of own token: %v", err)
	}
}

func FuzzParseToken(f *testing.F) {
	for _, tt := range tokenTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if tok.Resource == "" {
			t.Fatal("empty resource accepted")
		}
		_ = tok.Verify(testKey, time.Unix(0, 0))
		// A token we sign for the parsed fields parses back to them and
		// verifies.
		again, err := ParseToken(SignToken(testKey, tok.Resource, tok.Expiry, tok.KeyName))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if again.Resource != tok.Resource || !again.Expiry.Equal(tok.Expiry) || again.KeyName != tok.KeyName {
			t.Fatalf("round trip %+v, want %+v", again, tok)
		}
		if err := again.Verify(testKey, tok.Expiry.Add(-time.Second)); err != nil {
			t.Fatalf("Verify of own token: %v", err)
		}
	})
}
