package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Direct-method timeouts, IoT Hub's.
const (
	DefaultMethodTimeout = 30 * time.Second
	MinMethodTimeout     = 5 * time.Second
	MaxMethodTimeout     = 300 * time.Second
	MaxMethodPayload     = 128 * 1024
)

// InvokeMethod calls a direct method on an in-process module and waits for
// its answer at most timeout (DefaultMethodTimeout when zero; IoT Hub's
// 5–300 s range is enforced for explicit values). A module that is not
// running answers 404, one without a handler for the method 501, as IoT
// Hub does; a timeout is an error wrapping ErrMethodTimeout.
func (h *Hub) InvokeMethod(ctx context.Context, deviceID, moduleID string, req MethodRequest, timeout time.Duration) (MethodResponse, error) {
	switch {
	case timeout == 0:
		timeout = DefaultMethodTimeout
	case timeout < MinMethodTimeout || timeout > MaxMethodTimeout:
		return MethodResponse{}, fmt.Errorf("method %q: timeout %s is outside %s–%s", req.Name, timeout, MinMethodTimeout, MaxMethodTimeout)
	}
	if len(req.Payload) > 0 && !json.Valid(req.Payload) {
		return MethodResponse{}, fmt.Errorf("method %q: payload is not JSON", req.Name)
	}
	if len(req.Payload) > MaxMethodPayload {
		return MethodResponse{}, fmt.Errorf("method %q: payload is %d bytes, the limit is %d", req.Name, len(req.Payload), MaxMethodPayload)
	}
	if resp, ok, err := h.invokeRemote(ctx, deviceID, moduleID, req, timeout); ok {
		return resp, err
	}
	if deviceID != h.opts.DeviceID {
		return MethodResponse{Status: 404, Payload: errorPayload(fmt.Sprintf("device %q is not this edge device (%q)", deviceID, h.opts.DeviceID))}, nil
	}
	md := h.lookupModule(moduleID)
	if md == nil {
		return MethodResponse{Status: 404, Payload: errorPayload(fmt.Sprintf("module %q is not deployed", moduleID))}, nil
	}
	c := md.active.Load()
	if c == nil {
		return MethodResponse{Status: 404, Payload: errorPayload(fmt.Sprintf("module %q is not running", moduleID))}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.callMethod(ctx, req)
}
