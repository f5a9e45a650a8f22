package iothub

import (
	"errors"
	"strings"
	"testing"
)

var topicTests = []struct {
	in   string
	want Topic
	err  string
}{
	{in: "devices/gw/messages/events/", want: Topic{Kind: Events, DeviceID: "gw"}},
	{in: "devices/gw/messages/events", want: Topic{Kind: Events, DeviceID: "gw"}},
	{in: "devices/gw/messages/events/a=1", want: Topic{Kind: Events, DeviceID: "gw", Bag: "a=1"}},
	{in: "devices/gw/modules/filter/messages/events/%24.on=out1", want: Topic{Kind: Events, DeviceID: "gw", ModuleID: "filter", Bag: "%24.on=out1"}},
	// What azure-iot-device-mqtt 1.16.4's sendOutputEvent publishes: a
	// slash after the bag.
	{in: "devices/gw/modules/m/messages/events/%24.on=output1&unit=%C2%B0C/", want: Topic{Kind: Events, DeviceID: "gw", ModuleID: "m", Bag: "%24.on=output1&unit=%C2%B0C"}},
	{in: "devices/gw/modules/filter/inputs/input1/%24.mid=1/", want: Topic{Kind: Input, DeviceID: "gw", ModuleID: "filter", Input: "input1", Bag: "%24.mid=1"}},
	{in: "devices/gw/modules/filter/inputs/input1/%24.mid=1", want: Topic{Kind: Input, DeviceID: "gw", ModuleID: "filter", Input: "input1", Bag: "%24.mid=1"}},
	{in: "devices/gw/modules/filter/inputs/input1/", want: Topic{Kind: Input, DeviceID: "gw", ModuleID: "filter", Input: "input1"}},
	{in: "devices/gw/messages/devicebound/%24.to=x", want: Topic{Kind: C2D, DeviceID: "gw", Bag: "%24.to=x"}},
	{in: "$iothub/twin/GET/?$rid=1", want: Topic{Kind: TwinGet, RID: "1", Bag: "$rid=1"}},
	{in: "$iothub/twin/PATCH/properties/reported/?$rid=abc-1", want: Topic{Kind: TwinPatchReported, RID: "abc-1", Bag: "$rid=abc-1"}},
	{in: "$iothub/twin/PATCH/properties/reported/?$rid=2&$version=4", want: Topic{Kind: TwinPatchReported, RID: "2", Version: 4, Bag: "$rid=2&$version=4"}},
	{in: "$iothub/twin/res/200/?$rid=1", want: Topic{Kind: TwinResponse, Status: 200, RID: "1", Bag: "$rid=1"}},
	{in: "$iothub/twin/res/204/?$rid=1&$version=7", want: Topic{Kind: TwinResponse, Status: 204, RID: "1", Version: 7, Bag: "$rid=1&$version=7"}},
	{in: "$iothub/twin/PATCH/properties/desired/?$version=3", want: Topic{Kind: TwinDesired, Version: 3, Bag: "$version=3"}},
	{in: "$iothub/methods/POST/reset/?$rid=9", want: Topic{Kind: MethodRequest, Method: "reset", RID: "9", Bag: "$rid=9"}},
	{in: "$iothub/methods/res/200/?$rid=9", want: Topic{Kind: MethodResponse, Status: 200, RID: "9", Bag: "$rid=9"}},
	{in: "$iothub/methods/res/504/?$rid=%2Fx", want: Topic{Kind: MethodResponse, Status: 504, RID: "/x", Bag: "$rid=%2Fx"}},
	{in: "devices//messages/events/", err: "empty device id"},
	{in: "devices/gw/modules//messages/events/", err: "empty module id"},
	{in: "devices/gw/modules/m/inputs//", err: "empty input name"},
	{in: "devices/gw/other", err: ErrUnknownTopic.Error()},
	{in: "devices/gw/messages/eventsx", err: ErrUnknownTopic.Error()},
	{in: "telemetry/x", err: ErrUnknownTopic.Error()},
	{in: "$iothub/twin/GET/", err: "no $rid"},
	{in: "$iothub/twin/res/abc/?$rid=1", err: "not a 3-digit number"},
	{in: "$iothub/twin/res/204/?$rid=1&$version=x", err: "not an integer"},
	{in: "$iothub/methods/POST//?$rid=1", err: "empty method name"},
	{in: "$iothub/methods/POST/m/?$rid=%zz", err: "bad escape"},
	{in: "$iothub/clients/x", err: ErrUnknownTopic.Error()},
}

