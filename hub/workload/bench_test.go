package workload

import (
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkTrustBundle is the baseline: an HTTP round trip over the
// unix socket with no caller check and no key.
func BenchmarkTrustBundle(b *testing.B) {
	f := serveB(b)
	for b.Loop() {
		f.post(b, "GET", "/trust-bundle?api-version=2018-06-28", "")
	}
}

// BenchmarkSign adds what a sign request costs: the caller's credentials,
// the identity lookup and the HMAC. Compare with BenchmarkTrustBundle.
func BenchmarkSign(b *testing.B) {
	f := serveB(b)
	id, err := f.ids.Module("gw1", "sensor")
	if err != nil {
		b.Fatal(err)
	}
	body := `{"keyId":"primary","algo":"HMACSHA256","data":"` + base64.StdEncoding.EncodeToString([]byte("hub.example.net%2Fdevices%2Fgw1%2Fmodules%2Fsensor\n1700000000")) + `"}`
	path := signPath("sensor", id.GenerationID, "2018-06-28")
	for b.Loop() {
		f.post(b, "POST", path, body)
	}
}

func serveB(b *testing.B) *fixture {
	b.Helper()
	return serveTB(b, "sensor", Options{})
}

func (f *fixture) post(b *testing.B, method, path, body string) {
	req, _ := http.NewRequest(method, "http://workload"+path, strings.NewReader(body))
	resp, err := f.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("%s %s: %d", method, path, resp.StatusCode)
	}
}
