package hub

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// module is what the hub keeps of an in-process module across restarts: its
// twin and the buffer of its inputs. The Client of each run comes and goes.
type module struct {
	id    string
	hub   *Hub
	inbox *inbox

	twinMu sync.Mutex
	tw     *twin.Twin

	active atomic.Pointer[Client] // the running client, nil between runs

	// guarded by hub.mu
	spec ModuleSpec
	sup  *supervisor
}

func (md *module) twinSnapshot() twin.Twin {
	md.twinMu.Lock()
	defer md.twinMu.Unlock()
	return md.tw.Clone()
}

func (md *module) patchDesired(patch map[string]any) (int64, error) {
	md.twinMu.Lock()
	v, err := md.tw.Desired.Apply(patch)
	md.twinMu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("patch desired properties of %s: %w", md.id, err)
	}
	if c := md.active.Load(); c != nil {
		c.queuePatch()
	}
	return v, nil
}

// replaceDesired makes doc the desired properties, as a new deployment
// does, and tells the running module what changed.
func (md *module) replaceDesired(doc map[string]any) error {
	md.twinMu.Lock()
	patch := twin.Diff(md.tw.Desired.Doc, twin.Clone(doc))
	md.twinMu.Unlock()
	if len(patch) == 0 {
		return nil
	}
	_, err := md.patchDesired(patch)
	return err
}

func (md *module) patchReported(patch map[string]any) (int64, error) {
	md.twinMu.Lock()
	defer md.twinMu.Unlock()
	v, err := md.tw.Reported.Apply(patch)
	if err != nil {
		return 0, fmt.Errorf("patch reported properties of %s: %w", md.id, err)
	}
	return v, nil
}

// inbox is the in-process input endpoint of one module: a bounded buffer
// shared by all its inputs, in arrival order. A full inbox blocks the
// sender (backpressure); nothing is dropped.
type inbox struct {
	name string
	ch   chan *message.Message
	done chan struct{} // closed when the module leaves the deployment

	// pending is a message the dispatcher took but could not hand to a
	// handler before its run ended; the next run gets it first. Only the
	// dispatcher of the current run touches it.
	pending *message.Message
}

var _ Endpoint = (*inbox)(nil)

func newInbox(moduleID string, capacity int) *inbox {
	return &inbox{name: "module/" + moduleID, ch: make(chan *message.Message, capacity), done: make(chan struct{})}
}

func (b *inbox) Name() string { return b.name }

func (b *inbox) Deliver(ctx context.Context, m *message.Message, _ Delivery) error {
	select {
	case b.ch <- m:
		return nil
	default:
	}
	select {
	case b.ch <- m:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s is full: %w", b.name, ctx.Err())
	case <-b.done:
		return fmt.Errorf("%s: %w", b.name, ErrModuleNotActive)
	}
}

// Len is the number of messages waiting.
func (b *inbox) Len() int { return len(b.ch) }
