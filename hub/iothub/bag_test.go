package iothub

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
)

// nodeEventBag is what azure-iot-device-mqtt 1.16.4 puts after
// messages/events/ for a module message with messageId "m 1",
// correlationId "c&1", contentType application/json, contentEncoding utf-8,
// output out1 and the properties {"temp alert": "yes=1", "ünï":
// "a/b?c#d+e%f", "empty": ""} (made by scripts/sdk).
const nodeEventBag = "%24.on=out1&%24.mid=m%201&%24.cid=c%261&%24.ct=application%2Fjson&%24.ce=utf-8&temp%20alert=yes%3D1&%C3%BCn%C3%AF=a%2Fb%3Fc%23d%2Be%25f&empty="

var bagTests = []struct {
	in   string
	want Bag
	err  string
}{
	{in: "", want: nil},
	{in: "a=1", want: Bag{{Key: "a", Value: "1"}}},
	{in: "a=1&b=2", want: Bag{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}},
	{in: "a", want: Bag{{Key: "a", Null: true}}},
	{in: "a=", want: Bag{{Key: "a"}}},
	{in: "a=1&", want: Bag{{Key: "a", Value: "1"}}},
	{in: "a=b=c", want: Bag{{Key: "a", Value: "b=c"}}},
	{in: "a+b=c+d", want: Bag{{Key: "a+b", Value: "c+d"}}},
	{in: "%24.on=out1", want: Bag{{Key: "$.on", Value: "out1"}}},
	{in: "k=%e2%82%ac", want: Bag{{Key: "k", Value: "€"}}},
	{in: "a=1&a=2", want: Bag{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}}},
	{in: nodeEventBag, want: Bag{
		{Key: "$.on", Value: "out1"}, {Key: "$.mid", Value: "m 1"}, {Key: "$.cid", Value: "c&1"},
		{Key: "$.ct", Value: "application/json"}, {Key: "$.ce", Value: "utf-8"},
		{Key: "temp alert", Value: "yes=1"}, {Key: "ünï", Value: "a/b?c#d+e%f"}, {Key: "empty"},
	}},
	{in: "=1", err: "empty key"},
	{in: "a=%2", err: "bad escape"},
	{in: "a=%zz", err: "bad escape"},
	{in: "a=%ff", err: "not UTF-8"},
	{in: "%=1", err: "bad escape"},
}

func TestParseBag(t *testing.T) {
	for _, tt := range bagTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBag(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseBag(%q) error %v, want one containing %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBag(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseBag(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
			again, err := ParseBag(got.Encode())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("ParseBag(Encode()) = %#v, %v; want %#v", again, err, got)
			}
		})
	}
}

func TestEncodeMatchesNodeSDK(t *testing.T) {
	bag, err := ParseBag(nodeEventBag)
	if err != nil {
		t.Fatal(err)
	}
	if got := bag.Encode(); got != nodeEventBag {
		t.Errorf("Encode\n got %s\nwant %s", got, nodeEventBag)
	}
	if got, want := Escape("a-_.!~*'()b c/$"), "a-_.!~*'()b%20c%2F%24"; got != want {
		t.Errorf("Escape = %q, want %q", got, want)
	}
	if got, want := EscapeStrict("a!'()*"), "a%21%27%28%29%2A"; got != want {
		t.Errorf("EscapeStrict = %q, want %q", got, want)
	}
}

func TestMessageFromBag(t *testing.T) {
	bag, err := ParseBag(nodeEventBag + "&%24.ctime=2024-01-02T03%3A04%3A05.678Z&%24.exp=2024-01-03T00%3A00%3A00Z&%24.cdid=liar&%24.x=kept&n&%24.sub=c1&%24.ifid=dtmi%3Ax%3B1&%24.schema=s&%24.uid=u&%24.to=%2Fdevices%2Fd")
	if err != nil {
		t.Fatal(err)
	}
	m := message.New([]byte("x"))
	if err := MessageFromBag(bag, m); err != nil {
		t.Fatal(err)
	}
	want := message.System{
		MessageID: "m 1", CorrelationID: "c&1", UserID: "u", To: "/devices/d",
		ContentType: "application/json", ContentEncoding: "utf-8",
		CreationTime:       time.Date(2024, 1, 2, 3, 4, 5, 678e6, time.UTC),
		ExpiryTime:         time.Date(2024, 1, 3, 0, 0, 0, 0, time.UTC),
		ConnectionDeviceID: "liar", OutputName: "out1",
		MessageSchema: "s", InterfaceID: "dtmi:x;1", ComponentName: "c1",
	}
	if m.System != want {
		t.Errorf("System\n got %+v\nwant %+v", m.System, want)
	}
	wantProps := map[string]string{"temp alert": "yes=1", "ünï": "a/b?c#d+e%f", "empty": "", "$.x": "kept", "n": ""}
	if !reflect.DeepEqual(m.Properties, wantProps) {
		t.Errorf("Properties\n got %v\nwant %v", m.Properties, wantProps)
	}

	for _, bad := range []string{"%24.exp=tomorrow", "%24.ctime=2024-13-01T00%3A00%3A00Z",
		"%24.ctime=0000-01-01T00%3A30%3A00%2B01%3A00", "%24.exp=9999-12-31T23%3A59%3A59-00%3A01"} {
		b, _ := ParseBag(bad)
		if err := MessageFromBag(b, message.New(nil)); err == nil || !strings.Contains(err.Error(), "ISO 8601") {
			t.Errorf("MessageFromBag(%s) error %v, want a time error", bad, err)
		}
	}
}

