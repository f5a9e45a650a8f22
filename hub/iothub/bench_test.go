package iothub

import (
	"net/url"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
)

// The baseline for the bag parser is net/url's query parser on the same
// text (it decodes + as a space, so it is not a substitute, only a yardstick).
func BenchmarkParseBag(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseBag(nodeEventBag); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseBagBaselineURLQuery(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := url.ParseQuery(nodeEventBag); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBagFromMessageEncode(b *testing.B) {
	bag, _ := ParseBag(nodeEventBag)
	m := message.New(nil)
	MessageFromBag(bag, m)
	b.ReportAllocs()
	for b.Loop() {
		_ = BagFromMessage(m, BagOptions{Output: true, Identity: true}).Encode()
	}
}

func BenchmarkAppendBag(b *testing.B) {
	bag, _ := ParseBag(nodeEventBag)
	m := message.New(nil)
	MessageFromBag(bag, m)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBag(buf[:0], m, BagOptions{Output: true, Identity: true})
	}
}

func BenchmarkTokenVerify(b *testing.B) {
	tok, _ := ParseToken(nodeModuleToken)
	now := nodeExpiry.Add(-time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if err := tok.Verify(testKey, now); err != nil {
			b.Fatal(err)
		}
	}
}
