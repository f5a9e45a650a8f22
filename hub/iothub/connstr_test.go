package iothub

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

const testKeyB64 = "dGlueWVkZ2UtdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="

var connTests = []struct {
	in   string
	want ConnectionString
	err  string
}{
	{in: "HostName=h.net;DeviceId=gw;SharedAccessKey=" + testKeyB64,
		want: ConnectionString{HostName: "h.net", DeviceID: "gw", SharedAccessKey: testKey, SharedAccessKeyRaw: testKeyB64}},
	{in: "HostName=h.net;DeviceId=gw;ModuleId=filter;SharedAccessKey=" + testKeyB64 + ";GatewayHostName=edge.local",
		want: ConnectionString{HostName: "h.net", DeviceID: "gw", ModuleID: "filter", SharedAccessKey: testKey, SharedAccessKeyRaw: testKeyB64, GatewayHostName: "edge.local"}},
	{in: "HostName=h.net;DeviceId=gw;x509=true", want: ConnectionString{HostName: "h.net", DeviceID: "gw", X509: true}},
	{in: "HostName=h.net;DeviceId=gw;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1",
		want: ConnectionString{HostName: "h.net", DeviceID: "gw", SharedAccessSignature: "SharedAccessSignature sr=a&sig=b&se=1"}},
	{in: "HostName=h.net;DeviceId=gw;SharedAccessKeyName=owner;SharedAccessKey=" + testKeyB64 + ";Other=x;",
		want: ConnectionString{HostName: "h.net", DeviceID: "gw", SharedAccessKeyName: "owner", SharedAccessKey: testKey, SharedAccessKeyRaw: testKeyB64}},
	{in: "DeviceId=gw;SharedAccessKey=" + testKeyB64, err: "missing HostName"},
	{in: "HostName=h.net;SharedAccessKey=" + testKeyB64, err: "missing DeviceId"},
	{in: "HostName=h.net;DeviceId=gw", err: "missing SharedAccessKey"},
	{in: "HostName=h.net;DeviceId=gw;SharedAccessKey=***", err: "SharedAccessKey is not base64"},
	{in: "HostName=h.net;DeviceId=gw;SharedAccessKey=" + testKeyB64 + ";x509=true", err: "only one of"},
	{in: "HostName=h.net;DeviceId=gw;x509=maybe", err: "want true or false"},
	{in: "HostName=h.net;DeviceId=gw;HostName=x;x509=true", err: "HostName given twice"},
	{in: "HostName=h.net;DeviceId;x509=true", err: "not Name=value"},
	{in: " HostName = h.net; DeviceId=gw ;\tx509=true ", want: ConnectionString{HostName: "h.net", DeviceID: "gw", X509: true}},
	{in: "HostName=h.net;DeviceId=gw;SharedAccessSignature= ;", err: "missing SharedAccessKey"},
}

func TestParseConnectionString(t *testing.T) {
	for _, tt := range connTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseConnectionString(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrConnectionString) {
					t.Fatalf("error %v, want ErrConnectionString containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, tt.want)
			}
			again, err := ParseConnectionString(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip via %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func FuzzParseConnectionString(f *testing.F) {
	for _, tt := range connTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConnectionString(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(c.HostName+c.DeviceID+c.ModuleID+c.GatewayHostName+c.SharedAccessKeyName+c.SharedAccessSignature, ";") {
			t.Fatalf("a field holds ;: %+v", c)
		}
		again, err := ParseConnectionString(c.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", c.String(), err)
		}
		c.SharedAccessKeyRaw, again.SharedAccessKeyRaw = "", "" // padding variants decode alike
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip %+v, want %+v", again, c)
		}
	})
}

// nodeUsername is the user name azure-iot-device-mqtt 1.16.4 sends for a
// module (DeviceClientType as it encodes it).
const nodeUsername = "h.net/gw/filter/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%3B%20x64)"

var usernameTests = []struct {
	in   string
	want Username
	err  string
}{
	{in: nodeUsername, want: Username{Host: "h.net", DeviceID: "gw", ModuleID: "filter", APIVersion: APIVersion,
		Params: url.Values{"api-version": {APIVersion}, "DeviceClientType": {"azure-iot-device/1.18.4 (node v20.20.2; Debian; x64)"}}}},
	{in: "h.net/gw/?api-version=2018-06-30", want: Username{Host: "h.net", DeviceID: "gw", APIVersion: "2018-06-30",
		Params: url.Values{"api-version": {"2018-06-30"}}}},
	{in: "h.net/gw?api-version=1&model-id=dtmi:x;1&bad=%zz", want: Username{Host: "h.net", DeviceID: "gw", APIVersion: "1",
		Params: url.Values{"api-version": {"1"}, "model-id": {"dtmi:x;1"}, "bad": {"%zz"}}}},
	{in: "h.net/gw/?api-version=1&model-id=dtmi%3Ax%3B1", want: Username{Host: "h.net", DeviceID: "gw", APIVersion: "1",
		Params: url.Values{"api-version": {"1"}, "model-id": {"dtmi:x;1"}}}},
	{in: "h.net/gw/?api-version=1&api-version", want: Username{Host: "h.net", DeviceID: "gw", APIVersion: "1",
		Params: url.Values{"api-version": {"1", ""}}}},
	{in: "h.net/gw/", err: "no ?api-version"},
	{in: "h.net/gw/?DeviceClientType=x", err: "no api-version"},
	{in: "h.net/?api-version=1", err: "want {hostname}"},
	{in: "h.net/gw/m/x/?api-version=1", err: "want {hostname}"},
	{in: "/gw/?api-version=1", err: "empty host name"},
	{in: "h.net//m/?api-version=1", err: "empty device id"},
}

func TestParseUsername(t *testing.T) {
	for _, tt := range usernameTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseUsername(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrUsername) {
					t.Fatalf("error %v, want ErrUsername containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestFormatUsername(t *testing.T) {
	if got, want := FormatUsername("h.net", "gw", "", nil), "h.net/gw/?api-version="+APIVersion; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got := FormatUsername("h.net", "gw", "m", url.Values{"DeviceClientType": {"tinyedge/1 (linux; arm64)"}, "model-id": {"dtmi:x;1"}})
	u, err := ParseUsername(got)
	if err != nil {
		t.Fatal(err)
	}
	if u.ModuleID != "m" || u.APIVersion != APIVersion || u.Params.Get("DeviceClientType") != "tinyedge/1 (linux; arm64)" || u.Params.Get("model-id") != "dtmi:x;1" {
		t.Errorf("FormatUsername → %q → %+v", got, u)
	}
}

func FuzzParseUsername(f *testing.F) {
	for _, tt := range usernameTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUsername(s)
		if err != nil {
			return
		}
		if strings.Contains(u.DeviceID+u.ModuleID+u.Host, "/") {
			t.Fatalf("slash in an id: %+v", u)
		}
		again, err := ParseUsername(FormatUsername(u.Host, u.DeviceID, u.ModuleID, u.Params))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if again.Host != u.Host || again.DeviceID != u.DeviceID || again.ModuleID != u.ModuleID || !reflect.DeepEqual(again.Params, u.Params) {
			t.Fatalf("round trip %+v, want %+v", again, u)
		}
	})
}
