package iothub

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind is what a topic is for.
type Kind uint8

// Topic kinds.
const (
	Events            Kind = iota + 1 // device or module telemetry, client → hub
	Input                             // a message for a module input, hub → module
	C2D                               // a cloud-to-device message, hub → device
	TwinGet                           // a twin GET request, client → hub
	TwinPatchReported                 // a reported-properties patch, client → hub
	TwinResponse                      // the answer to a twin request, hub → client
	TwinDesired                       // a desired-properties notification, hub → client
	MethodRequest                     // a direct method call, hub → client
	MethodResponse                    // the answer to a direct method, client → hub
)

var kindNames = [...]string{"", "events", "input", "c2d", "twin get", "twin reported patch",
	"twin response", "twin desired", "method request", "method response"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Topic is a parsed IoT Hub topic. Only the fields of its Kind are set.
// Bag is the raw, still encoded, property bag or query (after `?` for the
// $iothub topics); RID and Version are decoded from it.
type Topic struct {
	Kind     Kind
	DeviceID string
	ModuleID string
	Input    string
	Method   string
	Status   int
	RID      string
	Version  int64 // 0 if absent
	Bag      string
}

// ErrUnknownTopic is returned (wrapped) by ParseTopic for a topic that is
// not part of the IoT Hub dialect.
var ErrUnknownTopic = errors.New("not an IoT Hub topic")

// ParseTopic parses an IoT Hub topic name. A slash after a message's
// property bag is dropped: the Node SDK sends module outputs on
// `devices/{d}/modules/{m}/messages/events/{bag}/`.
func ParseTopic(s string) (Topic, error) {
	t, err := parseTopic(s)
	if err != nil {
		return Topic{}, fmt.Errorf("topic %q: %w", s, err)
	}
	return t, nil
}

func parseTopic(s string) (Topic, error) {
	if rest, ok := strings.CutPrefix(s, "$iothub/"); ok {
		return parseIoTHubTopic(rest)
	}
	rest, ok := strings.CutPrefix(s, "devices/")
	if !ok {
		return Topic{}, ErrUnknownTopic
	}
	dev, rest, _ := strings.Cut(rest, "/")
	if dev == "" {
		return Topic{}, errors.New("empty device id")
	}
	if bag, ok := cutSection(rest, "messages/events"); ok {
		return Topic{Kind: Events, DeviceID: dev, Bag: bag}, nil
	}
	if bag, ok := cutSection(rest, "messages/devicebound"); ok {
		return Topic{Kind: C2D, DeviceID: dev, Bag: bag}, nil
	}
	rest, ok = strings.CutPrefix(rest, "modules/")
	if !ok {
		return Topic{}, ErrUnknownTopic
	}
	mod, rest, _ := strings.Cut(rest, "/")
	if mod == "" {
		return Topic{}, errors.New("empty module id")
	}
	if bag, ok := cutSection(rest, "messages/events"); ok {
		return Topic{Kind: Events, DeviceID: dev, ModuleID: mod, Bag: bag}, nil
	}
	if rest, ok := strings.CutPrefix(rest, "inputs/"); ok {
		input, bag, _ := strings.Cut(rest, "/")
		if input == "" {
			return Topic{}, errors.New("empty input name")
		}
		return Topic{Kind: Input, DeviceID: dev, ModuleID: mod, Input: input, Bag: strings.TrimSuffix(bag, "/")}, nil
	}
	return Topic{}, ErrUnknownTopic
}

// cutSection cuts "section" or "section/" off s and returns the bag that
// follows, without a trailing slash: the Node SDK's sendOutputEvent writes
// `…/messages/events/{bag}/` (an encoded bag never ends in a slash).
func cutSection(s, section string) (string, bool) {
	rest, ok := strings.CutPrefix(s, section)
	if !ok {
		return "", false
	}
	if rest == "" {
		return "", true
	}
	if rest[0] != '/' {
		return "", false
	}
	return strings.TrimSuffix(rest[1:], "/"), true
}

// parseIoTHubTopic parses what follows "$iothub/".
func parseIoTHubTopic(s string) (Topic, error) {
	path, query, hasQuery := strings.Cut(s, "?")
	path = strings.TrimSuffix(path, "/")
	parts := strings.Split(path, "/")
	var t Topic
	switch {
	case path == "twin/GET":
		t.Kind = TwinGet
	case path == "twin/PATCH/properties/reported":
		t.Kind = TwinPatchReported
	case path == "twin/PATCH/properties/desired":
		t.Kind = TwinDesired
	case len(parts) == 3 && parts[0] == "twin" && parts[1] == "res":
		t.Kind = TwinResponse
	case len(parts) == 3 && parts[0] == "methods" && parts[1] == "POST":
		t.Kind, t.Method = MethodRequest, parts[2]
		if t.Method == "" {
			return Topic{}, errors.New("empty method name")
		}
	case len(parts) == 3 && parts[0] == "methods" && parts[1] == "res":
		t.Kind = MethodResponse
	default:
		return Topic{}, ErrUnknownTopic
	}
	if t.Kind == TwinResponse || t.Kind == MethodResponse {
		status, err := strconv.Atoi(parts[2])
		if err != nil || status < 100 || status > 999 {
			return Topic{}, fmt.Errorf("status %q is not a 3-digit number", parts[2])
		}
		t.Status = status
	}
	if hasQuery {
		t.Bag = query
	}
	bag, err := ParseBag(t.Bag)
	if err != nil {
		return Topic{}, err
	}
	t.RID, _ = bag.Get("$rid")
	if v, ok := bag.Get("$version"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Topic{}, fmt.Errorf("$version %q is not an integer", v)
		}
		t.Version = n
	}
	switch t.Kind {
	case TwinGet, TwinPatchReported, TwinResponse, MethodRequest, MethodResponse:
		if t.RID == "" {
			return Topic{}, errors.New("no $rid")
		}
	}
	return t, nil
}