func TestParseTopic(t *testing.T) {
	for _, tt := range topicTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTopic(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseTopic(%q) = %+v, %v; want error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTopic(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseTopic(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
	if _, err := ParseTopic("x/y"); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("ParseTopic(x/y) = %v, want ErrUnknownTopic", err)
	}
}

func TestFormatTopics(t *testing.T) {
	for _, tt := range []struct {
		got, want string
		kind      Kind
	}{
		{EventsTopic("gw", "", "a=1"), "devices/gw/messages/events/a=1", Events},
		{EventsTopic("gw", "m", ""), "devices/gw/modules/m/messages/events/", Events},
		{InputTopic("gw", "m", "in1", "a=1"), "devices/gw/modules/m/inputs/in1/a=1", Input},
		{C2DTopic("gw", ""), "devices/gw/messages/devicebound/", C2D},
		{TwinGetTopic("r 1"), "$iothub/twin/GET/?$rid=r%201", TwinGet},
		{TwinReportedTopic("2"), "$iothub/twin/PATCH/properties/reported/?$rid=2", TwinPatchReported},
		{TwinResponseTopic(200, "3", 0), "$iothub/twin/res/200/?$rid=3", TwinResponse},
		{TwinResponseTopic(204, "3", 12), "$iothub/twin/res/204/?$rid=3&$version=12", TwinResponse},
		{TwinDesiredTopic(5), "$iothub/twin/PATCH/properties/desired/?$version=5", TwinDesired},
		{MethodRequestTopic("reset", "7"), "$iothub/methods/POST/reset/?$rid=7", MethodRequest},
		{MethodResponseTopic(404, "7"), "$iothub/methods/res/404/?$rid=7", MethodResponse},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
		p, err := ParseTopic(tt.got)
		if err != nil || p.Kind != tt.kind {
			t.Errorf("ParseTopic(%q) = %v, %v; want kind %v", tt.got, p.Kind, err, tt.kind)
		}
	}
	p, _ := ParseTopic(TwinGetTopic("r 1"))
	if p.RID != "r 1" {
		t.Errorf("rid round trip = %q", p.RID)
	}
}

func TestSubscriptionAllowed(t *testing.T) {
	for _, tt := range []struct {
		filter, device, module string
		want                   bool
	}{
		{"$iothub/twin/res/#", "gw", "m", true},
		{"$iothub/twin/PATCH/properties/desired/#", "gw", "", true},
		{"$iothub/methods/POST/#", "gw", "m", true},
		{"devices/gw/modules/m/#", "gw", "m", true},
		{"devices/gw/modules/m/inputs/#", "gw", "m", true},
		{"devices/gw/modules/m/inputs/in1/#", "gw", "m", true},
		{"devices/gw/messages/devicebound/#", "gw", "", true},
		{"devices/gw/modules/other/#", "gw", "m", false},
		{"devices/other/modules/m/#", "gw", "m", false},
		{"devices/gw/messages/devicebound/#", "gw", "m", false},
		{"devices/gw/modules/m/#", "gw", "", false},
		{"devices/other/messages/devicebound/#", "gw", "", false},
		{"devices/+/messages/devicebound/#", "+", "", false},
		{"devices/gw/modules/#/#", "gw", "#", false},
		{"devices/gw/modules/m/inputs/+/#", "gw", "m", false},
		{"#", "gw", "m", false},
		{"$iothub/#", "gw", "m", false},
		{"$iothub/methods/res/#", "gw", "m", false},
		{"devices/gw/messages/events/#", "gw", "", false},
	} {
		if got := SubscriptionAllowed(tt.filter, tt.device, tt.module); got != tt.want {
			t.Errorf("SubscriptionAllowed(%q, %q, %q) = %v, want %v", tt.filter, tt.device, tt.module, got, tt.want)
		}
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, tt := range topicTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTopic(s)
		if err != nil {
			return
		}
		var again string
		switch tp.Kind {
		case Events:
			again = EventsTopic(tp.DeviceID, tp.ModuleID, tp.Bag)
		case Input:
			again = InputTopic(tp.DeviceID, tp.ModuleID, tp.Input, tp.Bag)
		case C2D:
			again = C2DTopic(tp.DeviceID, tp.Bag)
		case TwinGet:
			again = TwinGetTopic(tp.RID)
		case TwinPatchReported:
			again = TwinReportedTopic(tp.RID)
		case TwinResponse:
			again = TwinResponseTopic(tp.Status, tp.RID, tp.Version)
		case TwinDesired:
			again = TwinDesiredTopic(tp.Version)
		case MethodRequest:
			again = MethodRequestTopic(tp.Method, tp.RID)
		case MethodResponse:
			again = MethodResponseTopic(tp.Status, tp.RID)
		default:
			t.Fatalf("kind %v", tp.Kind)
		}
		tp2, err := ParseTopic(again)
		if err != nil {
			t.Fatalf("ParseTopic(%q) (formatted from %q): %v", again, s, err)
		}
		if tp2.Kind != tp.Kind || tp2.DeviceID != tp.DeviceID || tp2.ModuleID != tp.ModuleID || tp2.Input != tp.Input ||
			tp2.Method != tp.Method || tp2.Status != tp.Status || tp2.RID != tp.RID {
			t.Fatalf("round trip of %q via %q: %+v, want %+v", s, again, tp2, tp)
		}
	})
}
