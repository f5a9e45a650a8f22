// Package hubtest holds what tests of the hub and of modules need again
// and again: an endpoint that records what reaches it, polling with a
// deadline instead of sleeping, and routes that fail the test when they do
// not parse.
package hubtest

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

// Patience bounds every wait: generous, because suites also run under
// qemu-user and the race detector.
const Patience = 20 * time.Second

// Recorder is an Endpoint (normally $upstream) that keeps every message
// and delivery it is given. It is safe for concurrent use.
type Recorder struct {
	mu   sync.Mutex
	msgs []*message.Message
	dels []hub.Delivery
}

var _ hub.Endpoint = (*Recorder)(nil)

// Name is "$upstream".
func (r *Recorder) Name() string { return "$upstream" }

// Deliver records m and d.
func (r *Recorder) Deliver(_ context.Context, m *message.Message, d hub.Delivery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	r.dels = append(r.dels, d)
	return nil
}

// Messages returns the messages delivered so far, in order.
func (r *Recorder) Messages() []*message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// Deliveries returns how each message was delivered, in the same order.
func (r *Recorder) Deliveries() []hub.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.dels)
}

// From returns the messages that module sent, in order.
func (r *Recorder) From(module string) []*message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*message.Message
	for _, m := range r.msgs {
		if m.System.ConnectionModuleID == module {
			out = append(out, m)
		}
	}
	return out
}

// Len is the number of messages delivered so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// WaitFor polls cond until it holds, failing the test after Patience.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", Patience, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// MustRoute parses a route, failing the test when it does not parse.
func MustRoute(t testing.TB, name, text string) *route.Route {
	t.Helper()
	r, err := route.Parse(name, text)
	if err != nil {
		t.Fatalf("route.Parse(%q): %v", text, err)
	}
	return r
}

// SyncBuffer is an io.Writer whose contents can be read while another
// goroutine (or a child process's output copier) is still writing to it.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