// TestBagTimesSurviveTheStore: every time a client may send, in years
// 0000–9999, comes out of the store's record as it went in, and back
// into a bag as the same instant; Unix nanoseconds reach only 1678–2262.
func TestBagTimesSurviveTheStore(t *testing.T) {
	for _, v := range []string{
		"0000-01-01T00:00:00.001Z", "0001-01-01T00:00:00Z", "1677-09-21T00:12:43.145224191Z",
		"1970-01-01T00:00:00Z", "2024-01-02T03:04:05.678Z", "2262-04-11T23:47:16.854775808Z",
		"9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999999999Z",
	} {
		b, err := ParseBag("%24.ctime=" + url.QueryEscape(v) + "&%24.exp=" + url.QueryEscape(v))
		if err != nil {
			t.Fatal(err)
		}
		m := message.New(nil)
		if err := MessageFromBag(b, m); err != nil {
			t.Errorf("%s: %v", v, err)
			continue
		}
		want, _ := time.Parse(time.RFC3339Nano, v)
		got, err := message.Unmarshal(message.Marshal(m))
		if err != nil {
			t.Errorf("%s: %v", v, err)
			continue
		}
		if !got.System.CreationTime.Equal(want) || !got.System.ExpiryTime.Equal(want) {
			t.Errorf("%s came out of the store as %v and %v", v, got.System.CreationTime, got.System.ExpiryTime)
		}
		again, err := ParseBag(string(AppendBag(nil, got, BagOptions{})))
		if err != nil {
			t.Fatal(err)
		}
		m2 := message.New(nil)
		if err := MessageFromBag(again, m2); err != nil || !m2.System.CreationTime.Equal(want.Truncate(time.Millisecond)) {
			t.Errorf("%s back in a bag: %v, %v", v, m2.System.CreationTime, err)
		}
	}
}

func TestBagFromMessage(t *testing.T) {
	m := message.New(nil)
	m.Properties = map[string]string{"z": "1", "a": "x y", "$.mid": "spoof"}
	s := &m.System
	s.MessageID, s.ContentType, s.OutputName = "id", "application/json", "out"
	s.ConnectionDeviceID, s.ConnectionModuleID = "gw", "mod"
	s.CreationTime = time.Date(2024, 1, 2, 3, 4, 5, 6e6, time.UTC)
	for _, tt := range []struct {
		opts BagOptions
		want string
	}{
		{BagOptions{}, "%24.mid=id&%24.ct=application%2Fjson&%24.ctime=2024-01-02T03%3A04%3A05.006Z&a=x%20y&z=1"},
		{BagOptions{Output: true}, "%24.mid=id&%24.ct=application%2Fjson&%24.ctime=2024-01-02T03%3A04%3A05.006Z&%24.on=out&a=x%20y&z=1"},
		{BagOptions{Output: true, Identity: true}, "%24.mid=id&%24.ct=application%2Fjson&%24.ctime=2024-01-02T03%3A04%3A05.006Z&%24.on=out&%24.cdid=gw&%24.cmid=mod&a=x%20y&z=1"},
	} {
		if got := BagFromMessage(m, tt.opts).Encode(); got != tt.want {
			t.Errorf("BagFromMessage(%+v)\n got %s\nwant %s", tt.opts, got, tt.want)
		}
		if got := string(AppendBag([]byte("t/"), m, tt.opts)); got != "t/"+tt.want {
			t.Errorf("AppendBag(%+v)\n got %s\nwant t/%s", tt.opts, got, tt.want)
		}
	}
	// More properties than AppendBag sorts on the stack, and none at all.
	many := message.New(nil)
	for i := range 40 {
		many.Properties[fmt.Sprintf("k%02d", 39-i)] = fmt.Sprint(i)
	}
	for _, mm := range []*message.Message{many, message.New(nil)} {
		want := BagFromMessage(mm, BagOptions{}).Encode()
		if got := string(AppendBag(nil, mm, BagOptions{})); got != want {
			t.Errorf("AppendBag\n got %s\nwant %s", got, want)
		}
	}
	// And back: every field survives.
	back := message.New(nil)
	if err := MessageFromBag(BagFromMessage(m, BagOptions{Output: true, Identity: true}), back); err != nil {
		t.Fatal(err)
	}
	delete(m.Properties, "$.mid")
	if !reflect.DeepEqual(back.System, m.System) || !reflect.DeepEqual(back.Properties, m.Properties) {
		t.Errorf("round trip\n got %+v %v\nwant %+v %v", back.System, back.Properties, m.System, m.Properties)
	}
}

func FuzzParseBag(f *testing.F) {
	for _, tt := range bagTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bag, err := ParseBag(s)
		if err != nil {
			return
		}
		enc := bag.Encode()
		again, err := ParseBag(enc)
		if err != nil {
			t.Fatalf("ParseBag(Encode(ParseBag(%q))) = %v", s, err)
		}
		if len(again) != len(bag) || (len(bag) > 0 && !reflect.DeepEqual(again, bag)) {
			t.Fatalf("round trip of %q: %#v, want %#v", s, again, bag)
		}
		if again.Encode() != enc {
			t.Fatalf("Encode not stable for %q", s)
		}
		m := message.New(nil)
		if MessageFromBag(bag, m) == nil {
			m2 := message.New(nil)
			if err := MessageFromBag(BagFromMessage(m, BagOptions{Output: true, Identity: true}), m2); err != nil {
				t.Fatalf("re-read of BagFromMessage: %v", err)
			}
			opts := BagOptions{Output: true, Identity: true}
			if got, want := string(AppendBag(nil, m, opts)), BagFromMessage(m, opts).Encode(); got != want {
				t.Fatalf("AppendBag of %q\n got %s\nwant %s", s, got, want)
			}
		}
	})
}