// EventsTopic is the telemetry topic of a device (module "") or a module,
// with an encoded bag (Bag.Encode).
func EventsTopic(device, module, bag string) string {
	if module == "" {
		return "devices/" + device + "/messages/events/" + bag
	}
	return "devices/" + device + "/modules/" + module + "/messages/events/" + bag
}

// InputTopic is the topic a module receives a message for input on.
func InputTopic(device, module, input, bag string) string {
	return string(AppendInputTopic(nil, device, module, input)) + bag
}

// AppendInputTopic appends InputTopic without its bag to b; AppendBag
// appends the bag. A sender of many inputs makes each topic in one
// buffer that way.
func AppendInputTopic(b []byte, device, module, input string) []byte {
	b = append(b, "devices/"...)
	b = append(b, device...)
	b = append(b, "/modules/"...)
	b = append(b, module...)
	b = append(b, "/inputs/"...)
	b = append(b, input...)
	return append(b, '/')
}

// C2DTopic is the topic a device receives a cloud-to-device message on.
func C2DTopic(device, bag string) string {
	return "devices/" + device + "/messages/devicebound/" + bag
}

// TwinGetTopic is the topic of a twin GET request.
func TwinGetTopic(rid string) string {
	return "$iothub/twin/GET/?$rid=" + Escape(rid)
}

// TwinReportedTopic is the topic of a reported-properties patch.
func TwinReportedTopic(rid string) string {
	return "$iothub/twin/PATCH/properties/reported/?$rid=" + Escape(rid)
}

// TwinResponseTopic is the topic of the answer to a twin request; version
// 0 leaves $version out (a GET answer has none).
func TwinResponseTopic(status int, rid string, version int64) string {
	t := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + Escape(rid)
	if version != 0 {
		t += "&$version=" + strconv.FormatInt(version, 10)
	}
	return t
}

// TwinDesiredTopic is the topic of a desired-properties notification.
func TwinDesiredTopic(version int64) string {
	return "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(version, 10)
}

// MethodRequestTopic is the topic of a direct method call.
func MethodRequestTopic(method, rid string) string {
	return "$iothub/methods/POST/" + method + "/?$rid=" + Escape(rid)
}

// MethodResponseTopic is the topic of the answer to a direct method call.
func MethodResponseTopic(status int, rid string) string {
	return "$iothub/methods/res/" + strconv.Itoa(status) + "/?$rid=" + Escape(rid)
}

// Subscription filters every identity may use.
const (
	FilterTwinResponses = "$iothub/twin/res/#"
	FilterTwinDesired   = "$iothub/twin/PATCH/properties/desired/#"
	FilterMethods       = "$iothub/methods/POST/#"
)

// SubscriptionAllowed reports whether the identity device (module "" for a
// device) may subscribe to filter: the $iothub twin and method filters, and
// its own messages — a module's inputs (devices/{d}/modules/{m}/# as the C
// SDK subscribes, devices/{d}/modules/{m}/inputs/# as the Node SDK does, or
// one input's devices/{d}/modules/{m}/inputs/{i}/#), a device's
// cloud-to-device messages (devices/{d}/messages/devicebound/#).
func SubscriptionAllowed(filter, device, module string) bool {
	switch filter {
	case FilterTwinResponses, FilterTwinDesired, FilterMethods:
		return true
	}
	if !plainID(device) || (module != "" && !plainID(module)) {
		return false
	}
	if module == "" {
		return filter == "devices/"+device+"/messages/devicebound/#"
	}
	prefix := "devices/" + device + "/modules/" + module + "/"
	rest, ok := strings.CutPrefix(filter, prefix)
	if !ok {
		return false
	}
	if rest == "#" || rest == "inputs/#" {
		return true
	}
	input, ok := strings.CutPrefix(rest, "inputs/")
	if !ok {
		return false
	}
	input, ok = strings.CutSuffix(input, "/#")
	return ok && plainID(input)
}

// plainID reports whether id can stand in a topic filter for itself alone.
func plainID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "/+#")
}
