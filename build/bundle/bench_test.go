package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"testing"
	"time"
)

// BenchmarkVerify10MB opens, verifies and reads a bundle with a 10 MB
// payload. In the same loop, outside the timer, it hashes the same bytes
// with plain SHA-256, and reports the ratio (x-sha256: 1.0 means the
// bundle costs nothing beyond hashing) and the bundle's overhead in bytes
// beyond the payload.
func BenchmarkVerify10MB(b *testing.B) {
	pub, priv := GenerateKey()
	payload := randomBytes(10_000_000, 10)
	m := Manifest{Version: "1.4.0", GOARCH: "arm64", MinVersion: "1.0.0"}
	bundle := makeBundle(b, priv, m, "tinyedge", payload)
	keys := []ed25519.PublicKey{pub}
	b.SetBytes(int64(len(payload)))
	var baseline time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		start := time.Now()
		sum := sha256.Sum256(payload)
		baseline += time.Since(start)
		b.StartTimer()

		r, err := Open(bytes.NewReader(bundle), keys)
		if err != nil {
			b.Fatal(err)
		}
		p, pr, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, pr); err != nil || p.SHA256 != sum {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed())/float64(baseline), "x-sha256")
	b.ReportMetric(float64(len(bundle)-len(payload)), "overhead-bytes")
}
