package hubsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub/iothub"
)

// Direct method limits, IoT Hub's.
const (
	MaxMethodPayload     = 128 * 1024
	DefaultMethodTimeout = 30 * time.Second
)

// MethodResult is a direct method's answer.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

type pendingCall struct {
	client string
	ch     chan methodReply // buffered 1
}

type methodReply struct {
	res MethodResult
	err error
}

func (c *pendingCall) fail(err error) {
	select {
	case c.ch <- methodReply{err: err}:
	default:
	}
}

// InvokeMethod calls a direct method on the identity's connection and
// waits up to timeout (DefaultMethodTimeout when 0) for its answer.
// payload is JSON (nil means null), at most MaxMethodPayload bytes.
// It fails with ErrNotFound, ErrNotConnected (no connection, or not
// subscribed to methods: IoT Hub's 404) or ErrMethodTimeout (IoT Hub's
// 504).
func (s *Sim) InvokeMethod(ctx context.Context, device, module, name string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	if name == "" || strings.ContainsAny(name, "/?#+") {
		return MethodResult{}, fmt.Errorf("method name %q: must be non-empty, without / ? # +", name)
	}
	if payload == nil {
		payload = json.RawMessage("null")
	}
	if !json.Valid(payload) {
		return MethodResult{}, fmt.Errorf("method %s payload is not JSON", name)
	}
	if len(payload) > MaxMethodPayload {
		return MethodResult{}, fmt.Errorf("method %s payload is %d bytes, IoT Hub's limit is %d", name, len(payload), MaxMethodPayload)
	}
	if timeout <= 0 {
		timeout = DefaultMethodTimeout
	}
	id := Identity{DeviceID: device, ModuleID: module}.ID()
	s.mu.Lock()
	if _, err := s.entryLocked(device, module); err != nil {
		s.mu.Unlock()
		return MethodResult{}, err
	}
	s.rid++
	rid := strconv.FormatUint(s.rid, 10)
	call := &pendingCall{client: id, ch: make(chan methodReply, 1)}
	s.pending[rid] = call
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, rid)
		s.mu.Unlock()
	}()
	if err := s.deliver(id, iothub.MethodRequestTopic(name, rid), payload); err != nil {
		if errors.Is(err, ErrNotSubscribed) {
			return MethodResult{}, fmt.Errorf("%w: %s does not listen for direct methods", ErrNotConnected, id)
		}
		if errors.Is(err, ErrNotConnected) {
			return MethodResult{}, err
		}
		return MethodResult{}, fmt.Errorf("%w: %s: %v", ErrNotConnected, id, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-call.ch:
		return r.res, r.err
	case <-t.C:
		return MethodResult{}, fmt.Errorf("%w: %s did not answer %s within %s", ErrMethodTimeout, id, name, timeout)
	case <-ctx.Done():
		return MethodResult{}, ctx.Err()
	}
}

// methodAnswered hands a method response from client to its caller.
func (s *Sim) methodAnswered(client, rid string, status int, body []byte) {
	s.mu.Lock()
	call := s.pending[rid]
	s.mu.Unlock()
	if call == nil || call.client != client {
		s.log.Info("method response without a pending call", "id", client, "rid", rid)
		return
	}
	res := MethodResult{Status: status, Payload: json.RawMessage("null")}
	switch {
	case len(body) == 0:
	case json.Valid(body):
		res.Payload = append(json.RawMessage(nil), body...)
	default:
		res.Payload, _ = json.Marshal(string(body))
	}
	select {
	case call.ch <- methodReply{res: res}:
	default:
	}
}
