package iothub

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// APIVersion is the api-version the Node SDK (azure-iot-common 1.13)
// puts in its CONNECT user name.
const APIVersion = "2021-04-12"

// Username is a parsed CONNECT user name.
type Username struct {
	Host       string
	DeviceID   string
	ModuleID   string
	APIVersion string
	Params     url.Values // every query parameter, api-version included
}

// ErrUsername is returned (wrapped) by ParseUsername.
var ErrUsername = errors.New("bad MQTT user name")

// ParseUsername parses `{host}/{device}[/{module}]/?api-version=…[&…]`.
// api-version is required; other parameters (DeviceClientType, model-id …)
// are kept in Params.
func ParseUsername(s string) (Username, error) {
	fail := func(format string, args ...any) (Username, error) {
		return Username{}, fmt.Errorf("%w %q: %s", ErrUsername, s, fmt.Sprintf(format, args...))
	}
	path, query, ok := strings.Cut(s, "?")
	if !ok {
		return fail("no ?api-version=")
	}
	parts := strings.Split(strings.TrimSuffix(path, "/"), "/")
	var u Username
	switch len(parts) {
	case 2:
		u.Host, u.DeviceID = parts[0], parts[1]
	case 3:
		u.Host, u.DeviceID, u.ModuleID = parts[0], parts[1], parts[2]
		if u.ModuleID == "" {
			return fail("empty module id")
		}
	default:
		return fail("want {hostname}/{deviceId}[/{moduleId}]/?api-version=…")
	}
	if u.Host == "" {
		return fail("empty host name")
	}
	if u.DeviceID == "" {
		return fail("empty device id")
	}
	u.Params = parseQuery(query)
	u.APIVersion = u.Params.Get("api-version")
	if u.APIVersion == "" {
		return fail("no api-version")
	}
	return u, nil
}

// parseQuery is url.ParseQuery made lenient the way IoT Hub is: the Node
// SDK appends model-id unencoded (dtmi:com:example:Thermostat;1), so a
// semicolon is data and a value that does not unescape is kept as written.
func parseQuery(q string) url.Values {
	v := url.Values{}
	for _, part := range strings.Split(q, "&") {
		if part == "" {
			continue
		}
		k, val, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(val); err == nil {
			val = dv
		}
		v[k] = append(v[k], val)
	}
	return v
}

// FormatUsername is the CONNECT user name for an identity; extra holds
// parameters beyond api-version (DeviceClientType, model-id), written in
// name order after it. An api-version in extra replaces APIVersion.
func FormatUsername(host, device, module string, extra url.Values) string {
	s := host + "/" + device
	if module != "" {
		s += "/" + module
	}
	v := extra.Get("api-version")
	if v == "" {
		v = APIVersion
	}
	s += "/?api-version=" + url.QueryEscape(v)
	if vs := extra["api-version"]; len(vs) > 1 {
		// As given, though IoT Hub reads only the first.
		for _, v := range vs[1:] {
			s += "&api-version=" + url.QueryEscape(v)
		}
	}
	rest := url.Values{}
	for k, vs := range extra {
		if k != "api-version" {
			rest[k] = vs
		}
	}
	if len(rest) > 0 {
		s += "&" + rest.Encode()
	}
	return s
}
