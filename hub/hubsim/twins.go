package hubsim

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// Twin returns a copy of the identity's twin.
func (s *Sim) Twin(device, module string) (twin.Twin, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.entryLocked(device, module)
	if err != nil {
		return twin.Twin{}, err
	}
	return e.twin.Clone(), nil
}

// PatchDesired merges patch into the identity's desired properties (null
// deletes a member) and notifies its connection when it listens for
// desired changes. It returns the new desired version.
func (s *Sim) PatchDesired(device, module string, patch map[string]any) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.entryLocked(device, module)
	if err != nil {
		return 0, err
	}
	before := e.twin.Desired.Clone()
	v, err := e.twin.Desired.Apply(patch)
	if err != nil {
		return 0, fmt.Errorf("patch desired of %s: %w", e.ID(), err)
	}
	if err := s.saveLocked(); err != nil {
		e.twin.Desired = before
		return 0, err
	}
	body, err := json.Marshal(twin.Properties{Version: v, Doc: patch})
	if err != nil {
		return v, err
	}
	// Under the lock, so notifications leave in version order.
	if err := s.deliver(e.ID(), iothub.TwinDesiredTopic(v), body); err != nil && !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrNotSubscribed) {
		s.log.Warn("desired notification not sent", "id", e.ID(), "version", v, "error", err)
	}
	return v, nil
}

// twinGet answers a twin GET with the whole twin.
func (s *Sim) twinGet(id, rid string) {
	s.mu.Lock()
	e := s.reg[id]
	var body []byte
	var err error
	if e != nil {
		body, err = e.twin.MarshalJSON()
	}
	s.mu.Unlock()
	status := 200
	switch {
	case e == nil:
		status, body = 404, []byte(`{"message":"identity deleted"}`)
	case err != nil:
		status, body = 500, nil
	}
	s.respondTwin(id, status, rid, 0, body)
}

// twinReported applies a reported-properties patch: 204 with the new
// version, 400 for a body that is not a JSON object or nests too deep, 413
// when reported properties would pass 32 KiB.
func (s *Sim) twinReported(id, rid string, payload []byte) {
	patch, err := twin.ParsePatch(payload)
	if err != nil {
		s.respondTwin(id, 400, rid, 0, errorBody(err))
		return
	}
	s.mu.Lock()
	e := s.reg[id]
	if e == nil {
		s.mu.Unlock()
		s.respondTwin(id, 404, rid, 0, nil)
		return
	}
	before := e.twin.Reported.Clone()
	v, err := e.twin.Reported.Apply(patch)
	if err == nil {
		if err = s.saveLocked(); err != nil {
			e.twin.Reported = before
			s.log.Error("reported patch not saved", "client", id, "error", err)
		}
	}
	s.mu.Unlock()
	switch {
	case errors.Is(err, twin.ErrTooLarge):
		s.respondTwin(id, 413, rid, 0, errorBody(err))
	case err != nil && (errors.Is(err, twin.ErrTooDeep) || errors.Is(err, twin.ErrBadPatch)):
		s.respondTwin(id, 400, rid, 0, errorBody(err))
	case err != nil:
		s.respondTwin(id, 500, rid, 0, errorBody(err))
	default:
		s.respondTwin(id, 204, rid, v, nil)
	}
}

func errorBody(err error) []byte {
	b, _ := json.Marshal(map[string]string{"message": err.Error()})
	return b
}

func (s *Sim) respondTwin(id string, status int, rid string, version int64, body []byte) {
	if err := s.deliver(id, iothub.TwinResponseTopic(status, rid, version), body); err != nil {
		s.log.Info("twin response not sent", "client", id, "rid", rid, "error", err)
	}
}
