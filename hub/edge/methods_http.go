package edge

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// methodCall is the body of POST /twins/{d}[/modules/{m}]/methods, as the
// SDKs' MethodParams serialize.
type methodCall struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload"`
	ResponseTimeoutInSeconds *float64        `json:"responseTimeoutInSeconds"`
	ConnectTimeoutInSeconds  *float64        `json:"connectTimeoutInSeconds"`
}

// maxMethodBody bounds a request body: the payload limit and room for the
// rest.
const maxMethodBody = hub.MaxMethodPayload + 4096

// methodsHandler serves module-to-module direct methods as edgeHub does.
func (e *Endpoint) methodsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /twins/{device}/methods", e.serveMethod)
	mux.HandleFunc("POST /twins/{device}/modules/{module}/methods", e.serveMethod)
	return mux
}

func httpError(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(errorBody(fmt.Sprintf(format, args...)))
}

func (e *Endpoint) serveMethod(w http.ResponseWriter, r *http.Request) {
	caller, err := e.authenticateHTTP(r)
	if err != nil {
		e.log.Warn("direct method call refused", "remote", r.RemoteAddr, "err", err)
		httpError(w, http.StatusUnauthorized, "%v", err)
		return
	}
	device, module := r.PathValue("device"), r.PathValue("module")
	body, err := io.ReadAll(io.LimitReader(r.Body, maxMethodBody+1))
	if err != nil {
		httpError(w, http.StatusBadRequest, "read the request: %v", err)
		return
	}
	if len(body) > maxMethodBody {
		httpError(w, http.StatusRequestEntityTooLarge, "request body is over %d bytes", maxMethodBody)
		return
	}
	var call methodCall
	if err := json.Unmarshal(body, &call); err != nil {
		httpError(w, http.StatusBadRequest, "request body is not a method call {methodName, payload, responseTimeoutInSeconds}: %v", err)
		return
	}
	if call.MethodName == "" {
		httpError(w, http.StatusBadRequest, "methodName is missing")
		return
	}
	var timeout time.Duration
	if t := call.ResponseTimeoutInSeconds; t != nil {
		timeout = time.Duration(*t * float64(time.Second))
	}
	req := hub.MethodRequest{Name: call.MethodName}
	if len(call.Payload) > 0 && string(call.Payload) != "null" {
		req.Payload = call.Payload
	}
	e.log.Debug("direct method over HTTPS", "caller", caller.String(), "device", device, "module", module, "method", call.MethodName)
	resp, err := e.opts.Hub.InvokeMethod(r.Context(), device, module, req, timeout)
	switch {
	case errors.Is(err, hub.ErrMethodTimeout):
		httpError(w, http.StatusGatewayTimeout, "%v", err)
		return
	case errors.Is(err, hub.ErrModuleNotActive):
		httpError(w, http.StatusNotFound, "%v", err)
		return
	case err != nil:
		// The call itself is wrong: a timeout out of range, a payload
		// that is not JSON or too large.
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	out := struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}{resp.Status, resp.Payload}
	if len(out.Payload) == 0 {
		out.Payload = json.RawMessage("null")
	}
	b, err := json.Marshal(out)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "encode the answer: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

// authenticateHTTP checks the caller's SAS token (the Authorization
// header): only modules of this edge device call methods here.
func (e *Endpoint) authenticateHTTP(r *http.Request) (hub.Identity, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return hub.Identity{}, fmt.Errorf("%w: no Authorization header with a SAS token", ErrBadCredentials)
	}
	tok, err := iothub.ParseToken(auth)
	if err != nil {
		return hub.Identity{}, fmt.Errorf("%w: %v", ErrBadCredentials, err)
	}
	host, id, err := parseResource(tok.Resource)
	if err != nil {
		return hub.Identity{}, fmt.Errorf("%w: %v", ErrBadCredentials, err)
	}
	if !e.hostAllowed(host) {
		return id, fmt.Errorf("%w: token audience %q is neither the IoT Hub (%q) nor the gateway (%q)", ErrBadCredentials, host, e.opts.IoTHubHostname, e.opts.GatewayHostname)
	}
	if id.ModuleID == "" || id.DeviceID != e.opts.Hub.DeviceID() {
		return id, fmt.Errorf("%w: %s is not a module of this edge device", ErrUnknownIdentity, id)
	}
	if h := r.Header.Get("x-ms-edge-moduleId"); h != "" && h != id.String() {
		return id, fmt.Errorf("%w: x-ms-edge-moduleId %q is not the token's identity %s", ErrBadCredentials, h, id)
	}
	key, ok := e.opts.Keys.Key(id.DeviceID, id.ModuleID)
	if !ok {
		return id, fmt.Errorf("%w: no key for %s", ErrUnknownIdentity, id)
	}
	if err := tok.Verify(key, e.now()); err != nil {
		return id, fmt.Errorf("%w: %v", ErrBadCredentials, err)
	}
	return id, nil
}

// parseResource splits a SAS resource `{host}/devices/{d}[/modules/{m}]`.
func parseResource(s string) (host string, id hub.Identity, err error) {
	host, rest, ok := strings.Cut(s, "/devices/")
	if !ok || host == "" || strings.Contains(host, "/") {
		return "", id, fmt.Errorf("resource %q is not {host}/devices/{device}[/modules/{module}]", s)
	}
	dev, mod, hasMod := strings.Cut(rest, "/modules/")
	if dev == "" || strings.Contains(dev, "/") || hasMod && (mod == "" || strings.Contains(mod, "/")) {
		return "", id, fmt.Errorf("resource %q is not {host}/devices/{device}[/modules/{module}]", s)
	}
	return host, hub.Identity{DeviceID: dev, ModuleID: mod}, nil
}
